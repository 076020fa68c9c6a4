"""The follower: the registry publishes every new commit of the repos it follows, by itself.

Every ``interval`` seconds each followed branch is resolved on the upstream; a commit the catalog does not
have yet is streamed into its two torrents (nothing stored on disk: the seed project's CI runner could not
get past its 100 GB disk) and published, ``concurrency`` releases at a time. Each check's outcome (commit or
error) is recorded on the follow, so `GET /api/follows` and the operator see what happened.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable

from swarmhub.errors import SwarmhubError
from swarmhub.origin.client import OriginClient
from swarmhub.registry.catalog import Catalog, Follow, Release
from swarmhub.registry.publishing import release_torrents

__all__ = ["Follower"]

log = logging.getLogger(__name__)


class Follower:
    def __init__(
        self,
        catalog: Catalog,
        origin: OriginClient,
        public_url: str,
        *,
        interval: float,
        concurrency: int = 2,
        on_publish: Callable[[Release], None] | None = None,
    ) -> None:
        self.catalog = catalog
        self.origin = origin
        self.public_url = public_url
        self.interval = interval
        self.on_publish = on_publish
        self._slots = asyncio.Semaphore(max(1, concurrency))

    async def check_all(self) -> list[Release]:
        """One round over every follow; returns what it published."""
        follows = await asyncio.to_thread(self.catalog.follows)
        published = await asyncio.gather(*(self._check(f) for f in follows))
        return [r for r in published if r is not None]

    async def _check(self, follow: Follow) -> Release | None:
        async with self._slots:
            try:
                commit = await self.origin.resolve_revision(follow.repo_type, follow.repo_id, follow.branch)
                if await asyncio.to_thread(self.catalog.get, follow.repo_type, follow.repo_id, commit):
                    await asyncio.to_thread(self.catalog.record_check, follow, commit, None)
                    return None
                hybrid, classic = await release_torrents(
                    self.origin, follow.repo_type, follow.repo_id, commit, public_url=self.public_url
                )
                release, new = await asyncio.to_thread(self.catalog.publish, hybrid, classic, "follower")
            except SwarmhubError as exc:
                log.warning("following %s@%s: %s", follow.repo_id, follow.branch, exc)
                await asyncio.to_thread(self.catalog.record_check, follow, None, str(exc))
                return None
            await asyncio.to_thread(self.catalog.record_check, follow, commit, None)
            if new:
                log.info("published %s@%s (%s)", follow.repo_id, commit[:12], follow.branch)
                if self.on_publish is not None:
                    self.on_publish(release)
            return release if new else None

    def run_in_thread(self, stop: threading.Event) -> threading.Thread:
        """Check every ``interval`` seconds in a daemon thread of its own, until ``stop`` is set."""

        async def loop() -> None:
            while not stop.is_set():
                await self.check_all()
                await asyncio.to_thread(stop.wait, self.interval)
            await self.origin.aclose()

        thread = threading.Thread(target=lambda: asyncio.run(loop()), name="swarmhub-follower", daemon=True)
        thread.start()
        return thread
