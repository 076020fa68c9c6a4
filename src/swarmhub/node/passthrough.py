"""The node endpoint's way to its upstream: one Hub-compatible host, asked with the client's own request.

- ``Upstream.send``: one request to the upstream (``base`` + the request's raw path and query, nothing else
  can name a host), streamed; connection failures retried once after a short pause when the request has no
  body, 5xx too when asked (not a read timeout: waiting twice would outlast the client's own timeout).
  ``UpstreamUnreachable`` when no answer came. A 429 or 503 naming when to come back (``Retry-After``, or the
  ``t=`` of a ``RateLimit`` header) is waited out and asked again while the request's ``wait`` budget lasts;
  past it the answer goes to the client with its ``Retry-After``, so the client backs off. Every attempt is
  counted by kind (``revision``, ``resolve``, ``api``, ``relay``) and outcome (``ok``, ``4xx``, ``429``,
  ``5xx``, ``unreachable``) in ``Upstream.requests``.
- ``relay``: an upstream answer as the client's answer, streamed: hop-by-hop headers dropped, Xet markers
  stripped (``hub.answers``), the upstream's own URLs in ``Location``/``Link`` rewritten to the node's (so a
  paginated listing or a redirect on the upstream's host comes back through the node; redirects to other
  hosts, a CDN, are passed as they are), and ``xetHash`` removed from ``/api/`` JSON.

The client's headers go to the upstream for that request only: the HTTP client keeps no cookies and no
credentials between requests, and nothing here logs a header. They go nowhere else: ``Upstream`` follows no
redirect (a redirect is the client's to follow, or not, by its own rules: httpx and requests, which
huggingface_hub uses, drop the token on another host and on https->http), and it sends nothing to a URL
``Upstream.owns`` refuses (the rule of ``origin.credentials.same_origin``, under the base's path). A base URL
with userinfo is refused: it would be sent with every request and named in the errors clients see. The body
is streamed both ways: an LFS file may be GBs.
"""

from __future__ import annotations

import collections
import email.utils
import http.cookiejar
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from urllib.parse import urljoin, urlsplit

import anyio
import httpx
from starlette.background import BackgroundTask
from starlette.responses import Response, StreamingResponse

from swarmhub.errors import OriginUnavailable
from swarmhub.hub.answers import split_link_header, strip_xet_headers, strip_xet_json_bytes
from swarmhub.origin.credentials import same_origin, shown_url

__all__ = [
    "HOP_BY_HOP",
    "Upstream",
    "UpstreamUnreachable",
    "come_back_after",
    "forward_headers",
    "outcome_of",
    "relay",
    "relay_headers",
]

log = logging.getLogger(__name__)

# RFC 9110 §7.6.1, plus the de-facto ones proxies drop (Proxy-Connection, Keep-Alive).
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
_NOT_FORWARDED = HOP_BY_HOP | {"host", "accept-encoding"}
MAX_JSON_BODY = 64 * 1024 * 1024  # an /api/ JSON answer we rewrite in memory; larger ones stream unchanged
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class UpstreamUnreachable(OriginUnavailable):
    """The upstream gave no usable answer: refused, reset, timed out, or 5xx after the retry."""

    def __init__(self, message: str, *, url: str, timed_out: bool = False, status: int | None = None) -> None:
        super().__init__(message, url=url, status=status)
        self.timed_out = timed_out


_RATELIMIT_RESET = re.compile(r"(?:^|[;,\s])t=(\d+)")


