"""The Hub's answers about one release, built from its files, without I/O.

What huggingface_hub reads (2.x ``file_download.get_hf_file_metadata`` and ``hf_api``; 0.36 alike):

- repo info (``/api/models/{repo}[/revision/{rev}]``): ``id``, ``sha``, ``siblings`` with ``rfilename``; with
  ``?blobs=true`` also ``size``, ``blobId`` and, for LFS files, ``lfs: {sha256, size, pointerSize}``;
- tree (``/api/models/{repo}/tree/{rev}[/{path}]``): entries ``{type, oid, size, path[, lfs: {oid, size,
  pointerSize}]}``, folders as ``type: directory``; pages of ``page_size`` linked by
  ``Link: <url>; rel="next"`` whose URL carries an opaque ``cursor`` (``utils/_pagination.py`` follows it);
- resolve (``/{repo}/resolve/{rev}/{path}``): ``X-Repo-Commit``, ``X-Linked-Etag`` (or ``ETag``), size from
  ``X-Linked-Size`` (or ``Content-Length``); 206 with ``Content-Range``, 416 with ``bytes */SIZE``;
- errors: ``X-Error-Code`` (``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``, ``GatedRepo``) and
  ``X-Error-Message``, which ``hf_raise_for_status`` turns into its exception types.

Xet: a client takes the Xet path (and bypasses whoever it talks to) when a resolve answer has ``X-Xet-Hash``
and ``Link: <...>; rel="xet-auth"`` (or ``X-Xet-Refresh-Route``), and 2.x skips the HEAD entirely when a tree
entry has ``xetHash``. ``strip_xet_headers`` and ``strip_xet_json`` remove all of them.

A file's identities: ``RepoFile.etag`` is the LFS SHA-256 or the git blob SHA-1; an LFS file's ``blobId``
(and tree ``oid``) is the git blob id of its LFS pointer text (git-lfs spec v1), which the etag and size fix.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, Literal

from swarmhub.hub.repo import RepoFile, RepoRef, git_blob_hasher

if TYPE_CHECKING:  # a type only: importing the gateway package would bring its HTTP stack along
    from swarmhub.gateway.ranges import ByteRange

__all__ = [
    "ERROR_CODES",
    "ErrorCode",
    "HubError",
    "TreePage",
    "blob_id",
    "decode_cursor",
    "encode_cursor",
    "error_headers",
    "lfs_pointer",
    "next_link_header",
    "normalize_etag",
    "paths_info",
    "quote_etag",
    "range_not_satisfiable_headers",
    "repo_info",
    "resolve_headers",
    "split_link_header",
    "strip_xet_headers",
    "strip_xet_json",
    "strip_xet_json_bytes",
    "tree_entries",
    "tree_page",
]

ErrorCode = Literal["RepoNotFound", "RevisionNotFound", "EntryNotFound", "GatedRepo"]
ERROR_CODES: Final[frozenset[str]] = frozenset({"RepoNotFound", "RevisionNotFound", "EntryNotFound", "GatedRepo"})

XET_HEADER_PREFIX: Final = "x-xet-"
XET_LINK_REL: Final = "xet-auth"
XET_JSON_KEY: Final = "xetHash"


# --- identities -------------------------------------------------------------------------------------------


def lfs_pointer(sha256: str, size: int) -> bytes:
    """The Git LFS pointer text stored in git in place of an LFS file's content (git-lfs spec v1)."""
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def blob_id(f: RepoFile) -> str:
    """The file's git blob id: its etag for a regular file, the pointer's blob id for an LFS file."""
    if not f.is_lfs:
        return f.etag
    pointer = lfs_pointer(f.etag, f.size)
    h = git_blob_hasher(len(pointer))
    h.update(pointer)
    return h.hexdigest()


def quote_etag(etag: str) -> str:
    """An etag as the Hub sends it in ``ETag``/``X-Linked-Etag``: in double quotes."""
    return f'"{etag}"'


def normalize_etag(value: str | None) -> str | None:
    """An ``ETag``/``X-Linked-Etag`` value without ``W/`` and quotes (huggingface_hub's ``_normalize_etag``)."""
    if not value:
        return None
    return value.removeprefix("W/").strip('"') or None


# --- repo info and tree -----------------------------------------------------------------------------------


