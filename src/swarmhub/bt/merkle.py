"""BEP 52 merkle trees over 16 KiB blocks (SHA-256), without I/O.

Leaves are SHA-256 of each 16 KiB block of a file (the last block may be short). Leaves past the end of the
file are 32 zero bytes, and so are the upper nodes built only from them ("pad" hashes, computed per level).
A file larger than one piece is summarised by its *piece layer*: the root of each piece's subtree, the last
one padded to a full piece. A file no larger than one piece has a root over its leaves padded only to the
next power of two (libtorrent does the same; padding to the piece size would give another root).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from functools import cache

__all__ = [
    "BLOCK_SIZE",
    "file_root_from_leaves",
    "file_root_from_piece_layer",
    "leaf_hashes",
    "merkle_root",
    "pad_hash",
    "piece_roots",
]

BLOCK_SIZE = 16 * 1024
_ZERO = bytes(32)


def _next_pow2(n: int) -> int:
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


@cache
def pad_hash(height: int) -> bytes:
    """Root of a subtree of ``2**height`` zero leaves."""
    if height == 0:
        return _ZERO
    below = pad_hash(height - 1)
    return hashlib.sha256(below + below).digest()


def merkle_root(nodes: Sequence[bytes], width: int, pad: bytes = _ZERO) -> bytes:
    """Root over ``nodes`` padded with ``pad`` to ``width`` (a power of two) entries.

    Padding nodes on one level pair into pad nodes of the next, so only the first pad per level is hashed.
    """
    if width & (width - 1) or width < len(nodes) or width < 1:
        raise ValueError(f"width {width} is not a power of two >= {len(nodes)}")
    level = list(nodes)
    while width > 1:
        if len(level) % 2:
            level.append(pad)
        level = [hashlib.sha256(level[i] + level[i + 1]).digest() for i in range(0, len(level), 2)]
        pad = hashlib.sha256(pad + pad).digest()
        width //= 2
    return level[0] if level else pad


def leaf_hashes(data: bytes | memoryview) -> list[bytes]:
    """SHA-256 of each 16 KiB block of ``data`` (hashlib releases the GIL for blocks this big)."""
    view = memoryview(data)
    sha256 = hashlib.sha256
    return [sha256(view[i : i + BLOCK_SIZE]).digest() for i in range(0, len(view), BLOCK_SIZE)]


def piece_roots(leaves: Sequence[bytes], leaves_per_piece: int) -> list[bytes]:
    """Per-piece subtree roots for ``leaves`` that start on a piece boundary; the last piece is padded."""
    return [
        merkle_root(leaves[i : i + leaves_per_piece], leaves_per_piece) for i in range(0, len(leaves), leaves_per_piece)
    ]


def file_root_from_piece_layer(layer: Sequence[bytes], leaves_per_piece: int) -> bytes:
    """``pieces root`` of a file larger than one piece, from its piece layer."""
    height = leaves_per_piece.bit_length() - 1
    return merkle_root(layer, _next_pow2(len(layer)), pad_hash(height))


def file_root_from_leaves(leaves: Sequence[bytes]) -> bytes:
    """``pieces root`` of a file no larger than one piece."""
    return merkle_root(leaves, _next_pow2(len(leaves)))
