"""A node's side of a cluster: report to the coordinator every second, do what it answers.

Each report carries the node's labels, its BitTorrent port and, per torrent, the pieces it has. The answer
says which pieces this node alone fetches from the origin (every other missing piece comes from peers) and
which releases to fetch now (``preheat``). When the coordinator cannot be reached for ``fallback_after``
seconds, the node goes on with the peers it knows and decides alone again: after a grace, its rendezvous share
of the pieces no peer has (``cluster.split``); assignments come back with the coordinator.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import Mapping

import httpx

from swarmhub.cluster.brain import decode_pieces
from swarmhub.cluster.client import CoordinatorClient
from swarmhub.errors import ClusterError, SwarmhubError
from swarmhub.hub.repo import RepoType, is_commit
from swarmhub.node.knowledge import Told
from swarmhub.node.library import Library

__all__ = ["ClusterClient", "CoordinatorHeads"]

log = logging.getLogger(__name__)

REPORT_EVERY = 1.0  # seconds
# Without a coordinator, nodes split the origin's pieces by rendezvous over the peers they see (cluster.split):
# about once, so waiting long costs more than it saves. 30 s left a cluster whose coordinator died before it
# dealt a share idle for 30 s (T/T_min 3.6 in bench/chaos.py); 10 s rides out a coordinator's restart.
FALLBACK_AFTER = 10.0


class ClusterClient:
    def __init__(
        self,
        library: Library,
        coordinator: str,
        node_id: str,
        labels: Mapping[str, str],
        bt_port: int,
        *,
        token: str | None = None,
        fallback_after: float = FALLBACK_AFTER,
    ) -> None:
        self.library = library
        self.url = coordinator.rstrip("/")
        self.node_id = node_id
        self.labels = dict(labels)
        self.bt_port = bt_port
        self.token = token
        self.fallback_after = fallback_after
        self.last_answer = time.monotonic()
        self.reports = 0
        self.joined = asyncio.Event()  # set by the first report answered: the coordinator's tracker admits us

    async def run(self) -> None:
        async with CoordinatorClient(self.url, token=self.token, timeout=5.0) as client:
            while True:
                try:
                    await self.report_once(client)
                except (httpx.HTTPError, ClusterError, ValueError) as exc:
                    if (
                        time.monotonic() - self.last_answer > self.fallback_after
                        and self.library.assignments is not None
                    ):
                        log.warning("coordinator %s unreachable (%s): fetching from the origin alone", self.url, exc)
                        self.library.assign(None)
                await asyncio.sleep(REPORT_EVERY)

    async def report_once(self, client: CoordinatorClient) -> None:
        releases = self.library.reports()
        body = {"node_id": self.node_id, "labels": self.labels, "bt_port": self.bt_port, "releases": releases}
        answer = await client.report(body)
        sizes = {str(r["key"]): int(r["num_pieces"]) for r in releases}
        assignments = {
            key: decode_pieces(bits, sizes[key]) for key, bits in answer.get("assignments", {}).items() if key in sizes
        }
        self.library.assign(assignments)
        for encoded in answer.get("pull", []):  # a torrent, or a release's torrents (part 0 first)
            try:
                first, *parts = [base64.b64decode(e, validate=True) for e in _strings(encoded)]
                await self.library.preheat(first, parts)
            except (SwarmhubError, ValueError) as exc:
                log.warning("coordinator asked for a release this node cannot fetch: %s", exc)
        self.last_answer = time.monotonic()
        self.reports += 1
        self.joined.set()


def _strings(value: object) -> list[str]:
    """A pull entry's torrents: one base64 string, or a non-empty list of them (a release in parts)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return value
    raise ValueError(f"a pull entry that is not base64 torrents: {str(value)[:80]!r}")


class CoordinatorHeads:
    """Branch heads from the cluster's coordinator (``GET /cluster/revision``), which looks each up once per TTL
    for every node (``node.knowledge.HeadSource``). None when it cannot tell: the node asks the Hub itself."""

    def __init__(self, coordinator: str, *, token: str | None = None, timeout: float = 3.0) -> None:
        self.url = coordinator.rstrip("/")
        self.token = token
        self.timeout = timeout

    async def head(self, repo_type: RepoType, repo_id: str, revision: str) -> Told | None:
        try:
            async with CoordinatorClient(self.url, token=self.token, timeout=self.timeout) as client:
                status, body = await client.revision(repo_type, repo_id, revision)
            if status != 200:
                return Told(None) if body.get("failing") is True else None
            commit, age, stale = body["commit"], float(body["age"]), bool(body.get("stale"))
        except (httpx.HTTPError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.debug("coordinator %s could not say where %s@%s is: %s", self.url, repo_id, revision, exc)
            return None
        return Told(commit, max(0.0, age), stale) if isinstance(commit, str) and is_commit(commit) else None
