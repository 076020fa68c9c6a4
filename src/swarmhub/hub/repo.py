"""Repo identity and file identity on a Hugging Face Hub, without I/O.

A file's *etag* is what the Hub sends as ``X-Linked-Etag``/``ETag`` and what huggingface_hub names the blob
in its cache: the LFS object's SHA-256 for LFS files, the git blob SHA-1 for regular files.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote

from swarmhub.errors import UsageError

__all__ = [
    "COMMIT_RE",
    "LFS_ETAG_RE",
    "REGULAR_ETAG_RE",
    "RepoFile",
    "RepoRef",
    "RepoType",
    "api_repo_path",
    "character_problem",
    "etag_hasher",
    "git_blob_hasher",
    "is_commit",
    "is_commit_prefix",
    "parse_repo_type",
    "path_problem",
    "resolve_path",
    "validate_repo_id",
]

RepoType = Literal["model", "dataset", "space"]

# \Z, not $: "$" also matches before a final newline, and "<commit>\n" must not pass for a commit.
COMMIT_RE = re.compile(r"^[0-9a-f]{40}\Z")
REGULAR_ETAG_RE = re.compile(r"^[0-9a-f]{40}\Z")
LFS_ETAG_RE = re.compile(r"^[0-9a-f]{64}\Z")
_REPO_ID_RE = re.compile(r"^(?:[A-Za-z0-9][\w.\-]*/)?[A-Za-z0-9][\w.\-]*\Z")
_ASCII_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
# Unicode general categories refused in names and paths: Cc control (C0, DEL, C1), Cf format (bidi controls
# such as U+202E, zero-width U+200B, isolates U+2066..U+2069, U+FEFF), Zl/Zp line and paragraph separators,
# Cs lone surrogates (what os.fsdecode makes of undecodable bytes).
_REFUSED_CATEGORIES = {
    "Cc": "control character",
    "Cf": "format character",
    "Zl": "line separator",
    "Zp": "paragraph separator",
    "Cs": "surrogate",
}


def parse_repo_type(value: str | None) -> RepoType:
    if value in (None, "", "model", "models"):
        return "model"
    if value in ("dataset", "datasets"):
        return "dataset"
    if value in ("space", "spaces"):
        return "space"
    raise UsageError(f"unknown repo type {value!r}", hint="use --repo-type model or --repo-type dataset")


def validate_repo_id(repo_id: str) -> str:
    """A repo id is ``name`` or ``org/name`` with the Hub's characters; nothing that escapes a URL path."""
    if not _REPO_ID_RE.match(repo_id) or ".." in repo_id or len(repo_id) > 96:
        problem = character_problem(repo_id)
        raise UsageError(
            f"invalid repo id {repo_id!r}" + (f": {problem}" if problem else ""),
            hint="a repo id looks like org/name, e.g. openai-community/gpt2",
        )
    return repo_id


def is_commit(revision: str) -> bool:
    return bool(COMMIT_RE.match(revision))


def is_commit_prefix(revision: str) -> bool:
    """A full commit or an abbreviation of one (7+ lowercase hex digits, as ``git log --oneline`` shows)."""
    return 7 <= len(revision) <= 40 and all(c in "0123456789abcdef" for c in revision)


def _plural(repo_type: RepoType) -> str:
    return repo_type + "s"


def api_repo_path(repo_type: RepoType, repo_id: str) -> str:
    """``/api/models/org/name`` — the Hub's JSON API prefix for a repo."""
    return f"/api/{_plural(repo_type)}/{repo_id}"


def resolve_path(repo_type: RepoType, repo_id: str, revision: str, path: str) -> str:
    """The Hub's download URL path: ``/org/name/resolve/REV/PATH`` (``/datasets/...`` for datasets)."""
    prefix = "" if repo_type == "model" else f"/{_plural(repo_type)}"
    return f"{prefix}/{repo_id}/resolve/{quote(revision, safe='')}/{quote(path, safe='/')}"


@dataclass(frozen=True)
class RepoRef:
    """A release: one repo at one commit."""

    repo_type: RepoType
    repo_id: str
    commit: str

    @property
    def cache_folder(self) -> str:
        """huggingface_hub's folder name in the cache: ``models--org--name``."""
        return "--".join([_plural(self.repo_type), *self.repo_id.split("/")])


@dataclass(frozen=True)
class RepoFile:
    """One file of a release as the Hub lists it."""

    path: str
    size: int
    etag: str  # LFS sha256 (64 hex) or git blob sha1 (40 hex)

    @property
    def is_lfs(self) -> bool:
        return len(self.etag) == 64


def character_problem(text: str) -> str | None:
    """The first character a name must not hold, as ``U+000D control character`` (None when there is none).

    Control characters (C0, DEL, C1), format characters (bidi overrides and isolates, zero-width ones) and
    line separators: a CRLF in a file name made a release's torrent undownloadable for good (HTTP headers,
    cache folders), an ESC ran in the terminal of whoever printed it, U+202E shows ``exe.txt`` for ``txt.exe``.
    """
    if text.isascii():  # the common case, one regex pass
        found = _ASCII_CONTROL_RE.search(text)
        return f"U+{ord(found.group()):04X} control character" if found else None
    for ch in text:
        kind = _REFUSED_CATEGORIES.get(unicodedata.category(ch))
        if kind:
            return f"U+{ord(ch):04X} {kind}"
    return None


def path_problem(path: str) -> str | None:
    """Why a repo path could escape its folder, fail on disk or mislead a reader (None when it is safe).

    One rule for every path we take from outside: torrents, origin listings, the cache layout.
    """
    if not path:
        return "empty path"
    if problem := character_problem(path):
        return problem
    if "\\" in path:
        return "backslash"
    if path.startswith("/"):
        return "absolute path"
    for part in path.split("/"):
        if part in ("", ".", ".."):
            return f"{part!r} component"
        if len(part) >= 2 and part[1] == ":":
            return "Windows drive letter"
        if len(part.encode()) > 255:
            return "component longer than 255 bytes"
    return None


def etag_hasher(size: int, lfs: bool) -> hashlib._Hash:
    """The digest a file's etag is: SHA-256 of the content for LFS files, the git blob SHA-1 otherwise."""
    return hashlib.sha256() if lfs else git_blob_hasher(size)


def git_blob_hasher(size: int) -> hashlib._Hash:
    """A SHA-1 primed with git's blob header: feed it the content to get the git blob id."""
    h = hashlib.sha1()
    h.update(b"blob %d\0" % size)
    return h
