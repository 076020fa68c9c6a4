"""The registry's JSON API: releases, their torrents and magnets, publishing (with a token), OpenAPI.

    GET  /api/info                                          public URL, announce URL, web-seed base
    GET  /api/releases?q=&org=&type=&sort=&limit=&offset=   latest release of each matching repo
    POST /api/releases                                      publish {"torrent", "classic_torrent"} (base64)
                                                            [, "torrent_parts", "classic_torrent_parts"]
    GET  /api/repos/{type}/{org}/{name}                     every release of a repo, newest first
    GET  /api/repos/{type}/{org}/{name}/latest              its newest release
    GET  /api/releases/{type}/{org}/{name}/{commit}         one release (a commit prefix of 7+ hex works)
    GET  /api/releases/{type}/{org}/{name}/{commit}/torrent[?classic=1][&part=N]
    GET  /api/releases/{type}/{org}/{name}/{commit}/magnet
    GET  /api/info-hash/{hash}                              by v1, v2 (or its 40-hex truncation), classic
    GET  /api/follows                                       followed repos and orgs, and their last check
    GET  /api/openapi.json

``{type}`` is ``model`` or ``dataset``. Errors are JSON ``{"error": "..."}`` with the HTTP status.

Publishing takes a token (``Authorization: Bearer``; 401 without one), scoped to some orgs or not (403 for a
repo of another org), two torrents of at most ``MAX_TORRENT`` bytes each (413), a publishable pair (422),
then asks the upstream (``verify``: 403 for a repo that is not public, 422 for torrents that are not the
upstream's release) and stores it verified or unverified (409 when the catalog keeps another release of the
commit). Every release's JSON says ``verified`` (and ``verified_at``).

A release spanning several torrents (``bt.metainfo``) is published with its other parts in
``torrent_parts``/``classic_torrent_parts`` (in order, after the part 0s in ``torrent``/``classic_torrent``);
its JSON says ``parts``/``classic_parts`` and gives every part's URL (``torrent_urls``/``classic_torrent_urls``,
part 0 first); ``/torrent?part=N`` serves part N, ``/api/info-hash/`` finds the release by any part's hash.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from swarmhub import __version__
from swarmhub.bt.magnet import build_magnet
from swarmhub.errors import BencodeError, MetainfoError, UsageError
from swarmhub.guard import bearer_token
from swarmhub.hub.repo import RepoType, is_commit_prefix
from swarmhub.origin.client import OriginClient
from swarmhub.registry.catalog import Catalog, Follow, Publisher, Release, Sort
from swarmhub.registry.pair import PublishRefused, TorrentPair
from swarmhub.registry.verify import Verification, verify_release
from swarmhub.serving import read_capped

__all__ = ["MAX_TORRENT", "MAX_UPLOAD", "ApiConfig", "api_routes", "content_disposition", "follow_json", "release_json"]

# A part as create cuts it (at most 30 MiB of info, with its piece layers), or a torrent of 1.3 TB in 16 MiB
# pieces (v1 and v2 hashes: 52 bytes a piece), fits.
MAX_TORRENT = 32 * 1024 * 1024
MAX_RELEASE_TORRENTS = 96 * 1024 * 1024  # every torrent of a publish: a release of ~200,000 small files
MAX_UPLOAD = MAX_RELEASE_TORRENTS * 4 // 3 + 64 * 1024  # in base64, and the JSON around them
MAX_LIMIT = 500  # releases per page (the catalog's largest)
MAX_OFFSET = 10**9
SORTS: dict[str, Sort] = {"newest": "newest", "name": "name", "size": "size"}


class ApiConfig:
    """What the API needs besides the catalog: its public URL, the anonymous client it verifies publishes
    with (None: no upstream, every publish unverified), and who to tell of a release it stored."""

    def __init__(
        self,
        public_url: str,
        on_publish: Callable[[Release], None] | None = None,
        upstream: OriginClient | None = None,
    ) -> None:
        self.public_url = public_url.rstrip("/")
        self.on_publish = on_publish
        self.upstream = upstream

    @property
    def announce_url(self) -> str:
        return f"{self.public_url}/announce"

    def webseed(self, r: Release) -> str:
        return f"{self.public_url}/webseed/{r.repo_type}/{r.repo_id}/{r.commit}/"

    def torrent_url(self, r: Release, *, classic: bool = False, part: int = 0) -> str:
        url = f"{self.public_url}/api/releases/{r.repo_type}/{r.repo_id}/{r.commit}/torrent"
        query = "&".join(q for q in ("classic=1" if classic else "", f"part={part}" if part else "") if q)
        return f"{url}?{query}" if query else url

    def magnet(self, r: Release) -> str:
        return build_magnet(
            info_hash_v1=r.info_hash_v1,
            info_hash_v2=r.info_hash_v2,
            name=r.name,
            trackers=[self.announce_url],
            webseeds=[self.webseed(r)],
        )


def release_json(r: Release, config: ApiConfig) -> dict[str, Any]:
    return {
        "repo_type": r.repo_type,
        "repo_id": r.repo_id,
        "commit": r.commit,
        "name": r.name,
        "published_at": datetime.fromtimestamp(r.published_at, UTC).isoformat(timespec="seconds"),
        "published_by": r.published_by,
        "total_size": r.total_size,
        "files": [{"path": f.path, "size": f.size, "etag": f.etag} for f in r.files],
        "info_hash_v1": r.info_hash_v1,
        "info_hash_v2": r.info_hash_v2,
        "classic_info_hash": r.classic_info_hash,
        "verified": r.verified,
        "verified_at": _when(r.verified_at),
        "magnet": config.magnet(r),
        "torrent_url": config.torrent_url(r),
        "classic_torrent_url": config.torrent_url(r, classic=True),
        "webseed": config.webseed(r),
        "parts": r.parts,
        "classic_parts": r.classic_parts,
        "torrent_urls": [config.torrent_url(r, part=i) for i in range(r.parts)],
        "classic_torrent_urls": [config.torrent_url(r, classic=True, part=i) for i in range(r.classic_parts)],
    }


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _repo_type(value: str) -> RepoType | None:
    return value if value in ("model", "dataset") else None  # type: ignore[return-value]


def api_routes(catalog: Catalog, config: ApiConfig) -> list[BaseRoute]:
    async def run(fn: Callable[..., Any], *args: Any) -> Any:
        return await anyio.to_thread.run_sync(fn, *args)

    def repo(request: Request) -> tuple[RepoType, str] | None:
        repo_type = _repo_type(request.path_params["repo_type"])
        if repo_type is None:
            return None
        return repo_type, f"{request.path_params['org']}/{request.path_params['name']}"

    async def release_at(request: Request) -> Release | None:
        found = repo(request)
        commit = request.path_params["commit"]
        if found is None or not is_commit_prefix(commit):
            return None
        release: Release | None = await run(catalog.find_commit, found[0], found[1], commit)
        return release

    async def info(request: Request) -> Response:
        return JSONResponse(
            {
                "name": "swarmhub registry",
                "version": __version__,
                "public_url": config.public_url,
                "announce_url": config.announce_url,
                "webseed_base": f"{config.public_url}/webseed/",
            }
        )

    async def list_releases(request: Request) -> Response:
        q = request.query_params
        sort = q.get("sort", "newest")
        if sort not in SORTS:
            return _error(400, "sort is one of newest, name, size")
        try:
            limit, offset = int(q.get("limit", "50")), int(q.get("offset", "0"))
        except ValueError:
            return _error(400, "limit and offset are integers")
        if not (0 <= limit <= MAX_LIMIT and 0 <= offset <= MAX_OFFSET):
            return _error(400, f"limit is 0 to {MAX_LIMIT} and offset 0 to {MAX_OFFSET}")
        repo_type = _repo_type(q["type"]) if "type" in q else None
        releases, total = await run(
            lambda: catalog.search(
                q.get("q", ""), org=q.get("org"), repo_type=repo_type, sort=SORTS[sort], limit=limit, offset=offset
            )
        )
        return JSONResponse({"total": total, "releases": [release_json(r, config) for r in releases]})

    async def repo_releases(request: Request) -> Response:
        found = repo(request)
        if found is None:
            return _error(404, "type is model or dataset")
        releases = await run(catalog.releases_of, *found)
        if not releases:
            return _error(404, f"no release of {found[1]} is published")
        return JSONResponse({"repo_id": found[1], "releases": [release_json(r, config) for r in releases]})

    async def latest(request: Request) -> Response:
        found = repo(request)
        release = await run(catalog.latest, *found) if found else None
        if release is None:
            return _error(404, f"no release of {found[1] if found else '?'} is published")
        return JSONResponse(release_json(release, config))

    async def one(request: Request) -> Response:
        release = await release_at(request)
        if release is None:
            return _error(404, "no such release")
        return JSONResponse(release_json(release, config))

    async def torrent(request: Request) -> Response:
        release = await release_at(request)
        if release is None:
            return _error(404, "no such release")
        classic = request.query_params.get("classic") in ("1", "true", "yes")
        count = release.classic_parts if classic else release.parts
        try:
            part = int(request.query_params.get("part", "0"))
        except ValueError:
            part = -1
        if not 0 <= part < count:
            return _error(
                404, f"the release has {count} {'classic' if classic else 'hybrid'} torrents: part 0 to {count - 1}"
            )
        data = await run(
            lambda: catalog.torrent(release.repo_type, release.repo_id, release.commit, classic=classic, part=part)
        )
        if data is None:
            return _error(404, "no such torrent")
        filename = f"{release.name}{'.v1' if classic else ''}{f'.part-{part}' if part else ''}.torrent"
        return Response(
            data,
            media_type="application/x-bittorrent",
            headers={
                "Content-Disposition": content_disposition(filename),
                # an unverified release's torrents change if a verified publish replaces them
                "Cache-Control": "max-age=86400" if release.verified else "no-cache",
            },
        )

    async def magnet(request: Request) -> Response:
        release = await release_at(request)
        if release is None:
            return _error(404, "no such release")
        return JSONResponse({"magnet": config.magnet(release)})

    async def by_hash(request: Request) -> Response:
        h = request.path_params["info_hash"].lower()
        if len(h) not in (40, 64) or any(c not in "0123456789abcdef" for c in h):
            return _error(400, "an info-hash is 40 or 64 hex digits")
        release = await run(catalog.by_info_hash, h)
        if release is None:
            return _error(404, f"no release has info-hash {h}")
        return JSONResponse(release_json(release, config))

    async def publish(request: Request) -> Response:
        publisher = await run(catalog.publisher, _bearer(request))
        if publisher is None:
            return JSONResponse(
                {"error": "publishing needs a valid token (Authorization: Bearer <SWARMHUB_TOKEN>)"},
                status_code=401,
                headers={"WWW-Authenticate": 'Bearer realm="swarmhub"'},
            )
        body = await read_capped(request, MAX_UPLOAD)
        if body is None:
            return _error(413, f"a publish request is at most {MAX_UPLOAD} bytes")
        try:
            pair = await run(_pair_of, body)
            release, new, verification = await _store(catalog, config, pair, publisher)
        except PublishRefused as exc:
            return _error(exc.status, str(exc))
        except (BencodeError, MetainfoError, UsageError) as exc:
            return _error(422, str(exc))
        if new and config.on_publish is not None:
            config.on_publish(release)
        answer = {**release_json(release, config), "new": new}
        if not release.verified:
            answer["unverified_reason"] = verification.why_not
        return JSONResponse(answer, status_code=201 if new else 200)

    async def follows(request: Request) -> Response:
        listed = await run(catalog.follows)
        return JSONResponse({"follows": [follow_json(f) for f in listed]})

    async def openapi(request: Request) -> Response:
        return JSONResponse(OPENAPI)

    prefix = "/api/releases/{repo_type}/{org}/{name}/{commit}"
    return [
        Route("/api/info", info),
        Route("/api/openapi.json", openapi),
        Route("/api/releases", list_releases, methods=["GET"]),
        Route("/api/releases", publish, methods=["POST"]),
        Route("/api/repos/{repo_type}/{org}/{name}", repo_releases),
        Route("/api/repos/{repo_type}/{org}/{name}/latest", latest),
        Route(prefix, one),
        Route(prefix + "/torrent", torrent),
        Route(prefix + "/magnet", magnet),
        Route("/api/info-hash/{info_hash}", by_hash),
        Route("/api/follows", follows),
    ]


def _bearer(request: Request) -> str:
    return bearer_token(request.headers.get("authorization")) or ""


def _pair_of(body: bytes) -> TorrentPair:
    """The torrents of a publish request's body, parsed and checked (in a worker thread: up to 96 MiB)."""
    try:
        payload = json.loads(body)
        hybrid = base64.b64decode(payload["torrent"], validate=True)
        classic = base64.b64decode(payload["classic_torrent"], validate=True)
        hybrid_parts = [base64.b64decode(t, validate=True) for t in payload.get("torrent_parts", [])]
        classic_parts = [base64.b64decode(t, validate=True) for t in payload.get("classic_torrent_parts", [])]
    except (ValueError, KeyError, TypeError, binascii.Error, AttributeError):
        raise PublishRefused(
            'send JSON {"torrent": <base64 hybrid>, "classic_torrent": <base64 v1>} (and, for a release of '
            'several torrents, "torrent_parts" and "classic_torrent_parts": lists of base64)',
            status=400,
        ) from None
    if max(map(len, [hybrid, classic, *hybrid_parts, *classic_parts])) > MAX_TORRENT:
        raise PublishRefused(f"a published torrent is at most {MAX_TORRENT} bytes", status=413)
    return TorrentPair.parse(hybrid, classic, hybrid_parts, classic_parts)


