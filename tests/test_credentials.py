"""Tokens stay with their origin (issue 13): each test is an origin, registry or upstream that redirects the way
an attacker would, a recording server at the redirect's target, and a check of what reached it.

``Recorder`` speaks TLS and plain HTTP on one loopback port, so an ``https://127.0.0.1:P`` origin can redirect to
``http://127.0.0.1:P`` -- the downgrade on the same host and port, where a netloc comparison would say "same".
"""

from __future__ import annotations

import asyncio
import datetime
import http.server
import ipaddress
import json
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from swarmhub.errors import ConfigError, OriginError
from swarmhub.hub.repo import RepoType
from swarmhub.node.endpoint import endpoint_app
from swarmhub.node.releases import KnownRelease
from swarmhub.origin.client import OriginClient
from swarmhub.origin.credentials import same_origin, shown_url
from swarmhub.registry.client import RegistryClient, RegistryError

TOKEN = "hf_victimVICTIMvictim0123456789"
COMMIT = "c" * 40
WEIGHTS = bytes(range(256)) * 64  # 16 KiB

Answer = tuple[int, dict[str, str], bytes]


@dataclass(frozen=True)
class Seen:
    scheme: str  # "https" when the request came over TLS
    method: str
    path: str
    host: str  # the Host header
    headers: dict[str, str]  # lower-case names

    @property
    def origin(self) -> str:
        return f"{self.scheme}://{self.host}"


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the clients under test use it
    server: _Server

    def _answer(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        scheme = "https" if isinstance(self.connection, ssl.SSLSocket) else "http"
        headers = {k.lower(): v for k, v in self.headers.items()}
        seen = Seen(scheme, self.command, self.path, self.headers.get("Host", ""), headers)
        self.server.seen.append(seen)
        status, extra, content = self.server.answer(seen, body)
        self.send_response(status)
        for name, value in {"Content-Length": str(len(content)), **extra}.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(content)

    do_GET = do_HEAD = do_POST = _answer

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, tls: ssl.SSLContext | None, answer: Callable[[Seen, bytes], Answer]) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.tls = tls
        self.answer = answer
        self.seen: list[Seen] = []

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        sock, address = super().get_request()
        sock.settimeout(10)
        if self.tls is not None and sock.recv(1, socket.MSG_PEEK) == b"\x16":  # RFC 8446 §5.1: a handshake record
            sock = self.tls.wrap_socket(sock, server_side=True)
        return sock, address


class Recorder:
    """A loopback server on one port, TLS or plain as each client opens, recording every request."""

    def __init__(self, answer: Callable[[Seen, bytes], Answer], tls: ssl.SSLContext | None = None) -> None:
        self._server = _Server(tls, answer)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True).start()  # quick to stop

    @property
    def seen(self) -> list[Seen]:
        return list(self._server.seen)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@dataclass(frozen=True)
