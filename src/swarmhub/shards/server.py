"""A shard node: ``POST /command`` (the agent's messages over HTTP + JSON) and libtorrent seeding its folder.

``ShardServer.start()`` scans ``shards_dir`` (hashing only files it has not hashed before, see ``store``), seeds
every shard with every piece trusted (no check: the bytes were just hashed, or hashed earlier and unchanged),
announces them to the coordinator's tracker (``{coordinator}/announce``) when there is one and, with the
public profile, on the DHT (the public one, or a private one through ``dht_bootstrap`` nodes), where other
nodes find them by info-hash with no tracker and no peer given; then it serves the control API. A well-formed
command is answered 200 whatever its ``status``; a body that is not a JSON object gets 400 with an error message
of the same shape.
``GET /manifest`` is the shard set as this node knows it (its manifest and its own files), so other nodes can
start with ``--manifest http://NODE/manifest``; ``GET /`` says who the node is and what it serves.

With a coordinator, a node that was given a manifest puts it there at start (``PUT /shards/manifests/NAME``;
a refusal is a warning, the node serves anyway), and a node given none can start from the set's name alone
(``fetch_manifest``).
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self
from urllib.parse import quote

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from swarmhub.engine.session import Engine, Profile
from swarmhub.errors import ShardError
from swarmhub.serving import BackgroundServer
from swarmhub.shards.agent import DEFAULT_LOAD_TIMEOUT, ShardAgent
from swarmhub.shards.manifest import Manifest, shard_set_name
from swarmhub.shards.store import ShardStore

__all__ = ["ShardServer", "fetch_manifest", "publish_manifest", "shards_app"]

log = logging.getLogger(__name__)
# requests to the coordinator go direct (trust_env=False, no proxy), as the nodes' heartbeats do
_COORDINATOR_TIMEOUT = 10.0  # seconds; a node starts without the coordinator rather than hang on it


def _manifest_url(coordinator: str, name: str) -> str:
    return f"{coordinator.rstrip('/')}/shards/manifests/{quote(name, safe='')}"


def _auth(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def publish_manifest(coordinator: str, manifest: Manifest, *, token: str | None = None) -> str:
    """Put ``manifest`` on the coordinator under its set's name (returned); ``ShardError`` if refused."""
    name = shard_set_name(manifest)
    url = _manifest_url(coordinator, name)
    try:
        response = httpx.put(
            url, content=manifest.to_json(), headers=_auth(token), timeout=_COORDINATOR_TIMEOUT, trust_env=False
        )
    except httpx.HTTPError as exc:
        raise ShardError(f"cannot reach the coordinator at {url}: {exc}") from exc
    if response.status_code != 200:
        raise ShardError(f"the coordinator refused the manifest of {name!r}: {_error_of(response)}")
    return name


def fetch_manifest(coordinator: str, name: str, *, token: str | None = None) -> Manifest:
    """The manifest of shard set ``name`` as the coordinator keeps it (``publish_manifest``)."""
    url = _manifest_url(coordinator, name)
    try:
        response = httpx.get(url, headers=_auth(token), timeout=_COORDINATOR_TIMEOUT, trust_env=False)
    except httpx.HTTPError as exc:
        raise ShardError(f"cannot reach the coordinator at {url}: {exc}") from exc
    if response.status_code == 404:
        raise ShardError(
            f"no manifest named {name} on the coordinator: start a node that has it with --coordinator, "
            "or give --manifest"
        )
    if response.status_code != 200:
        raise ShardError(f"the coordinator did not give the manifest of {name!r}: {_error_of(response)}")
    manifest = Manifest.from_json(response.content)
    if shard_set_name(manifest) != name:
        raise ShardError(f"the coordinator gave shard set {shard_set_name(manifest)!r} for {name!r}")
    return manifest


def _error_of(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"])
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code}"


