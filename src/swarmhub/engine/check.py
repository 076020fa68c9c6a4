"""Ask libtorrent to check files on disk against a torrent (an independent verifier of our hashing)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import libtorrent as lt

from swarmhub.engine.session import settings_for
from swarmhub.errors import MetainfoError

__all__ = ["CheckResult", "check_files", "libtorrent_version"]


@dataclass(frozen=True)
class CheckResult:
    valid: tuple[bool, ...]  # per piece: did the bytes on disk hash right?
    info_hash_v1: str | None
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


def libtorrent_version() -> str:
    return str(lt.__version__)


def load_torrent(data: bytes) -> lt.torrent_info:
    try:
        return lt.torrent_info(data)
    except RuntimeError as exc:  # libtorrent reports parse errors as RuntimeError
        raise MetainfoError(f"libtorrent refuses it: {exc}") from exc


def check_files(torrent: bytes, save_path: Path, timeout: float = 300.0) -> CheckResult:
    """Hash the files under ``save_path/<torrent name>/`` with libtorrent and count valid pieces."""
    info = load_torrent(torrent)
    session = lt.session(settings_for("isolated"))  # type: ignore[call-overload]
    params = lt.add_torrent_params()
    params.ti = info
    params.save_path = str(save_path)
    # start now rather than queue; no resume data and no seed_mode, so every piece is hashed
    params.flags &= ~(lt.torrent_flags.auto_managed | lt.torrent_flags.paused | lt.torrent_flags.seed_mode)
    handle = session.add_torrent(params)
    deadline = time.monotonic() + timeout
    try:
        checked = False
        while not checked:  # torrent_checked_alert: the check is over (polling alerts, no callbacks)
            if time.monotonic() > deadline:
                raise TimeoutError("libtorrent did not finish checking in time")
            session.wait_for_alert(100)
            for alert in session.pop_alerts():
                if isinstance(alert, lt.torrent_checked_alert):
                    checked = True
                elif isinstance(alert, lt.torrent_error_alert | lt.file_error_alert):
                    raise MetainfoError(f"libtorrent could not check the files: {alert.message()}")
        status = handle.status()
        hashes = info.info_hashes()
        return CheckResult(
            valid=tuple(bool(p) for p in status.pieces),
            info_hash_v1=str(hashes.v1) if hashes.has_v1() else None,
            info_hash_v2=str(hashes.v2) if hashes.has_v2() else None,
        )
    finally:
        session.remove_torrent(handle)
