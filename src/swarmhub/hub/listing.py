"""Reading the Hub's JSON listings and headers, without I/O.

- tree API (``/api/models/{repo}/tree/{rev}?recursive=true&expand=false``): entries with ``type``, ``path``,
  ``size``, ``oid`` (git blob sha1) and, for LFS files, ``lfs.oid`` (sha256). Paginated with
  ``Link: <url>; rel="next"``.
- revision API (``/api/models/{repo}/revision/{rev}?blobs=true``): ``sha`` and ``siblings`` with
  ``rfilename`` and, with blobs, ``size``, ``blobId`` and ``lfs.sha256``. Mirrors may omit the blob fields;
  such files are completed from a HEAD on ``resolve`` (``X-Linked-Etag``/``ETag``, ``X-Linked-Size``).
- repo listings (``/api/models?author=ORG&expand=sha``, ``/api/datasets?...``): objects with ``id``
  (``org/name``) and, when asked with ``expand=sha``, ``sha`` (the commit of ``main``). Paginated like the tree.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from swarmhub.errors import OriginProtocolError, UsageError
from swarmhub.hub.repo import COMMIT_RE, LFS_ETAG_RE, REGULAR_ETAG_RE, RepoFile, path_problem, validate_repo_id

__all__ = [
    "ListedFile",
    "ListedRepo",
    "commit_from_revision_info",
    "etag_from_headers",
    "files_from_siblings",
    "files_from_tree_page",
    "next_link",
    "repos_from_listing_page",
    "size_from_headers",
]


@dataclass(frozen=True)
class ListedFile:
    """A file as a listing gives it; ``size``/``etag`` may be unknown (then a HEAD completes them)."""

    path: str
    size: int | None
    etag: str | None

    def complete(self) -> RepoFile | None:
        if self.size is None or self.etag is None:
            return None
        return RepoFile(self.path, self.size, self.etag)


def _etag(value: object) -> str | None:
    if isinstance(value, str) and (REGULAR_ETAG_RE.match(value) or LFS_ETAG_RE.match(value)):
        return value
    return None


def _size(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _path(value: object) -> str:
    if not isinstance(value, str):
        raise OriginProtocolError(f"origin listed a path that is no string: {value!r:.100}")
    if problem := path_problem(value):
        raise OriginProtocolError(f"origin listed an unsafe path {value!r:.200} ({problem})")
    return value


def files_from_tree_page(entries: object) -> list[ListedFile]:
    if not isinstance(entries, list):
        raise OriginProtocolError("tree listing is not a JSON list")
    files = []
    for entry in entries:
        if not isinstance(entry, dict) or entry.get("type") != "file":
            continue
        lfs = entry.get("lfs")
        etag = _etag(lfs.get("oid")) if isinstance(lfs, dict) else _etag(entry.get("oid"))
        files.append(ListedFile(_path(entry.get("path")), _size(entry.get("size")), etag))
    return files


def files_from_siblings(info: object) -> list[ListedFile]:
    if not isinstance(info, dict) or not isinstance(info.get("siblings"), list):
        raise OriginProtocolError("revision info has no siblings list")
    files = []
    for sibling in info["siblings"]:
        if not isinstance(sibling, dict):
            continue
        lfs = sibling.get("lfs")
        if isinstance(lfs, dict):
            etag, size = _etag(lfs.get("sha256") or lfs.get("oid")), _size(lfs.get("size"))
        else:
            etag, size = _etag(sibling.get("blobId")), _size(sibling.get("size"))
        files.append(ListedFile(_path(sibling.get("rfilename")), size, etag))
    return files


@dataclass(frozen=True)
class ListedRepo:
    """A repo as a listing gives it: its id, and the commit of ``main`` when the listing says."""

    repo_id: str
    sha: str | None


def repos_from_listing_page(entries: object) -> list[ListedRepo]:
    """The repos of one page of ``/api/models`` or ``/api/datasets``; an id we would refuse is an error."""
    if not isinstance(entries, list):
        raise OriginProtocolError("repo listing is not a JSON list")
    repos = []
    for entry in entries:
        if not isinstance(entry, dict):
            raise OriginProtocolError(f"repo listing has {entry!r} for a repo")
        repo_id, sha = entry.get("id"), entry.get("sha")
        try:
            if not isinstance(repo_id, str):
                raise UsageError("not a string")
            validate_repo_id(repo_id)
        except UsageError:
            raise OriginProtocolError(f"origin listed an invalid repo id {repo_id!r}") from None
        repos.append(ListedRepo(repo_id, sha if isinstance(sha, str) and COMMIT_RE.match(sha) else None))
    return repos


def commit_from_revision_info(info: Any) -> str:
    sha = info.get("sha") if isinstance(info, dict) else None
    if not isinstance(sha, str) or not COMMIT_RE.match(sha):
        raise OriginProtocolError("revision info has no 40-hex commit sha")
    return sha


_LINK_RE = re.compile(r'<([^>]+)>\s*;\s*rel="?next"?')


def next_link(headers: Mapping[str, str]) -> str | None:
    """The ``rel="next"`` URL of a ``Link`` header (RFC 8288), as the Hub paginates."""
    match = _LINK_RE.search(headers.get("link", ""))
    return match.group(1) if match else None


def etag_from_headers(headers: Mapping[str, str]) -> str | None:
    """The Hub's file etag: ``X-Linked-Etag`` (LFS, through a redirect) else ``ETag``; quotes and W/ dropped."""
    raw = headers.get("x-linked-etag") or headers.get("etag") or ""
    value = raw.removeprefix("W/").strip('"')
    return _etag(value)


def size_from_headers(headers: Mapping[str, str]) -> int | None:
    raw = headers.get("x-linked-size") or headers.get("content-length")
    return int(raw) if raw is not None and raw.isdigit() else None
