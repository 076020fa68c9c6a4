"""Serving ASGI apps with uvicorn from a background thread (tests, embedding) or until Ctrl-C (the CLI).

Sockets are bound before the servers start, so a port of 0 (any free port) is known at once: callers can
print it, put it in a URL, or hand it to a second app before anything serves. Several apps share one event
loop in one daemon thread. Used by the dev hub, the tracker and the registry (``BackgroundServer``).
"""

from __future__ import annotations

import asyncio
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from types import FrameType, TracebackType
from typing import Protocol, Self

import uvicorn
from starlette.requests import Request
from starlette.types import ASGIApp

from swarmhub.errors import ConfigError

__all__ = [
    "BackgroundServer",
    "Startable",
    "UvicornThread",
    "bind",
    "new_event_loop",
    "read_capped",
    "run_until_interrupted",
    "url_host",
]

_READY_TIMEOUT = 10.0
_STOP_TIMEOUT = 5.0


def bind(host: str, port: int) -> socket.socket:
    """A listening-ready TCP socket on ``host:port`` (0 = any free port); ``ConfigError`` if it is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto named, not 0: asyncio sets TCP_NODELAY only on sockets whose proto is IPPROTO_TCP (accepted ones
    # inherit it). Without it, Nagle holds a response's body until the client acks its headers: 40 ms per
    # request on a kept-alive connection (the client delays that ack).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}", hint="pick another --port") from exc
    sock.set_inheritable(True)
    return sock


async def read_capped(request: Request, limit: int) -> bytes | None:
    """A request's body, or None past ``limit`` bytes, declared or sent (read no further): every app caps
    what it reads (a 32 MB body once took a node to 1.35 GB)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > limit:
            return None
    return bytes(data)


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's event loop when uvloop is installed (every server here runs on it), asyncio's otherwise."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def url_host(host: str) -> str:
    """How clients on this machine reach a bound address, as it goes in a URL."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


class UvicornThread:
    """``apps[i]`` served on ``sockets[i]`` by uvicorn, all on one event loop in a daemon thread.

    The sockets are closed by ``stop()``. ``start()`` returns once every server accepts connections.
    """

    def __init__(
        self, name: str, apps: Sequence[ASGIApp], sockets: Sequence[socket.socket], *, access_log: bool = False
    ) -> None:
        if len(apps) != len(sockets):
            raise ValueError("one socket per app")
        self.name = name
        self._sockets = list(sockets)
        self._servers = [uvicorn.Server(_config(app, access_log)) for app in apps]
        self._thread: threading.Thread | None = None
        self.loop: asyncio.AbstractEventLoop | None = None  # the apps' event loop, once serving
        self._error: BaseException | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, timeout: float = _READY_TIMEOUT) -> None:
        if self._thread is not None:
            raise RuntimeError(f"{self.name} already started")
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not all(s.started for s in self._servers):
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.name} did not start") from self._error
            time.sleep(0.005)

    def _run(self) -> None:
        try:
            with asyncio.Runner(loop_factory=new_event_loop) as runner:
                runner.run(self._serve())
        except BaseException as exc:  # reported by start()
            self._error = exc

    async def _serve(self) -> None:
        self.loop = asyncio.get_running_loop()
        await asyncio.gather(*(s.serve(sockets=[sock]) for s, sock in zip(self._servers, self._sockets, strict=True)))

    def stop(self) -> None:
        for server in self._servers:
            server.should_exit = True
        if self._thread is not None:
            self._thread.join(_STOP_TIMEOUT)
            if self._thread.is_alive():  # a response that outlived the graceful timeout
                for server in self._servers:
                    server.force_exit = True
                self._thread.join(_STOP_TIMEOUT)
        for sock in self._sockets:
            sock.close()


def _config(app: ASGIApp, access_log: bool) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        log_config=None,  # leave logging to the host process
        access_log=access_log,
        lifespan="off",
        ws="none",
        server_header=False,  # the Hub sends no "server: uvicorn"
        timeout_graceful_shutdown=1,  # then in-flight responses are cancelled
    )


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if main_thread else None
    try:
        yield
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


class Startable(Protocol):
    """What ``run_until_interrupted`` runs: a ``UvicornThread``, or an object that owns one."""

    @property
    def running(self) -> bool: ...
    def start(self) -> object: ...
    def stop(self) -> None: ...


def run_until_interrupted(server: Startable, ready: Callable[[], None] | None = None) -> None:
    """Start ``server``, call ``ready``, and serve until Ctrl-C or SIGTERM (or until the server dies)."""
    with _sigterm_as_interrupt():
        try:
            server.start()
            if ready is not None:
                ready()
            while server.running:
                time.sleep(0.2)
        except KeyboardInterrupt:
            pass
        finally:
            server.stop()


class BackgroundServer:
    """ASGI apps served from a background thread, each on its own socket bound by ``start()`` (port 0: any free
    port, known at once). Subclasses say which apps (``_apps``, called once the ports are bound), or what else
    serves the sockets (``_server_for``), and what their ``port``s mean; the dev hub, the tracker and the
    registry are this.
    """

    name = "server"

    def __init__(self, host: str, ports: Sequence[int], *, access_log: bool = False) -> None:
        self.host = host
        self._ports = tuple(ports)
        self._access_log = access_log
        self._bound: list[int] = []  # the ports actually bound (kept after stop())
        self._server: Startable | None = None

    def _apps(self) -> Sequence[ASGIApp]:
        raise NotImplementedError

    def _server_for(self, sockets: list[socket.socket]) -> Startable:
        """What serves the bound ``sockets`` (not started yet): uvicorn, ``_apps()[i]`` on ``sockets[i]``."""
        return UvicornThread(f"{self.name}-{self.port}", self._apps(), sockets, access_log=self._access_log)

    def _bound_port(self, which: int) -> int:
        if not self._bound:
            raise RuntimeError(f"{type(self).__name__} not started: call start() or use it as a context manager")
        return self._bound[which]

    @property
    def port(self) -> int:
        return self._bound_port(0)

    @property
    def url(self) -> str:
        return f"http://{url_host(self.host)}:{self.port}"

    @property
    def running(self) -> bool:
        return self._server is not None and self._server.running

    def start(self) -> Self:
        if self._server is not None:
            raise RuntimeError(f"{type(self).__name__} already started")
        sockets = [bind(self.host, p) for p in self._ports]
        self._bound = [int(sock.getsockname()[1]) for sock in sockets]
        try:
            self._server = self._server_for(sockets)
        except BaseException:
            for sock in sockets:
                sock.close()
            raise
        self._server.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()

    def __enter__(self) -> Self:
        return self.start() if self._server is None else self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
