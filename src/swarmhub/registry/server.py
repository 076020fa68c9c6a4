"""``swarmhub registry serve``: one process, one SQLite file — the JSON API, the website, the tracker and the
web-seed gateway on one port.

The tracker only tracks published info-hashes (the hybrid's v1, its v2 truncated to 20 bytes as BEP 52
trackers see it, and the classic torrent's); its counts feed the website's swarm health. The gateway serves
only files of published releases, fetched from ``upstream``.

The registry asks its upstream anonymously: publishes are verified (``verify``) and the follower streams with
no token, since publishing is redistribution and only public repos are published. The gateway sends a token
only when the operator gave it one for that (``gateway_token``: ``SWARMHUB_GATEWAY_TOKEN``), never the
``HF_TOKEN`` the process happens to have: with it the gateway would hand a gated repo's files, fetched with the
operator's access, to anyone who asks. Bound to loopback, the registry answers only loopback names, its public
URL's and ``allow_hosts`` (``guard``: DNS rebinding).
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path
from typing import Self
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp

from swarmhub.bt.metainfo import Torrent, parse_torrent
from swarmhub.bt.tracker import Swarms
from swarmhub.gateway import Gateway
from swarmhub.guard import Guard, GuardRules, allowed_hosts, is_loopback
from swarmhub.hub.repo import RepoType
from swarmhub.origin.client import OriginClient
from swarmhub.registry import verify
from swarmhub.registry.api import ApiConfig, api_routes
from swarmhub.registry.catalog import Catalog, Release, ReleaseKey, part_tracker_hashes
from swarmhub.registry.web import SwarmHealth, website_routes
from swarmhub.serving import BackgroundServer
from swarmhub.tracker.app import tracker_app

__all__ = ["RegistryServer", "SwarmHealth", "registry_app"]


class _Published:
    """The published info-hashes (20 bytes), kept in memory for the tracker's every announce; a release stored
    again (a verified publish replacing an unverified one) takes its old hashes with it."""

    def __init__(self, catalog: Catalog) -> None:
        self._lock = threading.Lock()
        self._by_release = catalog.info_hashes()
        self._hashes = {h for hashes in self._by_release.values() for h in hashes}

    def add(self, release: Release) -> None:
        key: ReleaseKey = (release.repo_type, release.repo_id, release.commit)
        with self._lock:
            self._hashes.difference_update(self._by_release.get(key, ()))
            self._by_release[key] = _tracker_hashes(release)
            self._hashes.update(self._by_release[key])

    def __call__(self, info_hash: bytes) -> bool:
        return info_hash in self._hashes


def _tracker_hashes(r: Release) -> tuple[bytes, ...]:
    """The hybrid's v1 and v2 (truncated) hashes, the classic's, then every other part's."""
    parts = (h for p in r.other_parts for h in part_tracker_hashes(p.info_hash_v1, p.info_hash_v2))
    return bytes.fromhex(r.info_hash_v1), bytes.fromhex(r.info_hash_v2)[:20], bytes.fromhex(r.classic_info_hash), *parts


class _Torrents:
    """Parsed torrents of published releases for the gateway, the ``keep`` last used (a parsed 100k-file
    torrent holds tens of MB); a release stored again is forgotten (``forget``)."""

    def __init__(self, catalog: Catalog, keep: int = 64) -> None:
        self.catalog = catalog
        self.keep = keep
        self._cache: OrderedDict[ReleaseKey, Torrent] = OrderedDict()

    def __call__(self, repo_type: RepoType, repo_id: str, commit: str) -> Torrent | None:
        key = (repo_type, repo_id, commit)
        torrent = self._cache.get(key)
        if torrent is not None:
            self._cache.move_to_end(key)
            return torrent
        data = self.catalog.torrent(repo_type, repo_id, commit)
        if data is None:
            return None
        torrent = parse_torrent(data)
        if torrent.part is not None:  # a release of several torrents: one name, one piece size, every file
            more = (self.catalog.torrent(repo_type, repo_id, commit, part=i) for i in range(1, torrent.part.count))
            files = [*torrent.files, *(f for d in more if d is not None for f in parse_torrent(d).files)]
            torrent = dataclasses.replace(torrent, files=tuple(files))
        self._cache[key] = torrent
        while len(self._cache) > self.keep:
            self._cache.popitem(last=False)
        return torrent

    def forget(self, release: Release) -> None:
        self._cache.pop((release.repo_type, release.repo_id, release.commit), None)

    def __len__(self) -> int:
        return len(self._cache)


