"""The node: its library streams files while pieces arrive, lands them as pull does, and seeds them after."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import httpx
import pytest
from huggingface_hub import snapshot_download

from support.cli import run_cli
from support.pulled import Release
from support.swarm import REPO_ID, pull, seeding, sha256, snapshot_files
from swarmhub.bt.metainfo import parse_torrent
from swarmhub.devhub import DevHub
from swarmhub.engine.session import Engine
from swarmhub.errors import StorageError
from swarmhub.node import library as library_module
from swarmhub.node.confirmation import Confirmations
from swarmhub.node.daemon import Node
from swarmhub.node.library import Library
from swarmhub.node.store import TorrentStore
from swarmhub.origin.client import OriginClient
from swarmhub.settings import Settings

MODEL = "model.safetensors"


def _library(engine: Engine, root: Path, seeder_port: int, hub: DevHub) -> Library:
    """No origin to fetch from (the seeder gives every byte), but the dev hub's tree confirms the release."""
    confirmations = Confirmations(root / "state", OriginClient(hub.endpoint, retries=1))
    return Library(
        engine,
        root / "hub",
        root / "state",
        upstream=None,
        peers=[("127.0.0.1", seeder_port)],
        confirmations=confirmations,
    )


def test_a_file_streams_while_its_pieces_arrive(release: Release, seeded_cache: Path, tmp_path: Path) -> None:
    data = release.hybrid.read_bytes()
    want = release.files[MODEL]

    async def read_all() -> tuple[bytes, bool, bytes]:
        with Engine() as engine:
            library = _library(engine, tmp_path, slow.port, release.hub)
            library.store.save(parse_torrent(data), data)
            known = await library.release("model", REPO_ID, release.commit)
            assert known is not None and {f.path for f in known.files} == set(release.files)
            got, landed_at_first_byte = bytearray(), None
            async for chunk in known.stream(MODEL, 0, len(want)):
                if landed_at_first_byte is None:
                    landed_at_first_byte = (tmp_path / "hub" / _blob(release)).exists()
                got += chunk
            middle = b"".join([c async for c in known.stream(MODEL, 123_457, 2_000_001)])
            await library.close()
            return bytes(got), bool(landed_at_first_byte), middle

    with seeding(seeded_cache, "--upload-limit", "4M") as slow:
        started = time.monotonic()
        got, landed_at_first_byte, middle = asyncio.run(read_all())
    assert sha256(got) == sha256(want) and middle == want[123_457:2_000_001]
    assert not landed_at_first_byte, "the first bytes must leave before the file is whole"
    assert time.monotonic() - started < 60
    snapshot = tmp_path / "hub" / "models--swarmhub-demo--tiny-model" / "snapshots" / release.commit
    assert snapshot_files(snapshot) == {MODEL: want}  # landed as pull lands it, and only what was read


def test_files_of_one_blob_asked_in_any_order_land_once_each(
    release: Release, seeded_cache: Path, tmp_path: Path
) -> None:
    """Two paths with the same bytes, the later one asked first: it is the one this pull writes, and the
    earlier one, asked after, follows it into the same blob (the plan is made per file asked, not again over
    every file wanted before)."""
    data = release.hybrid.read_bytes()
    twin, original = "weights/same-as-vae-ft.bin", "vae-ft.bin"
    assert release.files[twin] == release.files[original]

    async def read(paths: list[str]) -> dict[str, bytes]:
        with Engine() as engine:
            library = _library(engine, tmp_path, seeder.port, release.hub)
            library.store.save(parse_torrent(data), data)
            known = await library.release("model", REPO_ID, release.commit)
            assert known is not None
            got = {p: b"".join([c async for c in known.stream(p, 0, len(release.files[p]))]) for p in paths}
            await library.close()
            return got

    with seeding(seeded_cache) as seeder:
        got = asyncio.run(read([twin, original, "config.json"]))
    assert got == {p: release.files[p] for p in (twin, original, "config.json")}
    snapshot = tmp_path / "hub" / "models--swarmhub-demo--tiny-model" / "snapshots" / release.commit
    assert snapshot_files(snapshot) == {p: release.files[p] for p in (twin, original, "config.json")}
    blobs = list((tmp_path / "hub" / "models--swarmhub-demo--tiny-model" / "blobs").iterdir())
    assert len(blobs) == 2 and sha256(release.files[twin]) in {b.name for b in blobs}  # one blob for the twins


