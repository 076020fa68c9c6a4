"""Issue 13, the node's side: only whom it should can change what a node holds, and what it serves agrees with
the Hub. Each test does what the attacker did: a web page's text/plain POST, a rebinding Host, a forged torrent
naming the real commit with another config.json (through /pull, a preheat, the store, a registry), a 32 MB body,
a flood of stored torrents."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from huggingface_hub import hf_hub_download
from starlette.types import ASGIApp, Receive, Scope, Send

from support.cli import run_cli
from support.pulled import Release
from support.swarm import PIECE, REPO_ID, seeding
from swarmhub.bt.metainfo import parse_torrent
from swarmhub.engine.session import Engine
from swarmhub.errors import TorrentMismatch
from swarmhub.hub.confirm import release_difference
from swarmhub.hub.repo import RepoFile
from swarmhub.node import store as store_module
from swarmhub.node.client import NodeClient
from swarmhub.node.confirmation import Confirmations
from swarmhub.node.daemon import MAX_PULL_BODY, Node
from swarmhub.node.library import Library, TooManyPulls
from swarmhub.node.pull import release_files
from swarmhub.node.store import TorrentStore
from swarmhub.origin.client import OriginClient
from swarmhub.serving import BackgroundServer
from swarmhub.settings import Settings

PLANTED = b'{"model_type": "llama", "auto_map": {"AutoModel": "evil.Model"}}\n'


@pytest.fixture(scope="module")
def forged(release: Release, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A torrent naming the release's real commit, whose config.json (a regular file, same size) is someone
    else's."""
    root = tmp_path_factory.mktemp("forged")
    folder = root / "repo"
    shutil.copytree(release.root / "origin" / "models" / REPO_ID, folder)
    original = (folder / "config.json").read_bytes()
    (folder / "config.json").write_bytes(PLANTED.rstrip(b"\n").ljust(len(original) - 1) + b"\n")  # same size
    out = root / "forged.torrent"
    done = run_cli(
        "create", REPO_ID, "--from-dir", folder, "--revision", release.commit, "--piece-size", PIECE, "-o", out
    )
    assert done.returncode == 0, done.stderr
    return out


def _settings(root: Path) -> Settings:
    return Settings.from_env().with_cache(root / "hub")


@pytest.fixture
def node(release: Release, tmp_path: Path) -> Iterator[Node]:
    with Node(_settings(tmp_path), port=0, upstream=release.hub.endpoint) as running:
        yield running


def _snapshot(root: Path, commit: str) -> Path:
    return root / "hub" / "models--swarmhub-demo--tiny-model" / "snapshots" / commit


# ------------------------------------------------------------------------------------ the control API


