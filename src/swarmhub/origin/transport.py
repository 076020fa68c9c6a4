"""The origin client's HTTP: one attempt per call, on kept-alive connections, run in worker threads.

Measured on 2 cores: httpx streaming 2 GB cost ~15 s of CPU (h11 parsing and an event-loop hop per 64 KiB,
fighting the hashing threads for the GIL), and importing it pulled in 0.3-0.5 s of modules. ``http.client``
with ``readinto`` lands a body in our buffer with ``recv_into`` and the GIL released, a few percent of that.
Retrying is the async caller's job (``OriginClient``): this module makes one attempt, records how far a
ranged read got, and raises ``RetryableError`` when another attempt is worth it. Which headers (the token)
go with a request is the caller's ``headers_for(url)``, asked again for every redirect target and for a kept
one (``RedirectCache``); userinfo in a URL is never sent anywhere, and URLs in errors are ``shown_url``s.
"""

from __future__ import annotations

import base64
import http.client
import select
import socket
import ssl
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote, urljoin, urlsplit, urlunsplit
from urllib.request import getproxies_environment

from swarmhub.errors import OriginError, OriginProtocolError
from swarmhub.hub.signed_urls import reuse_for, signed_url_expiry
from swarmhub.origin.credentials import DEFAULT_PORTS, same_origin, shown_url

__all__ = [
    "MAX_REDIRECTS",
    "BulkAttempt",
    "Connections",
    "RedirectCache",
    "Reply",
    "RetryableError",
    "fetch_range_once",
    "redirect_target",
    "request_once",
]

MAX_REDIRECTS = 5
MAX_API_BODY = 64 * 1024 * 1024  # a JSON listing page or error body; more is not an answer we want
REDIRECT_MAX_AGE = 300.0  # seconds we reuse a redirect target that does not say when it expires
REDIRECTS_KEPT = 4096  # files whose redirect target is kept (a signed URL is ~1 KiB)
READ_CHUNK = 64 * 1024  # a body is read this much at a time: its progress shows as it arrives (readinto of a
# buffered socket returns only once the whole view is full; over a slow origin that was seconds of no progress)


