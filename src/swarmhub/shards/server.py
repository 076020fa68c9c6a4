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

Who may command it (``swarmhub.guard`` checks every request before a handler runs):

- ``POST /command`` needs ``Authorization: Bearer <token>``. The token is the one the node was given
  (``shards serve``: ``SWARMHUB_SHARDS_TOKEN``, else, in a cluster — a coordinator and ``SWARMHUB_CLUSTER_TOKEN``
  — the cluster token, which the orchestrator that drives every node holds), or else one made at start (256
  random bits) that only programs of the same user on this machine read, from the node's record
  (``shards.client``). No credential is ``401``.
- Its body is JSON (``Content-Type: application/json``, else ``415``: a web page cannot send that without a
  preflight), at most ``MAX_COMMAND_BYTES`` (else ``413``, answered in the command error shape); a request with
  an ``Origin`` (a page's script) is ``403``; bound to loopback, the node answers only loopback Host names and
  ``allow_hosts`` (DNS rebinding).
- ``LOAD_SHARD``'s ``peers`` must be addresses the node trusts (``shards.trust``): loopback, the coordinator's
  addresses, ``trust_peers``.

Nodes send each other no commands: they exchange shards by BitTorrent, and manifests by ``GET /manifest``.

With a coordinator, a node that was given a manifest puts it there at start (``PUT /shards/manifests/NAME``;
a refusal is a warning, the node serves anyway), and a node given none can start from the set's name alone
(``fetch_manifest``).
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Awaitable, Sequence
from pathlib import Path
from typing import Any, Self
from urllib.parse import urlsplit

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from swarmhub.cluster.client import CoordinatorClient, blocking
from swarmhub.engine.session import Engine, Profile
from swarmhub.errors import ShardError
from swarmhub.guard import Guard, GuardRules, allowed_hosts, new_secret
from swarmhub.serving import BackgroundServer, read_capped
from swarmhub.shards.agent import DEFAULT_LOAD_TIMEOUT, ShardAgent
from swarmhub.shards.client import node_record, write_node_record
from swarmhub.shards.manifest import Manifest, shard_set_name
from swarmhub.shards.store import ShardStore
from swarmhub.shards.trust import PeerTrust, parse_networks

__all__ = ["MAX_COMMAND_BYTES", "ShardServer", "fetch_manifest", "publish_manifest", "shards_app"]

log = logging.getLogger(__name__)
MAX_COMMAND_BYTES = 1 << 20  # the largest command (a matvec's vector of 100k numbers) is a few hundred KB
# requests to the coordinator go direct (trust_env=False, no proxy), as the nodes' heartbeats do
_COORDINATOR_TIMEOUT = 10.0  # seconds; a node starts without the coordinator rather than hang on it


def publish_manifest(coordinator: str, manifest: Manifest, *, token: str | None = None) -> str:
    """Put ``manifest`` on the coordinator under its set's name (returned); ``ShardError`` if refused."""
    name = shard_set_name(manifest)
    client = CoordinatorClient(coordinator, token=token, timeout=_COORDINATOR_TIMEOUT)
    url = client.manifest_url(name)
    try:
        response = blocking(_closing(client, client.put_manifest(name, manifest.to_json())))
    except httpx.HTTPError as exc:
        raise ShardError(f"cannot reach the coordinator at {url}: {exc}") from exc
    if response.status_code != 200:
        raise ShardError(f"the coordinator refused the manifest of {name!r}: {_error_of(response)}")
    return name


def fetch_manifest(coordinator: str, name: str, *, token: str | None = None) -> Manifest:
    """The manifest of shard set ``name`` as the coordinator keeps it (``publish_manifest``)."""
    client = CoordinatorClient(coordinator, token=token, timeout=_COORDINATOR_TIMEOUT)
    url = client.manifest_url(name)
    try:
        response = blocking(_closing(client, client.get_manifest(name)))
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


async def _closing(client: CoordinatorClient, call: Awaitable[httpx.Response]) -> httpx.Response:
    try:
        return await call
    finally:
        await client.aclose()


def _error_of(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"])
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code}"


def _refused(status: int, error: str) -> Response:
    """A request no command read: the command error shape, with no command."""
    return JSONResponse({"command": None, "request_id": None, "status": "error", "error": error}, status_code=status)


def shards_app(agent: ShardAgent) -> Starlette:
    """The node's routes, unguarded (``ShardServer`` puts ``Guard`` in front)."""

    async def command(request: Request) -> Response:
        body = await read_capped(request, MAX_COMMAND_BYTES)
        if body is None:
            return _refused(413, f"a command is at most {MAX_COMMAND_BYTES} bytes")
        try:
            message = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            return _refused(400, f"the body is not JSON: {exc}")
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


def _addresses_of(url: str) -> frozenset[str]:
    """The IP addresses of ``url``'s host, resolved once (none when it does not resolve)."""
    host = urlsplit(url).hostname or ""
    try:
        return frozenset(str(info[4][0]) for info in socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP))
    except (OSError, UnicodeError):
        log.warning("cannot resolve the coordinator's host %r: its address is not trusted as a peer", host)
        return frozenset()