class Certificate:
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, self.key)
        return context

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.cert))


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    """A self-signed certificate for 127.0.0.1 and localhost."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    san = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(san, critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return Certificate(folder / "cert.pem", folder / "key.pem")


def _target_answer(seen: Seen, body: bytes) -> Answer:
    """What a redirect's target serves: the file's ranges, and revision info."""
    if seen.path.startswith("/target/file"):
        start, end = (int(n) for n in seen.headers["range"].removeprefix("bytes=").split("-"))
        content_range = f"bytes {start}-{end}/{len(WEIGHTS)}"
        return 206, {"Content-Range": content_range}, WEIGHTS[start : end + 1]
    if seen.path.startswith("/target/api"):
        return 200, {"Content-Type": "application/json"}, json.dumps({"sha": COMMIT}).encode()
    return 404, {}, b""


def _tokens_in(seen: Seen) -> bool:
    return TOKEN in seen.path or any(TOKEN in value for value in seen.headers.values())


# The targets an origin at https://127.0.0.1:{origin} redirects to; {other} is a second server's port.
TARGETS = {
    "https-to-http, same host and port": "http://127.0.0.1:{origin}",
    "other port": "http://127.0.0.1:{other}",
    "other host": "http://localhost:{other}",
    "other host over https": "https://localhost:{origin}",
}


@dataclass
class Origin:
    """An https origin on loopback that redirects resolves and revision info to ``target``, and another server."""

    server: Recorder
    other: Recorder
    target: str = ""  # where the redirects lead: a base URL, maybe with a query the paths are appended to

    @property
    def endpoint(self) -> str:
        return f"https://127.0.0.1:{self.server.port}"

    @property
    def seen(self) -> list[Seen]:
        return self.server.seen + self.other.seen


@pytest.fixture
def origin(certificate: Certificate, monkeypatch: pytest.MonkeyPatch) -> Iterator[Origin]:
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate.cert))  # the origin client trusts what the system trusts

    def origin_answer(seen: Seen, body: bytes) -> Answer:
        if seen.scheme == "https" and seen.path.startswith(("/org/repo/resolve/", "/api/models/org/repo/revision/")):
            kind = "file" if "/resolve/" in seen.path else "api"
            return 302, {"Location": f"{made.target}/target/{kind}"}, b""
        return _target_answer(seen, body)

    made = Origin(
        Recorder(origin_answer, certificate.server_context()), Recorder(_target_answer, certificate.server_context())
    )
    try:
        yield made
    finally:
        made.server.close()
        made.other.close()


@pytest.mark.parametrize("target", TARGETS.values(), ids=TARGETS.keys())
def test_the_hf_token_follows_no_redirect_off_the_origin(origin: Origin, target: str) -> None:
    """A resolve (bulk reads, the redirect kept between them) and an API call redirected off the origin: the
    follow-up requests carry no Authorization; the origin's own requests carry it."""
    origin.target = target.format(origin=origin.server.port, other=origin.other.port)

    async def go() -> tuple[bytes, str]:
        async with OriginClient(origin.endpoint, TOKEN, retries=1) as client:
            data = bytearray(len(WEIGHTS))
            half = len(WEIGHTS) // 2
            await client.read_range_into("model", "org/repo", COMMIT, "w.bin", 0, memoryview(data)[:half])
            await client.read_range_into("model", "org/repo", COMMIT, "w.bin", half, memoryview(data)[half:])
            commit = await client.resolve_revision("model", "org/repo", "main")
        return bytes(data), commit

    data, commit = asyncio.run(go())
    assert data == WEIGHTS and commit == COMMIT
    at_origin = [s for s in origin.seen if s.origin == origin.endpoint]
    elsewhere = [s for s in origin.seen if s.origin != origin.endpoint]
    assert ["/revision/" in s.path for s in at_origin] == [False, True]  # one resolve: the redirect was kept
    assert all(s.headers.get("authorization") == f"Bearer {TOKEN}" for s in at_origin)
    assert len(elsewhere) == 3  # two ranges and the revision info, at the target
    assert not any(_tokens_in(s) for s in elsewhere)


def test_same_origin_is_scheme_host_and_port() -> None:
    origin = "https://huggingface.co"
    assert same_origin("https://huggingface.co/x?y=1", origin)
    assert same_origin("https://HuggingFace.co:443/x", origin)  # the default port, spelled
    for url in (
        "http://huggingface.co/x",  # the downgrade
        "http://huggingface.co:443/x",
        "https://huggingface.co:8443/x",
        "https://cdn-lfs.hf.co/x",
        "https://huggingface.co.evil.example/x",
        "https://huggingface.co@evil.example/x",
        "https://evil.example\\@huggingface.co/x",  # WHATWG parsers go to evil.example
        "https://user@huggingface.co/x",  # userinfo: never a token's target
        "https://huggingface.co:99999/x",
        "https://[::1/x",
        "ftp://huggingface.co/x",
        "/relative",
    ):
        assert not same_origin(url, origin), url
    assert same_origin("http://127.0.0.1:8080/a", "http://127.0.0.1:8080")
    assert same_origin("http://[::1]:80/a", "http://[::1]")
    assert not same_origin("http://localhost:8080/a", "http://127.0.0.1:8080")