def test_a_web_pages_simple_post_cannot_make_the_node_pull(node: Node, release: Release, forged: Path) -> None:
    """The attack: fetch(node + "/pull", {mode: "no-cors", method: "POST", body}) — text/plain, no preflight."""
    import base64

    body = json.dumps({"torrent": base64.b64encode(forged.read_bytes()).decode()})
    page = {"Origin": "https://evil.example", "Content-Type": "text/plain;charset=UTF-8"}
    assert httpx.post(f"{node.url}/pull", content=body, headers=page).status_code == 403
    plain = httpx.post(f"{node.url}/pull", content=body, headers={"Content-Type": "text/plain"})
    assert plain.status_code == 415 and "JSON" in plain.json()["error"]
    form = httpx.post(f"{node.url}/seed", content=b"a=b", headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert form.status_code == 415
    anonymous = httpx.post(f"{node.url}/pull", content=body, headers={"Content-Type": "application/json"})
    assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"].startswith("Bearer")
    wrong = httpx.post(f"{node.url}/seed", json={}, headers={"Authorization": "Bearer not-the-secret"})
    assert wrong.status_code == 401
    assert not _snapshot(node.settings.hub_cache.parent, release.commit).exists()
    assert not list((node.settings.state_dir / "torrents").glob("*.torrent"))


def test_a_rebinding_host_reads_nothing(node: Node) -> None:
    for path in ("/status", "/metrics", f"/{REPO_ID}/resolve/main/config.json", f"/api/models/{REPO_ID}"):
        refused = httpx.get(node.url + path, headers={"Host": f"rebind.evil.example:{node.port}"})
        assert refused.status_code == 403, path
        assert "host name" in refused.json()["error"]
    for host in ("127.0.0.1", "localhost", "[::1]"):
        assert httpx.get(f"{node.url}/status", headers={"Host": f"{host}:{node.port}"}).status_code == 200


def test_allowed_host_names_are_answered(release: Release, tmp_path: Path) -> None:
    with Node(_settings(tmp_path), port=0, upstream=release.hub.endpoint, allow_hosts=["node.internal"]) as node:
        assert httpx.get(f"{node.url}/status", headers={"Host": "node.internal:8480"}).status_code == 200
        assert httpx.get(f"{node.url}/status", headers={"Host": "other.internal"}).status_code == 403


def test_the_secret_is_the_owners_only_and_the_cli_uses_it(node: Node) -> None:
    state = node.settings.state_dir / "node.json"
    assert stat.S_IMODE(state.stat().st_mode) == 0o600
    client = NodeClient.running(node.settings.state_dir)
    assert client is not None and client.secret == node.secret and client.url == node.url
    assert client.seed() == 0
    status = run_cli("status", "--cache-dir", node.settings.hub_cache, "--json")
    assert status.returncode == 0 and json.loads(status.stdout)["running"] is True
    assert node.secret not in status.stdout


def test_a_body_past_the_cap_is_refused_without_reading_it(node: Node) -> None:
    client = NodeClient.running(node.settings.state_dir)
    assert client is not None
    auth = {"Authorization": f"Bearer {client.secret}", "Content-Type": "application/json"}
    rss = psutil.Process().memory_info().rss
    declared = httpx.post(f"{node.url}/pull", content=b"[" * (MAX_PULL_BODY + (1 << 20)), headers=auth, timeout=60)
    assert declared.status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: read until past the cap, then refused
        for _ in range((MAX_PULL_BODY >> 20) + 1):
            yield b" " * (1 << 20)

    streamed = httpx.post(f"{node.url}/pull", content=chunks(), headers=auth, timeout=60)
    assert streamed.status_code == 413
    assert psutil.Process().memory_info().rss - rss < 200 << 20
    assert httpx.get(f"{node.url}/status", timeout=5).status_code == 200


# ------------------------------------------------------------------------------------ the confirmation step


def test_release_difference_names_the_first_differing_file() -> None:
    mine = [RepoFile("a.json", 3, "1" * 40), RepoFile("b.bin", 5, "2" * 64)]
    assert release_difference(mine, [*mine, RepoFile("extra", 1, "3" * 40)]) is None
    assert "a.json has etag" in (release_difference(mine, [RepoFile("a.json", 3, "9" * 40), mine[1]]) or "")
    assert "b.bin is 5 bytes" in (release_difference(mine, [mine[0], RepoFile("b.bin", 6, "2" * 64)]) or "")
    assert "not in the upstream" in (release_difference(mine, mine[:1]) or "")


def test_pull_refuses_a_torrent_the_upstream_contradicts(release: Release, forged: Path, tmp_path: Path) -> None:
    done = run_cli(
        "pull", REPO_ID, "--torrent", forged, "--endpoint", release.hub.endpoint, "--cache-dir", tmp_path / "hub"
    )
    assert done.returncode == 2
    assert "config.json has etag" in done.stderr and len(done.stderr.strip().splitlines()) <= 2
    assert not _snapshot(tmp_path, release.commit).exists()
    assert not list((tmp_path / "swarmhub" / "torrents").glob("*"))


def test_the_node_refuses_a_forged_torrent_from_its_control_api(node: Node, release: Release, forged: Path) -> None:
    client = NodeClient.running(node.settings.state_dir)
    assert client is not None
    with pytest.raises(TorrentMismatch, match=r"config\.json"):
        client.pull(forged.read_bytes(), None, None, timeout=30, on_progress=lambda _: None)
    assert not _snapshot(node.settings.hub_cache.parent, release.commit).exists()
    assert not list((node.settings.state_dir / "torrents").glob("*.torrent"))


def test_a_forged_torrent_handed_over_as_a_preheat_is_refused(node: Node, release: Release, forged: Path) -> None:
    """What an open coordinator's ``POST /cluster/preheat`` made a cluster node run: ``Library.preheat`` of the
    forged torrent. Refused with the first differing file named; nothing landed, stored or kept to resume."""
    assert node.library is not None and node._uvicorn is not None and node._uvicorn.loop is not None
    loop = node._uvicorn.loop
    preheat = asyncio.run_coroutine_threadsafe(node.library.preheat(forged.read_bytes()), loop)
    with pytest.raises(TorrentMismatch, match=r"config\.json has etag"):
        preheat.result(30)
    assert (
        asyncio.run_coroutine_threadsafe(node.library.release("model", REPO_ID, release.commit), loop).result(30)
        is None
    )
    assert not _snapshot(node.settings.hub_cache.parent, release.commit).exists()
    assert not list((node.settings.state_dir / "torrents").glob("*.torrent"))
    assert not list(node.library.preheat_dir.glob("*.torrent"))  # not resumed at the next start either


class ForgingRegistry(BackgroundServer):
    """A registry that answers every release's torrent with the forged one (a squatted or compromised one)."""

    name = "registry"

    def __init__(self, data: bytes) -> None:
        super().__init__("127.0.0.1", (0,))
        self.data = data
        self.asked: list[str] = []

    def _apps(self) -> list[ASGIApp]:
        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            assert scope["type"] == "http"
            self.asked.append(scope["path"])
            found = scope["path"].endswith("/torrent")
            await send({"type": "http.response.start", "status": 200 if found else 404, "headers": []})
            await send({"type": "http.response.body", "body": self.data if found else b""})

        return [app]


def test_a_forged_torrent_from_the_registry_is_never_served(release: Release, forged: Path, tmp_path: Path) -> None:
    """The node runs with ``--registry``, and the registry hands it the forged torrent for the real commit: the
    upstream's tree contradicts it, so the Hub's own config.json is relayed and the release refused."""
    settings = _settings(tmp_path)
    with ForgingRegistry(forged.read_bytes()) as registry:
        with Node(settings, port=0, upstream=release.hub.endpoint, registry=registry.url) as node:
            path = hf_hub_download(REPO_ID, "config.json", cache_dir=tmp_path / "client", endpoint=node.url)
            assert node.endpoint is not None and node.endpoint.stats.swarm_answers == 0
            assert node.library is not None and node._uvicorn is not None and node._uvicorn.loop is not None
            lookup = node.library.release("model", REPO_ID, release.commit)
            assert asyncio.run_coroutine_threadsafe(lookup, node._uvicorn.loop).result(30) is None
        assert f"/api/releases/model/{REPO_ID}/{release.commit}/torrent" in registry.asked  # it was handed over
    assert Path(path).read_bytes() == release.files["config.json"]
    assert not _snapshot(tmp_path, release.commit).exists()
    assert not list((settings.state_dir / "torrents").glob("*.torrent"))


def test_a_forged_torrent_in_the_store_is_never_served(release: Release, forged: Path, tmp_path: Path) -> None:
    """Even handed over behind the API's back (the store, a registry), the planted config.json never reaches a
    program: the upstream's tree contradicts it, so the Hub's own file is relayed."""
    settings = _settings(tmp_path)
    data = forged.read_bytes()
    TorrentStore(settings.state_dir).save(parse_torrent(data), data)
    with Node(settings, port=0, upstream=release.hub.endpoint) as node:
        path = hf_hub_download(REPO_ID, "config.json", cache_dir=tmp_path / "client", endpoint=node.url)
        assert node.endpoint is not None and node.endpoint.stats.swarm_answers == 0
    assert Path(path).read_bytes() == release.files["config.json"]
    assert not list((settings.state_dir / "torrents").glob("*.torrent"))  # dropped from the store


def test_an_unconfirmed_release_is_served_only_once_landed(
    release: Release, seeded_cache: Path, tmp_path: Path
) -> None:
    """No upstream to ask: the release's files are the torrent's word alone, so a reader gets a file only once
    its etag checked — never pieces as they arrive."""
    data = release.hybrid.read_bytes()
    want = release.files["model.safetensors"]

    async def read() -> tuple[bytes, bool]:
        with Engine() as engine:
            library = Library(
                engine, tmp_path / "hub", tmp_path / "state", upstream=None, peers=[("127.0.0.1", seeder.port)]
            )
            library.store.save(parse_torrent(data), data)
            known = await library.release("model", REPO_ID, release.commit)
            assert known is not None and not known.confirmed
            got, landed_at_first_byte = bytearray(), None
            async for chunk in known.stream("model.safetensors", 0, len(want)):
                if landed_at_first_byte is None:
                    landed_at_first_byte = known.blob("model.safetensors") is not None
                got += chunk
            await library.close()
            return bytes(got), bool(landed_at_first_byte)

    with seeding(seeded_cache, "--upload-limit", "8M") as seeder:
        got, landed_first = asyncio.run(read())
    assert got == want and landed_first


def test_a_confirmation_is_asked_once_and_recorded(release: Release, tmp_path: Path) -> None:
    torrent = parse_torrent(release.hybrid.read_bytes())
    assert torrent.repo is not None
    files = release_files(torrent)
    ref = torrent.repo

    async def twice() -> list[str]:
        client = OriginClient(release.hub.endpoint, retries=1)
        confirmations = Confirmations(tmp_path, client)
        first = await confirmations.confirm(ref, files)
        trees = len(release.hub.log.entries("/api/models/*/tree/*"))
        second = await Confirmations(tmp_path, client).confirm(ref, files)
        assert len(release.hub.log.entries("/api/models/*/tree/*")) == trees  # from the record
        return [first, second]

    assert asyncio.run(twice()) == ["confirmed", "confirmed"]


# ------------------------------------------------------------------------------------ the store and the pulls


def test_the_store_finds_a_release_without_parsing_the_others(
    release: Release, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = release.hybrid.read_bytes()
    store = TorrentStore(tmp_path)
    store.save(parse_torrent(data), data)
    for i in range(100):  # a hundred torrents of other repos, as a flood of POSTs left them once
        (store.dir / f"models--flood--repo{i}--{'a' * 40}--{i:016x}.torrent").write_bytes(data)
    parsed: list[int] = []
    real = store_module.parse_torrent
    monkeypatch.setattr(store_module, "parse_torrent", lambda b: parsed.append(1) or real(b))
    assert len(store.find("model", REPO_ID, release.commit)) == 1
    assert len(parsed) == 1
    assert len(store.find("model", REPO_ID, None)) == 1
    assert len(parsed) == 1  # unchanged files are not parsed again


def test_pulls_are_capped_and_a_torrent_is_kept_only_once_it_landed(release: Release, tmp_path: Path) -> None:
    other = tmp_path / "other"
    (other / "x").mkdir(parents=True)
    (other / "x" / "weights.bin").write_bytes(os.urandom(100_000))
    made = run_cli("create", "org/other", "--from-dir", other / "x", "--revision", "b" * 40, "-o", tmp_path / "o.t")
    assert made.returncode == 0, made.stderr
    data, other_data = release.hybrid.read_bytes(), (tmp_path / "o.t").read_bytes()

    async def main() -> None:
        with Engine() as engine:
            library = Library(engine, tmp_path / "hub", tmp_path / "state", upstream=None, max_pulls=1)
            first = await library.adopt(parse_torrent(data), data)
            assert not list(library.store.dir.glob("*.torrent")) if library.store.dir.exists() else True
            await library.pull_for(first, "config.json")  # no peer, no origin: it runs, and nothing lands
            second = await library.adopt(parse_torrent(other_data), other_data)
            assert library.busy(second.ref) and not library.busy(first.ref)
            with pytest.raises(TooManyPulls):
                await library.pull_for(second, "weights.bin")
            await library.close(grace=0.5)
            assert not library.store.dir.exists() or not list(library.store.dir.glob("*.torrent"))

    asyncio.run(main())
