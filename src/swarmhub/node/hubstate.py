"""What the node remembers of the Hub's answers: who may read a repo, and which commit a branch is at.

Sans-I/O: every method takes its time from ``clock`` (tests pass a fake one); the endpoint asks the Hub and
records what it said. The rules, all here:

**Access** (``AccessCache``). The Hub decides whether a credential may read a repo; the node remembers each
decision per (repo type, repo, credential), the credential being the SHA-256 of the request's whole
``Authorization`` value (``credential_key``) — the token itself is never kept. An allowed decision holds for
``allow_ttl`` (default 10 min), a refusal (401/403/404) for ``refuse_ttl`` (default 30 s). An anonymous request
the Hub answered makes the repo **public**: every credential is allowed until that decision's TTL ends. When
the Hub cannot be asked (unreachable, 429, 5xx) and no decision is fresh, a repo once public stays public (it
was readable by anyone; the bytes are the swarm's) while a gated or private one is refused with "access cannot
be confirmed right now" — never the bytes on an expired credential.

**Branches** (``BranchHeads``). A branch or tag resolves through at most one upstream lookup per ``ttl``
(default 30 s) per key; a fresh head answers with no request. When the lookup fails (429, 5xx, timeout,
unreachable) the last head known answers, with its age (stale-if-error, RFC 5861's idea); the endpoint also
falls back to the cache's ``refs/``. Once the Hub answers again, a new commit reaches programs within ``ttl``.

Both tables are bounded (``max_entries``, least recently used dropped first).
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = [
    "ANONYMOUS",
    "AccessCache",
    "BranchHead",
    "BranchHeads",
    "Decision",
    "RepoKey",
    "credential_key",
]

RepoKey = tuple[str, str]  # (repo type, repo id)
ANONYMOUS = ""  # the credential key of a request without Authorization

K = TypeVar("K")
V = TypeVar("V")


def credential_key(authorization: str | None) -> str:
    """The key a credential is remembered by: SHA-256 of the ``Authorization`` value ("" when there is none)."""
    if not authorization:
        return ANONYMOUS
    return hashlib.sha256(authorization.encode("latin-1", "replace")).hexdigest()


class _Bounded(Generic[K, V]):
    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._items: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.max_entries:
            self._items.popitem(last=False)

    def pop(self, key: K) -> None:
        self._items.pop(key, None)

    def __len__(self) -> int:
        return len(self._items)


@dataclass(frozen=True)
class Decision:
    """The Hub's word on a credential and a repo. For a refusal: its status and Hub error code/message."""

    allowed: bool
    at: float
    status: int = 200
    code: str | None = None
    message: str = ""


@dataclass
class AccessStats:
    hits: int = 0  # answered from a fresh decision
    recorded: int = 0  # decisions the Hub made
    refused: int = 0  # requests refused (by the Hub's decision, or because none could be had)
    stale_public: int = 0  # a repo once public answered while the Hub could not be asked


class AccessCache:
    def __init__(
        self,
        *,
        allow_ttl: float = 600.0,
        refuse_ttl: float = 30.0,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.allow_ttl = allow_ttl
        self.refuse_ttl = refuse_ttl
        self.clock = clock
        self._decisions: _Bounded[tuple[RepoKey, str], Decision] = _Bounded(max_entries)
        self.stats = AccessStats()

    def _fresh(self, d: Decision | None) -> bool:
        if d is None:
            return False
        return self.clock() - d.at < (self.allow_ttl if d.allowed else self.refuse_ttl)

    def decided(self, repo: RepoKey, credential: str) -> Decision | None:
        """A fresh decision for this credential (its own, or the repo's being public), else None: ask the Hub."""
        own = self._decisions.get((repo, credential))
        if self._fresh(own):
            self.stats.hits += 1
            return own
        public = self._decisions.get((repo, ANONYMOUS))
        if public is not None and public.allowed and self._fresh(public):
            self.stats.hits += 1
            return public
        return None

    def record(
        self,
        repo: RepoKey,
        credential: str,
        allowed: bool,
        status: int = 200,
        code: str | None = None,
        message: str = "",
        *,
        age: float = 0.0,
    ) -> Decision:
        """The Hub's decision, made ``age`` seconds ago (a confirmation record's, at start)."""
        decision = Decision(allowed, self.clock() - age, status, code, message)
        self._decisions.put((repo, credential), decision)
        self.stats.recorded += 1
        if not allowed:
            self.stats.refused += 1
        return decision

    def when_unreachable(self, repo: RepoKey, credential: str) -> Decision:
        """The answer while the Hub cannot be asked and no decision is fresh (see the module's docstring)."""
        public = self._decisions.get((repo, ANONYMOUS))
        if public is not None and public.allowed:
            self.stats.stale_public += 1
            return public
        self.stats.refused += 1
        return Decision(
            False,
            self.clock(),
            503,
            None,
            "access to this repo cannot be confirmed right now: the Hub does not answer; try again later",
        )

    def public(self, repo: RepoKey) -> bool | None:
        """Whether the repo was answered to an anonymous request (None: never asked anonymously)."""
        d = self._decisions.get((repo, ANONYMOUS))
        return None if d is None else d.allowed


@dataclass(frozen=True)
class BranchHead:
    commit: str
    at: float  # when the Hub said so

    def age(self, now: float) -> float:
        return max(0.0, now - self.at)


@dataclass
class BranchStats:
    hits: int = 0  # resolved with no upstream lookup
    lookups: int = 0  # upstream lookups recorded
    stale: int = 0  # answered by an old head while the Hub failed


class BranchHeads:
    def __init__(
        self, *, ttl: float = 30.0, max_entries: int = 10_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl = ttl
        self.clock = clock
        self._heads: _Bounded[tuple[str, str, str], BranchHead] = _Bounded(max_entries)
        self.stats = BranchStats()

    def fresh(self, repo: RepoKey, revision: str) -> str | None:
        head = self._heads.get((*repo, revision))
        if head is not None and head.age(self.clock()) < self.ttl:
            self.stats.hits += 1
            return head.commit
        return None

    def record(self, repo: RepoKey, revision: str, commit: str, *, age: float = 0.0) -> None:
        """The Hub (or a coordinator, ``age`` seconds ago) says ``revision`` is at ``commit``."""
        self._heads.put((*repo, revision), BranchHead(commit, self.clock() - age))
        self.stats.lookups += 1

    def last(self, repo: RepoKey, revision: str) -> BranchHead | None:
        """The last head known, however old (for stale-if-error)."""
        return self._heads.get((*repo, revision))

    def forget(self, repo: RepoKey, revision: str) -> None:
        self._heads.pop((*repo, revision))
