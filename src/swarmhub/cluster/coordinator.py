"""The coordinator: the cluster's tracker and brain, over HTTP.

- ``POST /cluster/report``  a node's heartbeat (JSON): its id, labels, BitTorrent port, and per torrent the
  pieces it has and its origin/peer bytes. The answer: per torrent, the pieces it alone fetches from the
  origin (hex bitfields), and the torrents it is asked to fetch (``preheat``), base64.
- ``GET /announce``, ``/scrape``  the tracker (BEP 3/23/48). Nodes announce with ``&node=<id>`` in the URL, and
  get peers of their rack first, then their zone.
- ``POST /cluster/preheat``  ``{"torrent": base64, "nodes": "all" | "LABEL=VALUE" | N}``: those nodes fetch
  the release at their next heartbeat. A release in parts (``bt.metainfo``): ``torrent`` is part 0 and
  ``"parts": [base64, ...]`` the others; the answer to a report then names the release as the list of its
  torrents, part 0 first. A node is sent a preheat again only after ``RESEND_AFTER`` seconds (a 16 MiB
  torrent each second to every node that has not yet added it is a flood).
- ``GET /cluster/revision?type=model&repo=ORG/NAME&rev=main``  which commit a branch or tag is at, looked up
  on the upstream (anonymously) at most once per TTL for the whole cluster (``node.knowledge``): ``{"commit",
  "age", "stale"}`` (``stale``: the upstream failed and the last head known answers); the upstream's error
  status otherwise, with ``"failing": true`` when the upstream fails (a node then goes by the heads it knows)
  and not for a repo it may not see (a private repo: the node asks with its program's credential itself).
  With a token, only for those who send it (each lookup costs the Hub a request).
- ``GET /cluster/status``  nodes, what each holds, bytes from the origin and from peers per release (JSON);
  ``GET /`` the same as a page that refreshes itself.
- ``PUT /shards/manifests/NAME``  a shard set's manifest (``swarmhub-shards/1`` JSON), kept under its name
  (``shard_set_name``) so a node can start knowing only the name; another manifest under the name replaces it.
  ``GET /shards/manifests/NAME`` gives it back, ``GET /shards/manifests`` lists the names. Kept in memory:
  nodes that have a manifest put it again when they start.

Preheats outlive the coordinator: with ``state_dir`` each is kept in ``<state_dir>/preheats/<key>.json`` (the
torrent, who is asked, who is done), written when it is made and when a node finishes, and read at start. A
coordinator killed and started again still asks the nodes that have not started the release (a node that has
keeps its own record, ``node.library``). A new preheat of a release replaces the old one.

Who may drive it (``guard.Guard``, before any handler): the mutating calls (``POST``, ``PUT``) take
``Content-Type: application/json`` only and no ``Origin`` (so no web page can send them), and with ``token``
``Authorization: Bearer <token>``; bound to loopback it answers loopback ``Host`` names only (DNS rebinding).
``CoordinatorServer`` refuses to listen on another address without a token: anyone who reached it could
hand the nodes a torrent of their own bytes to fetch, steer the brain with reports, or replace a shard set.
With ``token`` the tracker answers only nodes that reported with it: an announce names its node
(``&node=<id>``), which must be alive and have reported from the address it announces from.

Bodies are capped: a report at ``MAX_REPORT_BYTES`` (a release of 40,000 pieces, the most ``create`` makes,
costs ~30 KB), a preheat at ``MAX_PREHEAT_BYTES``, a manifest at ``MAX_MANIFEST_BYTES``; past that, ``413``.
"""

from __future__ import annotations

import asyncio
import base64
import html
import json
import logging
import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from swarmhub.bt.metainfo import MAX_PIECES, Torrent, check_parts, cluster_variants, parse_torrent
from swarmhub.bt.tracker import AnnounceReply, Swarms
from swarmhub.cluster.brain import MAX_RELEASES, Brain, ReleaseReport, decode_bitfield, encode_bitfield
from swarmhub.errors import ClusterError, ConfigError, ShardError, SwarmhubError, TrackerRequestError
from swarmhub.guard import Guard, GuardRules, allowed_hosts, bearer_ok, is_loopback
from swarmhub.hub.answers import HubError
from swarmhub.hub.repo import RepoType, validate_repo_id
from swarmhub.node.hubstate import BranchHeads
from swarmhub.node.knowledge import Knowledge
from swarmhub.node.landing import atomic_bytes
from swarmhub.node.passthrough import Upstream
from swarmhub.serving import BackgroundServer, read_capped
from swarmhub.shards.manifest import Manifest, shard_set_name
from swarmhub.tracker.app import TrackerApp

