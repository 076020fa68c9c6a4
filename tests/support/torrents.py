"""Build torrents from in-memory files, synchronously, with the project's own hashing code."""

from __future__ import annotations

import hashlib

from swarmhub.bt.layout import Format, plan_torrent
from swarmhub.bt.metainfo import build_torrent
from swarmhub.create.hashing import ReleaseHasher, hash_chunk
from swarmhub.hub.repo import RepoRef

COMMIT = "0123456789abcdef0123456789abcdef01234567"
DEFAULT_REPO = RepoRef("model", "org/name", COMMIT)


def make_torrent(
    files: dict[str, bytes],
    *,
    piece_size: int = 16384,
    fmt: Format = "hybrid",
    repo: RepoRef | None = DEFAULT_REPO,
    name: str = "org--name",
    lfs: frozenset[str] = frozenset(),
    trackers: tuple[str, ...] = (),
    webseeds: tuple[str, ...] = (),
) -> bytes:
    plan = plan_torrent([(p, len(b)) for p, b in files.items()], piece_size, fmt)
    hasher = ReleaseHasher(plan, [f.path in lfs for f in plan.files], [None] * len(plan.files))
    for chunk in plan.chunks(piece_size * 2):
        data = files[chunk.file.path][chunk.file_offset : chunk.file_offset + chunk.length]
        for piece, joined in hasher.add_chunk(hash_chunk(plan, chunk, data)):
            hasher.set_v1_piece(piece, hashlib.sha1(joined).digest())
        hasher.feed_whole(chunk.file, data)
    digests = hasher.result()
    return build_torrent(
        plan,
        name,
        v1_pieces=digests.v1_pieces,
        v2=[(v.root, v.layer) for v in digests.v2],
        repo=repo,
        etags=digests.etags,
        trackers=trackers,
        webseeds=webseeds,
    )
