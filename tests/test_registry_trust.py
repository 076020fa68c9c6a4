"""Issue 13, the registry's part: each test does what the attacker did.

- a gated repo's files through the gateway, asked anonymously of a registry whose operator has ``HF_TOKEN``
  set (`registry serve`, the real process): refused; served only with ``SWARMHUB_GATEWAY_TOKEN``;
- publishing a gated repo: refused, by `swarmhub publish` before streaming, by the registry and by its follower;
- a squatted commit: a publish token posts torrents naming the real ``repo@commit`` whose ``config.json``
  has other bytes (same size, other etag): refused naming the file; the honest publish then goes through;
  stored while the upstream was down it is unverified, shown so, and the honest publish replaces it;
- a token scoped to one org publishing another org's repo;
- paging values out of range, a non-ASCII torrent name, a body over the cap, a rebinding ``Host``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from support.cli import run_cli
from support.swarm import REPO_ID, make_release, swarmhub
from swarmhub.bt.bencode import decode, encode
from swarmhub.bt.metainfo import parse_torrent
from swarmhub.devhub import DevHub, DevHubSettings
from swarmhub.devhub.faults import FaultRule, Respond
from swarmhub.gateway import webseed_url
from swarmhub.origin.client import OriginClient
from swarmhub.registry.api import MAX_TORRENT, MAX_UPLOAD
from swarmhub.registry.catalog import Catalog, Release
from swarmhub.registry.client import RegistryClient, RegistryError
from swarmhub.registry.follower import Follower
from swarmhub.registry.server import RegistryServer, registry_app

GATED = "swarmhub-demo/gated-model"
TOKEN = "hf_operatorTOKENsecret13"  # the operator's HF_TOKEN, which has access to the gated repo


@dataclass(frozen=True)
class Pair:
    hybrid: bytes
    classic: bytes

    @property
    def v2(self) -> str:
        info_hash = parse_torrent(self.hybrid).info_hash_v2
        assert info_hash is not None
        return info_hash


@dataclass(frozen=True)
class Origin:
    root: Path
    hub: DevHub
    files: dict[str, bytes]
    commit: str
    gated_commit: str
    honest: Pair  # REPO_ID@commit as the upstream has it
    forged: Pair  # REPO_ID@commit with another config.json
    gated: Pair  # GATED@gated_commit, made with the token


def _create(root: Path, out: str, *args: str | Path, env: dict[str, str] | None = None) -> Pair:
    made = []
    for fmt in ("hybrid", "v1"):
        torrent = root / f"{out}.{fmt}.torrent"
        done = run_cli("create", *args, "--format", fmt, "--piece-size", "64k", "-o", torrent, "--no-progress", env=env)
        assert done.returncode == 0, done.stderr
        made.append(torrent.read_bytes())
    return Pair(*made)


@pytest.fixture(scope="module")
def origin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Origin]:
    root = tmp_path_factory.mktemp("trust")
    files = make_release(root / "origin", size_mb=1)
    repo = root / "origin" / "models" / REPO_ID
    shutil.copytree(repo, root / "origin" / "models" / GATED)
    evil = root / "evil"
    shutil.copytree(repo, evil)
    config = files["config.json"]
    planted = config.replace(b"{", b"[", 1) if b"{" in config else b"!" + config[1:]
    assert planted != config and len(planted) == len(config)  # the same size: only the etag tells
    (evil / "config.json").write_bytes(planted)
    with DevHub(root / "origin", settings=DevHubSettings(gated={GATED: TOKEN})) as hub:
        commit = httpx.get(f"{hub.endpoint}/api/models/{REPO_ID}/revision/main").json()["sha"]
        auth = {"Authorization": f"Bearer {TOKEN}"}
        gated_commit = httpx.get(f"{hub.endpoint}/api/models/{GATED}/revision/main", headers=auth).json()["sha"]
        honest = _create(root, "honest", REPO_ID, "--endpoint", hub.endpoint)
        forged = _create(root, "forged", REPO_ID, "--from-dir", evil, "--revision", commit)
        gated = _create(root, "gated", GATED, "--endpoint", hub.endpoint, env={"HF_TOKEN": TOKEN})
        yield Origin(root, hub, files, commit, gated_commit, honest, forged, gated)


def _dead_endpoint() -> str:
    """An origin that cannot be reached: a port nobody listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def _publish(registry: RegistryServer, token: str, pair: Pair) -> dict[str, Any]:
    return RegistryClient(registry.url, token).publish(pair.hybrid, pair.classic)