def come_back_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds a 429/503 answer asks the client to wait: ``Retry-After`` (seconds or an HTTP date), else the
    reset (``t=``) of an IETF ``RateLimit`` header (the Hub sends ``RateLimit: "api";r=0;t=55``); None: unsaid."""
    value = headers.get("retry-after")
    if value is not None:
        value = value.strip()
        if value.isdigit():
            return float(value)
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            when = None
        if when is not None:
            return max(0.0, when.timestamp() - (time.time() if now is None else now))
    m = _RATELIMIT_RESET.search(headers.get("ratelimit", ""))
    return float(m[1]) if m else None


def outcome_of(status: int | None) -> str:
    """How an upstream request ended, for the counters: ok, 4xx, 429, 5xx or unreachable (no status)."""
    if status is None:
        return "unreachable"
    if status == 429:
        return "429"
    if status >= 500:
        return "5xx"
    return "4xx" if status >= 400 else "ok"


def _no_cookies() -> http.cookiejar.CookieJar:
    # httpx keeps Set-Cookie answers in the client and sends them with later requests: another user's.
    return http.cookiejar.CookieJar(policy=http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))


def forward_headers(headers: Iterable[tuple[bytes, bytes]], *, drop: Iterable[str] = ()) -> list[tuple[str, str]]:
    """The client's request headers as sent upstream: hop-by-hop ones (and those ``Connection`` names) and
    ``Host`` dropped, ``Accept-Encoding: identity`` so sizes are the files' (huggingface_hub asks the same).
    """
    decoded = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in headers]
    dropped = set(_NOT_FORWARDED) | {d.lower() for d in drop}
    for name, value in decoded:
        if name == "connection":
            dropped.update(token.strip().lower() for token in value.split(","))
    kept = [(k, v) for k, v in decoded if k not in dropped]
    return [*kept, ("accept-encoding", "identity")]


class Upstream:
    """The one upstream host the node's endpoint talks to (``base``: ``https://huggingface.co``, maybe with a
    path prefix). Create it inside the event loop that uses it.
    """

    def __init__(
        self,
        base: str,
        *,
        connect_timeout: float = 3.0,
        read_timeout: float = 60.0,
        retries: int = 1,
        retry_pause: float = 0.25,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        parts = urlsplit(base)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
            raise ValueError(f"upstream must be an http(s) URL without query: {shown_url(base)!r}")
        if not same_origin(base, base):  # userinfo, or an authority other than host[:port]
            raise ValueError(f"upstream must name a host (and port) only, no credentials: {shown_url(base)!r}")
        self.base = base.rstrip("/")
        self.prefix = parts.path.rstrip("/")
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.retries = retries
        self.retry_pause = retry_pause
        self.requests: collections.Counter[tuple[str, str]] = collections.Counter()  # (kind, outcome) -> count
        self._client = httpx.AsyncClient(
            follow_redirects=False,
            cookies=_no_cookies(),
            transport=transport,
            timeout=httpx.Timeout(read_timeout, connect=connect_timeout, pool=connect_timeout),
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    def requests_by_kind(self) -> dict[str, dict[str, int]]:
        """``requests`` as {kind: {outcome: count}}, for /metrics and status."""
        out: dict[str, dict[str, int]] = {}
        for (kind, outcome), n in sorted(self.requests.items()):
            out.setdefault(kind, {})[outcome] = n
        return out

    def owns(self, url: str) -> bool:
        """May ``url`` be asked, with the client's headers? Only on the upstream's origin, under its base path."""
        return same_origin(url, self.base) and urlsplit(url).path.startswith(self.prefix + "/")

    def url(self, raw_path: str, query: str = "") -> str:
        """The upstream URL of a request path (still percent-encoded, starting with one ``/``) and query."""
        if not raw_path.startswith("/") or raw_path.startswith("//"):
            raise ValueError(f"not a path: {raw_path!r}")
        return self.base + raw_path + (f"?{query}" if query else "")

    async def send(
        self,
        method: str,
        url: str,
        headers: Iterable[tuple[str, str]],
        body: AsyncIterator[bytes] | None = None,
        *,
        timeout: float | None = None,
        retry_5xx: bool = False,
        kind: str = "relay",
        wait: float = 0.0,
    ) -> httpx.Response:
        """The upstream's answer, body unread (the caller closes it). ``timeout``: seconds for every phase of
        one attempt (default: the connect timeout is ``connect_timeout``, each read ``read_timeout``).
        ``wait``: seconds of ``Retry-After`` this request may wait out in all; ``kind``: what it is counted as.

        Only requests without a body are retried: the client's body cannot be sent twice.
        """
        if not self.owns(url):
            raise ValueError("not an upstream URL")  # defence in depth: nothing else is ever contacted
        repeatable = body is None and method.upper() in _SAFE_METHODS
        attempts = 1 + self.retries if repeatable else 1
        limits = httpx.Timeout(timeout) if timeout is not None else self._client.timeout
        headers = list(headers)
        problem: UpstreamUnreachable | None = None
        attempt = 0
        while attempt < attempts:
            if attempt:
                await anyio.sleep(self.retry_pause)
            attempt += 1
            request = self._client.build_request(method, url, headers=headers, content=body, timeout=limits)
            try:
                response = await self._client.send(request, stream=True)
            except httpx.TimeoutException as exc:
                self.requests[kind, "unreachable"] += 1
                problem = UpstreamUnreachable(f"timed out ({type(exc).__name__})", url=url, timed_out=True)
                if isinstance(exc, httpx.ConnectTimeout):
                    continue
                break  # a host that accepted and then stayed silent: a second wait would only double the client's
            except httpx.TransportError as exc:
                self.requests[kind, "unreachable"] += 1
                problem = UpstreamUnreachable(f"{type(exc).__name__}: {exc}", url=url)
                continue
            status = response.status_code
            self.requests[kind, outcome_of(status)] += 1
            pause = come_back_after(response.headers) if status in (429, 503) and repeatable else None
            if pause is not None and max(pause, 0.1) <= wait:
                pause = max(pause, 0.1)  # a "come back at once" still spends the budget: no endless loop
                await response.aclose()
                wait -= pause
                await anyio.sleep(pause)
                attempt -= 1  # waiting as told is not a failed attempt
                continue
            if not (retry_5xx and status >= 500):
                return response
            await response.aclose()
            problem = UpstreamUnreachable(f"answered {status}", url=url, status=status)
        assert problem is not None
        raise problem


def _rewrite_url(url: str, request_url: str, upstream: Upstream, our_base: str) -> str:
    """``url`` (from a Location or Link of the answer to ``request_url``) on the node if it is the upstream's."""
    if not upstream.prefix and url.startswith("/") and not url.startswith("//"):
        return url  # relative to the upstream's root = relative to ours: the client comes back to us
    absolute = urljoin(request_url, url)
    if (
        absolute == upstream.base
        or absolute.startswith(upstream.base + "/")
        or absolute.startswith(upstream.base + "?")
    ):
        return our_base + absolute[len(upstream.base) :]
    return url


