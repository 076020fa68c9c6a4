"""The node's Hub-compatible endpoint: with ``HF_ENDPOINT=http://127.0.0.1:<port>`` unmodified programs get
the files of releases the swarm knows from the swarm, and everything else from the upstream, unchanged.

Routes the endpoint answers itself (everything else is relayed, ``passthrough``):

- **From a confirmed release, with no upstream request** (``_held``): ``HEAD``/``GET /{repo}/resolve/{rev}/{path}``
  (``/datasets/{repo}/...`` for datasets), ``GET /api/{models|datasets}/{repo}[/revision/{rev}]``,
  ``/api/.../tree/{rev}[/{path}]`` and ``POST /api/.../paths-info/{rev}``, when the source knows the release
  and the upstream confirmed its file list (``KnownRelease.confirmed``, ``node.confirmation``). A branch or tag
  is resolved by ``node.knowledge`` (one lookup per TTL, a coordinator first, stale-if-error with
  ``X-Swarmhub-Stale``), and the Hub's access decision for the program's credential comes from the same place
  (asked once per TTL; refusals answered in the Hub's error shape). Listings need the release to be the whole
  commit (``whole``); so does ``EntryNotFound`` for a path it lacks — else the upstream is asked.
- **A known release not confirmed yet**: a HEAD to the upstream's same URL first, with the client's
  ``Authorization`` (same-host redirects followed, a CDN never contacted): the upstream decides access and
  names the commit (``X-Repo-Commit``); its errors (401/403 ``GatedRepo``, 404 ``RepoNotFound``,
  ``RevisionNotFound``, ``EntryNotFound``) go to the client with their ``X-Error-Code``/``X-Error-Message``.
  When the release lists the file with the etag and size the upstream names (``_Probe``: an answer that names no
  etag is relayed), the answer is 200/206 straight from ``KnownRelease.stream``, never a redirect; otherwise the
  request is relayed, ``X-Linked-Size``/``X-Linked-Etag`` of the HEAD added to a redirect that lacks them
  (huggingface_hub 0.36/1.0 save a 0-byte file without ``X-Linked-Size``).
- Relayed ``/api/`` JSON is stripped of ``xetHash``; a 429/503 naming a ``Retry-After`` within ``relay_wait``
  seconds is waited out, a longer one passed on with its ``Retry-After``.

When the upstream cannot be reached (refused, reset, timed out, or 5xx after one retry), a known release is
answered from the swarm alone (a branch by ``source.local_head``), its repo info and tree made from its files
(``hub.answers``). Anything else is 502 (504 after a timeout) with an ``X-Error-Message`` that says the upstream
is unreachable.

Not an open proxy: the upstream URL is ``upstream`` + the request's raw path and query, and paths with dot
segments (also percent-encoded, once or twice), empty segments, backslashes or NUL are refused with 400.
"""

from __future__ import annotations

import collections
import json
import logging
import re
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from dataclasses import asdict, dataclass
from urllib.parse import parse_qs, unquote, urljoin, urlsplit

import httpx
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from swarmhub.errors import ConfigError, StalledError, SwarmhubError, UsageError
from swarmhub.gateway.ranges import RangeNotSatisfiable, parse_range
from swarmhub.hub.answers import (
    HubError,
    error_headers,
    next_link_header,
    normalize_etag,
    paths_info,
    range_not_satisfiable_headers,
    repo_info,
    resolve_headers,
    tree_entries,
    tree_page,
)
from swarmhub.hub.repo import RepoFile, RepoType, is_commit, path_problem, validate_repo_id
from swarmhub.node.hubstate import AccessCache, BranchHeads, Decision
from swarmhub.node.knowledge import Head, HeadSource, Knowledge
from swarmhub.node.passthrough import Upstream, UpstreamUnreachable, forward_headers, relay, relay_headers
from swarmhub.node.releases import KnownRelease, ReleaseSource
from swarmhub.serving import read_capped

__all__ = ["EndpointStats", "HubEndpoint", "endpoint_app", "unsafe_path"]

