"""A plain libtorrent session as the other side of interoperability tests (not our engine: a reference peer).

Isolated on 127.0.0.1: DHT, LSD, UPnP, NAT-PMP and uTP off, several connections per IP allowed (every peer
here is 127.0.0.1). Every wait polls with a deadline.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import libtorrent as lt

__all__ = ["LibtorrentPeer"]

SETTINGS: dict[str, Any] = {
    "listen_interfaces": "127.0.0.1:0",
    "enable_dht": False,
    "enable_lsd": False,
    "enable_upnp": False,
    "enable_natpmp": False,
    "enable_outgoing_utp": False,
    "enable_incoming_utp": False,
    "allow_multiple_connections_per_ip": True,
}


class LibtorrentPeer:
    """``with LibtorrentPeer() as peer: h = peer.add(torrent_bytes, save_path); peer.wait_seeding(h)``.

    ``settings`` are applied over the isolated defaults (e.g. ``min_announce_interval`` for a test tracker).
    """

    def __init__(self, **settings: Any) -> None:
        self.session = lt.session({**SETTINGS, **settings})  # type: ignore[call-overload]  # a dict works

    @property
    def port(self) -> int:
        return int(self.session.listen_port())

    def add(self, torrent: bytes, save_path: Path) -> Any:
        params = lt.add_torrent_params()
        params.ti = lt.torrent_info(torrent)
        params.save_path = str(save_path)
        params.flags &= ~(lt.torrent_flags.paused | lt.torrent_flags.auto_managed)  # or nothing starts
        return self.session.add_torrent(params)

    def connect(self, handle: Any, port: int) -> None:
        handle.connect_peer(("127.0.0.1", port))

    def wait_seeding(self, handle: Any, timeout: float = 20.0) -> None:
        """Checked (or downloaded) every piece, and seeding."""
        self.wait(lambda: bool(handle.status().is_seeding), timeout, handle, "seeding")

    def wait(self, condition: Callable[[], bool], timeout: float, handle: Any, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            status = handle.status()
            if status.errc.value():
                raise RuntimeError(f"libtorrent: {status.errc.message()} while waiting for {what}")
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"libtorrent: no {what} after {timeout:.0f}s ({status.state}, {status.progress:.0%})"
                )
            time.sleep(0.05)

    def close(self) -> None:
        self.session.pause()
        for handle in self.session.get_torrents():
            self.session.remove_torrent(handle)

    def __enter__(self) -> LibtorrentPeer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
