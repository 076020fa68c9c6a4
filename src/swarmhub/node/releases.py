"""What the node's Hub endpoint asks of the swarm: the releases it knows, and a file's bytes as they arrive.

The endpoint (``node.endpoint``) speaks HTTP and the Hub's dialect; the node (``node.daemon``) owns the
libtorrent session, the cache and the pulls. This module is the seam between them, so each side is tested
without the other: the endpoint against an in-memory ``ReleaseSource``, the node against real swarms.

- ``ReleaseSource.release(repo_type, repo_id, commit, authorization=...)``: the release when the swarm knows it
  (a torrent in the node's store or the registry's catalog) and the upstream does not contradict it, else None —
  the endpoint then passes the request to the upstream. ``authorization`` is the program's own credential,
  which the Hub just accepted for this repo: a gated release the node cannot confirm alone is confirmed with it.
- ``ReleaseSource.knows(repo_type, repo_id)``: whether the swarm may hold a release of the repo (else the
  endpoint does not look its branches up: it relays).
- ``ReleaseSource.local_head(repo_type, repo_id, revision)``: a branch or tag resolved without the upstream
  (the node cache's ``refs/<revision>``) and how old that is, for when the upstream cannot be asked;
  ``record_head`` writes what the upstream said there.
- ``KnownRelease.confirmed``: the upstream confirmed its file list (``node.confirmation``): the endpoint answers
  it without asking the upstream about its files. ``whole``: it lists every file of the commit (so a path it
  lacks is not in the commit). ``public_at``: when (``time.time()``) the repo answered an anonymous request.
- ``KnownRelease.stream(path, start, end)``: bytes ``[start, end)`` of one file, in order, as soon as they
  are there — from the landed blob, or from pieces still arriving (the reader's position sets the pieces'
  deadlines). Raises ``SwarmhubError`` (e.g. ``StalledError``) when the bytes cannot come.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Protocol

from swarmhub.hub.repo import RepoFile, RepoRef, RepoType

__all__ = ["KnownRelease", "ReleaseSource"]


class KnownRelease(Protocol):
    @property
    def ref(self) -> RepoRef: ...

    @property
    def files(self) -> Sequence[RepoFile]: ...

    confirmed: bool
    whole: bool
    public_at: float | None

    def stream(self, path: str, start: int, end: int) -> AsyncIterator[bytes]:
        """Bytes ``[start, end)`` of ``path`` (a file of ``files``), in order, as they arrive."""
        ...


class ReleaseSource(Protocol):
    async def release(
        self, repo_type: RepoType, repo_id: str, commit: str, *, authorization: str | None = None
    ) -> KnownRelease | None: ...

    async def knows(self, repo_type: RepoType, repo_id: str) -> bool: ...

    async def local_head(self, repo_type: RepoType, repo_id: str, revision: str) -> tuple[str, float] | None: ...

    async def record_head(self, repo_type: RepoType, repo_id: str, revision: str, commit: str) -> None: ...
