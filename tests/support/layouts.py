"""Generated release layouts, and libtorrent as the reference for the torrents we make of them.

A *layout* maps repo paths to sizes; file contents are derived from the path and a seed, so any layout can
be rebuilt byte for byte. Three ways to get a torrent of a layout:

- ``torrent_by_hashing``: ``plan_torrent`` + ``ReleaseHasher`` + ``build_torrent`` with no ``hf`` identity
  (what libtorrent would write, name aside), chunks hashed in any order;
- ``torrent_by_release``: the real ``create_release_torrent`` over a folder, with ``info["hf"]`` removed;
- ``libtorrent_torrent``: libtorrent's own creator, given the files in our order.

Folders are named like our torrents (``org--name--<12 hex>``) so the three agree on the name.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import libtorrent as lt

from support.olah import git_blob_sha1  # the tests' own oracle, independent of swarmhub.hub
from swarmhub.bt.bencode import decode, encode
from swarmhub.bt.layout import Format, path_sort_key, plan_torrent
from swarmhub.bt.metainfo import build_torrent, parse_torrent
from swarmhub.create.hashing import ReleaseHasher, hash_chunk
from swarmhub.create.release import CreateRequest, create_release_torrent
from swarmhub.engine.check import CheckResult, check_files

__all__ = [
    "COMMIT",
    "LT_FLAGS",
    "NAME",
    "REPO_ID",
    "Layout",
    "content",
    "create_json",
    "edge_layouts",
    "git_blob_sha1",
    "info_hashes",
    "libtorrent_check",
    "libtorrent_info_hashes",
    "libtorrent_refuses",
    "libtorrent_reorders",
    "libtorrent_torrent",
    "run_cli",
    "strip_hf",
    "torrent_by_hashing",
    "torrent_by_release",
    "write_layout",
]

REPO_ID = "org/name"
COMMIT = "5f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c"
NAME = f"org--name--{COMMIT[:12]}"  # swarmhub.create.release.torrent_name

Layout = Mapping[str, int]  # repo path -> size

LT_FLAGS: dict[Format, Any] = {
    "hybrid": 0,
    "v1": lt.create_torrent.v1_only,
    "v2": lt.create_torrent.v2_only,
}


def edge_layouts(piece: int) -> dict[str, dict[str, int]]:
    """Layouts at the edges of the piece arithmetic, for one piece size (each well under 1 MB)."""
    p = piece
    return {
        # v1: pieces straddle several files; hybrid: a pad after each
        "boundaries_across_files": {
            "a.bin": p - 1,
            "b.bin": 2,
            "c.bin": p + 3,
            "d.bin": p // 2,
            "e.bin": 3 * p // 2 + 7,
        },
        "empty_files": {"0-empty": 0, "data.bin": p + 5, "m/empty": 0, "m/n.txt": 9, "z-last-empty": 0},
        "one_byte_files": {"x1": 1, "x2": 1, "dir/x3": 1, "y.bin": p, "z": 1},
        "exactly_one_piece": {"one.bin": p, "tail.txt": 10},
        "exactly_two_pieces": {"two.bin": 2 * p, "after.bin": 100},
        "one_byte_over_a_piece": {"over.bin": p + 1, "next.bin": p - 1},
        # v2: a piece layer that is not a power of two; merkle leaves around 16 KiB
        "many_pieces": {"big.bin": 5 * p + 123, "small.bin": 300},
        "merkle_leaf_edges": {"leaf.bin": 16384, "leaf-plus-one.bin": 16385, "leaf-minus-one.bin": 16383},
        "nested_folders": {
            "a/b/c/d.bin": 1000,
            "a/b/e.bin": p + 17,
            "a/f.json": 33,
            "g.txt": 5,
            "a/b/c/empty": 0,
        },
        # "/" sorts after "-" and ".": per component, vae/x.bin comes first; by full path, last
        "vae_ordering": {
            "vae/x.bin": p + 10,
            "vae-ft.bin": 2 * p,
            "vae.json": 300,
            "vae/y.safetensors": 1234,
        },
        "unicode_names": {
            "ünïcödé/файл.bin": p + 9,
            "日本語.txt": 12,
            "emoji 🤗.json": 7,
            "café/naïve résumé.md": 0,
            "ελληνικά/α/β.bin": 3 * p,
        },
        "single_file": {"model.safetensors": 3 * p + 1},
    }


def content(path: str, size: int, seed: int = 0) -> bytes:
    return random.Random(f"{seed}:{path}").randbytes(size)


def write_layout(root: Path, layout: Layout, seed: int = 0) -> dict[str, bytes]:
    files = {}
    for path, size in layout.items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data := content(path, size, seed))
        files[path] = data
    return files


# ----------------------------------------------------------------------------------------------- ours


def torrent_by_hashing(
    files: Mapping[str, bytes],
    piece: int,
    fmt: Format,
    *,
    chunk_pieces: int = 2,
    order_seed: int | None = None,
) -> bytes:
    """Our torrent, no Hub identity; chunks of ``chunk_pieces`` pieces, hashed in shuffled order if asked."""
    plan = plan_torrent([(p, len(d)) for p, d in files.items()], piece, fmt)
    hasher = ReleaseHasher(plan, [False] * len(plan.files), [None] * len(plan.files))
    chunks = list(plan.chunks(piece * chunk_pieces))
    data = [files[c.file.path][c.file_offset : c.file_offset + c.length] for c in chunks]
    for chunk, part in zip(chunks, data, strict=True):  # whole-file digests need each file's bytes in order
        hasher.feed_whole(chunk.file, part)
    order = list(range(len(chunks)))
    if order_seed is not None:
        random.Random(order_seed).shuffle(order)
    for i in order:
        for piece_index, joined in hasher.add_chunk(hash_chunk(plan, chunks[i], data[i])):
            hasher.set_v1_piece(piece_index, hashlib.sha1(joined).digest())
    digests = hasher.result()
    return build_torrent(
        plan,
        NAME,
        v1_pieces=digests.v1_pieces,
        v2=[(v.root, v.layer) for v in digests.v2],
        repo=None,
        etags=digests.etags,
    )


def torrent_by_release(folder: Path, piece: int, fmt: Format) -> bytes:
    """What ``swarmhub create --from-dir folder --revision COMMIT`` writes (library call)."""
    request = CreateRequest(
        repo_type="model", repo_id=REPO_ID, revision=COMMIT, piece_size=piece, format=fmt, from_dir=folder
    )
    return asyncio.run(create_release_torrent(request, None)).data


def strip_hf(torrent: bytes) -> bytes:
    """The torrent without our ``info["hf"]`` identity: what libtorrent writes for the same files."""
    meta = decode(torrent)
    del meta[b"info"][b"hf"]
    return encode(meta)


def info_hashes(torrent: bytes) -> tuple[str | None, str | None]:
    parsed = parse_torrent(torrent)
    return parsed.info_hash_v1, parsed.info_hash_v2


# ----------------------------------------------------------------------------------------- libtorrent


def libtorrent_reorders(paths: Sequence[str]) -> bool:
    """True when libtorrent's hybrid creator (full-path order) lists these files in another order than ours."""
    return sorted(paths, key=lambda p: p.encode()) != sorted(paths, key=path_sort_key)


