"""The node: one process per machine — the libtorrent session, the Hub-compatible endpoint and a control API.

Everything is served on one port on 127.0.0.1: the Hub's paths (``/api/...``, ``/{repo}/resolve/...``) by
``node.endpoint``, and beside them the node's own, which no Hub path can be (one segment):

- ``GET /status``   what the node is, holds and does (JSON; ``swarmhub status`` prints it)
- ``GET /metrics``  Prometheus text: bytes from peers and from the origin, bytes uploaded, releases, peers, errors
- ``POST /pull``    ``{"torrent": base64, "include", "exclude"}``: land those files (``swarmhub pull`` hands its work
                    to the node); JSON lines of progress, then ``{"result": ...}`` or ``{"error", "hint"}``
- ``POST /seed``    seed the store's torrents not seeded yet (``swarmhub seed --torrent`` stored one)

A running node writes ``<state>/node.json`` (its URL, pid and control secret; mode 0600) so the CLI on the same
machine finds it and may drive it (``node.client.NodeClient``). Who may (``guard``): the control routes take
``Authorization: Bearer <secret>`` — the secret is made at every start — and JSON only; any mutating request
with an ``Origin`` (a web page's script) is refused, and so is a ``Host`` that is not this machine's (DNS
rebinding) unless ``allow_hosts`` names it. Bodies are capped (``MAX_PULL_BODY``) and a torrent is parsed off the
event loop, so a hostile one cannot stall the endpoint that programs read from.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import secrets
import socket
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.types import ASGIApp

from swarmhub import __version__
from swarmhub.bt.metainfo import parse_torrent
from swarmhub.cluster.pki import ClusterIdentity
from swarmhub.engine.session import Engine, Profile, TlsIdentity, new_peer_id
from swarmhub.errors import SwarmhubError, TorrentMismatch
from swarmhub.guard import Guard, GuardRules, allowed_hosts, new_secret, write_secret_file
from swarmhub.hub.patterns import path_selected
from swarmhub.node.cluster_client import ClusterClient, CoordinatorHeads
from swarmhub.node.confirmation import Confirmations
from swarmhub.node.endpoint import HubEndpoint, endpoint_app
from swarmhub.node.landing import atomic_text
from swarmhub.node.library import Library, SwarmRelease
from swarmhub.node.pull import PullProgress
from swarmhub.origin.client import OriginClient
from swarmhub.registry.client import RegistryClient
from swarmhub.serving import BackgroundServer, Startable, UvicornThread, read_capped
from swarmhub.settings import Settings

__all__ = ["MAX_PULL_BODY", "Node"]

log = logging.getLogger(__name__)

DEFAULT_PORT = 8480
MAX_PULL_BODY = 44 << 20  # a torrent of 32 MiB (a part create cuts: <= 24 MiB of info) in base64, and the JSON
CONTROL_ROUTES = frozenset({"/pull", "/seed"})
CONFIRM_TIMEOUT = 10.0  # seconds the upstream's tree listing may take when a release is confirmed
JOIN_WAIT = 10.0  # seconds unfinished preheats wait at start for the coordinator to answer a report


class Node(BackgroundServer):
    name = "swarmhub-node"

    def __init__(
        self,
        settings: Settings,
        *,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        upstream: str | None = None,
        registry: str | None = None,
        profile: Profile = "isolated",
        listen: str | None = None,
        engine_settings: dict[str, Any] | None = None,
        peers: Sequence[tuple[str, int]] = (),
        seed_all: bool = True,
        adopt_cache: bool = False,
        peer_grace: float = 3.0,
        coordinator: str | None = None,
        labels: Mapping[str, str] | None = None,
        cluster_token: str | None = None,
        cluster_identity: Path | None = None,
        stall_timeout: float = 60.0,
        allow_hosts: Sequence[str] = (),
    ) -> None:
        super().__init__(host, [port])
        self.allow_hosts = tuple(allow_hosts)
        self.secret = new_secret()  # the control API's credential, made at every start
        self.settings = settings
        self.upstream_url = (upstream or settings.endpoint).rstrip("/")
        self.registry_url = registry
        self._engine_args: dict[str, Any] = {"profile": profile, "listen": listen, "extra": engine_settings}
        self.peers = tuple(peers)
        self.seed_all = seed_all
        self.adopt_cache = adopt_cache
        self.peer_grace = peer_grace
        self.coordinator = coordinator.rstrip("/") if coordinator else None
        self.labels = dict(labels or {})
        self.cluster_token = cluster_token
        self.identity = ClusterIdentity.load(cluster_identity) if cluster_identity is not None else None
        self.cluster: ClusterClient | None = None
        self._uvicorn: UvicornThread | None = None
        self.stall_timeout = stall_timeout
        self.engine: Engine | None = None
        self.library: Library | None = None
        self.endpoint: HubEndpoint | None = None
        self.seeded = 0

    @property
    def state_file(self) -> Path:
        return self.settings.state_dir / "node.json"

    def start(self) -> Node:
        tls = TlsIdentity(self.identity.cert, self.identity.key, self.identity.dh) if self.identity else None
        # a cluster node knows how its peers know it, to split the origin's pieces with them when it has no
        # coordinator to deal them (``cluster.split``)
        peer_id = new_peer_id() if self.coordinator else None
        self.engine = Engine(**self._engine_args, tls=tls, peer_id=peer_id)
        try:
            confirmer = OriginClient(self.upstream_url, self.settings.token, retries=2, timeout=CONFIRM_TIMEOUT)
            self.library = Library(
                self.engine,
                self.settings.hub_cache,
                self.settings.state_dir,
                upstream=OriginClient(self.upstream_url, self.settings.token),
                confirmations=Confirmations(self.settings.state_dir, confirmer),
                registry=RegistryClient(self.registry_url) if self.registry_url else None,
                peers=self.peers,
                trackers=[f"{self.coordinator}/announce?node={self.node_id}"] if self.coordinator else [],
                cluster_ca=self.identity.ca_pem() if self.identity else None,
                peer_grace=self.peer_grace,
                stall_timeout=self.stall_timeout,
            )
            if self.adopt_cache:
                self.library.adopt_cache()
            if self.seed_all:
                self.seeded = self.library.seed_all()
            super().start()
            assert self._uvicorn is not None and self._uvicorn.loop is not None
            if self.coordinator is not None:
                self._join_cluster(self.coordinator)
            asyncio.run_coroutine_threadsafe(self._resume_preheats(), self._uvicorn.loop)
        except BaseException:
            self.stop()
            raise
        info = {"url": self.url, "pid": os.getpid(), "cache_dir": str(self.settings.hub_cache), "secret": self.secret}
        write_secret_file(self.state_file, json.dumps(info))
        return self

    @property
    def node_id(self) -> str:
        """This node's name in a cluster, made once and kept in the state folder."""
        path = self.settings.state_dir / "node-id"
        try:
            return path.read_text().strip()
        except FileNotFoundError:
            atomic_text(path, f"{socket.gethostname()}-{secrets.token_hex(4)}")
            return path.read_text().strip()

    def _join_cluster(self, coordinator: str) -> None:
        assert self.library is not None and self._uvicorn is not None and self._uvicorn.loop is not None
        self.cluster = ClusterClient(
            self.library,
            coordinator,
            self.node_id,
            self.labels,
            self.engine.tls_port or self.bt_port if self.engine else self.bt_port,
            token=self.cluster_token,
        )
        asyncio.run_coroutine_threadsafe(self.cluster.run(), self._uvicorn.loop)

    async def _resume_preheats(self) -> None:
        """The preheats the node had not finished, once the coordinator (if any) has heard from it: its tracker
        answers only nodes that reported, and a refused announce left a restarted node without peers for a
        minute (libtorrent waits before it asks that tracker again)."""
        assert self.library is not None
        if self.cluster is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.cluster.joined.wait(), JOIN_WAIT)
        await self.library.resume_preheats()

    def _server_for(self, sockets: list[socket.socket]) -> Startable:
        server = super()._server_for(sockets)
        assert isinstance(server, UvicornThread)
        self._uvicorn = server
        return server

    def stop(self) -> None:
        loop = self._uvicorn.loop if self._uvicorn is not None else None
        if self.library is not None and loop is not None and self.running and not loop.is_closed():
            # pulls record their verified pieces, then end (on their loop, before it stops)
            done = asyncio.run_coroutine_threadsafe(self.library.close(grace=2.0), loop)
            try:
                done.result(timeout=40)
            except Exception as exc:  # stopping goes on whatever happened
                log.warning("pulls did not end cleanly: %s", exc)
        super().stop()  # the event loop ends: anything still running is cancelled, its readers answered
        if self.engine is not None:
            self.engine.close()
        try:
            if json.loads(self.state_file.read_text()).get("pid") == os.getpid():
                self.state_file.unlink()
        except (OSError, ValueError):
            pass

    @property
    def bt_port(self) -> int:
        assert self.engine is not None
        return self.engine.listen_port

    def _apps(self) -> Sequence[ASGIApp]:
        assert self.library is not None
        heads = CoordinatorHeads(self.coordinator, token=self.cluster_token) if self.coordinator else None
        self.endpoint = endpoint_app(
            self.library,
            self.upstream_url,
            access_ttl=self.settings.access_ttl,
            refusal_ttl=self.settings.refusal_ttl,
            branch_ttl=self.settings.branch_ttl,
            coordinator=heads,
        )
        rules = GuardRules(
            hosts=allowed_hosts(self.host, self.allow_hosts),
            control=CONTROL_ROUTES.__contains__,
            token=self.secret,
            service="the swarmhub node",
        )
        return [Guard(node_app(self, self.endpoint), rules)]

    def counters(self) -> dict[str, int]:
        assert self.library is not None
        out = asdict(self.library.stats())
        if self.endpoint is not None:
            out |= self.endpoint.counters()
        return out

    def hub_requests(self) -> dict[str, dict[str, int]]:
        """Requests the upstream got from the endpoint, by kind and outcome."""
        return self.endpoint.hub_requests() if self.endpoint is not None else {}

    def status(self) -> dict[str, Any]:
        assert self.library is not None
        return {
            "version": __version__,
            "url": self.url,
            "bt_port": self.bt_port,
            "upstream": self.upstream_url,
            "registry": self.registry_url,
            "cache_dir": str(self.settings.hub_cache),
            "stats": self.counters(),
            "hub_requests": self.hub_requests(),
            "releases": self.library.releases(),
        }


