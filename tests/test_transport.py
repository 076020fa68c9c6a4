"""The origin transport: kept-alive connections (one the server closed while idle is not reused), and redirect
targets kept until shortly before the expiry their signed URLs carry."""

from __future__ import annotations

import socket
import threading

import pytest

from swarmhub.hub.signed_urls import reuse_for, signed_url_expiry
from swarmhub.origin.transport import Connections, RedirectCache, request_once


def test_a_connection_the_server_closed_while_idle_is_replaced_not_failed() -> None:
    """Servers drop idle keep-alive connections (uvicorn after 5 s, the Hub's CDN too); the next request must
    open a new one instead of failing on the dead one and waiting out a retry backoff."""
    server = socket.create_server(("127.0.0.1", 0))
    accepted: list[int] = []
    closed = threading.Semaphore(0)  # released as the server hangs up a connection

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                accepted.append(1)
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")  # keep-alive... then hang up
            closed.release()

    threading.Thread(target=serve, daemon=True).start()
    url = f"http://127.0.0.1:{server.getsockname()[1]}/x"
    connections = Connections(timeout=5)
    try:
        assert request_once(connections, "GET", url, {}).body == b"ok"
        assert closed.acquire(timeout=10)  # the server has closed it
        assert request_once(connections, "GET", url, {}).body == b"ok"  # no RetryableError
        assert len(accepted) == 2
    finally:
        server.close()


# --------------------------------------------------------------------- redirect targets and their expiry

NOW = 1_700_000_000.0  # 2023-11-14T22:13:20Z
CLOUDFRONT = "https://cdn-lfs.hf.co/repos/aa/bb/cc?response-content-disposition=x&Expires={}&Signature=s&Key-Pair-Id=K"
S3 = "https://bucket.s3.amazonaws.com/key?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Date={}&X-Amz-Expires={}&X-Amz-Signature=s"


@pytest.mark.parametrize(
    ("url", "expiry"),
    [
        (CLOUDFRONT.format(1_700_003_600), 1_700_003_600.0),
        (S3.format("20231114T221320Z", "3600"), NOW + 3600),
        (S3.format("20231114T221320Z", "0"), NOW),
        (S3.format("20231114T221320Z", "60") + "&Expires=1700000030", NOW + 30),  # both: the earlier
        ("https://cdn.example/file", None),  # no marker
        ("https://cdn.example/file?expires=1700003600", None),  # names are case-sensitive (CloudFront's is Expires)
        (CLOUDFRONT.format(""), None),
        (CLOUDFRONT.format("soon"), None),
        (CLOUDFRONT.format("-5"), None),
        (CLOUDFRONT.format("1.7e9"), None),
        (CLOUDFRONT.format("9" * 13), None),  # not a time
        (CLOUDFRONT.format("1700003600") + "&Expires=1700009999", None),  # said twice, differently
        (CLOUDFRONT.format("1700003600") + "&Expires=1700003600", 1_700_003_600.0),  # said twice, the same
        (S3.format("20231114T221320Z", "forever"), None),
        (S3.format("20231114T221320Z", ""), None),
        (S3.format("20231314T221320Z", "3600"), None),  # month 13
        (S3.format("20230230T221320Z", "3600"), None),  # February 30th
        (S3.format("2023-11-14T22:13:20Z", "3600"), None),  # ISO, not SigV4's basic format
        (S3.format("20231114T221320", "3600"), None),  # no Z
        ("https://b.s3.amazonaws.com/k?X-Amz-Expires=3600", None),  # a lifetime without its start
        ("https://b.s3.amazonaws.com/k?X-Amz-Date=20231114T221320Z", None),
        ("https://cdn.example/file?Expires=1700003600#fragment", 1_700_003_600.0),
        ("not a url at all ?&&==", None),
    ],
)
def test_signed_url_expiry(url: str, expiry: float | None) -> None:
    assert signed_url_expiry(url) == expiry


