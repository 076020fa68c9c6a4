"""Loading a shard: memory-map the file and parse its header, metadata and tensor table; the shard cache.

GGUF goes through ``gguf.GGUFReader`` (it memory-maps the file and indexes every tensor); safetensors is an
8-byte little-endian header length, a JSON header (``{name: {dtype, shape, data_offsets}}``, optional
``__metadata__``), then the tensor bytes, memory-mapped with numpy. Nothing is read into memory until a task
touches a tensor, and then only the rows it asks for (``ShardTensor.rows``), dequantized with gguf's quant
code.

Shapes are row-major (numpy's order: ``(rows, cols)``), for GGUF the reverse of ggml's ``ne``.
"""

from __future__ import annotations

import json
import math
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType, ReaderField
from gguf.quants import dequantize

from swarmhub.errors import ShardError

__all__ = [
    "LoadedShard",
    "ShardCache",
    "ShardTensor",
    "load_shard_file",
    "parse_safetensors_header",
]

MAX_SAFETENSORS_HEADER = 100 << 20  # the reference implementation's limit
_SMALL_ARRAY = 16  # metadata arrays up to this long are shown whole; longer ones as type and length

Rows = Callable[[int, int], npt.NDArray[np.float32]]


@dataclass(frozen=True)
class ShardTensor:
    name: str
    shape: tuple[int, ...]  # row-major
    dtype: str  # ggml type name ("Q4_1", "F32") or safetensors dtype ("BF16")
    n_bytes: int
    rows_of: Rows = field(repr=False)  # dequantized rows [start, stop) of the (n_rows, cols) view, float32

    @property
    def cols(self) -> int:
        return self.shape[-1] if self.shape else 1

    @property
    def n_rows(self) -> int:
        return math.prod(self.shape[:-1]) if self.shape else 1

    def rows(self, start: int, stop: int) -> npt.NDArray[np.float32]:
        if not 0 <= start <= stop <= self.n_rows:
            raise ShardError(f"rows {start}:{stop} are outside {self.name} ({self.n_rows} rows)")
        return self.rows_of(start, stop)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "type": self.dtype, "n_bytes": self.n_bytes}


@dataclass
class LoadedShard:
    shard_id: str
    path: Path
    format: str  # "gguf" | "safetensors"
    size: int
    metadata: dict[str, Any]
    tensors: dict[str, ShardTensor]
    seconds: float  # how long parsing took
    mapping: Any = field(repr=False)  # keeps the memory map alive
    timings: dict[str, float] = field(default_factory=dict)  # how it was loaded: fetch, verify, parse seconds

    def tensor(self, name: object) -> ShardTensor:
        if not isinstance(name, str) or name not in self.tensors:
            sample = ", ".join(list(self.tensors)[:5])
            raise ShardError(
                f"shard {self.shard_id} has no tensor {name!r} (it has {len(self.tensors)}: {sample}, …)",
                shard_id=self.shard_id,
            )
        return self.tensors[name]

    def describe(self) -> dict[str, Any]:
        return {
            "shard_id": self.shard_id,
            "path": str(self.path),
            "format": self.format,
            "size": self.size,
            "tensors": len(self.tensors),
            "parse_seconds": round(self.seconds, 3),
        }


# ------------------------------------------------------------------------------------------------------ GGUF


def _gguf_value(f: ReaderField) -> Any:
    if f.types and f.types[0] == GGUFValueType.ARRAY and len(f.data) > _SMALL_ARRAY:
        return {"array_of": f.types[-1].name if len(f.types) > 1 else "?", "length": len(f.data)}
    value = f.contents()
    return value.tolist() if isinstance(value, np.ndarray) else value


def _gguf_rows(raw: npt.NDArray[Any], qtype: GGMLQuantizationType) -> Rows:
    flat = raw.reshape(-1, raw.shape[-1])  # one row per output row; quantized: a row's blocks as bytes

    def rows(start: int, stop: int) -> npt.NDArray[np.float32]:
        try:
            return np.asarray(dequantize(flat[start:stop], qtype), dtype=np.float32)
        except NotImplementedError as exc:
            raise ShardError(f"gguf cannot dequantize {qtype.name} tensors: {exc}") from exc

    return rows


def _load_gguf(path: Path) -> tuple[dict[str, Any], dict[str, ShardTensor], Any]:
    try:
        reader = GGUFReader(path)
    except (OSError, ValueError, KeyError, IndexError, NotImplementedError) as exc:
        raise ShardError(f"{path.name} is not a GGUF file gguf can read: {exc}") from exc
    metadata = {name: _gguf_value(f) for name, f in reader.fields.items() if not name.startswith("GGUF.")}
    tensors = {}
    for t in reader.tensors:
        shape = tuple(int(n) for n in reversed(t.shape.tolist()))
        tensors[t.name] = ShardTensor(
            t.name, shape, t.tensor_type.name, int(t.n_bytes), _gguf_rows(t.data, t.tensor_type)
        )
    return metadata, tensors, reader