log = logging.getLogger(__name__)

PAGE_SIZE = 1000  # tree entries per page, as the Hub
PROBE_TIMEOUT = 3.0  # seconds per HEAD attempt: two (after a refused connection) fit huggingface_hub's 10 s
API_TIMEOUT = 8.0  # seconds an /api/ answer may take; huggingface_hub's own timeout is 10 s
_MAX_PROBE_REDIRECTS = 3  # same-host redirects followed to find X-Repo-Commit
_LINKED = ("x-linked-size", "x-linked-etag", "x-repo-commit")  # added to a relayed redirect that lacks them
RELAY_WAIT = 5.0  # seconds of an upstream's Retry-After a relayed request may wait out (clients wait 10 s)
MAX_PATHS_INFO_BODY = 4 << 20  # bytes of a paths-info form (datasets asks for a few paths at a time)
STALE_HEADER = "X-Swarmhub-Stale"  # seconds old the branch head an answer was made from is (the upstream failed)


def unsafe_path(raw_path: str) -> str | None:
    """Why a raw (percent-encoded) request path is refused; None when it may be relayed.

    Dot segments are looked for in the path as sent and after each of up to three rounds of decoding:
    a server behind may decode once more than we do.
    """
    if not raw_path.startswith("/"):
        return "not a path (the node is no forward proxy)"
    if "//" in raw_path:
        return "empty path segment"
    text = raw_path
    for _ in range(3):
        if "\\" in text or "\0" in text:
            return "backslash or NUL byte"
        if any(part in (".", "..") for part in text.split("/")):
            return "dot segment"
        decoded = unquote(text)
        if decoded == text:
            break
        text = decoded
    return None


@dataclass
class EndpointStats:
    """What the endpoint did, for ``/metrics`` and tests."""

    swarm_answers: int = 0  # resolve answers (HEAD and GET) given from a known release
    swarm_bytes: int = 0  # body bytes sent from ``KnownRelease.stream``
    offline_answers: int = 0  # answers from a known release while the upstream was unreachable
    metadata_answers: int = 0  # /api/ answers (repo info, tree, paths-info) made from a confirmed release
    missing_answers: int = 0  # EntryNotFound for a path a whole confirmed release does not have
    stale_answers: int = 0  # answers made from a branch head the upstream could not refresh
    refused: int = 0  # answers refused because the Hub did not (or could not be asked to) allow the credential
    relayed: int = 0  # requests relayed to the upstream


@dataclass(frozen=True)
class _Probe:
    """The upstream's answer to the HEAD on a resolve URL (body closed), read as huggingface_hub reads it.

    The etag is ``X-Linked-Etag``, else the ``ETag`` of the first answer or of the same-host redirect's answer;
    the size ``X-Linked-Size``, else the ``Content-Length`` of the answer that is no redirect. The Hub sends the
    ``X-Linked-*`` pair only on an LFS file's 302 to its CDN; a regular file's 307 carries ``ETag`` and
    ``X-Repo-Commit`` and its size comes from the ``/api/resolve-cache/`` answer it points to.
    """

    response: httpx.Response  # the first answer, what a HEAD relays
    commit: str | None  # X-Repo-Commit, from the first answer or a same-host redirect's
    linked: dict[str, str]  # X-Linked-Size / X-Linked-Etag / X-Repo-Commit as the upstream sent them
    etag: str | None
    size: int | None


_REPO = r"(?P<repo>[^/]+(?:/[^/]+)?)"  # "name" or "org/name"; tried as org/name first
_TYPE = r"(?P<type>models|datasets)"
# Matched against the raw (still percent-encoded) path, so "refs%2Fpr%2F1" stays one segment.
_TREE = re.compile(rf"/api/{_TYPE}/{_REPO}/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?")
_REVISION = re.compile(rf"/api/{_TYPE}/{_REPO}/revision/(?P<rev>[^/]+)")
_INFO = re.compile(rf"/api/{_TYPE}/{_REPO}")
_PATHS_INFO = re.compile(rf"/api/{_TYPE}/{_REPO}/paths-info/(?P<rev>[^/]+)")
_RESOLVE = re.compile(rf"/(?:(?P<type>datasets)/)?{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)")


