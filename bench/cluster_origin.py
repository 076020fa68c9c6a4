"""The cluster benchmark's origin: the dev hub (Hub API, resolve, LFS CDN) and a BEP 19 web seed, counting
every body byte it sends, and throttled to a total rate when no ``tc`` shapes its link (the loopback lab).

    python bench/cluster_origin.py ROOT --repo ORG/NAME --host ADDR [--port P] [--cdn-port P2] [--rate B/s]

One process, one event loop, three kinds of answers:
- the dev hub's origin app (``/api/...``, ``/ORG/NAME/resolve/...``) and its CDN app (``/lfs/<sha256>``, where
  LFS resolves redirect): what ``huggingface_hub`` talks to;
- ``/ws/<torrent name>/<path>``: the release's files as a web seed (BEP 19: url-list + name + "/" + path),
  ranges answered 206 straight from the repo folder, no redirect (libtorrent closes the connection on each);
- ``GET /_bench/bytes``: body bytes sent so far, per app: ``{"origin": n, "cdn": n, "webseed": n, "total": n}``,
  and by the client's address (``"by_client": {address: n}``);
- ``PUT /_bench/faults``: the dev hub's fault rules (``swarmhub.devhub.faults.rules_from_json``: 429s, 5xx,
  resets mid-body, ...) for every app, the web seed included, replacing those before; ``[]`` clears them
  (bench/chaos.py's origin faults).

Prints one JSON line once it serves: ``{"endpoint": URL, "cdn": URL, "webseed": URL}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from swarmhub.devhub.app import DevHubSettings, DevHubState, cdn_app, origin_app
from swarmhub.devhub.faults import FaultInjection, Faults, rules_from_json
from swarmhub.devhub.repos import RepoStore
from swarmhub.errors import ConfigError
from swarmhub.serving import UvicornThread, bind, run_until_interrupted, url_host


class TokenBucket:
    """A total rate shared by every connection: each body chunk waits its turn (FIFO) until it fits."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, burst
        self.tokens = burst
        self.stamp = time.monotonic()
        self.lock = asyncio.Lock()

    async def take(self, n: int) -> None:
        async with self.lock:
            now = time.monotonic()
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate) - n
            self.stamp = now
            if self.tokens < 0:  # in debt: wait it off, holding the line so the order stays fair
                await asyncio.sleep(-self.tokens / self.rate)


class Metered:
    """Counts (and throttles, with a bucket) the body bytes ``app`` sends, under ``key`` in ``counts``."""

    def __init__(
        self,
        app: ASGIApp,
        counts: dict[str, int],
        key: str,
        bucket: TokenBucket | None,
        by_client: dict[str, int] | None = None,
    ) -> None:
        self.app, self.counts, self.key, self.bucket = app, counts, key, bucket
        self.by_client = {} if by_client is None else by_client
        counts.setdefault(key, 0)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        client = (scope.get("client") or ("?", 0))[0]

        async def metered(message: Message) -> None:
            if message["type"] == "http.response.body":
                n = len(message.get("body", b""))
                if n and self.bucket is not None:
                    await self.bucket.take(n)
                self.counts[self.key] += n
                self.by_client[client] = self.by_client.get(client, 0) + n
            await send(message)

        await self.app(scope, receive, metered)


class Front:
    """The origin port: web seed and counters here, everything else to the dev hub's origin app."""

    def __init__(
        self, hub: ASGIApp, repo: Path, counts: dict[str, int], bucket: TokenBucket | None, faults: Faults
    ) -> None:
        self.by_client: dict[str, int] = {}  # body bytes by the client's address, every app together
        self.hub = Metered(hub, counts, "origin", bucket, self.by_client)
        self.webseed = Metered(FaultInjection(self._webseed, faults), counts, "webseed", bucket, self.by_client)
        self.repo = repo.resolve()
        self.counts = counts
        self.faults = faults

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if path.startswith("/ws/"):
            await self.webseed(scope, receive, send)
        elif path == "/_bench/bytes":
            counts = dict(self.counts)
            answer = {**counts, "total": sum(counts.values()), "by_client": dict(self.by_client)}
            await JSONResponse(answer)(scope, receive, send)
        elif path == "/_bench/faults":
            await (await self._set_faults(Request(scope, receive)))(scope, receive, send)
        else:
            await self.hub(scope, receive, send)

    async def _set_faults(self, request: Request) -> Response:
        if request.method != "PUT":
            return PlainTextResponse("PUT a JSON list of fault rules", 405, headers={"Allow": "PUT"})
        try:
            rules = rules_from_json((await request.body()).decode())
        except (ConfigError, UnicodeDecodeError) as exc:
            return PlainTextResponse(str(exc), 400)
        self.faults.clear()
        for rule in rules:
            self.faults.add(rule)
        return JSONResponse({"rules": len(rules)})

    async def _webseed(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._file(Request(scope, receive))(scope, receive, send)

    def _file(self, request: Request) -> Response:
        parts = request.url.path.split("/", 3)  # "", "ws", torrent name, path in the release
        if len(parts) < 4 or request.method not in ("GET", "HEAD"):
            return PlainTextResponse("not found", 404)
        local = (self.repo / parts[3]).resolve()
        if not local.is_file() or not local.is_relative_to(self.repo):
            return PlainTextResponse("not found", 404)
        return FileResponse(local, media_type="application/octet-stream")  # Range -> 206 + Content-Range


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path, help="folder holding models/ORG/NAME")
    parser.add_argument("--repo", required=True, help="the release the web seed serves (ORG/NAME)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--cdn-port", type=int, default=0)
    parser.add_argument("--rate", type=float, default=0, help="total bytes/s for all answers (0: unlimited)")
    args = parser.parse_args()

    state = DevHubState(RepoStore(args.root), DevHubSettings())
    sockets = [bind(args.host, args.port), bind(args.host, args.cdn_port)]
    ports = [s.getsockname()[1] for s in sockets]
    state.cdn_port = ports[1]
    # A bucket of 0.1 s: small enough that the rate holds over any second, large enough for a few chunks.
    bucket = TokenBucket(args.rate, max(args.rate * 0.1, 1 << 20)) if args.rate else None
    counts: dict[str, int] = {}
    front = Front(origin_app(state), args.root / "models" / args.repo, counts, bucket, state.faults)
    apps: list[ASGIApp] = [front, Metered(cdn_app(state), counts, "cdn", bucket, front.by_client)]
    server = UvicornThread("cluster-origin", apps, sockets)
    base = f"http://{url_host(args.host)}"
    info: dict[str, Any] = {
        "endpoint": f"{base}:{ports[0]}",
        "cdn": f"{base}:{ports[1]}",
        "webseed": f"{base}:{ports[0]}/ws/",
    }

    def ready() -> None:
        state.store.warm()  # hash the release before the first client asks
        print(json.dumps(info), flush=True)

    run_until_interrupted(server, ready)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