def test_a_landed_file_is_read_from_its_blob_and_the_release_is_seeded(
    release: Release, seeded_cache: Path, tmp_path: Path
) -> None:
    data = release.hybrid.read_bytes()

    async def main() -> None:
        with Engine() as engine:
            library = Library(engine, seeded_cache, tmp_path / "state", upstream=None)
            library.store.save(parse_torrent(data), data)
            assert library.seed_all() == 1
            known = await library.release("model", REPO_ID, release.commit)
            assert known is not None
            for path, want in release.files.items():
                assert b"".join([c async for c in known.stream(path, 0, len(want))]) == want
            assert library.stats().pulling == 0 and library.releases()[0]["state"] == "seeding"
            head = await library.local_head("model", REPO_ID, "main")
            assert head is not None and head[0] == release.commit
            assert await library.release("model", REPO_ID, "0" * 40) is None

    asyncio.run(main())


def _blob(release: Release) -> str:
    return f"models--swarmhub-demo--tiny-model/blobs/{sha256(release.files[MODEL])}"


def _node(release: Release, root: Path, **kw: object) -> Node:
    settings = Settings.from_env().with_cache(root / "hub")
    data = release.hybrid.read_bytes()
    TorrentStore(settings.state_dir).save(parse_torrent(data), data)
    return Node(settings, port=0, upstream=release.hub.endpoint, **kw)  # type: ignore[arg-type]


def test_huggingface_hub_through_the_node_gets_the_release_from_peers(
    release: Release, seeded_cache: Path, tmp_path: Path
) -> None:
    """HF_ENDPOINT at the node: snapshot_download gets every file, the big one from the seeder while it
    arrives; the node lands the release in its own cache, seeds it, and counts it in /metrics."""
    lfs_before = len(release.hub.log.entries("/lfs/*"))
    with (
        seeding(seeded_cache, "--upload-limit", "8M") as seeder,
        _node(release, tmp_path / "node", peers=[("127.0.0.1", seeder.port)]) as node,
    ):
        path = snapshot_download(REPO_ID, cache_dir=tmp_path / "client", endpoint=node.url)
        assert snapshot_files(Path(path)) == release.files
        with urllib.request.urlopen(f"{node.url}/metrics") as response:
            metrics = response.read().decode()
        with urllib.request.urlopen(f"{node.url}/status") as response:
            status = json.loads(response.read())
    assert len(release.hub.log.entries("/lfs/*")) == lfs_before  # no LFS byte from the origin
    peer_bytes = int(next(line.split()[1] for line in metrics.splitlines() if line.startswith("swarmhub_peer_bytes")))
    assert peer_bytes >= len(release.files[MODEL])
    served = int(
        next(line.split()[1] for line in metrics.splitlines() if line.startswith("swarmhub_endpoint_swarm_bytes"))
    )
    assert served >= len(release.files[MODEL])  # through the endpoint, from the swarm
    assert status["releases"][0]["repo_id"] == REPO_ID
    node_snapshot = tmp_path / "node" / "hub" / "models--swarmhub-demo--tiny-model" / "snapshots" / release.commit
    landed = snapshot_files(node_snapshot)  # on the node's disk too, as a pull lands them: what was read
    assert MODEL in landed and all(release.files[path] == data for path, data in landed.items())


def test_pull_and_seed_hand_their_work_to_the_running_node(
    release: Release, seeded_cache: Path, tmp_path: Path
) -> None:
    """With a node running on the cache, `swarmhub pull` asks it (one libtorrent session owns the cache) and
    gets the same JSON; `swarmhub seed` says the node seeds; `swarmhub status` shows the release."""
    with seeding(seeded_cache) as seeder, _node(release, tmp_path / "node", peers=[("127.0.0.1", seeder.port)]):
        cache = tmp_path / "node" / "hub"
        result = pull(REPO_ID, "--torrent", release.hybrid, "--cache-dir", cache, "--include", "*.safetensors")
        seeded = run_cli("seed", "--cache-dir", cache)
        status = run_cli("status", "--cache-dir", cache, "--json")
    assert result["commit"] == release.commit and result["peer_bytes"] >= len(release.files[MODEL])
    assert result["origin_bytes"] == 0
    wanted = {p: d for p, d in release.files.items() if p.endswith(".safetensors")}
    assert snapshot_files(Path(result["snapshot_path"])) == wanted
    assert seeded.returncode == 0 and "seeds every release" in seeded.stdout
    assert status.returncode == 0 and json.loads(status.stdout)["releases"][0]["repo_id"] == REPO_ID
    assert run_cli("status", "--cache-dir", cache).returncode == 1  # stopped: no node any more


