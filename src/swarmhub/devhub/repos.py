"""Plain folders seen as Hub repos: file identities, a commit id and tree listings.

Layout of the root folder::

    ROOT/models/ORG/NAME/...      model "ORG/NAME" (also ROOT/models/NAME/ for an id without org)
    ROOT/datasets/ORG/NAME/...    dataset "ORG/NAME"

A repo folder is the working tree of branch ``main``. Each file gets the identities the Hub gives it:

- LFS files (``filter=lfs`` in the root ``.gitattributes``, or 10 MiB and more, which the Hub refuses to
  store outside LFS) have an etag equal to the SHA-256 of their content and a ``blobId`` equal to the git
  blob id of their LFS pointer text;
- other files have etag = ``blobId`` = the git blob SHA-1 of their content.

The commit of ``main`` is a SHA-1 over the sorted (path, etag) list: not a real git commit, but it changes
exactly when the content does, which is all a client can observe.

Hashing is lazy and cached per (file, size, mtime_ns), so listing a large repo again after a change only
hashes what changed. A repo of up to ``WALK_EVERY_TIME`` files is walked (a ``stat`` per file) at every
lookup, so a change shows at once. A bigger one would cost a walk per request (100,000 files: ~0.5 s, and a
download asks once per file), so its listing is kept: for ``TRUST_FOR`` seconds as it is, then as long as no
folder of it changed (a file added, removed or replaced changes its folder's mtime; a `stat` of each folder),
and walked again at least every ``WALK_AT_LEAST`` seconds (a file rewritten in place changes no folder), or
every ``WALK_SPACING`` times what the walk took when that is longer (100,000 files: a walk of ~4 s every 10 s
was 40% of the origin's CPU under a download). Such a walk, due by time alone (no folder changed), runs in a
thread when it takes ``WALK_BESIDE`` or more, the requests meanwhile answered from the listing kept: a walk
of 100,000 files held every request for 4 s, past a client's 3 s timeout.
Everything here is blocking I/O; async callers run it in a worker thread.
"""

from __future__ import annotations

import bisect
import hashlib
import logging
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from swarmhub.errors import EntryNotFound, RepoNotFound, UsageError
from swarmhub.hub.gitattributes import lfs_matcher
from swarmhub.hub.repo import RepoFile, RepoType, git_blob_hasher, validate_repo_id

__all__ = [
    "LFS_SIZE_THRESHOLD",
    "FileHashes",
    "LfsInfo",
    "RepoSnapshot",
    "RepoStore",
    "ServedFile",
    "lfs_pointer",
]

log = logging.getLogger(__name__)

LFS_SIZE_THRESHOLD = 10 * 1024 * 1024  # the Hub rejects regular (non-LFS) git files of 10 MiB and more
WALK_EVERY_TIME = 200  # files: a repo of at most this many is walked at every lookup (~2 ms)
TRUST_FOR = 1.0  # seconds a bigger repo's listing is used without a look
WALK_AT_LEAST = 10.0  # seconds: a bigger repo is walked again at least this often
WALK_SPACING = 20.0  # ... or, when longer, this many times the walk's own time (walks <= 5% of the time)
WALK_BESIDE = 1.0  # seconds: a walk due by time alone that took this long runs beside the requests
_CHUNK = 1 << 20
HashKind = Literal["blob", "sha256"]


def lfs_pointer(sha256: str, size: int) -> bytes:
    """The Git LFS pointer text stored in git in place of the content (git-lfs spec v1)."""
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def _git_blob_id(data: bytes) -> str:
    h = git_blob_hasher(len(data))
    h.update(data)
    return h.hexdigest()


