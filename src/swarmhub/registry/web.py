"""The registry's website: server-rendered HTML that works without JavaScript and without any outside asset.

Pages (mounted next to the JSON API, whose torrent URLs they link to)::

    GET /                                   index: ?q=text&sort=newest|name|size|seeders&org=ORG&type=TYPE&page=N
    GET /{models|datasets}/{org}/{name}     a repo: its releases, newest first (?page=N), and the files (1,000 a
                                            page: ?files=N), torrents, magnet and swarm health of the selected
                                            one (?commit=, else the latest)
    GET /static/site.css, /static/site.js   one stylesheet; one script (the copy buttons: enhancement only)

Everything a publisher chose (repo ids, file paths, names) reaches the page through Jinja2's autoescaping, and
a Content-Security-Policy that allows only our own stylesheet and script is the second fence. Catalog queries
(SQLite, blocking) run in worker threads; ``health`` runs on the event loop, where the tracker's swarms live.
Sorting by seeders ranks every matching repo by live counts, so it reads every matching latest release (2,000
repos: 0.05 s, 10,000: 0.25 s) and keeps that list a few seconds; the other sorts are the catalog's, one page
of 50 at a time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import quote, urlencode

import anyio.to_thread
import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from swarmhub.bt.magnet import build_magnet
from swarmhub.errors import UsageError
from swarmhub.hub.repo import RepoType, is_commit_prefix, validate_repo_id
from swarmhub.registry.catalog import Catalog, Release

__all__ = [
    "PAGE_SIZE",
    "SORTS",
    "SwarmHealth",
    "human_size",
    "magnet_uri",
    "pull_command",
    "torrent_path",
    "utc_iso",
    "website_routes",
]

PAGE_SIZE: Final = 50
SORTS: Final = ("newest", "name", "size", "seeders")
WebSort = Literal["newest", "name", "size", "seeders"]
MAX_QUERY = 200  # characters of search text; repo ids are at most 96
_CATALOG_CHUNK = 500  # the catalog's largest page
FILES_PAGE = 1000  # files of a release listed per page

_PLURAL: Final[dict[RepoType, str]] = {"model": "models", "dataset": "datasets", "space": "spaces"}
_UNITS: Final = ("B", "kB", "MB", "GB", "TB", "PB")
_HERE = Path(__file__).parent

# Health numbers are live: browsers revalidate. No inline script or style anywhere, so the policy can forbid them.
_HEADERS: Final = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; "
        "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


@dataclass(frozen=True)
class SwarmHealth:
    """Live counts of a release's swarm, as the tracker sees them (BEP 48 scrape fields)."""

    seeders: int  # complete
    leechers: int  # incomplete
    completed: int  # downloaded


Health = Callable[[Release], SwarmHealth]


class _PageError(Exception):
    """A request the website answers with an error page (status and one line saying why)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# ------------------------------------------------------------------------------------------ formatting


def human_size(n: int) -> str:
    """Decimal units, as the Hub shows sizes: ``999 B``, ``1.5 GB``, ``548 MB``."""
    if n < 1000:
        return f"{n} B"
    value, unit = float(n), 0
    while value >= 999.5 and unit < len(_UNITS) - 1:  # 999.6 kB shows as 1.0 MB, not 1000 kB
        value, unit = value / 1000, unit + 1
    return f"{value:.1f} {_UNITS[unit]}" if value < 99.95 else f"{value:.0f} {_UNITS[unit]}"


def utc_iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def torrent_path(release: Release, *, classic: bool = False, part: int = 0) -> str:
    """The JSON API's .torrent URL path: the hybrid, or the classic v1 one with ``?classic=1``; ``part`` N of a
    release of several torrents with ``part=N``."""
    path = f"/api/releases/{release.repo_type}/{quote(release.repo_id)}/{release.commit}/torrent"
    query = "&".join(q for q in ("classic=1" if classic else "", f"part={part}" if part else "") if q)
    return f"{path}?{query}" if query else path


def magnet_uri(release: Release, public_url: str) -> str:
    """BEP 9 + BEP 52: both info-hashes of the hybrid, its name, the registry's tracker and web seed (BEP 19)."""
    base = public_url.rstrip("/")
    return build_magnet(
        release.info_hash_v1,
        release.info_hash_v2,
        release.name,
        trackers=[f"{base}/announce"],
        webseeds=[f"{base}/webseed/{release.repo_type}/{release.repo_id}/{release.commit}/"],
    )


def pull_command(release: Release, *, latest: bool) -> str:
    """What a user types to get this release: the repo name for the latest, ``@commit`` for an older one."""
    target = release.repo_id if latest else f"{release.repo_id}@{release.commit}"
    kind = "" if release.repo_type == "model" else f"--repo-type {release.repo_type} "
    return f"swarmhub pull {kind}{target}"