class RedirectCache:
    """Where each file's resolve URL last led (the CDN URL), so a file's chunks cost one resolve, not one each.

    A target is reused until shortly before the expiry its signed URL carries (``hub.signed_urls``: the Hub's
    CloudFront ``Expires=``, S3's ``X-Amz-Date`` + ``X-Amz-Expires``), so no request goes out on a URL about to
    expire; one that says nothing is reused ``max_age`` seconds. Any failure on a cached target forgets it, and
    the retry resolves afresh: a URL the CDN refuses anyway is replaced, never fatal. Thread-safe.
    """

    def __init__(
        self,
        max_age: float = REDIRECT_MAX_AGE,
        *,
        kept: int = REDIRECTS_KEPT,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.max_age = max_age
        self.kept = kept
        self._clock = clock
        self._wall_clock = wall_clock  # expiries in URLs are Unix times; deadlines here are on ``clock``
        self._lock = threading.Lock()
        self._targets: dict[str, tuple[str, float]] = {}  # resolve URL -> (target, reuse until, on clock)

    def get(self, url: str) -> str | None:
        hit = self._targets.get(url)
        return hit[0] if hit is not None and self._clock() < hit[1] else None

    def fresh_until(self, url: str) -> float | None:
        """Until when (on ``clock``) ``url``'s target is reused; None when no target is."""
        hit = self._targets.get(url)
        return hit[1] if hit is not None and self._clock() < hit[1] else None

    def put(self, url: str, target: str) -> None:
        """Every read through a target puts it again: a target without an expiry gets ``max_age`` more, a
        signed one keeps the deadline it got when new (the margin is a share of its life then, and would
        shrink to nothing if what is left of it were measured again at each read)."""
        with self._lock:
            hit = self._targets.get(url)
            if hit is not None and hit[0] == target and signed_url_expiry(target) is not None:
                return
            keep = reuse_for(target, self._wall_clock(), default=self.max_age)
            self._targets.pop(url, None)
            if keep > 0:
                self._targets[url] = (target, self._clock() + keep)
            if len(self._targets) > self.kept:  # down to 3/4 at once: a pass per put made 10,000 files quadratic
                now = self._clock()
                self._targets = {k: v for k, v in self._targets.items() if v[1] > now}
                while len(self._targets) > self.kept * 3 // 4:
                    del self._targets[next(iter(self._targets))]  # the oldest put

    def forget(self, url: str) -> None:
        with self._lock:
            self._targets.pop(url, None)


class RetryableError(Exception):
    """This attempt failed in a way worth another try (reset, timeout, 5xx/429, expired CDN link).

    ``unreachable`` marks failures to reach the host at all (refused, unknown name): retried only once the
    origin has answered before, so a wrong ``--endpoint`` fails in seconds, not after the whole backoff.
    """

    def __init__(self, reason: str, headers: Mapping[str, str] | None = None, *, unreachable: bool = False) -> None:
        super().__init__(reason)
        self.headers = dict(headers or {})
        self.unreachable = unreachable


def _transport_error(exc: BaseException) -> RetryableError:
    unreachable = isinstance(exc, ConnectionRefusedError | socket.gaierror)
    return RetryableError(f"{type(exc).__name__}: {exc}", unreachable=unreachable)


@dataclass
class BulkAttempt:
    """What one call should fetch, and how far it got (``done`` survives a failed attempt)."""

    url: str  # the origin's resolve URL; redirects are followed from here every attempt
    start: int  # file offset of ``view[0]``
    view: memoryview
    done: int = 0
    received: int = field(default=0)  # body bytes off the wire, skipped ones included
    ranges_ignored: bool = False  # the origin answered 200 to a Range request
    aborted: bool = False  # nobody waits for it any more (cancelled): the thread stops at its next chunk
    progress: Callable[[int], None] | None = None  # called in the reading thread with ``done`` after each chunk


class ReadAborted(Exception):
    """A read whose caller was cancelled, stopped mid-body (its connection is closed, not read to the end)."""


class Connections:
    """Keep-alive HTTP(S) connections, one set per worker thread, through the user's proxy when set.

    Proxies come from the environment as for requests/httpx (``HTTPS_PROXY``, ``HTTP_PROXY``, ``NO_PROXY``):
    HTTPS goes through a ``CONNECT`` tunnel, plain HTTP sends absolute URLs to the proxy.
    """

    def __init__(self, timeout: float, context: ssl.SSLContext | None = None) -> None:
        self.timeout = timeout
        self.context = context
        self.proxies = {  # "no" is NO_PROXY's host list; the others are proxy URLs, maybe without a scheme
            k: v if k == "no" or "://" in v else f"http://{v}" for k, v in getproxies_environment().items()
        }
        self._local = threading.local()

    def _pool(self) -> dict[tuple[str, str], tuple[http.client.HTTPConnection, bool, dict[str, str]]]:
        pool: dict[tuple[str, str], tuple[http.client.HTTPConnection, bool, dict[str, str]]]
        pool = self._local.__dict__.setdefault("pool", {})
        return pool

    def _proxy_for(self, scheme: str, host: str) -> str | None:
        proxy = self.proxies.get(scheme)
        if proxy is None or urllib.request.proxy_bypass_environment(host, self.proxies):  # type: ignore[attr-defined]
            return None
        return proxy

    def open(self, url: str) -> tuple[http.client.HTTPConnection, str, dict[str, str]]:
        """A connection for ``url``, the request target to send on it, and headers the proxy needs."""
        parts = urlsplit(url)
        key = (parts.scheme, parts.netloc)
        entry = self._pool().get(key)
        if entry is not None and _closed_by_peer(entry[0]):  # idle too long: the server hung up meanwhile
            entry[0].close()
            entry = None
        if entry is None:
            entry = self._pool()[key] = self._connect(parts.scheme, parts.hostname or "", parts.port)
        conn, absolute, proxy_headers = entry
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        authority = parts.netloc.rpartition("@")[2]  # userinfo goes nowhere, not even to a proxy
        return conn, urlunsplit((parts.scheme, authority, target, "", "")) if absolute else target, proxy_headers

    def _connect(
        self, scheme: str, host: str, port: int | None
    ) -> tuple[http.client.HTTPConnection, bool, dict[str, str]]:
        if scheme == "https" and self.context is None:
            self.context = ssl.create_default_context()
        proxy = self._proxy_for(scheme, host)
        if proxy is None:  # host and port as urlsplit read them: the host the token was checked against
            if scheme == "https":
                return http.client.HTTPSConnection(host, port, timeout=self.timeout, context=self.context), False, {}
            return http.client.HTTPConnection(host, port, timeout=self.timeout), False, {}
        p = urlsplit(proxy)
        auth = {}
        if p.username:
            credentials = f"{unquote(p.username)}:{unquote(p.password or '')}".encode()
            auth = {"Proxy-Authorization": "Basic " + base64.b64encode(credentials).decode()}
        if scheme == "https":  # tunnel: the proxy sees only host:port, TLS is end to end
            conn = http.client.HTTPSConnection(
                p.hostname or "", p.port or 80, timeout=self.timeout, context=self.context
            )
            conn.set_tunnel(host, port or 443, headers=auth)
            return conn, False, {}
        return http.client.HTTPConnection(p.hostname or "", p.port or 80, timeout=self.timeout), True, auth

    def drop(self, url: str) -> None:
        parts = urlsplit(url)
        entry = self._pool().pop((parts.scheme, parts.netloc), None)
        if entry is not None:
            entry[0].close()


def _closed_by_peer(conn: http.client.HTTPConnection) -> bool:
    """A kept-alive connection whose socket is readable between requests has been closed by the server (or
    holds garbage): reusing it would fail the next request and cost a retry with backoff (as urllib3 checks)."""
    sock = conn.sock
    if sock is None:
        return False
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes


def redirect_target(url: str, location: str) -> str:
    """Where a redirect from ``url`` to ``location`` leads; ``OriginProtocolError`` unless to an http(s) URL."""
    target = urljoin(url, location)
    try:
        parts = urlsplit(target)
        usable = parts.scheme in DEFAULT_PORTS and bool(parts.hostname) and parts.port != 0
    except ValueError:  # an unclosed "[", a port that is not a number
        usable = False
    if not usable:
        raise OriginProtocolError(f"the origin redirected to an unusable URL ({shown_url(target)})", url=shown_url(url))
    return target


def _send(connections: Connections, method: str, url: str, headers: Mapping[str, str]) -> http.client.HTTPResponse:
    """Send a request on the kept-alive connection for ``url``; transport errors are retryable."""
    conn, target, proxy_headers = connections.open(url)
    try:
        conn.request(method, target, headers={**headers, **proxy_headers})
        return conn.getresponse()
    except (OSError, http.client.HTTPException) as exc:
        connections.drop(url)
        raise _transport_error(exc) from exc


def request_once(connections: Connections, method: str, url: str, headers: Mapping[str, str]) -> Reply:
    """One small request (API call, HEAD) on a kept-alive connection; transport errors are retryable."""
    response = _send(connections, method, url, headers)
    try:
        body = response.read(MAX_API_BODY + 1)
    except (OSError, http.client.HTTPException) as exc:
        connections.drop(url)
        raise _transport_error(exc) from exc
    if len(body) > MAX_API_BODY:
        connections.drop(url)
        raise OriginProtocolError(f"the origin's answer is larger than {MAX_API_BODY >> 20} MiB", url=shown_url(url))
    if response.will_close:
        connections.drop(url)
    return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, body)


