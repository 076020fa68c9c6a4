"""The tracker's own HTTP/1.x server: one ``asyncio.Protocol`` per connection, one event loop in a thread.

Why not uvicorn: an announce is a query string in and ~100 bytes out, and most clients close the connection
after it. Under uvicorn the HTTP machinery around it (h11 or httptools, a task and an ASGI cycle per
request, headers and body in two writes) cost several times the tracker itself. Here a request head is
parsed (``tracker.http``), answered by ``TrackerApp.answer`` without leaving ``data_received``, and the
answer goes out in one write. Pipelined requests are answered in order, in one write per read.

- An idle connection is closed after ``KEEP_ALIVE`` seconds (uvicorn's default) without a whole request,
  by a once-a-second tick that also renews the ``date`` every answer carries; if its client reads nothing,
  so that the answers cannot all be sent, it is dropped ``KEEP_ALIVE`` seconds later.
- A head longer than ``http.MAX_HEAD`` is ``431``; a malformed one ``400``; either closes the connection.
- ``Host`` is checked as every service checks it (``guard``, rule 1: DNS rebinding), before anything is
  answered: bound to loopback, only ``127.0.0.1``, ``localhost``, ``[::1]`` and the names given (``hosts``)
  are answered, BitTorrent clients sending the announce URL's ``host:port``; anything else, or no ``Host``,
  is ``403`` with the guard's JSON, and the connection closes. One set lookup per request.
  A request body is skipped unread, or if longer than ``MAX_HEAD`` the connection closes after the answer.
- A client that sends faster than it reads is paused until its answers drain (``pause_writing``).
- The loop is uvloop's when uvloop is installed, asyncio's otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import socket
import threading
from collections.abc import Callable
from typing import cast

from swarmhub.guard import HOST_HINT, host_refused, refusal_body
from swarmhub.serving import new_event_loop
from swarmhub.tracker.app import HEADERS, TrackerApp
from swarmhub.tracker.http import MAX_HEAD, HTTPError, RequestHead, client_host, parse_head, render

__all__ = ["KEEP_ALIVE", "TrackerThread"]

KEEP_ALIVE = 5  # seconds
_BACKLOG = 2048  # uvicorn's
_READY_TIMEOUT = 10.0
_STOP_TIMEOUT = 5.0
_FIELDS = {status: b"".join(b"%s: %s\r\n" % field for field in fields) for status, fields in HEADERS.items()}
_ERROR_FIELDS = b"content-type: text/plain; charset=utf-8\r\n"
_SERVICE = "the tracker"

log = logging.getLogger(__name__)
access_log = logging.getLogger("swarmhub.tracker.access")


def _http_date() -> bytes:
    return email.utils.formatdate(usegmt=True).encode("ascii")


class _Connections:
    """What every connection shares: the app, the Host names answered (None: any), the current ``date``, and
    the set of live connections."""

    def __init__(self, app: TrackerApp, access_log: bool, hosts: frozenset[str] | None = None) -> None:
        self.app = app
        self.hosts = hosts
        self.access_log = access_log
        self.date = _http_date()
        self.live: set[_Connection] = set()

    def tick(self) -> None:
        self.date = _http_date()
        for connection in list(self.live):
            connection.idle += 1
            if connection.idle > KEEP_ALIVE:  # a client that reads nothing keeps it open: then it is dropped
                connection.close(abort=connection.idle > 2 * KEEP_ALIVE)


class _Connection(asyncio.Protocol):
    def __init__(self, shared: _Connections) -> None:
        self.shared = shared
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self.buffer = b""
        self.skip = 0  # body bytes of the last request still to come, unread
        self.idle = 0  # ticks since the last whole request

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is one, without subclassing it
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if isinstance(peer, tuple) else ""
        self.shared.live.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.shared.live.discard(self)

    def pause_writing(self) -> None:
        assert self.transport is not None
        self.transport.pause_reading()  # read no more requests until the answers drain

    def resume_writing(self) -> None:
        assert self.transport is not None
        self.transport.resume_reading()

    def close(self, *, abort: bool = False) -> None:
        if self.transport is not None:
            if abort:
                self.transport.abort()
            else:
                self.transport.close()  # once the answers are sent

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        buffer = self._skip_body(self.buffer + data if self.buffer else data)
        answers: list[bytes] = []
        keep_alive = True
        while keep_alive and not self.skip and (end := buffer.find(b"\r\n\r\n", 0, MAX_HEAD + 4)) >= 0:
            answer, keep_alive = self._answer(buffer[:end])
            answers.append(answer)
            self.idle = 0
            buffer = self._skip_body(buffer[end + 4 :])
        if keep_alive and not self.skip and len(buffer) > MAX_HEAD:
            answers.append(self._refuse(HTTPError(431, "request head too long")))
            keep_alive = False
        self.buffer = buffer
        if answers:
            self.transport.write(answers[0] if len(answers) == 1 else b"".join(answers))
        if not keep_alive:
            self.buffer = b""
            self.transport.close()

    def _skip_body(self, buffer: bytes) -> bytes:
        if not self.skip:
            return buffer
        skipped = min(self.skip, len(buffer))
        self.skip -= skipped
        return buffer[skipped:]

    def _answer(self, head_bytes: bytes) -> tuple[bytes, bool]:
        """One request's answer, and whether the connection stays open after it."""
        try:
            head = parse_head(head_bytes)
        except HTTPError as error:
            return self._refuse(error), False
        shared = self.shared
        if shared.hosts is not None and (refused := host_refused(shared.hosts, head.host, _SERVICE)) is not None:
            return self._refuse_host(head, refused), False
        try:
            host = client_host(self.peer, head.forwarded_for)
            status, body = shared.app.answer(head.method, head.path, head.query, host)
        except Exception:  # a bug of ours: the client gets a 500, the log the traceback, the server goes on
            log.exception("tracker failed to answer %s %r", head.method, head.target)
            return self._refuse(HTTPError(500, "internal error"), head), False
        self.skip = head.content_length
        keep_alive = head.keep_alive and head.content_length <= MAX_HEAD  # a big body is not worth reading past
        if shared.access_log:
            self._log(head, host, status)
        sent = b"" if head.method == "HEAD" else body
        answer = render(
            status, _FIELDS[status], sent, date=shared.date, keep_alive=keep_alive, http10=head.http10, length=len(body)
        )
        return answer, keep_alive

    def _refuse(self, error: HTTPError, head: RequestHead | None = None) -> bytes:
        if self.shared.access_log:
            self._log(head, self.peer, error.status)
        body = error.message.encode("ascii") + b"\n"
        return render(error.status, _ERROR_FIELDS, body, date=self.shared.date, keep_alive=False)

    def _refuse_host(self, head: RequestHead, message: str) -> bytes:
        """``guard``'s 403 for a Host name not answered (``message`` names it, ``repr``-escaped: no CR or LF)."""
        if self.shared.access_log:
            self._log(head, self.peer, 403)
        fields = b"content-type: application/json\r\nx-error-message: %s\r\n" % message.encode("ascii", "replace")
        return render(403, fields, refusal_body(message, HOST_HINT), date=self.shared.date, keep_alive=False)

    def _log(self, head: RequestHead | None, host: str, status: int) -> None:
        request = (
            "-" if head is None else f"{head.method} {head.target.decode('latin-1')} HTTP/1.{0 if head.http10 else 1}"
        )
        access_log.info('%s - "%s" %d', host, request, status)