def node_app(node: Node, endpoint: ASGIApp) -> Starlette:
    async def status(request: Request) -> Response:
        return JSONResponse(node.status())

    async def metrics(request: Request) -> Response:
        text = prometheus_text(node.counters(), node.hub_requests())
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")

    async def pull(request: Request) -> Response:
        assert node.library is not None
        raw = await read_capped(request, MAX_PULL_BODY)
        if raw is None:
            return _problem(413, f"a pull request is at most {MAX_PULL_BODY >> 20} MiB", "is that a torrent?")
        try:
            body = json.loads(raw)
            data = base64.b64decode(body["torrent"], validate=True)
            include, exclude = _patterns(body.get("include")), _patterns(body.get("exclude"))
        except (ValueError, KeyError, TypeError) as exc:
            return _problem(
                400,
                f"bad request: {exc}",
                'send {"torrent": base64, "include": [...], "exclude": [...]}',
            )
        try:  # parsed off the event loop: programs keep reading from the endpoint meanwhile
            torrent = await asyncio.to_thread(parse_torrent, data)
            release = await node.library.adopt(torrent, data)
        except TorrentMismatch as exc:
            return _problem(409, str(exc), exc.hint)
        except SwarmhubError as exc:
            return _problem(400, str(exc), exc.hint)
        if node.library.busy(release.ref):
            return _problem(429, f"the node pulls {node.library.max_pulls} releases already", "try again later")
        lines = _pull_lines(node.library, release, include, exclude)
        return StreamingResponse(lines, media_type="application/x-ndjson")

    async def rescan(request: Request) -> Response:
        assert node.library is not None
        return JSONResponse({"seeding": node.library.seed_new()})

    return Starlette(
        routes=[
            Route("/status", status),
            Route("/metrics", metrics),
            Route("/pull", pull, methods=["POST"]),
            Route("/seed", rescan, methods=["POST"]),
            Mount("/", endpoint),
        ]
    )


