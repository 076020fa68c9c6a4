"""A node's shards folder: the shard files it holds, their hashes, and what it may serve.

Hashing a shard (SHA-256 of the file and the SHA-1 of each piece, in one read) is the only expensive step, so
its result is kept in ``<dir>/.swarmhub-shards.json`` with the file's size and mtime: a restart trusts a file
whose size and mtime did not change and hashes nothing again. A file the manifest lists is served under the
manifest's shard id only if its SHA-256 is the manifest's; a file no manifest lists is its own shard, named
by its file name. Downloads land as ``.<name>.swarmhub-part`` (hidden, never served) until verified.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from swarmhub.bt.layout import plan_torrent
from swarmhub.bt.metainfo import parse_torrent
from swarmhub.create.hashing import PieceStream
from swarmhub.errors import ShardError
from swarmhub.shards.manifest import Manifest, ShardEntry, is_shard_name, shard_entry, shard_piece_size

__all__ = ["RECORD", "LocalShard", "ShardStore", "hash_file"]

RECORD = ".swarmhub-shards.json"
PART_SUFFIX = ".swarmhub-part"
_CHUNK = 8 << 20

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LocalShard:
    entry: ShardEntry
    path: Path


def hash_file(path: Path, piece_size: int) -> tuple[int, str, bytes]:
    """(size, SHA-256 hex, v1 piece hashes) of a file, read once."""
    try:
        with path.open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                raise ShardError(f"{path.name} is empty: there is nothing to share")
            stream = PieceStream(plan_torrent([(path.name, size)], piece_size, "v1"))
            whole = hashlib.sha256()
            buffer = bytearray(_CHUNK)
            view = memoryview(buffer)
            read = 0
            while (n := f.readinto(buffer)) > 0:
                whole.update(view[:n])
                stream.feed(view[:n])
                read += n
    except OSError as exc:
        raise ShardError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if read != size:
        raise ShardError(f"{path} changed while it was hashed ({read} of {size} bytes)")
    return size, whole.hexdigest(), stream.pieces()


class ShardStore:
    """The shard files under ``root`` and their hashes. Thread-safe (hashing runs in worker threads)."""

    def __init__(self, root: Path, manifest: Manifest | None = None) -> None:
        self.root = root
        self.manifest = manifest or Manifest("", ())
        self._lock = threading.Lock()
        self._record_path = root / RECORD
        self._record: dict[str, dict[str, Any]] = self._read_record()
        self._local: dict[str, LocalShard] = {}  # by shard id: verified files this node can serve
        self.problems: list[str] = []  # files found but not served, and why

    # ---------------------------------------------------------------------------------------------- record

    def _read_record(self) -> dict[str, dict[str, Any]]:
        try:
            raw = json.loads(self._record_path.read_bytes())
        except (OSError, ValueError):
            return {}
        files = raw.get("files") if isinstance(raw, dict) else None
        return {str(k): v for k, v in files.items() if isinstance(v, dict)} if isinstance(files, dict) else {}

    def _write_record(self) -> None:
        data = json.dumps({"files": self._record}, indent=1, sort_keys=True).encode()
        try:
            fd, tmp = tempfile.mkstemp(prefix=f"{RECORD}.", suffix=".tmp", dir=self.root)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, self._record_path)
        except OSError as exc:  # only costs a re-hash at the next start
            log.warning("cannot write %s: %s", self._record_path, exc)

    def _remember(self, path: Path, entry: ShardEntry) -> None:
        st = path.stat()
        with self._lock:
            self._record[path.name] = {
                "size": st.st_size,
                "mtime_ns": st.st_mtime_ns,
                "sha256": entry.sha256,
                "piece_size": entry.piece_size,
                "torrent": base64.b64encode(entry.torrent).decode("ascii"),
            }
            self._write_record()

    def _recorded(self, path: Path, piece_size: int | None) -> ShardEntry | None:
        """The entry hashed earlier for this very file (same size and mtime, and piece size if one is asked)."""
        with self._lock:
            rec = self._record.get(path.name)
        if rec is None:
            return None
        try:
            st = path.stat()
            if (st.st_size, st.st_mtime_ns) != (rec["size"], rec["mtime_ns"]):
                return None
            if piece_size is not None and rec["piece_size"] != piece_size:
                return None
            entry = ShardEntry.from_json(
                path.name,
                {**rec, "filename": path.name, "info_hash": _info_hash(base64.b64decode(rec["torrent"]))},
            )
        except (OSError, KeyError, ValueError, ShardError):
            return None
        return entry if entry.sha256 == rec["sha256"] else None

    # ------------------------------------------------------------------------------------------------ files

    def path_of(self, entry: ShardEntry) -> Path:
        return self.root / entry.filename

    def part_name(self, entry: ShardEntry) -> str:
        return f".{entry.filename}{PART_SUFFIX}"

    def hashed(self, path: Path, piece_size: int | None = None) -> ShardEntry:
        """The file's entry (id = file name): from the record when the file did not change, else hashed now."""
        entry = self._recorded(path, piece_size)
        if entry is None:
            piece_size = piece_size or shard_piece_size(path.stat().st_size)
            size, sha256, pieces = hash_file(path, piece_size)
            entry = shard_entry(path.name, path.name, size, sha256, piece_size, pieces)
            self._remember(path, entry)
        return entry

    def scan(self) -> list[LocalShard]:
        """Every shard file in the folder, hashed (or trusted from the record), as the shard it is."""
        self.root.mkdir(parents=True, exist_ok=True)
        found = []
        for path in sorted(p for p in self.root.iterdir() if is_shard_name(p.name) and p.is_file()):
            listed = self.manifest.by_filename(path.name)
            try:
                own = self.hashed(path, listed.piece_size if listed else None)
            except (OSError, ShardError) as exc:
                self.problems.append(f"{path.name}: {exc}")
                continue
            if listed is not None and (own.sha256, own.info_hash) != (listed.sha256, listed.info_hash):
                self.problems.append(
                    f"{path.name}: not served: its SHA-256 is {own.sha256[:16]}…, the manifest's shard "
                    f"{listed.shard_id} is {listed.sha256[:16]}…"
                )
                continue
            found.append(self.add_local(listed or own, path))
        return found

    def add_local(self, entry: ShardEntry, path: Path) -> LocalShard:
        local = LocalShard(entry, path)
        with self._lock:
            self._local[entry.shard_id] = local
        return local

    def local(self) -> list[LocalShard]:
        with self._lock:
            return list(self._local.values())

    def local_shard(self, shard_id: str) -> LocalShard | None:
        with self._lock:
            return self._local.get(shard_id)

    def known(self, shard_id: str) -> ShardEntry | None:
        """What ``shard_id`` is: the manifest's entry, or a local file's."""
        local = self.local_shard(shard_id)
        return self.manifest.get(shard_id) or (local.entry if local else None)

    def verify(self, entry: ShardEntry, path: Path) -> None:
        """``path`` holds exactly the entry's bytes (SHA-256), from the record when the file did not change."""
        try:
            own = self.hashed(path, entry.piece_size)
        except OSError as exc:
            raise ShardError(f"shard {entry.shard_id}: cannot read {path}: {exc.strerror or exc}") from exc
        if own.sha256 != entry.sha256:
            raise ShardError(
                f"shard {entry.shard_id}: {path} has SHA-256 {own.sha256}, the manifest says {entry.sha256}",
                shard_id=entry.shard_id,
                hint="remove the file and load the shard again to fetch it from peers",
            )

    def remember_download(self, entry: ShardEntry, path: Path) -> LocalShard:
        """A file fetched and verified (pieces and SHA-256): recorded, so a restart does not hash it again."""
        self._remember(path, entry)
        return self.add_local(entry, path)


def _info_hash(torrent: bytes) -> str:
    return parse_torrent(torrent).info_hash_v1 or ""