# ----------------------------------------------------------------------------------------------- safetensors

_ST_DTYPES: dict[str, npt.DTypeLike] = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "BF16": np.uint16,  # bfloat16: the high half of a float32
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U8": np.uint8,
    "BOOL": np.bool_,
}


def parse_safetensors_header(prefix: bytes, file_size: int) -> tuple[int, dict[str, Any]]:
    """(data start, header) from a file's first bytes (at least 8 + header length); checked against its size."""
    if len(prefix) < 8:
        raise ShardError("not a safetensors file: shorter than its 8-byte header length")
    (length,) = struct.unpack("<Q", prefix[:8])
    if length > MAX_SAFETENSORS_HEADER or 8 + length > file_size:
        raise ShardError(f"not a safetensors file: header length {length} for a file of {file_size} bytes")
    if len(prefix) < 8 + length:
        raise ShardError("safetensors header cut short")
    try:
        header = json.loads(prefix[8 : 8 + length])
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ShardError(f"safetensors header is not JSON: {exc}") from exc
    if not isinstance(header, dict):
        raise ShardError("safetensors header is not a JSON object")
    data_size = file_size - 8 - length
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = np.dtype(_ST_DTYPES[info["dtype"]])
            shape = [int(n) for n in info["shape"]]
            begin, end = (int(n) for n in info["data_offsets"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ShardError(f"safetensors tensor {name!r}: bad or unsupported entry ({exc})") from exc
        if not 0 <= begin <= end <= data_size or end - begin != math.prod(shape) * dtype.itemsize:
            raise ShardError(f"safetensors tensor {name!r}: data_offsets {begin}:{end} do not fit its shape")
    return 8 + length, header


def _st_rows(view: npt.NDArray[Any], dtype: str) -> Rows:
    def rows(start: int, stop: int) -> npt.NDArray[np.float32]:
        part = view[start:stop]
        if dtype == "BF16":
            return (part.astype(np.uint32) << 16).view(np.float32)
        return part.astype(np.float32)

    return rows


def _load_safetensors(path: Path) -> tuple[dict[str, Any], dict[str, ShardTensor], Any]:
    try:
        with path.open("rb") as f:
            size = path.stat().st_size
            head = f.read(8)
            length = struct.unpack("<Q", head)[0] if len(head) == 8 else 0
            start, header = parse_safetensors_header(head + f.read(min(length, MAX_SAFETENSORS_HEADER)), size)
        mapping = np.memmap(path, dtype=np.uint8, mode="r") if size > start else np.zeros(0, np.uint8)
    except OSError as exc:
        raise ShardError(f"cannot read {path}: {exc.strerror or exc}") from exc
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = (int(n) for n in info["data_offsets"])
        shape = tuple(int(n) for n in info["shape"])
        cols = shape[-1] if shape else 1
        typed = mapping[start + begin : start + end].view(_ST_DTYPES[info["dtype"]])
        tensors[name] = ShardTensor(
            name, shape, info["dtype"], end - begin, _st_rows(typed.reshape(-1, cols) if cols else typed, info["dtype"])
        )
    metadata = header.get("__metadata__") or {}
    return (dict(metadata) if isinstance(metadata, dict) else {}), tensors, mapping


def load_shard_file(shard_id: str, path: Path) -> LoadedShard:
    """Memory-map and parse a GGUF or safetensors file (by its suffix)."""
    started = time.perf_counter()
    if path.suffix == ".gguf":
        kind = "gguf"
        metadata, tensors, mapping = _load_gguf(path)
    elif path.suffix == ".safetensors":
        kind = "safetensors"
        metadata, tensors, mapping = _load_safetensors(path)
    else:
        raise ShardError(f"{path.name}: a shard is a .gguf or .safetensors file", shard_id=shard_id)
    return LoadedShard(
        shard_id, path, kind, path.stat().st_size, metadata, tensors, time.perf_counter() - started, mapping
    )


class ShardCache:
    """Loaded shards by id (thread-safe)."""

    def __init__(self) -> None:
        self._shards: dict[str, LoadedShard] = {}
        self._lock = threading.Lock()

    def get(self, shard_id: str) -> LoadedShard | None:
        with self._lock:
            return self._shards.get(shard_id)

    def put(self, shard: LoadedShard) -> None:
        with self._lock:
            self._shards[shard.shard_id] = shard

    def drop(self, shard_id: str) -> LoadedShard | None:
        with self._lock:
            return self._shards.pop(shard_id, None)

    def ids(self) -> list[str]:
        with self._lock:
            return list(self._shards)
