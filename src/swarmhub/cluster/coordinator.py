"""The coordinator: the cluster's tracker and brain, over HTTP.

- ``POST /cluster/report``  a node's heartbeat (JSON): its id, labels, BitTorrent port, and per torrent the
  pieces it has and its origin/peer bytes. The answer: per torrent, the pieces it alone fetches from the
  origin (hex bitfields), and the torrents it is asked to fetch (``preheat``), base64.
- ``GET /announce``, ``/scrape``  the tracker (BEP 3/23/48). Nodes announce with ``&node=<id>`` in the URL, and
  get peers of their rack first, then their zone.
- ``POST /cluster/preheat``  ``{"torrent": base64, "nodes": "all" | "LABEL=VALUE" | N}``: those nodes fetch
  the release at their next heartbeat.
- ``GET /cluster/status``  nodes, what each holds, bytes from the origin and from peers per release (JSON);
  ``GET /`` the same as a page that refreshes itself.
- ``PUT /shards/manifests/NAME``  a shard set's manifest (``swarmhub-shards/1`` JSON), kept under its name
  (``shard_set_name``) so a node can start knowing only the name; another manifest under the name replaces it.
  ``GET /shards/manifests/NAME`` gives it back, ``GET /shards/manifests`` lists the names. Kept in memory:
  nodes that have a manifest put it again when they start.

With ``token``, reports, preheats and manifests put need ``Authorization: Bearer <token>``; the tracker only
answers nodes that reported (its peers are the cluster's).
"""

from __future__ import annotations

import base64
import hmac
import html
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from swarmhub.bt.metainfo import Torrent, cluster_variant, parse_torrent
from swarmhub.bt.tracker import AnnounceReply, Swarms
from swarmhub.cluster.brain import Brain, ReleaseReport, decode_pieces, encode_pieces
from swarmhub.errors import ClusterError, ShardError, SwarmhubError
from swarmhub.serving import BackgroundServer
from swarmhub.shards.manifest import Manifest, shard_set_name
from swarmhub.tracker.app import TrackerApp

__all__ = ["Coordinator", "CoordinatorServer", "coordinator_app", "select_nodes"]

ANNOUNCE_INTERVAL = 30  # seconds; nodes re-announce often: a cluster's membership changes fast
MAX_MANIFEST_BYTES = 16 << 20  # a manifest is ~1 KB a shard (its torrent's piece hashes): room for thousands

log = logging.getLogger(__name__)


@dataclass
class _Preheat:
    torrent: Torrent
    data: bytes
    nodes: set[str]  # who is asked
    asked_at: float
    done: set[str] = field(default_factory=set)