def shards_app(agent: ShardAgent) -> Starlette:
    async def command(request: Request) -> Response:
        try:
            message = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            body = {"command": None, "request_id": None, "status": "error", "error": f"the body is not JSON: {exc}"}
            return JSONResponse(body, status_code=400)
        reply = await agent.handle(message)
        return JSONResponse(reply, status_code=200 if isinstance(message, dict) else 400)

    async def manifest(request: Request) -> Response:
        # what this node knows: its manifest plus its own files, for other nodes' --manifest URL
        known = agent.store.manifest.with_shards(s.entry for s in agent.store.local())
        return Response(known.to_json(), media_type="application/json")

    async def info(request: Request) -> Response:
        return JSONResponse(
            {
                "node_id": agent.node_id,
                "bt_port": agent.engine.listen_port,
                "files": agent.list_files(),
                "loaded": agent.cache.ids(),
            }
        )

    return Starlette(
        routes=[Route("/command", command, methods=["POST"]), Route("/manifest", manifest), Route("/", info)]
    )


class ShardServer(BackgroundServer):
    """A node's shard agent, served on ``host:port`` (0: any free port), with its own libtorrent session."""

    name = "swarmhub-shards"

    def __init__(
        self,
        shards_dir: Path,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        manifest: Manifest | None = None,
        coordinator: str | None = None,
        peers: Sequence[tuple[str, int]] = (),
        profile: Profile = "isolated",
        listen: str | None = None,
        engine_settings: dict[str, Any] | None = None,
        dht_bootstrap: Sequence[tuple[str, int]] | None = None,
        load_timeout: float = DEFAULT_LOAD_TIMEOUT,
        node_id: str | None = None,
        cluster_token: str | None = None,
        publish: bool = True,
    ) -> None:
        super().__init__(host, [port])
        self.shards_dir = shards_dir
        self.manifest = manifest
        self.coordinator = coordinator
        self.trackers = [f"{coordinator.rstrip('/')}/announce"] if coordinator else []
        self.cluster_token = cluster_token
        self.publish = publish  # put the manifest on the coordinator at start (False: it came from there)
        self.peers = tuple(peers)
        self.profile: Profile = profile
        self.listen = listen
        self.engine_settings = engine_settings
        self.dht_bootstrap = None if dht_bootstrap is None else tuple(dht_bootstrap)
        self.load_timeout = load_timeout
        self.node_id = node_id
        self.engine: Engine | None = None
        self._agent: ShardAgent | None = None
        self.store = ShardStore(shards_dir, manifest)

    @property
    def agent(self) -> ShardAgent:
        if self._agent is None:
            raise RuntimeError("ShardServer not started")
        return self._agent

    def start(self) -> Self:
        local = self.store.scan()  # hashing happens here, before anything listens
        for problem in self.store.problems:
            log.warning("%s", problem)
        self.engine = Engine(
            self.profile, listen=self.listen, extra=self.engine_settings, dht_bootstrap=self.dht_bootstrap
        )
        try:
            agent = ShardAgent(
                self.node_id or f"{socket.gethostname()}:{self.engine.listen_port}",
                self.store,
                self.engine,
                trackers=self.trackers,
                peers=self.peers,
                load_timeout=self.load_timeout,
            )
            for shard in local:
                agent.seed(shard)
            self._agent = agent
            super().start()
        except BaseException:
            self.engine.close()
            raise
        if self.publish and self.coordinator and self.manifest is not None:
            try:
                name = publish_manifest(self.coordinator, self.manifest, token=self.cluster_token)
                log.info("shard set %s: manifest put on the coordinator %s", name, self.coordinator)
            except ShardError as exc:  # the node still serves its shards; other nodes need --manifest
                log.warning("%s (other nodes cannot start with --shard-set alone)", exc)
        return self

    def _apps(self) -> list[Starlette]:
        return [shards_app(self.agent)]

    def stop(self) -> None:
        super().stop()
        if self.engine is not None:
            self.engine.close()
