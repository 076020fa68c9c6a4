"""The BEP 19 web-seed gateway (``swarmhub.gateway``) in front of a dev hub that behaves like the Hub.

The gateway runs in a real server whose app is whichever ``Gateway`` a test installed (``Front``), so the
torrents' ``url-list`` stays valid while each test gets a fresh origin client (no redirect target cached by
an earlier test). ``Front`` also records every status the gateway answered: a client must never see the
origin's 3xx, 429 or 5xx. Requests the gateway must refuse are checked against the dev hub's request log:
refused means the origin was never asked.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import shutil
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from support.cli import run_cli
from support.clients import aria2_download, transmission_download
from support.swarm import REPO_ID, make_release, pull, sha256, snapshot_files
from swarmhub.bt.metainfo import Torrent, parse_torrent
from swarmhub.devhub import DevHub, DevHubSettings
from swarmhub.gateway import ByteRange, Gateway, RangeNotSatisfiable, ReleaseKey, parse_range, webseed_url
from swarmhub.gateway.paths import webseed_candidates
from swarmhub.hub.repo import RepoType
from swarmhub.origin.client import OriginClient
from swarmhub.serving import UvicornThread, bind

GATED = "swarmhub-demo/gated-model"
TOKEN = "hf_gatewayTOKENsecret42"
PIECE = 64 * 1024
BIG = "model.safetensors"  # LFS: 302 to the CDN; ~2 MB, many gateway chunks
SMALL = "config.json"  # regular: relative 307 to /api/resolve-cache/


# ------------------------------------------------------------------------------------------- sans I/O


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        (None, 10, None),
        ("bytes=0-0", 10, (0, 1)),
        ("bytes=2-5", 10, (2, 6)),
        ("bytes=4-", 10, (4, 10)),
        ("bytes=-3", 10, (7, 10)),
        ("bytes=-30", 10, (0, 10)),  # a suffix longer than the file is the whole file
        ("bytes=5-99", 10, (5, 10)),  # the end is clamped
        ("BYTES = 1 - 2", 10, (1, 3)),
        ("bytes=2-3,5-6", 10, (2, 4)),  # several ranges: the first one only
        ("bytes=50-,5-6", 10, (5, 7)),  # ... the first satisfiable one
        ("bytes=,2-3", 10, (2, 4)),  # empty list elements are allowed
        ("bytes=5-2", 10, None),  # an invalid range-spec: the header is ignored
        ("bytes=abc", 10, None),
        ("bytes=-", 10, None),
        ("items=0-5", 10, None),
        ("bytes 0-5", 10, None),
        ("bytes=" + "9" * 31 + "-", 10, None),  # absurd numbers are not parsed
        ("bytes=10-", 10, RangeNotSatisfiable),
        ("bytes=-0", 10, RangeNotSatisfiable),
        ("bytes=0-", 0, RangeNotSatisfiable),
        ("bytes=-5", 0, RangeNotSatisfiable),
        ("bytes=20-30,40-", 10, RangeNotSatisfiable),
    ],
)
def test_parse_range(header: str | None, size: int, expected: Any) -> None:
    if expected is RangeNotSatisfiable:
        with pytest.raises(RangeNotSatisfiable):
            parse_range(header, size)
        return
    got = parse_range(header, size)
    assert (got if got is None else (got.start, got.end)) == expected
    if got is not None:
        assert got.content_range == f"bytes {got.start}-{got.end - 1}/{size}"


_number = st.one_of(st.just(""), st.integers(0, 2000).map(str))


@given(st.lists(st.tuples(_number, _number), min_size=1, max_size=4), st.integers(0, 1500))
def test_parse_range_answers_within_the_file_or_refuses(specs: list[tuple[str, str]], size: int) -> None:
    """Invariant: the whole file, a non-empty range inside it, or 416, for any list of range-specs."""
    header = "bytes=" + ",".join(f"{a}-{b}" for a, b in specs)
    try:
        got = parse_range(header, size)
    except RangeNotSatisfiable:
        return
    if got is not None:
        assert 0 <= got.start < got.end <= size and got.size == size
        assert got == ByteRange(got.start, got.end, size)


def test_webseed_urls_and_what_their_paths_name() -> None:
    commit = "a" * 40
    assert webseed_url("https://reg.example/", "model", "org/name", commit) == (
        f"https://reg.example/webseed/model/org/name/{commit}/"
    )
    both = list(webseed_candidates(f"dataset/org/name/{commit}/tor/dir/file.bin"))
    assert [(c.repo.repo_type, c.repo.repo_id, c.name, c.path) for c in both] == [
        ("dataset", "org/name", "tor", "dir/file.bin")
    ]
    bare = list(webseed_candidates(f"model/gpt2/{commit}/tor/config.json"))
    assert [(c.repo.repo_id, c.name, c.path) for c in bare] == [("gpt2", "tor", "config.json")]
    for refused in (
        f"models/org/name/{commit}/tor/x",  # plural type
        f"model/org/name/{commit[:39]}/tor/x",  # not a commit
        f"model/org/name/{commit}/tor",  # no file path
        f"model/org/name/{commit}/tor/../x",
        f"model/org/name/{commit}/tor/a//b",
        f"model/org/name/{commit}/../x",
        f"model/org/../{commit}/tor/x",
        f"model/org/name/{commit}/tor/a\\b",
    ):
        assert list(webseed_candidates(refused)) == [], refused


# ------------------------------------------------------------------------------------------- fixtures


class Front:
    """The gateway server's app: the installed gateway, and every (method, path, status) it answered."""

    def __init__(self) -> None:
        self.app: ASGIApp | None = None
        self.answers: list[tuple[str, str, int]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert self.app is not None and scope["type"] == "http"

        async def recording(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.answers.append((scope["method"], scope["path"], int(message["status"])))
            await send(message)

        await self.app(scope, receive, recording)

    def statuses(self) -> set[int]:
        return {status for _, _, status in self.answers}


@dataclass
class Site:
    root: Path
    files: dict[str, bytes]
    hub: DevHub
    commit: str
    gated_commit: str
    base: str  # the gateway server's public URL
    port: int
    front: Front
    torrents: dict[str, Path]
    published: dict[ReleaseKey, Torrent]
    clients: list[OriginClient] = field(default_factory=list)

    def lookup(self, repo_type: RepoType, repo_id: str, commit: str) -> Torrent | None:
        return self.published.get((repo_type, repo_id, commit))

    def install(
        self, token: str | None = TOKEN, *, retries: int = 8, redirect_max_age: float = 300.0, **options: Any
    ) -> Gateway:
        """A fresh gateway (and origin client: nothing cached) behind the server; answers recorded anew."""
        origin = OriginClient(
            self.hub.endpoint, token, retries=retries, backoff_base=0.05, redirect_max_age=redirect_max_age
        )
        self.clients.append(origin)
        gateway = Gateway(self.lookup, origin, **{"chunk_size": 192 * 1024, **options})
        self.front.app = gateway.app()
        self.front.answers.clear()
        return gateway

    def url(self, path: str, *, repo: str = REPO_ID, commit: str | None = None, name: str | None = None) -> str:
        commit = commit or (self.gated_commit if repo == GATED else self.commit)
        torrent = self.published[("model", repo, commit)]
        return webseed_url(self.base, "model", repo, commit) + f"{name or torrent.name}/{path}"

    @property
    def name(self) -> str:
        return self.published[("model", REPO_ID, self.commit)].name


def _create(hub: DevHub, repo: str, webseed: str, fmt: str, out: Path, env: dict[str, str] | None = None) -> Path:
    done = run_cli(
        "create", repo, "--endpoint", hub.endpoint, "--webseed", webseed, "--format", fmt,
        "--piece-size", str(PIECE), "-o", out, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return out


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("gateway")
    files = make_release(root / "origin", size_mb=2)
    shutil.copytree(root / "origin" / "models" / REPO_ID, root / "origin" / "models" / GATED)
    sock = bind("127.0.0.1", 0)
    port = int(sock.getsockname()[1])
    front = Front()
    server = UvicornThread("gateway-test", [front], [sock])
    with DevHub(root / "origin", settings=DevHubSettings(gated={GATED: TOKEN})) as hub:
        # create needs the commit for the web-seed URL: resolve main first, as the registry does
        commit = httpx.get(f"{hub.endpoint}/api/models/{REPO_ID}/revision/main").json()["sha"]
        auth = {"Authorization": f"Bearer {TOKEN}"}
        gated_commit = httpx.get(f"{hub.endpoint}/api/models/{GATED}/revision/main", headers=auth).json()["sha"]
        base = f"http://127.0.0.1:{port}"
        torrents = {
            fmt: _create(hub, REPO_ID, webseed_url(base, "model", REPO_ID, commit), fmt, root / f"{fmt}.torrent")
            for fmt in ("v1", "hybrid")
        }
        gated = webseed_url(base, "model", GATED, gated_commit)
        torrents["gated"] = _create(hub, GATED, gated, "hybrid", root / "gated.torrent", {"HF_TOKEN": TOKEN})
        published: dict[ReleaseKey, Torrent] = {
            ("model", REPO_ID, commit): parse_torrent(torrents["hybrid"].read_bytes()),
            ("model", GATED, gated_commit): parse_torrent(torrents["gated"].read_bytes()),
        }
        site = Site(root, files, hub, commit, gated_commit, base, port, front, torrents, published)
        site.install()
        server.start()
        try:
            yield site
        finally:
            server.stop()
            for client in site.clients:
                asyncio.run(client.aclose())


@pytest.fixture
def fresh(site: Site) -> Iterator[Site]:
    """The site with a fresh gateway, a clean request log and fault list; settings restored afterwards."""
    settings = site.hub.settings
    site.hub.faults.clear()
    site.install()
    site.hub.log.clear()
    try:
        yield site
    finally:
        site.hub.faults.clear()
        site.hub.settings = settings


def _http() -> httpx.Client:
    return httpx.Client(trust_env=False, timeout=30)


def _raw(port: int, method: str, target: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """A request with the target sent exactly as given (httpx removes ``..`` and ``.`` segments)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, target, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


# ------------------------------------------------------------------------------------- serving files


def test_every_file_is_served_exactly_and_counted(fresh: Site) -> None:
    gateway = fresh.install()
    torrent = fresh.published[("model", REPO_ID, fresh.commit)]
    with _http() as http:
        for f in torrent.files:
            r = http.get(fresh.url(f.path))
            assert r.status_code == 200, f.path
            assert r.content == fresh.files[f.path], f.path
            assert r.headers["content-length"] == str(f.size)
            assert r.headers["etag"] == f'"{f.etag}"'
            assert r.headers["accept-ranges"] == "bytes"
    assert gateway.bytes_served == {("model", REPO_ID, fresh.commit): torrent.total_size}
    assert fresh.front.statuses() == {200}
    # one resolve per file, however many chunks: the redirect target is reused
    assert len(fresh.hub.log.entries(f"/{REPO_ID}/resolve/*/{BIG}")) == 1


def test_ranges_asked_together_cost_one_resolve(fresh: Site) -> None:
    """Transmission asks for dozens of ranges of a file at once; the Hub's resolver sees one request."""
    size = len(fresh.files[BIG])
    spans = [(start, min(start + 100_000, size)) for start in range(0, size, size // 12)]
    with _http() as http, ThreadPoolExecutor(len(spans)) as pool:
        answers = list(
            pool.map(lambda sp: http.get(fresh.url(BIG), headers={"Range": f"bytes={sp[0]}-{sp[1] - 1}"}), spans)
        )
    assert [r.content for r in answers] == [fresh.files[BIG][a:b] for a, b in spans]
    assert len(fresh.hub.log.entries(f"/{REPO_ID}/resolve/*/{BIG}")) == 1


RANGES = [
    # header, status, (start, end) of the file or None for 416
    ("bytes=0-0", 206, (0, 1)),
    ("bytes=1000-", 206, (1000, None)),
    ("bytes=-500", 206, (-500, None)),
    ("bytes=-99999999", 206, (0, None)),
    ("bytes=100000-99999999999", 206, (100000, None)),
    ("bytes=196000-600000", 206, (196000, 600001)),  # across several gateway chunks
    ("bytes=10-19,30-39", 206, (10, 20)),
    ("bytes=5-2", 200, (0, None)),
    ("bytes=abc", 200, (0, None)),
    ("items=0-5", 200, (0, None)),
    ("bytes=99999999-", 416, None),
    ("bytes=-0", 416, None),
]


@pytest.mark.parametrize("path", [BIG, SMALL])
@pytest.mark.parametrize(("header", "status", "span"), RANGES)
def test_ranges_are_exact(
    fresh: Site, path: str, header: str, status: int, span: tuple[int, int | None] | None
) -> None:
    data = fresh.files[path]
    size = len(data)
    with _http() as http:
        r = http.get(fresh.url(path), headers={"Range": header})
    if span is not None and span[0] >= size:
        status, span = 416, None  # e.g. 100000- of a 98-byte file
    assert r.status_code == status
    if span is None:
        assert r.headers["content-range"] == f"bytes */{size}"
        assert fresh.hub.log.entries() == []  # refused from the torrent alone
        return
    start, end = span
    expected = data[start:end]
    assert r.content == expected
    assert r.headers["content-length"] == str(len(expected))
    if status == 206:
        first = max(size + start, 0) if start < 0 else start
        assert r.headers["content-range"] == f"bytes {first}-{first + len(expected) - 1}/{size}"
    else:
        assert "content-range" not in r.headers


def test_head_is_answered_from_the_torrent(fresh: Site) -> None:
    torrent = fresh.published[("model", REPO_ID, fresh.commit)]
    big = next(f for f in torrent.files if f.path == BIG)
    with _http() as http:
        plain = http.head(fresh.url(BIG))
        ranged = http.head(fresh.url(BIG), headers={"Range": "bytes=0-9"})  # Range is for GET only (RFC 9110 §14.2)
        pad = http.head(fresh.url(".pad/1234"))
    for r in (plain, ranged):
        assert r.status_code == 200 and r.content == b""
        assert r.headers["content-length"] == str(big.size) and r.headers["etag"] == f'"{big.etag}"'
        assert "content-range" not in r.headers
    assert pad.status_code == 200 and pad.headers["content-length"] == "1234"
    assert fresh.hub.log.entries() == []


def test_pad_files_are_zeros_and_empty_files_need_no_origin(fresh: Site) -> None:
    with _http() as http:
        whole = http.get(fresh.url(".pad/1000"))
        part = http.get(fresh.url(".pad/1000"), headers={"Range": "bytes=990-"})
        piece = http.get(fresh.url(f".pad/{PIECE}"))
        empty = http.get(fresh.url("empty.txt"))
        empty_ranged = http.get(fresh.url("empty.txt"), headers={"Range": "bytes=0-"})
        too_big = http.get(fresh.url(f".pad/{PIECE + 1}"))
        refused = [http.get(fresh.url(p)).status_code for p in (".pad/0", ".pad/0100", ".pad/-1", ".pad/1/2", ".pad/")]
    assert (whole.status_code, whole.content) == (200, bytes(1000))
    assert (part.status_code, part.content, part.headers["content-range"]) == (206, bytes(10), "bytes 990-999/1000")
    assert (piece.status_code, piece.content) == (200, bytes(PIECE))
    assert (empty.status_code, empty.content, empty.headers["content-length"]) == (200, b"", "0")
    assert empty_ranged.status_code == 416
    assert too_big.status_code == 404 and refused == [404] * 5
    assert fresh.hub.log.entries() == []


def test_anything_but_a_published_file_is_404_and_never_reaches_the_origin(fresh: Site) -> None:
    name, commit = fresh.name, fresh.commit
    release = f"/webseed/model/{REPO_ID}/{commit}"
    targets = [
        f"{release}/{name}/../{name}/{SMALL}",
        f"{release}/{name}/%2e%2e/%2E%2E/{REPO_ID}/resolve/main/{SMALL}",
        f"{release}/{name}/..%2f..%2f..%2fetc%2fpasswd",
        f"{release}/{name}/./{SMALL}",
        f"{release}/{name}//etc/passwd",
        f"{release}/{name}//{SMALL}",
        f"{release}//{name}/{SMALL}",
        f"/webseed/model//{REPO_ID}/{commit}/{name}/{SMALL}",
        f"{release}/{name}/%2Fetc%2Fpasswd",
        f"{release}/{name}/..\\..\\{SMALL}",
        f"{release}/{name}/{SMALL}%00.png",
        f"{release}/{name}/http://evil.example/{SMALL}",
        f"/webseed/http://evil.example/{release}/{name}/{SMALL}",
        "http://evil.example/webseed/x",  # absolute-form request target
        f"{release}/{name}/not-in-the-torrent.bin",
        f"{release}/{name}/{SMALL}/",
        f"{release}/other-name/{SMALL}",
        f"{release}/{SMALL}",
        f"/webseed/model/{REPO_ID}/{'0' * 40}/{name}/{SMALL}",  # a commit nobody published
        f"/webseed/model/{REPO_ID}/main/{name}/{SMALL}",  # a branch, not a commit
        f"/webseed/models/{REPO_ID}/{commit}/{name}/{SMALL}",
        f"/webseed/dataset/{REPO_ID}/{commit}/{name}/{SMALL}",
        f"/webseed/model/swarmhub-demo/other/{commit}/{name}/{SMALL}",
        f"/webseed/model/{REPO_ID}/{commit}/{name}/.pad/{PIECE * 2}",
        "/webseed/",
        f"/webseed/model/{REPO_ID}/{commit}/",
    ]
    for target in targets:
        status, body = _raw(fresh.port, "GET", target, {"Range": "bytes=0-9"})
        assert status == 404, target
        assert b"evil" not in body
    assert _raw(fresh.port, "POST", f"{release}/{fresh.name}/{SMALL}")[0] == 405
    assert fresh.hub.log.entries() == []
    # the same file by its right name, encoded as BEP 19 clients encode it, is served
    assert _raw(fresh.port, "GET", f"{release}/{name}/config%2Ejson")[0] == 200


def test_client_authorization_goes_nowhere_and_the_token_only_to_the_origin(fresh: Site) -> None:
    client_auth = {"Authorization": "Bearer hf_clientOWNtoken"}
    with _http() as http:
        for path in (BIG, SMALL):
            r = http.get(fresh.url(path, repo=GATED), headers=client_auth)
            assert r.status_code == 200 and r.content == fresh.files[path]
            assert TOKEN not in str(r.headers)
        fresh.install(token=None)  # a gateway without the token: the gated repo's files are refused, not "gone"
        refused = http.get(fresh.url(SMALL, repo=GATED), headers=client_auth)
    assert refused.status_code == 403 and "access" in refused.json()["error"]
    assert TOKEN not in refused.text and "hf_client" not in refused.text
    entries = fresh.hub.log.entries()
    assert entries and not any("hf_client" in (e.authorization or "") for e in entries)
    assert {e.token for e in entries if e.server == "cdn"} == {None}  # no token to the CDN
    answered = [e for e in entries if e.server == "origin" and e.status in (200, 206, 302, 307)]
    assert answered and {e.token for e in answered} == {TOKEN}


# ---------------------------------------------------------------------------------------- the weather


def test_429_with_retry_after_is_waited_out(fresh: Site) -> None:
    fresh.hub.faults.respond("/lfs/*", 429, retry_after=1, times=2)
    started = time.monotonic()
    with _http() as http:
        r = http.get(fresh.url(BIG))
    assert r.status_code == 200 and r.content == fresh.files[BIG]
    assert time.monotonic() - started >= 1.0  # the origin asked for a second
    assert [e.status for e in fresh.hub.log.entries("/lfs/*")].count(429) == 2
    assert fresh.front.statuses() == {200}


def test_5xx_and_resets_never_reach_the_client(fresh: Site) -> None:
    faults = fresh.hub.faults
    faults.respond(f"/{REPO_ID}/resolve/*", 503, times=1)
    faults.respond("/api/resolve-cache/*", 500, times=2)
    faults.respond("/lfs/*", 502, times=2)
    faults.reset("/lfs/*", after_bytes=100_000, times=2)
    faults.reset("/api/resolve-cache/*", after_bytes=10, times=2)
    torrent = fresh.published[("model", REPO_ID, fresh.commit)]
    with _http() as http:
        for f in torrent.files:
            r = http.get(fresh.url(f.path), headers={"Range": f"bytes=0-{max(f.size - 1, 0)}"} if f.size else {})
            assert r.content == fresh.files[f.path], f.path
    assert faults.rules() == []  # every fault fired
    assert fresh.front.statuses() <= {200, 206}


def test_a_signed_url_the_cdn_refuses_is_resolved_again(fresh: Site) -> None:
    """A CDN may refuse a signed URL before the expiry it states (clock skew, a rotated key): the gateway
    forgets it and resolves again, and the client never hears of it."""
    fresh.install(chunk_size=64 * 1024, window=1)
    fresh.hub.faults.delay("/lfs/*", 0, times=3)  # the first chunks come through, on the kept URL ...
    fresh.hub.faults.respond("/lfs/*", 403, times=2)  # ... then the CDN refuses it, and the next one
    with _http() as http:
        r = http.get(fresh.url(BIG))
    assert r.status_code == 200 and r.content == fresh.files[BIG]
    assert [e.status for e in fresh.hub.log.entries("/lfs/*")].count(403) == 2
    assert len(fresh.hub.log.entries(f"/{REPO_ID}/resolve/*/{BIG}")) == 3  # the first, then one per refusal


def _read_slowly(site: Site, path: str, reads: int, pause: float) -> None:
    """``reads`` ranges of ``path`` one after the other, ``pause`` seconds apart (time passing is the point)."""
    data = site.files[path]
    step = max(1, len(data) // reads)
    with _http() as http:
        for n in range(reads):
            if n:
                time.sleep(pause)
            start = n * step
            r = http.get(site.url(path), headers={"Range": f"bytes={start}-{start + 999}"})
            assert r.status_code == 206 and r.content == data[start : start + 1000]


def test_short_lived_signed_urls_are_resolved_again_before_they_expire(fresh: Site) -> None:
    """A signed URL good for 3-4 s (``Expires=``, rounded up to a second) is kept until 10% of that is left,
    then resolved again: no request ever goes out on a URL past its expiry (the CDN would refuse it)."""
    fresh.hub.settings = replace(fresh.hub.settings, url_lifetime=3.0)
    fresh.install(chunk_size=64 * 1024, window=1)
    _read_slowly(fresh, BIG, reads=16, pause=0.4)  # ~6 s
    assert {e.status for e in fresh.hub.log.entries("/lfs/*")} == {206}  # never refused: never used expired
    assert 2 <= len(fresh.hub.log.entries(f"/{REPO_ID}/resolve/*/{BIG}")) <= 4  # renewed, not per range
    assert fresh.front.statuses() == {206}


def test_long_lived_signed_urls_are_not_resolved_needlessly(fresh: Site) -> None:
    """A signed URL good for an hour is kept past the default age of targets that do not say when they expire
    (0.5 s here; 300 s normally): one resolve. The regular file's redirect (relative, no expiry) is resolved
    again once that default has passed."""
    fresh.install(chunk_size=64 * 1024, window=1, redirect_max_age=0.5)
    for path in (BIG, SMALL):
        _read_slowly(fresh, path, reads=3, pause=0.8)
    assert len(fresh.hub.log.entries(f"/{REPO_ID}/resolve/*/{BIG}")) == 1
    assert len(fresh.hub.log.entries(f"/{REPO_ID}/resolve/*/{SMALL}")) == 3


def test_errors_that_outlive_the_retries_are_503_never_404(fresh: Site) -> None:
    fresh.install(retries=2)
    fresh.hub.faults.respond("/api/resolve-cache/*", 500)
    with _http() as http:
        r = http.get(fresh.url(SMALL))
        assert (r.status_code, r.headers["retry-after"]) == (503, "30")
        fresh.hub.faults.clear()
        assert http.get(fresh.url(SMALL)).content == fresh.files[SMALL]  # nothing poisoned: the next request works
        fresh.install(upstream_timeout=0.5)
        fresh.hub.faults.delay("/api/resolve-cache/*", 3, times=1)
        started = time.monotonic()
        slow = http.get(fresh.url(SMALL))
        assert slow.status_code == 503 and time.monotonic() - started < 2.5
        fresh.hub.faults.respond("/api/resolve-cache/*", 404, headers={"X-Error-Code": "EntryNotFound"}, times=1)
        assert http.get(fresh.url("vae.json")).status_code == 404  # the origin says the file is gone


def test_a_failure_after_the_status_line_breaks_the_connection(fresh: Site) -> None:
    fresh.install(retries=1, chunk_size=64 * 1024, window=1)
    fresh.hub.faults.delay("/lfs/*", 0, times=1)  # the first chunk comes through ...
    fresh.hub.faults.respond("/lfs/*", 500)  # ... then the CDN fails for good
    received = bytearray()
    with _http() as http, pytest.raises(httpx.RemoteProtocolError), http.stream("GET", fresh.url(BIG)) as r:
        assert r.status_code == 200
        for chunk in r.iter_bytes():
            received += chunk
    assert 0 < len(received) < len(fresh.files[BIG])  # never a short body passed off as complete
    assert received == fresh.files[BIG][: len(received)]


def test_a_client_that_goes_away_stops_the_upstream_reads(fresh: Site) -> None:
    fresh.install(chunk_size=64 * 1024, window=2)
    fresh.hub.faults.delay("/lfs/*", 0.1)  # reading all 32 chunks would take ~1.6 s
    with socket.create_connection(("127.0.0.1", fresh.port)) as sock:
        sock.sendall(f"GET {fresh.url(BIG)[len(fresh.base) :]} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
    time.sleep(2.0)  # long enough for the whole file, had the gateway kept reading
    assert len(fresh.hub.log.entries("/lfs/*")) <= 5


# ----------------------------------------------------------------------------- real clients, no peers


@contextlib.contextmanager
def hub_weather(site: Site) -> Iterator[None]:
    """The Hub on a bad day: signed CDN URLs that expire within the download, a few 429s and 500s."""
    site.hub.settings = replace(site.hub.settings, url_lifetime=1.0)
    site.hub.faults.respond("/lfs/*", 429, retry_after=1, times=2)
    site.hub.faults.respond("/api/resolve-cache/*", 500, times=2)
    site.hub.faults.respond(f"/{REPO_ID}/resolve/*", 500, times=1)
    yield
    assert site.hub.faults.rules() == []  # every fault fired, and was absorbed
    assert site.front.statuses() <= {200, 206}, sorted(site.front.statuses())  # no error, no redirect


def _check_landed(folder: Path, files: dict[str, bytes], *, empty_files_made: bool = True) -> None:
    for path, data in files.items():
        target = folder / path
        if not data and not empty_files_made:
            assert not target.exists() or target.stat().st_size == 0
            continue
        assert sha256(target.read_bytes()) == sha256(data), path


def _total(site: Site) -> int:
    return site.published[("model", REPO_ID, site.commit)].total_size


def test_aria2c_downloads_the_classic_torrent_from_the_gateway_alone(fresh: Site, tmp_path: Path) -> None:
    gateway = fresh.install()
    with hub_weather(fresh):
        aria2_download(fresh.torrents["v1"], tmp_path, timeout=20)
    _check_landed(tmp_path / fresh.name, fresh.files)
    assert gateway.bytes_served[("model", REPO_ID, fresh.commit)] >= _total(fresh)


def test_transmission_downloads_the_classic_torrent_from_the_gateway_alone(fresh: Site, tmp_path: Path) -> None:
    gateway = fresh.install()
    with hub_weather(fresh):
        transmission_download(fresh.torrents["v1"], tmp_path, timeout=20)
    _check_landed(tmp_path / fresh.name, fresh.files, empty_files_made=False)  # 3.00 makes no empty files
    assert gateway.bytes_served[("model", REPO_ID, fresh.commit)] >= _total(fresh)


def test_swarmhub_pull_downloads_the_hybrid_from_the_gateway_alone(fresh: Site, tmp_path: Path) -> None:
    """No --endpoint: the torrent's web seed is the fallback source; HF_ENDPOINT points at nothing."""
    gateway = fresh.install()
    with hub_weather(fresh):
        result = pull(
            REPO_ID, "--torrent", fresh.torrents["hybrid"], "--cache-dir", tmp_path / "hub", "--origin-after", "0",
            timeout=20,
        )  # fmt: skip
    assert result["peer_bytes"] == 0 and result["commit"] == fresh.commit
    assert snapshot_files(Path(result["snapshot_path"])) == fresh.files
    unique = {sha256(d): d for d in fresh.files.values()}  # files with the same bytes are fetched once
    assert gateway.bytes_served[("model", REPO_ID, fresh.commit)] >= sum(map(len, unique.values()))