class ShardServer(BackgroundServer):
    """A node's shard agent, served on ``host:port`` (0: any free port), with its own libtorrent session.

    ``token``: the credential of ``POST /command`` (None: a fresh one for this run, ``self.token``). ``state_dir``:
    where the node's record goes while it runs (``shards.client``; None: no record). ``trust_peers``: CIDRs or
    addresses a command may name as peers, besides loopback and the coordinator. ``allow_hosts``: Host names
    answered besides the loopback ones (``guard.allowed_hosts``).
    """

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
        token: str | None = None,
        state_dir: Path | None = None,
        trust_peers: Sequence[str] = (),
        allow_hosts: Sequence[str] = (),
    ) -> None:
        super().__init__(host, [port])
        self.token = token or new_secret()
        self.token_made = not token  # then recorded, for the CLI on this machine
        self.state_dir = state_dir
        self.trust_networks = parse_networks(trust_peers)
        self.allow_hosts = tuple(allow_hosts)
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
            coordinator = _addresses_of(self.coordinator) if self.coordinator else frozenset()
            agent = ShardAgent(
                self.node_id or f"{socket.gethostname()}:{self.engine.listen_port}",
                self.store,
                self.engine,
                trackers=self.trackers,
                peers=self.peers,
                load_timeout=self.load_timeout,
                trust=PeerTrust(self.trust_networks, coordinator),
            )
            for shard in local:
                agent.seed(shard)
            self._agent = agent
            super().start()
            if self.record is not None:
                write_node_record(self.record, self.url, self.token if self.token_made else None)
        except BaseException:
            super().stop()
            self.engine.close()
            raise
        if self.publish and self.coordinator and self.manifest is not None:
            try:
                name = publish_manifest(self.coordinator, self.manifest, token=self.cluster_token)
                log.info("shard set %s: manifest put on the coordinator %s", name, self.coordinator)
            except ShardError as exc:  # the node still serves its shards; other nodes need --manifest
                log.warning("%s (other nodes cannot start with --shard-set alone)", exc)
        return self

    @property
    def record(self) -> Path | None:
        """The node's record while it runs (``shards.client``), or None without a state folder."""
        return None if self.state_dir is None else node_record(self.state_dir, self.port)

    def _apps(self) -> list[ASGIApp]:
        rules = GuardRules(
            hosts=allowed_hosts(self.host, self.allow_hosts),
            control=lambda path: path == "/command",
            token=self.token,
            service="the shard node",
        )
        return [Guard(shards_app(self.agent), rules)]

    def stop(self) -> None:
        if self._bound and self.record is not None:
            self.record.unlink(missing_ok=True)
        super().stop()
        if self.engine is not None:
            self.engine.close()
