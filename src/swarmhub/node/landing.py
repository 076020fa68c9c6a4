"""Landing verified files in the Hugging Face cache, so no program ever sees a partial one.

Bytes arrive in ``blobs/<etag>.incomplete`` (huggingface_hub's own name for a blob being written). A file is
landed only once its whole content hashes to its etag: the blob is renamed into place, then the snapshot
symlink appears (made under a temporary name and renamed over, so it is never half-made), and ``refs/<rev>``
is written atomically once the release is complete. ``hf_hub_download`` treats an existing ``blobs/<etag>``
as complete, which is why nothing is ever written to that name directly.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from swarmhub.errors import IntegrityError, LocalSourceError
from swarmhub.hub.cache import CachedFile, CacheLayout, ref_path_for
from swarmhub.hub.repo import etag_hasher

__all__ = ["incomplete_blob", "land_file", "write_ref"]

_READ = 8 * 1024 * 1024


def incomplete_blob(repo_dir: Path, file: CachedFile) -> Path:
    """Where a file's bytes are written while they arrive."""
    return repo_dir / f"{file.blob}.incomplete"


def _etag_of(path: Path, size: int, lfs: bool) -> str:
    digest = etag_hasher(size, lfs)
    with path.open("rb") as f:
        while block := f.read(_READ):
            digest.update(block)
    return digest.hexdigest()


def land_file(repo_dir: Path, file: CachedFile, size: int) -> Path:
    """Verify and land one file; returns its snapshot path. Idempotent: a landed file is only re-linked."""
    blob = repo_dir / file.blob
    etag = file.blob.name
    if not blob.exists():
        pending = incomplete_blob(repo_dir, file)
        try:
            arrived = pending.stat().st_size
        except FileNotFoundError as exc:
            raise LocalSourceError(f"{file.path}: no bytes to land ({pending} is missing)", path=file.path) from exc
        if arrived != size:
            raise IntegrityError(f"{file.path}: {arrived} bytes arrived, {size} expected", path=file.path)
        actual = _etag_of(pending, size, lfs=len(etag) == 64)
        if actual != etag:
            raise IntegrityError(
                f"{file.path}: the bytes hash to {actual}, expected {etag}",
                path=file.path,
                expected=etag,
                actual=actual,
            )
        os.replace(pending, blob)
    link = repo_dir / file.link
    link.parent.mkdir(parents=True, exist_ok=True)
    if not (link.is_symlink() and os.readlink(link) == file.link_target):
        tmp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
        tmp.unlink(missing_ok=True)
        os.symlink(file.link_target, tmp)
        os.replace(tmp, link)
    return link


def write_ref(repo_dir: Path, layout: CacheLayout, revision: str) -> None:
    """``refs/<revision>`` -> the commit, atomically (only for branch or tag names, as huggingface_hub)."""
    if revision == layout.ref.commit:
        return
    ref = repo_dir / ref_path_for(revision)
    ref.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=ref.parent, prefix=f".{ref.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(layout.ref.commit)
    os.replace(tmp, ref)
