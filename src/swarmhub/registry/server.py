"""``swarmhub registry serve``: one process, one SQLite file — the JSON API, the website, the tracker and the
web-seed gateway on one port.

The tracker only tracks published info-hashes (the hybrid's v1, its v2 truncated to 20 bytes as BEP 52
trackers see it, and the classic torrent's); its counts feed the website's swarm health. The gateway serves
only files of published releases, fetched from ``upstream`` with the registry's own token (if any).
"""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path
from typing import Self

from starlette.applications import Starlette
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp

from swarmhub.bt.metainfo import Torrent, parse_torrent
from swarmhub.bt.tracker import Swarms
from swarmhub.hub.repo import RepoType
from swarmhub.registry.api import ApiConfig, api_routes
from swarmhub.registry.catalog import Catalog, Release
from swarmhub.registry.web import SwarmHealth, website_routes
from swarmhub.serving import BackgroundServer
from swarmhub.tracker.app import tracker_app

__all__ = ["RegistryServer", "SwarmHealth", "registry_app"]


class _Published:
    """The published info-hashes (20 bytes), kept in memory for the tracker's every announce."""

    def __init__(self, catalog: Catalog) -> None:
        self._lock = threading.Lock()
        self._hashes = catalog.info_hashes()

    def add(self, release: Release) -> None:
        with self._lock:
            self._hashes.update(_tracker_hashes(release))

    def __call__(self, info_hash: bytes) -> bool:
        return info_hash in self._hashes


def _tracker_hashes(r: Release) -> tuple[bytes, bytes, bytes]:
    return bytes.fromhex(r.info_hash_v1), bytes.fromhex(r.info_hash_v2)[:20], bytes.fromhex(r.classic_info_hash)


class _Torrents:
    """Parsed torrents of published releases for the gateway (a release never changes: cache forever)."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self._cache: dict[tuple[str, str, str], Torrent] = {}

    def __call__(self, repo_type: RepoType, repo_id: str, commit: str) -> Torrent | None:
        key = (repo_type, repo_id, commit)
        if key not in self._cache:
            data = self.catalog.torrent(repo_type, repo_id, commit)
            if data is None:
                return None
            self._cache[key] = parse_torrent(data)
        return self._cache[key]


def registry_app(
    catalog: Catalog,
    *,
    public_url: str,
    upstream: str | None = None,
    token: str | None = None,
    swarms: Swarms | None = None,
) -> Starlette:
    published = _Published(catalog)
    swarms = swarms if swarms is not None else Swarms(rng=random.Random(), admit=published)
    config = ApiConfig(public_url, on_publish=published.add)

    def health(release: Release) -> SwarmHealth:
        """A hybrid's peers announce under its v1 and its v2 hash: count them once (the larger swarm), then add
        the classic torrent's."""
        v1, v2, classic = _tracker_hashes(release)
        counts = swarms.scrape((v1, v2, classic), time.monotonic())
        zero = SwarmHealth(0, 0, 0)
        hybrid = [counts.get(h) for h in (v1, v2)]
        seen = [SwarmHealth(c.complete, c.incomplete, c.downloaded) if c else zero for c in hybrid]
        other = counts.get(classic)
        return SwarmHealth(
            seeders=max(s.seeders for s in seen) + (other.complete if other else 0),
            leechers=max(s.leechers for s in seen) + (other.incomplete if other else 0),
            completed=max(s.completed for s in seen) + (other.downloaded if other else 0),
        )

    routes: list[BaseRoute] = [*api_routes(catalog, config)]
    tracker = tracker_app(swarms)
    routes += [Route("/announce", tracker), Route("/scrape", tracker)]
    if upstream is not None:
        try:
            from swarmhub.gateway import Gateway
            from swarmhub.origin.client import OriginClient
        except ImportError:  # pragma: no cover - the gateway ships with the package
            pass
        else:
            gateway = Gateway(_Torrents(catalog), OriginClient(upstream, token))
            routes.append(Mount("/webseed", routes=gateway.routes()))
    routes += website_routes(catalog, health, public_url=config.public_url)
    app = Starlette(routes=routes)
    app.state.published = published
    app.state.swarms = swarms
    app.state.health = health
    return app


class RegistryServer(BackgroundServer):
    """The registry from a background thread (tests, the demo); ``serve`` in the CLI runs it in front."""

    name = "registry"

    def __init__(
        self,
        db: Path,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        public_url: str | None = None,
        upstream: str | None = None,
        token: str | None = None,
        access_log: bool = False,
        follow_interval: float = 0.0,
        follow_concurrency: int = 2,
    ) -> None:
        super().__init__(host, (port,), access_log=access_log)
        self.db = db
        self.upstream = upstream
        self.follow_interval = follow_interval
        self.follow_concurrency = follow_concurrency
        self.catalog: Catalog | None = None
        self._public_url = public_url
        self._token = token
        self._stop_following = threading.Event()
        self._follower: threading.Thread | None = None
        self._published: _Published | None = None

    @property
    def public_url(self) -> str:
        return (self._public_url or self.url).rstrip("/")

    def _apps(self) -> list[ASGIApp]:
        self.catalog = Catalog(self.db)
        app = registry_app(self.catalog, public_url=self.public_url, upstream=self.upstream, token=self._token)
        self._published = app.state.published
        return [app]

    def start(self) -> Self:
        super().start()
        if self.follow_interval > 0 and self.upstream is not None:
            from swarmhub.origin.client import OriginClient
            from swarmhub.registry.follower import Follower

            assert self.catalog is not None and self._published is not None
            follower = Follower(
                self.catalog,
                OriginClient(self.upstream, self._token),
                self.public_url,
                interval=self.follow_interval,
                concurrency=self.follow_concurrency,
                on_publish=self._published.add,
            )
            self._follower = follower.run_in_thread(self._stop_following)
        return self

    def stop(self) -> None:
        self._stop_following.set()
        if self._follower is not None:
            self._follower.join(10)  # a release being streamed stops at its next await
        super().stop()
        if self.catalog is not None:
            self.catalog.close()