__all__ = ["Coordinator", "CoordinatorServer", "coordinator_app", "select_nodes"]

ANNOUNCE_INTERVAL = 30  # seconds; nodes re-announce often: a cluster's membership changes fast
MAX_MANIFEST_BYTES = 16 << 20  # a manifest is ~1 KB a shard (its torrent's piece hashes): room for thousands
MAX_REPORT_BYTES = 1 << 20
MAX_PREHEAT_BYTES = 96 << 20  # a release of 64 MiB of torrents (a 16 MiB one, or parts), as base64 (4/3)
RESEND_AFTER = 10.0  # seconds before a node that has not added a preheat's torrents is sent them again

log = logging.getLogger(__name__)


@dataclass
class _Preheat:
    torrents: list[tuple[bytes, Torrent]]  # the release's torrents (as the nodes get them), part 0 first
    nodes: set[str]  # who is asked
    asked_at: float
    done: set[str] = field(default_factory=set)
    sent: dict[str, float] = field(default_factory=dict)  # node -> when it was last sent the torrents

    @property
    def torrent(self) -> Torrent:
        return self.torrents[0][1]

    def encoded(self) -> str | list[str]:
        """As a report's answer names it: the torrent, or the list of a release's parts."""
        datas = [base64.b64encode(d).decode() for d, _ in self.torrents]
        return datas[0] if len(datas) == 1 else datas


