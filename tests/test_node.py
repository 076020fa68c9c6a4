"""The node: its library streams files while pieces arrive, lands them as pull does, and seeds them after."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from support.pulled import Release
from support.swarm import REPO_ID, seeding, sha256, snapshot_files
from swarmhub.bt.metainfo import parse_torrent
from swarmhub.engine.session import Engine
from swarmhub.node.library import Library

MODEL = "model.safetensors"


def _library(engine: Engine, root: Path, seeder_port: int) -> Library:
    return Library(engine, root / "hub", root / "state", upstream=None, peers=[("127.0.0.1", seeder_port)])


def test_a_file_streams_while_its_pieces_arrive(release: Release, seeded_cache: Path, tmp_path: Path) -> None:
    data = release.hybrid.read_bytes()
    want = release.files[MODEL]

    async def read_all() -> tuple[bytes, bool, bytes]:
        with Engine() as engine:
            library = _library(engine, tmp_path, slow.port)
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
            assert await library.local_commit("model", REPO_ID, "main") == release.commit
            assert await library.release("model", REPO_ID, "0" * 40) is None

    asyncio.run(main())


def _blob(release: Release) -> str:
    return f"models--swarmhub-demo--tiny-model/blobs/{sha256(release.files[MODEL])}"
