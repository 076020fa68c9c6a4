"""The tracker's ASGI app: ``GET /announce`` and ``GET /scrape``, answers always bencoded.

A query we refuse is answered ``200`` with a ``failure reason`` (BEP 3), never a 4xx or 5xx: clients show
the reason to their user only when it comes that way. The peer's address is the connection's, unless the
connection comes from loopback and the query names an ``ip`` (``bt.tracker.peer_ip``).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from swarmhub.bt.tracker import (
    Swarms,
    encode_announce,
    encode_failure,
    encode_scrape,
    parse_announce,
    parse_scrape,
    peer_ip,
)
from swarmhub.errors import TrackerRequestError

__all__ = ["tracker_app"]


def _bencoded(body: bytes) -> Response:
    return Response(body, media_type="text/plain", headers={"Cache-Control": "no-store"})


def tracker_app(swarms: Swarms, *, clock: Callable[[], float] = time.monotonic) -> Starlette:
    """``swarms`` answers every request, with ``clock()`` as its time (tests pass a fake one)."""

    async def announce(request: Request) -> Response:
        try:
            query = parse_announce(request.scope["query_string"])
            host = request.client.host if request.client else ""
            reply = swarms.announce(query, peer_ip(host, query.ip), clock())
        except TrackerRequestError as error:
            return _bencoded(encode_failure(error.message))
        return _bencoded(encode_announce(reply, compact=query.compact, no_peer_id=query.no_peer_id))

    async def scrape(request: Request) -> Response:
        try:
            files = swarms.scrape(parse_scrape(request.scope["query_string"]), clock())
        except TrackerRequestError as error:
            return _bencoded(encode_failure(error.message))
        return _bencoded(encode_scrape(files))

    return Starlette(routes=[Route("/announce", announce), Route("/scrape", scrape)])
