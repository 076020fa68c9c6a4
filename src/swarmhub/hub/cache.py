"""The Hugging Face cache layout, without I/O: where a release's files live so huggingface_hub finds them.

    HF_HUB_CACHE/models--org--name/
        blobs/<etag>                        the bytes, named by LFS sha256 or git blob sha1
        snapshots/<commit>/<path>           relative symlink -> ../../blobs/<etag> (one ../ more per folder)
        refs/<revision>                     text file holding the commit a branch or tag points at

This is what ``huggingface_hub.file_download`` writes (``repo_folder_name``, ``_create_symlink`` with relative
targets, ``_cache_commit_hash_for_specific_revision``). A node downloads straight into ``blobs/`` and makes
the snapshot link only after the file is verified, so a program never loads a partial file.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import PurePosixPath

from swarmhub.errors import UsageError
from swarmhub.hub.repo import COMMIT_RE, LFS_ETAG_RE, REGULAR_ETAG_RE, RepoFile, RepoRef, path_problem

__all__ = ["CacheLayout", "CachedFile", "ref_path_for", "safe_repo_path"]


def safe_repo_path(path: str) -> PurePosixPath:
    """A repo path that stays inside its snapshot folder (no ``..``, no absolute path, no empty part)."""
    problem = path_problem(path)
    if problem:
        raise UsageError(f"unsafe path in repo: {path!r} ({problem})")
    return PurePosixPath(path)


def ref_path_for(revision: str) -> PurePosixPath:
    """``refs/<revision>``; branch names may contain ``/`` (``refs/pr/1``), never ``..``."""
    return PurePosixPath("refs") / safe_repo_path(revision)


@dataclass(frozen=True)
class CachedFile:
    path: str  # in the repo
    blob: str  # relative to the repo folder: blobs/<etag>
    link: str  # relative to the repo folder: snapshots/<commit>/<path>
    link_target: str  # what the symlink holds: ../../blobs/<etag> with one ../ per folder of ``path``
    first_of_blob: bool  # False when an earlier file of the release has the same etag (one blob, two links)


@dataclass(frozen=True)
class CacheLayout:
    ref: RepoRef

    @property
    def folder(self) -> PurePosixPath:
        """``models--org--name`` (huggingface_hub's ``repo_folder_name``)."""
        return PurePosixPath(self.ref.cache_folder)

    @property
    def snapshot(self) -> PurePosixPath:
        if not COMMIT_RE.match(self.ref.commit):
            raise UsageError(f"{self.ref.commit!r} is not a commit sha")
        return PurePosixPath("snapshots") / self.ref.commit

    def files(self, files: Iterable[RepoFile]) -> list[CachedFile]:
        """Where each file goes; files sharing an etag share one blob (only the first is written)."""
        out: list[CachedFile] = []
        seen: set[str] = set()
        snapshot = str(self.snapshot)
        for f in files:
            if not (LFS_ETAG_RE.match(f.etag) or REGULAR_ETAG_RE.match(f.etag)):
                raise UsageError(f"{f.path}: {f.etag!r} is not an etag")
            if problem := path_problem(f.path):  # then ``path`` joins as written: no empty, . or .. part
                raise UsageError(f"unsafe path in repo: {f.path!r} ({problem})")
            # strings, not paths: from snapshots/<commit>/<folders of path>/ back up to the repo folder (paths
            # and relpath per file made 100,000 files take 4 s)
            target = "../" * (2 + f.path.count("/")) + f"blobs/{f.etag}"
            out.append(CachedFile(f.path, f"blobs/{f.etag}", f"{snapshot}/{f.path}", target, f.etag not in seen))
            seen.add(f.etag)
        return out
