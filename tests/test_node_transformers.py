"""transformers through the node (``HF_ENDPOINT`` at it): a tiny real Llama generated here loads with
``AutoConfig`` + ``AutoModelForCausalLM`` while its release still arrives from a throttled peer, and gives
the original's logits; a gated repo loads with the user's token and fails cleanly without it.

The origin is a dev hub; the peer is ``swarmhub seed`` over a cache an origin pull filled; the node runs
in-process, so the test sees each file stream its library gives the endpoint (``SwarmRelease.stream``,
wrapped) and whether the node's own cache already held the file when each chunk left.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from support.cli import run_cli
from support.llama import LlamaClient, LoadResult, make_tiny_llama
from support.swarm import Seeder, pull, seeding
from swarmhub.bt.metainfo import parse_torrent
from swarmhub.devhub import DevHub, DevHubSettings
from swarmhub.devhub.faults import LoggedRequest
from swarmhub.node.daemon import Node
from swarmhub.node.library import SwarmRelease
from swarmhub.node.store import TorrentStore
from swarmhub.settings import Settings

if TYPE_CHECKING:
    import torch

REPO = "swarmhub-test/tiny-llama"
GATED = "swarmhub-test/gated-llama"
TOKEN = "hf_llamaGATEtoken7"
WEIGHTS = "model.safetensors"
UPLOAD_LIMIT = "2M"  # bytes/s the peer sends: the ~6 MB of weights take ~3 s, so the client reads them mid-way


@dataclass(frozen=True)
class LlamaRelease:
    hub: DevHub
    torrents: dict[str, Path]  # repo id -> hybrid torrent
    commits: dict[str, str]
    files: dict[str, bytes]  # the repo's files (both repos hold the same)
    logits: torch.Tensor  # of the original model on support.llama.INPUT_IDS
    seeder_cache: Path


@dataclass
class Served:
    """One ``SwarmRelease.stream`` the node's endpoint read."""

    repo_id: str
    path: str
    sent: int = 0
    sent_before_landed: int = 0  # bytes that left while the file was not yet whole in the node's cache
    first_byte_s: float | None = None  # seconds from the call to the first chunk


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaRelease]:
    pytest.importorskip("torch", reason="pip install -r requirements-torch.txt")
    root = tmp_path_factory.mktemp("llama")
    logits = make_tiny_llama(root / "model")
    files = {p.name: p.read_bytes() for p in sorted((root / "model").iterdir())}
    for repo in (REPO, GATED):
        shutil.copytree(root / "model", root / "origin" / "models" / repo)
    with DevHub(root / "origin", settings=DevHubSettings(gated={GATED: TOKEN})) as hub:
        torrents, commits = {}, {}
        seeder_cache = root / "seeder" / "hub"
        for i, repo in enumerate((REPO, GATED)):
            torrents[repo] = root / f"{i}.torrent"
            made = run_cli(
                "create", repo, "--endpoint", hub.endpoint, "--format", "hybrid", "--piece-size", "256K",
                "-o", torrents[repo], "--json", env={"HF_TOKEN": TOKEN},
            )  # fmt: skip
            assert made.returncode == 0, made.stderr
            commits[repo] = json.loads(made.stdout)["commit"]
            pulled = pull(
                repo, "--torrent", torrents[repo], "--endpoint", hub.endpoint, "--cache-dir", seeder_cache,
                "--origin-after", "0", env={"HF_TOKEN": TOKEN},
            )  # fmt: skip
            assert pulled["commit"] == commits[repo]
            snapshot = Path(pulled["snapshot_path"])
            assert {p.name: p.read_bytes() for p in snapshot.iterdir()} == files
        yield LlamaRelease(hub, torrents, commits, files, logits, seeder_cache)


@pytest.fixture(scope="module")
def seeder(llama: LlamaRelease) -> Iterator[Seeder]:
    with seeding(llama.seeder_cache, "--upload-limit", UPLOAD_LIMIT) as seeder:
        yield seeder


