"""`swarmhub seed` and `swarmhub pull` with Debian's BitTorrent clients, on loopback.

- A release seeded by `swarmhub seed` (both torrents, from one set of blobs in an HF cache) is downloaded
  completely by qbittorrent-nox (the hybrid), aria2c and transmission-cli (the classic v1: they cannot use
  hybrids). aria2 and transmission find the seeder through our tracker only.
- `swarmhub pull` completes from the same release seeded by aria2c (v1) and by qbittorrent-nox (hybrid),
  with the origin switched off and torrents that name no tracker, so every byte came from that client.
Every file's bytes are compared with the origin's, not just exit codes.
"""

from __future__ import annotations

import random
import shutil
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

from support.cli import run_cli
from support.clients import (
    ARIA2C,
    QBITTORRENT_NOX,
    TRANSMISSION_CLI,
    QBittorrent,
    aria2_download,
    aria2_seed,
    free_port,
    transmission_download,
)
from support.swarm import PIECE, REPO_ID, make_release, pull, seeding, snapshot_files
from swarmhub.bt.bencode import decode, encode
from swarmhub.bt.metainfo import parse_torrent
from swarmhub.bt.tracker import Swarms
from swarmhub.devhub import DevHub
from swarmhub.tracker import TrackerServer

pytestmark = pytest.mark.clients

needs_qbittorrent = pytest.mark.skipif(QBITTORRENT_NOX is None, reason="apt-get install qbittorrent-nox")
needs_aria2 = pytest.mark.skipif(ARIA2C is None, reason="apt-get install aria2")
needs_transmission = pytest.mark.skipif(TRANSMISSION_CLI is None, reason="apt-get install transmission-cli")


@dataclass(frozen=True)
class Swarm:
    root: Path
    files: dict[str, bytes]
    name: str  # the torrents' name: the folder other clients download into
    hybrid: Path  # with our tracker
    v1: Path
    hybrid_plain: Path  # no tracker: peers only from --peer
    v1_plain: Path
    seed_port: int


def _without_trackers(torrent: Path, out: Path) -> Path:
    meta = decode(torrent.read_bytes())
    assert isinstance(meta, dict)
    out.write_bytes(encode({k: v for k, v in meta.items() if k not in (b"announce", b"announce-list")}))
    return out


@pytest.fixture(scope="module")
def swarm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Swarm]:
    root = tmp_path_factory.mktemp("interop")
    files = make_release(root / "origin", size_mb=3)
    with ExitStack() as stack:
        # interval 1 s: transmission only takes peers that connect to it, so the seed must hear of it soon
        tracker = stack.enter_context(TrackerServer(swarms=Swarms(rng=random.Random(0), interval=1, min_interval=1)))
        hub = stack.enter_context(DevHub(root / "origin"))
        made = {}
        for fmt in ("hybrid", "v1"):
            out = root / f"{fmt}.torrent"
            done = run_cli(
                "create", REPO_ID, "--endpoint", hub.endpoint, "--piece-size", PIECE, "--format", fmt,
                "--tracker", tracker.announce_url, "-o", out,
            )  # fmt: skip
            assert done.returncode == 0, done.stderr
            made[fmt] = out
        cache = root / "seeder" / "hub"
        pull(REPO_ID, "--torrent", made["hybrid"], "--endpoint", hub.endpoint, "--cache-dir", cache)
        seeder = stack.enter_context(seeding(cache, "--torrent", made["v1"]))
        yield Swarm(
            root=root,
            files=files,
            name=parse_torrent(made["v1"].read_bytes()).name,
            hybrid=made["hybrid"],
            v1=made["v1"],
            hybrid_plain=_without_trackers(made["hybrid"], root / "hybrid-plain.torrent"),
            v1_plain=_without_trackers(made["v1"], root / "v1-plain.torrent"),
            seed_port=seeder.port,
        )


def _folder(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _client_layout(swarm: Swarm, where: Path) -> Path:
    """The release as other clients keep it: ``where/<torrent name>/<path>``, plain files."""
    for path, data in swarm.files.items():
        target = where / swarm.name / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return where


@needs_qbittorrent
def test_qbittorrent_downloads_the_hybrid_from_swarmhub_seed(swarm: Swarm, tmp_path: Path) -> None:
    with QBittorrent(tmp_path / "qbt") as qbt:
        torrent_id = qbt.add(swarm.hybrid_plain, tmp_path / "out")
        qbt.add_peers(torrent_id, [f"127.0.0.1:{swarm.seed_port}"])
        qbt.wait_complete(torrent_id, timeout=60)
    assert _folder(tmp_path / "out" / swarm.name) == swarm.files


@needs_aria2
def test_aria2c_downloads_the_v1_torrent_from_swarmhub_seed(swarm: Swarm, tmp_path: Path) -> None:
    aria2_download(swarm.v1, tmp_path / "out", timeout=60)  # the seeder comes from the tracker
    assert _folder(tmp_path / "out" / swarm.name) == swarm.files


@needs_transmission
def test_transmission_downloads_the_v1_torrent_from_swarmhub_seed(swarm: Swarm, tmp_path: Path) -> None:
    transmission_download(swarm.v1, tmp_path / "out", timeout=90, port=free_port())
    # transmission 3.00 does not create empty files
    assert _folder(tmp_path / "out" / swarm.name) == {p: d for p, d in swarm.files.items() if d}


@needs_aria2
def test_pull_from_an_aria2c_seed(swarm: Swarm, tmp_path: Path) -> None:
    data = _client_layout(swarm, tmp_path / "aria2")
    with aria2_seed(swarm.v1_plain, data, free_port()) as seed:
        result = pull(
            REPO_ID, "--torrent", swarm.v1_plain, "--cache-dir", tmp_path / "hub", "--no-origin",
            "--peer", f"127.0.0.1:{seed.port}",
        )  # fmt: skip
    assert result["origin_bytes"] == 0 and result["peer_bytes"] > 0
    assert snapshot_files(Path(result["snapshot_path"])) == swarm.files


@needs_qbittorrent
def test_pull_from_a_qbittorrent_seed(swarm: Swarm, tmp_path: Path) -> None:
    data = _client_layout(swarm, tmp_path / "qbt-data")
    with QBittorrent(tmp_path / "qbt") as qbt:
        qbt.add(swarm.hybrid_plain, data, seeding=True)
        result = pull(
            REPO_ID, "--torrent", swarm.hybrid_plain, "--cache-dir", tmp_path / "hub", "--no-origin",
            "--peer", f"127.0.0.1:{qbt.port}",
        )  # fmt: skip
    assert result["origin_bytes"] == 0 and result["peer_bytes"] > 0
    assert snapshot_files(Path(result["snapshot_path"])) == swarm.files
    shutil.rmtree(data)