def registry_app(
    catalog: Catalog,
    *,
    public_url: str,
    upstream: str | None = None,
    gateway_token: str | None = None,
    swarms: Swarms | None = None,
) -> Starlette:
    """The registry's routes. With an ``upstream``, publishes are verified against it (anonymously) and the
    gateway serves from it, sending ``gateway_token`` if one is given; ``app.state.origins`` are the clients to
    close on stop, ``app.state.on_publish`` what to call for a release stored outside the API (the follower)."""
    published = _Published(catalog)
    torrents = _Torrents(catalog)
    swarms = swarms if swarms is not None else Swarms(rng=random.Random(), admit=published)
    origins: list[OriginClient] = []
    if upstream is not None:
        origins += [OriginClient(upstream, retries=verify.RETRIES), OriginClient(upstream, gateway_token)]

    def on_publish(release: Release) -> None:
        published.add(release)
        torrents.forget(release)

    config = ApiConfig(public_url, on_publish=on_publish, upstream=origins[0] if origins else None)

    def health(release: Release) -> SwarmHealth:
        """A hybrid's peers announce under its v1 and its v2 hash: count them once (the larger swarm), then add
        the classic torrent's."""
        v1, v2, classic = _tracker_hashes(release)[:3]  # part 0s: who seeds a release seeds its every part
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
    if origins:
        gateway = Gateway(torrents, origins[1])
        routes.append(Mount("/webseed", routes=gateway.routes()))
    routes += website_routes(catalog, health, public_url=config.public_url)
    app = Starlette(routes=routes)
    app.state.published = published
    app.state.torrents = torrents
    app.state.on_publish = on_publish
    app.state.origins = origins
    app.state.swarms = swarms
    app.state.health = health
    return app


def registry_hosts(bind_host: str, public_url: str, extra: Iterable[str] = ()) -> frozenset[str] | None:
    """The Host names the registry answers (None: any). Bound to loopback, its public URL's name too: a reverse
    proxy in front of it passes that name on."""
    names = [*extra]
    public_host = urlsplit(public_url).hostname
    if is_loopback(bind_host) and public_host:
        names.append(public_host)
    return allowed_hosts(bind_host, names)


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
        gateway_token: str | None = None,
        allow_hosts: Iterable[str] = (),
        access_log: bool = False,
        follow_interval: float = 0.0,
        follow_concurrency: int = 2,
    ) -> None:
        super().__init__(host, (port,), access_log=access_log)
        self.db = db
        self.upstream = upstream
        self.allow_hosts = tuple(allow_hosts)
        self.follow_interval = follow_interval
        self.follow_concurrency = follow_concurrency
        self.catalog: Catalog | None = None
        self._public_url = public_url
        self._gateway_token = gateway_token
        self._stop_following = threading.Event()
        self._follower: threading.Thread | None = None
        self._app: Starlette | None = None

    @property
    def public_url(self) -> str:
        return (self._public_url or self.url).rstrip("/")

    @property
    def gateway_token_set(self) -> bool:
        return bool(self._gateway_token)

    def _apps(self) -> list[ASGIApp]:
        self.catalog = Catalog(self.db)
        self._app = registry_app(
            self.catalog, public_url=self.public_url, upstream=self.upstream, gateway_token=self._gateway_token
        )
        rules = GuardRules(hosts=registry_hosts(self.host, self.public_url, self.allow_hosts), service="the registry")
        return [Guard(self._app, rules)]

    def start(self) -> Self:
        super().start()
        if self.follow_interval > 0 and self.upstream is not None:
            from swarmhub.registry.follower import Follower

            assert self.catalog is not None and self._app is not None
            follower = Follower(
                self.catalog,
                OriginClient(self.upstream),  # anonymous: only public repos are published
                self.public_url,
                interval=self.follow_interval,
                concurrency=self.follow_concurrency,
                on_publish=self._app.state.on_publish,
            )
            self._follower = follower.run_in_thread(self._stop_following)
        return self

    def stop(self) -> None:
        self._stop_following.set()
        if self._follower is not None:
            self._follower.join(10)  # a release being streamed stops at its next await
        super().stop()
        if self._app is not None:
            for origin in self._app.state.origins:
                asyncio.run(origin.aclose())
        if self.catalog is not None:
            self.catalog.close()
