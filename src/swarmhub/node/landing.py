"""Where a release's bytes arrive and where they land, so no program ever sees a partial file.

Two destinations, one protocol (``Destination``):

- ``CacheDestination``: the Hugging Face cache. Bytes arrive in ``blobs/<etag>.swarmhub-part``. Not
  huggingface_hub's ``<etag>.incomplete``: it resumes such a file from its size, taking every byte before as
  good, and libtorrent writes pieces in any order (a full-size sparse file is "complete" to it). A client that
  shares the cache downloads its own copy meanwhile; both end as the same blob. ``hf_hub_download`` treats an
  existing ``blobs/<etag>`` as complete, which is why nothing is ever written to that name directly: a file
  becomes ``blobs/<etag>`` by a rename only once its whole content hashes to its etag, then its snapshot
  symlink appears (made under a temporary name and renamed over, so it is never half-made), and
  ``refs/<rev>`` is written once the release is there.
- ``LocalDirDestination``: a plain folder, as huggingface_hub's ``local_dir``: bytes arrive under
  ``.cache/huggingface/download/`` (``<path>.<etag>.swarmhub-part``), the verified file is renamed to
  ``<dir>/<path>`` and its ``.metadata`` (commit, etag, time) written, so huggingface_hub itself later sees
  the file as up to date.

The rename itself is done by whoever holds the file open (libtorrent's ``rename_file``); this module says
which names, verifies the bytes, and makes everything that points at a landed file.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from swarmhub.errors import IntegrityError, LocalSourceError
from swarmhub.hub.cache import CachedFile, CacheLayout, ref_path_for, safe_repo_path
from swarmhub.hub.repo import RepoFile, RepoRef, etag_hasher, is_commit

__all__ = [
    "PART_SUFFIX",
    "CacheDestination",
    "Destination",
    "LocalDirDestination",
    "Placement",
    "atomic_bytes",
    "atomic_text",
    "verify_etag",
]


@dataclass(frozen=True)
class Placement:
    file: RepoFile
    pending: Path  # relative to the destination's root: where bytes arrive
    final: Path  # relative to the root: where the verified file lives
    primary: bool  # False: an earlier file has the same etag, and its bytes serve this one


def atomic_text(path: Path, text: str) -> None:
    atomic_bytes(path, text.encode())


def atomic_bytes(path: Path, data: bytes) -> None:
    """``path`` holds ``data`` or what it held before, never part of it (a temporary file renamed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _atomic_symlink(link: Path, target: str) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() and os.readlink(link) == target:
        return
    tmp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    os.replace(tmp, link)


def verify_etag(path: Path, file: RepoFile) -> None:
    """Raise unless ``path`` holds exactly the file whose etag is ``file.etag`` (SHA-256 or git blob id)."""
    try:
        arrived = path.stat().st_size
    except FileNotFoundError as exc:
        raise LocalSourceError(f"{file.path}: no bytes to land ({path} is missing)", path=file.path) from exc
    if arrived != file.size:
        raise IntegrityError(f"{file.path}: {arrived} bytes arrived, {file.size} expected", path=file.path)
    with path.open("rb") as f:  # file_digest reads into one small buffer: memory stays flat
        digest = hashlib.file_digest(f, lambda: etag_hasher(file.size, file.is_lfs))
    if digest.hexdigest() != file.etag:
        raise IntegrityError(
            f"{file.path}: the bytes hash to {digest.hexdigest()}, expected {file.etag}",
            path=file.path,
            expected=file.etag,
            actual=digest.hexdigest(),
        )


PART_SUFFIX = ".swarmhub-part"  # a file being written by libtorrent (never huggingface_hub's ".incomplete")


class Destination(Protocol):
    root: Path  # libtorrent's save path; every Placement path is relative to it

    def placements(self, files: list[RepoFile]) -> list[Placement]:
        """Where each of ``files`` goes. The first file with an etag is the one written, the others follow it:
        within one call for the cache (its blob is the etag's), over every call for a local folder (a later
        twin is copied from the first)."""
        ...

    def landed(self, placement: Placement) -> bool:
        """Is the verified file already at its final place (a previous pull, or an earlier run)?"""
        ...

    def publish(self, placement: Placement) -> None:
        """Make the landed file visible where programs look (snapshot link, local_dir file + metadata)."""
        ...

    def finish(self, revision: str | None) -> Path:
        """The release is complete: record the revision; returns the folder a program should load."""
        ...


class CacheDestination:
    def __init__(self, cache_dir: Path, ref: RepoRef) -> None:
        self.layout = CacheLayout(ref)
        self.root = cache_dir.absolute() / str(self.layout.folder)
        self._cached: dict[str, CachedFile] = {}  # repo path -> where it goes

    def placements(self, files: list[RepoFile]) -> list[Placement]:
        out = []
        for f, cached in zip(files, self.layout.files(files), strict=True):
            self._cached[f.path] = cached
            out.append(Placement(f, Path(cached.blob + PART_SUFFIX), Path(cached.blob), cached.first_of_blob))
        return out

    def landed(self, placement: Placement) -> bool:
        try:
            return (self.root / placement.final).stat().st_size == placement.file.size
        except FileNotFoundError:
            return False

    def publish(self, placement: Placement) -> None:
        cached = self._cached[placement.file.path]
        _atomic_symlink(self.root / cached.link, cached.link_target)

    @property
    def snapshot(self) -> Path:
        return self.root / self.layout.snapshot

    def finish(self, revision: str | None) -> Path:
        """``refs/<revision>`` -> the commit, atomically (only for branch or tag names, as huggingface_hub)."""
        self.snapshot.mkdir(parents=True, exist_ok=True)  # a release whose files were all filtered out
        if revision and not is_commit(revision):
            atomic_text(self.root / ref_path_for(revision), self.layout.ref.commit)
        return self.snapshot


class LocalDirDestination:
    """huggingface_hub's ``local_dir`` layout: real files, plus ``.cache/huggingface/download/<path>.metadata``."""

    def __init__(self, local_dir: Path, ref: RepoRef) -> None:
        self.root = local_dir.absolute()
        self.ref = ref
        self._meta = Path(".cache/huggingface/download")
        self._first: dict[str, Placement] = {}

    def placements(self, files: list[RepoFile]) -> list[Placement]:
        out = []
        for f in files:
            path = Path(safe_repo_path(f.path))
            pending = self._meta / path.parent / f"{path.name}.{f.etag}{PART_SUFFIX}"
            first = self._first.setdefault(f.etag, Placement(f, pending, path, True))
            out.append(first if first.file.path == f.path else Placement(f, pending, path, False))
        return out

    def _metadata_path(self, placement: Placement) -> Path:
        return self.root / self._meta / f"{placement.final}.metadata"

    def landed(self, placement: Placement) -> bool:
        try:
            commit, etag = self._metadata_path(placement).read_text().splitlines()[:2]
            size = (self.root / placement.final).stat().st_size
        except (OSError, ValueError):
            return False
        return etag == placement.file.etag and size == placement.file.size and bool(commit)

    def publish(self, placement: Placement) -> None:
        final = self.root / placement.final
        if not placement.primary:
            source = self.root / self._first[placement.file.etag].final
            final.parent.mkdir(parents=True, exist_ok=True)
            tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
            shutil.copyfile(source, tmp)
            os.replace(tmp, final)
        # huggingface_hub's format (``_huggingface_dir`` metadata): commit, etag, timestamp
        atomic_text(self._metadata_path(placement), f"{self.ref.commit}\n{placement.file.etag}\n{time.time()}\n")

    def finish(self, revision: str | None) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        return self.root
