"""The dev hub's two ASGI apps: a Hub-compatible origin and the "CDN" its LFS downloads redirect to.

What huggingface_hub relies on, and so what the origin does (``file_download.get_hf_file_metadata``):

- ``/resolve/`` of a regular file answers ``307`` with a *relative* ``Location`` to
  ``/api/resolve-cache/...``; the client follows it on the same host and reads ``ETag`` (git blob id),
  ``X-Repo-Commit`` and ``Content-Length`` from there;
- ``/resolve/`` of an LFS file answers ``302`` to another host (the CDN): the client stops there, reads
  ``X-Linked-Etag`` (SHA-256), ``X-Linked-Size`` and ``X-Repo-Commit`` from the redirect itself, and later
  downloads the signed URL *without* its Authorization header;
- errors carry ``X-Error-Code`` (``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``, ``GatedRepo``)
  and ``X-Error-Message``, which the client maps to its exception types;
- ``/tree/`` pages are linked with ``Link: <absolute url>; rel="next"`` (``utils/_pagination.py``), and so
  are repo listings (``/api/models?author=ORG``, ``/api/datasets?...``; ``limit`` sets the page size,
  ``expand=sha`` adds each repo's commit, as ``HfApi.list_models(author=..., expand=["sha"])`` asks);
- a repo's info (``/api/models/REPO[/revision/REV]``) with ``expand=...`` (repeated) holds only ``_id``,
  ``id`` and the properties named, as ``HfApi.repo_info(expand=[...])`` gets them;
- ``POST /api/{models,datasets}/REPO/paths-info/REV`` (``HfApi.get_paths_info``, ``HfFileSystem.info``) takes
  form fields ``paths=...`` (repeated) and ``expand=true|false``, or the same as a JSON object, and answers
  the ``/tree`` entries of the paths that exist (``expand`` adds ``lastCommit``), leaving out the others;

No Xet markers are sent unless ``DevHubSettings.xet`` asks (for tests of what clients do with them), so
clients take the plain HTTP path.
"""

from __future__ import annotations

import base64
import bisect
import hashlib
import hmac
import json
import math
import re
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, unquote

import anyio
import anyio.to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from swarmhub.devhub.faults import FaultInjection, Faults, RequestLog, RequestLogging, ServerName
from swarmhub.devhub.repos import RepoSnapshot, RepoStore
from swarmhub.errors import EntryNotFound, GatedRepoError, OriginError, RepoNotFound, RevisionNotFound
from swarmhub.hub.repo import RepoType
from swarmhub.serving import read_capped

__all__ = [
    "DevHubSettings",
    "DevHubState",
    "RangeNotSatisfiable",
    "cdn_app",
    "origin_app",
    "parse_byte_range",
    "sign_lfs_url",
]

_CHUNK = 256 * 1024


@dataclass(frozen=True)
class DevHubSettings:
    """What a test may change on a running hub, by replacing the whole object (``dataclasses.replace``)."""

    page_size: int = 1000  # /tree entries and listed repos per page (the Hub: 1000), unless ?limit= says
    url_lifetime: float = 3600.0  # seconds a signed CDN URL stays valid
    tree_404: bool = False  # answer 404 on /tree, like origins that only offer ``siblings``
    gated: Mapping[str, str] = field(default_factory=dict)  # "org/name" or "datasets/org/name" -> token
    cdn_url: str | None = None  # base URL of the CDN app; default: the request's host on ``cdn_port``
    xet: bool = False  # send the Hub's Xet markers for LFS files (X-Xet-Hash, Link rel=xet-auth, tree xetHash)


@dataclass
class DevHubState:
    """Everything both apps share."""

    store: RepoStore
    settings: DevHubSettings = field(default_factory=DevHubSettings)
    log: RequestLog = field(default_factory=RequestLog)
    faults: Faults = field(default_factory=Faults)
    secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    cdn_port: int | None = None