class TrackerThread:
    """``app`` served on the listening-ready ``sock`` from a daemon thread; ``stop()`` closes the socket.
    ``hosts``: the ``Host`` names answered (``guard.allowed_hosts``; None: any).

    The same lifecycle as ``serving.UvicornThread``: ``start()`` returns once connections are accepted.
    """

    def __init__(
        self,
        name: str,
        app: TrackerApp,
        sock: socket.socket,
        *,
        access_log: bool = False,
        hosts: frozenset[str] | None = None,
    ) -> None:
        self.name = name
        self._sock = sock
        self._shared = _Connections(app, access_log, hosts)
        self._loop = new_event_loop()
        self._ready = threading.Event()
        self._ticking: asyncio.TimerHandle | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, timeout: float = _READY_TIMEOUT) -> None:
        if self._thread is not None:
            raise RuntimeError(f"{self.name} already started")
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout) or not self._thread.is_alive():
            self.stop()
            raise RuntimeError(f"{self.name} did not start") from self._error

    def _run(self) -> None:
        loop = self._loop
        shared = self._shared
        factory: Callable[[], asyncio.Protocol] = lambda: _Connection(shared)  # noqa: E731
        try:
            server = loop.run_until_complete(loop.create_server(factory, sock=self._sock, backlog=_BACKLOG))
            self._ticking = loop.call_later(1.0, self._tick)
            self._ready.set()
            loop.run_forever()
            self._ticking.cancel()
            server.close()
            for abort in (False, True):  # closed once their answers are sent; then those whose clients read nothing
                for connection in list(shared.live):
                    connection.close(abort=abort)
                loop.run_until_complete(asyncio.sleep(0))  # the transports' close callbacks
        except BaseException as exc:  # reported by start()
            self._error = exc
        finally:
            loop.close()

    def _tick(self) -> None:
        self._shared.tick()
        self._ticking = self._loop.call_later(1.0, self._tick)

    def stop(self) -> None:
        if self._thread is None:
            self._loop.close()
        else:
            with contextlib.suppress(RuntimeError):  # the loop is closed: the thread has ended
                self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(_STOP_TIMEOUT)
        self._sock.close()
