"""The origin client against a Hub that misbehaves (devhub): redirects, expiry, 429, 5xx, resets, bad bytes."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import http.server
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.cli import run_cli, sigint_default
from swarmhub.create.release import CreateRequest, create_release_torrent
from swarmhub.devhub import DevHub, DevHubSettings
from swarmhub.errors import IntegrityError, OriginUnavailable, RepoNotFound
from swarmhub.hub.repo import git_blob_hasher
from swarmhub.origin import client as client_module
from swarmhub.origin.client import OriginClient

WEIGHTS = os.urandom(3 * 1024 * 1024 + 777)
FILES = {
    ".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n",
    "config.json": b'{"hidden_size": 8}\n',
    "model.safetensors": WEIGHTS,
    "nested/deep/tokenizer.json": b'{"v": 1}\n',
    "empty.txt": b"",
}
TOKEN = "hf_secretSECRETsecret123"


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[DevHub]:
    for repo in ("models/org/demo", "models/org/gated"):
        for path, data in FILES.items():
            target = tmp_path / "root" / repo / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
    with DevHub(tmp_path / "root", settings=DevHubSettings(gated={"org/gated": TOKEN})) as server:
        yield server


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Record the client's backoff sleeps and skip them (no test waits on the clock)."""
    recorded: list[float] = []
    real_sleep = asyncio.sleep

    async def fake_sleep(delay: float) -> None:
        recorded.append(delay)
        await real_sleep(0)

    monkeypatch.setattr(client_module, "_sleep", fake_sleep)
    return recorded


def _create(hub: DevHub, repo: str = "org/demo", token: str | None = None, **kw: object):  # type: ignore[no-untyped-def]
    async def go():  # type: ignore[no-untyped-def]
        retries, connections = kw.pop("retries", 6), kw.pop("connections", 8)
        async with OriginClient(hub.endpoint, token, retries=retries, connections=connections) as client:  # type: ignore[arg-type]
            return await create_release_torrent(CreateRequest("model", repo, "main", piece_size=65536, **kw), client)  # type: ignore[arg-type]

    return asyncio.run(go())


def _expected_etag(path: str) -> str:
    data = FILES[path]
    if path.endswith(".safetensors"):
        import hashlib

        return hashlib.sha256(data).hexdigest()
    h = git_blob_hasher(len(data))
    h.update(data)
    return h.hexdigest()


def test_streams_through_relative_307_and_cdn_302_without_leaking_the_token(hub: DevHub) -> None:
    created = _create(hub, "org/gated", TOKEN)
    assert {f.path: f.etag for f in created.torrent.files} == {p: _expected_etag(p) for p in FILES}
    resolves = hub.log.entries("*/resolve/*")
    assert resolves and all(e.status in (302, 307) and e.token == TOKEN for e in resolves)
    cdn = [e for e in hub.log.entries() if e.server == "cdn"]
    assert cdn and all(e.authorization is None for e in cdn)  # the token never goes to the CDN
    assert all(e.range and e.range.startswith("bytes=") for e in cdn)
    assert TOKEN.encode() not in created.data


def test_gated_repo_without_token_is_a_clear_error(hub: DevHub) -> None:
    with pytest.raises(Exception) as info:
        _create(hub, "org/gated")
    assert "HF_TOKEN" in (getattr(info.value, "hint", "") or "")


def test_429_honours_retry_after_and_500_is_retried(hub: DevHub, sleeps: list[float]) -> None:
    hub.faults.respond("/lfs/*", 429, retry_after=7, times=1)
    hub.faults.respond("/api/models/org/demo/tree/*", 500, times=2)
    created = _create(hub)
    assert created.torrent.total_size == sum(len(b) for b in FILES.values())
    assert any(d >= 7 for d in sleeps), sleeps  # waited at least what Retry-After asked
    assert len(hub.log.entries("/api/models/org/demo/tree/*")) == 3