def _problem(status: int, message: str, hint: str | None) -> JSONResponse:
    return JSONResponse({"error": message, "hint": hint}, status_code=status)


def _patterns(value: object) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TypeError("include/exclude must be lists of strings")
    return value


async def _pull_lines(
    library: Library, release: SwarmRelease, include: list[str] | None, exclude: list[str] | None
) -> AsyncIterator[bytes]:
    """``POST /pull``: one JSON line per half second of progress, then ``{"result": ...}`` or ``{"error": ...}``."""
    updates: asyncio.Queue[PullProgress] = asyncio.Queue()
    try:
        paths = [f.path for f in release.files if path_selected(f.path, include, exclude)]
        task = asyncio.create_task(library.pull_release(release, paths, updates.put_nowait))
        while not task.done():
            with contextlib.suppress(TimeoutError):
                yield _line({"progress": asdict(await asyncio.wait_for(updates.get(), 1.0))})
        done = task.result()
        yield _line({"result": {**asdict(done), "snapshot_path": str(release.dest.snapshot), "files": len(paths)}})
    except SwarmhubError as exc:
        yield _line({"error": str(exc), "hint": exc.hint})


def _line(value: object) -> bytes:
    return json.dumps(value).encode() + b"\n"


_METRICS = {  # stat -> (metric, type, help)
    "peer_bytes": ("swarmhub_peer_bytes_total", "counter", "payload bytes received from peers"),
    "origin_bytes": ("swarmhub_origin_bytes_total", "counter", "bytes fetched from the origin"),
    "uploaded_bytes": ("swarmhub_uploaded_bytes_total", "counter", "payload bytes sent to peers"),
    "releases": ("swarmhub_releases", "gauge", "releases the node seeds or pulls"),
    "pulling": ("swarmhub_pulls", "gauge", "releases being pulled"),
    "peers": ("swarmhub_peers", "gauge", "connected peers"),
    "errors": ("swarmhub_errors_total", "counter", "pulls that ended with an error"),
    "endpoint_swarm_answers": (
        "swarmhub_endpoint_swarm_answers_total",
        "counter",
        "Hub requests answered by the swarm",
    ),
    "endpoint_swarm_bytes": ("swarmhub_endpoint_swarm_bytes_total", "counter", "file bytes served from the swarm"),
    "endpoint_offline_answers": (
        "swarmhub_endpoint_offline_answers_total",
        "counter",
        "Hub requests answered by the swarm while the upstream was unreachable",
    ),
    "endpoint_relayed": ("swarmhub_endpoint_relayed_total", "counter", "Hub requests passed to the upstream"),
    "endpoint_metadata_answers": (
        "swarmhub_endpoint_metadata_answers_total",
        "counter",
        "repo info, tree and paths-info answers made from a confirmed release, with no upstream request",
    ),
    "endpoint_missing_answers": (
        "swarmhub_endpoint_missing_answers_total",
        "counter",
        "EntryNotFound answers for paths a whole release does not have, with no upstream request",
    ),
    "endpoint_stale_answers": (
        "swarmhub_endpoint_stale_answers_total",
        "counter",
        "answers made from a branch head the upstream could not refresh (X-Swarmhub-Stale)",
    ),
    "endpoint_refused": (
        "swarmhub_endpoint_refused_total",
        "counter",
        "requests refused: the Hub did not allow the credential, or could not be asked",
    ),
    "access_hits": ("swarmhub_access_cached_hits_total", "counter", "access decisions answered from the cache"),
    "access_recorded": ("swarmhub_access_decisions_total", "counter", "access decisions the Hub made"),
    "access_refused": ("swarmhub_access_refused_total", "counter", "requests the access rules refused"),
    "branch_hits": ("swarmhub_branch_cached_hits_total", "counter", "branches resolved with no lookup"),
    "branch_lookups": ("swarmhub_branch_lookups_total", "counter", "branch heads the Hub or coordinator gave"),
    "branch_stale": ("swarmhub_branch_stale_total", "counter", "branches answered by an old head (stale-if-error)"),
}


def prometheus_text(stats: dict[str, int], hub_requests: Mapping[str, Mapping[str, int]] | None = None) -> str:
    lines = []
    for stat, (metric, kind, text) in _METRICS.items():
        if stat not in stats:
            continue
        lines += [f"# HELP {metric} {text}", f"# TYPE {metric} {kind}", f"{metric} {stats[stat]}"]
    if hub_requests is not None:
        metric = "swarmhub_hub_requests_total"
        lines += [f"# HELP {metric} requests sent to the upstream, by kind and outcome", f"# TYPE {metric} counter"]
        for kind, outcomes in sorted(hub_requests.items()):
            for outcome, n in sorted(outcomes.items()):
                lines.append(f'{metric}{{kind="{kind}",outcome="{outcome}"}} {n}')
    return "\n".join(lines) + "\n"