@pytest.fixture(scope="module")
def node(llama: LlamaRelease, seeder: Seeder, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    """A node that knows both releases (their torrents in its store), an empty cache, the seeder as its peer."""
    settings = Settings.from_env().with_cache(tmp_path_factory.mktemp("node") / "hub")
    store = TorrentStore(settings.state_dir)
    for torrent in llama.torrents.values():
        data = torrent.read_bytes()
        store.save(parse_torrent(data), data)
    with Node(settings, port=0, upstream=llama.hub.endpoint, peers=[("127.0.0.1", seeder.port)]) as node:
        yield node


@dataclass(frozen=True)
class Clients:
    anonymous: LlamaClient  # no token anywhere
    user: LlamaClient  # HF_TOKEN=TOKEN


@pytest.fixture(scope="module")
def clients(node: Node, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Clients]:
    """Both started at once: their imports of torch and transformers overlap the first test."""
    root = tmp_path_factory.mktemp("clients")
    with LlamaClient(node.url, root / "anonymous") as anonymous, LlamaClient(node.url, root / "user", TOKEN) as user:
        yield Clients(anonymous, user)


@pytest.fixture
def served(node: Node, monkeypatch: pytest.MonkeyPatch) -> list[Served]:
    """Every stream the node's library gives its endpoint, and what of it left before the file landed."""
    records: list[Served] = []
    original = SwarmRelease.stream
    cache = node.settings.hub_cache

    async def stream(self: SwarmRelease, path: str, start: int, end: int) -> AsyncIterator[bytes]:
        record = Served(self.ref.repo_id, path)
        records.append(record)
        called = time.monotonic()
        blob = _blob(cache, self.ref.repo_id, next(f.etag for f in self.files if f.path == path))
        async for chunk in original(self, path, start, end):
            if record.first_byte_s is None:
                record.first_byte_s = time.monotonic() - called
            record.sent += len(chunk)
            if not blob.exists():
                record.sent_before_landed += len(chunk)
            yield chunk

    monkeypatch.setattr(SwarmRelease, "stream", stream)
    return records


def _get(node: Node, path: str) -> bytes:
    with urllib.request.urlopen(f"{node.url}{path}") as response:
        body: bytes = response.read()
    return body


def _peer_bytes(node: Node) -> int:
    metrics = _get(node, "/metrics").decode().splitlines()
    return int(next(line.split()[1] for line in metrics if line.startswith("swarmhub_peer_bytes_total")))


def _releases(node: Node) -> set[str]:
    """Repos of the releases the node seeds or pulls."""
    return {r["repo_id"] for r in json.loads(_get(node, "/status"))["releases"]}


def _repo_folder(cache: Path, repo: str) -> Path:
    """A model's folder in a Hugging Face cache."""
    return cache / f"models--{repo.replace('/', '--')}"


def _blob(cache: Path, repo: str, etag: str) -> Path:
    return _repo_folder(cache, repo) / "blobs" / etag


def _origin_weight_gets(llama: LlamaRelease, repo: str) -> int:
    """GETs that would have fetched the weights from the origin: its CDN's, or its resolve URL's."""
    cdn = llama.hub.log.entries(f"/lfs/{_sha256(llama.files[WEIGHTS])}", method="GET")
    return len(cdn) + len(llama.hub.log.entries(f"/{repo}/resolve/*/{WEIGHTS}", method="GET"))


def _landed(blob: Path, timeout: float = 20) -> bytes:
    """The blob's bytes once it is there (the node lands a file just after its last piece)."""
    deadline = time.monotonic() + timeout
    while not blob.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return blob.read_bytes()


def _assert_loaded_from_the_peer_while_arriving(
    llama: LlamaRelease, node: Node, repo: str, client: LlamaClient, served: list[Served], loaded: LoadResult
) -> None:
    import torch

    assert loaded.info.get("model") == "LlamaForCausalLM" and loaded.info["model_type"] == "llama", loaded.info
    assert loaded.logits is not None and torch.allclose(loaded.logits, llama.logits, rtol=0, atol=1e-6)
    weights = llama.files[WEIGHTS]
    assert _blob(client.cache, repo, _sha256(weights)).read_bytes() == weights
    streams = [s for s in served if s.path == WEIGHTS]
    assert [(s.repo_id, s.sent) for s in streams] == [(repo, len(weights))], served
    # Most of the weights went to the client while the node's cache did not hold them whole (it does after):
    # the node passed the pieces on as the peer sent them.
    assert streams[0].sent_before_landed > len(weights) // 2, streams
    assert _landed(_blob(node.settings.hub_cache, repo, _sha256(weights))) == weights


def test_transformers_loads_a_tiny_llama_from_a_peer_while_it_arrives(
    llama: LlamaRelease, node: Node, clients: Clients, served: list[Served]
) -> None:
    origin_gets, peer_bytes = _origin_weight_gets(llama, REPO), _peer_bytes(node)
    loaded = clients.anonymous.load(REPO)
    _assert_loaded_from_the_peer_while_arriving(llama, node, REPO, clients.anonymous, served, loaded)
    assert _peer_bytes(node) - peer_bytes >= len(llama.files[WEIGHTS])
    assert _origin_weight_gets(llama, REPO) == origin_gets  # not one weight byte from the origin
    assert {s.path for s in served} >= {"config.json", WEIGHTS}  # the config came from the swarm too
    snapshot = _repo_folder(node.settings.hub_cache, REPO) / "snapshots" / llama.commits[REPO]
    assert (snapshot / WEIGHTS).read_bytes() == llama.files[WEIGHTS]  # the node keeps it, as a pull does


def test_a_gated_llama_loads_with_the_users_token_and_fails_cleanly_without(
    llama: LlamaRelease, node: Node, clients: Clients, served: list[Served]
) -> None:
    hub = llama.hub

    def hub_asked() -> list[LoggedRequest]:  # the resolves, and the branch lookups the node makes for them
        return hub.log.entries(f"/{GATED}/resolve/*") + hub.log.entries(f"/api/models/{GATED}/revision/*")

    asked_before, peer_bytes = len(hub_asked()), _peer_bytes(node)
    refused = clients.anonymous.load(GATED)
    assert refused.info.get("error", [None])[0] == "OSError", refused.info  # transformers' error...
    assert "GatedRepoError" in refused.info["error"]  # ...raised from huggingface_hub's
    assert "gated repo" in refused.info["message"] and f"{GATED} is restricted" in refused.info["message"]
    asked = hub_asked()[asked_before:]
    assert asked and {(e.token, e.status) for e in asked} == {(None, 401)}  # the origin said no
    # The node gave no byte of it and fetched none: no stream, no pull, nothing in its cache.
    assert served == [] and GATED not in _releases(node) and _peer_bytes(node) == peer_bytes
    assert not _repo_folder(node.settings.hub_cache, GATED).exists()

    origin_gets, peer_bytes = _origin_weight_gets(llama, GATED), _peer_bytes(node)
    loaded = clients.user.load(GATED)
    _assert_loaded_from_the_peer_while_arriving(llama, node, GATED, clients.user, served, loaded)
    assert _peer_bytes(node) - peer_bytes >= len(llama.files[WEIGHTS])
    assert _origin_weight_gets(llama, GATED) == origin_gets
    asked = hub_asked()[asked_before + len(asked) :]
    assert asked and {e.token for e in asked} - {None} == {TOKEN}  # the Hub decided, on the user's token
    # (and the node's own anonymous asking when it confirmed the release — its tree with the node's own token,
    # which it has none of, and a HEAD to learn whether the repo is public: refused, both)
    assert {(e.method, e.status) for e in asked if e.token is None} <= {("HEAD", 401), ("GET", 401)}