def repo_path(repo_type: RepoType, repo_id: str, **query: str | int) -> str:
    path = f"/{_PLURAL[repo_type]}/{quote(repo_id)}"
    return f"{path}?{urlencode(query)}" if query else path


# --------------------------------------------------------------------------------------------- queries


@dataclass(frozen=True)
class IndexQuery:
    text: str
    sort: WebSort
    org: str | None
    repo_type: RepoType | None
    page: int

    def link(self, **changes: str | int | None) -> str:
        """``/`` with this query's parameters, changed as given (``None`` drops one); page 1 and defaults omitted."""
        values: dict[str, str | int | None] = {
            "q": self.text,
            "sort": self.sort,
            "org": self.org,
            "type": self.repo_type,
            "page": self.page,
        }
        values.update(changes)
        if values["sort"] == "newest":
            values["sort"] = None
        if values["page"] == 1:
            values["page"] = None
        kept = {k: v for k, v in values.items() if v not in (None, "")}
        return "/?" + urlencode(kept) if kept else "/"


_NO_QUERY: Final = IndexQuery("", "newest", None, None, 1)  # the header's search box on other pages


def _page_number(params: Mapping[str, str], name: str = "page") -> int:
    raw = params.get(name, "1") or "1"
    if not raw.isdigit() or not 1 <= int(raw) <= 1_000_000:
        raise _PageError(400, f"{name} {raw[:20]!r} is not a page number (1, 2, …)")
    return int(raw)


def parse_index_query(params: Mapping[str, str]) -> IndexQuery:
    text = params.get("q", "").strip()
    if len(text) > MAX_QUERY:
        raise _PageError(400, f"the search text is longer than {MAX_QUERY} characters")
    sort = params.get("sort", "newest") or "newest"
    if sort not in SORTS:
        raise _PageError(400, f"sort {sort[:20]!r} is not one of {', '.join(SORTS)}")
    kind = params.get("type", "") or None
    if kind is not None and kind not in _PLURAL:
        raise _PageError(400, f"type {kind[:20]!r} is not one of {', '.join(_PLURAL)}")
    org = params.get("org", "").strip() or None
    return IndexQuery(text, sort, org, kind, _page_number(params))  # type: ignore[arg-type]


def _all_latest(catalog: Catalog, query: IndexQuery) -> list[Release]:
    """Every matching repo's latest release, newest first (the catalog pages at most 500 at a time)."""
    found: list[Release] = []
    while True:
        chunk, total = catalog.search(
            query.text, org=query.org, repo_type=query.repo_type, limit=_CATALOG_CHUNK, offset=len(found)
        )
        found += chunk
        if not chunk or len(found) >= total:
            return found


class _RecentSearches:
    """The releases behind the seeders sort, kept ``ttl`` seconds per filter (the newest few filters).

    Reading every matching release costs one catalog query per 500 (10,000 repos: ~0.25 s); ranking them by
    live health costs ~0.1 s. So the list may be ``ttl`` seconds stale (a new release shows up a little
    later in this sort only), while the health numbers never are.
    """

    def __init__(self, catalog: Catalog, ttl: float, keep: int = 16) -> None:
        self.catalog = catalog
        self.ttl = ttl
        self.keep = keep
        self._entries: dict[tuple[str, str | None, str | None], tuple[float, list[Release]]] = {}

    async def releases(self, query: IndexQuery) -> list[Release]:
        key = (query.text, query.org, query.repo_type)
        now = time.monotonic()
        cached = self._entries.get(key)
        if cached is not None and now - cached[0] < self.ttl:
            return cached[1]
        found = await anyio.to_thread.run_sync(_all_latest, self.catalog, query)
        self._entries.pop(key, None)
        self._entries[key] = (now, found)
        while len(self._entries) > self.keep:
            del self._entries[next(iter(self._entries))]  # the oldest
        return found


