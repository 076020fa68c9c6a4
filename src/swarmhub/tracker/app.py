"""The tracker's ASGI app: ``GET /announce`` and ``GET /scrape``, answers always bencoded.

A query we refuse is answered ``200`` with a ``failure reason`` (BEP 3), never a 4xx or 5xx: clients show
the reason to their user only when it comes that way. The peer's address is the connection's, unless the
connection comes from loopback and the query names an ``ip`` (``bt.tracker.peer_ip``).

A bare ASGI callable, no framework: every announce is a query string in and a few bytes out, and a
Starlette ``Request``, ``Response`` and router per announce cost more than the tracker itself. Anything but
``GET``/``HEAD`` is ``405``, any other path ``404`` (as a Starlette ``Route`` would answer). The registry
mounts the same app at its own ``/announce`` and ``/scrape``; ``tracker serve`` sends the same answers from
a server of its own (``tracker.protocol``).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from starlette.types import Message, Receive, Scope, Send

from swarmhub.bt.tracker import (
    AnnounceReply,
    Swarms,
    encode_announce,
    encode_failure,
    encode_scrape,
    parse_announce,
    parse_scrape,
    peer_ip,
)
from swarmhub.errors import TrackerRequestError

__all__ = ["HEADERS", "TrackerApp", "tracker_app"]

_BENCODED = ((b"content-type", b"text/plain"), (b"cache-control", b"no-store"))
_TEXT = ((b"content-type", b"text/plain; charset=utf-8"),)
HEADERS: dict[int, tuple[tuple[bytes, bytes], ...]] = {
    200: _BENCODED,
    404: _TEXT,
    405: (*_TEXT, (b"allow", b"GET, HEAD")),
}
"""The header fields of each answer ``TrackerApp.answer`` gives, but ``content-length``."""


class TrackerApp:
    """``swarms`` answers every request, with ``clock()`` as its time (tests pass a fake one).

    ``answer`` is the whole tracker without HTTP around it: the ASGI ``__call__`` and the tracker's own
    server (``tracker.protocol``) both send what it returns. ``publish_peer_ids``: the list-of-dicts answer
    (``compact=0``) names each peer's ``peer id`` (unless the query says ``no_peer_id=1``); off by default.
    """

    def __init__(
        self,
        swarms: Swarms,
        *,
        clock: Callable[[], float] = time.monotonic,
        admit: Callable[[bytes, str], None] | None = None,
        order_peers: Callable[[bytes, AnnounceReply], AnnounceReply] | None = None,
        publish_peer_ids: bool = False,
    ) -> None:
        self.swarms = swarms
        self.clock = clock
        self.admit = admit  # (query, client host) -> None, or TrackerRequestError: who may announce (a cluster's)
        self.order_peers = order_peers  # (query, reply) -> the reply with its peers reordered (a cluster's)
        self.publish_peer_ids = publish_peer_ids

    def answer(self, method: str, path: str, query: bytes, client_host: str) -> tuple[int, bytes]:
        """The status and body for ``method path?query`` from ``client_host`` (headers: ``HEADERS[status]``).

        ``HEAD`` announces as ``GET`` does: the caller leaves the body out."""
        if path == "/announce":
            body = self.announce(query, client_host) if method == "GET" or method == "HEAD" else None
        elif path == "/scrape":
            body = self.scrape(query) if method == "GET" or method == "HEAD" else None
        else:
            return 404, b"Not Found"
        return (405, b"Method Not Allowed") if body is None else (200, body)

    def announce(self, query: bytes, client_host: str) -> bytes:
        """The bencoded answer to the raw announce query ``query`` from a peer at ``client_host``."""
        try:
            request = parse_announce(query)
            if self.admit is not None:
                self.admit(query, client_host)
            reply = self.swarms.announce(request, peer_ip(client_host, request.ip), self.clock())
        except TrackerRequestError as error:
            return encode_failure(error.message)
        if self.order_peers is not None:
            reply = self.order_peers(query, reply)
        peer_ids = self.publish_peer_ids and not request.no_peer_id
        return encode_announce(reply, compact=request.compact, peer_ids=peer_ids)

    def scrape(self, query: bytes) -> bytes:
        """The bencoded answer to the raw scrape query ``query`` (BEP 48)."""
        try:
            return encode_scrape(self.swarms.scrape(parse_scrape(query), self.clock()))
        except TrackerRequestError as error:
            return encode_failure(error.message)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        client = scope.get("client")
        method = scope["method"]
        status, body = self.answer(method, scope["path"], scope["query_string"], client[0] if client else "")
        headers = [*HEADERS[status], (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})


def tracker_app(
    swarms: Swarms, *, clock: Callable[[], float] = time.monotonic, publish_peer_ids: bool = False
) -> TrackerApp:
    """The ASGI app serving ``/announce`` and ``/scrape`` from ``swarms``."""
    return TrackerApp(swarms, clock=clock, publish_peer_ids=publish_peer_ids)


async def _lifespan(receive: Receive, send: Send) -> None:
    """Nothing to start or stop: acknowledge both, for servers that run the lifespan protocol."""
    while True:
        message: Message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
