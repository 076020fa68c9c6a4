"""The BEP 19 web-seed gateway: files of published releases, streamed from the origin with exact ranges.

Why it streams instead of redirecting to the origin: libtorrent caches a redirect per file and stalls for
good once the signed CDN URL behind it expires (libtorrent #6402, #7682), and Transmission follows the
redirect again on every range, spending the Hub's resolver quota. No client of the gateway ever sees a 3xx.

One GET:

1. the path must name a file of a published release (``paths``): else 404, and the origin is not asked;
2. ``Range`` (``ranges``): 206 + ``Content-Range``, 200, or 416. HEAD, empty files and BEP 47 pads are
   answered from the torrent alone (sizes and etags are in it), pads with zeros;
3. the bytes come from ``OriginClient.read_range_into`` in chunks, ``window`` chunks in flight ahead of the
   sender: each a ranged GET on a kept-alive connection that reuses the file's redirect target (one resolve
   per file, not per range) until shortly before its signed URL expires, resumes a reset at the exact byte,
   retries 5xx/429 with backoff honouring ``Retry-After``, and resolves again when the CDN refuses a URL.
   Memory per response is ``window + 1`` chunks at most (plus what the server's transport still holds of
   the last one sent): buffers are fresh per chunk, never reused, since a transport may keep a reference to
   what it was given;
4. the first chunk is in hand before the status line goes out, so a failure can still be answered
   properly: 404 when the origin says the file is gone, 403 when it refuses the gateway access (a gated or
   private repo, and no token of the gateway's own for it), 503 + ``Retry-After`` when it stayed unavailable
   past ``upstream_timeout`` or the origin client's retries. The upstream's own 429/5xx never reach the client:
   libtorrent drops a file from a web seed for the whole session after one error answer. A failure after
   the status line breaks the connection (clients retry a broken connection; they do not retry an error).

The client's headers other than ``Range`` are ignored: its ``Authorization`` goes nowhere, and the token
the gateway's ``OriginClient`` holds is sent only to the origin's host (never to a CDN or a client). Whatever
that token may read, the gateway hands to anyone who asks: so the registry gives it one only when its operator
says so (``SWARMHUB_GATEWAY_TOKEN``), never the ``HF_TOKEN`` of the process.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Hashable, Mapping
from types import MappingProxyType
from typing import Protocol

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import Receive, Scope, Send

from swarmhub.bt.metainfo import Torrent, TorrentFile
from swarmhub.errors import OriginError
from swarmhub.gateway.paths import PadFile, find_file, webseed_candidates
from swarmhub.gateway.ranges import ByteRange, RangeNotSatisfiable, parse_range
from swarmhub.hub.repo import RepoRef, RepoType
from swarmhub.origin.client import OriginClient

__all__ = ["Gateway", "Lookup", "ReleaseKey"]

log = logging.getLogger(__name__)

Lookup = Callable[[RepoType, str, str], Torrent | None]
ReleaseKey = tuple[RepoType, str, str]  # (repo type, repo id, commit)

# One ranged GET upstream per chunk, so a client's request of up to a chunk (a piece: 256 KiB - 16 MiB) costs
# exactly one. Each upstream GET costs ~0.5 ms of CPU here: one client's 64 MiB range on loopback came through
# at 320 MB/s in 1 MiB chunks, 430 in 4 MiB, 520-560 in 8 MiB; the window (2, 3 or 8) changed little.
CHUNK_SIZE = 8 << 20
WINDOW = 2  # chunks in flight ahead of the one being sent
# What one ASGI send carries. A whole 8 MiB chunk does not fit the socket buffer: asyncio then copies the
# rest twice (a bytes slice, then into its buffer) on top of h11's own copy; 1 MiB slices mostly go straight
# to the socket. Gateway CPU for one client's 64 MiB ranges: 1.33 s/GB in 8 MiB sends, 1.14 in 1 MiB ones.
SEND_SLICE = 1 << 20
UPSTREAM_TIMEOUT = 60.0  # seconds one chunk may take, retries included, before the client gets a 503
RETRY_AFTER = 30  # seconds, in a 503
FIRST_READ_FRESH = 240.0  # seconds a file counts as known when the origin client keeps no redirect target for it
_FILE_MAPS = 64  # torrents whose path -> file maps are kept
_ZEROS = bytes(1 << 20)
_IMMUTABLE = "public, max-age=31536000, immutable"  # a file at a commit never changes


class _Refused(Exception):
    """An answer other than the file: a status, a one-line reason, maybe headers."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.headers = dict(headers or {})

    def response(self) -> Response:
        return JSONResponse({"error": str(self)}, self.status, {"Cache-Control": "no-store", **self.headers})


