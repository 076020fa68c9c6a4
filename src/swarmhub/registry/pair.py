"""What a publish hands the registry: a hybrid and a classic v1 torrent of one release, checked as a pair.

No I/O: bytes in, a ``TorrentPair`` (bytes and parsed form) or ``PublishRefused`` out. Whether the pair is the
upstream's release is ``verify``'s question; what storing it does is the catalog's.
"""

from __future__ import annotations

from dataclasses import dataclass

from swarmhub.bt.metainfo import Torrent, parse_torrent
from swarmhub.errors import UsageError
from swarmhub.hub.repo import RepoFile, RepoRef

__all__ = ["PublishRefused", "TorrentPair", "check_pair"]


class PublishRefused(UsageError):
    """A published torrent pair the registry will not store (the message says why; ``status`` is the HTTP
    answer: 422 for torrents that are not a publishable release, 409 when another release holds the commit,
    403 for a repo the publisher or the registry may not publish)."""

    def __init__(self, message: str, *, status: int = 422, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.status = status


@dataclass(frozen=True)
class TorrentPair:
    """A publishable pair: the two torrents' bytes and their parsed form (``parse`` checks them)."""

    hybrid: bytes
    classic: bytes
    parsed_hybrid: Torrent
    parsed_classic: Torrent

    @classmethod
    def parse(cls, hybrid: bytes, classic: bytes) -> TorrentPair:
        h, c = parse_torrent(hybrid), parse_torrent(classic)
        check_pair(h, c)
        return cls(hybrid, classic, h, c)

    @property
    def repo(self) -> RepoRef:
        assert self.parsed_hybrid.repo is not None  # check_pair
        return self.parsed_hybrid.repo

    @property
    def files(self) -> list[RepoFile]:
        """The Hub files the torrents carry (``info.hf``, which ``check_pair`` requires: parsed, each has its etag)."""
        return [RepoFile(f.path, f.size, f.etag or "") for f in self.parsed_hybrid.files]


def check_pair(hybrid: Torrent, classic: Torrent) -> None:
    """A publishable pair: a hybrid and a v1 torrent of the same release, same files, carrying its identity."""
    if hybrid.format != "hybrid":
        raise PublishRefused(f"the first torrent is {hybrid.format}, not a v1+v2 hybrid")
    if classic.format != "v1":
        raise PublishRefused(f"the classic torrent is {classic.format}, not v1")
    if hybrid.repo is None or classic.repo is None:
        raise PublishRefused("a published torrent must carry the release's Hub identity (info.hf)")
    if hybrid.repo != classic.repo:
        raise PublishRefused(f"the torrents are of different releases ({hybrid.repo} and {classic.repo})")
    if [(f.path, f.size, f.etag) for f in hybrid.files] != [(f.path, f.size, f.etag) for f in classic.files]:
        raise PublishRefused("the hybrid and the classic torrent list different files")
    if hybrid.private or classic.private:
        raise PublishRefused("private torrents are not published")
    if not (hybrid.info_hash_v1 and hybrid.info_hash_v2 and classic.info_hash_v1):
        raise PublishRefused("a published torrent pair needs the hybrid's two info-hashes and the classic's")