def _refusal(registry: RegistryServer, token: str, pair: Pair) -> RegistryError:
    with pytest.raises(RegistryError) as refused:
        _publish(registry, token, pair)
    assert "\n" not in str(refused.value)
    return refused.value


def _release(registry: RegistryServer, commit: str, repo_id: str = REPO_ID) -> dict[str, Any]:
    answer = httpx.get(f"{registry.url}/api/releases/model/{repo_id}/{commit}")
    assert answer.status_code == 200, answer.text
    release: dict[str, Any] = answer.json()
    return release


def _tracked(registry: RegistryServer, pair: Pair) -> bool:
    info_hash = parse_torrent(pair.hybrid).info_hash_v1
    assert info_hash is not None
    query = urllib.parse.urlencode(
        {
            "info_hash": bytes.fromhex(info_hash),
            "peer_id": b"-XX0001-abcdefghijkl",
            "port": 6881,
            "uploaded": 0,
            "downloaded": 0,
            "left": 0,
        }
    )
    answer = decode(httpx.get(f"{registry.url}/announce?{query}").content)
    assert isinstance(answer, dict)
    return b"failure reason" not in answer


def _cli_publish(registry: RegistryServer, token: str, hub: DevHub, repo_id: str = REPO_ID, **env: str) -> Any:
    args = ["publish", repo_id, "--registry", registry.url, "--endpoint", hub.endpoint, "--json"]
    return run_cli(*args, env={"SWARMHUB_TOKEN": token, **env})


# ----------------------------------------------------------------------------------------- squatting


def test_a_squatted_commit_is_refused_naming_the_file_then_the_honest_publish_succeeds(
    origin: Origin, tmp_path: Path
) -> None:
    with RegistryServer(tmp_path / "registry.db", upstream=origin.hub.endpoint) as registry:
        assert registry.catalog is not None
        squatter = registry.catalog.create_token("squatter")
        refused = _refusal(registry, squatter, origin.forged)
        assert refused.status == 422
        assert f"{REPO_ID}@{origin.commit[:12]} is not the upstream's release: config.json has etag" in str(refused)
        assert registry.catalog.get("model", REPO_ID, origin.commit) is None
        assert not _tracked(registry, origin.forged)

        done = _cli_publish(registry, registry.catalog.create_token("honest"), origin.hub)
        assert done.returncode == 0, done.stderr
        published = json.loads(done.stdout)
        assert (published["new"], published["verified"]) == (True, True)
        release = _release(registry, origin.commit)
        assert release["verified"] is True and release["info_hash_v2"] == published["info_hash_v2"]
        # a verified release is never replaced: the squatter is refused by the upstream's tree again
        assert _refusal(registry, squatter, origin.forged).status == 422


def test_an_unverified_publish_is_shown_so_and_replaced_by_the_verified_one(origin: Origin, tmp_path: Path) -> None:
    db = tmp_path / "registry.db"
    with RegistryServer(db, upstream=_dead_endpoint()) as down:
        assert down.catalog is not None
        squatter, honest = down.catalog.create_token("squatter"), down.catalog.create_token("honest")
        stored = _publish(down, squatter, origin.forged)
        assert (stored["new"], stored["verified"], stored["verified_at"]) == (True, False, None)
        assert "could not ask its upstream" in stored["unverified_reason"]
        assert _release(down, origin.commit)["verified"] is False
        page = httpx.get(f"{down.url}/models/{REPO_ID}").text
        assert 'class="tag unverified"' in page and "<strong>unverified</strong>" in page
        assert _tracked(down, origin.forged)
        # while the upstream stays down, another unverified pair does not replace it: first come
        assert _refusal(down, honest, origin.honest).status == 409

    with RegistryServer(db, upstream=origin.hub.endpoint) as up:
        assert _tracked(up, origin.forged)
        done = _cli_publish(up, honest, origin.hub)
        assert done.returncode == 0, done.stderr
        published = json.loads(done.stdout)
        assert (published["new"], published["verified"]) == (True, True)
        served = parse_torrent(httpx.get(published["torrent_url"]).content)
        assert served.info_hash_v2 == published["info_hash_v2"] != origin.forged.v2
        assert _release(up, origin.commit)["published_by"] == "honest"
        assert not _tracked(up, origin.forged)
        assert _tracked(up, Pair(httpx.get(published["torrent_url"]).content, b""))
        assert 'class="tag unverified"' not in httpx.get(f"{up.url}/models/{REPO_ID}").text

    with RegistryServer(db, upstream=_dead_endpoint()) as down_again:
        refused = _refusal(down_again, squatter, origin.forged)
        assert refused.status == 409 and "a verified release is never replaced" in str(refused)