class Coordinator:
    """State behind the HTTP API: the brain, the tracker's swarms, preheats, shard sets' manifests."""

    def __init__(
        self,
        brain: Brain,
        *,
        token: str | None = None,
        ca_pem: bytes | None = None,
        clock: Callable[[], float] = time.monotonic,
        upstream: str | None = None,
        branch_ttl: float = 30.0,
        state_dir: Path | None = None,
    ) -> None:
        self.brain = brain
        self.upstream = upstream
        self.branch_ttl = branch_ttl
        self._knowledge: Knowledge | None = None  # made in the event loop that serves the lookups
        self.token = token
        self.ca_pem = ca_pem  # a private cluster's CA: preheats send the TLS-only variant nodes trade
        self.clock = clock
        swarms = Swarms(rng=random.Random(), interval=ANNOUNCE_INTERVAL, min_interval=5)
        self.tracker = TrackerApp(swarms, clock=clock, admit=self._admit, order_peers=self._order_peers)
        self.preheats: dict[str, _Preheat] = {}
        self.shard_manifests: dict[str, bytes] = {}  # shard set name -> its manifest, as Manifest.to_json writes it
        self.preheat_dir = None if state_dir is None else state_dir / "preheats"
        self._load_preheats()

    def report(self, body: Mapping[str, Any], client_host: str) -> dict[str, Any]:
        now = self.clock()
        node_id, labels, reports = _parse_report(body)
        port = body.get("bt_port")
        address = (client_host, port) if isinstance(port, int) and 0 < port < 65536 else None
        assigned = self.brain.report(node_id, labels, address, reports, now)
        held = {r.key: r for r in reports}
        pulls: list[str | list[str]] = []
        for key, preheat in self.preheats.items():
            if node_id not in preheat.nodes:
                continue
            mine = [next((held[k] for k in _key_variants(t) if k in held), None) for _, t in preheat.torrents]
            if None in mine:  # a torrent of the release it has not added (yet)
                if now - preheat.sent.get(node_id, -math.inf) >= RESEND_AFTER:
                    preheat.sent[node_id] = now
                    pulls.append(preheat.encoded())
            elif all(r is not None and r.complete for r in mine) and node_id not in preheat.done:
                preheat.done.add(node_id)
                self._save_preheat(key, preheat)
        sizes = {r.key: r.num_pieces for r in reports}
        return {
            "assignments": {key: encode_bitfield(p, sizes[key]) for key, p in assigned.items()},
            "pull": pulls,
            "announce_interval": ANNOUNCE_INTERVAL,
        }

    async def revision(self, repo_type: RepoType, repo_id: str, revision: str) -> tuple[int, dict[str, Any]]:
        """(status, body) of ``GET /cluster/revision``."""
        if self.upstream is None:
            return 404, {"error": "this coordinator has no upstream (coordinator serve --upstream URL)"}
        if self._knowledge is None:
            self._knowledge = Knowledge(Upstream(self.upstream), _NoReleases(), heads=BranchHeads(ttl=self.branch_ttl))
        heads = self._knowledge.heads
        head = await self._knowledge.head(repo_type, repo_id, revision, None)
        if isinstance(head, HubError):  # failing: the upstream failed and no head is known (nodes then go by theirs)
            return head.status, {"error": head.message, "failing": head.status == 429 or head.status >= 500}
        if head.stale is not None:
            return 200, {"commit": head.commit, "age": head.stale, "stale": True}
        last = heads.last((repo_type, repo_id), revision)
        return 200, {"commit": head.commit, "age": 0.0 if last is None else last.age(heads.clock()), "stale": False}

    def hub_requests(self) -> dict[str, dict[str, int]]:
        return self._knowledge.upstream.requests_by_kind() if self._knowledge is not None else {}

    def torrents_of(self, body: Mapping[str, Any]) -> list[tuple[bytes, Torrent]]:
        """The torrents a preheat's body names (as the nodes will get them), parsed, part 0 first; touches no
        state, so it may run off the event loop (a 16 MiB torrent takes a while)."""
        try:
            datas = [base64.b64decode(str(body["torrent"]), validate=True)]
            parts = body.get("parts", [])
            if not isinstance(parts, list):
                raise ValueError("parts is not a list")
            datas += [base64.b64decode(str(d), validate=True) for d in parts]
        except (KeyError, ValueError) as exc:
            raise ClusterError(
                "preheat needs {'torrent': base64 of the .torrent} (and 'parts': [base64, ...] of a release in parts)"
            ) from exc
        if self.ca_pem is not None:
            datas = cluster_variants(datas, self.ca_pem)
        torrents = [parse_torrent(d) for d in datas]
        if torrents[0].repo is None:
            raise ClusterError("not a swarmhub release torrent (no Hub identity in info.hf)")
        try:
            ordered = check_parts(torrents)
        except SwarmhubError as exc:
            raise ClusterError(f"not the torrents of one release: {exc}") from exc
        data_of = {t.key: d for d, t in zip(datas, torrents, strict=True)}
        return [(data_of[t.key], t) for t in ordered]

    def preheat(self, body: Mapping[str, Any], parsed: list[tuple[bytes, Torrent]] | None = None) -> dict[str, Any]:
        """Ask the nodes ``body["nodes"]`` chooses to fetch the release; ``parsed``: ``torrents_of(body)``."""
        torrents = self.torrents_of(body) if parsed is None else parsed
        torrent = torrents[0][1]
        assert torrent.repo is not None
        now = self.clock()
        alive = [n for n in self.brain.nodes(now) if n.alive]
        chosen = select_nodes(alive, body.get("nodes", "all"))
        if not chosen:
            raise ClusterError(f"no live node matches {body.get('nodes', 'all')!r}")
        self.preheats[torrent.key] = preheat = _Preheat(torrents, set(chosen), now)
        self._save_preheat(torrent.key, preheat)
        return {
            "key": torrent.key,
            "keys": [t.key for _, t in torrents],
            "repo_id": torrent.repo.repo_id,
            "commit": torrent.repo.commit,
            "nodes": chosen,
        }

    def _save_preheat(self, key: str, preheat: _Preheat) -> None:
        if self.preheat_dir is None:
            return
        record = {
            "torrent": base64.b64encode(preheat.torrents[0][0]).decode(),
            "parts": [base64.b64encode(d).decode() for d, _ in preheat.torrents[1:]],
            "nodes": sorted(preheat.nodes),
            "done": sorted(preheat.done),
        }
        try:
            atomic_bytes(self.preheat_dir / f"{key}.json", json.dumps(record).encode())
        except OSError as exc:  # the preheat still runs; only a restart would forget it
            log.warning("preheat of %s not kept on disk (%s): a restart forgets it", key[:12], exc.strerror or exc)

    def _load_preheats(self) -> None:
        if self.preheat_dir is None or not self.preheat_dir.is_dir():
            return
        now = self.clock()
        for path in sorted(self.preheat_dir.glob("*.json")):
            try:
                record = json.loads(path.read_bytes())
                datas = [base64.b64decode(d, validate=True) for d in [record["torrent"], *record.get("parts", [])]]
                torrents = [parse_torrent(d) for d in datas]
                check_parts(torrents)
                nodes = {str(n) for n in record["nodes"]}
                done = {str(n) for n in record["done"]} & nodes
            except (OSError, ValueError, KeyError, TypeError, SwarmhubError) as exc:
                log.warning("preheat record %s unreadable (%s): removed", path.name, exc)
                path.unlink(missing_ok=True)
                continue
            self.preheats[torrents[0].key] = _Preheat(list(zip(datas, torrents, strict=True)), nodes, now, done)
        if self.preheats:
            log.info("%d preheat(s) resumed from %s", len(self.preheats), self.preheat_dir)

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
                needs = r.needs
                held[key] = {
                    "pieces": (r.have & needs).bit_count(),
                    "of": needs.bit_count(),
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
        return {"nodes": nodes, "releases": releases, "preheats": preheats, "hub_requests": self.hub_requests()}

    def _admit(self, query: bytes, client_host: str) -> None:
        """With a token, the tracker answers the cluster's nodes only: the announce's ``node`` is alive and
        reported (with the token) from the address the announce comes from."""
        if self.token is None:
            return
        node_id = _node_of(query)
        node = self.brain.node(node_id, self.clock()) if node_id else None
        if node is None or not node.alive or node.address is None or node.address[0] != client_host:
            raise TrackerRequestError(
                "this tracker answers the cluster's nodes only (a node reports to the coordinator, with its token, "
                "from the address it announces from)",
                field="node",
            )

    def _order_peers(self, query: bytes, reply: AnnounceReply) -> AnnounceReply:
        """The asker's rack first, then its zone (nodes announce with ``&node=<id>``)."""
        node = _node_of(query)
        by_address = {(str(p.ip), p.port): p for p in reply.peers}
        ordered = self.brain.order_peers(node, list(by_address))
        return replace(reply, peers=tuple(by_address[a] for a in ordered))


class _NoReleases:
    """The coordinator holds no release: its lookups only remember heads (``node.knowledge.Knowledge``)."""

    async def release(
        self, repo_type: RepoType, repo_id: str, commit: str, *, authorization: str | None = None
    ) -> None:
        return None

    async def knows(self, repo_type: RepoType, repo_id: str) -> bool:
        return True

    async def local_head(self, repo_type: RepoType, repo_id: str, revision: str) -> None:
        return None

    async def record_head(self, repo_type: RepoType, repo_id: str, revision: str, commit: str) -> None:
        return None


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


def _node_of(query: bytes) -> str | None:
    return parse_qs(query.decode("latin-1")).get("node", [None])[0]


def _key_variants(torrent: Torrent) -> set[str]:
    return {k for k in (torrent.info_hash_v2, torrent.info_hash_v1) if k}


def _parse_report(body: Mapping[str, Any]) -> tuple[str, dict[str, str], list[ReleaseReport]]:
    """A report's parts; its sizes are checked before a bitfield is decoded (the brain's rules)."""
    try:
        node_id = str(body["node_id"])
        labels = {str(k): str(v) for k, v in dict(body.get("labels") or {}).items()}
        releases = list(body.get("releases") or [])
        if len(releases) > MAX_RELEASES:
            raise ValueError(f"a report names at most {MAX_RELEASES} releases, not {len(releases)}")
        reports = [_release_report(r) for r in releases]
    except (KeyError, TypeError, ValueError) as exc:
        raise ClusterError(f"bad report: {exc}") from exc
    if not node_id or len(node_id) > 128:
        raise ClusterError("bad report: node_id")
    return node_id, labels, reports


def _release_report(r: Mapping[str, Any]) -> ReleaseReport:
    n = int(r["num_pieces"])
    if not 0 <= n <= MAX_PIECES:
        raise ValueError(f"a release has at most {MAX_PIECES} pieces (libtorrent's limit), not {n}")
    wanted = r.get("wanted")
    return ReleaseReport(
        key=str(r["key"]),
        num_pieces=n,
        have=decode_bitfield(str(r["have"]), n),
        origin_bytes=int(r.get("origin_bytes", 0)),
        peer_bytes=int(r.get("peer_bytes", 0)),
        name=str(r.get("name", "")),
        wanted=decode_bitfield(str(wanted), n) if wanted is not None else None,
        fetching=decode_bitfield(str(r["fetching"]), n) if r.get("fetching") else 0,
    )


def coordinator_app(coordinator: Coordinator, *, hosts: frozenset[str] | None = None) -> ASGIApp:
    """The coordinator's routes behind its ``Guard``; ``hosts``: the ``Host`` names answered (None: any)."""

    def client(request: Request) -> str:
        return request.client.host if request.client else ""

    async def report(request: Request) -> Response:
        body = await _json_body(request, MAX_REPORT_BYTES)
        if isinstance(body, Response):
            return body
        try:
            return JSONResponse(coordinator.report(body, client(request)))
        except (ClusterError, ValueError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)

    async def preheat(request: Request) -> Response:
        body = await _json_body(request, MAX_PREHEAT_BYTES)
        if isinstance(body, Response):
            return body
        try:
            parsed = await asyncio.to_thread(coordinator.torrents_of, body)
            return JSONResponse(coordinator.preheat(body, parsed))
        except (SwarmhubError, ValueError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)

    async def status(request: Request) -> Response:
        return JSONResponse(coordinator.status())

    async def revision(request: Request) -> Response:
        if coordinator.token is not None and not bearer_ok(request.headers.get("authorization"), coordinator.token):
            return JSONResponse({"error": "the cluster token is needed (Authorization: Bearer)"}, 401)
        q = request.query_params
        try:
            repo_id = validate_repo_id(q.get("repo", ""))
        except SwarmhubError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        repo_type = q.get("type", "model")
        rev = q.get("rev", "main")
        if repo_type not in ("model", "dataset") or not rev or len(rev) > 256:
            return JSONResponse({"error": "type must be model or dataset, rev a branch, tag or commit"}, 400)
        status, body = await coordinator.revision(repo_type, repo_id, rev)  # type: ignore[arg-type]
        return JSONResponse(body, status_code=status)

    async def page(request: Request) -> Response:
        return HTMLResponse(status_page(coordinator.status()))

    async def put_manifest(request: Request) -> Response:
        data = await read_capped(request, MAX_MANIFEST_BYTES)
        if data is None:
            return _too_big("a manifest", MAX_MANIFEST_BYTES)
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

    app = Starlette(
        routes=[
            Route("/cluster/report", report, methods=["POST"]),
            Route("/cluster/preheat", preheat, methods=["POST"]),
            Route("/cluster/status", status),
            Route("/cluster/revision", revision),
            Route("/shards/manifests", manifests),
            Route("/shards/manifests/{name}", put_manifest, methods=["PUT"]),
            Route("/shards/manifests/{name}", get_manifest, methods=["GET"]),
            Route("/announce", coordinator.tracker),
            Route("/scrape", coordinator.tracker),
            Route("/", page),
        ]
    )
    rules = GuardRules(hosts=hosts, control=_is_control, token=coordinator.token, service="the coordinator")
    return Guard(app, rules)


def _is_control(path: str) -> bool:
    """The routes whose mutating calls need JSON (and the token): reports, preheats, manifests put."""
    return path.startswith(("/cluster/", "/shards/"))


async def _json_body(request: Request, limit: int) -> dict[str, Any] | Response:
    """The request's JSON object, or the answer refusing it (too big: ``413``; not a JSON object: ``400``)."""
    data = await read_capped(request, limit)
    if data is None:
        return _too_big("a request", limit)
    try:
        body = json.loads(data)
    except ValueError as exc:
        return JSONResponse({"error": f"not JSON: {exc}"}, status_code=400)
    if not isinstance(body, dict):
        return JSONResponse({"error": "the body is not a JSON object"}, status_code=400)
    return body


def _too_big(what: str, limit: int) -> Response:
    return JSONResponse({"error": f"{what} is at most {limit} bytes"}, status_code=413)


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
    """The coordinator served from a background thread. Bound to anything but loopback it needs ``token``
    (``ConfigError`` otherwise); ``allow_hosts``: more ``Host`` names to answer (see ``guard.allowed_hosts``)."""

    name = "swarmhub-coordinator"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        fetchers: int = 3,
        token: str | None = None,
        ca_pem: bytes | None = None,
        allow_hosts: Sequence[str] = (),
        upstream: str | None = None,
        branch_ttl: float = 30.0,
        state_dir: Path | None = None,
    ) -> None:
        if token is None and not is_loopback(host):
            raise ConfigError(
                f"the coordinator would listen on {host} with no cluster token: anyone who reaches it could "
                "make the nodes fetch their bytes",
                hint="set SWARMHUB_CLUSTER_TOKEN (the same for the nodes and preheat), or listen on 127.0.0.1",
            )
        super().__init__(host, [port])
        self.coordinator = Coordinator(
            Brain(fetchers=fetchers),
            token=token,
            ca_pem=ca_pem,
            upstream=upstream,
            branch_ttl=branch_ttl,
            state_dir=state_dir,
        )
        self.hosts = allowed_hosts(host, allow_hosts)

    def _apps(self) -> list[ASGIApp]:
        return [coordinator_app(self.coordinator, hosts=self.hosts)]
