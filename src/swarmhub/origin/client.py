"""An async client for Hub-compatible origins (huggingface.co, mirrors, our devhub).

The coroutines here decide (retries with backoff, error mapping, listing logic); the HTTP itself runs in
worker threads (``origin.transport``). Redirects are followed by hand: a relative 307 (regular files) stays
on the origin, a 302 to a CDN host (LFS/Xet files) gets no ``Authorization`` header. A file's CDN target is
reused for its next ranges until shortly before the expiry its signed URL carries (``RedirectCache``), or
until it fails; then the retry starts again from the ``resolve`` URL, so a signed CDN link that expired is
replaced by a fresh one (libtorrent's web-seed client caches redirects and stalls for good; issues #6402,
#7682). The token goes only where ``origin.credentials.same_origin`` allows (the endpoint's own scheme, host
and port: never to a CDN, another port, or ``http://`` after ``https://``), decided for each request in
``_headers_for``, and is never logged; URLs in errors and logs are ``shown_url``s.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar
from urllib.parse import quote, urlencode, urljoin, urlsplit

from swarmhub import __version__
from swarmhub.errors import (
    ConfigError,
    EntryNotFound,
    GatedRepoError,
    OriginError,
    OriginProtocolError,
    OriginUnavailable,
    RepoNotFound,
    RevisionNotFound,
)
from swarmhub.hub.listing import (
    ListedFile,
    ListedRepo,
    commit_from_revision_info,
    etag_from_headers,
    files_from_siblings,
    files_from_tree_page,
    next_link,
    repos_from_listing_page,
    size_from_headers,
)
from swarmhub.hub.repo import RepoFile, RepoType, api_repo_path, resolve_path
from swarmhub.origin.credentials import has_userinfo, same_origin, shown_url
from swarmhub.origin.retry import RETRY_STATUSES, retry_delay
from swarmhub.origin.transport import (
    MAX_REDIRECTS,
    REDIRECT_MAX_AGE,
    BulkAttempt,
    Connections,
    RedirectCache,
    Reply,
    RetryableError,
    fetch_range_once,
    redirect_target,
    request_once,
)
from swarmhub.workers import PriorityPool

__all__ = ["OriginClient"]

log = logging.getLogger(__name__)
USER_AGENT = f"swarmhub/{__version__}"
T = TypeVar("T")
MAX_ASKED_WAIT = 300.0  # a Retry-After longer than this is reported, not slept through


_sleep = asyncio.sleep  # the backoff's clock; tests replace it to record delays instead of waiting


class OriginClient:
    def __init__(
        self,
        endpoint: str,
        token: str | None = None,
        *,
        retries: int = 8,
        connections: int = 8,
        timeout: float = 60.0,
        backoff_base: float = 0.25,
        redirect_max_age: float = REDIRECT_MAX_AGE,
    ) -> None:
        if has_userinfo(endpoint):  # it would be sent to wherever a redirect leads, and shown in errors
            raise ConfigError(
                f"the origin URL {shown_url(endpoint)} carries credentials",
                hint="give the token in HF_TOKEN, not in the URL",
            )
        self.endpoint = endpoint.rstrip("/")
        self._shown = shown_url(self.endpoint)
        self._token = token
        self.retries = max(1, retries)  # attempts in all: one at least (SWARMHUB_RETRIES=0 meant none)
        self.backoff_base = backoff_base
        self._bytes_done = 0  # bytes of ended reads
        self._reading: dict[int, tuple[BulkAttempt, int]] = {}  # reads under way: their attempt, its bytes before
        self.ranges_ignored = False
        self._connections = Connections(timeout)
        self._redirects = RedirectCache(redirect_max_age)  # max age of targets that do not say when they expire
        self.connections = connections
        self._http_pool = PriorityPool(connections, "swarmhub-http")
        self._count_lock = threading.Lock()
        self._answered = False  # has the origin ever answered? (fail fast on a wrong endpoint)

    async def aclose(self) -> None:
        self._http_pool.shutdown(wait=False)

    @property
    def bytes_received(self) -> int:
        """Body bytes received so far, those of reads still under way included (a slow origin's long ranged
        GET shows its progress as it goes)."""
        with self._count_lock:
            return self._bytes_done + sum(a.received - before for a, before in self._reading.values())

    async def __aenter__(self) -> OriginClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------------------------------------ plumbing

    def _headers_for(self, url: str, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = {"User-Agent": USER_AGENT, **(extra or {})}
        if self._token and same_origin(url, self.endpoint):
            headers["authorization"] = f"Bearer {self._token}"
        return headers

    async def _with_retries(self, what: str, attempt_once: Callable[[], Awaitable[T]]) -> T:
        for attempt in range(1, self.retries + 1):
            try:
                return await attempt_once()
            except RetryableError as retry:
                reason, headers = str(retry), retry.headers
                if retry.unreachable and not self._answered:
                    raise OriginUnavailable(
                        f"{what}: cannot reach {self._shown} ({reason})",
                        hint="check --endpoint / HF_ENDPOINT / SWARMHUB_UPSTREAM and your network",
                    ) from None
            if attempt == self.retries:
                break
            delay = retry_delay(attempt, headers, base=self.backoff_base)
            if delay > MAX_ASKED_WAIT:
                raise OriginUnavailable(
                    f"{what}: the origin asks us to wait {delay:.0f} s ({reason})",
                    hint="you are rate limited; try again later, or set HF_TOKEN for a higher limit",
                )
            log.info("%s: %s; retry %d/%d in %.1f s", what, reason, attempt, self.retries - 1, delay)
            await _sleep(delay)
        raise OriginUnavailable(
            f"{what}: gave up after {self.retries} attempts ({reason})",
            hint="check the origin (--endpoint / HF_ENDPOINT) is reachable; SWARMHUB_RETRIES raises the limit",
        )

    async def _call(self, method: str, url: str, extra: dict[str, str] | None = None) -> Reply:
        reply = await asyncio.wrap_future(
            self._http_pool.submit(request_once, self._connections, method, url, self._headers_for(url, extra))
        )
        self._answered = True
        return reply

    def _check_status(self, status: int, headers: Mapping[str, str], url: str, what: str, repo_id: str) -> None:
        """Raise the error an HTTP status means: retryable, or one of ours (repo/revision/file/gated)."""
        if status < 400:
            return
        url = shown_url(url)  # maybe a redirect's target: a signed URL, its query a credential
        if status in RETRY_STATUSES:
            raise RetryableError(f"HTTP {status}", headers)
        code = headers.get("x-error-code", "")
        message = headers.get("x-error-message", "")
        detail = f"{what}: HTTP {status}" + (f" ({message})" if message else "")
        repo = repo_id
        if code == "RevisionNotFound":
            raise RevisionNotFound(
                detail,
                hint="check the revision (a branch, tag or commit sha)",
                url=url,
                status=status,
                repo_id=repo,
            )
        if code == "EntryNotFound":
            raise EntryNotFound(detail, url=url, status=status, repo_id=repo)
        if code == "GatedRepo" or status == 403:
            raise GatedRepoError(
                detail,
                hint="accept the repo's terms on the Hub and set HF_TOKEN to a token with access",
                url=url,
                status=status,
                repo_id=repo,
            )
        if code == "RepoNotFound" or status in (401, 404):
            hint = "check the repo id and --repo-type" + ("" if self._token else "; set HF_TOKEN for private repos")
            raise RepoNotFound(detail, hint=hint, url=url, status=status, repo_id=repo)
        raise OriginError(detail, url=url, status=status, repo_id=repo)

    async def _get_json(self, url: str, what: str, repo_id: str) -> tuple[object, dict[str, str]]:
        async def once() -> tuple[object, dict[str, str]]:
            target = url
            for _ in range(MAX_REDIRECTS):  # mirrors redirect API paths (olah: /tree/rev -> /tree/rev/)
                reply = await self._call("GET", target)
                location = reply.headers.get("location")
                if not (300 <= reply.status < 400 and location):
                    break
                target = redirect_target(target, location)
            self._check_status(reply.status, reply.headers, target, what, repo_id)
            try:
                return json.loads(reply.body), reply.headers
            except ValueError as exc:
                raise OriginProtocolError(f"{what}: the origin did not answer JSON", url=url) from exc

        return await self._with_retries(what, once)

    # ------------------------------------------------------------------------------------------ the API

    async def resolve_revision(self, repo_type: RepoType, repo_id: str, revision: str) -> str:
        """The commit sha a branch, tag or sha points at now."""
        url = f"{self.endpoint}{api_repo_path(repo_type, repo_id)}/revision/{quote(revision, safe='')}"
        info, _ = await self._get_json(url, f"resolving {repo_id}@{revision}", repo_id)
        return commit_from_revision_info(info)

    async def list_repos(self, repo_type: RepoType, author: str, *, page_size: int | None = None) -> list[ListedRepo]:
        """Every repo of an org (or user), each with the commit of ``main`` when the origin says (``expand=sha``):
        ``/api/models?author=ORG`` (``/api/datasets`` for datasets), following ``Link: rel="next"`` pages as
        huggingface_hub's ``paginate`` does. ``page_size`` sends ``limit`` (default: the origin's page)."""
        query = {"author": author, "expand": "sha"} | ({"limit": str(page_size)} if page_size else {})
        url: str | None = f"{self.endpoint}/api/{repo_type}s?{urlencode(query)}"
        repos: list[ListedRepo] = []
        while url is not None:
            page, headers = await self._get_json(url, f"listing the {repo_type}s of {author}", author)
            repos += repos_from_listing_page(page)
            link = next_link(headers)
            url = urljoin(url, link) if link else None
        return repos

    async def list_files(self, repo_type: RepoType, repo_id: str, commit: str) -> list[RepoFile]:
        """Every file of the release with size and etag: tree API, else siblings, completed by HEADs."""
        base = f"{self.endpoint}{api_repo_path(repo_type, repo_id)}"
        listed: list[ListedFile] = []
        url: str | None = f"{base}/tree/{commit}?recursive=true&expand=false"
        try:
            while url is not None:
                page, headers = await self._get_json(url, f"listing {repo_id}", repo_id)
                listed += files_from_tree_page(page)
                link = next_link(headers)
                url = urljoin(url, link) if link else None
        except OriginError as exc:
            # The revision resolved, so the repo exists: a 404 here means a mirror without the tree API.
            if isinstance(exc, GatedRepoError) or exc.status not in (404, 405, 501):
                raise
            log.info("tree API unavailable (%s); using the revision's siblings", exc.status)
            info, _ = await self._get_json(f"{base}/revision/{commit}?blobs=true", f"listing {repo_id}", repo_id)
            listed = files_from_siblings(info)
        files = [f.complete() for f in listed]
        missing = [f for f, done in zip(listed, files, strict=True) if done is None]
        if missing:
            heads = await asyncio.gather(*(self.head_file(repo_type, repo_id, commit, f.path) for f in missing))
            by_path = {f.path: f for f in heads}
            files = [done or by_path[f.path] for f, done in zip(listed, files, strict=True)]
        return [f for f in files if f is not None]

    async def head_file(self, repo_type: RepoType, repo_id: str, commit: str, path: str) -> RepoFile:
        """Size and etag from a HEAD on resolve, following relative redirects only (as huggingface_hub)."""
        what = f"HEAD {path}"

        async def once() -> RepoFile:
            url = self.endpoint + resolve_path(repo_type, repo_id, commit, path)
            for _ in range(MAX_REDIRECTS):
                reply = await self._call("HEAD", url, {"Accept-Encoding": "identity"})
                self._check_status(reply.status, reply.headers, url, what, repo_id)
                location = reply.headers.get("location")
                if 300 <= reply.status < 400 and location and not urlsplit(location).netloc:
                    url = redirect_target(url, location)
                    continue
                etag, size = etag_from_headers(reply.headers), size_from_headers(reply.headers)
                if etag is None or size is None:
                    raise OriginProtocolError(f"{what}: no etag or size in the origin's answer", url=url)
                return RepoFile(path, size, etag)
            raise OriginProtocolError(f"{what}: too many redirects", url=url)

        return await self._with_retries(what, once)

    def redirect_fresh_until(self, repo_type: RepoType, repo_id: str, commit: str, path: str) -> float | None:
        """Until when (``time.monotonic()``) reads of the file reuse the redirect target one read resolved; None
        when none is kept (no read yet, the origin answered itself, or the target was about to expire)."""
        return self._redirects.fresh_until(self.endpoint + resolve_path(repo_type, repo_id, commit, path))

    async def read_range_into(
        self,
        repo_type: RepoType,
        repo_id: str,
        commit: str,
        path: str,
        start: int,
        view: memoryview,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        """Fill ``view`` with ``path`` from byte ``start``: resumes after resets, re-resolves redirects.
        ``progress(done)`` is called in the reading thread as bytes arrive: ``view[:done]`` is final."""
        url = self.endpoint + resolve_path(repo_type, repo_id, commit, path)
        await self.read_url_range_into(url, start, view, what=f"downloading {path}", repo_id=repo_id, progress=progress)

    async def read_url_range_into(
        self,
        url: str,
        start: int,
        view: memoryview,
        *,
        what: str,
        repo_id: str,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        """``read_range_into`` for any URL that serves ranges (a BEP 19 web seed), with the same retries."""
        attempt = BulkAttempt(url, start, view, progress=progress)

        def check(status: int, headers: Mapping[str, str], url: str) -> None:
            self._check_status(status, headers, url, what, repo_id)

        def once_in_thread() -> None:
            with self._count_lock:
                self._reading[id(attempt)] = (attempt, attempt.received)
            try:
                fetch_range_once(attempt, self._connections, self._headers_for, check, self._redirects)
            finally:
                with self._count_lock:
                    _, before = self._reading.pop(id(attempt))
                    self._bytes_done += attempt.received - before
                    if attempt.ranges_ignored and not self.ranges_ignored:
                        self.ranges_ignored = True
                        log.warning("%s ignores Range requests; reading from the start of each file", self._shown)

        async def once() -> None:
            await asyncio.wrap_future(self._http_pool.submit(once_in_thread))

        try:
            await self._with_retries(what, once)
        except asyncio.CancelledError:  # a run withdrawn, a pull closed: the thread must not read on
            attempt.aborted = True
            raise