def test_shown_urls_hold_no_credentials() -> None:
    signed = "https://user:hunter2@cdn.example/f?Expires=1&Signature=sig&Key-Pair-Id=K#frag"
    assert shown_url(signed) == "https://cdn.example/f"
    assert shown_url("http://h/\x1b[31mred\x00") == "http://h/%1B[31mred%00"  # no terminal escapes
    assert len(shown_url("http://h/" + "a" * 1000)) == 200


def test_credentials_in_urls_are_refused_without_being_shown() -> None:
    with pytest.raises(ConfigError) as origin:
        OriginClient(f"https://user:{TOKEN}@mirror.example")
    with pytest.raises(ConfigError) as registry:
        RegistryClient(f"https://user:{TOKEN}@registry.example")
    with pytest.raises(ConfigError) as ftp:
        RegistryClient(f"ftp://user:{TOKEN}@registry.example")
    with pytest.raises(ConfigError) as upstream:
        endpoint_app(NoReleases(), f"https://user:{TOKEN}@mirror.example")
    for info in (origin, registry, ftp, upstream):
        assert TOKEN not in str(info.value) and TOKEN not in (info.value.hint or "")
    assert "credentials" in str(origin.value) and "credentials" in str(registry.value)


def test_an_error_at_a_signed_target_shows_no_signature(origin: Origin) -> None:
    """A CDN target that answers 404: the error (message and url) names the host and path, not the signature."""
    signature = "sigSECRETsignature0123456789"
    origin.target = f"http://127.0.0.1:{origin.other.port}/gone?X-Amz-Signature={signature}&"

    async def go() -> None:
        async with OriginClient(origin.endpoint, TOKEN, retries=1) as client:
            await client.read_range_into("model", "org/repo", COMMIT, "w.bin", 0, memoryview(bytearray(8)))

    with pytest.raises(OriginError) as info:
        asyncio.run(go())
    assert info.value.status == 404 and info.value.url == f"http://127.0.0.1:{origin.other.port}/gone"
    assert signature not in str(info.value) and TOKEN not in str(info.value)


# ------------------------------------------------------------------------------------------------- publish

REDIRECTS = (301, 302, 303, 307, 308)


@pytest.fixture
def registries() -> Iterator[tuple[Recorder, Recorder, dict[str, str]]]:
    """(registry, target, where): the registry redirects POST /api/releases and GET /api/info to where["to"]."""
    where: dict[str, str] = {}

    def registry_answer(seen: Seen, body: bytes) -> Answer:
        if seen.path in ("/api/releases", "/api/info"):
            return int(where["status"]), {"Location": where["to"] + seen.path}, b""
        return 404, {}, b""

    def target_answer(seen: Seen, body: bytes) -> Answer:
        return 200, {"Content-Type": "application/json"}, b'{"ok": true}'

    registry, target = Recorder(registry_answer), Recorder(target_answer)
    try:
        yield registry, target, where
    finally:
        registry.close()
        target.close()


@pytest.mark.parametrize("status", REDIRECTS)
@pytest.mark.parametrize("to", ["http://localhost:{target}", "http://127.0.0.1:{target}", ""])
def test_publish_refuses_redirects_and_keeps_the_token(
    registries: tuple[Recorder, Recorder, dict[str, str]], status: int, to: str
) -> None:
    """urllib turns a POST's 301/302/303 into a GET to the Location with the Authorization header on it; publish
    follows no redirect at all (another host, another port, or the registry's own path), and says so."""
    registry, target, where = registries
    where.update(status=str(status), to=to.format(target=target.port))
    client = RegistryClient(f"http://127.0.0.1:{registry.port}", TOKEN)
    with pytest.raises(RegistryError) as info:
        client.publish(b"hybrid", b"classic")
    assert info.value.status == status and "redirected /api/releases" in str(info.value)
    assert "--registry" in (info.value.hint or "") and TOKEN not in str(info.value)
    assert [(s.method, s.headers.get("authorization")) for s in registry.seen] == [("POST", f"Bearer {TOKEN}")]
    assert not target.seen  # nothing at all went to the redirect's target


