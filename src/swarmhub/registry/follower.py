"""The follower: the registry publishes every new commit of the repos it follows, by itself.

Every ``interval`` seconds each followed branch is resolved on the upstream; a commit the catalog does not
have yet is streamed into its two torrents (nothing stored on disk: the seed project's CI runner could not
get past its 100 GB disk) and published, ``concurrency`` repos at a time. A followed org is listed first
(``/api/models?author=ORG``, every page) and each of its repos is then checked like a followed one. Each
check's outcome (commit or error) is recorded on the follow, or on the org's repo, so `GET /api/follows` and
the operator see what happened; one repo's failure is its own, the others go on.

A listing that gives a repo's commit of ``main`` (the Hub does, asked with ``expand=sha``) saves resolving it
when that commit is published already. A commit the catalog lacks is never taken from the listing: the branch
is resolved, since a listing may lag behind and publishing an older commit after a newer one would make it
the repo's latest release.

The follower's origin client is anonymous (the registry builds it so): only public repos are published, and a
gated or private one is refused (``verify.public_files``) before a byte is streamed. What it publishes is made
from the upstream itself, so it is stored verified; a commit the catalog holds unverified (published while the
upstream was down) is compared with the upstream's tree and marked verified, or published again from the
upstream, which replaces it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from swarmhub.errors import SwarmhubError
from swarmhub.hub.listing import ListedRepo
from swarmhub.hub.repo import RepoFile, RepoRef, RepoType
from swarmhub.origin.client import OriginClient
from swarmhub.registry.catalog import FOLLOWER, Catalog, Follow, PublishRefused, Release, TorrentPair
from swarmhub.registry.publishing import release_torrents
from swarmhub.registry.verify import public_files, verify_release

__all__ = ["Follower"]

log = logging.getLogger(__name__)


@dataclass
class _Target:
    """One branch of one repo to check this round, and the follows that name it (its own, its org's)."""

    repo_type: RepoType
    repo_id: str
    branch: str
    listed_sha: str | None = None  # the commit of main, from an org's listing
    follows: list[Follow] = field(default_factory=list)


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
        """One round over every follow (each org listed first); returns what it published."""
        follows = await asyncio.to_thread(self.catalog.follows)
        targets: dict[tuple[RepoType, str, str], _Target] = {}

        def target(repo_type: RepoType, repo_id: str, branch: str) -> _Target:
            key = (repo_type, repo_id, branch)
            return targets.setdefault(key, _Target(repo_type, repo_id, branch))

        for f in follows:
            if not f.is_org:
                target(f.repo_type, f.repo_id, f.branch).follows.append(f)
        orgs = [f for f in follows if f.is_org]
        for org, listed in zip(orgs, await asyncio.gather(*(self._list(f) for f in orgs)), strict=True):
            for repo in listed:
                t = target(org.repo_type, repo.repo_id, org.branch)
                t.follows.append(org)
                t.listed_sha = t.listed_sha or (repo.sha if org.branch == "main" else None)
        published = await asyncio.gather(*(self._check(t) for t in targets.values()))
        return [r for r in published if r is not None]

    async def _list(self, org: Follow) -> list[ListedRepo]:
        """The org's repos now (recorded as its repos), or none when the listing failed (error recorded)."""
        async with self._slots:
            try:
                listed = await self.origin.list_repos(org.repo_type, org.repo_id)
            except SwarmhubError as exc:
                log.warning("listing the %ss of %s: %s", org.repo_type, org.repo_id, exc)
                await asyncio.to_thread(self.catalog.record_check, org, None, str(exc))
                return []
        await asyncio.to_thread(self.catalog.set_org_repos, org, [r.repo_id for r in listed])
        await asyncio.to_thread(self.catalog.record_check, org, None, None)
        return listed

    async def _check(self, target: _Target) -> Release | None:
        async with self._slots:
            try:
                commit, release = await self._publish_newest(target)
            except Exception as exc:  # one repo's failure, whatever it is, must not stop the round
                if isinstance(exc, SwarmhubError):
                    log.warning("following %s@%s: %s", target.repo_id, target.branch, exc)
                else:
                    log.exception("following %s@%s", target.repo_id, target.branch)
                await self._record(target, None, str(exc) or type(exc).__name__)
                return None
        await self._record(target, commit, None)
        if release is not None:
            log.info("published %s@%s (%s)", target.repo_id, commit[:12], target.branch)
            if self.on_publish is not None:
                self.on_publish(release)
        return release

    async def _publish_newest(self, target: _Target) -> tuple[str, Release | None]:
        """The branch's commit now, and its release if this check published it."""
        kind, repo_id, listed = target.repo_type, target.repo_id, target.listed_sha
        if listed is not None and await self._settled(RepoRef(kind, repo_id, listed)):
            return listed, None
        commit = await self.origin.resolve_revision(kind, repo_id, target.branch)
        ref = RepoRef(kind, repo_id, commit)
        if await self._settled(ref):
            return commit, None
        await public_files(self.origin, ref)
        hybrid, classic = await release_torrents(self.origin, kind, repo_id, commit, public_url=self.public_url)
        pair = await asyncio.to_thread(TorrentPair.parse, hybrid[0], classic[0], hybrid[1:], classic[1:])
        release, new = await asyncio.to_thread(self.catalog.store, pair, FOLLOWER, verified=True)
        return commit, release if new else None

    async def _settled(self, ref: RepoRef) -> bool:
        """Whether the commit needs no publish: the catalog holds it verified (an unverified release is compared
        with the upstream's tree first, and marked verified), or unverified while the upstream still cannot say."""
        release = await asyncio.to_thread(self.catalog.get, ref.repo_type, ref.repo_id, ref.commit)
        if release is None:
            return False
        if not release.verified:
            files = [RepoFile(f.path, f.size, f.etag) for f in release.files]
            try:
                verification = await verify_release(self.origin, ref, files)
            except PublishRefused as exc:  # not the upstream's: published again from the upstream, it is replaced
                log.warning("%s@%s, published unverified, is not the upstream's: %s", ref.repo_id, ref.commit[:12], exc)
                return False
            if not verification.verified:
                return True  # still unverified, nothing better to publish: asked again next round
            await asyncio.to_thread(self.catalog.mark_verified, release)
        return True

    async def _record(self, target: _Target, commit: str | None, error: str | None) -> None:
        for f in target.follows:
            if f.is_org:
                await asyncio.to_thread(self.catalog.record_org_repo, f, target.repo_id, commit, error)
            else:
                await asyncio.to_thread(self.catalog.record_check, f, commit, error)

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