def fetch_range_once(
    attempt: BulkAttempt,
    connections: Connections,
    headers_for: Callable[[str], dict[str, str]],
    check_status: Callable[[int, Mapping[str, str], str], None],
    redirects: RedirectCache | None = None,
) -> None:
    """Fill ``attempt.view[attempt.done:]`` from the origin; raise ``RetryableError`` to be called again.

    ``headers_for(url)`` gives the headers for a URL (the token only for the origin itself), asked for every
    URL requested: the kept redirect target and each redirect's; ``check_status(status, headers, url)`` raises
    the right ``OriginError`` for a final error status.
    """
    cached = redirects.get(attempt.url) if redirects is not None else None
    url = cached or attempt.url
    try:
        _fetch(attempt, connections, headers_for, check_status, redirects, url)
    except BaseException:
        if cached is not None and redirects is not None:
            redirects.forget(attempt.url)
        raise


def _fetch(
    attempt: BulkAttempt,
    connections: Connections,
    headers_for: Callable[[str], dict[str, str]],
    check_status: Callable[[int, Mapping[str, str], str], None],
    redirects: RedirectCache | None,
    url: str,
) -> None:
    position = attempt.start + attempt.done
    want = len(attempt.view) - attempt.done
    headers = {"Range": f"bytes={position}-{position + want - 1}", "Accept-Encoding": "identity"}
    for _ in range(MAX_REDIRECTS):
        response = _send(connections, "GET", url, {**headers, **headers_for(url)})
        status = response.status
        response_headers = {k.lower(): v for k, v in response.getheaders()}
        location = response_headers.get("location")
        if 300 <= status < 400 and location:
            response.read()  # drain the (small) body so the connection can be reused
            url = redirect_target(url, location)
            continue
        try:
            if status in (401, 403, 410) and not same_origin(url, attempt.url):
                # a CDN refusing a signed URL means it expired: the caller resolves again
                raise RetryableError(f"CDN answered {status} (expired signed URL)")
            if status >= 400:
                check_status(status, response_headers, url)
                raise OriginError(f"HTTP {status} from {shown_url(url)}", url=shown_url(url), status=status)
            if redirects is not None and url != attempt.url:
                redirects.put(attempt.url, url)
            _read_body(response, status, response_headers, attempt, position, want)
        except BaseException:
            connections.drop(url)
            raise
        finally:
            if not response.isclosed():  # a body we did not finish (e.g. 200 to a Range): unusable connection
                connections.drop(url)
        return
    raise OriginProtocolError("too many redirects", url=attempt.url)