async def _store(
    catalog: Catalog, config: ApiConfig, pair: TorrentPair, publisher: Publisher
) -> tuple[Release, bool, Verification]:
    """A parsed pair, published by ``publisher``: its scope, then the upstream (``verify``), then the catalog."""
    ref = pair.repo
    if not publisher.may_publish(ref.repo_id):
        orgs = ", ".join(sorted(publisher.orgs or ()))
        raise PublishRefused(f"token {publisher.name!r} publishes repos of {orgs} only, not {ref.repo_id}", status=403)
    verification = await verify_release(config.upstream, ref, pair.files)
    release, new = await anyio.to_thread.run_sync(
        lambda: catalog.store(pair, publisher.name, verified=verification.verified)
    )
    return release, new, verification


def content_disposition(filename: str) -> str:
    """RFC 6266 ``attachment``: the name as UTF-8 in ``filename*`` (RFC 8187), and an ASCII ``filename`` for
    clients that read only that one (anything but printable ASCII, quotes and backslashes as ``_``)."""
    fallback = "".join(c if " " <= c <= "~" and c not in '"\\' else "_" for c in filename)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


def _when(timestamp: float | None) -> str | None:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds") if timestamp else None


def follow_json(f: Follow) -> dict[str, Any]:
    """A follow as ``GET /api/follows`` and ``registry follow --json`` show it. An org follow has ``repo_id``
    null, its listing's outcome in ``checked_at``/``last_error``, and ``repos``, each with its last check."""
    out: dict[str, Any] = {
        "kind": f.kind,
        "repo_type": f.repo_type,
        "org": f.repo_id if f.is_org else f.repo_id.split("/")[0],
        "repo_id": None if f.is_org else f.repo_id,
        "branch": f.branch,
        "checked_at": _when(f.checked_at),
        "last_commit": f.last_commit,
        "last_error": f.last_error,
    }
    if f.is_org:
        out["repos"] = [
            {
                "repo_id": r.repo_id,
                "checked_at": _when(r.checked_at),
                "last_commit": r.last_commit,
                "last_error": r.last_error,
            }
            for r in f.repos
        ]
    return out