def libtorrent_refuses(layout: Mapping[str, int]) -> bool:
    """True when libtorrent then also refuses its own hybrid: it compares its v1 list and v2 tree position by
    position, and empty files carry nothing to compare but their size (measured: two empty files swapped pass)."""

    def listed(key: Callable[[str], Any]) -> list[tuple[str | None, int]]:
        return [(p if layout[p] else None, layout[p]) for p in sorted(layout, key=key)]

    return listed(lambda p: p.encode()) != listed(path_sort_key)


def libtorrent_torrent(parent: Path, paths_sizes: Sequence[tuple[str, int]], piece: int, fmt: Format) -> bytes:
    """libtorrent's torrent of ``parent/NAME/<path>``, files given in our order (v1_only keeps it)."""
    order = sorted(paths_sizes, key=lambda f: path_sort_key(f[0]))
    entries = [lt.create_file_entry(f"{NAME}/{path}", size) for path, size in order]
    creator = lt.create_torrent(entries, piece, LT_FLAGS[fmt])
    lt.set_piece_hashes(creator, str(parent))
    return lt.bencode(creator.generate())  # generate_buf() raises UnicodeDecodeError in 2.1.1


def libtorrent_info_hashes(torrent: bytes) -> tuple[str | None, str | None]:
    """Info-hashes as libtorrent computes them when it loads ``torrent`` (raises if it refuses it)."""
    hashes = lt.torrent_info(torrent).info_hashes()
    return (str(hashes.v1) if hashes.has_v1() else None, str(hashes.v2) if hashes.has_v2() else None)


def libtorrent_check(torrent: bytes, save_path: Path, timeout: float = 20.0) -> CheckResult:
    """libtorrent's full hash check of the files under ``save_path`` (the project's own engine seam).

    libtorrent renames a file whose path differs from another's only by case (``A`` beside a folder ``a``
    becomes ``A.1``); a link at the name it looks for lets it check the same bytes."""
    files = lt.torrent_info(torrent).files()
    parsed = parse_torrent(torrent)
    real = [i for i in range(files.num_files()) if not files.file_flags(i) & lt.file_storage.flag_pad_file]
    for index, ours in zip(real, parsed.files, strict=True):
        where, mine = save_path / files.file_path(index), save_path / parsed.name / ours.path
        if where != mine and mine.exists() and not where.exists():
            where.parent.mkdir(parents=True, exist_ok=True)
            where.symlink_to(mine)
    return check_files(torrent, save_path, timeout)


# ------------------------------------------------------------------------------------------------ CLI

from support.cli import run_cli  # noqa: E402 - shared with the other CLI tests


def create_json(folder: Path, output: Path, *extra: str | Path) -> dict[str, Any]:
    """``swarmhub create org/name --from-dir folder -o output --json`` plus ``extra``; asserts success."""
    proc = run_cli("create", REPO_ID, "--from-dir", folder, "-o", output, "--json", "--no-progress", *extra)
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout)
    return result
