"""The node's Hub-compatible endpoint (``swarmhub.node.endpoint``) with the real huggingface_hub clients.

The endpoint runs in uvicorn on 127.0.0.1 in front of a dev hub (the upstream); the swarm is an in-memory
``ReleaseSource`` (``FakeSource``) whose streams yield small chunks and record every call, so a test can
tell where bytes came from: the fake's calls (swarm) or the dev hub's request log (upstream). Expected
hashes are computed here with hashlib, not with swarmhub's helpers.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from swarmhub.devhub import DevHub, DevHubSettings
from swarmhub.devhub.faults import FaultRule, Respond
from swarmhub.errors import StalledError
from swarmhub.hub.answers import (
    decode_cursor,
    encode_cursor,
    split_link_header,
    strip_xet_headers,
    strip_xet_json_bytes,
    tree_entries,
    tree_page,
)
from swarmhub.hub.repo import RepoFile, RepoRef, RepoType
from swarmhub.node.endpoint import HubEndpoint, endpoint_app, unsafe_path
from swarmhub.serving import BackgroundServer

TOKEN = "hf_gatedTOKEN42"
GITATTRIBUTES = b"*.bin filter=lfs diff=lfs merge=lfs -text\n"
FILES: dict[str, bytes] = {
    ".gitattributes": GITATTRIBUTES,
    "config.json": b'{"hidden_size": 64}\n',
    "weights.bin": os.urandom(300_000),
    "sub/deep/empty.txt": b"",
    "sub/deep/notes.md": b"# notes\n" * 50,
    "sub/shard.bin": os.urandom(70_000),
}
OTHER: dict[str, bytes] = {  # a repo the swarm does not know
    ".gitattributes": GITATTRIBUTES,
    "config.json": b'{"other": true}\n',
    "model.bin": os.urandom(120_000),
}
GATED: dict[str, bytes] = {".gitattributes": GITATTRIBUTES, "secret.bin": os.urandom(5000)}
LFS = ".bin"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def etag(path: str, data: bytes) -> str:
    return sha256(data) if path.endswith(LFS) else blob_sha1(data)


def write_repo(folder: Path, files: dict[str, bytes]) -> None:
    for path, data in files.items():
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_bytes(data)


# ------------------------------------------------------------------------------------ the fake swarm


@dataclass
class FakeRelease:
    """A release whose bytes are in memory; ``stream`` yields ``chunk`` bytes at a time and records calls."""

    ref: RepoRef
    data: dict[str, bytes]
    chunk: int = 16 * 1024
    delay: float = 0.0
    gate: threading.Event | None = None  # when set: the stream waits for it after its first chunk
    fail_at: int | None = None  # raise StalledError when the stream reaches this offset
    calls: list[tuple[str, int, int]] = field(default_factory=list)
    closed: list[tuple[str, int, int]] = field(default_factory=list)
    etags: dict[str, str] = field(default_factory=dict)  # overrides, to make a release disagree
    confirmed: bool = False  # the upstream confirmed the file list (then the endpoint does not probe)
    whole: bool = False
    public_at: float | None = None

    @property
    def files(self) -> list[RepoFile]:
        return [RepoFile(p, len(d), self.etags.get(p) or etag(p, d)) for p, d in sorted(self.data.items())]

    async def stream(self, path: str, start: int, end: int) -> AsyncIterator[bytes]:
        self.calls.append((path, start, end))
        try:
            pos = start
            while pos < end:
                if self.delay:
                    await anyio.sleep(self.delay)
                if self.gate is not None and pos > start:
                    while not self.gate.is_set():
                        await anyio.sleep(0.01)
                if self.fail_at is not None and pos >= self.fail_at:
                    raise StalledError(f"no peer has byte {pos}")
                piece = self.data[path][pos : min(pos + self.chunk, end)]
                pos += len(piece)
                yield piece
        finally:
            self.closed.append((path, start, end))


@dataclass
class FakeSource:
    releases: dict[tuple[RepoType, str, str], FakeRelease] = field(default_factory=dict)
    branches: dict[tuple[RepoType, str, str], str] = field(default_factory=dict)
    asked: list[tuple[str, str, str]] = field(default_factory=list)

    def add(self, release: FakeRelease, branch: str = "main") -> FakeRelease:
        ref = release.ref
        self.releases[(ref.repo_type, ref.repo_id, ref.commit)] = release
        self.branches[(ref.repo_type, ref.repo_id, branch)] = ref.commit
        return release

    async def release(
        self, repo_type: RepoType, repo_id: str, commit: str, *, authorization: str | None = None
    ) -> FakeRelease | None:
        self.asked.append((repo_type, repo_id, commit))
        return self.releases.get((repo_type, repo_id, commit))

    async def knows(self, repo_type: RepoType, repo_id: str) -> bool:
        return any(t == repo_type and r == repo_id for t, r, _ in self.releases)

    async def local_head(self, repo_type: RepoType, repo_id: str, revision: str) -> tuple[str, float] | None:
        commit = self.branches.get((repo_type, repo_id, revision))
        return None if commit is None else (commit, 0.0)

    async def record_head(self, repo_type: RepoType, repo_id: str, revision: str, commit: str) -> None:
        pass

    def calls(self) -> list[tuple[str, int, int]]:
        return [c for r in self.releases.values() for c in r.calls]

    def reset(self) -> None:
        self.asked.clear()
        for r in self.releases.values():
            r.calls.clear()
            r.closed.clear()
            r.delay, r.gate, r.fail_at, r.etags = 0.0, None, None, {}
            r.confirmed, r.whole, r.public_at = False, False, None


class Node(BackgroundServer):
    """The endpoint alone in uvicorn, as the node daemon will serve it."""

    name = "endpoint"

    def __init__(self, source: FakeSource, upstream: str, **options: Any) -> None:
        super().__init__("127.0.0.1", (0,))
        self.source, self.upstream, self.options = source, upstream, options
        self.app: HubEndpoint | None = None

    def _apps(self) -> list[HubEndpoint]:
        self.app = endpoint_app(self.source, self.upstream, **self.options)  # type: ignore[arg-type]
        return [self.app]


def dead_upstream() -> str:
    """A URL on 127.0.0.1 where nothing listens (connections refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


# ------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def running_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevHub]:
    root = tmp_path_factory.mktemp("upstream")
    write_repo(root / "models/org/tiny", FILES)
    write_repo(root / "datasets/org/data", FILES)
    write_repo(root / "models/org/other", OTHER)
    write_repo(root / "models/org/gated", GATED)
    with DevHub(root, settings=DevHubSettings(page_size=3, gated={"org/gated": TOKEN})) as hub:
        hub.state.store.warm()
        yield hub


def upstream_commit(hub: DevHub, repo_type: str, repo_id: str) -> str:
    reply = httpx.get(f"{hub.endpoint}/api/{repo_type}s/{repo_id}", headers={"Authorization": f"Bearer {TOKEN}"})
    reply.raise_for_status()
    return str(reply.json()["sha"])


@pytest.fixture(scope="module")
def source(running_hub: DevHub) -> FakeSource:
    source = FakeSource()
    for repo_type, repo_id, files in (("model", "org/tiny", FILES), ("dataset", "org/data", FILES)):
        commit = upstream_commit(running_hub, repo_type, repo_id)
        source.add(FakeRelease(RepoRef(repo_type, repo_id, commit), dict(files)))  # type: ignore[arg-type]
    source.add(FakeRelease(RepoRef("model", "org/gated", upstream_commit(running_hub, "model", "org/gated")), GATED))
    return source


@pytest.fixture(scope="module")
def running_node(running_hub: DevHub, source: FakeSource) -> Iterator[Node]:
    with Node(source, running_hub.endpoint) as node:
        yield node


@pytest.fixture(scope="module")
def running_offline_node(source: FakeSource) -> Iterator[Node]:
    with Node(source, dead_upstream(), page_size=2, retry_pause=0.05) as node:
        yield node


@pytest.fixture
def hub(running_hub: DevHub) -> Iterator[DevHub]:
    settings = running_hub.settings
    running_hub.faults.clear()
    running_hub.log.clear()
    yield running_hub
    running_hub.faults.clear()
    running_hub.settings = settings


@pytest.fixture
def node(running_node: Node, source: FakeSource, hub: DevHub) -> Node:
    source.reset()
    return running_node


@pytest.fixture
def offline_node(running_offline_node: Node, source: FakeSource) -> Node:
    source.reset()
    return running_offline_node


def tiny(source: FakeSource) -> FakeRelease:
    return next(r for r in source.releases.values() if r.ref.repo_id == "org/tiny")


def upstream_file_reads(hub: DevHub) -> list[str]:
    """Requests that moved file bytes from the upstream: GETs of resolve-cache (regular) and the CDN (LFS)."""
    return [e.path for e in hub.log.entries(method="GET") if e.server == "cdn" or "/resolve-cache/" in e.path]


# ------------------------------------------------------------------------ confirmed releases, no upstream


@pytest.fixture
def confirmed(running_hub: DevHub, source: FakeSource, hub: DevHub) -> Iterator[tuple[Node, FakeRelease]]:
    """A fresh endpoint (empty caches) over the tiny release, confirmed whole and public."""
    source.reset()
    release = tiny(source)
    release.confirmed, release.whole, release.public_at = True, True, time.time()
    with Node(source, running_hub.endpoint) as node:
        yield node, release
    source.reset()


def test_a_confirmed_release_is_answered_without_the_upstream(
    confirmed: tuple[Node, FakeRelease], hub: DevHub, tmp_path: Path
) -> None:
    from huggingface_hub import HfApi, hf_hub_download, snapshot_download
    from huggingface_hub.errors import EntryNotFoundError

    node, release = confirmed
    commit = release.ref.commit
    path = snapshot_download("org/tiny", revision=commit, endpoint=node.url, cache_dir=tmp_path / "a", token=False)
    got = {p.relative_to(path).as_posix(): sha256(p.read_bytes()) for p in Path(path).rglob("*") if p.is_file()}
    assert got == {k: sha256(v) for k, v in FILES.items()}
    api = HfApi(endpoint=node.url, token=False)
    assert api.model_info("org/tiny", revision=commit, files_metadata=True).sha == commit
    tree = api.list_repo_tree("org/tiny", revision=commit, recursive=True)
    assert sorted(f.path for f in tree if type(f).__name__ == "RepoFile") == sorted(FILES)
    infos = api.get_paths_info("org/tiny", ["config.json", "weights.bin", "absent.txt"], revision=commit)
    assert [(i.path, i.size) for i in infos] == [("config.json", len(FILES["config.json"])), ("weights.bin", 300_000)]
    with pytest.raises(EntryNotFoundError):  # the torrent is the whole commit: no such file, said at once
        hf_hub_download("org/tiny", "absent.txt", revision=commit, endpoint=node.url, cache_dir=tmp_path, token=False)
    assert hub.log.entries() == []
    assert node.app is not None
    stats = node.app.counters()
    assert stats["endpoint_metadata_answers"] >= 3 and stats["endpoint_missing_answers"] == 1


def test_a_branch_is_looked_up_once_however_many_ask(confirmed: tuple[Node, FakeRelease], hub: DevHub) -> None:
    node, release = confirmed

    async def ask() -> list[httpx.Response]:
        async with httpx.AsyncClient() as client:
            return list(
                await asyncio.gather(*(client.head(f"{node.url}/org/tiny/resolve/main/{f}") for f in list(FILES) * 4))
            )

    answers = asyncio.run(ask())
    assert {(a.status_code, a.headers["x-repo-commit"]) for a in answers} == {(200, release.ref.commit)}
    assert [e.path for e in hub.log.entries()] == ["/api/models/org/tiny/revision/main"]


def test_a_partial_release_asks_the_upstream_for_what_it_lacks(
    confirmed: tuple[Node, FakeRelease], hub: DevHub, tmp_path: Path
) -> None:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    node, release = confirmed
    release.whole = False  # made with --include: the commit may hold more
    with pytest.raises(EntryNotFoundError):
        hf_hub_download("org/tiny", "absent.txt", revision=release.ref.commit, endpoint=node.url, cache_dir=tmp_path)
    assert [e.path for e in hub.log.entries()] == ["/org/tiny/resolve/" + release.ref.commit + "/absent.txt"]
    answer = httpx.get(f"{node.url}/api/models/org/tiny/revision/{release.ref.commit}")
    assert answer.status_code == 200 and len(hub.log.entries()) == 2  # its repo info is the Hub's, not a guess


def test_a_confirmed_gated_release_goes_by_the_hubs_decisions(
    running_hub: DevHub, source: FakeSource, hub: DevHub, tmp_path: Path
) -> None:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError

    source.reset()
    gated = next(r for r in source.releases.values() if r.ref.repo_id == "org/gated")
    gated.confirmed, gated.whole = True, True  # confirmed with a token: not public
    commit = gated.ref.commit
    try:
        with Node(source, running_hub.endpoint) as node:
            for _ in range(2):  # refused by the Hub, then by its remembered refusal
                with pytest.raises(GatedRepoError):
                    hf_hub_download("org/gated", "secret.bin", revision=commit, endpoint=node.url, token=False)
            assert [(e.method, e.status) for e in hub.log.entries()] == [("HEAD", 401)]
            for n in range(2):  # allowed by the Hub, then by its remembered yes
                got = hf_hub_download(
                    "org/gated",
                    "secret.bin",
                    revision=commit,
                    endpoint=node.url,
                    token=TOKEN,
                    cache_dir=tmp_path / f"{n}",
                )
                assert Path(got).read_bytes() == GATED["secret.bin"]
            assert [(e.method, e.token, e.status) for e in hub.log.entries()][1:] == [
                ("HEAD", TOKEN, 302)
            ]  # the CDN redirect: a yes
            hub.faults.respond("*", 503)  # the Hub down: the remembered yes holds, nobody else gets in
            got = hf_hub_download(
                "org/gated", "secret.bin", revision=commit, endpoint=node.url, token=TOKEN, cache_dir=tmp_path / "c"
            )
            assert Path(got).read_bytes() == GATED["secret.bin"]
            refused = httpx.get(
                f"{node.url}/org/gated/resolve/{commit}/secret.bin", headers={"Authorization": "Bearer x"}
            )
            assert refused.status_code == 503 and "cannot be confirmed" in refused.headers["x-error-message"]
            assert refused.content != GATED["secret.bin"]
            with pytest.raises((HfHubHTTPError, LocalEntryNotFoundError)):  # 2.x reads a 5xx HEAD as "offline"
                hf_hub_download("org/gated", "secret.bin", revision=commit, endpoint=node.url, token="hf_other")
    finally:
        source.reset()


# --------------------------------------------------------------------------------- real clients, online


def test_hf_hub_download_known_release_comes_from_the_swarm(
    node: Node, hub: DevHub, source: FakeSource, tmp_path: Path
):
    from huggingface_hub import hf_hub_download

    for name, data in FILES.items():
        local = hf_hub_download("org/tiny", name, endpoint=node.url, cache_dir=tmp_path, token=False)
        assert sha256(Path(local).read_bytes()) == sha256(data), name
    streamed = {path for path, _, _ in tiny(source).calls}
    assert streamed == {p for p, d in FILES.items() if d}  # the empty file needs no stream
    assert upstream_file_reads(hub) == []  # the upstream was asked (HEAD), never read
    assert {e.method for e in hub.log.entries("/org/tiny/resolve/*")} == {"HEAD"}


@pytest.mark.parametrize(("repo_type", "repo_id"), [("model", "org/tiny"), ("dataset", "org/data")])
def test_snapshot_download_known_release(
    node: Node, hub: DevHub, source: FakeSource, tmp_path: Path, repo_type: str, repo_id: str
):
    from huggingface_hub import snapshot_download

    folder = Path(snapshot_download(repo_id, repo_type=repo_type, endpoint=node.url, cache_dir=tmp_path, token=False))
    got = {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    assert {p: sha256(d) for p, d in got.items()} == {p: sha256(d) for p, d in FILES.items()}
    release = source.releases[(repo_type, repo_id, upstream_commit(hub, repo_type, repo_id))]  # type: ignore[index]
    assert {path for path, _, _ in release.calls} == {p for p, d in FILES.items() if d}
    assert upstream_file_reads(hub) == []
    # 2.x lists with the tree API, 3 entries a page upstream: every page came through the node.
    assert len(hub.log.entries(f"/api/{repo_type}s/{repo_id}/tree/*")) >= 3


def test_unknown_release_passes_through(node: Node, hub: DevHub, source: FakeSource, tmp_path: Path):
    from huggingface_hub import hf_hub_download, snapshot_download

    folder = Path(snapshot_download("org/other", endpoint=node.url, cache_dir=tmp_path / "a", token=False))
    assert {p: sha256((folder / p).read_bytes()) for p in OTHER} == {p: sha256(d) for p, d in OTHER.items()}
    local = hf_hub_download("org/other", "model.bin", endpoint=node.url, cache_dir=tmp_path / "b", token=False)
    assert sha256(Path(local).read_bytes()) == sha256(OTHER["model.bin"])
    assert source.calls() == []
    assert ("model", "org/other", upstream_commit(hub, "model", "org/other")) in source.asked
    reads = upstream_file_reads(hub)
    assert any(p.endswith(sha256(OTHER["model.bin"])) for p in reads)  # the client went to the CDN
    assert any(p.endswith("/config.json") for p in reads)  # resolve-cache, relayed by the node


def test_missing_file_raises_entry_not_found(node: Node, tmp_path: Path):
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    with pytest.raises(EntryNotFoundError):
        hf_hub_download("org/tiny", "nope.txt", endpoint=node.url, cache_dir=tmp_path, token=False)
    with pytest.raises(EntryNotFoundError):
        hf_hub_download("org/other", "nope.txt", endpoint=node.url, cache_dir=tmp_path, token=False)
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download("org/tiny", "config.json", revision="nobranch", endpoint=node.url, cache_dir=tmp_path)
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("org/absent", "config.json", endpoint=node.url, cache_dir=tmp_path, token=False)


def test_gated_repo_needs_the_users_token(node: Node, hub: DevHub, source: FakeSource, tmp_path: Path):
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import GatedRepoError

    with pytest.raises(GatedRepoError):
        hf_hub_download("org/gated", "secret.bin", endpoint=node.url, cache_dir=tmp_path / "a", token=False)
    with pytest.raises(GatedRepoError):
        hf_hub_download("org/gated", "secret.bin", endpoint=node.url, cache_dir=tmp_path / "b", token="hf_wrong")
    assert source.calls() == []
    local = hf_hub_download("org/gated", "secret.bin", endpoint=node.url, cache_dir=tmp_path / "c", token=TOKEN)
    assert Path(local).read_bytes() == GATED["secret.bin"]
    assert [c[0] for c in source.calls()] == ["secret.bin"]  # from the swarm, once the upstream said yes
    asked = hub.log.entries("/org/gated/resolve/*") + hub.log.entries("/api/models/org/gated/*")
    assert {e.token for e in asked} == {None, "hf_wrong", TOKEN}  # the Hub decided, with each one's own


def test_xet_markers_never_reach_the_client(node: Node, hub: DevHub, tmp_path: Path):
    hub.settings = replace(hub.settings, xet=True)
    lfs_url = "/org/other/resolve/main/model.bin"
    direct = httpx.head(hub.endpoint + lfs_url)
    assert "x-xet-hash" in direct.headers and "xet-auth" in direct.headers["link"]  # the upstream sends them
    for url in (lfs_url, "/org/tiny/resolve/main/weights.bin"):
        for reply in (httpx.head(node.url + url), httpx.get(node.url + url)):
            assert not [k for k in reply.headers if k.lower().startswith("x-xet")], url
            assert "xet-auth" not in reply.headers.get("link", "")
    tree_url = "/api/models/org/other/tree/main?recursive=true"
    assert "xetHash" in httpx.get(hub.endpoint + tree_url).text
    relayed = httpx.get(node.url + tree_url)
    assert "xetHash" not in relayed.text and relayed.json()[0]["path"] == ".gitattributes"
    assert relayed.headers["content-length"] == str(len(relayed.content))

    # huggingface_hub with Xet enabled (hf_xet installed) stays on plain HTTP through the node...
    script = (
        "import json, hashlib, sys, huggingface_hub as h\n"
        "p = h.hf_hub_download('org/other', 'model.bin', cache_dir=sys.argv[1], token=False)\n"
        "s = h.snapshot_download('org/tiny', cache_dir=sys.argv[1], token=False)\n"
        "print(json.dumps([hashlib.sha256(open(p, 'rb').read()).hexdigest(), s]))"
    )
    done = run_with_xet(script, node.url, tmp_path / "node")
    assert done.returncode == 0, done.stderr[-3000:]
    digest, snapshot = json.loads(done.stdout.strip().splitlines()[-1])
    assert digest == sha256(OTHER["model.bin"])
    assert sha256((Path(snapshot) / "weights.bin").read_bytes()) == sha256(FILES["weights.bin"])
    # ... which it would not do straight from this upstream: it asks for a Xet token the upstream lacks.
    direct_run = run_with_xet(script, hub.endpoint, tmp_path / "direct")
    assert direct_run.returncode != 0 and "xet-read-token" in direct_run.stderr


def run_with_xet(script: str, endpoint: str, cache: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_DISABLE_XET"} | {"HF_ENDPOINT": endpoint}
    argv = [sys.executable, "-c", script, str(cache)]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)


# ------------------------------------------------------------------------------------ HTTP, exactly


def test_head_of_a_known_file(node: Node, hub: DevHub, source: FakeSource):
    commit = tiny(source).ref.commit
    data = FILES["weights.bin"]
    reply = httpx.head(f"{node.url}/org/tiny/resolve/main/weights.bin", headers={"Range": "bytes=0-9"})
    assert reply.status_code == 200  # HEAD ignores Range
    h = reply.headers
    assert h["x-repo-commit"] == commit
    assert h["x-linked-etag"] == h["etag"] == f'"{sha256(data)}"'
    assert h["x-linked-size"] == h["content-length"] == str(len(data))
    assert h["accept-ranges"] == "bytes" and "location" not in h
    regular = httpx.head(f"{node.url}/org/tiny/resolve/{commit}/config.json")
    assert regular.headers["etag"] == f'"{blob_sha1(FILES["config.json"])}"'
    assert tiny(source).calls == []  # a HEAD reads nothing


@pytest.mark.parametrize(
    ("header", "status", "span"),
    [
        ("bytes=10-19", 206, (10, 20)),
        ("bytes=299990-", 206, (299990, 300000)),
        ("bytes=-7", 206, (299993, 300000)),
        ("bytes=5-9999999", 206, (5, 300000)),
        ("bytes=100-199, 0-9", 206, (100, 200)),  # several ranges: the first only
        ("bytes=9-2", 200, (0, 300000)),  # invalid: ignored
        ("items=0-9", 200, (0, 300000)),
        ("bytes=300000-", 416, None),
        ("bytes=-0", 416, None),
    ],
)
def test_ranges_are_exact(node: Node, source: FakeSource, header: str, status: int, span: tuple[int, int] | None):
    data = FILES["weights.bin"]
    reply = httpx.get(f"{node.url}/org/tiny/resolve/main/weights.bin", headers={"Range": header})
    assert reply.status_code == status
    if span is None:
        assert reply.headers["content-range"] == f"bytes */{len(data)}" and reply.content == b""
        assert tiny(source).calls == []
        return
    assert reply.content == data[span[0] : span[1]]
    assert reply.headers["content-length"] == str(span[1] - span[0])
    assert reply.headers["x-linked-size"] == str(len(data))
    if status == 206:
        assert reply.headers["content-range"] == f"bytes {span[0]}-{span[1] - 1}/{len(data)}"
    assert tiny(source).calls == [("weights.bin", *span)]


def test_empty_file_and_its_ranges(node: Node, source: FakeSource):
    url = f"{node.url}/org/tiny/resolve/main/sub/deep/empty.txt"
    whole = httpx.get(url)
    assert whole.status_code == 200 and whole.content == b"" and whole.headers["content-length"] == "0"
    assert httpx.get(url, headers={"Range": "bytes=0-"}).status_code == 416
    assert tiny(source).calls == []


def test_bytes_stream_while_the_swarm_delivers(node: Node, source: FakeSource):
    """The first chunk reaches the client while the rest is still held back by the swarm."""
    release = tiny(source)
    release.gate = threading.Event()
    data = FILES["weights.bin"]
    with httpx.stream("GET", f"{node.url}/org/tiny/resolve/main/weights.bin", timeout=10) as reply:
        chunks = reply.iter_raw()
        first = next(chunks)
        assert first and data.startswith(first) and len(first) < len(data)
        release.gate.set()
        rest = b"".join(chunks)
    assert first + rest == data


def test_swarm_failure_before_and_after_the_first_byte(node: Node, source: FakeSource):
    release = tiny(source)
    release.fail_at = 0
    reply = httpx.get(f"{node.url}/org/tiny/resolve/main/weights.bin")
    assert reply.status_code == 503 and "no peer" in reply.headers["x-error-message"]
    release.fail_at = 100_000
    with pytest.raises(httpx.RemoteProtocolError):  # the body breaks off: the client does not keep it
        httpx.get(f"{node.url}/org/tiny/resolve/main/weights.bin")
    deadline = time.monotonic() + 10  # the server closes the stream once it has seen the failure
    while len(release.closed) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(release.closed) == 2


def test_a_release_that_disagrees_with_the_upstream_is_not_served(node: Node, hub: DevHub, source: FakeSource):
    tiny(source).etags["weights.bin"] = "0" * 64
    reply = httpx.get(f"{node.url}/org/tiny/resolve/main/weights.bin")
    assert reply.status_code == 302  # the upstream's answer, relayed
    assert tiny(source).calls == []


def test_a_planted_regular_file_is_not_served(node: Node, hub: DevHub, source: FakeSource, tmp_path: Path):
    """The Hub's 307 for a regular file names its etag in ``ETag`` (no ``X-Linked-*``): that is checked too."""
    tiny(source).etags["config.json"] = "f" * 40
    reply = httpx.head(f"{node.url}/org/tiny/resolve/main/config.json")
    assert reply.status_code == 307  # the upstream's own answer
    from huggingface_hub import hf_hub_download

    path = hf_hub_download("org/tiny", "config.json", cache_dir=tmp_path, endpoint=node.url)
    assert Path(path).read_bytes() == FILES["config.json"]
    assert tiny(source).calls == []


@pytest.mark.parametrize(
    ("path", "status", "headers"),
    [
        ("config.json", 200, {}),  # a regular file answered in place, its ETag left out
        ("weights.bin", 302, {"Location": "https://cdn.example/lfs/weights.bin"}),  # an LFS 302 without X-Linked-*
    ],
)
def test_an_upstream_that_names_no_etag_is_relayed_not_answered_from_the_swarm(
    node: Node, hub: DevHub, source: FakeSource, path: str, status: int, headers: dict[str, str]
):
    """The upstream answers the resolve HEAD and names the commit the node holds, but no etag at all (no
    ``X-Linked-Etag``, no ``ETag``): nothing says the node's bytes are the upstream's, so its answer is
    relayed, whatever the release lists, and not one byte comes from the swarm."""
    commit = tiny(source).ref.commit
    answer = Respond(status, headers={"X-Repo-Commit": commit, **headers}, body="the upstream's own bytes")
    hub.faults.add(FaultRule(f"/org/tiny/resolve/main/{path}", answer))
    url = f"{node.url}/org/tiny/resolve/main/{path}"
    head = httpx.head(url)
    assert (head.status_code, head.headers["x-repo-commit"]) == (status, commit)
    assert "etag" not in head.headers and "x-linked-etag" not in head.headers
    got = httpx.get(url)
    assert got.status_code == status
    assert got.content == b"the upstream's own bytes"
    assert got.headers.get("location") == headers.get("Location")
    assert tiny(source).calls == []
    assert [e.method for e in hub.log.entries() if e.path.endswith(path)] == ["HEAD", "HEAD", "GET"]


def test_relayed_redirects_keep_linked_headers(node: Node, hub: DevHub):
    data = OTHER["model.bin"]
    reply = httpx.get(f"{node.url}/org/other/resolve/main/model.bin")
    assert reply.status_code == 302
    assert reply.headers["location"].startswith(hub.cdn_endpoint + "/lfs/")  # a CDN URL stays as it is
    assert reply.headers["x-linked-size"] == str(len(data))
    assert reply.headers["x-linked-etag"] == f'"{sha256(data)}"'
    regular = httpx.head(f"{node.url}/org/other/resolve/main/config.json")
    assert regular.status_code == 307 and regular.headers["location"].startswith("/api/resolve-cache/models/org/other/")
    follow = httpx.get(node.url + regular.headers["location"], headers={"Range": "bytes=2-5"})
    assert follow.status_code == 206 and follow.content == OTHER["config.json"][2:6]


def test_tree_pages_link_back_to_the_node(node: Node, hub: DevHub):
    url = f"{node.url}/api/models/org/tiny/tree/main?recursive=true&expand=false"
    entries: list[dict[str, Any]] = []
    pages = 0
    while url:
        reply = httpx.get(url)
        reply.raise_for_status()
        entries += reply.json()
        pages += 1
        url = reply.links.get("next", {}).get("url", "")
        assert not url or url.startswith(node.url + "/api/models/org/tiny/tree/main?")
    assert pages >= 3
    assert [e["path"] for e in entries if e["type"] == "file"] == sorted(FILES)
    assert {e["path"] for e in entries if e["type"] == "directory"} == {"sub", "sub/deep"}


def test_repo_info_through_the_node(node: Node):
    from huggingface_hub import HfApi

    info = HfApi(endpoint=node.url, token=False).model_info("org/tiny", files_metadata=True)
    sizes = {s.rfilename: s.size for s in info.siblings or []}
    assert sizes == {p: len(d) for p, d in FILES.items()}


def test_other_requests_are_relayed_as_they_are(node: Node, hub: DevHub):
    body = os.urandom(200_000)
    reply = httpx.post(
        f"{node.url}/api/models/org/tiny?x=%2F1",
        content=body,
        headers={"Authorization": "Bearer hf_someone", "X-Custom": "kept"},
    )
    assert reply.status_code == 405 and reply.json() == {"error": "Method Not Allowed"}  # the upstream's answer
    (logged,) = hub.log.entries("/api/models/org/tiny")
    assert (logged.method, logged.query, logged.token) == ("POST", "x=%2F1", "hf_someone")
    spaces = httpx.get(f"{node.url}/api/spaces/org/app", headers={"Authorization": "Bearer hf_other"})
    assert spaces.status_code == 404
    assert hub.log.entries("/api/spaces/org/app")[0].token == "hf_other"
    # The token was for those requests only: the next one carries none.
    httpx.get(f"{node.url}/api/models/org/tiny")
    assert hub.log.entries("/api/models/org/tiny")[-1].token is None


def test_relay_in_process():
    """The relay's header and body rules, against a mock upstream behind a path prefix."""
    seen: list[httpx.Request] = []

    async def upstream(request: httpx.Request) -> httpx.Response:
        await request.aread()
        seen.append(request)
        headers = [
            ("Connection", "close, X-Drop-Me"),
            ("Keep-Alive", "timeout=5"),
            ("Set-Cookie", "session=a"),
            ("Set-Cookie", "other=b"),
            ("X-Xet-Hash", "f" * 64),
            ("Link", '<http://upstream.test/prefix/api/x?cursor=2>; rel="next", <http://t>; rel="xet-auth"'),
            ("Location", "http://upstream.test/prefix/api/resolve-cache/models/a/b/c"),
            ("Content-Type", "application/octet-stream"),
        ]
        return httpx.Response(302, headers=headers, content=chunked(request.content[::-1]))

    async def chunked(data: bytes) -> AsyncIterator[bytes]:  # as a network transport streams it
        for i in range(0, len(data), 1000):
            yield data[i : i + 1000]

    async def go() -> tuple[httpx.Response, httpx.Response]:
        app = endpoint_app(FakeSource(), "http://upstream.test/prefix", transport=httpx.MockTransport(upstream))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://node.test") as client:
            first = await client.put(
                "/some/path%2Fx?q=1",
                content=b"abcdef" * 1000,
                headers={"Connection": "X-Hop", "X-Hop": "1", "Proxy-Authorization": "p", "Accept-Encoding": "gzip"},
            )
            second = await client.get("/again")
        await app.aclose()
        return first, second

    first, _ = anyio.run(go)
    request = seen[0]
    assert str(request.url) == "http://upstream.test/prefix/some/path%2Fx?q=1"
    assert request.method == "PUT" and request.content == b"abcdef" * 1000
    assert "x-hop" not in request.headers and "proxy-authorization" not in request.headers
    assert request.headers["accept-encoding"] == "identity"
    assert first.status_code == 302 and first.content == (b"abcdef" * 1000)[::-1]
    assert first.headers.get_list("set-cookie") == ["session=a", "other=b"]
    assert "keep-alive" not in first.headers and "x-xet-hash" not in first.headers
    assert first.headers["link"] == '<http://node.test/api/x?cursor=2>; rel="next"'
    assert first.headers["location"] == "http://node.test/api/resolve-cache/models/a/b/c"
    assert "cookie" not in seen[1].headers  # the upstream's cookies are not kept for the next client


def test_traversal_and_foreign_hosts_are_refused(node: Node, hub: DevHub):
    for path in (
        "/org/tiny/resolve/main/../../../etc/passwd",
        "/org/tiny/resolve/main/%2e%2e/secret",
        "/api/models/org/tiny/%2E%2E/%2E%2E/x",
        "/org/tiny/resolve/main/%252e%252e/x",
        "//evil.example/x",
        "/org/tiny/resolve/main/a%5Cb",
        "/org/tiny/resolve/main/a%00b",
    ):
        with socket.create_connection(("127.0.0.1", node.port)) as sock:
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 400"), (path, answer[:100])
    # An absolute-form target (a forward proxy's request) is refused too.
    with socket.create_connection(("127.0.0.1", node.port)) as sock:
        sock.sendall(b"GET http://evil.example/api/models/org/tiny HTTP/1.1\r\nHost: evil.example\r\n\r\n")
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 400") and b"forward proxy" in answer
    assert hub.log.entries() == []


# ------------------------------------------------------------------------------------ upstream down


def test_upstream_down_known_release_by_commit_and_by_branch(offline_node: Node, source: FakeSource, tmp_path: Path):
    from huggingface_hub import hf_hub_download, snapshot_download

    commit = tiny(source).ref.commit
    for revision in (commit, "main"):
        local = hf_hub_download(
            "org/tiny", "weights.bin", revision=revision, endpoint=offline_node.url, cache_dir=tmp_path / revision
        )
        assert sha256(Path(local).read_bytes()) == sha256(FILES["weights.bin"])
    folder = Path(snapshot_download("org/tiny", endpoint=offline_node.url, cache_dir=tmp_path / "snap"))
    assert folder.name == commit
    assert {p: sha256((folder / p).read_bytes()) for p in FILES} == {p: sha256(d) for p, d in FILES.items()}
    assert offline_node.app is not None and offline_node.app.stats.offline_answers > 0


def test_upstream_down_synthesized_answers_match_the_upstreams(offline_node: Node, hub: DevHub, source: FakeSource):
    for recursive in ("true", "false"):
        for folder in ("", "/sub"):
            synthesized: list[dict[str, Any]] = []
            url = f"{offline_node.url}/api/models/org/tiny/tree/main{folder}?recursive={recursive}"
            while url:  # pages of 2, linked
                reply = httpx.get(url)
                assert reply.status_code == 200, reply.text
                synthesized += reply.json()
                url = reply.links.get("next", {}).get("url", "")
            upstream: list[dict[str, Any]] = []
            url = f"{hub.endpoint}/api/models/org/tiny/tree/main{folder}?recursive={recursive}"
            while url:
                reply = httpx.get(url)
                upstream += reply.json()
                url = reply.links.get("next", {}).get("url", "")
            assert synthesized == upstream, (recursive, folder)
    mine = httpx.get(f"{offline_node.url}/api/models/org/tiny/revision/main?blobs=true").json()
    theirs = httpx.get(f"{hub.endpoint}/api/models/org/tiny/revision/main?blobs=true").json()
    assert mine["sha"] == theirs["sha"] and mine["id"] == theirs["id"] == "org/tiny"
    assert mine["siblings"] == theirs["siblings"]


def test_upstream_down_unknown_release(offline_node: Node, tmp_path: Path):
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    reply = httpx.head(f"{offline_node.url}/org/other/resolve/main/model.bin")
    assert reply.status_code == 502 and "unreachable" in reply.headers["x-error-message"]
    info = httpx.get(f"{offline_node.url}/api/models/org/other")
    assert info.status_code == 502 and "unreachable" in info.json()["error"]
    with pytest.raises(LocalEntryNotFoundError):
        hf_hub_download("org/other", "model.bin", endpoint=offline_node.url, cache_dir=tmp_path, etag_timeout=5)
    relayed = httpx.get(f"{offline_node.url}/api/whoami-v2")
    assert relayed.status_code == 502


def test_upstream_timeout_falls_back_to_the_swarm(running_hub: DevHub, hub: DevHub, source: FakeSource):
    hub.faults.delay("/org/*/resolve/*", 3.0)
    with Node(source, hub.endpoint, probe_timeout=0.3, retry_pause=0.05) as slow:
        known = httpx.get(f"{slow.url}/org/tiny/resolve/main/config.json", timeout=10)
        assert known.status_code == 200 and known.content == FILES["config.json"]
        unknown = httpx.head(f"{slow.url}/org/other/resolve/main/model.bin", timeout=10)
        assert unknown.status_code == 504 and "unreachable" in unknown.headers["x-error-message"]


# --------------------------------------------------------------------------------------- old client


OLD_SCRIPT = """
import hashlib, json, os, sys
from huggingface_hub import hf_hub_download, snapshot_download, __version__
cache = sys.argv[1] if len(sys.argv) > 1 else os.environ["CACHE"]
out = {"version": __version__, "files": {}}
for repo in ("org/tiny", "org/other"):
    folder = snapshot_download(repo, cache_dir=os.path.join(cache, "snap"), token=False)
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            rel = os.path.relpath(path, folder)
            out["files"][repo + ":" + rel] = hashlib.sha256(open(path, "rb").read()).hexdigest()
one = hf_hub_download("org/tiny", "sub/shard.bin", cache_dir=os.path.join(cache, "one"), token=False)
out["one"] = hashlib.sha256(open(one, "rb").read()).hexdigest()
blobs = [os.path.join(r, n) for r, _, ns in os.walk(cache) for n in ns if os.path.basename(r) == "blobs"]
out["empty_blobs"] = sorted(b for b in blobs if os.path.getsize(b) == 0)
print(json.dumps(out))
"""


def test_old_huggingface_hub_through_the_node(old_client: Any, node: Node, source: FakeSource, tmp_path: Path):
    out = old_client.run(OLD_SCRIPT, {"HF_ENDPOINT": node.url, "CACHE": str(tmp_path), "HF_HUB_DISABLE_XET": "1"})
    assert out["version"].startswith("0.36.")
    expected = {f"org/tiny:{p}": sha256(d) for p, d in FILES.items()} | {
        f"org/other:{p}": sha256(d) for p, d in OTHER.items()
    }
    assert out["files"] == expected
    assert out["one"] == sha256(FILES["sub/shard.bin"])
    # Only the empty file's blob may be empty (a 0-byte blob of a non-empty file is the 0.36 bug).
    empty_etag = blob_sha1(b"")
    assert all(b.endswith(empty_etag) for b in out["empty_blobs"]), out["empty_blobs"]
    assert {c[0] for c in tiny(source).calls} == {p for p, d in FILES.items() if d}


# ---------------------------------------------------------------------------------------- sans I/O


def test_unsafe_path():
    assert unsafe_path("/org/name/resolve/refs%2Fpr%2F1/a%20b.txt") is None
    assert unsafe_path("/api/models/org/name/tree/main/sub") is None
    for bad in ("/a/../b", "/a/./b", "/a/%2e%2E/b", "/a/%252e%252e/b", "//host/x", "/a%5cb", "/a%00b", "x"):
        assert unsafe_path(bad) is not None, bad


def test_link_header_and_xet_stripping():
    link = '<https://h/x?a=1,2>; rel="next", <https://h/t>; rel="xet-auth", <https://h/y>; title="a, b"; rel=prev'
    assert split_link_header(link) == [
        '<https://h/x?a=1,2>; rel="next"',
        '<https://h/t>; rel="xet-auth"',
        '<https://h/y>; title="a, b"; rel=prev',
    ]
    kept = strip_xet_headers([("X-Xet-Hash", "ab"), ("x-xet-refresh-route", "/r"), ("Link", link), ("ETag", '"e"')])
    assert kept == [("Link", '<https://h/x?a=1,2>; rel="next", <https://h/y>; title="a, b"; rel=prev'), ("ETag", '"e"')]
    assert strip_xet_headers([("Link", '<https://h/t>; rel="xet-auth"')]) == []
    body = json.dumps([{"path": "a", "xetHash": "x", "lfs": {"oid": "o", "xetHash": "y"}}]).encode()
    assert json.loads(strip_xet_json_bytes(body)) == [{"path": "a", "lfs": {"oid": "o"}}]
    unchanged = b'{"path": "a",  "size": 1}'
    assert strip_xet_json_bytes(unchanged) is unchanged


def test_tree_pages_and_cursors():
    files = [RepoFile(f"d{i}/f{j}", 1, "0" * 40) for i in range(3) for j in range(3)] + [RepoFile("top", 2, "1" * 40)]
    entries = tree_entries(files, recursive=True)
    assert entries is not None and len(entries) == 13
    assert tree_entries(files, "nope") is None
    assert [e["path"] for e in tree_entries(files, "d1") or []] == ["d1/f0", "d1/f1", "d1/f2"]
    assert [e["path"] for e in tree_entries(files) or []] == ["d0", "d1", "d2", "top"]
    seen: list[str] = []
    cursor: str | None = None
    while True:
        page = tree_page(entries, cursor, 4)
        assert page is not None
        seen += [str(e["path"]) for e in page.entries]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == [str(e["path"]) for e in entries]
    assert decode_cursor(encode_cursor("d1/f2")) == "d1/f2"
    assert tree_page(entries, "!!not-base64", 4) is None
