"""The torrents a node knows, kept next to the cache: ``<state>/torrents/<models--org--name>--<commit>--<key>.torrent``.

A pulled release's torrent is stored here so ``swarmhub seed`` can seed it later and ``swarmhub pull REPO``
finds it without a registry. Files are written atomically; unreadable ones are skipped with a warning,
never fatal (one bad file must not stop a node from seeding everything else).

A lookup reads only the files its name can be (the name starts with the release's cache folder and commit),
and a parsed torrent is kept while its file is unchanged (same size and mtime): 100 stored torrents once made
every resolve parse all of them (5 s each).
"""

from __future__ import annotations

import glob
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from swarmhub.bt.metainfo import Torrent, parse_torrent
from swarmhub.errors import SwarmhubError
from swarmhub.hub.repo import RepoRef, RepoType, is_commit_prefix
from swarmhub.node.landing import atomic_bytes

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
        self._parsed: dict[Path, tuple[tuple[int, int], StoredTorrent]] = {}  # path -> ((size, mtime), parsed)
        self._lock = threading.Lock()

    def path_for(self, torrent: Torrent) -> Path:
        assert torrent.repo is not None
        return self.dir / f"{torrent.repo.cache_folder}--{torrent.repo.commit}--{torrent.key[:16]}.torrent"

    def save(self, torrent: Torrent, data: bytes) -> Path:
        path = self.path_for(torrent)
        if path.exists() and path.read_bytes() == data:
            return path
        atomic_bytes(path, data)
        return path

    def remove(self, torrent: Torrent) -> None:
        """The stored file of ``torrent``, if any, gone."""
        path = self.path_for(torrent)
        with self._lock:
            self._parsed.pop(path, None)
        path.unlink(missing_ok=True)

    def _load(self, path: Path) -> StoredTorrent | None:
        try:
            st = path.stat()
            stamp = (st.st_size, st.st_mtime_ns)
            with self._lock:
                cached = self._parsed.get(path)
            if cached is not None and cached[0] == stamp:
                return cached[1]
            data = path.read_bytes()
            torrent = parse_torrent(data)
        except (OSError, SwarmhubError) as exc:
            log.warning("skipping %s: %s", path, exc)
            return None
        if torrent.repo is None:
            return None
        stored = StoredTorrent(path, torrent, data)
        with self._lock:
            self._parsed[path] = (stamp, stored)
        return stored

    def _matching(self, pattern: str) -> list[StoredTorrent]:
        out = []
        for name in sorted(glob.glob(glob.escape(str(self.dir)) + "/" + pattern)):
            stored = self._load(Path(name))
            if stored is not None:
                out.append(stored)
        return out

    def all(self) -> list[StoredTorrent]:
        return self._matching("*.torrent")

    def find(self, repo_type: RepoType, repo_id: str, revision: str | None) -> list[StoredTorrent]:
        """Stored torrents of a repo; a commit (or its prefix of 7+ hex digits) narrows to that release."""
        folder = RepoRef(repo_type, repo_id, "").cache_folder
        commit = revision.lower() if revision and is_commit_prefix(revision) else ""
        found = [
            s
            for s in self._matching(f"{glob.escape(folder)}--{commit}*.torrent")
            if s.torrent.repo is not None
            and s.torrent.repo.repo_type == repo_type
            and s.torrent.repo.repo_id == repo_id
        ]
        if revision and is_commit_prefix(revision):
            found = [s for s in found if s.torrent.repo is not None and s.torrent.repo.commit.startswith(revision)]
        return found

    def parts(self, first: Torrent) -> list[StoredTorrent]:
        """The stored torrents of the parts that ``first`` (part 0 of a release of several torrents) lists, in
        its order; those not stored are left out (``bt.metainfo.check_parts`` then says which are missing)."""
        if first.repo is None or first.part is None or first.part.index:
            return []
        stored = {s.torrent.key: s for s in self.find(first.repo.repo_type, first.repo.repo_id, first.repo.commit)}
        return [stored[key] for key in first.part.others if key in stored]