def _lfs_sibling(f: RepoFile) -> dict[str, object]:
    return {"sha256": f.etag, "size": f.size, "pointerSize": len(lfs_pointer(f.etag, f.size))}


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def repo_info(
    ref: RepoRef, files: Sequence[RepoFile], *, blobs: bool = False, last_modified: datetime | None = None
) -> dict[str, object]:
    """``/api/{models|datasets}/{repo}/revision/{commit}`` of a release, as ``ModelInfo``/``DatasetInfo`` parse it.

    ``lastModified`` is sent only when known: a made-up date would be read as the repo's.
    """
    siblings: list[dict[str, object]] = []
    for f in sorted(files, key=lambda f: f.path):
        sibling: dict[str, object] = {"rfilename": f.path}
        if blobs:
            sibling |= {"blobId": blob_id(f), "size": f.size}
            if f.is_lfs:
                sibling["lfs"] = _lfs_sibling(f)
        siblings.append(sibling)
    info: dict[str, object] = {
        "_id": ref.commit[:24],
        "id": ref.repo_id,
        "author": ref.repo_id.split("/")[0] if "/" in ref.repo_id else None,
        "sha": ref.commit,
        "private": False,
        "gated": False,
        "disabled": False,
        "tags": [],
        "siblings": siblings,
    }
    if ref.repo_type == "model":
        info["modelId"] = ref.repo_id
    if last_modified is not None:
        info["lastModified"] = _iso(last_modified)
    return info


def _file_entry(f: RepoFile) -> dict[str, object]:
    entry: dict[str, object] = {"type": "file", "oid": blob_id(f), "size": f.size, "path": f.path}
    if f.is_lfs:
        entry["lfs"] = {"oid": f.etag, "size": f.size, "pointerSize": len(lfs_pointer(f.etag, f.size))}
    return entry


def _folder_entry(path: str, inside: Iterable[RepoFile]) -> dict[str, object]:
    # Not git's tree id (file modes are not in a release); it changes exactly when the folder's content does.
    h = hashlib.sha1()
    for f in inside:
        h.update(f"{f.path}\0{f.etag}\n".encode())
    return {"type": "directory", "oid": h.hexdigest(), "size": 0, "path": path}


def tree_entries(
    files: Sequence[RepoFile], folder: str = "", *, recursive: bool = False
) -> list[dict[str, object]] | None:
    """The tree entries under ``folder`` (``""``: the root), sorted by path; None if no file is below it.

    Non-recursive: the folder's files and its direct sub-folders. Recursive: every file and every folder
    below, as the Hub lists them.
    """
    folder = folder.strip("/")
    prefix = f"{folder}/" if folder else ""
    below = sorted((f for f in files if f.path.startswith(prefix)), key=lambda f: f.path)
    if folder and not below:
        return None
    folders: dict[str, list[RepoFile]] = {}
    entries: dict[str, dict[str, object]] = {}
    for f in below:
        parts = f.path[len(prefix) :].split("/")
        for depth in range(1, len(parts) if recursive else min(2, len(parts))):
            folders.setdefault(prefix + "/".join(parts[:depth]), []).append(f)
        if recursive or len(parts) == 1:
            entries[f.path] = _file_entry(f)
    for path, inside in folders.items():
        entries[path] = _folder_entry(path, inside)
    return [entries[p] for p in sorted(entries)]


def paths_info(files: Sequence[RepoFile], paths: Iterable[str]) -> tuple[list[dict[str, object]], list[str]]:
    """``POST /api/{type}s/{repo}/paths-info/{rev}`` of a release: the entries of the asked paths that are files
    or folders of it (in the asked order, each once), and the paths it has neither of."""
    by_path = {f.path: f for f in files}
    found: list[dict[str, object]] = []
    missing: list[str] = []
    seen: set[str] = set()
    for raw in paths:
        path = raw.strip("/")
        if path in seen:
            continue
        seen.add(path)
        if path in by_path:
            found.append(_file_entry(by_path[path]))
            continue
        inside = sorted((f for f in files if f.path.startswith(path + "/")), key=lambda f: f.path) if path else []
        if inside:
            found.append(_folder_entry(path, inside))
        else:
            missing.append(path)
    return found, missing


@dataclass(frozen=True)
class TreePage:
    entries: list[dict[str, object]]
    next_cursor: str | None  # None: the last page


def encode_cursor(after_path: str) -> str:
    return base64.urlsafe_b64encode(after_path.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str | None:
    """The path a cursor continues after; None for a cursor we did not make."""
    try:
        return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, ValueError):
        return None


def tree_page(entries: Sequence[dict[str, object]], cursor: str | None, page_size: int) -> TreePage | None:
    """One page of ``entries`` (sorted by path) after ``cursor``; None when the cursor is not ours."""
    start = 0
    if cursor:
        after = decode_cursor(cursor)
        if after is None:
            return None
        start = next((i for i, e in enumerate(entries) if str(e["path"]) > after), len(entries))
    page = list(entries[start : start + page_size])
    more = start + len(page) < len(entries)
    return TreePage(page, encode_cursor(str(page[-1]["path"])) if more and page else None)


def next_link_header(url: str) -> str:
    """RFC 8288 ``Link`` value for the next page, as the Hub sends it."""
    return f'<{url}>; rel="next"'