def _op(summary: str, *, params: tuple[str, ...] = (), body: bool = False, binary: bool = False) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "parameters": [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}} for p in params],
        "responses": {
            "200": {
                "description": "OK",
                "content": {"application/x-bittorrent" if binary else "application/json": {}},
            },
            "404": {"description": "not found"},
        },
    }
    if body:
        op["requestBody"] = {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["torrent", "classic_torrent"],
                        "properties": {
                            "torrent": {"type": "string", "format": "byte", "description": "the hybrid"},
                            "classic_torrent": {"type": "string", "format": "byte", "description": "v1"},
                            "torrent_parts": {
                                "type": "array",
                                "items": {"type": "string", "format": "byte"},
                                "description": "a release of several torrents: the hybrid parts after part 0",
                            },
                            "classic_torrent_parts": {
                                "type": "array",
                                "items": {"type": "string", "format": "byte"},
                                "description": "the classic parts after part 0",
                            },
                        },
                    }
                }
            },
        }
        op["security"] = [{"bearer": []}]
        op["responses"]["201"] = {"description": "published"}
        op["responses"]["401"] = {"description": "no or unknown token"}
        op["responses"]["403"] = {"description": "the token may not publish this org, or the repo is not public"}
        op["responses"]["409"] = {"description": "another release of the commit is kept (the error says why)"}
        op["responses"]["413"] = {"description": f"a torrent over {MAX_TORRENT} bytes, or a body over {MAX_UPLOAD}"}
        op["responses"]["422"] = {"description": "torrents refused, or not the upstream's release (the error says why)"}
    return op


