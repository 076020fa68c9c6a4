"""Split a GGUF model into N loadable shards (llama.cpp's gguf-split format) and write their manifest.

The output is what ``llama-gguf-split --split`` makes: ``<stem>-0000k-of-0000n.gguf``, each a complete GGUF file
holding whole tensors, contiguous in the original order. Shard 1 carries every metadata key of the original;
the others carry only the split keys (and ``general.alignment`` when the original sets it). Every shard gets
``split.no`` (0-based, UINT16), ``split.count`` (UINT16) and ``split.tensors.count`` (INT32), which llama.cpp
reads to load the set as one model.

The original is parsed once with ``gguf.GGUFReader`` (memory-mapped); metadata and tensor-info records are
copied byte for byte from it (only each tensor's data offset changes), tensor data is copied in big slices.
Each shard's SHA-256 and v1 piece hashes are computed while it is written, so making the manifest reads
nothing twice.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from gguf import GGUF_MAGIC, GGUFEndian, GGUFReader, GGUFValueType, Keys, ReaderField

from swarmhub.bt.layout import plan_torrent
from swarmhub.create.hashing import PieceStream
from swarmhub.errors import ShardError
from swarmhub.shards.manifest import Manifest, ShardEntry, shard_entry, shard_piece_size, split_name

__all__ = ["MANIFEST_NAME", "SplitResult", "plan_split", "split_gguf"]

MANIFEST_NAME = "shards.json"
_COPY = 16 << 20


def plan_split(sizes: Sequence[int], count: int) -> list[range]:
    """Cut tensors (their byte sizes, in file order) into ``count`` contiguous runs of about equal bytes.

    Every run has at least one tensor. A cut falls after a tensor when its middle lies before the target.
    """
    if not 1 <= count <= len(sizes):
        raise ShardError(f"cannot split {len(sizes)} tensors into {count} shards (1 to {len(sizes)})")
    total = sum(sizes)
    runs: list[range] = []
    start, done = 0, 0
    for k in range(1, count):
        target = total * k / count
        end = start + 1
        done += sizes[start]
        # leave at least one tensor for each shard still to come
        while end < len(sizes) - (count - k) and done + sizes[end] / 2 <= target:
            done += sizes[end]
            end += 1
        runs.append(range(start, end))
        start = end
    runs.append(range(start, len(sizes)))
    return runs


class _HashingWriter:
    """Writes a file while computing its SHA-256 and v1 piece hashes (the manifest's), with a known size."""

    def __init__(self, f: BinaryIO, size: int, piece_size: int, name: str) -> None:
        self.f = f
        self.sha256 = hashlib.sha256()
        self.pieces = PieceStream(plan_torrent([(name, size)], piece_size, "v1"))
        self.written = 0

    def write(self, data: bytes | memoryview) -> None:
        self.f.write(data)
        self.sha256.update(data)
        self.pieces.feed(data)
        self.written += len(data)


def _field_bytes(reader: GGUFReader, field: ReaderField, drop_last: bool = False) -> bytes:
    """A metadata or tensor-info record exactly as it is in the file (without its last part if asked)."""
    parts = field.parts[:-1] if drop_last else field.parts
    length = sum(int(p.nbytes) for p in parts)
    return bytes(reader.data[field.offset : field.offset + length])


def _string(text: str) -> bytes:
    raw = text.encode("utf-8")
    return struct.pack("<Q", len(raw)) + raw


def _kv(key: str, vtype: GGUFValueType, fmt: str, value: int) -> bytes:
    return _string(key) + struct.pack("<I", int(vtype)) + struct.pack("<" + fmt, value)


def _pad(n: int, alignment: int) -> int:
    return -n % alignment


@dataclass(frozen=True)
class _ShardPlan:
    number: int  # 1-based
    filename: str
    header: bytes  # everything before the tensor data, padding included
    tensors: tuple[tuple[int, int], ...]  # (offset in the original file, bytes)
    size: int


def _plan_shards(reader: GGUFReader, runs: list[range], stem: str) -> list[_ShardPlan]:
    alignment = reader.alignment
    version = int(reader.fields["GGUF.version"].parts[0][0])
    kvs = [f for name, f in reader.fields.items() if not name.startswith("GGUF.")]
    everything = b"".join(_field_bytes(reader, f) for f in kvs)
    alignment_kv = [_field_bytes(reader, f) for f in kvs if f.name == Keys.General.ALIGNMENT]
    plans = []
    for i, run in enumerate(runs):
        split_kvs = [
            _kv(Keys.Split.LLM_KV_SPLIT_NO, GGUFValueType.UINT16, "H", i),
            _kv(Keys.Split.LLM_KV_SPLIT_COUNT, GGUFValueType.UINT16, "H", len(runs)),
            _kv(Keys.Split.LLM_KV_SPLIT_TENSORS_COUNT, GGUFValueType.INT32, "i", len(reader.tensors)),
        ]
        kv_bytes = (everything if i == 0 else b"".join(alignment_kv)) + b"".join(split_kvs)
        n_kv = (len(kvs) if i == 0 else len(alignment_kv)) + len(split_kvs)
        infos, data, offset = [], [], 0
        for t in (reader.tensors[j] for j in run):
            # the record up to its data offset is copied as is: name, dims and type do not change
            infos.append(_field_bytes(reader, t.field, drop_last=True) + struct.pack("<Q", offset))
            data.append((int(t.data_offset), int(t.n_bytes)))
            offset += int(t.n_bytes) + _pad(int(t.n_bytes), alignment)
        header = struct.pack("<IIQQ", GGUF_MAGIC, version, len(run), n_kv) + kv_bytes + b"".join(infos)
        header += bytes(_pad(len(header), alignment))
        name = split_name(stem, i + 1, len(runs))
        plans.append(_ShardPlan(i + 1, name, header, tuple(data), len(header) + offset))
    return plans


def _write_shard(reader: GGUFReader, plan: _ShardPlan, out: Path) -> ShardEntry:
    piece_size = shard_piece_size(plan.size)
    tmp = out / f".{plan.filename}.tmp"
    try:
        with tmp.open("wb") as f:
            w = _HashingWriter(f, plan.size, piece_size, plan.filename)
            w.write(plan.header)
            source: np.ndarray = reader.data
            for offset, n in plan.tensors:
                for lo in range(offset, offset + n, _COPY):
                    w.write(source[lo : min(lo + _COPY, offset + n)].tobytes())
                w.write(bytes(_pad(n, reader.alignment)))
        if w.written != plan.size:
            raise ShardError(f"{plan.filename}: wrote {w.written} bytes, planned {plan.size}")
        os.replace(tmp, out / plan.filename)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ShardError(f"cannot write {out / plan.filename}: {exc.strerror or exc}") from exc
    return shard_entry(str(plan.number), plan.filename, plan.size, w.sha256.hexdigest(), piece_size, w.pieces.pieces())


@dataclass(frozen=True)
class SplitResult:
    manifest: Manifest
    manifest_path: Path
    paths: tuple[Path, ...]
    tensors_per_shard: tuple[int, ...]


def open_gguf(path: Path) -> GGUFReader:
    """``gguf.GGUFReader`` on ``path``, its failures as ``ShardError``."""
    try:
        return GGUFReader(path)
    except (OSError, ValueError, KeyError, IndexError, NotImplementedError) as exc:
        raise ShardError(f"{path} is not a GGUF file gguf can read: {exc}") from exc


def split_gguf(model: Path, count: int, out: Path, *, reader: GGUFReader | None = None) -> SplitResult:
    """Write ``count`` GGUF split files of ``model`` into ``out``, and ``out/shards.json`` (their manifest)."""
    reader = reader or open_gguf(model)
    if reader.endianess != GGUFEndian.LITTLE:
        raise ShardError(f"{model} is a big-endian GGUF; only little-endian files are split")
    if reader.get_field(Keys.Split.LLM_KV_SPLIT_COUNT) is not None:
        raise ShardError(f"{model} is already one file of a split model (it has {Keys.Split.LLM_KV_SPLIT_COUNT})")
    runs = plan_split([int(t.n_bytes) for t in reader.tensors], count)
    stem = model.name.removesuffix(".gguf")
    out.mkdir(parents=True, exist_ok=True)
    entries = [_write_shard(reader, plan, out) for plan in _plan_shards(reader, runs, stem)]
    manifest = Manifest(stem, tuple(entries))
    manifest_path = out / MANIFEST_NAME
    manifest_path.write_bytes(manifest.to_json())
    return SplitResult(
        manifest, manifest_path, tuple(out / e.filename for e in entries), tuple(len(run) for run in runs)
    )
