"""What the node's endpoint asks the Hub about the releases it holds — which commit a branch is at, and whether
a credential may read a repo — at most once per TTL, one request at a time per question.

The rules of what is remembered and for how long are ``node.hubstate``'s; this module asks:

- **Branches** (``Knowledge.head``). A fresh head answers with no request. Else one lookup per (repo, branch,
  credential) at a time: a cluster's coordinator first (``HeadSource``: it looks up for the whole cluster),
  then the upstream's ``GET /api/{type}s/{repo}/revision/{rev}?expand=sha`` with the program's credential.
  When the upstream answers 429 or 5xx, times out or cannot be reached, the last head known answers
  (remembered, then the cache's ``refs/`` through ``ReleaseSource.local_head``) with its age: stale-if-error.
  A 4xx other than 429 is the Hub's word (no such repo or revision, no access): passed on, never outlived.
  A failed question is not asked again for the ``Retry-After`` the Hub named (else ``QUIET`` seconds), and with
  a coordinator its answer is taken as it is (fresh, or stale when its own lookup failed): the node asks the
  Hub itself only when the coordinator cannot tell (it is down, or the repo is private).
- **Access** (``Knowledge.access``). A release's confirmation record says when the repo last answered an
  anonymous request (``KnownRelease.public_at``): that is a public decision from the start. Else one ``HEAD`` of
  the file's resolve URL with the program's credential, the Hub's answer remembered (allowed for
  ``allow_ttl``, refused for ``refuse_ttl``); while the Hub cannot be asked, ``AccessCache.when_unreachable``.

Nothing here ever sends a credential anywhere but the upstream, or keeps one: decisions are keyed by its SHA-256.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Protocol, TypeVar, cast
from urllib.parse import quote

import httpx

from swarmhub.hub.answers import ERROR_CODES, ErrorCode, HubError
from swarmhub.hub.repo import RepoType, api_repo_path, is_commit, resolve_path
from swarmhub.node.hubstate import ANONYMOUS, AccessCache, BranchHeads, Decision, RepoKey, credential_key
from swarmhub.node.passthrough import Upstream, UpstreamUnreachable, come_back_after
from swarmhub.node.releases import KnownRelease, ReleaseSource

__all__ = ["Head", "HeadSource", "Knowledge", "SingleFlight", "Told"]

log = logging.getLogger(__name__)

T = TypeVar("T")

QUIET = 10.0  # seconds a failed question is not asked again, when the Hub named no Retry-After (at most the TTL)
MAX_QUIET = 300.0  # the longest Retry-After followed
MAX_QUIET_ENTRIES = 10_000


class SingleFlight:
    """One ``make()`` at a time per key; callers asking meanwhile wait for its result (a waiter that goes away
    does not cancel it)."""

    def __init__(self) -> None:
        self._running: dict[Hashable, asyncio.Future[object]] = {}

    async def run(self, key: Hashable, make: Callable[[], Awaitable[T]]) -> T:
        running = self._running.get(key)
        if running is None:
            task: asyncio.Future[object] = asyncio.ensure_future(make())
            self._running[key] = running = task
            task.add_done_callback(lambda _: self._running.pop(key, None))
        return cast(T, await asyncio.shield(running))


@dataclass(frozen=True)
class Head:
    """Which commit a branch is at; ``stale``: seconds old, when the upstream failed and an old head answered."""

    commit: str
    stale: float | None = None
    why: str = ""  # what the upstream did, when stale


@dataclass(frozen=True)
class Told:
    """A coordinator's answer: the commit (None: its upstream fails and it knows no head), how old, whether its
    own lookup failed and an old head answered."""

    commit: str | None
    age: float = 0.0
    stale: bool = False


class HeadSource(Protocol):
    """Someone who looks branches up for several nodes (a coordinator); None when it cannot tell (it is down, or
    the repo is not one it may see): then the node asks the upstream itself."""

    async def head(self, repo_type: RepoType, repo_id: str, revision: str) -> Told | None: ...


def _hub_error(response: httpx.Response, what: str) -> HubError:
    code = response.headers.get("x-error-code")
    message = response.headers.get("x-error-message") or f"the upstream answered {response.status_code} to {what}"
    return HubError(
        response.status_code,
        message,
        cast(ErrorCode, code) if code in ERROR_CODES else None,
        retry_after=response.headers.get("retry-after"),
    )


class Knowledge:
    def __init__(
        self,
        upstream: Upstream,
        source: ReleaseSource,
        *,
        access: AccessCache | None = None,
        heads: BranchHeads | None = None,
        coordinator: HeadSource | None = None,
        timeout: float = 3.0,
    ) -> None:
        self.upstream = upstream
        self.source = source
        self.access_cache = access or AccessCache()
        self.heads = heads or BranchHeads()
        self.coordinator = coordinator
        self.timeout = timeout
        self._flights = SingleFlight()
        self._seeded: set[RepoKey] = set()
        self._quiet: dict[tuple[str, ...], tuple[float, HubError, str]] = {}  # question -> (until, failure, why)

    # ------------------------------------------------------------------------------------------ branches

    async def head(
        self, repo_type: RepoType, repo_id: str, revision: str, authorization: str | None
    ) -> Head | HubError:
        """The commit ``revision`` is at (a commit is itself), or the Hub's error to pass on."""
        if is_commit(revision):
            return Head(revision)
        fresh = self.heads.fresh((repo_type, repo_id), revision)
        if fresh is not None:
            return Head(fresh)
        key = ("head", repo_type, repo_id, revision, credential_key(authorization))
        return await self._flights.run(key, lambda: self._look_up(repo_type, repo_id, revision, authorization))

    async def _look_up(
        self, repo_type: RepoType, repo_id: str, revision: str, authorization: str | None
    ) -> Head | HubError:
        repo = (repo_type, repo_id)
        if self.coordinator is not None:  # the cluster's one asker: its word, fresh or stale, is the answer
            told = await self.coordinator.head(repo_type, repo_id, revision)
            if told is not None and told.commit is None:  # the Hub fails the coordinator: it would fail us too
                stale = await self._stale(repo_type, repo_id, revision, "could not be asked by the coordinator")
                if stale is not None:
                    return stale
            elif told is not None and told.commit is not None and told.stale:
                self.heads.stats.stale += 1
                return Head(told.commit, told.age, "could not be asked by the coordinator")
            elif told is not None and told.commit is not None:
                self.heads.record(repo, revision, told.commit, age=told.age)
                await self.source.record_head(repo_type, repo_id, revision, told.commit)
                return Head(told.commit)
        quiet = self._quiet.get(("head", *repo, revision))
        if quiet is not None and self.heads.clock() < quiet[0]:  # it failed a moment ago: not asked again yet
            return await self._stale(repo_type, repo_id, revision, quiet[2]) or quiet[1]
        path = f"{api_repo_path(repo_type, repo_id)}/revision/{quote(revision, safe='')}"
        url = self.upstream.url(path, "expand=sha")
        headers = [("authorization", authorization)] if authorization else []
        pause: float | None = None
        try:
            response = await self.upstream.send("GET", url, headers, timeout=self.timeout, kind="revision")
        except UpstreamUnreachable as exc:
            failure: HubError = HubError(504 if exc.timed_out else 502, f"the upstream is unreachable ({exc.message})")
            why = f"is unreachable ({exc.message})"
        else:
            try:
                if response.status_code < 300:
                    try:
                        named = _commit_of(await response.aread())
                        why = "named no commit"
                    except httpx.HTTPError as exc:  # reset or timed out mid-answer
                        named, why = None, f"broke off its answer ({type(exc).__name__})"
                    if named is not None:
                        self._quiet.pop(("head", *repo, revision), None)
                        self.heads.record(repo, revision, named)
                        await self.source.record_head(repo_type, repo_id, revision, named)
                        return Head(named)
                    failure = HubError(502, f"the upstream {why} for {repo_id}@{revision}")
                elif response.status_code == 429 or response.status_code >= 500:
                    failure, why = _hub_error(response, f"{repo_id}@{revision}"), f"answered {response.status_code}"
                    pause = come_back_after(response.headers)
                else:
                    return _hub_error(response, f"{repo_id}@{revision}")  # the Hub's word: no stale answer
            finally:
                await response.aclose()
        self._be_quiet(("head", *repo, revision), pause, failure, why)
        return await self._stale(repo_type, repo_id, revision, why) or failure

    def _be_quiet(self, key: tuple[str, ...], pause: float | None, failure: HubError, why: str) -> None:
        """After a failure, that question is not asked again for the ``Retry-After`` the Hub named (at most
        ``MAX_QUIET``), else ``QUIET`` seconds: a rate-limited Hub gets no more of our requests meanwhile."""
        seconds = min(MAX_QUIET, pause) if pause is not None else min(QUIET, self.heads.ttl)
        self._quiet[key] = (self.heads.clock() + seconds, failure, why)
        while len(self._quiet) > MAX_QUIET_ENTRIES:
            self._quiet.pop(next(iter(self._quiet)))

    async def _stale(self, repo_type: RepoType, repo_id: str, revision: str, why: str) -> Head | None:
        repo = (repo_type, repo_id)
        last = self.heads.last(repo, revision)
        if last is not None:
            self.heads.stats.stale += 1
            return Head(last.commit, last.age(self.heads.clock()), why)
        local = await self.source.local_head(repo_type, repo_id, revision)
        if local is not None:
            self.heads.stats.stale += 1
            return Head(local[0], local[1], why)
        return None

    # ------------------------------------------------------------------------------------------- access

    async def access(self, release: KnownRelease, path: str, authorization: str | None) -> Decision:
        """May ``authorization`` read ``release``'s repo? (``path``: a file of it, what the Hub is asked about.)"""
        ref = release.ref
        repo: RepoKey = (ref.repo_type, ref.repo_id)
        if repo not in self._seeded:
            self._seeded.add(repo)
            public_at = release.public_at
            if public_at is not None:  # however old: while the Hub cannot be asked, once public stays public
                self.access_cache.record(repo, ANONYMOUS, True, age=max(0.0, time.time() - public_at))
        credential = credential_key(authorization)
        decided = self.access_cache.decided(repo, credential)
        if decided is not None:
            return decided
        key = ("access", *repo, credential)
        return await self._flights.run(key, lambda: self._ask_access(release, path, authorization))

    async def _ask_access(self, release: KnownRelease, path: str, authorization: str | None) -> Decision:
        ref = release.ref
        repo: RepoKey = (ref.repo_type, ref.repo_id)
        credential = credential_key(authorization)
        url = self.upstream.url(resolve_path(ref.repo_type, ref.repo_id, ref.commit, path))
        headers = [("accept-encoding", "identity")] + ([("authorization", authorization)] if authorization else [])
        quiet = self._quiet.get(("access", *repo))
        if quiet is not None and self.heads.clock() < quiet[0]:
            return self.access_cache.when_unreachable(repo, credential)
        try:
            response = await self.upstream.send("HEAD", url, headers, timeout=self.timeout, kind="resolve")
        except UpstreamUnreachable as exc:
            self._be_quiet(("access", *repo), None, HubError(502, exc.message), "is unreachable")
            return self.access_cache.when_unreachable(repo, credential)
        await response.aclose()
        status = response.status_code
        if status == 429 or status >= 500:
            self._be_quiet(("access", *repo), come_back_after(response.headers), _hub_error(response, ""), "")
            return self.access_cache.when_unreachable(repo, credential)
        self._quiet.pop(("access", *repo), None)
        problem = _hub_error(response, ref.repo_id)
        if status < 400 or problem.code in ("EntryNotFound", "RevisionNotFound"):  # the repo is readable
            return self.access_cache.record(repo, credential, True)
        return self.access_cache.record(repo, credential, False, status, problem.code, problem.message)


def _commit_of(body: bytes) -> str | None:
    try:
        sha = json.loads(body).get("sha")
    except (ValueError, AttributeError):
        return None
    return sha if isinstance(sha, str) and is_commit(sha) else None
