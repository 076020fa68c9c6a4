"""A thread pool with two queues: urgent jobs always run before ordinary ones.

Hashing a release has one sequential job per file (the whole-file digest that gives its etag) and many
order-free jobs (piece hashes). With one plain pool the sequential chain queues behind piece jobs, and with
two pools the threads outnumber the cores and the OS slows the chain down; either way the chain becomes the
critical path and a core idles. Here the threads are as many as the cores, and each takes the next link
of a chain before any piece work. hashlib releases the GIL on large buffers, so the threads really run in
parallel.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

__all__ = ["PriorityPool"]

T = TypeVar("T")
_Job = tuple[Future[Any], Callable[..., Any], tuple[Any, ...]]


class PriorityPool:
    def __init__(self, threads: int, name: str = "swarmhub-worker") -> None:
        self._urgent: deque[_Job] = deque()
        self._normal: deque[_Job] = deque()
        self._ready = threading.Condition()
        self._closed = False
        self._threads = [threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True) for i in range(threads)]
        for thread in self._threads:
            thread.start()

    def submit(self, fn: Callable[..., T], *args: Any, urgent: bool = False) -> Future[T]:
        future: Future[T] = Future()
        with self._ready:
            if self._closed:
                raise RuntimeError("pool is shut down")
            (self._urgent if urgent else self._normal).append((future, fn, args))
            self._ready.notify()
        return future

    def _work(self) -> None:
        while True:
            with self._ready:
                while not (self._urgent or self._normal or self._closed):
                    self._ready.wait()
                if self._urgent:
                    job = self._urgent.popleft()
                elif self._normal:
                    job = self._normal.popleft()
                else:
                    return
            future, fn, args = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(*args))
            except BaseException as exc:  # handed to whoever awaits the future
                future.set_exception(exc)

    def shutdown(self, wait: bool = True) -> None:
        """Stop taking jobs; queued ones still run. ``wait`` joins the threads (they are daemons: a thread
        stuck in a network read never holds up the process's exit, e.g. after Ctrl-C)."""
        with self._ready:
            self._closed = True
            self._ready.notify_all()
        if wait:
            for thread in self._threads:
                thread.join()

    def __enter__(self) -> PriorityPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
