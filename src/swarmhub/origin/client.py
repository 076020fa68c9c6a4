"""An async client for Hub-compatible origins (huggingface.co, mirrors, our devhub).

Redirects are followed by hand: a relative 307 (regular files) stays on the origin, a 302 to a CDN host
(LFS/Xet files) gets no ``Authorization`` header, and every retry starts again from the ``resolve`` URL so a
signed CDN link that expired is replaced by a fresh one (libtorrent's web-seed client caches redirects and
stalls; issues #6402, #7682). The token is only ever sent to the origin's own host and never logged.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar
from urllib.parse import quote, urljoin, urlsplit

import httpx

from swarmhub import __version__
from swarmhub.errors import (
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
    commit_from_revision_info,
    etag_from_headers,
    files_from_siblings,
    files_from_tree_page,
    next_link,
    size_from_headers,
)
from swarmhub.hub.repo import RepoFile, RepoType, api_repo_path, resolve_path
from swarmhub.origin.retry import RETRY_STATUSES, retry_delay

__all__ = ["OriginClient"]

log = logging.getLogger(__name__)
T = TypeVar("T")
MAX_REDIRECTS = 5
MAX_ASKED_WAIT = 300.0  # a Retry-After longer than this is reported, not slept through


_sleep = asyncio.sleep  # the backoff's clock; tests replace it to record delays instead of waiting


class _Retry(Exception):
    def __init__(self, reason: str, headers: httpx.Headers | None = None) -> None:
        super().__init__(reason)
        self.headers = headers


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
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.endpoint = endpoint.rstrip("/")
        self._host = urlsplit(self.endpoint).netloc
        self._token = token
        self.retries = retries
        self.backoff_base = backoff_base
        self.bytes_received = 0
        self.ranges_ignored = False
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout, connect=min(timeout, 15.0)),
            limits=limits,
            transport=transport,
            headers={"user-agent": f"swarmhub/{__version__}"},
            follow_redirects=False,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> OriginClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------------------------------------ plumbing

    def _headers_for(self, url: str, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = dict(extra or {})
        if self._token and urlsplit(url).netloc == self._host:
            headers["authorization"] = f"Bearer {self._token}"
        return headers

    async def _with_retries(self, what: str, attempt_once: Callable[[], Awaitable[T]]) -> T:
        for attempt in range(1, self.retries + 1):
            try:
                return await attempt_once()
            except _Retry as retry:
                reason, headers = str(retry), retry.headers
            except httpx.TransportError as exc:
                reason, headers = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__, None
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

    def _raise_for_status(self, response: httpx.Response, what: str, repo_id: str) -> None:
        status = response.status_code
        if status < 400:
            return
        if status in RETRY_STATUSES:
            raise _Retry(f"HTTP {status}", response.headers)
        code = response.headers.get("x-error-code", "")
        message = response.headers.get("x-error-message", "")
        detail = f"{what}: HTTP {status}" + (f" ({message})" if message else "")
        url, repo = str(response.request.url), repo_id
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

    async def _get_json(self, url: str, what: str, repo_id: str) -> tuple[object, httpx.Headers]:
        async def once() -> tuple[object, httpx.Headers]:
            target = url
            for _ in range(MAX_REDIRECTS):  # mirrors redirect API paths (olah: /tree/rev -> /tree/rev/)
                response = await self._http.get(target, headers=self._headers_for(target))
                location = response.headers.get("location")
                if not (response.is_redirect and location):
                    break
                target = urljoin(target, location)
            self._raise_for_status(response, what, repo_id)
            try:
                return response.json(), response.headers
            except ValueError as exc:
                raise OriginProtocolError(f"{what}: the origin did not answer JSON", url=url) from exc

        return await self._with_retries(what, once)

    # ------------------------------------------------------------------------------------------ the API

    async def resolve_revision(self, repo_type: RepoType, repo_id: str, revision: str) -> str:
        """The commit sha a branch, tag or sha points at now."""
        url = f"{self.endpoint}{api_repo_path(repo_type, repo_id)}/revision/{quote(revision, safe='')}"
        info, _ = await self._get_json(url, f"resolving {repo_id}@{revision}", repo_id)
        return commit_from_revision_info(info)

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
                response = await self._http.head(url, headers=self._headers_for(url, {"accept-encoding": "identity"}))
                self._raise_for_status(response, what, repo_id)
                location = response.headers.get("location")
                if response.is_redirect and location and not urlsplit(location).netloc:
                    url = urljoin(url, location)
                    continue
                etag, size = etag_from_headers(response.headers), size_from_headers(response.headers)
                if etag is None or size is None:
                    raise OriginProtocolError(f"{what}: no etag or size in the origin's answer", url=url)
                return RepoFile(path, size, etag)
            raise OriginProtocolError(f"{what}: too many redirects", url=url)

        return await self._with_retries(what, once)

    @asynccontextmanager
    async def _open(self, url: str, headers: dict[str, str], what: str, repo_id: str) -> AsyncIterator[httpx.Response]:
        """GET ``url`` following redirects by hand; Authorization only on the origin's host."""
        for _ in range(MAX_REDIRECTS):
            request = self._http.build_request("GET", url, headers=self._headers_for(url, headers))
            response = await self._http.send(request, stream=True)
            location = response.headers.get("location")
            if response.is_redirect and location:
                await response.aclose()
                url = urljoin(url, location)
                continue
            try:
                if response.status_code in (401, 403, 410) and urlsplit(url).netloc != self._host:
                    # A CDN refusing a signed URL means it expired: resolve again for a fresh one.
                    raise _Retry(f"CDN answered {response.status_code} (expired signed URL)")
                self._raise_for_status(response, what, repo_id)
                yield response
            finally:
                await response.aclose()
            return
        raise OriginProtocolError(f"{what}: too many redirects", url=url)

    async def read_range(
        self, repo_type: RepoType, repo_id: str, commit: str, path: str, start: int, length: int
    ) -> bytes:
        """Exactly ``length`` bytes of ``path`` from ``start``: resumes after resets, re-resolves redirects."""
        buffer = bytearray()
        resolve_url = self.endpoint + resolve_path(repo_type, repo_id, commit, path)
        what = f"downloading {path}"

        async def once() -> bytes:
            position = start + len(buffer)
            want = length - len(buffer)
            headers = {"range": f"bytes={position}-{position + want - 1}", "accept-encoding": "identity"}
            async with self._open(resolve_url, headers, what, repo_id) as response:
                skip = 0
                if response.status_code == 200:  # the origin ignored Range (olah does): skip to our offset
                    if position and not self.ranges_ignored:
                        log.warning("%s ignores Range requests; reading from the start of each file", self.endpoint)
                    self.ranges_ignored = True
                    skip = position
                elif response.status_code == 206:
                    _check_content_range(response, position, want, what)
                else:
                    raise OriginProtocolError(f"{what}: unexpected HTTP {response.status_code}", url=resolve_url)
                async for piece in response.aiter_raw():
                    self.bytes_received += len(piece)
                    if skip:
                        cut = min(skip, len(piece))
                        piece, skip = piece[cut:], skip - cut
                    buffer.extend(piece[: length - len(buffer)])
                    if len(buffer) == length:
                        break
            if len(buffer) < length:
                raise _Retry(f"body ended after {len(buffer)} of {length} bytes")
            return bytes(buffer)

        try:
            return await self._with_retries(what, once)
        except (httpx.HTTPError, OSError) as exc:  # anything the transport raised that is not retryable
            raise OriginUnavailable(f"{what}: {exc}") from exc


def _check_content_range(response: httpx.Response, start: int, length: int, what: str) -> None:
    expected = f"bytes {start}-{start + length - 1}/"
    if not response.headers.get("content-range", "").startswith(expected):
        raise OriginProtocolError(
            f"{what}: asked for {expected[6:-1]}, origin sent {response.headers.get('content-range')!r}"
        )
