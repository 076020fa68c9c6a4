"""Hashing a release's bytes chunk by chunk, in any order, without I/O.

``hash_chunk`` is the CPU work for one chunk (run it in a thread: hashlib releases the GIL): v1 SHA-1 of
every piece the chunk holds whole, fragments of pieces it cuts (v1 layouts only, at file boundaries), and
the v2 hashes for its pieces. ``ReleaseHasher`` gathers chunk results and the whole-file digests (which need
the bytes in order and are fed separately) and turns them into piece hashes, merkle roots and etags.

``PieceStream`` is the in-order alternative for the v1 pieces of a layout with no pads (a classic torrent),
fed the same bytes as another layout's chunks: its pieces span files, so they cannot be cut from those chunks.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from swarmhub.bt.layout import Chunk, PlannedFile, TorrentPlan
from swarmhub.bt.merkle import (
    BLOCK_SIZE,
    file_root_from_leaves,
    file_root_from_piece_layer,
    leaf_hashes,
    piece_roots,
)
from swarmhub.errors import IntegrityError
from swarmhub.hub.repo import etag_hasher

__all__ = ["ChunkDigest", "FileDigests", "PieceStream", "PieceStreams", "ReleaseHasher", "V2File", "hash_chunk"]


@dataclass
class ChunkDigest:
    chunk: Chunk
    v1_pieces: list[tuple[int, bytes]] = field(default_factory=list)
    v1_fragments: list[tuple[int, int, bytes]] = field(default_factory=list)  # (piece, offset in piece, data)
    v2_hashes: list[bytes] = field(default_factory=list)  # piece roots, or leaves for a file <= one piece


def hash_chunk(plan: TorrentPlan, chunk: Chunk, data: bytes | memoryview) -> ChunkDigest:
    if len(data) != chunk.length:
        raise ValueError(f"chunk of {chunk.file.path} has {len(data)} bytes, expected {chunk.length}")
    digest = ChunkDigest(chunk)
    view = memoryview(data)
    if plan.has_v1:
        _v1(plan, chunk, view, digest)
    if plan.has_v2:
        leaves = leaf_hashes(view)
        if chunk.file.size > plan.piece_size:
            digest.v2_hashes = piece_roots(leaves, plan.piece_size // BLOCK_SIZE)
        else:
            digest.v2_hashes = leaves
    return digest


def _v1(plan: TorrentPlan, chunk: Chunk, view: memoryview, digest: ChunkDigest) -> None:
    start = chunk.stream_offset
    end = start + chunk.length
    # The hybrid pad after a file is zeros that belong to the file's last piece: hash them in place.
    padded_end = end + (chunk.file.pad_after if chunk.is_last else 0)
    piece_size = plan.piece_size
    for piece in range(start // piece_size, (padded_end - 1) // piece_size + 1):
        p_start = piece * piece_size
        p_end = p_start + plan.piece_length(piece)
        lo, hi = max(start, p_start), min(end, p_end)
        if p_start >= start and p_end <= padded_end:
            h = hashlib.sha1(view[lo - start : hi - start])
            if p_end > hi:
                h.update(bytes(p_end - hi))
            digest.v1_pieces.append((piece, h.digest()))
        else:
            digest.v1_fragments.append((piece, lo - p_start, bytes(view[lo - start : hi - start])))


@dataclass(frozen=True)
class V2File:
    root: bytes | None  # None for an empty file
    layer: bytes  # concatenated piece roots; empty for files no larger than one piece


@dataclass(frozen=True)
class FileDigests:
    etags: tuple[str, ...]
    v1_pieces: bytes
    v2: tuple[V2File, ...]


class _WholeFile:
    """The digest a file's etag is made of: SHA-256 for LFS files, git blob SHA-1 for the rest."""

    def __init__(self, file: PlannedFile, lfs: bool) -> None:
        self.hash = etag_hasher(file.size, lfs)
        self.fed = 0


