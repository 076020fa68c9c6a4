"""Where a release's bytes come from when creating a torrent: a local folder, or the origin (streamed).

``local_release`` reads what a folder says about itself:
- a snapshot in the Hugging Face cache (``.../models--org--name/snapshots/<commit>/``): the commit is the
  folder's name and each file's etag is the name of the blob its symlink points at;
- a ``local_dir`` download by huggingface_hub: ``.cache/huggingface/download/<path>.metadata`` holds the
  commit and etag of each file;
- any other folder: the commit must be given (``--revision <sha>``); a file is LFS when the folder's
  ``.gitattributes`` says so or it is at least 10 MiB (the Hub stores nothing bigger outside LFS).
"""

from __future__ import annotations

import asyncio
import collections
import os
import re
import threading
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from swarmhub.errors import LocalSourceError
from swarmhub.hub.gitattributes import lfs_matcher
from swarmhub.hub.repo import COMMIT_RE, LFS_ETAG_RE, REGULAR_ETAG_RE, RepoRef, RepoType

if TYPE_CHECKING:
    from swarmhub.origin.client import OriginClient

__all__ = ["LocalRelease", "LocalSource", "OriginSource", "SourceFile", "local_release"]

LFS_THRESHOLD = 10 * 1024 * 1024
_SNAPSHOT_RE = re.compile(r"^(models|datasets|spaces)--(.+)$")


@dataclass(frozen=True)
class SourceFile:
    """A file to hash, from a folder or a listing: its size, and its etag when known beforehand."""

    path: str  # in the repo
    size: int
    lfs: bool
    etag: str | None  # from the listing, the cache or local_dir metadata; verified while hashing


@dataclass(frozen=True)
class LocalRelease:
    root: Path
    commit: str | None
    files: tuple[SourceFile, ...]
    repo_type: RepoType | None = None  # known for cache snapshots
    repo_id: str | None = None


def _walk(root: Path) -> list[str]:
    paths = []
    for folder, dirs, names in os.walk(root, followlinks=False):
        rel_folder = os.path.relpath(folder, root)
        dirs[:] = sorted(d for d in dirs if not (rel_folder == "." and d == ".git"))
        if rel_folder == ".cache" or rel_folder.startswith(".cache" + os.sep):
            dirs[:] = [d for d in dirs if d != "huggingface"]
        for name in names:
            paths.append(Path(os.path.normpath(os.path.join(rel_folder, name))).as_posix())
    return sorted(paths)


def _snapshot_identity(root: Path) -> tuple[RepoType, str, str] | None:
    resolved = root.resolve()
    if resolved.parent.name != "snapshots" or not COMMIT_RE.match(resolved.name):
        return None
    match = _SNAPSHOT_RE.match(resolved.parent.parent.name)
    if not match:
        return None
    repo_type: RepoType = {"models": "model", "datasets": "dataset", "spaces": "space"}[match.group(1)]  # type: ignore[assignment]
    return repo_type, match.group(2).replace("--", "/"), resolved.name


def _stat(root: Path, path: str) -> int:
    try:
        st = (root / path).stat()
    except OSError as exc:
        raise LocalSourceError(f"{path}: cannot read ({exc.strerror})", path=path) from exc
    if not (root / path).is_file():
        raise LocalSourceError(f"{path}: not a regular file", path=path)
    return st.st_size


def local_release(root: Path, revision: str | None) -> LocalRelease:
    if not root.is_dir():
        raise LocalSourceError(f"{root} is not a folder", hint="--from-dir takes a folder or a cache snapshot")
    snapshot = _snapshot_identity(root)
    if snapshot is not None:
        repo_type, repo_id, commit = snapshot
        files = []
        for path in _walk(root):
            blob = os.path.basename(os.readlink(root / path)) if (root / path).is_symlink() else ""
            etag = blob if REGULAR_ETAG_RE.match(blob) or LFS_ETAG_RE.match(blob) else None
            size = _stat(root, path)
            files.append(SourceFile(path, size, len(etag) == 64 if etag else size >= LFS_THRESHOLD, etag))
        return LocalRelease(root, commit, tuple(files), repo_type, repo_id)

    try:
        is_lfs = lfs_matcher((root / ".gitattributes").read_text(errors="replace"))
    except FileNotFoundError:
        is_lfs = lfs_matcher("")
    metadata_dir = root / ".cache" / "huggingface" / "download"
    commits: set[str] = set()
    files = []
    for path in _walk(root):
        size = _stat(root, path)
        etag, file_commit = _local_dir_metadata(metadata_dir, path)
        if file_commit:
            commits.add(file_commit)
        lfs = len(etag) == 64 if etag else is_lfs(path) or size >= LFS_THRESHOLD
        files.append(SourceFile(path, size, lfs, etag))
    given = revision if revision and COMMIT_RE.match(revision) else None
    found = commits.pop() if len(commits) == 1 else None
    return LocalRelease(root, given or found, tuple(files))