def _pages(total: int) -> int:
    return max(1, -(-total // PAGE_SIZE))


# ----------------------------------------------------------------------------------------------- pages


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(_HERE / "templates"),
        autoescape=True,  # every template is HTML
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(size=human_size, iso=utc_iso)
    env.globals.update(
        torrent_path=torrent_path,
        repo_path=repo_path,
        plural=_PLURAL,
        page_size=PAGE_SIZE,
    )
    return env


def website_routes(catalog: Catalog, health: Health, *, public_url: str, seeders_ttl: float = 10.0) -> list[BaseRoute]:
    """The website's routes, to mount at the root of the registry app (its links are root-relative).

    ``health`` is called on the event loop; ``seeders_ttl`` is how long the seeders sort may reuse the list of
    matching releases (not their health).
    """
    env = _environment()
    recent = _RecentSearches(catalog, seeders_ttl)

    def page(template: str, code: int = 200, **context: Any) -> HTMLResponse:
        html = env.get_template(template).render(**context)
        return HTMLResponse(html, status_code=code, headers=_HEADERS)

    def error(exc: _PageError) -> HTMLResponse:
        return page(
            "error.html",
            exc.status,
            status=exc.status,
            message=exc.message,
            query=_NO_QUERY,
        )

    async def index(request: Request) -> Response:
        try:
            query = parse_index_query(request.query_params)
        except _PageError as exc:
            return error(exc)
        start = (query.page - 1) * PAGE_SIZE
        if query.sort == "seeders":
            matching = await recent.releases(query)
            rated = [(r, health(r)) for r in matching]
            rated.sort(key=lambda pair: (-pair[1].seeders, -pair[1].leechers))  # stable: newest first on ties
            total, rows = len(rated), rated[start : start + PAGE_SIZE]
        else:
            releases, total = await anyio.to_thread.run_sync(
                lambda: catalog.search(
                    query.text,
                    org=query.org,
                    repo_type=query.repo_type,
                    sort=query.sort,  # type: ignore[arg-type]  # "seeders" took the other branch
                    limit=PAGE_SIZE,
                    offset=start,
                )
            )
            rows = [(r, health(r)) for r in releases]
        return page(
            "index.html",
            query=query,
            rows=rows,
            total=total,
            pages=_pages(total),
            sorts=SORTS,
            page_link=lambda n: query.link(page=n),
        )

    def repo_handler(repo_type: RepoType) -> Callable[[Request], Any]:
        async def repo(request: Request) -> Response:
            try:
                return await _repo_page(request, repo_type)
            except _PageError as exc:
                return error(exc)

        return repo

    async def _repo_page(request: Request, repo_type: RepoType) -> Response:
        params = request.path_params
        repo_id = f"{params['org']}/{params['name']}" if "org" in params else params["name"]
        try:
            validate_repo_id(repo_id)
        except UsageError:
            raise _PageError(404, f"{repo_id[:100]!r} is not a repo id") from None
        releases = await anyio.to_thread.run_sync(catalog.releases_of, repo_type, repo_id)
        if not releases:
            raise _PageError(404, f"no release of {_PLURAL[repo_type]}/{repo_id} is published here")
        selected = _selected(releases, request.query_params.get("commit", ""))
        number = _page_number(request.query_params)
        shown = releases[(number - 1) * PAGE_SIZE : number * PAGE_SIZE]
        keep = {"commit": request.query_params["commit"]} if request.query_params.get("commit") else {}
        files_number = _page_number(request.query_params, "files")  # a dataset of 100,000 files: pages of 1,000
        file_pages = max(1, -(-len(selected.files) // FILES_PAGE))
        if files_number > file_pages:
            raise _PageError(404, f"files page {files_number} is past the last ({file_pages})")
        first_file = (files_number - 1) * FILES_PAGE
        return page(
            "repo.html",
            query=_NO_QUERY,
            repo_type=repo_type,
            repo_id=repo_id,
            org=repo_id.split("/")[0] if "/" in repo_id else None,
            releases=[(r, health(r)) for r in shown],
            count=len(releases),
            page_number=number,
            pages=_pages(len(releases)),
            release=selected,
            latest=selected is releases[0],
            health=health(selected),
            magnet=magnet_uri(selected, public_url),
            pull=pull_command(selected, latest=selected is releases[0]),
            page_link=lambda n: repo_path(repo_type, repo_id, **keep, **({"page": n} if n > 1 else {})),
            files=selected.files[first_file : first_file + FILES_PAGE],
            first_file=first_file,
            files_number=files_number,
            file_pages=file_pages,
            files_link=lambda n: (
                repo_path(
                    repo_type,
                    repo_id,
                    **keep,
                    **({"page": number} if number > 1 else {}),
                    **({"files": n} if n > 1 else {}),
                )
                + "#files"
            ),
        )

    routes: list[BaseRoute] = [Route("/", index, name="web-index")]
    for kind, plural in _PLURAL.items():
        handler = repo_handler(kind)
        routes.append(Route(f"/{plural}/{{org}}/{{name}}", handler, name=f"web-{kind}"))
        routes.append(Route(f"/{plural}/{{name}}", handler, name=f"web-{kind}-bare"))  # a repo id with no org
    routes.append(Mount("/static", app=StaticFiles(directory=_HERE / "static"), name="static"))
    return routes


def _selected(releases: Sequence[Release], commit: str) -> Release:
    """The release ``?commit=`` names (full or abbreviated), else the latest."""
    if not commit:
        return releases[0]
    if is_commit_prefix(commit):
        for release in releases:
            if release.commit.startswith(commit):
                return release
    raise _PageError(404, f"commit {commit[:40]!r} is not a published release of {releases[0].repo_id}")