def _read_body(
    response: http.client.HTTPResponse,
    status: int,
    headers: Mapping[str, str],
    attempt: BulkAttempt,
    position: int,
    want: int,
) -> None:
    skip = 0
    if status == 206:
        expected = f"bytes {position}-{position + want - 1}/"
        if not headers.get("content-range", "").startswith(expected):
            raise OriginProtocolError(f"asked for {expected[6:-1]}, origin sent {headers.get('content-range')!r}")
    elif status == 200:
        skip = position  # the origin ignored Range (olah does): read up to our offset and drop it
        attempt.ranges_ignored = position > 0
    else:
        raise OriginProtocolError(f"unexpected HTTP {status}")
    try:
        while skip:
            dropped = response.read(min(skip, 1 << 20))
            if not dropped:
                raise RetryableError("body ended before our range")
            skip -= len(dropped)
            attempt.received += len(dropped)
        while attempt.done < len(attempt.view):
            if attempt.aborted:  # else the origin goes on sending a body nobody takes
                raise ReadAborted(f"aborted after {attempt.done} bytes")
            n = response.readinto(attempt.view[attempt.done : attempt.done + READ_CHUNK])
            if not n:
                raise RetryableError(f"body ended after {attempt.done} of {len(attempt.view)} bytes")
            attempt.done += n
            attempt.received += n
            if attempt.progress is not None:
                attempt.progress(attempt.done)
    except (TimeoutError, OSError, http.client.HTTPException) as exc:
        raise RetryableError(f"{type(exc).__name__} after {attempt.done} bytes") from exc