class _Problem(Exception):
    """An HTTP error answer, Hub style."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}

    def response(self) -> Response:
        headers = dict(self.headers)
        if self.code is not None:
            headers |= {"X-Error-Code": self.code, "X-Error-Message": self.message}
        return JSONResponse({"error": self.message}, self.status, headers)


# The Hub's error codes for the errors the store raises (huggingface_hub utils/_http.py hf_raise_for_status).
_CODES: tuple[tuple[type[OriginError], str], ...] = (
    (RepoNotFound, "RepoNotFound"),
    (RevisionNotFound, "RevisionNotFound"),
    (EntryNotFound, "EntryNotFound"),
    (GatedRepoError, "GatedRepo"),
)


def _problem_of(exc: OriginError, headers: dict[str, str] | None = None) -> _Problem:
    code = next((c for t, c in _CODES if isinstance(exc, t)), None)
    return _Problem(exc.status or 500, exc.message, code, headers)


class RangeNotSatisfiable(ValueError):
    pass


def parse_byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The inclusive (first, last) byte of a single ``Range: bytes=...`` over ``size`` bytes.

    None means "send the whole file": no header, a malformed one, or several ranges (RFC 9110 §14.2 lets a
    server ignore Range). ``RangeNotSatisfiable`` means 416.
    """
    if not header:
        return None
    m = re.fullmatch(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", header)
    if m is None or m.group(1) == m.group(2) == "":
        return None
    first, last = m.group(1), m.group(2)
    if first == "":  # suffix range: the last N bytes
        n = int(last)
        if n == 0 or size == 0:
            raise RangeNotSatisfiable(header)
        return max(size - n, 0), size - 1
    start = int(first)
    end = size - 1 if last == "" else min(int(last), size - 1)
    if last != "" and int(last) < start:
        return None  # RFC 9110 §14.1.1: an invalid range spec; ignore the header
    if start >= size:
        raise RangeNotSatisfiable(header)
    return start, end


def sign_lfs_url(secret: bytes, sha256: str, expires: int) -> str:
    return hmac.new(secret, f"{sha256}{expires}".encode(), hashlib.sha256).hexdigest()


async def _file_chunks(local: Path, start: int, length: int) -> AsyncIterator[bytes]:
    async with await anyio.open_file(local, "rb") as f:
        await f.seek(start)
        while length > 0:
            chunk = await f.read(min(_CHUNK, length))
            if not chunk:
                return
            length -= len(chunk)
            yield chunk


def _serve_file(request: Request, local: Path, size: int, headers: dict[str, str]) -> Response:
    headers = {**headers, "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
    try:
        byte_range = parse_byte_range(request.headers.get("range"), size)
    except RangeNotSatisfiable:
        return Response(status_code=416, headers={**headers, "Content-Range": f"bytes */{size}"})
    status, (start, end) = (200, (0, size - 1)) if byte_range is None else (206, byte_range)
    if status == 206:
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    headers["Content-Length"] = str(end - start + 1)
    if request.method == "HEAD":
        return Response(status_code=status, headers=headers)
    return StreamingResponse(_file_chunks(local, start, end - start + 1), status, headers)


# --- the origin -------------------------------------------------------------------------------------------

_REPO = r"(?P<repo>[^/]+(?:/[^/]+)?)"  # "name" or "org/name"; tried as org/name first
_Handler = Callable[[DevHubState, Request, dict[str, str]], Awaitable[Response]]
_Routes = tuple[tuple[re.Pattern[str], frozenset[str], _Handler], ...]
_READ, _POST = frozenset({"GET", "HEAD"}), frozenset({"POST"})  # a route's methods; others get 405


def _repo_key(repo_type: RepoType, repo_id: str) -> str:
    return repo_id if repo_type == "model" else f"{repo_type}s/{repo_id}"


def _check_gate(state: DevHubState, request: Request, repo_type: RepoType, repo_id: str) -> None:
    token = state.settings.gated.get(_repo_key(repo_type, repo_id))
    if token is None:
        return
    given = request.headers.get("authorization", "")
    if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
        raise GatedRepoError(
            f"Access to {repo_type} {repo_id} is restricted. You must have access to it and be authenticated "
            "to access it. Please log in.",
            repo_id=repo_id,
            status=401,
        )


async def _snapshot(state: DevHubState, request: Request, params: dict[str, str]) -> RepoSnapshot:
    repo_type: RepoType = "dataset" if params.get("type", "models") == "datasets" else "model"
    repo_id = params["repo"]
    await anyio.to_thread.run_sync(state.store.folder, repo_type, repo_id)  # RepoNotFound before GatedRepo
    _check_gate(state, request, repo_type, repo_id)
    snap: RepoSnapshot = await anyio.to_thread.run_sync(state.store.snapshot, repo_type, repo_id)
    revision = params.get("rev")
    if revision is not None and revision not in ("main", "refs/heads/main", snap.commit):
        raise RevisionNotFound(f"Invalid rev id: {revision}", repo_id=repo_id, status=404)
    return snap


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


async def _info(state: DevHubState, request: Request, params: dict[str, str]) -> Response:
    snap = await _snapshot(state, request, params)
    blobs = request.query_params.get("blobs", "").lower() in ("1", "true")
    siblings: list[dict[str, object]] = []
    for f in snap.files:
        sibling: dict[str, object] = {"rfilename": f.path}
        if blobs:
            sibling |= {"blobId": f.blob_id, "size": f.size}
            if f.lfs is not None:
                sibling["lfs"] = {
                    "sha256": f.lfs.sha256,
                    "size": f.lfs.size,
                    "pointerSize": f.lfs.pointer_size,
                }
        siblings.append(sibling)
    gated = _repo_key(snap.repo_type, snap.repo_id) in state.settings.gated
    body: dict[str, object] = {
        "_id": snap.commit[:24],
        "id": snap.repo_id,
        "author": snap.repo_id.split("/")[0] if "/" in snap.repo_id else None,
        "sha": snap.commit,
        "lastModified": _iso(snap.last_modified_ns),
        "createdAt": _iso(snap.last_modified_ns),
        "private": False,
        "gated": "auto" if gated else False,
        "disabled": False,
        "downloads": 0,
        "likes": 0,
        "tags": [],
        "siblings": siblings,
    }
    if snap.repo_type == "model":
        body["modelId"] = snap.repo_id
    expand = request.query_params.getlist("expand")
    if expand:  # as the Hub: only the properties asked for (a 100,000-file listing is 5 MB of siblings)
        body = {k: v for k, v in body.items() if k in ("_id", "id", *expand)}
    return JSONResponse(body)


def _xet_hash(sha256: str) -> str:
    return hashlib.sha256(f"xet:{sha256}".encode()).hexdigest()  # a stand-in: 64 hex, as a Xet hash


def _with_xet_hashes(state: DevHubState, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if not state.settings.xet:
        return entries
    return [{**e, "xetHash": _xet_hash(e["lfs"]["oid"])} if "lfs" in e else e for e in entries]


def _cursor(path: str) -> str:
    return base64.urlsafe_b64encode(path.encode()).decode()


async def _tree(state: DevHubState, request: Request, params: dict[str, str]) -> Response:
    if state.settings.tree_404:
        return JSONResponse({"error": "Not Found"}, 404)
    snap = await _snapshot(state, request, params)
    recursive = request.query_params.get("recursive", "").lower() in ("1", "true")
    try:
        entries = snap.tree(params.get("path", ""), recursive=recursive)
    except EntryNotFound as exc:
        raise _problem_of(exc, {"X-Repo-Commit": snap.commit}) from exc
    start = 0
    if cursor := request.query_params.get("cursor"):
        try:
            after = base64.urlsafe_b64decode(cursor.encode()).decode()
        except ValueError:
            raise _Problem(400, "Invalid cursor") from None
        start = bisect.bisect_right(entries, after, key=lambda e: e["path"])  # not a list of every path per page
    page = _with_xet_hashes(state, entries[start : start + state.settings.page_size])
    headers = {}
    if start + len(page) < len(entries):
        next_url = request.url.include_query_params(cursor=_cursor(page[-1]["path"]))
        headers["Link"] = f'<{next_url}>; rel="next"'
    return JSONResponse(page, headers=headers)


# The Hub answers 413 "too many parameters" past 1,000 form fields (huggingface_hub#1503; its body parser's
# limit, counting every field, expand too), so huggingface_hub asks for 500 paths at a time (_commit_api.py).
_PATHS_INFO_MAX_FIELDS = 1000
_PATHS_INFO_MAX_BYTES = 1 << 20
_FORM = "application/x-www-form-urlencoded"


def _flag(value: str, name: str) -> bool:
    """A form boolean: httpx sends ``true``/``false``, requests ``True``/``False``."""
    if value.lower() in ("1", "true"):
        return True
    if value.lower() in ("0", "false"):
        return False
    raise _Problem(400, f"Invalid {name}: {value[:20]}")


def _paths_query(body: bytes, content_type: str) -> tuple[list[str], bool]:
    """The (paths, expand) a paths-info body asks for: form fields, as huggingface_hub sends them, or JSON."""
    media_type = content_type.partition(";")[0].strip().lower()
    if media_type == "application/json":
        return _paths_query_json(body)
    if media_type not in ("", _FORM):
        raise _Problem(415, f"Unsupported Content-Type {media_type[:80]}: send {_FORM} or application/json")
    try:
        fields = parse_qsl(body.decode(), errors="strict", max_num_fields=_PATHS_INFO_MAX_FIELDS)
    except UnicodeDecodeError:
        raise _Problem(400, "The form is not UTF-8") from None
    except ValueError:  # parse_qsl: "Max number of fields exceeded"
        raise _Problem(413, f"too many parameters (at most {_PATHS_INFO_MAX_FIELDS})") from None
    expand = [v for k, v in fields if k == "expand"]
    return [v for k, v in fields if k == "paths"], _flag(expand[-1], "expand") if expand else False


def _paths_query_json(body: bytes) -> tuple[list[str], bool]:
    try:
        query = json.loads(body)
    except ValueError:
        raise _Problem(400, "The body is not JSON") from None
    if not isinstance(query, dict):
        raise _Problem(400, 'The body is not a JSON object {"paths": [...], "expand": false}')
    paths, expand = query.get("paths", []), query.get("expand", False)
    paths = [paths] if isinstance(paths, str) else paths
    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
        raise _Problem(400, "paths must be a list of strings")
    if len(paths) > _PATHS_INFO_MAX_FIELDS:
        raise _Problem(413, f"too many paths (at most {_PATHS_INFO_MAX_FIELDS})")
    if not isinstance(expand, bool):
        raise _Problem(400, "expand must be true or false")
    return paths, expand


async def _paths_info(state: DevHubState, request: Request, params: dict[str, str]) -> Response:
    """The tree entries of the asked paths that exist, in the order asked, each once."""
    body = await read_capped(request, _PATHS_INFO_MAX_BYTES)
    if body is None:
        raise _Problem(413, f"request entity too large (at most {_PATHS_INFO_MAX_BYTES >> 20} MiB)")
    paths, expand = _paths_query(body, request.headers.get("content-type", ""))
    snap = await _snapshot(state, request, params)
    entries = [e for p in dict.fromkeys(paths) if (e := snap.path_info(p)) is not None]
    if expand:
        # A dev hub repo has one commit, so it is every path's last one.
        last = {"id": snap.commit, "title": "Snapshot of the repo folder", "date": _iso(snap.last_modified_ns)}
        entries = [{**e, "lastCommit": last} for e in entries]
    return JSONResponse(_with_xet_hashes(state, entries))


_LISTED_FIELDS = ("author", "sha", "lastModified", "private", "downloads", "likes", "tags")
_DEFAULT_FIELDS = ("private", "downloads", "likes", "tags")  # the Hub's listing without expand: no sha


def _listed(state: DevHubState, repo_type: RepoType, repo_id: str, expand: list[str]) -> dict[str, Any] | None:
    """One listing entry: ``_id`` and ``id``, then the fields ``expand`` asks for, else the default ones."""
    try:
        snap = state.store.snapshot(repo_type, repo_id)
    except RepoNotFound:
        return None  # removed since it was listed
    values: dict[str, object] = {
        "author": repo_id.split("/")[0] if "/" in repo_id else None,
        "sha": snap.commit,
        "lastModified": _iso(snap.last_modified_ns),
        "private": False,
        "downloads": 0,
        "likes": 0,
        "tags": [],
    }
    fields = [f for f in _LISTED_FIELDS if f in expand] if expand else _DEFAULT_FIELDS
    entry: dict[str, Any] = {"_id": snap.commit[:24], "id": repo_id} | {k: values[k] for k in fields}
    if repo_type == "model" and not expand:
        entry["modelId"] = repo_id
    return entry


async def _list_repos(state: DevHubState, request: Request, params: dict[str, str]) -> Response:
    """``/api/models?author=ORG``: the Hub's listing, paged by ``limit`` (else ``page_size``) and a cursor."""
    repo_type: RepoType = "dataset" if params["type"] == "datasets" else "model"
    q = request.query_params
    raw_limit = q.get("limit", str(state.settings.page_size))
    if not raw_limit.isdigit() or int(raw_limit) < 1:
        raise _Problem(400, f"Invalid limit: {raw_limit[:20]}")
    limit = min(int(raw_limit), 1000)
    expand = [*q.getlist("expand"), *q.getlist("expand[]")]
    ids = await anyio.to_thread.run_sync(state.store.repo_ids, repo_type, q.get("author") or None)
    start = 0
    if cursor := q.get("cursor"):
        try:
            after = base64.urlsafe_b64decode(cursor.encode()).decode()
        except ValueError:
            raise _Problem(400, "Invalid cursor") from None
        start = bisect.bisect_right(ids, after)
    page = ids[start : start + limit]
    entries = [await anyio.to_thread.run_sync(_listed, state, repo_type, r, expand) for r in page]
    headers = {}
    if start + len(page) < len(ids):
        next_url = request.url.include_query_params(cursor=_cursor(page[-1]), limit=limit)
        headers["Link"] = f'<{next_url}>; rel="next"'
    return JSONResponse([e for e in entries if e is not None], headers=headers)


def _cdn_base(state: DevHubState, request: Request) -> str:
    if state.settings.cdn_url:
        return state.settings.cdn_url.rstrip("/")
    host = request.url.hostname or "127.0.0.1"
    host = f"[{host}]" if ":" in host else host
    return f"{request.url.scheme}://{host}:{state.cdn_port}"


async def _resolve(state: DevHubState, request: Request, params: dict[str, str]) -> Response:
    snap = await _snapshot(state, request, params)
    try:
        f = snap.file(params["path"])
    except EntryNotFound as exc:
        raise _problem_of(exc, {"X-Repo-Commit": snap.commit}) from exc
    headers = {"X-Repo-Commit": snap.commit, "ETag": f'"{f.etag}"'}
    if f.lfs is None:
        # Relative, as the Hub sends it: the client follows it on the same host (keeping its token).
        location = f"/api/resolve-cache/{snap.repo_type}s/{snap.repo_id}/{snap.commit}/{quote(f.path)}"
        return Response(status_code=307, headers={**headers, "Location": location})
    expires = math.ceil(time.time() + state.settings.url_lifetime)
    sig = sign_lfs_url(state.secret, f.lfs.sha256, expires)
    # CloudFront's canned-policy signed URL, as the Hub's cdn-lfs links are: the expiry in plain sight.
    query = f"Expires={expires}&Signature={sig}&Key-Pair-Id=DEVHUB"
    location = f"{_cdn_base(state, request)}/lfs/{f.lfs.sha256}?{query}"
    headers |= {"X-Linked-Etag": f'"{f.lfs.sha256}"', "X-Linked-Size": str(f.size), "Location": location}
    if state.settings.xet:
        token_url = f"{request.base_url}api/{snap.repo_type}s/{snap.repo_id}/xet-read-token/{snap.commit}"
        headers |= {"X-Xet-Hash": _xet_hash(f.lfs.sha256), "Link": f'<{token_url}>; rel="xet-auth"'}
    return Response(status_code=302, headers=headers)


async def _resolve_cache(state: DevHubState, request: Request, params: dict[str, str]) -> Response:
    snap = await _snapshot(state, request, params)
    try:
        f = snap.file(params["path"])
    except EntryNotFound as exc:
        raise _problem_of(exc, {"X-Repo-Commit": snap.commit}) from exc
    return _serve_file(request, f.local, f.size, {"ETag": f'"{f.etag}"', "X-Repo-Commit": snap.commit})


# Matched against the raw (still percent-encoded) path, so "refs%2Fpr%2F1" stays one segment.
_ORIGIN_ROUTES: _Routes = (
    (re.compile(r"/api/(?P<type>models|datasets)"), _READ, _list_repos),
    (re.compile(rf"/api/(?P<type>models|datasets)/{_REPO}/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?"), _READ, _tree),
    (re.compile(rf"/api/(?P<type>models|datasets)/{_REPO}/paths-info/(?P<rev>[^/]+)"), _POST, _paths_info),
    (re.compile(rf"/api/(?P<type>models|datasets)/{_REPO}/revision/(?P<rev>[^/]+)"), _READ, _info),
    (re.compile(rf"/api/(?P<type>models|datasets)/{_REPO}"), _READ, _info),
    (
        re.compile(rf"/api/resolve-cache/(?P<type>models|datasets)/{_REPO}/(?P<rev>[0-9a-f]{{40}})/(?P<path>.+)"),
        _READ,
        _resolve_cache,
    ),
    (re.compile(rf"/(?P<type>datasets)/{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)"), _READ, _resolve),
    (re.compile(rf"/{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)"), _READ, _resolve),
)


# --- the CDN ----------------------------------------------------------------------------------------------


def _s3_error(status: int, code: str, message: str) -> Response:
    body = f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
    body += "</Error>"
    return Response(body, status, media_type="application/xml")


async def _lfs_object(state: DevHubState, request: Request, params: dict[str, str]) -> Response:
    sha256 = params["sha"]
    try:
        expires = int(request.query_params.get("Expires", ""))
    except ValueError:
        return _s3_error(403, "AccessDenied", "Missing Key-Pair-Id query parameter or cookie value")
    good = sign_lfs_url(state.secret, sha256, expires)
    if not hmac.compare_digest(good, request.query_params.get("Signature", "")):
        return _s3_error(403, "SignatureDoesNotMatch", "The request signature we calculated does not match")
    if expires < time.time():
        return _s3_error(403, "AccessDenied", "Request has expired")
    found = await anyio.to_thread.run_sync(state.store.lfs_object, sha256)
    if found is None:
        return _s3_error(404, "NoSuchKey", "The specified key does not exist.")
    return _serve_file(request, found[0], found[1], {"ETag": f'"{sha256}"'})


_CDN_ROUTES: _Routes = ((re.compile(r"/lfs/(?P<sha>[0-9a-f]{64})"), _READ, _lfs_object),)


class _Router:
    def __init__(self, state: DevHubState, routes: _Routes) -> None:
        self.state = state
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return  # no lifespan or websocket support needed
        request = Request(scope, receive)
        try:
            response = await self._dispatch(request)
        except _Problem as problem:
            response = problem.response()
        except OriginError as exc:
            response = _problem_of(exc).response()
        await response(scope, receive, send)

    async def _dispatch(self, request: Request) -> Response:
        # ASGI's raw_path has no query string, but httpx's ASGITransport puts it there.
        raw = request.scope.get("raw_path") or quote(request.scope["path"]).encode()
        path = raw.decode("latin-1").split("?", 1)[0]
        for pattern, methods, handler in self.routes:
            m = pattern.fullmatch(path)
            if m is None:
                continue
            if request.method not in methods:
                raise _Problem(405, "Method Not Allowed", headers={"Allow": ", ".join(sorted(methods))})
            params = {k: unquote(v) for k, v in m.groupdict().items() if v}
            return await handler(self.state, request, params)
        raise _Problem(404, "Not Found")


def _wrap(state: DevHubState, routes: _Routes, name: ServerName) -> ASGIApp:
    # The log is outermost, so it records what the client really received (after faults).
    return RequestLogging(FaultInjection(_Router(state, routes), state.faults), state.log, name)


def origin_app(state: DevHubState) -> ASGIApp:
    return _wrap(state, _ORIGIN_ROUTES, "origin")


def cdn_app(state: DevHubState) -> ASGIApp:
    return _wrap(state, _CDN_ROUTES, "cdn")