def test_reset_mid_body_resumes_from_the_byte_it_stopped_at(hub: DevHub, sleeps: list[float]) -> None:
    hub.faults.reset("/lfs/*", after_bytes=1_000_000, times=1)
    created = _create(hub)
    assert dict((f.path, f.etag) for f in created.torrent.files)["model.safetensors"] == _expected_etag(
        "model.safetensors"
    )
    starts = sorted(int(e.range.split("=")[1].split("-")[0]) for e in hub.log.entries("/lfs/*") if e.range)
    # one of the retried ranges starts where the reset cut the body, not at a chunk boundary
    assert any(s % 65536 for s in starts), starts


def test_expired_signed_url_is_resolved_again(hub: DevHub, sleeps: list[float]) -> None:
    hub.settings = dataclasses.replace(hub.settings, url_lifetime=1.0)
    hub.faults.delay("/lfs/*", 2.2, times=1)  # arrives after its URL expired (expiry is rounded up to 1 s)
    created = _create(hub)
    assert created.torrent.total_size > 0
    assert any(e.status == 403 for e in hub.log.entries("/lfs/*"))
    assert len(hub.log.entries("/org/demo/resolve/*/model.safetensors")) >= 2


def test_wrong_bytes_are_caught_and_name_the_file(hub: DevHub) -> None:
    hub.faults.corrupt("/lfs/*", offset=100, times=1)
    with pytest.raises(IntegrityError) as info:
        _create(hub)
    assert info.value.path == "model.safetensors" and "model.safetensors" in str(info.value)


def test_persistent_failure_gives_up_with_a_clear_error(hub: DevHub, sleeps: list[float]) -> None:
    hub.faults.respond("/api/models/org/demo/revision/*", 503)
    with pytest.raises(OriginUnavailable, match="gave up after 6 attempts"):
        _create(hub)
    assert len(sleeps) == 5


def test_tree_pagination_and_siblings_fallback(hub: DevHub) -> None:
    hub.settings = dataclasses.replace(hub.settings, page_size=2)
    paged = _create(hub)
    assert len(hub.log.entries("/api/models/org/demo/tree/*")) == 4  # 5 files + 2 folders, 2 per page
    hub.settings = dataclasses.replace(hub.settings, tree_404=True)
    fallback = _create(hub)
    assert fallback.data == paged.data


def test_unknown_repo(hub: DevHub) -> None:
    with pytest.raises(RepoNotFound):
        _create(hub, "org/nope")


def test_cli_error_is_one_line_and_writes_nothing(hub: DevHub, tmp_path: Path) -> None:
    hub.faults.corrupt("/lfs/*", offset=5, times=1)
    out = run_cli("create", "org/demo", "--endpoint", hub.endpoint, "-o", tmp_path / "x.torrent")
    assert out.returncode == 1 and out.stderr.count("\n") == 1, out.stderr
    assert "model.safetensors" in out.stderr and not list(tmp_path.glob("*.torrent*"))


def test_cli_token_from_env_reaches_origin_only_and_is_never_printed(hub: DevHub, tmp_path: Path) -> None:
    out = run_cli(
        "-vv",
        "create",
        "org/gated",
        "--endpoint",
        hub.endpoint,
        "--json",
        "-o",
        tmp_path / "g.torrent",
        env={"HF_TOKEN": TOKEN},
    )
    assert out.returncode == 0, out.stderr
    assert TOKEN not in out.stdout and TOKEN not in out.stderr
    assert TOKEN.encode() not in (tmp_path / "g.torrent").read_bytes()
    assert json.loads(out.stdout)["repo_id"] == "org/gated"


def test_chunks_of_a_file_cost_one_resolve(hub: DevHub, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each chunk is a ranged GET, but the CDN target of a file is reused until it fails."""
    import swarmhub.create.release as release

    monkeypatch.setattr(release, "ORIGIN_CHUNK", 256 * 1024)  # many chunks for the 3 MiB file
    _create(hub, connections=1)
    cdn = [e for e in hub.log.entries("/lfs/*") if e.status == 206]
    assert len(cdn) >= 12
    assert len(hub.log.entries("/org/demo/resolve/*/model.safetensors")) == 1
    hub.log.clear()
    _create(hub, connections=4)  # concurrent first chunks may each resolve, but no more than the connections
    assert len(hub.log.entries("/org/demo/resolve/*/model.safetensors")) <= 4


def test_local_dir_download_gives_the_same_torrent_without_revision(hub: DevHub, tmp_path: Path) -> None:
    """huggingface_hub's local_dir records commit and etags; --from-dir needs nothing else."""
    from huggingface_hub import snapshot_download

    streamed = _create(hub)
    local = tmp_path / "local"
    snapshot_download("org/demo", endpoint=hub.endpoint, local_dir=local, token=False)
    out = run_cli("create", "org/demo", "--from-dir", local, "--piece-size", "64k", "-o", tmp_path / "l.torrent")
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "l.torrent").read_bytes() == streamed.data


