"""What a publish hands the registry: a hybrid and a classic v1 torrent of one release, checked as a pair.

A release spanning several torrents (``bt.metainfo``) hands over its hybrid parts and its classic parts: the
pair is then of the two part 0s, with the other parts beside them; the two sets may be cut in different places
(the classic is cut smaller, for aria2) but hold the same files.

No I/O: bytes in, a ``TorrentPair`` (bytes and parsed form) or ``PublishRefused`` out. Whether the pair is the
upstream's release is ``verify``'s question; what storing it does is the catalog's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from swarmhub.bt.metainfo import Torrent, check_parts, parse_torrent
from swarmhub.errors import MetainfoError, UsageError
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
    # a release of several torrents: the parts after part 0, in order (bytes, parsed)
    hybrid_parts: tuple[tuple[bytes, Torrent], ...] = ()
    classic_parts: tuple[tuple[bytes, Torrent], ...] = ()

    @classmethod
    def parse(
        cls, hybrid: bytes, classic: bytes, hybrid_parts: Sequence[bytes] = (), classic_parts: Sequence[bytes] = ()
    ) -> TorrentPair:
        h, c = parse_torrent(hybrid), parse_torrent(classic)
        more_h = _parts(h, hybrid_parts, "hybrid")
        more_c = _parts(c, classic_parts, "classic")
        check_pair(h, c, [t for _, t in more_h], [t for _, t in more_c])
        return cls(hybrid, classic, h, c, more_h, more_c)

    def torrents(self, *, classic: bool = False) -> list[tuple[bytes, Torrent]]:
        """Every torrent of one kind, part 0 first."""
        if classic:
            return [(self.classic, self.parsed_classic), *self.classic_parts]
        return [(self.hybrid, self.parsed_hybrid), *self.hybrid_parts]

    @property
    def repo(self) -> RepoRef:
        assert self.parsed_hybrid.repo is not None  # check_pair
        return self.parsed_hybrid.repo

    @property
    def files(self) -> list[RepoFile]:
        """The Hub files the torrents carry (``info.hf``, which ``check_pair`` requires: parsed, each has its
        etag), every part's, in torrent order."""
        return [RepoFile(f.path, f.size, f.etag or "") for _, t in self.torrents() for f in t.files]


def _parts(first: Torrent, more: Sequence[bytes], kind: str) -> tuple[tuple[bytes, Torrent], ...]:
    """The parts after ``first`` in the order it lists them, or ``PublishRefused`` saying why they are not."""
    given = [(data, parse_torrent(data)) for data in more]
    if first.part is None and not given:
        return ()
    try:
        ordered = check_parts([first, *(t for _, t in given)])
    except MetainfoError as exc:
        raise PublishRefused(f"the {kind} torrents are not the parts of one release: {exc}") from None
    by_key = {t.key: (data, t) for data, t in given}
    return tuple(by_key[t.key] for t in ordered[1:])


def check_pair(
    hybrid: Torrent, classic: Torrent, hybrid_parts: Sequence[Torrent] = (), classic_parts: Sequence[Torrent] = ()
) -> None:
    """A publishable pair: a hybrid and a v1 torrent of the same release, same files, carrying its identity
    (with the parts after each part 0, checked as parts by ``TorrentPair.parse``)."""
    if hybrid.format != "hybrid":
        raise PublishRefused(f"the first torrent is {hybrid.format}, not a v1+v2 hybrid")
    if classic.format != "v1":
        raise PublishRefused(f"the classic torrent is {classic.format}, not v1")
    if hybrid.repo is None or classic.repo is None:
        raise PublishRefused("a published torrent must carry the release's Hub identity (info.hf)")
    if hybrid.repo != classic.repo:
        raise PublishRefused(f"the torrents are of different releases ({hybrid.repo} and {classic.repo})")
    hybrid_files = [(f.path, f.size, f.etag) for t in (hybrid, *hybrid_parts) for f in t.files]
    if hybrid_files != [(f.path, f.size, f.etag) for t in (classic, *classic_parts) for f in t.files]:
        raise PublishRefused("the hybrid and the classic torrent list different files")
    if any(t.private for t in (hybrid, classic, *hybrid_parts, *classic_parts)):
        raise PublishRefused("private torrents are not published")
    if not (hybrid.info_hash_v1 and hybrid.info_hash_v2 and classic.info_hash_v1):
        raise PublishRefused("a published torrent pair needs the hybrid's two info-hashes and the classic's")