def _rewrite_link(value: str, request_url: str, upstream: Upstream, our_base: str) -> str:
    entries = []
    for entry in split_link_header(value):
        target, sep, rest = entry.partition(">")
        if entry.startswith("<") and sep:
            entry = f"<{_rewrite_url(target[1:], request_url, upstream, our_base)}>{rest}"
        entries.append(entry)
    return ", ".join(entries)


def relay_headers(
    response: httpx.Response, upstream: Upstream, our_base: str, *, drop: Iterable[str] = ()
) -> list[tuple[str, str]]:
    """The upstream answer's headers for the client: hop-by-hop and Xet dropped, upstream URLs made ours."""
    dropped = set(HOP_BY_HOP) | {d.lower() for d in drop}
    request_url = str(response.request.url)
    out: list[tuple[str, str]] = []
    for name, value in strip_xet_headers(response.headers.multi_items()):
        lower = name.lower()
        if lower in dropped:
            continue
        if lower == "location":
            value = _rewrite_url(value, request_url, upstream, our_base)
        elif lower == "link":
            value = _rewrite_link(value, request_url, upstream, our_base)
        out.append((lower, value))
    return out


def _is_api_json(response: httpx.Response) -> bool:
    path = urlsplit(str(response.request.url)).path
    content_type = response.headers.get("content-type", "")
    return "/api/" in path and "/api/resolve-cache/" not in path and "json" in content_type


async def _chunks(response: httpx.Response) -> AsyncIterator[bytes]:
    try:
        async for chunk in response.aiter_raw():
            yield chunk
    finally:
        await response.aclose()


async def relay(
    response: httpx.Response,
    upstream: Upstream,
    our_base: str,
    *,
    head: bool,
    extra_headers: Mapping[str, str] | None = None,
) -> Response:
    """The client's answer from an upstream answer whose body is still unread; closes ``response`` when done.

    ``extra_headers`` are added where the upstream's answer lacks them (e.g. ``X-Linked-Size`` on a redirect).
    """
    headers = relay_headers(response, upstream, our_base)
    present = {name for name, _ in headers}
    headers += [(k.lower(), v) for k, v in (extra_headers or {}).items() if k.lower() not in present]
    length = response.headers.get("content-length")
    if head or response.status_code in (204, 304):
        await response.aclose()
        return _raw_response(response.status_code, headers)
    if _is_api_json(response) and (length is None or (length.isdigit() and int(length) <= MAX_JSON_BODY)):
        try:
            body = strip_xet_json_bytes(await response.aread())  # decoded, whatever Content-Encoding came
        except httpx.HTTPError as exc:  # reset or timed out mid-answer: the client gets a whole error
            message = f"the upstream broke off its answer ({type(exc).__name__})"
            headers = [("x-error-message", message), ("content-type", "application/json")]
            return _raw_response(502, headers, json.dumps({"error": message}).encode())
        finally:
            await response.aclose()
        headers = [(k, v) for k, v in headers if k not in ("content-length", "content-encoding")]
        headers.append(("content-length", str(len(body))))
        return _raw_response(response.status_code, headers, body)
    streaming = StreamingResponse(
        _chunks(response),
        response.status_code,
        background=BackgroundTask(response.aclose),  # also when the client went away mid-body
    )
    streaming.raw_headers = _encode(headers)
    return streaming


def _encode(headers: list[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    # Set as a list, not through Starlette's dict: a proxy keeps repeated headers (Set-Cookie, Link) as sent.
    return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]


def _raw_response(status: int, headers: list[tuple[str, str]], body: bytes = b"") -> Response:
    response = Response(body, status)
    response.raw_headers = _encode(headers)
    return response
