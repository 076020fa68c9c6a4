"""Ask libtorrent to check files on disk against a torrent (an independent verifier of our hashing)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from swarmhub.engine.session import Engine, TorrentChecked, TorrentError
from swarmhub.errors import MetainfoError

__all__ = ["CheckResult", "check_files"]


@dataclass(frozen=True)
class CheckResult:
    valid: tuple[bool, ...]  # per piece: did the bytes on disk hash right?
    info_hash_v1: str | None  # as libtorrent computes them
    info_hash_v2: str | None

    @property
    def pieces(self) -> int:
        return len(self.valid)

    @property
    def valid_pieces(self) -> int:
        return sum(self.valid)

    @property
    def complete(self) -> bool:
        return all(self.valid) and bool(self.valid)


async def _checked(engine: Engine, key: str) -> None:
    async for event in engine.events():
        if event.info_hash != key:
            continue
        if isinstance(event, TorrentError):
            raise MetainfoError(f"libtorrent could not check the files: {event.message}")
        if isinstance(event, TorrentChecked):
            return


def check_files(torrent: bytes, save_path: Path, timeout: float = 300.0) -> CheckResult:
    """Hash the files under ``save_path/<torrent name>/`` with libtorrent and report each piece."""
    with Engine("isolated") as engine:
        key = engine.add(torrent, save_path)  # no resume data, no seed mode: every piece is hashed
        try:
            asyncio.run(asyncio.wait_for(_checked(engine, key), timeout))
        except TimeoutError:
            raise TimeoutError("libtorrent did not finish checking in time") from None
        v1, v2 = engine.info_hashes(key)
        return CheckResult(engine.status(key).pieces, v1, v2)