def test_the_follower_verifies_or_replaces_what_was_stored_unverified(origin: Origin, tmp_path: Path) -> None:
    """A followed repo whose commit the catalog holds unverified: the follower asks the upstream's tree; the
    honest torrents are marked verified without streaming a byte, a squatter's are replaced from the upstream."""

    async def one_round(catalog: Catalog) -> list[str]:
        async with OriginClient(origin.hub.endpoint, retries=2) as client:
            follower = Follower(catalog, client, "http://registry.test", interval=0)
            return [r.info_hash_v2 for r in await follower.check_all()]

    for pair, streamed in ((origin.honest, False), (origin.forged, True)):
        catalog = Catalog(tmp_path / f"{pair.v2[:8]}.db")
        try:
            catalog.follow("model", REPO_ID)
            catalog.publish(pair.hybrid, pair.classic, "someone")
            origin.hub.log.clear()
            published = asyncio.run(one_round(catalog))
            release = catalog.get("model", REPO_ID, origin.commit)
            assert release is not None and release.verified
            assert (release.info_hash_v2 == pair.v2) is not streamed
            assert published == ([release.info_hash_v2] if streamed else [])
            file_reads = origin.hub.log.entries(f"/{REPO_ID}/resolve/*", method="GET")
            assert bool(file_reads) is streamed
        finally:
            catalog.close()


# --------------------------------------------------------------------------------------------- gated


def test_publishing_a_gated_repo_is_refused(origin: Origin, tmp_path: Path) -> None:
    with RegistryServer(tmp_path / "registry.db", upstream=origin.hub.endpoint) as registry:
        assert registry.catalog is not None
        token = registry.catalog.create_token("ci")
        origin.hub.log.clear()
        done = _cli_publish(registry, token, origin.hub, GATED, HF_TOKEN=TOKEN)  # the publisher has access
        assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
        assert f"{GATED} is gated or private" in done.stderr and "only public repos are published" in done.stderr
        assert origin.hub.log.entries(f"/{GATED}/resolve/*", method="GET") == []  # refused before streaming
        # the same torrents posted straight to the registry (made with the token elsewhere)
        refused = _refusal(registry, token, origin.gated)
        assert refused.status == 403 and f"{GATED} is gated or private" in str(refused)
        assert registry.catalog.releases_of("model", GATED) == []


def test_the_follower_refuses_a_gated_repo(origin: Origin, tmp_path: Path) -> None:
    """The operator follows a gated repo (their own token has access): the follower asks anonymously, as anyone
    would, and publishes nothing. First with the whole repo gated; then as the Hub answers a gated repo, its
    commit named to anyone and only its files gated: refused by the files' check, before a byte is streamed."""

    async def one_round(catalog: Catalog) -> list[Release]:
        async with OriginClient(origin.hub.endpoint, retries=2) as client:  # anonymous, as the registry builds it
            return await Follower(catalog, client, "http://registry.test", interval=0).check_all()

    catalog = Catalog(tmp_path / "registry.db")
    try:
        catalog.follow("model", GATED)
        origin.hub.log.clear()
        assert asyncio.run(one_round(catalog)) == []
        (follow,) = catalog.follows()
        assert follow.last_commit is None and "restricted" in (follow.last_error or "")
        revision = json.dumps({"id": GATED, "sha": origin.gated_commit})  # the Hub's public repo info
        origin.hub.faults.add(FaultRule(f"/api/models/{GATED}/revision/main", Respond(200, body=revision)))
        assert asyncio.run(one_round(catalog)) == []
        (follow,) = catalog.follows()
        assert f"{GATED} is gated or private" in (follow.last_error or "")
        assert "only public repos are published" in (follow.last_error or "")
        assert catalog.releases_of("model", GATED) == []
        assert origin.hub.log.entries(f"/{GATED}/resolve/*", method="GET") == []
    finally:
        origin.hub.faults.clear()
        catalog.close()