class _Body(Protocol):
    async def next(self) -> bytes | bytearray | None: ...

    def close(self) -> None: ...


class Gateway:
    """BEP 19 web seed for the releases ``lookup`` knows, reading bytes through ``origin``.

    ``lookup(repo_type, repo_id, commit)`` gives the published torrent of a release (parsed; the hybrid or
    the classic one, they list the same files) or None. It is called on the event loop, so it must be
    quick (an in-memory cache in front of the catalog). ``bytes_served`` counts body bytes sent per
    release, pads included.
    """

    def __init__(
        self,
        lookup: Lookup,
        origin: OriginClient,
        *,
        chunk_size: int = CHUNK_SIZE,
        window: int = WINDOW,
        upstream_timeout: float = UPSTREAM_TIMEOUT,
        retry_after: int = RETRY_AFTER,
    ) -> None:
        if chunk_size < 1 or window < 1:
            raise ValueError("chunk_size and window must be positive")
        self._lookup = lookup
        self._origin = origin
        self.chunk_size = chunk_size
        self.window = window
        self.upstream_timeout = upstream_timeout
        self.retry_after = retry_after
        self._served: dict[ReleaseKey, int] = {}
        self._file_maps: OrderedDict[str, dict[str, TorrentFile]] = OrderedDict()
        self._first_reads = _FirstReads()

    @property
    def bytes_served(self) -> Mapping[ReleaseKey, int]:
        """Body bytes sent to clients per (repo type, repo id, commit); a live read-only view."""
        return MappingProxyType(self._served)

    def routes(self) -> list[BaseRoute]:
        """The gateway's routes, to mount under ``/webseed``."""
        return [Route("/{path:path}", self._endpoint, methods=["GET", "HEAD"])]

    def app(self) -> Starlette:
        """The gateway alone, under ``/webseed`` as in the registry (tests, benchmarks)."""
        return Starlette(routes=[Mount("/webseed", routes=self.routes())])

    # ------------------------------------------------------------------------------------------ answering

    async def _endpoint(self, request: Request) -> Response:
        try:
            return await self._answer(request)
        except _Refused as refused:
            return refused.response()

    async def _answer(self, request: Request) -> Response:
        key, file = self._find(request.path_params["path"])
        headers = {"Accept-Ranges": "bytes", "Content-Type": "application/octet-stream", "Cache-Control": _IMMUTABLE}
        if isinstance(file, TorrentFile) and file.etag:
            headers["ETag"] = f'"{file.etag}"'
        if request.method == "HEAD":  # RFC 9110 §14.2: Range is defined for GET only
            return Response(status_code=200, headers={**headers, "Content-Length": str(file.size)})
        try:
            wanted = parse_range(request.headers.get("range"), file.size)
        except RangeNotSatisfiable:
            raise _Refused(416, "range not satisfiable", {"Content-Range": f"bytes */{file.size}"}) from None
        status, part = (200, ByteRange(0, file.size, file.size)) if wanted is None else (206, wanted)
        if status == 206:
            headers["Content-Range"] = part.content_range
        headers["Content-Length"] = str(part.length)
        if part.length == 0:
            return Response(status_code=status, headers=headers)
        body: _Body = _Zeros(part.length) if isinstance(file, PadFile) else self._from_origin(key, file.path, part)
        try:
            first = await body.next()
        except (OriginError, TimeoutError) as exc:
            body.close()
            raise self._refusal(exc, request.path_params["path"]) from None
        except BaseException:
            body.close()
            raise
        return _Streamed(status, headers, first, body, lambda n: self._count(key, n))

    def _find(self, path: str) -> tuple[ReleaseKey, TorrentFile | PadFile]:
        for wanted in webseed_candidates(path):
            repo = wanted.repo
            torrent = self._lookup(repo.repo_type, repo.repo_id, repo.commit)
            if torrent is None:
                continue
            found = find_file(torrent, self._files_of(torrent), wanted)
            if found is not None:
                return (repo.repo_type, repo.repo_id, repo.commit), found
        raise _Refused(404, "not a file of a published release")

    def _files_of(self, torrent: Torrent) -> dict[str, TorrentFile]:
        key = torrent.key
        files = self._file_maps.get(key)
        if files is None:
            files = self._file_maps[key] = {f.path: f for f in torrent.files}
            if len(self._file_maps) > _FILE_MAPS:
                self._file_maps.popitem(last=False)
        else:
            self._file_maps.move_to_end(key)
        return files

    def _refusal(self, exc: OriginError | TimeoutError, path: str) -> _Refused:
        if isinstance(exc, FileNotFoundError):
            log.warning("%s: the origin says it is gone (%s)", path, exc)
            return _Refused(404, "the origin does not have this file")
        if isinstance(exc, PermissionError):
            log.warning("%s: the origin refuses the gateway access (%s)", path, exc)
            return _Refused(403, "the origin gives this file only to those with access to its repo")
        reason = str(exc) or f"no answer within {self.upstream_timeout:g} s"
        log.warning("%s: origin unavailable, answering 503 (%s)", path, reason)
        return _Refused(503, "the origin is unavailable; try again later", {"Retry-After": str(self.retry_after)})

    def _count(self, key: ReleaseKey, n: int) -> None:
        self._served[key] = self._served.get(key, 0) + n

    def _from_origin(self, key: ReleaseKey, path: str, part: ByteRange) -> _OriginChunks:
        repo = RepoRef(*key)
        origin, timeout, first_reads = self._origin, self.upstream_timeout, self._first_reads

        async def read(offset: int, length: int) -> bytearray:
            buffer = bytearray(length)

            def fill() -> Awaitable[None]:
                view = memoryview(buffer)
                return origin.read_range_into(repo.repo_type, repo.repo_id, repo.commit, path, offset, view)

            def fresh_until() -> float | None:
                return origin.redirect_fresh_until(repo.repo_type, repo.repo_id, repo.commit, path)

            await asyncio.wait_for(first_reads.read((key, path), fill, fresh_until), timeout)
            return buffer

        return _OriginChunks(read, part, self.chunk_size, self.window)