# --- resolve ----------------------------------------------------------------------------------------------


def resolve_headers(ref: RepoRef, f: RepoFile, byte_range: ByteRange | None = None) -> dict[str, str]:
    """Headers of a 200 (``byte_range`` None: the whole file) or 206 answer to ``/resolve/`` of ``f``.

    Both ``X-Linked-*`` and the plain headers are sent: the client prefers the linked ones and any version
    finds what it reads. ``Content-Length`` is what this answer's body holds.
    """
    etag = quote_etag(f.etag)
    headers = {
        "X-Repo-Commit": ref.commit,
        "X-Linked-Etag": etag,
        "X-Linked-Size": str(f.size),
        "ETag": etag,
        "Accept-Ranges": "bytes",
        "Content-Type": "application/octet-stream",
        "Content-Length": str(f.size if byte_range is None else byte_range.length),
    }
    if byte_range is not None:
        headers["Content-Range"] = byte_range.content_range
    return headers


def range_not_satisfiable_headers(ref: RepoRef, f: RepoFile) -> dict[str, str]:
    """A 416: no range of the request lies in the file (RFC 9110 §15.5.17)."""
    return {
        "X-Repo-Commit": ref.commit,
        "ETag": quote_etag(f.etag),
        "Accept-Ranges": "bytes",
        "Content-Range": f"bytes */{f.size}",
        "Content-Length": "0",
    }


# --- errors -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HubError:
    """An error answer, Hub style: status, ``X-Error-Code`` (None for errors the Hub sends without one)."""

    status: int
    message: str
    code: ErrorCode | None = None
    commit: str | None = None  # X-Repo-Commit: the client caches a missing file's absence under it
    retry_after: str | None = None  # the upstream's Retry-After, passed on so the client backs off

    def headers(self) -> dict[str, str]:
        headers = error_headers(self.code, self.message)
        if self.commit is not None:
            headers["X-Repo-Commit"] = self.commit
        if self.retry_after is not None:
            headers["Retry-After"] = self.retry_after
        return headers

    def body(self) -> bytes:
        return json.dumps({"error": self.message}).encode()


def error_headers(code: str | None, message: str) -> dict[str, str]:
    """``X-Error-Code``/``X-Error-Message``; the message made header-safe (one line, latin-1)."""
    safe = " ".join(message.split()).encode("latin-1", "replace").decode("latin-1")
    headers = {"X-Error-Message": safe}
    if code is not None:
        headers["X-Error-Code"] = code
    return headers


# --- Xet --------------------------------------------------------------------------------------------------


def split_link_header(value: str) -> list[str]:
    """The comma-separated entries of a ``Link`` header (RFC 8288), commas inside ``<...>`` and quotes kept."""
    entries: list[str] = []
    current: list[str] = []
    in_url = in_quotes = False
    for ch in value:
        if ch == "<" and not in_quotes:
            in_url = True
        elif ch == ">" and not in_quotes:
            in_url = False
        elif ch == '"' and not in_url:
            in_quotes = not in_quotes
        if ch == "," and not in_url and not in_quotes:
            entries.append("".join(current).strip())
            current = []
        else:
            current.append(ch)
    entries.append("".join(current).strip())
    return [e for e in entries if e]


def _link_rels(entry: str) -> set[str]:
    rels: set[str] = set()
    for param in entry.partition(">")[2].split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "rel":
            rels.update(value.strip().strip('"').lower().split())
    return rels


def strip_xet_headers(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """``headers`` without ``X-Xet-*`` and without ``Link`` entries whose rel is ``xet-auth``."""
    kept: list[tuple[str, str]] = []
    for name, value in headers:
        lower = name.lower()
        if lower.startswith(XET_HEADER_PREFIX):
            continue
        if lower == "link":
            entries = [e for e in split_link_header(value) if XET_LINK_REL not in _link_rels(e)]
            if not entries:
                continue
            value = ", ".join(entries)
        kept.append((name, value))
    return kept


def strip_xet_json(value: Any) -> Any:
    """A JSON value with every ``xetHash`` key removed, at any depth."""
    if isinstance(value, dict):
        return {k: strip_xet_json(v) for k, v in value.items() if k != XET_JSON_KEY}
    if isinstance(value, list):
        return [strip_xet_json(v) for v in value]
    return value


def strip_xet_json_bytes(body: bytes) -> bytes:
    """A JSON body without ``xetHash`` keys: unchanged bytes when it has none (or is not JSON)."""
    if XET_JSON_KEY.encode() not in body:
        return body
    try:
        parsed = json.loads(body)
    except ValueError:
        return body
    return json.dumps(strip_xet_json(parsed), separators=(",", ":")).encode()