class FileHashes:
    """Thread-safe cache of content hashes keyed by (path, kind), valid while (size, mtime_ns) hold."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cache: dict[tuple[str, HashKind], tuple[int, int, str]] = {}

    def digest(self, path: Path, size: int, mtime_ns: int, kind: HashKind) -> str:
        key = (str(path), kind)
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None and hit[:2] == (size, mtime_ns):
            return hit[2]
        # Hash outside the lock: two threads may hash the same file once each, which is harmless.
        h = git_blob_hasher(size) if kind == "blob" else hashlib.sha256()
        with path.open("rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
        hexdigest = h.hexdigest()
        with self._lock:
            self._cache[key] = (size, mtime_ns, hexdigest)
        return hexdigest


@dataclass(frozen=True)
class LfsInfo:
    sha256: str
    size: int
    pointer_size: int


@dataclass(frozen=True)
class ServedFile:
    """One file of a repo: where it lives on disk and what the Hub calls it."""

    path: str  # posix, relative to the repo root
    local: Path
    size: int
    blob_id: str  # git blob SHA-1 of the content, or of the LFS pointer for LFS files
    lfs: LfsInfo | None

    @property
    def etag(self) -> str:
        return self.lfs.sha256 if self.lfs is not None else self.blob_id

    def as_repo_file(self) -> RepoFile:
        return RepoFile(self.path, self.size, self.etag)


def _sha1_lines(lines: Iterator[str]) -> str:
    h = hashlib.sha1()
    for line in lines:
        h.update(line.encode())
    return h.hexdigest()


@dataclass(frozen=True)
class RepoSnapshot:
    """A repo folder at one moment: its files sorted by path and the commit they make."""

    repo_type: RepoType
    repo_id: str
    commit: str
    files: tuple[ServedFile, ...]
    last_modified_ns: int
    _by_path: dict[str, ServedFile] = field(default_factory=dict, compare=False, repr=False)
    _trees: dict[tuple[str, bool], list[dict[str, Any]]] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def build(cls, repo_type: RepoType, repo_id: str, files: list[ServedFile], mtime_ns: int) -> RepoSnapshot:
        files.sort(key=lambda f: f.path)
        commit = _sha1_lines(f"{f.path}\0{f.etag}\n" for f in files)
        return cls(repo_type, repo_id, commit, tuple(files), mtime_ns, {f.path: f for f in files})

    def file(self, path: str) -> ServedFile:
        found = self._by_path.get(path)
        if found is None:
            raise EntryNotFound(f"{path} not found in {self.repo_id}", repo_id=self.repo_id, status=404)
        return found

    def tree(self, folder: str = "", *, recursive: bool = False) -> list[dict[str, Any]]:
        """The Hub's ``/tree`` entries under ``folder`` (files and folders, sorted by path); made once per
        snapshot, as a listing is asked for a page at a time."""
        folder = folder.strip("/")
        made = self._trees.get((folder, recursive))
        if made is None:
            made = self._trees[(folder, recursive)] = self._tree(folder, recursive)
        return made

    def _tree(self, folder: str, recursive: bool) -> list[dict[str, Any]]:
        prefix = f"{folder}/" if folder else ""
        below = self._inside(folder) if folder else self.files
        if folder and not below:
            raise EntryNotFound(f"folder {folder} not found in {self.repo_id}", repo_id=self.repo_id, status=404)
        entries: dict[str, dict[str, Any]] = {}
        for f in below:
            parts = f.path[len(prefix) :].split("/")
            # Folders on the way down: all of them when recursive, only the first level otherwise.
            for depth in range(1, len(parts) if recursive else min(2, len(parts))):
                sub = prefix + "/".join(parts[:depth])
                if sub not in entries:  # its oid hashes every file below it: once per folder, not per file
                    entries[sub] = self._folder_entry(sub)
            if recursive or len(parts) == 1:
                entries[f.path] = _file_entry(f)
        return [entries[p] for p in sorted(entries)]

    def path_info(self, path: str) -> dict[str, Any] | None:
        """The ``/tree`` entry of the file or folder at exactly ``path``; None if there is neither (the Hub's
        ``paths-info`` leaves such paths out). The root is no entry, and ``sub/`` is not ``sub``."""
        found = self._by_path.get(path)
        if found is not None:
            return _file_entry(found)
        if path and self._inside(path):
            return self._folder_entry(path)
        return None

    def _inside(self, folder: str) -> tuple[ServedFile, ...]:
        """The files below ``folder``: one run of the sorted ``files``, as every path starting "folder/" sorts
        from "folder/" up to (not including) "folder0" ("0" is the character after "/")."""
        first = bisect.bisect_left(self.files, f"{folder}/", key=lambda f: f.path)
        end = bisect.bisect_left(self.files, f"{folder}0", lo=first, key=lambda f: f.path)
        return self.files[first:end]

    def _folder_entry(self, path: str) -> dict[str, Any]:
        oid = _sha1_lines(f"{f.path}\0{f.etag}\n" for f in self._inside(path))
        return {"type": "directory", "oid": oid, "size": 0, "path": path}


def _file_entry(f: ServedFile) -> dict[str, Any]:
    entry: dict[str, Any] = {"type": "file", "oid": f.blob_id, "size": f.size, "path": f.path}
    if f.lfs is not None:
        entry["lfs"] = {"oid": f.lfs.sha256, "size": f.lfs.size, "pointerSize": f.lfs.pointer_size}
    return entry


def _walk(folder: Path) -> Iterator[tuple[str, Path, os.stat_result]]:
    """(posix relative path, absolute path, stat) of every regular file, skipping ``.git`` folders."""
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if d != ".git")
        for name in filenames:
            local = Path(dirpath, name)
            try:
                st = local.stat()  # follows symlinks: a linked file is served with its target's content
            except OSError:
                continue  # a dangling symlink or a file removed while we walk
            if stat.S_ISREG(st.st_mode):
                yield local.relative_to(folder).as_posix(), local, st


def _folder_times(folder: Path) -> list[tuple[str, int]]:
    """(path, mtime_ns) of ``folder`` and every folder below it, ``.git`` left out: what changes when a file is
    added, removed or replaced. One ``scandir`` per folder, no ``stat`` of a file."""
    found: list[tuple[str, int]] = []
    stack = [folder]
    while stack:
        current = stack.pop()
        try:
            found.append((str(current), current.stat().st_mtime_ns))
            with os.scandir(current) as entries:
                stack += (Path(e.path) for e in entries if e.name != ".git" and e.is_dir(follow_symlinks=False))
        except OSError:
            found.append((str(current), -1))  # removed while we looked: changed
    return sorted(found)


def _looked_again(folders: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """``folders`` (from ``_folder_times``) with their mtimes now: a ``stat`` per folder, no listing. A folder
    made or removed below one of them changes that folder's mtime; one removed itself reads -1. (Listing every
    folder each second was 15% of the origin's CPU under a download of 100,000 files.)"""
    found = []
    for path, _ in folders:
        try:
            found.append((path, os.stat(path).st_mtime_ns))
        except OSError:
            found.append((path, -1))
    return found