def _local_dir_metadata(metadata_dir: Path, path: str) -> tuple[str | None, str | None]:
    """(etag, commit) from huggingface_hub's local_dir metadata file: commit, etag, timestamp lines."""
    try:
        lines = (metadata_dir / f"{path}.metadata").read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        return None, None
    if len(lines) < 2:
        return None, None
    commit, etag = lines[0].strip(), lines[1].strip()
    return (
        etag if REGULAR_ETAG_RE.match(etag) or LFS_ETAG_RE.match(etag) else None,
        commit if COMMIT_RE.match(commit) else None,
    )


class _Buffers:
    """Chunk buffers handed out and taken back: fresh 4-8 MiB allocations cost a page fault per 4 KiB."""

    def __init__(self, keep: int = 64) -> None:
        self._free: list[bytearray] = []
        self._keep = keep
        self._lock = threading.Lock()

    def take(self, length: int) -> memoryview:
        with self._lock:
            buffer = self._free.pop() if self._free else None
        if buffer is None or len(buffer) < length:
            buffer = bytearray(length)
        return memoryview(buffer)[:length]

    def give_back(self, data: bytes | memoryview) -> None:
        if isinstance(data, memoryview) and isinstance(data.obj, bytearray):
            with self._lock:
                if len(self._free) < self._keep:
                    self._free.append(data.obj)

    def clear(self) -> None:
        with self._lock:
            self._free.clear()


class LocalSource:
    """Reads chunks from files under ``root`` in a thread pool (``os.pread`` releases the GIL).

    Files stay open between chunks, at most ``OPEN_FILES`` at a time (the least recently read, unused, is
    closed first): a dataset of 30,000 files kept 30,000 open and failed at the limit ("Too many open files").
    """

    OPEN_FILES = 64

    def __init__(self, root: Path, executor: Executor | None = None) -> None:
        self.root = root
        self.executor = executor
        self._fds: collections.OrderedDict[str, list[int]] = collections.OrderedDict()  # path -> [fd, readers]
        self._lock = threading.Lock()
        self._buffers = _Buffers()

    def _open(self, path: str) -> int:
        with self._lock:
            entry = self._fds.get(path)
            if entry is None:
                entry = self._fds[path] = [os.open(self.root / path, os.O_RDONLY), 0]
                idle = [p for p, (_, readers) in self._fds.items() if not readers and p != path]
                for old in idle[: max(0, len(self._fds) - self.OPEN_FILES)]:
                    os.close(self._fds.pop(old)[0])
            else:
                self._fds.move_to_end(path)
            entry[1] += 1
            return entry[0]

    def _done(self, path: str) -> None:
        with self._lock:
            entry = self._fds.get(path)
            if entry is not None:
                entry[1] -= 1

    def _read(self, path: str, offset: int, length: int) -> memoryview:
        view = self._buffers.take(length)
        done = 0
        try:
            fd = self._open(path)
            try:
                while done < length:
                    n = os.preadv(fd, [view[done:]], offset + done)
                    if n == 0:
                        raise LocalSourceError(f"{path}: file shrank while it was being read", path=path)
                    done += n
            finally:
                self._done(path)
        except OSError as exc:
            raise LocalSourceError(f"{path}: cannot read ({exc.strerror})", path=path) from exc
        return view

    async def read(self, path: str, offset: int, length: int) -> memoryview:
        return await asyncio.get_running_loop().run_in_executor(self.executor, self._read, path, offset, length)

    def release(self, data: bytes | memoryview) -> None:
        self._buffers.give_back(data)

    def close(self) -> None:
        with self._lock:
            for fd, _ in self._fds.values():
                os.close(fd)
            self._fds.clear()
        self._buffers.clear()


class OriginSource:
    """Streams chunks from the origin with ranged GETs into reused buffers."""

    def __init__(self, client: OriginClient, ref: RepoRef) -> None:
        self.client = client
        self.ref = ref
        self._buffers = _Buffers()

    async def read(self, path: str, offset: int, length: int) -> memoryview:
        view = self._buffers.take(length)
        ref = self.ref
        await self.client.read_range_into(ref.repo_type, ref.repo_id, ref.commit, path, offset, view)
        return view

    def release(self, data: bytes | memoryview) -> None:
        self._buffers.give_back(data)

    def close(self) -> None:
        self._buffers.clear()
