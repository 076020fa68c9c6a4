"""Seeding releases from the cache: every landed file, straight from ``blobs/``, without re-hashing.

A landed blob was checked against its etag when it landed, so a seeder trusts it: the pieces whose bytes
all lie in landed files (or pads) are handed to libtorrent as "have" with no file check, which is why
``swarmhub seed`` starts in seconds with hundreds of GB (and keeps no resume data: a hybrid's resume data
after a full check holds ~2 MB of merkle leaves per GB). Seeders run in upload mode: they never write.
Both torrents of a release (hybrid and v1) point at the same blob files.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from swarmhub.bt.metainfo import Torrent
from swarmhub.engine.session import Engine, storage_layout
from swarmhub.node.landing import CacheDestination
from swarmhub.node.pull import release_files

__all__ = ["SeedPlan", "seed_plan", "seed_release"]


@dataclass(frozen=True)
class SeedPlan:
    renamed: dict[int, str]
    have: list[bool]
    priorities: list[int]
    files_present: int
    files_total: int
    bytes_present: int
    bytes_total: int

    @property
    def complete(self) -> bool:
        return self.files_present == self.files_total

    @property
    def pieces(self) -> int:
        return sum(self.have)


def seed_plan(torrent: Torrent, data: bytes, cache_dir: Path) -> tuple[CacheDestination, SeedPlan]:
    assert torrent.repo is not None
    dest = CacheDestination(cache_dir, torrent.repo)
    layout = storage_layout(data)
    files = release_files(torrent)
    placements = dest.placements(files)
    real = [f for f in layout.files if not f.pad]
    present = {s.index: dest.landed(p) for s, p in zip(real, placements, strict=True)}
    renamed = {s.index: str(p.final) for s, p in zip(real, placements, strict=True)}
    priorities = [1 if present.get(f.index, False) else 0 for f in layout.files]
    have = [True] * layout.num_pieces  # a piece is had when every byte of it is in a landed file or a pad
    for f in real:
        if not present[f.index]:
            for piece in layout.pieces_of(f):
                have[piece] = False
    return dest, SeedPlan(
        renamed=renamed,
        have=have,
        priorities=priorities,
        files_present=sum(present.values()),
        files_total=len(real),
        bytes_present=sum(s.size for s in real if present[s.index]),
        bytes_total=sum(s.size for s in real),
    )


def seed_release(
    engine: Engine,
    torrent: Torrent,
    data: bytes,
    cache_dir: Path,
    part_file_dir: Path,
    trackers: Sequence[str] = (),
) -> str | None:
    """Seed what the cache holds of a release; None when it holds none of it. ``trackers``: announced to
    as well (a cluster's coordinator)."""
    dest, plan = seed_plan(torrent, data, cache_dir)
    if not plan.pieces:
        return None
    part_file_dir.mkdir(parents=True, exist_ok=True)
    return engine.add(
        data,
        dest.root,
        renamed=plan.renamed,
        have=plan.have,
        file_priorities=plan.priorities,
        part_file_dir=part_file_dir,
        upload_only=True,
        trackers=trackers,
    )