@dataclass(frozen=True)
class _Held:
    """A confirmed release a request names, the branch head it came from, and the Hub's access decision."""

    release: KnownRelease
    head: Head
    decision: Decision


def _repo_type(value: str | None) -> RepoType:
    return "dataset" if value in ("datasets", "dataset") else "model"


def _truthy(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true")


def _answer(status: int, headers: dict[str, str], body: bytes = b"") -> Response:
    return Response(body, status, headers)


def _error(problem: HubError, *, head: bool = False) -> Response:
    body = b"" if head else problem.body()
    headers = {**problem.headers(), "Content-Type": "application/json", "Content-Length": str(len(body))}
    return _answer(problem.status, headers, body)


class _Listing:
    """A release's files by path and its tree listings, made once: a download of a 10,000-file dataset asks
    once per file, and a listing one page at a time (each a pass over every file before)."""

    def __init__(self, files: Sequence[RepoFile]) -> None:
        self.files = files  # held: while it is, no other list can take its id
        self.by_path = {f.path: f for f in files}
        self.trees: dict[tuple[str, bool], list[dict[str, object]] | None] = {}


_LISTINGS: collections.OrderedDict[int, _Listing] = collections.OrderedDict()
_LISTINGS_KEPT = 16  # releases


def _listing(release: KnownRelease) -> _Listing:
    """By the identity of the release's file list: the node's releases keep theirs; a list made anew at each
    call (or a release whose files changed) gets a listing of its own."""
    files = release.files
    found = _LISTINGS.get(id(files))
    if found is None or found.files is not files:
        found = _LISTINGS[id(files)] = _Listing(files)
        while len(_LISTINGS) > _LISTINGS_KEPT:
            _LISTINGS.popitem(last=False)
    else:
        _LISTINGS.move_to_end(id(files))
    return found


def _file(release: KnownRelease, path: str) -> RepoFile | None:
    return _listing(release).by_path.get(path)


async def _exactly(chunks: AsyncIterator[bytes], length: int, stats: EndpointStats) -> AsyncGenerator[bytes]:
    """``length`` bytes of ``chunks``, no more; fewer is an error (the connection breaks mid-body)."""
    left = length
    try:
        async for chunk in chunks:
            piece = chunk if len(chunk) <= left else chunk[:left]  # no copy of a GB file's chunks
            if not piece:
                continue
            left -= len(piece)
            stats.swarm_bytes += len(piece)
            yield piece
            if left == 0:
                return
        raise StalledError(f"the swarm stream ended {left} bytes short of {length}")
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()


async def _prepend(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    yield first
    async for chunk in rest:
        yield chunk


class HubEndpoint:
    """The ASGI app (see the module's docstring). ``aclose()`` (or ASGI lifespan shutdown) closes the
    upstream connections.
    """

    def __init__(
        self,
        source: ReleaseSource,
        upstream: Upstream,
        *,
        page_size: int = PAGE_SIZE,
        probe_timeout: float = PROBE_TIMEOUT,
        api_timeout: float = API_TIMEOUT,
        knowledge: Knowledge | None = None,
        relay_wait: float = RELAY_WAIT,
    ) -> None:
        self.source = source
        self.upstream = upstream
        self.page_size = page_size
        self.probe_timeout = probe_timeout
        self.api_timeout = api_timeout
        self.knowledge = knowledge or Knowledge(upstream, source, timeout=probe_timeout)
        self.relay_wait = relay_wait
        self.stats = EndpointStats()

    async def aclose(self) -> None:
        await self.upstream.aclose()

    def counters(self) -> dict[str, int]:
        """What the endpoint did, the Hub's decisions it kept and used, and its branch lookups (flat)."""
        k = self.knowledge
        return {
            **{f"endpoint_{name}": value for name, value in asdict(self.stats).items()},
            **{f"access_{name}": value for name, value in asdict(k.access_cache.stats).items()},
            **{f"branch_{name}": value for name, value in asdict(k.heads.stats).items()},
        }

    def hub_requests(self) -> dict[str, dict[str, int]]:
        """Requests the upstream got, by kind (revision, resolve, api, relay) and outcome."""
        return self.upstream.requests_by_kind()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        response = await self._dispatch(Request(scope, receive))
        await response(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # --------------------------------------------------------------------------------------------- routing

    async def _dispatch(self, request: Request) -> Response:
        # ASGI's raw_path has no query string, but httpx's ASGITransport puts it there.
        raw = (request.scope.get("raw_path") or request.scope["path"].encode()).decode("latin-1").split("?", 1)[0]
        if problem := unsafe_path(raw):
            return _error(HubError(400, f"refused path: {problem}"), head=request.method == "HEAD")
        if request.method in ("GET", "HEAD"):
            if (m := _RESOLVE.fullmatch(raw)) and (repo_id := _repo_id(m["repo"])):
                path = unquote(m["path"])
                if path_problem(path) is None:
                    return await self._resolve(request, raw, _repo_type(m["type"]), repo_id, unquote(m["rev"]), path)
            elif request.method == "GET":
                for pattern in (_TREE, _REVISION, _INFO):
                    if (m := pattern.fullmatch(raw)) and (repo_id := _repo_id(m["repo"])):
                        params = m.groupdict()
                        return await self._api(request, raw, _repo_type(params["type"]), repo_id, params)
        elif request.method == "POST" and (m := _PATHS_INFO.fullmatch(raw)) and (repo_id := _repo_id(m["repo"])):
            return await self._paths_info(request, raw, _repo_type(m["type"]), repo_id, unquote(m["rev"]))
        return await self._relay(request, raw)

    def _our_base(self, request: Request) -> str:
        return str(request.base_url).rstrip("/")

    def _upstream_url(self, request: Request, raw: str) -> str:
        return self.upstream.url(raw, request.scope.get("query_string", b"").decode("latin-1"))

    # -------------------------------------------------------------------------------------------- relaying

    async def _relay(self, request: Request, raw: str, body: bytes | None = None) -> Response:
        """The request to the upstream as it came (body streamed, or ``body`` when it was read already), the
        answer back as it comes."""
        if request.method in ("CONNECT", "TRACE"):
            return _error(HubError(405, f"{request.method} is not relayed"))
        has_body = "transfer-encoding" in request.headers or request.headers.get("content-length", "0") != "0"
        url = self._upstream_url(request, raw)
        content: AsyncIterator[bytes] | None = request.stream() if has_body else None
        headers = forward_headers(request.scope["headers"])
        if body is not None:
            content = _once(body)
            headers = [(k, v) for k, v in headers if k != "content-length"] + [("content-length", str(len(body)))]
        try:
            response = await self.upstream.send(request.method, url, headers, content, wait=self.relay_wait)
        except UpstreamUnreachable as exc:
            return _error(self._unreachable(exc, "the request could not be relayed"), head=request.method == "HEAD")
        self.stats.relayed += 1
        return await relay(response, self.upstream, self._our_base(request), head=request.method == "HEAD")

    def _unreachable(self, exc: UpstreamUnreachable, what: str) -> HubError:
        host = urlsplit(self.upstream.base).netloc
        status = 504 if exc.timed_out else 502
        return HubError(status, f"upstream {host} is unreachable ({exc.message}) and {what}")

    # --------------------------------------------------------------------------------------------- resolve

    async def _probe(self, request: Request, url: str) -> _Probe:
        """HEAD on the upstream's resolve URL; same-host redirects followed to learn a missing commit, etag or
        size (another host, a CDN, is never contacted)."""
        headers = forward_headers(request.scope["headers"], drop=("range", "content-length"))
        first = await self.upstream.send(
            "HEAD", url, headers, timeout=self.probe_timeout, retry_5xx=True, kind="resolve", wait=self.relay_wait
        )
        await first.aclose()
        linked = {k: first.headers[k] for k in _LINKED if k in first.headers}
        commit = first.headers.get("x-repo-commit")
        etag = normalize_etag(first.headers.get("x-linked-etag") or first.headers.get("etag"))
        size = _digits(first.headers.get("x-linked-size"))
        current = first
        if size is None and not first.is_redirect:
            size = _digits(first.headers.get("content-length"))
        for _ in range(_MAX_PROBE_REDIRECTS):
            location = current.headers.get("location")
            if (commit is not None and etag is not None and size is not None) or not current.is_redirect:
                break
            target = urljoin(str(current.request.url), location or "")
            if location is None or not self.upstream.owns(target):
                break  # another host (a CDN): never contacted
            current = await self.upstream.send(
                "HEAD", target, headers, timeout=self.probe_timeout, retry_5xx=True, kind="resolve"
            )
            await current.aclose()
            if current.status_code >= 400:
                break
            commit = commit or current.headers.get("x-repo-commit")
            etag = etag or normalize_etag(current.headers.get("etag"))
            if size is None and not current.is_redirect:
                size = _digits(current.headers.get("content-length"))
        return _Probe(first, commit, linked, etag, size)

    # ------------------------------------------------------------------------------------ from the swarm

    async def _held(
        self, request: Request, repo_type: RepoType, repo_id: str, revision: str, path: str | None = None
    ) -> _Held | HubError | None:
        """The confirmed release a request names, answered with no upstream request when the node knows enough
        (``node.knowledge``); a ``HubError`` to pass on (the branch lookup's); None: ask the upstream as before.
        ``path``: the file the access question is about (default: the release's first)."""
        if not is_commit(revision) and not await self.source.knows(repo_type, repo_id):
            return None
        authorization = request.headers.get("authorization")
        head = await self.knowledge.head(repo_type, repo_id, revision, authorization)
        if isinstance(head, HubError):
            return head
        release = await self.source.release(repo_type, repo_id, head.commit, authorization=authorization)
        if release is None or not release.confirmed or not release.files:
            return None
        asked = path if path is not None and _file(release, path) is not None else release.files[0].path
        decision = await self.knowledge.access(release, asked, authorization)
        if head.stale is not None:
            log.info(
                "%s@%s answered by %s, %d s old: the upstream %s",
                repo_id,
                revision,
                head.commit[:12],
                head.stale,
                head.why or "could not be asked",
            )
        return _Held(release, head, decision)

    def _refusal(self, decision: Decision, *, head: bool) -> Response:
        self.stats.refused += 1
        return _error(HubError(decision.status, decision.message, decision.code), head=head)  # type: ignore[arg-type]

    def _stale(self, response: Response, held: _Held) -> Response:
        if held.head.stale is not None:
            self.stats.stale_answers += 1
            response.headers[STALE_HEADER] = str(int(held.head.stale))
        return response

    async def _resolve(
        self, request: Request, raw: str, repo_type: RepoType, repo_id: str, revision: str, path: str
    ) -> Response:
        head = request.method == "HEAD"
        held = await self._held(request, repo_type, repo_id, revision, path)
        if isinstance(held, HubError):
            return _error(held, head=head)
        if held is not None:
            if not held.decision.allowed:
                return self._refusal(held.decision, head=head)
            f = _file(held.release, path)
            if f is not None:
                return self._stale(await self._serve(request, held.release, f), held)
            if held.release.whole:
                self.stats.missing_answers += 1
                ref = held.release.ref
                problem = HubError(404, f"{path} is not in {ref.repo_id}@{ref.commit}", "EntryNotFound", ref.commit)
                return self._stale(_error(problem, head=head), held)
        url = self._upstream_url(request, raw)
        try:
            probe = await self._probe(request, url)
        except UpstreamUnreachable as exc:
            return await self._resolve_offline(request, exc, repo_type, repo_id, revision, path)
        if probe.response.status_code >= 400:
            return self._upstream_error(probe.response, head=head)
        if probe.commit is not None and is_commit(probe.commit):
            authorization = request.headers.get("authorization")
            release = await self.source.release(repo_type, repo_id, probe.commit, authorization=authorization)
            f = None if release is None else _file(release, path)
            if release is not None and f is not None and self._agrees(probe, f):
                return await self._serve(request, release, f)
        if head:
            self.stats.relayed += 1
            return await relay(probe.response, self.upstream, self._our_base(request), head=True)
        try:
            response = await self.upstream.send("GET", url, forward_headers(request.scope["headers"]), kind="resolve")
        except UpstreamUnreachable as exc:
            return _error(self._unreachable(exc, f"{path} could not be fetched"))
        self.stats.relayed += 1
        extra = probe.linked if response.is_redirect else None
        return await relay(response, self.upstream, self._our_base(request), head=False, extra_headers=extra)

    def _agrees(self, probe: _Probe, f: RepoFile) -> bool:
        """The upstream names the same file as the release: else (or when it names no etag) its answer wins."""
        if probe.etag is None:
            log.info("the upstream names no etag for %s: relayed", f.path)
            return False
        if probe.etag.lower() != f.etag.lower() or (probe.size is not None and probe.size != f.size):
            log.warning("upstream and release disagree on %s (etag %s/%s): relayed", f.path, probe.etag, f.etag)
            return False
        return True

    def _upstream_error(self, response: httpx.Response, *, head: bool) -> Response:
        """An upstream error answer for the client: its status and Hub headers, a JSON body for a GET."""
        message = response.headers.get("x-error-message") or f"upstream answered {response.status_code}"
        headers = {**error_headers(response.headers.get("x-error-code"), message), "Content-Type": "application/json"}
        for name, value in relay_headers(response, self.upstream, ""):
            if name in ("x-repo-commit", "retry-after", "www-authenticate"):
                headers[name] = value
        body = b"" if head else HubError(response.status_code, message).body()
        headers["Content-Length"] = str(len(body))
        return _answer(response.status_code, headers, body)

    async def _serve(self, request: Request, release: KnownRelease, f: RepoFile) -> Response:
        """200/206/416 for ``f`` from the swarm; the first bytes are in hand before the status line goes out,
        so a swarm that cannot give them is a 503, not a broken body.
        """
        self.stats.swarm_answers += 1
        ref = release.ref
        if request.method == "HEAD":  # RFC 9110 §14.2: a HEAD ignores Range
            return _answer(200, resolve_headers(ref, f))
        try:
            byte_range = parse_range(request.headers.get("range"), f.size)
        except RangeNotSatisfiable:
            return _answer(416, range_not_satisfiable_headers(ref, f))
        status, start, end = (200, 0, f.size) if byte_range is None else (206, byte_range.start, byte_range.end)
        headers = resolve_headers(ref, f, byte_range)
        if start == end:
            return _answer(status, headers)
        body = _exactly(release.stream(f.path, start, end), end - start, self.stats)
        try:
            first = await anext(body)
        except (SwarmhubError, StopAsyncIteration) as exc:
            await body.aclose()
            message = f"the swarm could not give {f.path}: {exc}"
            return _error(HubError(503, message, commit=ref.commit))
        return StreamingResponse(_prepend(first, body), status, headers, background=BackgroundTask(body.aclose))

    async def _offline_release(self, repo_type: RepoType, repo_id: str, revision: str) -> KnownRelease | None:
        if is_commit(revision):
            return await self.source.release(repo_type, repo_id, revision)
        local = await self.source.local_head(repo_type, repo_id, revision)
        return None if local is None else await self.source.release(repo_type, repo_id, local[0])

    async def _resolve_offline(
        self,
        request: Request,
        exc: UpstreamUnreachable,
        repo_type: RepoType,
        repo_id: str,
        revision: str,
        path: str,
    ) -> Response:
        release = await self._offline_release(repo_type, repo_id, revision)
        f = None if release is None else _file(release, path)
        if release is None or f is None:
            what = f"the swarm has no release of {repo_type} {repo_id} at {revision} with {path}"
            return _error(self._unreachable(exc, what), head=request.method == "HEAD")
        self.stats.offline_answers += 1
        return await self._serve(request, release, f)

    # ------------------------------------------------------------------------------------------------- api

    async def _api(
        self, request: Request, raw: str, repo_type: RepoType, repo_id: str, params: dict[str, str | None]
    ) -> Response:
        held = await self._held(request, repo_type, repo_id, unquote(params.get("rev") or "main"))
        if isinstance(held, HubError):
            return _error(held)
        if held is not None and held.decision.allowed and held.release.whole:
            ref = held.release.ref
            answer = self._api_answer(
                request,
                held.release,
                params,
                lambda folder: HubError(
                    404, f"{folder} is not a folder of {ref.repo_id}@{ref.commit}", "EntryNotFound", ref.commit
                ),
            )
            self.stats.metadata_answers += 1
            return self._stale(answer, held)
        elif held is not None and held.decision.status == 503:  # neither the Hub nor a decision to go by
            return self._refusal(held.decision, head=False)
        url = self._upstream_url(request, raw)
        try:
            response = await self.upstream.send(
                "GET",
                url,
                forward_headers(request.scope["headers"]),
                timeout=self.api_timeout,
                retry_5xx=True,
                kind="api",
                wait=self.relay_wait,
            )
        except UpstreamUnreachable as exc:
            return await self._api_offline(request, exc, repo_type, repo_id, params)
        self.stats.relayed += 1
        return await relay(response, self.upstream, self._our_base(request), head=False)

    def _api_answer(
        self,
        request: Request,
        release: KnownRelease,
        params: dict[str, str | None],
        no_folder: Callable[[str], HubError],
    ) -> Response:
        """Repo info or a tree page of a release's files, as the Hub answers them (``no_folder``: the error for
        a folder the release does not have)."""
        if "path" not in params:  # repo info
            return _json(repo_info(release.ref, release.files, blobs=_truthy(request.query_params.get("blobs"))))
        folder = unquote(params["path"] or "")
        recursive = _truthy(request.query_params.get("recursive"))
        trees = _listing(release).trees
        if (folder, recursive) not in trees:
            trees[(folder, recursive)] = tree_entries(release.files, folder, recursive=recursive)
        entries = trees[(folder, recursive)]
        if entries is None:
            return _error(no_folder(folder))
        page = tree_page(entries, request.query_params.get("cursor"), self.page_size)
        if page is None:
            return _error(HubError(400, "Invalid cursor"))
        headers = {}
        if page.next_cursor is not None:
            headers["Link"] = next_link_header(str(request.url.include_query_params(cursor=page.next_cursor)))
        return _json(page.entries, headers)

    async def _paths_info(
        self, request: Request, raw: str, repo_type: RepoType, repo_id: str, revision: str
    ) -> Response:
        """``POST .../paths-info/{rev}`` (form ``paths=...&expand=...``, or JSON): from a confirmed release when
        it has every path asked for, or is the whole commit; else relayed (with the body read here)."""
        body = await read_capped(request, MAX_PATHS_INFO_BODY)
        if body is None:
            return _error(HubError(413, f"a paths-info request is at most {MAX_PATHS_INFO_BODY} bytes"))
        held = await self._held(request, repo_type, repo_id, revision)
        if isinstance(held, HubError):
            return _error(held)
        paths = _asked_paths(body, request.headers.get("content-type", ""))
        if held is not None and held.decision.allowed and paths is not None:
            found, missing = paths_info(held.release.files, paths)
            if not missing or held.release.whole:
                self.stats.metadata_answers += 1
                return self._stale(_json(found), held)
        elif held is not None and held.decision.status == 503:
            return self._refusal(held.decision, head=False)
        return await self._relay(request, raw, body)

    async def _api_offline(
        self,
        request: Request,
        exc: UpstreamUnreachable,
        repo_type: RepoType,
        repo_id: str,
        params: dict[str, str | None],
    ) -> Response:
        revision = unquote(params.get("rev") or "main")
        release = await self._offline_release(repo_type, repo_id, revision)
        if release is None:
            return _error(self._unreachable(exc, f"the swarm has no release of {repo_type} {repo_id} at {revision}"))
        answer = self._api_answer(
            request,
            release,
            params,
            lambda folder: self._unreachable(exc, f"the release of {repo_id} has no folder {folder}"),
        )
        if answer.status_code == 200:
            self.stats.offline_answers += 1
        return answer


async def _once(body: bytes) -> AsyncIterator[bytes]:
    yield body


def _asked_paths(body: bytes, content_type: str) -> list[str] | None:
    """The ``paths`` of a paths-info request (form-encoded, as huggingface_hub sends them, or JSON)."""
    try:
        if "json" in content_type:
            raw = json.loads(body)
            paths = raw.get("paths") if isinstance(raw, dict) else None
            paths = [paths] if isinstance(paths, str) else paths
        else:
            paths = parse_qs(body.decode(), keep_blank_values=True).get("paths")
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
        return None
    return paths


def _digits(value: str | None) -> int | None:
    return int(value) if value is not None and value.isdigit() else None


def _json(value: object, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps(value, separators=(",", ":")).encode()
    return _answer(200, {**(headers or {}), "Content-Type": "application/json", "Content-Length": str(len(body))}, body)


def _repo_id(raw: str) -> str | None:
    try:
        return validate_repo_id(unquote(raw))
    except UsageError:
        return None


def endpoint_app(
    source: ReleaseSource,
    upstream: str,
    *,
    page_size: int = PAGE_SIZE,
    probe_timeout: float = PROBE_TIMEOUT,
    api_timeout: float = API_TIMEOUT,
    read_timeout: float = 60.0,
    retries: int = 1,
    retry_pause: float = 0.25,
    transport: httpx.AsyncBaseTransport | None = None,
    access_ttl: float = 600.0,
    refusal_ttl: float = 30.0,
    branch_ttl: float = 30.0,
    coordinator: HeadSource | None = None,
    relay_wait: float = RELAY_WAIT,
) -> HubEndpoint:
    """The node's Hub-compatible ASGI app for releases of ``source``, falling back to ``upstream``
    (``https://huggingface.co``, or any Hub-compatible base URL).

    ``access_ttl``/``refusal_ttl``: seconds the Hub's "may read"/"may not" on a credential is believed;
    ``branch_ttl``: seconds a branch's commit is; ``coordinator``: who looks branches up for the cluster.
    ``relay_wait``: seconds of ``Retry-After`` a relayed request may wait out before the answer is passed on.
    ``probe_timeout``: seconds the upstream's HEAD on a resolve URL may take (and any connect);
    ``api_timeout``: seconds an ``/api/`` answer may take; ``read_timeout``: seconds one read of a relayed
    body may wait. ``retries``: extra attempts after a refused/reset connection, a connect timeout or a 5xx
    (requests without a body only), ``retry_pause`` seconds apart. ``transport``: an httpx transport for the
    upstream (tests). The caller closes the app with ``await app.aclose()`` (uvicorn's lifespan does too).
    """
    if page_size < 1:
        raise ConfigError(f"page_size must be positive, not {page_size}")
    try:
        client = Upstream(
            upstream,
            connect_timeout=probe_timeout,
            read_timeout=read_timeout,
            retries=retries,
            retry_pause=retry_pause,
            transport=transport,
        )
    except ValueError as exc:
        raise ConfigError(str(exc), hint="use an upstream like https://huggingface.co") from exc
    knowledge = Knowledge(
        client,
        source,
        access=AccessCache(allow_ttl=access_ttl, refuse_ttl=refusal_ttl),
        heads=BranchHeads(ttl=branch_ttl),
        coordinator=coordinator,
        timeout=probe_timeout,
    )
    return HubEndpoint(
        source,
        client,
        page_size=page_size,
        probe_timeout=probe_timeout,
        api_timeout=api_timeout,
        knowledge=knowledge,
        relay_wait=relay_wait,
    )
