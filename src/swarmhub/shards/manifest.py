"""A shard set's manifest and each shard's torrent, without I/O.

A model split for distributed inference is a set of files (GGUF splits ``model-00002-of-00004.gguf``, or
safetensors shards). Every node must know what shard 2 *is* before anyone has it, so the set travels as a
manifest (JSON)::

    {"format": "swarmhub-shards/1", "name": "SmolLM2-135M-Instruct.Q4_1",
     "shards": {"1": {"filename": "...-00001-of-00004.gguf", "size": 30100000, "sha256": "<64 hex>",
                      "info_hash": "<40 hex>", "piece_size": 1048576, "torrent": "<base64 .torrent>"}, ...}}

Each shard is its own torrent: BitTorrent v1, single file, named after the file, no tracker inside (trackers
are the node's business), so the info-hash depends only on the bytes and the piece size. v1 because every
client reads it and a single file needs no pads; the whole-file SHA-256 is the shard's identity the manifest
vouches for, checked after the pieces (BEP 3 SHA-1) passed.

A set is known by its name (``shard_set_name``): a coordinator keeps manifests under it, so a node can start
with only ``--shard-set NAME``.

Shard ids are strings ("2"); a request may say ``2``. A node's files that no manifest lists are shards too:
their id is their file name.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from swarmhub.bt.bencode import encode
from swarmhub.bt.metainfo import Torrent, parse_torrent
from swarmhub.errors import MetainfoError, ShardError

__all__ = [
    "FORMAT",
    "SHARD_SUFFIXES",
    "Manifest",
    "ShardEntry",
    "is_shard_name",
    "normalize_shard_id",
    "parse_split_name",
    "shard_entry",
    "shard_piece_size",
    "shard_set_name",
    "shard_torrent",
    "split_name",
]

FORMAT = "swarmhub-shards/1"
SHARD_SUFFIXES = (".gguf", ".safetensors")
# llama.cpp's gguf-split names (gguf-py's SHARD_NAME_FORMAT): <stem>-00002-of-00004.gguf
_SPLIT_NAME = re.compile(r"^(?P<stem>.+)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_HEX40 = re.compile(r"^[0-9a-f]{40}$")
_MIN_PIECE, _MAX_PIECE = 1 << 20, 16 << 20


def is_shard_name(name: str) -> bool:
    """A file a node seeds: ``.gguf`` / ``.safetensors``, a plain name, not hidden (part files are)."""
    return (
        name.endswith(SHARD_SUFFIXES)
        and "/" not in name
        and "\\" not in name
        and not name.startswith(".")
        and name not in SHARD_SUFFIXES
    )


def split_name(stem: str, number: int, count: int) -> str:
    """The k-th of n GGUF split file names (1-based), as llama.cpp's gguf-split writes them."""
    return f"{stem}-{number:05d}-of-{count:05d}.gguf"


def parse_split_name(name: str) -> tuple[str, int, int] | None:
    """``(stem, number, count)`` of a GGUF split file name (1-based number), None for any other name."""
    match = _SPLIT_NAME.match(name)
    if match is None:
        return None
    return match["stem"], int(match["no"]), int(match["count"])


def normalize_shard_id(value: object) -> str:
    """A shard id from a request (``2`` or ``"2"``) as the manifest keys it."""
    if isinstance(value, bool) or not isinstance(value, int | str) or str(value) == "":
        raise ShardError(f"shard_id must be a string or an integer, not {value!r}")
    text = str(value)
    if len(text) > 255 or any(c in text for c in "/\\\0"):
        raise ShardError(f"shard_id {text[:40]!r} is not a shard id", shard_id=text[:40])
    return text


def shard_piece_size(size: int) -> int:
    """About 128 pieces a shard, between 1 and 16 MiB: big pieces keep libtorrent fast on a LAN (4 MiB pieces
    measured 228-237 MB/s on loopback, 256 KiB far less), and a shard of a few MB still has several pieces."""
    piece = _MIN_PIECE
    while piece < _MAX_PIECE and size > piece * 128:
        piece *= 2
    return piece