class Coordinator:
    """State behind the HTTP API: the brain, the tracker's swarms, preheats, shard sets' manifests."""

    def __init__(
        self,
        brain: Brain,
        *,
        token: str | None = None,
        ca_pem: bytes | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.brain = brain
        self.token = token
        self.ca_pem = ca_pem  # a private cluster's CA: preheats send the TLS-only variant nodes trade
        self.clock = clock
        swarms = Swarms(rng=random.Random(), interval=ANNOUNCE_INTERVAL, min_interval=5)
        self.tracker = TrackerApp(swarms, clock=clock, order_peers=self._order_peers)
        self.preheats: dict[str, _Preheat] = {}
        self.shard_manifests: dict[str, bytes] = {}  # shard set name -> its manifest, as Manifest.to_json writes it

    def report(self, body: Mapping[str, Any], client_host: str) -> dict[str, Any]:
        now = self.clock()
        node_id, labels, reports = _parse_report(body)
        port = body.get("bt_port")
        address = (client_host, port) if isinstance(port, int) and 0 < port < 65536 else None
        assigned = self.brain.report(node_id, labels, address, reports, now)
        held = {r.key for r in reports}
        pulls = []
        for key, preheat in self.preheats.items():
            if node_id in preheat.nodes and key not in held and _key_variants(preheat.torrent).isdisjoint(held):
                pulls.append(base64.b64encode(preheat.data).decode())
            elif node_id in preheat.nodes:
                done = next((r for r in reports if r.key in _key_variants(preheat.torrent)), None)
                if done is not None and done.complete:
                    preheat.done.add(node_id)
        sizes = {r.key: r.num_pieces for r in reports}
        return {
            "assignments": {key: encode_pieces(p, sizes[key]) for key, p in assigned.items()},
            "pull": pulls,
            "announce_interval": ANNOUNCE_INTERVAL,
        }

    def preheat(self, body: Mapping[str, Any]) -> dict[str, Any]:
        try:
            data = base64.b64decode(str(body["torrent"]), validate=True)
        except (KeyError, ValueError) as exc:
            raise ClusterError("preheat needs {'torrent': base64 of the .torrent}") from exc
        if self.ca_pem is not None:
            data = cluster_variant(data, self.ca_pem)
        torrent = parse_torrent(data)
        if torrent.repo is None:
            raise ClusterError("not a swarmhub release torrent (no Hub identity in info.hf)")
        now = self.clock()
        alive = [n for n in self.brain.nodes(now) if n.alive]
        chosen = select_nodes(alive, body.get("nodes", "all"))
        if not chosen:
            raise ClusterError(f"no live node matches {body.get('nodes', 'all')!r}")
        self.preheats[torrent.key] = _Preheat(torrent, data, set(chosen), now)
        return {"key": torrent.key, "repo_id": torrent.repo.repo_id, "commit": torrent.repo.commit, "nodes": chosen}

    def put_manifest(self, name: str, data: bytes) -> dict[str, Any]:
        """Keep a shard set's manifest under ``name``, which must be its own; the same one again changes nothing."""
        try:
            manifest = Manifest.from_json(data)
            own = shard_set_name(manifest)
        except ShardError as exc:
            raise ClusterError(f"bad manifest: {exc}") from exc
        if own != name:
            raise ClusterError(f"the manifest is shard set {own!r}, not {name!r}")
        if not manifest.shards:
            raise ClusterError(f"the manifest of {name!r} lists no shard")
        stored = manifest.to_json()
        before = self.shard_manifests.get(name)
        if before != stored:
            log.info(
                "shard set %s: manifest of %d shard(s) %s", name, len(manifest.shards), "replaced" if before else "put"
            )
        self.shard_manifests[name] = stored
        return {"name": name, "shards": len(manifest.shards), "changed": before != stored}

    def status(self) -> dict[str, Any]:
        now = self.clock()
        nodes = []
        releases: dict[str, dict[str, Any]] = {}
        for n in self.brain.nodes(now):
            held = {}
            for key, r in n.releases.items():
                held[key] = {
                    "pieces": len(r.have & r.needs),
                    "of": len(r.needs),
                    "origin_bytes": r.origin_bytes,
                    "peer_bytes": r.peer_bytes,
                }
                total = releases.setdefault(
                    key, {"name": r.name, "nodes": 0, "complete": 0, "origin_bytes": 0, "peer_bytes": 0}
                )
                total["nodes"] += 1
                total["complete"] += r.complete
                total["origin_bytes"] += r.origin_bytes
                total["peer_bytes"] += r.peer_bytes
            nodes.append(
                {
                    "node_id": n.node_id,
                    "labels": dict(n.labels),
                    "address": f"{n.address[0]}:{n.address[1]}" if n.address else None,
                    "alive": n.alive,
                    "seen_seconds_ago": round(now - n.last_seen, 1),
                    "releases": held,
                }
            )
        for key, total in releases.items():
            total["fetchers"] = self.brain.fetchers_of(key)
        preheats = {
            key: {
                "repo_id": p.torrent.repo.repo_id if p.torrent.repo else p.torrent.name,
                "nodes": sorted(p.nodes),
                "done": sorted(p.done),
                "seconds": round(now - p.asked_at, 1),
            }
            for key, p in self.preheats.items()
        }
        return {"nodes": nodes, "releases": releases, "preheats": preheats}

    def _order_peers(self, query: bytes, reply: AnnounceReply) -> AnnounceReply:
        """The asker's rack first, then its zone (nodes announce with ``&node=<id>``)."""
        node = parse_qs(query.decode("latin-1")).get("node", [None])[0]
        by_address = {(str(p.ip), p.port): p for p in reply.peers}
        ordered = self.brain.order_peers(node, list(by_address))
        return replace(reply, peers=tuple(by_address[a] for a in ordered))


def select_nodes(alive: list[Any], selector: object) -> list[str]:
    """``all``, ``LABEL=VALUE`` or a count (the first N by id) of the live nodes."""
    ids = [n.node_id for n in alive]
    if selector in (None, "all"):
        return ids
    if isinstance(selector, int) or (isinstance(selector, str) and selector.isdigit()):
        return ids[: int(selector)]
    if isinstance(selector, str) and "=" in selector:
        label, _, value = selector.partition("=")
        return [n.node_id for n in alive if n.labels.get(label) == value]
    raise ClusterError(f"nodes: 'all', 'LABEL=VALUE' or a count, not {selector!r}")


def _key_variants(torrent: Torrent) -> set[str]:
    return {k for k in (torrent.info_hash_v2, torrent.info_hash_v1) if k}


def _parse_report(body: Mapping[str, Any]) -> tuple[str, dict[str, str], list[ReleaseReport]]:
    try:
        node_id = str(body["node_id"])
        labels = {str(k): str(v) for k, v in dict(body.get("labels") or {}).items()}
        reports = []
        for r in body.get("releases") or []:
            n = int(r["num_pieces"])
            wanted = r.get("wanted")
            reports.append(
                ReleaseReport(
                    key=str(r["key"]),
                    num_pieces=n,
                    have=decode_pieces(str(r["have"]), n),
                    origin_bytes=int(r.get("origin_bytes", 0)),
                    peer_bytes=int(r.get("peer_bytes", 0)),
                    name=str(r.get("name", "")),
                    wanted=decode_pieces(str(wanted), n) if wanted is not None else None,
                    fetching=decode_pieces(str(r["fetching"]), n) if r.get("fetching") else frozenset(),
                )
            )
    except (KeyError, TypeError, ValueError) as exc:
        raise ClusterError(f"bad report: {exc}") from exc
    if not node_id or len(node_id) > 128:
        raise ClusterError("bad report: node_id")
    return node_id, labels, reports


def coordinator_app(coordinator: Coordinator) -> Starlette:
    def authorized(request: Request) -> bool:
        if coordinator.token is None:
            return True
        given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        return hmac.compare_digest(given.encode(), coordinator.token.encode())

    def token_needed() -> Response:
        return JSONResponse({"error": "a cluster token is needed (SWARMHUB_CLUSTER_TOKEN)"}, status_code=401)

    def client(request: Request) -> str:
        return request.client.host if request.client else ""

    async def report(request: Request) -> Response:
        if not authorized(request):
            return token_needed()
        try:
            return JSONResponse(coordinator.report(await request.json(), client(request)))
        except (ClusterError, ValueError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)

    async def preheat(request: Request) -> Response:
        if not authorized(request):
            return token_needed()
        try:
            return JSONResponse(coordinator.preheat(await request.json()))
        except (SwarmhubError, ValueError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)

    async def status(request: Request) -> Response:
        return JSONResponse(coordinator.status())

    async def page(request: Request) -> Response:
        return HTMLResponse(status_page(coordinator.status()))

    async def put_manifest(request: Request) -> Response:
        if not authorized(request):
            return token_needed()
        data = await _body(request, MAX_MANIFEST_BYTES)
        if data is None:
            return JSONResponse({"error": f"a manifest is at most {MAX_MANIFEST_BYTES} bytes"}, status_code=413)
        try:
            return JSONResponse(coordinator.put_manifest(request.path_params["name"], data))
        except ClusterError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)

    async def get_manifest(request: Request) -> Response:
        name = request.path_params["name"]
        data = coordinator.shard_manifests.get(name)
        if data is None:
            return JSONResponse({"error": f"no manifest named {name!r}"}, status_code=404)
        return Response(data, media_type="application/json")

    async def manifests(request: Request) -> Response:
        return JSONResponse({"names": sorted(coordinator.shard_manifests)})

    return Starlette(
        routes=[
            Route("/cluster/report", report, methods=["POST"]),
            Route("/cluster/preheat", preheat, methods=["POST"]),
            Route("/cluster/status", status),
            Route("/shards/manifests", manifests),
            Route("/shards/manifests/{name}", put_manifest, methods=["PUT"]),
            Route("/shards/manifests/{name}", get_manifest, methods=["GET"]),
            Route("/announce", coordinator.tracker),
            Route("/scrape", coordinator.tracker),
            Route("/", page),
        ]
    )


