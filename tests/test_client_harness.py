"""The real-client harness (``support.clients``) against a plain libtorrent peer, on loopback.

Each test moves one small release between a Debian client and libtorrent and compares every file's bytes.
qbittorrent-nox gets the default hybrid torrents (it is libtorrent 2.0 inside); aria2c gets ``--format v1``
(it mis-hashes hybrids, see test_clients.py). Skipped only when a binary is missing.
"""

from __future__ import annotations

import hashlib
import socket
from pathlib import Path

import pytest

from support.clients import ARIA2C, QBITTORRENT_NOX, QBittorrent, aria2_seed, free_port
from support.layouts import COMMIT, NAME, create_json, write_layout
from support.lt_peer import LibtorrentPeer

pytestmark = pytest.mark.clients

needs_qbittorrent = pytest.mark.skipif(
    QBITTORRENT_NOX is None, reason="qbittorrent-nox not found (Debian: apt-get install qbittorrent-nox)"
)
needs_aria2 = pytest.mark.skipif(ARIA2C is None, reason="aria2c not found (Debian: apt-get install aria2)")

# a piece boundary inside a file, a file smaller than a block, an empty file, a nested folder
LAYOUT = {"model.bin": 200_000, "config.json": 321, "empty.txt": 0, "sub/tokenizer.json": 40_003}


def _digests(root: Path) -> dict[str, str]:
    return {path: hashlib.sha256((root / path).read_bytes()).hexdigest() for path in LAYOUT}


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``seed/NAME/...`` plus ``hybrid.torrent`` and ``v1.torrent`` of it (no trackers)."""
    root = tmp_path_factory.mktemp("harness")
    write_layout(root / "seed" / NAME, LAYOUT)
    for fmt in ("hybrid", "v1"):
        create_json(
            root / "seed" / NAME, root / f"{fmt}.torrent", "--revision", COMMIT, "--piece-size", "16k", "--format", fmt
        )
    return root


@needs_qbittorrent
def test_qbittorrent_listens_where_it_is_told(release: Path, tmp_path: Path) -> None:
    with QBittorrent(tmp_path / "qbt") as qbt:
        prefs = qbt.preferences()
        assert (prefs["dht"], prefs["pex"], prefs["lsd"], prefs["upnp"]) == (False, False, False, False)
        assert prefs["bittorrent_protocol"] == 1  # TCP only
        assert (prefs["current_interface_address"], prefs["listen_port"]) == ("127.0.0.1", qbt.port)
        assert prefs["enable_multi_connections_from_same_ip"] and not prefs["queueing_enabled"]
        with socket.create_connection(("127.0.0.1", qbt.port), timeout=5):
            pass  # the BitTorrent port answers on loopback


@needs_qbittorrent
def test_qbittorrent_downloads_hybrid_from_libtorrent(release: Path, tmp_path: Path) -> None:
    torrent = release / "hybrid.torrent"
    with LibtorrentPeer() as seeder, QBittorrent(tmp_path / "qbt") as qbt:
        seeder.wait_seeding(seeder.add(torrent.read_bytes(), release / "seed"))
        torrent_id = qbt.add(torrent, tmp_path / "out")
        qbt.add_peers(torrent_id, [f"127.0.0.1:{seeder.port}"])
        info = qbt.wait_complete(torrent_id, timeout=20)
        assert info["progress"] == 1 and info["size"] == sum(LAYOUT.values())
    assert _digests(tmp_path / "out" / NAME) == _digests(release / "seed" / NAME)


@needs_qbittorrent
def test_qbittorrent_seeds_hybrid_to_libtorrent(release: Path, tmp_path: Path) -> None:
    torrent = release / "hybrid.torrent"
    with QBittorrent(tmp_path / "qbt") as qbt, LibtorrentPeer() as leecher:
        qbt.add(torrent, release / "seed", seeding=True)  # checked by qBittorrent first
        handle = leecher.add(torrent.read_bytes(), tmp_path / "out")
        leecher.connect(handle, qbt.port)
        leecher.wait_seeding(handle, timeout=20)
    assert _digests(tmp_path / "out" / NAME) == _digests(release / "seed" / NAME)


@needs_aria2
def test_aria2_seeds_v1_to_libtorrent(release: Path, tmp_path: Path) -> None:
    torrent = release / "v1.torrent"
    port = free_port()
    with aria2_seed(torrent, release / "seed", port), LibtorrentPeer() as leecher:
        handle = leecher.add(torrent.read_bytes(), tmp_path / "out")
        leecher.connect(handle, port)
        leecher.wait_seeding(handle, timeout=20)
    assert _digests(tmp_path / "out" / NAME) == _digests(release / "seed" / NAME)