def test_a_stopped_node_records_verified_pieces_and_the_next_one_trusts_them(
    release: Release, seeded_cache: Path, tmp_path: Path
) -> None:
    """SIGTERM-like stop mid-download: the verified pieces are recorded; the next node takes them without a
    check and fetches only the rest."""
    url_path = f"/{REPO_ID}/resolve/{release.commit}/{MODEL}"
    want = release.files[MODEL]
    resume = tmp_path / "node" / "swarmhub" / "resume"
    with seeding(seeded_cache, "--upload-limit", "128K") as slow:  # 50 s for the file: stopped well before
        node = _node(release, tmp_path / "node", peers=[("127.0.0.1", slow.port)], peer_grace=60).start()
        try:
            with httpx.stream("GET", node.url + url_path, timeout=60) as response:
                got = 0
                for chunk in response.iter_bytes():
                    got += len(chunk)
                    if got >= 1_000_000:
                        break
        finally:
            node.stop()
    recorded = list(resume.glob("*.pieces"))
    assert len(recorded) == 1
    assert not list((tmp_path / "node" / "hub").glob(f"*/snapshots/*/{MODEL}"))  # stopped before it landed
    pieces = bin(int(recorded[0].read_text(), 16)).count("1")
    assert pieces * 64 * 1024 >= 1_000_000  # what the reader had, at least
    with seeding(seeded_cache) as seeder, _node(release, tmp_path / "node", peers=[("127.0.0.1", seeder.port)]) as node:
        answer = httpx.get(node.url + url_path, timeout=60)
        body = answer.content
        assert answer.status_code == 200, answer.text[:300]
        assert node.library is not None
        left = list(resume.glob("*.pieces"))  # taken when the pull started: a record is used once
        assert not left, f"{left} still there; the second node: {node.counters()} {node.library.releases()}"
        peer_bytes = node.library.stats().peer_bytes
    assert body == want
    assert peer_bytes <= len(want) - pieces * 64 * 1024 + 1_000_000  # the recorded pieces did not move again


def _on_loop(node: Node, coroutine: Any) -> Any:
    assert node._uvicorn is not None and node._uvicorn.loop is not None
    return asyncio.run_coroutine_threadsafe(coroutine, node._uvicorn.loop).result(30)


def _wait(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out: {what}"
        time.sleep(0.2)


def test_a_preheat_outlives_a_restart_of_the_node(release: Release, seeded_cache: Path, tmp_path: Path) -> None:
    """A chaos run: a node killed mid-preheat, after the coordinator that asked had been restarted too, never
    finished (nobody asked it again). The node keeps its preheats and resumes them when it starts."""
    data = release.hybrid.read_bytes()
    record = tmp_path / "node" / "swarmhub" / "preheats" / f"{parse_torrent(data).key}.torrent"
    snapshot = tmp_path / "node" / "hub" / "models--swarmhub-demo--tiny-model" / "snapshots" / release.commit
    with seeding(seeded_cache, "--upload-limit", "128K") as slow:  # ~50 s for the release: stopped midway
        node = _node(release, tmp_path / "node", peers=[("127.0.0.1", slow.port)], peer_grace=60).start()
        try:
            assert node.library is not None
            _on_loop(node, node.library.preheat(data))
            _wait(lambda: node.library is not None and node.library.stats().peer_bytes > 200_000, 30, "first bytes")
        finally:
            node.stop()
    assert record.is_file()  # the stop kept the preheat
    assert snapshot_files(snapshot) != release.files
    with seeding(seeded_cache) as seeder, _node(release, tmp_path / "node", peers=[("127.0.0.1", seeder.port)]):
        _wait(lambda: snapshot_files(snapshot) == release.files, 60, "the resumed preheat")  # nobody asked again
        _wait(lambda: not record.exists(), 10, "the record of a finished preheat removed")


def test_a_failed_preheat_is_tried_again(
    release: Release, seeded_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A preheat whose pull failed (a full disk, the origin down) was dropped, and the coordinator never asked
    again: the node reports the release as held (seeding what it had). Now it tries again, waiting longer."""
    monkeypatch.setattr(library_module, "PREHEAT_RETRY", (0.1, 0.2))
    real = Library.pull_release
    failures = []

    async def flaky(self: Library, *args: Any, **kwargs: Any) -> Any:
        if len(failures) < 2:
            failures.append(time.monotonic())
            raise StorageError("cannot write model.safetensors: No space left on device")
        return await real(self, *args, **kwargs)

    monkeypatch.setattr(Library, "pull_release", flaky)
    data = release.hybrid.read_bytes()
    snapshot = tmp_path / "node" / "hub" / "models--swarmhub-demo--tiny-model" / "snapshots" / release.commit
    with seeding(seeded_cache) as seeder, _node(release, tmp_path / "node", peers=[("127.0.0.1", seeder.port)]) as node:
        assert node.library is not None
        _on_loop(node, node.library.preheat(data))
        _wait(lambda: snapshot_files(snapshot) == release.files, 60, "the preheat, at its third try")
        assert len(failures) == 2 and node.library.errors >= 2
    assert not list((tmp_path / "node" / "swarmhub" / "preheats").glob("*.torrent"))