def test_reading_a_registry_still_follows_redirects(registries: tuple[Recorder, Recorder, dict[str, str]]) -> None:
    registry, target, where = registries
    where.update(status="302", to=f"http://localhost:{target.port}")
    assert RegistryClient(f"http://127.0.0.1:{registry.port}", TOKEN).info() == {"ok": True}
    assert [s.path for s in target.seen] == ["/api/info"] and not any(_tokens_in(s) for s in target.seen)


def test_a_registry_that_echoes_the_token_does_not_get_it_printed() -> None:
    def echo(seen: Seen, body: bytes) -> Answer:
        return 400, {"Content-Type": "application/json"}, json.dumps({"error": seen.headers["authorization"]}).encode()

    registry = Recorder(echo)
    try:
        with pytest.raises(RegistryError) as info:
            RegistryClient(f"http://127.0.0.1:{registry.port}", TOKEN).publish(b"h", b"c")
    finally:
        registry.close()
    assert TOKEN not in str(info.value) and "<token>" in str(info.value)


# ---------------------------------------------------------------------------------------- node passthrough


class NoReleases:
    """A node that knows no release: everything is the upstream's."""

    async def release(self, repo_type: RepoType, repo_id: str, commit: str) -> KnownRelease | None:
        return None

    async def knows(self, repo_type: RepoType, repo_id: str) -> bool:
        return False

    async def local_head(self, repo_type: RepoType, repo_id: str, revision: str) -> tuple[str, float] | None:
        return None

    async def record_head(self, repo_type: RepoType, repo_id: str, revision: str, commit: str) -> None:
        pass


NODE = "http://127.0.0.1:8080"  # what the client calls the node (a name the node's Host check allows)
USER_TOKEN = "hf_clientCLIENTclient0123456789"

UPSTREAM_TARGETS = {
    "https-to-http, same host and port": "http://127.0.0.1:{origin}",
    "other port": "http://127.0.0.1:{other}",
    "other host": "http://localhost:{other}",
}


@pytest.mark.parametrize("target", UPSTREAM_TARGETS.values(), ids=UPSTREAM_TARGETS.keys())
@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize("path", ["/org/repo/resolve/main/config.json", "/api/whoami-v2"])
def test_the_node_relays_redirects_off_the_upstream_without_following_them(
    certificate: Certificate, target: str, method: str, path: str
) -> None:
    """The upstream redirects a resolve (no X-Repo-Commit, so the endpoint would like to learn it) or an API call
    off its origin: the client gets the redirect as it was, and only the upstream saw the client's token."""
    where: dict[str, str] = {}

    def upstream_answer(seen: Seen, body: bytes) -> Answer:
        if seen.scheme == "https" and seen.path == path:
            return 302, {"Location": where["target"] + "/target/file"}, b""
        return 200, {"X-Repo-Commit": COMMIT, "ETag": '"e"', "Content-Length": "0"}, b""

    upstream = Recorder(upstream_answer, certificate.server_context())
    other = Recorder(_target_answer, certificate.server_context())
    where["target"] = target.format(origin=upstream.port, other=other.port)
    base = f"https://127.0.0.1:{upstream.port}"

    async def go() -> httpx.Response:
        transport = httpx.AsyncHTTPTransport(verify=certificate.client_context())
        app = endpoint_app(NoReleases(), base, transport=transport, retries=0)
        try:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=NODE) as client:
                return await client.request(method, path, headers={"Authorization": f"Bearer {USER_TOKEN}"})
        finally:
            await app.aclose()

    try:
        answer = anyio.run(go)
        seen = upstream.seen + other.seen
    finally:
        upstream.close()
        other.close()
    assert answer.status_code == 302
    assert answer.headers["location"] == where["target"] + "/target/file"  # not made the node's, not followed
    assert seen and all(s.origin == f"https://127.0.0.1:{upstream.port}" and s.path == path for s in seen)
    assert all(s.headers.get("authorization") == f"Bearer {USER_TOKEN}" for s in seen)