@dataclass
class ServedRegistry:
    process: subprocess.Popen[str]
    url: str


@pytest.fixture
def serve_registry() -> Iterator[Any]:
    """``swarmhub registry serve --port 0`` as an operator runs it, in the environment given; stopped with
    SIGTERM at the end."""
    started: list[subprocess.Popen[str]] = []

    def serve(db: Path, upstream: str, env: dict[str, str]) -> ServedRegistry:
        environment = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "SWARMHUB_GATEWAY_TOKEN")}
        process = subprocess.Popen(
            swarmhub("registry", "serve", "--db", db, "--port", "0", "--upstream", upstream, "--follow-interval", "0"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**environment, **env},
        )
        started.append(process)
        assert process.stdout is not None
        line = process.stdout.readline()  # blocks until it serves (or exits)
        assert line.startswith("registry serving at "), (line, process.stderr and process.stderr.read())
        return ServedRegistry(process, line.split()[3])

    yield serve
    for process in started:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_a_gated_file_through_the_gateway_needs_an_explicit_gateway_token(
    origin: Origin, tmp_path: Path, serve_registry: Any
) -> None:
    """A gated release in the catalog (published before publishing checked): an anonymous client asks the
    gateway for its config.json while the operator's HF_TOKEN is in the registry's environment."""
    db = tmp_path / "registry.db"
    catalog = Catalog(db)
    catalog.publish(origin.gated.hybrid, origin.gated.classic, "before-the-fix")
    catalog.close()
    name = parse_torrent(origin.gated.hybrid).name

    def ask(registry: ServedRegistry) -> httpx.Response:
        url = webseed_url(registry.url, "model", GATED, origin.gated_commit) + f"{name}/config.json"
        return httpx.get(url, headers={"Range": "bytes=0-"})

    origin.hub.log.clear()
    refused = ask(serve_registry(db, origin.hub.endpoint, {"HF_TOKEN": TOKEN}))
    assert refused.status_code == 403, refused.text
    assert origin.files["config.json"] not in refused.content and TOKEN not in refused.text
    assert origin.hub.log.entries() and all(e.token is None for e in origin.hub.log.entries())

    served = ask(serve_registry(db, origin.hub.endpoint, {"SWARMHUB_GATEWAY_TOKEN": TOKEN}))
    assert served.status_code in (200, 206) and served.content == origin.files["config.json"]
    assert TOKEN not in str(served.headers)


# ---------------------------------------------------------------------------------------------- orgs


def test_an_org_scoped_token_cannot_publish_another_orgs_repo(origin: Origin, tmp_path: Path) -> None:
    db = tmp_path / "registry.db"
    made = run_cli("registry", "token", "create", "acme-ci", "--org", "acme", "--org", "acme-labs", "--db", db)
    assert made.returncode == 0 and "for repos of acme, acme-labs only" in made.stdout, made.stderr
    acme = made.stdout.strip().splitlines()[-1]
    with RegistryServer(db, upstream=origin.hub.endpoint) as registry:
        assert registry.catalog is not None
        done = _cli_publish(registry, acme, origin.hub)
        assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
        assert f"token 'acme-ci' publishes repos of acme, acme-labs only, not {REPO_ID}" in done.stderr
        assert "HTTP 403" in done.stderr
        assert registry.catalog.releases_of("model", REPO_ID) == []
        ours = registry.catalog.create_token("demo-ci", ["SwarmHub-Demo"])  # org names are not case-sensitive
        assert _publish(registry, ours, origin.honest)["new"] is True


# ------------------------------------------------------------------------------------------- the rest


@pytest.fixture
def api(origin: Origin, tmp_path: Path) -> Iterator[tuple[TestClient, Catalog]]:
    """The registry app in-process, no upstream (publishes stored unverified)."""
    catalog = Catalog(tmp_path / "registry.db")
    try:
        yield TestClient(registry_app(catalog, public_url="http://registry.test")), catalog
    finally:
        catalog.close()