class _FirstReads:
    """While a file's redirect target is not known, one read of it goes first and the others wait for it.

    The origin client reuses a file's redirect target once one read has resolved it, but reads that start
    together each resolve: a client asking for dozens of ranges of a file at once (Transmission does) would
    cost a resolve of the Hub's quota for each instead of one. A file counts as known, after a read of it
    succeeded, for as long as the origin client says it reuses the target (until shortly before its signed
    URL expires), or ``fresh_for`` seconds when it keeps none (the origin answered itself); then one read goes
    first again, so a target's renewal costs one resolve too. A failed first read lets the waiting ones try
    for themselves.
    """

    def __init__(self, fresh_for: float = FIRST_READ_FRESH, remembered: int = 4096) -> None:
        self.fresh_for = fresh_for
        self._remembered = remembered
        self._known: OrderedDict[Hashable, float] = OrderedDict()  # file -> known until (time.monotonic())
        self._leaders: dict[Hashable, asyncio.Future[None]] = {}

    async def read(
        self, file: Hashable, fill: Callable[[], Awaitable[None]], fresh_until: Callable[[], float | None]
    ) -> None:
        known = self._known.get(file)
        if known is not None and time.monotonic() < known:
            await fill()
            return
        leader = self._leaders.get(file)
        if leader is not None:
            await asyncio.shield(leader)
            await fill()
            return
        done = self._leaders[file] = asyncio.get_running_loop().create_future()
        try:
            await fill()
            until = fresh_until()
            self._known[file] = until if until is not None else time.monotonic() + self.fresh_for
            self._known.move_to_end(file)
            if len(self._known) > self._remembered:
                self._known.popitem(last=False)
        finally:
            del self._leaders[file]
            done.set_result(None)


