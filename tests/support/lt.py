"""libtorrent as an independent judge: does it accept our torrent and find every piece of the files valid?"""

from __future__ import annotations

import time
from pathlib import Path

import libtorrent as lt

ISOLATED = {
    "listen_interfaces": "127.0.0.1:0",
    "enable_dht": False,
    "enable_lsd": False,
    "enable_upnp": False,
    "enable_natpmp": False,
}


def recheck_is_seed(torrent: bytes, save_path: Path, timeout: float = 60.0) -> bool:
    """Add ``torrent`` over the files in ``save_path``; True when libtorrent's check finds every piece valid."""
    session = lt.session(ISOLATED)
    params = lt.add_torrent_params()
    params.ti = lt.torrent_info(lt.bdecode(torrent))
    params.save_path = str(save_path)
    params.flags &= ~(lt.torrent_flags.auto_managed | lt.torrent_flags.paused)
    handle = session.add_torrent(params)
    checking = (lt.torrent_status.checking_files, lt.torrent_status.checking_resume_data)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = handle.status()
        if status.state in (lt.torrent_status.seeding, lt.torrent_status.finished):
            return True
        if status.state == lt.torrent_status.downloading and status.state not in checking:
            return False
        time.sleep(0.05)
    raise TimeoutError("libtorrent did not finish checking in time")
