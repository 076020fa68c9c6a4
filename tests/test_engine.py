"""The engine seam: two isolated libtorrent sessions on 127.0.0.1 swap a hybrid torrent over TCP."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from support.torrents import make_torrent
from swarmhub.bt.metainfo import parse_torrent
from swarmhub.cli.engineopts import engine_from_args
from swarmhub.engine.session import (
    MANY_FILES,
    Engine,
    Event,
    HashFailed,
    PieceFinished,
    TorrentChecked,
    TorrentFinished,
    settings_for,
)
from swarmhub.errors import ConfigError

FILES = {"model.safetensors": os.urandom(3_000_000), "config.json": b"{}\n", "sub/tokenizer.json": os.urandom(70_000)}
PIECE = 65536


def _write(root: Path, name: str) -> None:
    for path, data in FILES.items():
        target = root / name / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


async def _until(engine: Engine, want: type[Event], key: str, timeout: float = 30.0) -> list[Event]:
    seen: list[Event] = []

    async def consume() -> None:
        async for event in engine.events():
            seen.append(event)
            if isinstance(event, want) and event.info_hash == key:
                return

    await asyncio.wait_for(consume(), timeout)
    return seen


def test_profiles_avoid_the_measured_traps() -> None:
    for profile in ("isolated", "public", "cluster"):
        s = settings_for(profile)  # type: ignore[arg-type]
        assert not s["enable_outgoing_utp"] and not s["enable_incoming_utp"]
        assert s["allow_multiple_connections_per_ip"] and not s["close_redundant_connections"]
    isolated = settings_for("isolated")
    assert isolated["listen_interfaces"].startswith("127.0.0.1:")
    assert not (
        isolated["enable_dht"] or isolated["enable_lsd"] or isolated["enable_upnp"] or isolated["enable_natpmp"]
    )


def test_seed_to_leecher_over_tcp(tmp_path: Path) -> None:
    torrent = make_torrent(FILES, piece_size=PIECE, name="release")
    _write(tmp_path / "seed", "release")
    with Engine() as seeder, Engine() as leecher:
        key = seeder.add(torrent, tmp_path / "seed", seed_mode=True)
        assert leecher.add(torrent, tmp_path / "leech") == key == parse_torrent(torrent).info_hash_v2
        leecher.connect_peer(key, "127.0.0.1", seeder.listen_port)
        events = asyncio.run(_until(leecher, TorrentFinished, key))
        pieces = {e.piece for e in events if isinstance(e, PieceFinished)}
        assert pieces == set(range(parse_torrent(torrent).num_pieces))
        status = leecher.status(key)
        assert status.progress == 1.0 and all(status.pieces) and status.error is None
    for path, data in FILES.items():
        assert (tmp_path / "leech" / "release" / path).read_bytes() == data


@pytest.mark.parametrize("disk_io", ["pread", "posix"])
def test_each_disk_io_moves_a_release(tmp_path: Path, disk_io: str) -> None:
    """``disk_io`` (a pseudo-setting of SWARMHUB_LIBTORRENT) picks libtorrent's disk back-end; each works."""
    torrent = make_torrent(FILES, piece_size=PIECE, name="release")
    _write(tmp_path / "seed", "release")
    with Engine(extra={"disk_io": disk_io}) as seeder, Engine(extra={"disk_io": disk_io}) as leecher:
        key = seeder.add(torrent, tmp_path / "seed", seed_mode=True)
        leecher.add(torrent, tmp_path / "leech")
        leecher.connect_peer(key, "127.0.0.1", seeder.listen_port)
        asyncio.run(_until(leecher, TorrentFinished, key))
    for path, data in FILES.items():
        assert (tmp_path / "leech" / "release" / path).read_bytes() == data


def test_a_pull_of_many_files_runs_on_posix_unless_told_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    """pread's cache never evicts a piece a pad file ends (docs/NOTES.md): an engine for torrents of
    ``MANY_FILES`` files or more takes posix, one for fewer (or not known) pread, SWARMHUB_LIBTORRENT wins."""
    from swarmhub.cli.main import build_parser

    args = build_parser().parse_args(["pull", "org/name"])
    for files, expected in ((0, "pread"), (MANY_FILES - 1, "pread"), (MANY_FILES, "posix")):
        with engine_from_args(args, files=files) as engine:
            assert engine.disk_io == expected
    monkeypatch.setenv("SWARMHUB_LIBTORRENT", '{"disk_io": "pread"}')
    with engine_from_args(args, files=10 * MANY_FILES) as engine:
        assert engine.disk_io == "pread"


def test_an_unknown_disk_io_is_refused_naming_the_choices() -> None:
    with pytest.raises(ConfigError, match="disk_io 'mmap' is not one of pread, posix"):
        Engine(extra={"disk_io": "mmap"})


def test_add_piece_verifies_like_any_peer(tmp_path: Path) -> None:
    torrent = make_torrent(FILES, piece_size=PIECE, name="release")
    with Engine() as engine:
        key = engine.add(torrent, tmp_path)
        asyncio.run(_until(engine, TorrentChecked, key))  # libtorrent ignores add_piece while checking
        engine.add_piece(key, 0, b"\0" * PIECE)  # wrong bytes for piece 0
        events = asyncio.run(_until(engine, HashFailed, key))
        assert any(isinstance(e, HashFailed) and e.piece == 0 for e in events)
        engine.add_piece(key, 0, FILES["config.json"] + b"\0" * (PIECE - len(FILES["config.json"])))
        asyncio.run(_until(engine, PieceFinished, key))
        assert engine.status(key).pieces[0]


def test_refuses_garbage() -> None:
    from swarmhub.errors import MetainfoError

    with Engine() as engine, pytest.raises(MetainfoError):
        engine.add(b"not a torrent", Path("/tmp"))