def test_paging_values_out_of_range_are_400(api: tuple[TestClient, Catalog]) -> None:
    http, _ = api
    for query in ("offset=1" + "0" * 30, f"offset={2**63}", "offset=-1", "limit=-1", "limit=501", "limit=1e3"):
        answer = http.get(f"/api/releases?{query}")
        assert answer.status_code == 400 and answer.json()["error"], query
    assert http.get(f"/api/releases?offset={10**9}&limit=500").json() == {"total": 0, "releases": []}
    assert http.get("/?page=1000000").status_code == 200  # the website's largest page


def _renamed(pair: Pair, name: str) -> Pair:
    def one(data: bytes) -> bytes:
        meta = decode(data)
        assert isinstance(meta, dict)
        meta[b"info"][b"name"] = name.encode()
        return encode(meta)

    return Pair(one(pair.hybrid), one(pair.classic))


def test_torrent_downloads_say_a_non_ascii_name_as_rfc_6266_does(
    origin: Origin, api: tuple[TestClient, Catalog]
) -> None:
    http, catalog = api
    name = "modèle ünïcode"
    renamed = _renamed(origin.honest, name)
    catalog.publish(renamed.hybrid, renamed.classic, "t")
    for query, suffix in (("", ".torrent"), ("?classic=1", ".v1.torrent")):
        answer = http.get(f"/api/releases/model/{REPO_ID}/{origin.commit}/torrent{query}")
        assert answer.status_code == 200
        header = answer.headers["content-disposition"]
        fallback = "mod_le _n_code" + suffix
        assert header == f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{urllib.parse.quote(name + suffix)}"
        encoded = header.partition("filename*=")[2]
        assert encoded.startswith("UTF-8''") and urllib.parse.unquote(encoded[7:]) == name + suffix  # RFC 8187


def test_a_publish_body_is_capped_per_torrent_and_in_all(api: tuple[TestClient, Catalog]) -> None:
    http, catalog = api
    auth = {"Authorization": f"Bearer {catalog.create_token('big')}"}
    big = base64.b64encode(bytes(MAX_TORRENT + 1)).decode()
    answer = http.post("/api/releases", json={"torrent": big, "classic_torrent": "AA=="}, headers=auth)
    assert answer.status_code == 413 and f"at most {MAX_TORRENT} bytes" in answer.json()["error"]
    huge = b'{"torrent": "' + b"A" * MAX_UPLOAD + b'"}'
    answer = http.post("/api/releases", content=huge, headers={**auth, "Content-Type": "application/json"})
    assert answer.status_code == 413


def test_the_gateways_parsed_torrents_are_bounded(origin: Origin, api: tuple[TestClient, Catalog]) -> None:
    _, catalog = api
    app = registry_app(catalog, public_url="http://registry.test", upstream=_dead_endpoint())
    for client in app.state.origins:
        asyncio.run(client.aclose())  # not asked: the gateway's lookup is all this test calls
    torrents = app.state.torrents
    torrents.keep = 2
    commits = [f"{n:040x}" for n in (1, 2, 3)]
    for commit in commits:
        meta = decode(origin.honest.hybrid)
        classic = decode(origin.honest.classic)
        assert isinstance(meta, dict) and isinstance(classic, dict)
        for m in (meta, classic):
            m[b"info"][b"hf"][b"commit"] = commit.encode()
        catalog.publish(encode(meta), encode(classic), "t")
    for commit in (*commits, commits[1]):
        assert torrents("model", REPO_ID, commit) is not None
    assert len(torrents) == 2 and list(torrents._cache) == [("model", REPO_ID, c) for c in (commits[2], commits[1])]


def test_a_rebinding_host_is_refused(tmp_path: Path) -> None:
    with RegistryServer(tmp_path / "registry.db", public_url="http://registry.test:8470") as registry:
        port = registry.port
        for host, status in ((f"127.0.0.1:{port}", 200), (f"localhost:{port}", 200), ("registry.test:8470", 200)):
            assert httpx.get(f"{registry.url}/api/info", headers={"Host": host}).status_code == status, host
        rebound = httpx.get(f"{registry.url}/api/releases", headers={"Host": f"attacker.example:{port}"})
        assert rebound.status_code == 403 and "attacker.example" in rebound.json()["error"]