# ------------------------------------------------------------------------------------------------ bodies


class _OriginChunks:
    """A range of one file read ``window`` chunks ahead of the sender, in order."""

    def __init__(
        self, read: Callable[[int, int], Awaitable[bytearray]], part: ByteRange, chunk_size: int, window: int
    ) -> None:
        self._read = read
        self._end = part.end
        self._chunk_size = chunk_size
        self._window = window
        self._offsets = iter(range(part.start, part.end, chunk_size))
        self._pending: deque[asyncio.Future[bytearray]] = deque()

    def _top_up(self) -> None:
        while len(self._pending) < self._window:
            offset = next(self._offsets, None)
            if offset is None:
                return
            length = min(self._chunk_size, self._end - offset)
            self._pending.append(asyncio.ensure_future(self._read(offset, length)))

    async def next(self) -> bytearray | None:
        self._top_up()
        if not self._pending:
            return None
        chunk = await self._pending[0]
        self._pending.popleft()
        self._top_up()
        return chunk

    def close(self) -> None:
        while self._pending:
            task = self._pending.popleft()
            task.cancel()
            task.add_done_callback(_consume)


def _consume(task: asyncio.Future[bytearray]) -> None:
    """Retrieve a dropped read's outcome so asyncio does not log it as never retrieved."""
    if not task.cancelled():
        task.exception()


class _Zeros:
    """A BEP 47 pad file's bytes."""

    def __init__(self, length: int) -> None:
        self._left = length

    async def next(self) -> bytes | None:
        if not self._left:
            return None
        n = min(self._left, len(_ZEROS))
        self._left -= n
        return _ZEROS[:n]

    def close(self) -> None:
        self._left = 0


class _Streamed(Response):
    """Status and headers, the first chunk (already in hand), then the rest as it comes.

    Stops reading upstream as soon as the client goes away (``http.disconnect``); an upstream failure
    after the status line breaks the connection, since the status can no longer say so.
    """

    def __init__(
        self,
        status: int,
        headers: Mapping[str, str],
        first: bytes | bytearray | None,
        body: _Body,
        on_sent: Callable[[int], None],
    ) -> None:
        super().__init__(None, status, headers)
        self._first = first
        self._body = body
        self._on_sent = on_sent

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        streaming = asyncio.ensure_future(self._stream(send))
        disconnected = asyncio.ensure_future(_disconnect(receive))
        try:
            await asyncio.wait((streaming, disconnected), return_when=asyncio.FIRST_COMPLETED)
        finally:
            streaming.cancel()
            disconnected.cancel()
            await asyncio.gather(streaming, disconnected, return_exceptions=True)
            self._body.close()
        if not streaming.cancelled() and (exc := streaming.exception()) is not None:
            log.warning("%s: upstream failed mid-response, breaking the connection (%s)", scope.get("path"), exc)
            raise exc

    async def _stream(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        chunk = self._first
        while chunk is not None:
            view = memoryview(chunk)
            for at in range(0, len(view), SEND_SLICE):
                piece = view[at : at + SEND_SLICE]
                self._on_sent(len(piece))  # counted as handed to the server: before a client can see it
                await send({"type": "http.response.body", "body": piece, "more_body": True})
            chunk = await self._body.next()
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