@pytest.mark.parametrize(
    ("url", "seconds"),
    [
        (CLOUDFRONT.format(int(NOW) + 3600), 3600 - 30),  # long-lived: 30 s before expiry
        (S3.format("20231114T221320Z", "3600"), 3600 - 30),
        (CLOUDFRONT.format(int(NOW) + 100), 90),  # short-lived: 10% of what is left
        (CLOUDFRONT.format(int(NOW) + 2), 1.8),
        (CLOUDFRONT.format(int(NOW)), 0),  # expiring now
        (CLOUDFRONT.format(int(NOW) - 60), 0),  # expired
        ("https://cdn.example/file", 300),  # no marker: the default
        (CLOUDFRONT.format("garbage"), 300),
    ],
)
def test_reuse_for(url: str, seconds: float) -> None:
    assert reuse_for(url, NOW, default=300) == pytest.approx(seconds)


class Clocks:
    def __init__(self) -> None:
        self.monotonic = 1000.0
        self.wall = NOW

    def advance(self, seconds: float) -> None:
        self.monotonic += seconds
        self.wall += seconds


def test_redirect_cache_keeps_a_target_until_shortly_before_it_expires() -> None:
    clocks = Clocks()
    cache = RedirectCache(300, clock=lambda: clocks.monotonic, wall_clock=lambda: clocks.wall)
    short, long = CLOUDFRONT.format(int(NOW) + 20), CLOUDFRONT.format(int(NOW) + 24 * 3600)
    cache.put("/short", short)
    cache.put("/long", long)
    cache.put("/plain", "http://origin/api/resolve-cache/x")  # a relative 307: no expiry, 300 s
    cache.put("/gone", CLOUDFRONT.format(int(NOW) - 1))  # expired already: not kept at all
    assert cache.get("/gone") is None and cache.fresh_until("/gone") is None
    assert cache.fresh_until("/short") == pytest.approx(1000 + 18)
    clocks.advance(17.9)
    assert cache.get("/short") == short
    clocks.advance(0.2)  # 18.1 s: within 10% of its 20 s of the expiry, it is resolved again
    assert cache.get("/short") is None and cache.fresh_until("/short") is None
    clocks.advance(300)  # past the default: the plain target is gone, the day-long signed one is not
    assert cache.get("/plain") is None
    assert cache.get("/long") == long
    clocks.advance(24 * 3600 - 318.1 - 31)  # 1 s before its 30 s margin
    assert cache.get("/long") == long
    clocks.advance(2)
    assert cache.get("/long") is None
    cache.put("/long", long)  # read through again (or handed out again by the origin): not brought back
    assert cache.get("/long") is None
    short = CLOUDFRONT.format(int(clocks.wall) + 100)
    cache.put("/short", short)  # a new URL: kept 90 s
    for _ in range(89):
        clocks.advance(1)
        cache.put("/short", short)  # each read puts it again: the deadline stays, the margin does not shrink
    assert cache.get("/short") == short
    clocks.advance(1.1)
    assert cache.get("/short") is None
    cache.put("/plain", "http://origin/api/resolve-cache/x")
    clocks.advance(299)
    cache.put("/plain", "http://origin/api/resolve-cache/x")  # no expiry: each read gives it 300 s more
    clocks.advance(299)
    assert cache.get("/plain") == "http://origin/api/resolve-cache/x"


def test_redirect_cache_forgets_and_stays_bounded() -> None:
    clocks = Clocks()
    cache = RedirectCache(300, kept=3, clock=lambda: clocks.monotonic, wall_clock=lambda: clocks.wall)
    for n in range(5):
        cache.put(f"/{n}", f"http://cdn/{n}")
    assert [cache.get(f"/{n}") for n in range(5)] == [None, None, "http://cdn/2", "http://cdn/3", "http://cdn/4"]
    cache.forget("/3")
    assert cache.get("/3") is None and cache.get("/4") == "http://cdn/4"