_REL = ("repo_type", "org", "name", "commit")
OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "swarmhub registry", "version": __version__},
    "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    "paths": {
        "/api/info": {"get": _op("public URL, announce URL, web-seed base")},
        "/api/releases": {
            "get": _op("search releases (q, org, type, sort=newest|name|size, limit, offset)"),
            "post": _op("publish a release: its hybrid and classic torrents", body=True),
        },
        "/api/repos/{repo_type}/{org}/{name}": {"get": _op("a repo's releases", params=_REL[:3])},
        "/api/repos/{repo_type}/{org}/{name}/latest": {"get": _op("a repo's newest release", params=_REL[:3])},
        "/api/releases/{repo_type}/{org}/{name}/{commit}": {"get": _op("one release", params=_REL)},
        "/api/releases/{repo_type}/{org}/{name}/{commit}/torrent": {
            "get": _op("the hybrid .torrent (?classic=1: the v1 one)", params=_REL, binary=True)
        },
        "/api/releases/{repo_type}/{org}/{name}/{commit}/magnet": {"get": _op("the magnet link", params=_REL)},
        "/api/info-hash/{info_hash}": {"get": _op("a release by info-hash", params=("info_hash",))},
        "/api/follows": {"get": _op("repos and orgs the registry follows, with their last checks (an org's per repo)")},
    },
}
