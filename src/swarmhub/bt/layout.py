"""How a release's files sit in a torrent: order, BEP 47 padding, piece size and piece arithmetic.

Order: files are sorted per path component (``("vae", "x.bin") < ("vae-ft.bin",) < ("vae.json",)``). The
v2 ``file tree`` is a dictionary, so its order is per component; the v1 ``files`` list of a hybrid must be
in the same order. libtorrent's creator sorts by full path instead (``/`` sorts after ``-`` and ``.``) and
then rejects its own torrent when a folder and a file share a prefix; we never do that.

Padding (hybrid): every non-empty file whose size is not a multiple of the piece size is followed by a pad
file (``.pad/N``, ``attr`` ``p``) so the next file starts on a piece boundary. libtorrent 2.1 pads the last
file too (except in a single-file torrent), and info-hashes must match its output, so we do the
same. v1 torrents have no padding (every
client reads them). v2-only torrents have no ``files`` list; pieces are per file, which is the same
arithmetic as the hybrid layout, so the plan keeps hybrid offsets for them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "MAX_PIECE_SIZE",
    "MIN_PIECE_SIZE",
    "Chunk",
    "Format",
    "PlannedFile",
    "TorrentPlan",
    "auto_piece_size",
    "path_sort_key",
    "plan_torrent",
]

Format = Literal["hybrid", "v1", "v2"]
FORMATS: tuple[Format, ...] = ("hybrid", "v1", "v2")

MIN_PIECE_SIZE = 16 * 1024  # BEP 52: at least one 16 KiB block
MAX_PIECE_SIZE = 256 * 1024 * 1024
# Auto piece size: about 2k pieces up to 16 MiB pieces (libtorrent caps at 8 MiB), then grow so the torrent
# stays small: 40k pieces x (20 B SHA-1 + 32 B piece layer) ~= 2 MB for a 640 GB release. Measured: hashing
# 256 KiB pieces costs ~10% more CPU than 1 MiB pieces (merkle nodes and per-piece work in Python).
_AUTO_MIN, _AUTO_SOFT_MAX = 256 * 1024, 16 * 1024 * 1024
_AUTO_SOFT_PIECES, _AUTO_HARD_PIECES = 2048, 40_000


def auto_piece_size(total_size: int) -> int:
    piece = _AUTO_MIN
    while total_size > piece * _AUTO_SOFT_PIECES and piece < _AUTO_SOFT_MAX:
        piece *= 2
    while total_size > piece * _AUTO_HARD_PIECES and piece < MAX_PIECE_SIZE:
        piece *= 2
    return piece


def valid_piece_size(piece_size: int) -> bool:
    """BEP 52 needs a power of two of at least 16 KiB; we keep v1 to the same rule."""
    return MIN_PIECE_SIZE <= piece_size <= MAX_PIECE_SIZE and piece_size & (piece_size - 1) == 0


def path_sort_key(path: str) -> tuple[bytes, ...]:
    return tuple(part.encode("utf-8") for part in path.split("/"))


@dataclass(frozen=True)
class PlannedFile:
    index: int  # position among real files (pads excluded), in torrent order
    path: str  # posix path inside the torrent (below its name)
    size: int
    offset: int  # byte offset in the piece stream (hybrid/v2: piece-aligned)
    pad_after: int  # BEP 47 pad bytes written after this file (hybrid only)

    @property
    def end(self) -> int:
        return self.offset + self.size


@dataclass(frozen=True)
class Chunk:
    """A run of one file's bytes that is hashed as a unit; starts on a piece boundary where it can."""

    file: PlannedFile
    file_offset: int
    length: int

    @property
    def stream_offset(self) -> int:
        return self.file.offset + self.file_offset

    @property
    def is_last(self) -> bool:
        return self.file_offset + self.length == self.file.size


@dataclass(frozen=True)
class TorrentPlan:
    format: Format
    piece_size: int
    files: tuple[PlannedFile, ...]

    @property
    def has_v1(self) -> bool:
        return self.format in ("hybrid", "v1")

    @property
    def has_v2(self) -> bool:
        return self.format in ("hybrid", "v2")

    @property
    def total_size(self) -> int:
        """Bytes of real content (pads excluded)."""
        return sum(f.size for f in self.files)

    @property
    def stream_length(self) -> int:
        """Length of the v1 piece stream (pads included for hybrid)."""
        if not self.files:
            return 0
        last = self.files[-1]
        return last.end + (last.pad_after if self.format == "hybrid" else 0)

    @property
    def num_pieces(self) -> int:
        return -(-self.stream_length // self.piece_size)

    def piece_length(self, index: int) -> int:
        """Length of v1 piece ``index`` (only the last one may be short)."""
        return min(self.piece_size, self.stream_length - index * self.piece_size)

    def file_pieces(self, file: PlannedFile) -> range:
        """v1 pieces that hold bytes of ``file``."""
        if file.size == 0:
            return range(0)
        return range(file.offset // self.piece_size, (file.end - 1) // self.piece_size + 1)

    def chunks(self, chunk_size: int) -> Iterator[Chunk]:
        """Split every file into chunks whose stream boundaries are multiples of ``chunk_size``.

        ``chunk_size`` is a multiple of the piece size, so only a file's first and last chunk can cut a
        piece (v1 only, where files are not piece-aligned).
        """
        if chunk_size % self.piece_size:
            raise ValueError("chunk size must be a multiple of the piece size")
        for file in self.files:
            position = file.offset
            while position < file.end:
                boundary = (position // chunk_size + 1) * chunk_size
                stop = min(boundary, file.end)
                yield Chunk(file, position - file.offset, stop - position)
                position = stop


def plan_torrent(files: Iterable[tuple[str, int]], piece_size: int, fmt: Format) -> TorrentPlan:
    """Lay out ``(path, size)`` pairs for ``fmt``. Paths must be unique posix paths."""
    if not valid_piece_size(piece_size):
        raise ValueError(f"piece size {piece_size} is not a power of two between 16 KiB and 256 MiB")
    ordered = sorted(files, key=lambda f: path_sort_key(f[0]))
    planned: list[PlannedFile] = []
    offset = 0
    for index, (path, size) in enumerate(ordered):
        if size < 0:
            raise ValueError(f"negative size for {path}")
        pad = 0
        # libtorrent never pads a single-file torrent (that would make single-file hybrids impossible)
        if fmt != "v1" and size % piece_size and len(ordered) > 1:
            pad = piece_size - size % piece_size
        planned.append(PlannedFile(index, path, size, offset, pad if fmt == "hybrid" else 0))
        offset += size + pad
    return TorrentPlan(fmt, piece_size, tuple(planned))