def shard_torrent(filename: str, size: int, piece_size: int, pieces: bytes) -> bytes:
    """A single-file v1 torrent (BEP 3): deterministic, no creation date, no tracker."""
    if not is_shard_name(filename):
        raise ShardError(f"{filename!r} is not a shard file name (.gguf or .safetensors, not hidden)")
    if size <= 0:
        raise ShardError(f"{filename} is empty: there is nothing to share")
    if len(pieces) != 20 * -(-size // piece_size):
        raise ShardError(f"{filename}: {len(pieces) // 20} piece hashes for {-(-size // piece_size)} pieces")
    info = {"length": size, "name": filename, "piece length": piece_size, "pieces": pieces}
    return encode({"info": info})


@dataclass(frozen=True)
class ShardEntry:
    shard_id: str
    filename: str
    size: int
    sha256: str  # hex of the whole file
    info_hash: str  # v1, hex: the engine's key for the shard's torrent
    piece_size: int
    torrent: bytes = field(repr=False)

    @property
    def num_pieces(self) -> int:
        return -(-self.size // self.piece_size)

    def to_json(self) -> dict[str, Any]:
        return {
            "filename": self.filename,
            "size": self.size,
            "sha256": self.sha256,
            "info_hash": self.info_hash,
            "piece_size": self.piece_size,
            "torrent": base64.b64encode(self.torrent).decode("ascii"),
        }

    @classmethod
    def from_json(cls, shard_id: str, raw: object) -> ShardEntry:
        if not isinstance(raw, Mapping):
            raise ShardError(f"manifest: shard {shard_id!r} is not an object", shard_id=shard_id)
        try:
            torrent = base64.b64decode(str(raw["torrent"]), validate=True)
            entry = cls(
                shard_id=normalize_shard_id(shard_id),
                filename=str(raw["filename"]),
                size=int(raw["size"]),
                sha256=str(raw["sha256"]).lower(),
                info_hash=str(raw["info_hash"]).lower(),
                piece_size=int(raw["piece_size"]),
                torrent=torrent,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ShardError(f"manifest: shard {shard_id!r} is missing or has a bad {exc}", shard_id=shard_id) from exc
        entry.check()
        return entry

    def check(self) -> Torrent:
        """The entry is consistent: safe name, hashes well-formed, the torrent is this file's. Returns it."""
        where = f"manifest: shard {self.shard_id}"
        if not is_shard_name(self.filename):
            raise ShardError(f"{where}: {self.filename!r} is not a shard file name", shard_id=self.shard_id)
        if not _HEX64.match(self.sha256) or not _HEX40.match(self.info_hash) or self.size <= 0:
            raise ShardError(f"{where}: bad sha256, info_hash or size", shard_id=self.shard_id)
        try:
            torrent = parse_torrent(self.torrent)
        except MetainfoError as exc:
            raise ShardError(f"{where}: {exc}", shard_id=self.shard_id) from exc
        if (
            torrent.info_hash_v1 != self.info_hash
            or torrent.info_hash_v2 is not None
            or torrent.name != self.filename
            or [(f.path, f.size) for f in torrent.files] != [(self.filename, self.size)]
            or torrent.piece_size != self.piece_size
        ):
            raise ShardError(
                f"{where}: its torrent is not a single-file v1 torrent of {self.filename} "
                f"({self.size} bytes) with info-hash {self.info_hash}",
                shard_id=self.shard_id,
            )
        return torrent


def shard_entry(shard_id: str, filename: str, size: int, sha256: str, piece_size: int, pieces: bytes) -> ShardEntry:
    """The entry (and torrent) of a file whose SHA-256 and v1 piece hashes were just computed."""
    torrent = shard_torrent(filename, size, piece_size, pieces)
    info_hash = parse_torrent(torrent).info_hash_v1 or ""
    return ShardEntry(normalize_shard_id(shard_id), filename, size, sha256, info_hash, piece_size, torrent)


@dataclass(frozen=True)
class Manifest:
    """A shard set: its name and shards, in order."""

    name: str
    shards: tuple[ShardEntry, ...]

    def __post_init__(self) -> None:
        ids = [s.shard_id for s in self.shards]
        names = [s.filename for s in self.shards]
        if len(set(ids)) != len(ids) or len(set(names)) != len(names):
            raise ShardError(f"manifest {self.name!r}: a shard id or file name is listed twice")

    def get(self, shard_id: str) -> ShardEntry | None:
        return next((s for s in self.shards if s.shard_id == shard_id), None)

    def by_filename(self, filename: str) -> ShardEntry | None:
        return next((s for s in self.shards if s.filename == filename), None)

    def to_json(self) -> bytes:
        body = {"format": FORMAT, "name": self.name, "shards": {s.shard_id: s.to_json() for s in self.shards}}
        return (json.dumps(body, indent=2) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes | str) -> Manifest:
        try:
            raw = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ShardError(f"manifest is not JSON: {exc}") from exc
        if not isinstance(raw, dict) or raw.get("format") != FORMAT or not isinstance(raw.get("shards"), dict):
            raise ShardError(f"not a shard manifest (expected format {FORMAT!r} and a 'shards' object)")
        shards = tuple(ShardEntry.from_json(str(k), v) for k, v in raw["shards"].items())
        return cls(str(raw.get("name", "")), shards)

    def with_shards(self, extra: Iterable[ShardEntry]) -> Manifest:
        """This manifest plus ``extra`` entries whose id and file name it does not list yet."""
        out = list(self.shards)
        for entry in extra:
            if self.get(entry.shard_id) is None and self.by_filename(entry.filename) is None:
                out.append(entry)
        return Manifest(self.name, tuple(out))


def shard_set_name(manifest: Manifest) -> str:
    """The set's name: the manifest's ``name``, else its first file's (``model-00001-of-00004.gguf``: ``model``).

    A coordinator keeps manifests at ``/shards/manifests/NAME``: the name is one path segment.
    """
    name = manifest.name
    if not name and manifest.shards:
        filename = manifest.shards[0].filename
        parsed = parse_split_name(filename)
        name = parsed[0] if parsed else filename.rsplit(".", 1)[0]
    if not name:
        raise ShardError("the manifest has no name and no shard to name it after")
    if len(name) > 255 or "/" in name or "\\" in name or name in (".", "..") or not name.isprintable():
        raise ShardError(f"shard set name {name[:40]!r} is not one URL path segment")
    return name
