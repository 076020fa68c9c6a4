"""A release is only the Hub's release once the upstream confirmed its file list (``hub.confirm``).

Before a node lands or serves a torrent as ``repo@commit`` — whoever handed it over: ``swarmhub pull
--torrent``, the node's ``/pull``, a registry, a coordinator's preheat, a torrent in the store — its files
(paths, sizes, etags) are compared with the upstream's tree for that commit, once, and the outcome recorded in
``<state>/confirmed/<digest>`` (the digest covers the release and its file list, so the hybrid, the classic
and a cluster's TLS variant of one release share one record). Outcomes:

- ``confirmed``: the upstream lists every file alike (now, or recorded earlier). The record (JSON, ``Record``)
  also says whether the torrent lists the whole commit (``whole``: the node may then answer "no such file" for
  the others without asking) and when an anonymous HEAD of one of its files was answered (``public_at``, wall
  clock: the repo is neither gated nor private; the endpoint's access cache starts from it);
- ``refused``: the upstream lists the commit and disagrees: ``TorrentMismatch`` names the first differing file,
  and nothing of the torrent is landed, stored or served;
- ``unconfirmed``: no upstream was given (``--no-origin``), it could not be reached, or it does not show the
  commit to us (gone from the Hub, private or gated without our token). The release may still land and be
  served, only as far as each file's etag checks: that trusts whoever handed the torrent over for which bytes
  the commit holds (the README says so). An unreachable upstream is asked again after ``RETRY_AFTER`` seconds.

A gated or private repo the node's own token cannot list is confirmed with a program's credential that the Hub
just accepted for it (``authorization``, a ``Bearer`` value): sent to the upstream only, as the endpoint relays
it anyway, and never kept.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from swarmhub.bt.metainfo import Torrent
from swarmhub.errors import (
    GatedRepoError,
    MetainfoError,
    OriginError,
    RepoNotFound,
    RevisionNotFound,
    TorrentMismatch,
)
from swarmhub.guard import bearer_token
from swarmhub.hub.confirm import release_difference
from swarmhub.hub.repo import RepoFile, RepoRef
from swarmhub.node.hubstate import credential_key
from swarmhub.node.landing import atomic_text
from swarmhub.origin.client import OriginClient

__all__ = ["Confirmations", "Outcome", "Record", "confirm_here", "release_digest"]

log = logging.getLogger(__name__)

RETRY_AFTER = 30.0  # seconds an unreachable upstream is not asked again about the same release
Outcome = Literal["confirmed", "unconfirmed"]


def release_digest(ref: RepoRef, files: Sequence[RepoFile]) -> str:
    """One name for a release and its file list, whatever torrent carries them."""
    rows = [[ref.repo_type, ref.repo_id, ref.commit], *sorted([f.path, f.size, f.etag.lower()] for f in files)]
    return hashlib.sha256(json.dumps(rows, separators=(",", ":")).encode()).hexdigest()


@dataclass(frozen=True)
class Record:
    """What the upstream said of a release when it confirmed it."""

    repo_type: str
    repo_id: str
    commit: str
    files: int
    whole: bool = False  # the torrent lists every file of the commit
    public_at: float | None = None  # time.time() an anonymous HEAD of a file of it was answered

    @classmethod
    def parse(cls, text: str) -> Record:
        """A record as written (JSON); a record of the first format (one line of text) is confirmed, no more."""
        try:
            raw = json.loads(text)
            return cls(**{k: raw[k] for k in ("repo_type", "repo_id", "commit", "files", "whole", "public_at")})
        except (ValueError, KeyError, TypeError):
            parts = text.split()
            if len(parts) < 4 or not parts[3].isdigit():
                raise MetainfoError("not a confirmation record") from None
            return cls(parts[0], parts[1], parts[2], int(parts[3]))


class Confirmations:
    """The confirmation step for one node (or one ``swarmhub pull``): asks ``upstream``, records in ``state_dir``."""

    def __init__(
        self, state_dir: Path, upstream: OriginClient | None, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.dir = state_dir / "confirmed"
        self.upstream = upstream
        self.clock = clock
        self._misses: dict[str, float] = {}  # digest (and credential) -> when the upstream could not confirm

    def record(self, ref: RepoRef, files: Sequence[RepoFile]) -> Record | None:
        """The record of a confirmed release; None when it is not confirmed (or its record is unreadable)."""
        try:
            return Record.parse((self.dir / release_digest(ref, files)).read_text())
        except (OSError, MetainfoError):
            return None

    async def confirm(self, ref: RepoRef, files: Sequence[RepoFile], *, authorization: str | None = None) -> Outcome:
        """``confirmed`` or ``unconfirmed`` (see the module's docstring); ``TorrentMismatch`` when refused."""
        digest = release_digest(ref, files)
        if (self.dir / digest).is_file():
            return "confirmed"
        if self.upstream is None:
            return "unconfirmed"
        token = bearer_token(authorization)
        miss_key = digest if token is None else f"{digest} {credential_key(authorization)}"
        missed_at = self._misses.get(miss_key)
        if missed_at is not None and self.clock() - missed_at < RETRY_AFTER:
            return "unconfirmed"
        try:
            listed = await self._list(ref, token)
        except (RepoNotFound, RevisionNotFound, GatedRepoError) as exc:
            return self._unconfirmed(miss_key, ref, f"the upstream does not show it to us ({exc})")
        except OriginError as exc:
            return self._unconfirmed(miss_key, ref, f"the upstream could not be asked ({exc})")
        difference = release_difference(files, listed)
        if difference is not None:
            raise TorrentMismatch(
                f"refused: the torrent of {ref.repo_id}@{ref.commit[:12]} is not the upstream's release: {difference}",
                repo_id=ref.repo_id,
                hint="get the release's torrent from a registry you trust, or make it: swarmhub create",
            )
        self._misses.pop(digest, None)
        whole = {f.path for f in files} == {f.path for f in listed}
        record = Record(ref.repo_type, ref.repo_id, ref.commit, len(files), whole, await self._public_at(ref, files))
        try:
            atomic_text(self.dir / digest, json.dumps(asdict(record)) + "\n")
        except OSError as exc:  # a read-only state folder: confirmed now, asked again next time
            log.warning("could not record the confirmation of %s: %s", ref.repo_id, exc)
        log.info("%s@%s: the upstream confirms its %d files", ref.repo_id, ref.commit[:12], len(files))
        return "confirmed"

    async def _list(self, ref: RepoRef, token: str | None) -> list[RepoFile]:
        """The upstream's tree for the commit: with the node's own token, then (a repo it may not read) with the
        program's."""
        assert self.upstream is not None
        try:
            return await self.upstream.list_files(ref.repo_type, ref.repo_id, ref.commit)
        except (RepoNotFound, GatedRepoError):
            if token is None:
                raise
        theirs = OriginClient(self.upstream.endpoint, token, retries=2, timeout=10)
        try:
            return await theirs.list_files(ref.repo_type, ref.repo_id, ref.commit)
        finally:
            await theirs.aclose()

    async def _public_at(self, ref: RepoRef, files: Sequence[RepoFile]) -> float | None:
        """Now, when an anonymous HEAD of the release's smallest file is answered (neither gated nor private);
        None when it is refused or cannot be had."""
        assert self.upstream is not None
        if not files:
            return None
        smallest = min(files, key=lambda f: (f.size, f.path))
        anonymous = OriginClient(self.upstream.endpoint, None, retries=2, timeout=10)
        try:
            await anonymous.head_file(ref.repo_type, ref.repo_id, ref.commit, smallest.path)
        except OriginError:
            return None
        finally:
            await anonymous.aclose()
        return time.time()

    def _unconfirmed(self, digest: str, ref: RepoRef, why: str) -> Outcome:
        self._misses[digest] = self.clock()
        log.warning(
            "%s@%s is unconfirmed: %s; only files whose etags check are served", ref.repo_id, ref.commit[:12], why
        )
        return "unconfirmed"


async def confirm_here(state_dir: Path, token: str | None, parts: Sequence[Torrent], endpoint: str | None) -> None:
    """The confirmation step before a release lands here (``swarmhub pull`` not handed to a node): the origin's
    tree for the commit must list the files of the release's torrents alike (``TorrentMismatch`` otherwise);
    without an origin to ask, the release is unconfirmed and lands as far as each file's etag checks."""
    from swarmhub.node.pull import release_files

    repo = parts[0].repo
    assert repo is not None
    client = None if endpoint is None else OriginClient(endpoint, token, retries=2, timeout=10)
    try:
        files = [f for t in parts for f in release_files(t)]
        await Confirmations(state_dir, client).confirm(repo, files)
    finally:
        if client is not None:
            await client.aclose()