def test_dataset_repo_streams_through_the_datasets_paths(hub: DevHub, tmp_path: Path) -> None:
    for path, data in {"data/train.parquet": os.urandom(200_000), "README.md": b"# data\n"}.items():
        target = hub.root / "datasets" / "org" / "corpus" / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    out = run_cli(
        "create",
        "org/corpus",
        "--repo-type",
        "dataset",
        "--endpoint",
        hub.endpoint,
        "--json",
        "-o",
        tmp_path / "d.torrent",
    )
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["repo_type"] == "dataset" and summary["name"].startswith("org--corpus--")
    assert {f["path"] for f in summary["files"]} == {"data/train.parquet", "README.md"}
    assert hub.log.entries("/api/datasets/org/corpus/revision/*") and hub.log.entries("/datasets/org/corpus/resolve/*")


def test_http_proxy_from_the_environment_is_used_and_no_proxy_respected(hub: DevHub, tmp_path: Path) -> None:
    from support.proxy import forward_proxy

    with forward_proxy() as proxy:
        url = f"http://user:pa%40ss@127.0.0.1:{proxy.server_address[1]}"
        out = run_cli(
            "create",
            "org/demo",
            "--endpoint",
            hub.endpoint,
            "--json",
            "-o",
            tmp_path / "p.torrent",
            env={"HTTP_PROXY": url, "NO_PROXY": ""},
        )
        assert out.returncode == 0, out.stderr
        targets = [t for _, t, _ in proxy.log]
        assert any("/api/models/org/demo/revision/main" in t for t in targets)
        assert any("/lfs/" in t for t in targets)  # the CDN bytes went through it too
        assert all(auth == "Basic dXNlcjpwYUBzcw==" for _, _, auth in proxy.log)  # user:pa@ss
        proxied = len(proxy.log)
        out = run_cli(
            "create",
            "org/demo",
            "--endpoint",
            hub.endpoint,
            "-o",
            tmp_path / "n.torrent",
            env={"HTTP_PROXY": url, "NO_PROXY": "127.0.0.1"},
        )
        assert out.returncode == 0, out.stderr
        assert len(proxy.log) == proxied
    assert (tmp_path / "p.torrent").read_bytes() == (tmp_path / "n.torrent").read_bytes()


