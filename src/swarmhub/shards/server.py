"""A shard node: ``POST /command`` (the agent's messages over HTTP + JSON) and libtorrent seeding its folder.

``ShardServer.start()`` scans ``shards_dir`` (hashing only files it has not hashed before, see ``store``), seeds
every shard with every piece trusted (no check: the bytes were just hashed, or hashed earlier and unchanged),
announces them to the coordinator's tracker (``{coordinator}/announce``) when there is one and, with the
public profile, on the DHT; then it serves the control API. A well-formed command is answered 200 whatever
its ``status``; a body that is not a JSON object gets 400 with an error message of the same shape.
``GET /manifest`` is the shard set as this node knows it (its manifest and its own files), so other nodes can
start with ``--manifest http://NODE/manifest``; ``GET /`` says who the node is and what it serves.
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from swarmhub.engine.session import Engine, Profile
from swarmhub.serving import BackgroundServer
from swarmhub.shards.agent import DEFAULT_LOAD_TIMEOUT, ShardAgent
from swarmhub.shards.manifest import Manifest
from swarmhub.shards.store import ShardStore

__all__ = ["ShardServer", "shards_app"]

log = logging.getLogger(__name__)


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
        load_timeout: float = DEFAULT_LOAD_TIMEOUT,
        node_id: str | None = None,
    ) -> None:
        super().__init__(host, [port])
        self.shards_dir = shards_dir
        self.manifest = manifest
        self.trackers = [f"{coordinator.rstrip('/')}/announce"] if coordinator else []
        self.peers = tuple(peers)
        self.profile: Profile = profile
        self.listen = listen
        self.engine_settings = engine_settings
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
        self.engine = Engine(self.profile, listen=self.listen, extra=self.engine_settings)
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
        return self

    def _apps(self) -> list[Starlette]:
        return [shards_app(self.agent)]

    def stop(self) -> None:
        super().stop()
        if self.engine is not None:
            self.engine.close()