async def _body(request: Request, limit: int) -> bytes | None:
    """The request's body, or None past ``limit`` bytes (read no further)."""
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > limit:
            return None
    return bytes(data)


def status_page(status: Mapping[str, Any]) -> str:
    """The status as a page (refreshes every 2 s): releases with origin vs peer bytes, then nodes."""
    e = html.escape
    rows = "".join(
        f"<tr><td>{e(r['name'] or key[:16])}</td><td>{r['complete']}/{r['nodes']}</td>"
        f"<td>{r['origin_bytes'] / 1e6:.1f} MB</td><td>{r['peer_bytes'] / 1e6:.1f} MB</td>"
        f"<td>{e(', '.join(f'{n}: {c}' for n, c in r['fetchers'].items()))}</td></tr>"
        for key, r in status["releases"].items()
    )
    nodes = "".join(
        f"<tr><td>{e(n['node_id'])}</td><td>{e(' '.join(f'{k}={v}' for k, v in n['labels'].items()))}</td>"
        f"<td>{e(n['address'] or '')}</td><td>{'yes' if n['alive'] else 'no'}</td>"
        f"<td>{e(_held(n['releases']))}</td></tr>"
        for n in status["nodes"]
    )
    return (
        "<!doctype html><html><head><meta charset=utf-8><meta http-equiv=refresh content=2>"
        "<title>swarmhub cluster</title><style>body{font:14px system-ui;margin:2em}td,th{padding:4px 10px;"
        "text-align:left}table{border-collapse:collapse}tr:nth-child(even){background:#f4f4f4}</style></head><body>"
        "<h1>swarmhub cluster</h1><h2>Releases</h2><table><tr><th>release</th><th>complete</th>"
        "<th>from origin</th><th>from peers</th><th>origin fetchers (pieces left)</th></tr>"
        f"{rows}</table><h2>Nodes</h2><table><tr><th>node</th><th>labels</th><th>address</th><th>alive</th>"
        f"<th>pieces</th></tr>{nodes}</table></body></html>"
    )


def _held(releases: Mapping[str, Mapping[str, int]]) -> str:
    return ", ".join(f"{key[:12]}: {h['pieces']}/{h['of']}" for key, h in releases.items())


class CoordinatorServer(BackgroundServer):
    name = "swarmhub-coordinator"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        fetchers: int = 3,
        token: str | None = None,
        ca_pem: bytes | None = None,
    ) -> None:
        super().__init__(host, [port])
        self.coordinator = Coordinator(Brain(fetchers=fetchers), token=token, ca_pem=ca_pem)

    def _apps(self) -> list[Starlette]:
        return [coordinator_app(self.coordinator)]