def test_https_goes_through_a_connect_tunnel(tmp_path: Path) -> None:
    """TLS end to end through the proxy: it sees CONNECT host:port, never the path or the token."""
    import http.server
    import ssl
    import threading

    from support.proxy import forward_proxy

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    made = subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        capture_output=True,
    )
    if made.returncode:
        pytest.skip("openssl cannot make a test certificate here")

    class NotFound(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(404)
            self.send_header("X-Error-Code", "RepoNotFound")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with forward_proxy() as proxy:
            endpoint = f"https://127.0.0.1:{server.server_address[1]}"
            out = run_cli(
                "create",
                "org/x",
                "--endpoint",
                endpoint,
                "-o",
                tmp_path / "x.torrent",
                env={
                    "HTTPS_PROXY": f"127.0.0.1:{proxy.server_address[1]}",
                    "NO_PROXY": "",
                    "SSL_CERT_FILE": str(cert),
                    "HF_TOKEN": TOKEN,
                },
            )
            assert out.returncode == 1 and "RepoNotFound" not in out.stdout
            assert "HTTP 404" in out.stderr and "org/x" in out.stderr, out.stderr
            assert proxy.log and all(
                m == "CONNECT" and t == f"127.0.0.1:{server.server_address[1]}" for m, t, _ in proxy.log
            )
    finally:
        server.shutdown()


def test_ctrl_c_stops_at_once_and_writes_nothing(hub: DevHub, tmp_path: Path) -> None:
    import signal
    import time

    hub.faults.delay("/lfs/*", 30)  # the download hangs; Ctrl-C must not wait for it
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "swarmhub",
            "create",
            "org/demo",
            "--endpoint",
            hub.endpoint,
            "-o",
            str(out_dir / "x.torrent"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=sigint_default,
    )
    deadline = time.monotonic() + 20
    while not hub.log.entries("/org/demo/resolve/*/model.safetensors") and time.monotonic() < deadline:
        time.sleep(0.05)  # the redirect is logged; the CDN request now hangs in the delay
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 130 and err.strip() == "swarmhub: interrupted"
    assert list(out_dir.iterdir()) == []
    hub.faults.clear()


@contextlib.contextmanager
def _pausing_origin(body: bytes, first: int) -> Iterator[tuple[str, threading.Event]]:
    """An origin that sends the first ``first`` bytes of a ranged answer, then waits for the event."""
    go_on = threading.Event()

    class Pausing(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self.send_response(206)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Content-Range", f"bytes 0-{len(body) - 1}/{len(body)}")
            self.end_headers()
            self.wfile.write(body[:first])
            self.wfile.flush()
            go_on.wait(10)
            with contextlib.suppress(OSError):
                self.wfile.write(body[first:])

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Pausing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/org/demo/resolve/main/model.safetensors", go_on
    finally:
        go_on.set()
        server.shutdown()


async def _until_received(client: OriginClient, at_least: int) -> list[int]:
    seen = []
    for _ in range(100):
        await asyncio.sleep(0.05)
        seen.append(client.bytes_received)
        if seen[-1] >= at_least:
            break
    return seen


def test_a_slow_reads_bytes_count_as_they_arrive() -> None:
    """A chaos run: over a slow origin a fetcher's 1 MiB runs showed no bytes until each was whole (a buffered
    socket's readinto fills the whole view), so the coordinator took fetchers that were receiving for stalled,
    dealt their pieces again, and the origin sent them twice."""
    size, first = 1 << 20, 256 << 10  # the origin sends the first 256 KiB, then pauses
    body = os.urandom(size)

    async def read(url: str, go_on: threading.Event) -> tuple[bytes, list[int]]:
        client = OriginClient(url.split("/org/", 1)[0], retries=1)
        view = memoryview(bytearray(size))
        task = asyncio.create_task(client.read_url_range_into(url, 0, view, what="reading", repo_id="org/demo"))
        seen = await _until_received(client, first)  # while the origin holds back the rest
        go_on.set()
        await task
        await client.aclose()
        return bytes(view), seen

    with _pausing_origin(body, first) as (url, go_on):
        got, seen = asyncio.run(read(url, go_on))
    assert got == body
    assert seen[-1] == first, f"bytes received while the origin paused: {seen[-5:]}"


def test_a_cancelled_read_stops_taking_the_body() -> None:
    """A run the coordinator dealt to another node is cancelled; its thread read on to the end of the body
    anyway, so the origin sent those bytes to both nodes."""
    size, first = 8 << 20, 256 << 10
    body = os.urandom(size)

    async def cancel(url: str, go_on: threading.Event) -> int:
        client = OriginClient(url.split("/org/", 1)[0], retries=1)
        view = memoryview(bytearray(size))
        task = asyncio.create_task(client.read_url_range_into(url, 0, view, what="reading", repo_id="org/demo"))
        await _until_received(client, first)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        go_on.set()  # the origin sends the rest: the reading thread takes one more chunk and hangs up
        await asyncio.sleep(1.0)
        received = client.bytes_received
        await client.aclose()
        return received

    with _pausing_origin(body, first) as (url, go_on):
        received = asyncio.run(cancel(url, go_on))
    assert first <= received <= first + (1 << 20), f"{received} bytes taken after the cancel"
