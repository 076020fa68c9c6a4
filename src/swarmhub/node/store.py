"""The torrents a node knows, kept next to the cache: ``<state>/torrents/<models--org--name>--<commit>--<key>.torrent``.

A pulled release's torrent is stored here so ``swarmhub seed`` can seed it later and ``swarmhub pull REPO``
finds it without a registry. Files are written atomically; unreadable ones are skipped with a warning,
never fatal (one bad file must not stop a node from seeding everything else).
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from swarmhub.bt.metainfo import Torrent, parse_torrent
from swarmhub.errors import SwarmhubError
from swarmhub.hub.repo import RepoType, is_commit_prefix

__all__ = ["StoredTorrent", "TorrentStore"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoredTorrent:
    path: Path
    torrent: Torrent
    data: bytes


class TorrentStore:
    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir / "torrents"

    def save(self, torrent: Torrent, data: bytes) -> Path:
        assert torrent.repo is not None
        path = self.dir / f"{torrent.repo.cache_folder}--{torrent.repo.commit}--{torrent.key[:16]}.torrent"
        if path.exists() and path.read_bytes() == data:
            return path
        self.dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
        return path

    def all(self) -> list[StoredTorrent]:
        out = []
        for path in sorted(self.dir.glob("*.torrent")):
            try:
                data = path.read_bytes()
                torrent = parse_torrent(data)
            except (OSError, SwarmhubError) as exc:
                log.warning("skipping %s: %s", path, exc)
                continue
            if torrent.repo is not None:
                out.append(StoredTorrent(path, torrent, data))
        return out

    def find(self, repo_type: RepoType, repo_id: str, revision: str | None) -> list[StoredTorrent]:
        """Stored torrents of a repo; a commit (or its prefix of 7+ hex digits) narrows to that release."""
        found = [
            s
            for s in self.all()
            if s.torrent.repo is not None
            and s.torrent.repo.repo_type == repo_type
            and s.torrent.repo.repo_id == repo_id
        ]
        if revision and is_commit_prefix(revision):
            found = [s for s in found if s.torrent.repo is not None and s.torrent.repo.commit.startswith(revision)]
        return found