class ReleaseHasher:
    """Collects everything hashed for one torrent. Thread-safe where chunk workers call it."""

    def __init__(self, plan: TorrentPlan, lfs: Sequence[bool], expected_etags: Sequence[str | None]) -> None:
        if not len(lfs) == len(expected_etags) == len(plan.files):
            raise ValueError("one lfs flag and one expected etag per file")
        self.plan = plan
        self.expected = list(expected_etags)
        self._whole = [_WholeFile(f, is_lfs) for f, is_lfs in zip(plan.files, lfs, strict=True)]
        self._etags: list[str | None] = [None] * len(plan.files)
        self._v1: list[bytes | None] = [None] * (plan.num_pieces if plan.has_v1 else 0)
        self._v2: list[dict[int, list[bytes]]] = [{} for _ in plan.files]
        self._fragments: dict[int, list[tuple[int, bytes]]] = {}
        self._lock = threading.Lock()
        for file in plan.files:
            if file.size == 0:
                self._finish_file(file)

    def feed_whole(self, file: PlannedFile, data: bytes | memoryview) -> None:
        """Feed a file's bytes in order (one caller per file at a time)."""
        whole = self._whole[file.index]
        whole.hash.update(data)
        whole.fed += len(data)
        if whole.fed == file.size:
            self._finish_file(file)

    def _finish_file(self, file: PlannedFile) -> None:
        etag = self._whole[file.index].hash.hexdigest()
        expected = self.expected[file.index]
        if expected is not None and etag != expected:
            kind = "SHA-256" if len(expected) == 64 else "git blob SHA-1"
            raise IntegrityError(
                f"{file.path}: the bytes have {kind} {etag}, expected {expected}",
                path=file.path,
                expected=expected,
                actual=etag,
            )
        self._etags[file.index] = etag

    def add_chunk(self, digest: ChunkDigest) -> list[tuple[int, bytes]]:
        """Record a chunk's hashes; return v1 pieces whose fragments are now complete (to be hashed)."""
        chunk = digest.chunk
        completed: list[tuple[int, bytes]] = []
        with self._lock:
            for piece, sha1 in digest.v1_pieces:
                self._v1[piece] = sha1
            if digest.v2_hashes:
                self._v2[chunk.file.index][chunk.file_offset] = digest.v2_hashes
            for piece, offset, data in digest.v1_fragments:
                parts = self._fragments.setdefault(piece, [])
                parts.append((offset, data))
                if sum(len(d) for _, d in parts) == self.plan.piece_length(piece):
                    del self._fragments[piece]
                    completed.append((piece, b"".join(d for _, d in sorted(parts))))
        return completed

    def set_v1_piece(self, piece: int, sha1: bytes) -> None:
        with self._lock:
            self._v1[piece] = sha1

    def result(self) -> FileDigests:
        missing = [f.path for f in self.plan.files if self._etags[f.index] is None]
        if missing or self._fragments or any(h is None for h in self._v1):
            raise RuntimeError(f"hashing incomplete (files not done: {missing[:3]})")
        v2: list[V2File] = []
        leaves_per_piece = self.plan.piece_size // BLOCK_SIZE
        for file in self.plan.files:
            hashes = [h for _, part in sorted(self._v2[file.index].items()) for h in part]
            if file.size == 0 or not self.plan.has_v2:
                v2.append(V2File(None, b""))
            elif file.size > self.plan.piece_size:
                v2.append(V2File(file_root_from_piece_layer(hashes, leaves_per_piece), b"".join(hashes)))
            else:
                v2.append(V2File(file_root_from_leaves(hashes), b""))
        return FileDigests(
            etags=tuple(e for e in self._etags if e is not None),
            v1_pieces=b"".join(h for h in self._v1 if h is not None),
            v2=tuple(v2),
        )


class PieceStream:
    """The v1 piece hashes of a v1 plan, from its files' bytes fed in torrent order across files.

    One caller at a time, in order (the pipeline chains the calls). Each piece's SHA-1 is updated in place, so
    nothing is copied or kept but the digests.
    """

    def __init__(self, plan: TorrentPlan) -> None:
        if plan.format != "v1":
            raise ValueError("a piece stream has no pads: it hashes v1 plans only")
        self.plan = plan
        self._digests = bytearray()
        self._piece = hashlib.sha1()
        self._in_piece = 0
        self._fed = 0

    def feed(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        if self._fed + len(view) > self.plan.stream_length:
            raise ValueError(f"fed {self._fed + len(view)} bytes to a stream of {self.plan.stream_length}")
        while view:
            take = min(len(view), self.plan.piece_size - self._in_piece)
            self._piece.update(view[:take])
            self._in_piece += take
            self._fed += take
            view = view[take:]
            # only the last piece may be short
            if self._in_piece == self.plan.piece_size or self._fed == self.plan.stream_length:
                self._digests += self._piece.digest()
                self._piece = hashlib.sha1()
                self._in_piece = 0

    @property
    def left(self) -> int:
        """Bytes still to feed."""
        return self.plan.stream_length - self._fed

    def pieces(self) -> bytes:
        """The ``pieces`` string: every piece's SHA-1, in order."""
        if self._fed != self.plan.stream_length:
            raise RuntimeError(f"piece stream fed {self._fed} of {self.plan.stream_length} bytes")
        return bytes(self._digests)


class PieceStreams:
    """``PieceStream``s of consecutive v1 plans (the parts of a release) fed as one stream, in torrent order:
    bytes past one plan's end go to the next."""

    def __init__(self, plans: Sequence[TorrentPlan]) -> None:
        self.streams = [PieceStream(plan) for plan in plans]
        self._at = 0

    def feed(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            while self._at < len(self.streams) - 1 and not self.streams[self._at].left:
                self._at += 1
            stream = self.streams[self._at]
            take = min(len(view), stream.left) if self._at < len(self.streams) - 1 else len(view)
            stream.feed(view[:take])
            view = view[take:]

    def pieces(self, index: int) -> bytes:
        return self.streams[index].pieces()