@dataclass
class _Kept:
    """A big repo's listing and what it was made from."""

    snapshot: RepoSnapshot
    folders: list[tuple[str, int]]
    walked: float  # when the files were walked (time.monotonic)
    looked: float  # when the folders were last looked at
    cost: float = 0.0  # seconds the walk took
    refreshing: bool = False  # walked again in a thread now (``WALK_BESIDE``)

    def walk_due(self, now: float) -> bool:
        return now - self.walked >= max(WALK_AT_LEAST, WALK_SPACING * self.cost)


def _read_gitattributes(folder: Path) -> str:
    try:
        return (folder / ".gitattributes").read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return ""


class RepoStore:
    """All repos under a root folder; every lookup re-reads the folder (a stat walk plus cached hashes)."""

    def __init__(self, root: Path | str, hashes: FileHashes | None = None) -> None:
        self.root = Path(root)
        self.hashes = hashes or FileHashes()
        self._lock = threading.Lock()
        self._lfs_objects: dict[str, Path] = {}  # sha256 -> a file that had it when last listed
        self._kept: dict[tuple[RepoType, str], _Kept] = {}  # big repos' listings (see the module's docstring)
        self._walking: dict[tuple[RepoType, str], threading.Lock] = {}  # one walk of a repo at a time

    def folder(self, repo_type: RepoType, repo_id: str) -> Path:
        """The folder of a repo, or RepoNotFound."""
        missing = RepoNotFound(f"{repo_type} {repo_id} not found", repo_id=repo_id, status=404)
        try:
            validate_repo_id(repo_id)
        except UsageError:
            raise missing from None
        folder = self.root / f"{repo_type}s" / repo_id
        if not folder.is_dir():
            raise missing
        # An org folder is not a repo: an id without org must name a folder that holds files itself.
        if "/" not in repo_id and not any(p.is_file() for p in folder.iterdir()):
            raise missing
        return folder

    def snapshot(self, repo_type: RepoType, repo_id: str) -> RepoSnapshot:
        folder = self.folder(repo_type, repo_id)
        key = (repo_type, repo_id)
        with self._lock:
            walking = self._walking.setdefault(key, threading.Lock())
        with walking:  # requests that arrive during a walk take its result
            kept = self._kept.get(key)
            now = time.monotonic()
            if kept is not None:
                if kept.refreshing:
                    return kept.snapshot
                fresh = not kept.walk_due(now)
                if fresh and now - kept.looked < TRUST_FOR:
                    return kept.snapshot
                if _looked_again(kept.folders) == kept.folders:
                    kept.looked = now
                    if fresh:
                        return kept.snapshot
                    if kept.cost >= WALK_BESIDE:  # due by time alone: walked beside the requests
                        kept.refreshing = True
                        threading.Thread(target=self._refresh, args=(key, folder), daemon=True).start()
                        return kept.snapshot
            return self._walk_and_keep(key, folder)

    def _walk_and_keep(self, key: tuple[RepoType, str], folder: Path) -> RepoSnapshot:
        started = time.monotonic()
        folders = _folder_times(folder)  # before the walk: a change while it walks shows at the next look
        snap = self._walk(key[0], key[1], folder)
        if len(snap.files) > WALK_EVERY_TIME:
            self._kept[key] = _Kept(snap, folders, started, started, time.monotonic() - started)
        else:
            self._kept.pop(key, None)
        return snap

    def _refresh(self, key: tuple[RepoType, str], folder: Path) -> None:
        """A big repo walked again while its requests are answered from the listing kept (in a thread)."""
        try:
            self._walk_and_keep(key, folder)
        except Exception:
            log.exception("devhub: walking %s %s again failed", *key)
        finally:
            kept = self._kept.get(key)
            if kept is not None:
                kept.refreshing = False

    def _walk(self, repo_type: RepoType, repo_id: str, folder: Path) -> RepoSnapshot:
        is_lfs = lfs_matcher(_read_gitattributes(folder))
        files: list[ServedFile] = []
        newest = 0
        for path, local, st in _walk(folder):
            files.append(self._identify(path, local, st, is_lfs))
            newest = max(newest, st.st_mtime_ns)
        with self._lock:
            self._lfs_objects.update((f.lfs.sha256, f.local) for f in files if f.lfs is not None)
        return RepoSnapshot.build(repo_type, repo_id, files, newest)

    def _identify(self, path: str, local: Path, st: os.stat_result, is_lfs: Callable[[str], bool]) -> ServedFile:
        size, mtime = st.st_size, st.st_mtime_ns
        if not (is_lfs(path) or size >= LFS_SIZE_THRESHOLD):
            return ServedFile(path, local, size, self.hashes.digest(local, size, mtime, "blob"), None)
        sha256 = self.hashes.digest(local, size, mtime, "sha256")
        pointer = lfs_pointer(sha256, size)
        return ServedFile(path, local, size, _git_blob_id(pointer), LfsInfo(sha256, size, len(pointer)))

    def lfs_object(self, sha256: str) -> tuple[Path, int] | None:
        """A file whose content has this SHA-256, and its size; None if no repo holds it any more."""
        for attempt in range(2):
            with self._lock:
                local = self._lfs_objects.get(sha256)
            found = None if local is None else self._still_holds(local, sha256)
            if found is not None:
                return found
            if attempt == 0:
                self.warm()  # not listed yet, or the file changed since: look everywhere once
        return None

    def _still_holds(self, local: Path, sha256: str) -> tuple[Path, int] | None:
        try:
            st = local.stat()
        except OSError:
            return None
        if self.hashes.digest(local, st.st_size, st.st_mtime_ns, "sha256") != sha256:
            return None
        return local, st.st_size

    def repo_ids(self, repo_type: RepoType, author: str | None = None) -> list[str]:
        """Every repo of a type, sorted (only ``author``'s: ids ``author/...``, as the Hub's ``?author=``)."""
        found = []
        for repo_id in _repo_ids(self.root / f"{repo_type}s"):
            if author is not None and not repo_id.startswith(author + "/"):
                continue
            try:
                self.folder(repo_type, repo_id)
            except RepoNotFound:
                continue
            found.append(repo_id)
        return sorted(found)

    def warm(self) -> None:
        """Hash every repo's files now, so the first request does not (clients time out after ~10 s)."""
        kinds: tuple[RepoType, ...] = ("model", "dataset")
        for repo_type in kinds:
            for repo_id in self.repo_ids(repo_type):
                try:
                    self.snapshot(repo_type, repo_id)
                except RepoNotFound:
                    continue  # removed meanwhile


def _repo_ids(base: Path) -> Iterator[str]:
    """Candidate repo ids under ``ROOT/models`` or ``ROOT/datasets``: ``NAME`` and ``ORG/NAME``."""
    if not base.is_dir():
        return
    for first in sorted(p for p in base.iterdir() if p.is_dir()):
        yield first.name
        for second in sorted(p for p in first.iterdir() if p.is_dir()):
            yield f"{first.name}/{second.name}"
