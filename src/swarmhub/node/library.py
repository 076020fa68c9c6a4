"""The node's releases: which it knows, which it seeds, and the bytes of a file a program is reading.

A release is known when its torrent is in the node's store (every pull keeps one) or in the registry's
catalog (fetched once, then stored). For each known release the library holds at most one libtorrent torrent:

    seeding (upload only, the landed files)  --a program wants a file not landed-->  pulling (linger)
    pulling  --the pull fails or the node stops-->  gone (seeded again at the next start)

A release spanning several torrents (``bt.metainfo``'s parts) is one release here: its files are every part's,
each part is seeded as its own torrent, and a file is pulled by a pull of the part that holds it (one pull per
part at a time; ``max_pulls`` counts releases).

A preheat (a coordinator asking for a whole release) is the node's job until done: its torrent is kept in
``<state>/preheats/`` from the moment it is taken, a preheat whose pull fails (a full disk, an origin down, a
stall) is tried again after 5 s, doubling up to 5 min, and a node that starts resumes the preheats it had not
finished (from their verified pieces) whatever the coordinator remembers. Only a torrent the upstream
contradicts ends a preheat for good.

A file that has landed is read from its blob; one that has not is read piece by piece from the running pull
as pieces arrive (the reader's next pieces get deadlines, so peers and the origin send them first) while the
pull lands the whole file in the cache as ``swarmhub pull`` would.

Trust (``node.confirmation``): a release is landed or served only once the upstream confirmed its file list, or
— when the upstream cannot say — as "unconfirmed", whose files are served only once landed (their etags
checked), never streamed piece by piece. A torrent the upstream contradicts is refused wherever it came from
(``/pull``, a preheat, the registry, the store). The store keeps a torrent only once some file of its release
landed, and at most ``max_pulls`` pulls run at once (``TooManyPulls`` beyond).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from swarmhub.bt.metainfo import Torrent, check_parts, cluster_variants, parse_torrent
from swarmhub.cluster.brain import encode_pieces
from swarmhub.engine.session import Engine, StorageFile
from swarmhub.errors import MetainfoError, SwarmhubError, TorrentMismatch
from swarmhub.hub.cache import ref_path_for
from swarmhub.hub.repo import RepoFile, RepoRef, RepoType, is_commit
from swarmhub.node.confirmation import Confirmations
from swarmhub.node.landing import CacheDestination, Placement, atomic_bytes, atomic_text
from swarmhub.node.pull import Pull, PullProgress, release_files
from swarmhub.node.seeding import seed_release
from swarmhub.node.sources import HubSource
from swarmhub.node.store import StoredTorrent, TorrentStore
from swarmhub.origin.client import OriginClient
from swarmhub.registry.client import RegistryClient, RegistryError

__all__ = ["MAX_PULLS", "Library", "LibraryStats", "SwarmRelease", "TooManyPulls"]

log = logging.getLogger(__name__)

READ_CHUNK = 1024 * 1024  # bytes read from a landed blob at a time
READ_AHEAD = 32 * 1024 * 1024  # bytes of pieces asked for ahead of a reader (at least 4 pieces)
# Pieces asked for when a reader starts, doubled with each piece it gets up to READ_AHEAD: libtorrent spreads its
# first requests over every piece with a deadline, so 32 at once made the first one come 100-200 ms later than
# 1 or 2; a seek's first byte on a 2 GB file went from 0.46 to 0.22 s (median of 15, bench/endpoint.py).
READ_AHEAD_START = 2
DEADLINE_STEP_MS = 20  # each piece further ahead is wanted this much later
REGISTRY_MISS_TTL = 30.0  # seconds a "registry does not have it" answer is believed
PREHEAT_RETRY = (5.0, 300.0)  # a failed preheat is tried again after 5 s, doubling up to 5 min
MAX_PULLS = 8  # releases pulled at once; each holds a libtorrent torrent, its part files and readers


class TooManyPulls(SwarmhubError):
    """The node pulls ``MAX_PULLS`` releases already."""


@dataclass(frozen=True)
class LibraryStats:
    releases: int
    pulling: int
    peer_bytes: int
    origin_bytes: int
    uploaded_bytes: int
    peers: int
    errors: int


class SwarmRelease:
    """A release the swarm knows (``node.releases.KnownRelease``): its torrent, or its parts (part 0 first)."""

    def __init__(
        self, library: Library, torrent: Torrent, data: bytes, parts: Sequence[tuple[Torrent, bytes]] = ()
    ) -> None:
        assert torrent.repo is not None
        self.library = library
        self.confirmed = False  # the upstream confirmed the file list; else files are served landed only
        self.whole = False  # (confirmed) the torrent lists every file of the commit
        self.public_at: float | None = None  # (confirmed) time.time() the repo answered an anonymous request
        self.torrent = torrent  # part 0 of a release of several torrents
        self.data = data
        self.parts: list[tuple[Torrent, bytes]] = [(torrent, data), *parts]
        self._ref: RepoRef = torrent.repo
        self._files = [f for t, _ in self.parts for f in release_files(t)]
        self._by_path = {f.path: f for f in self._files}
        self._part_of = {f.path: i for i, (t, _) in enumerate(self.parts) for f in t.files}
        self.dest = CacheDestination(library.cache_dir, torrent.repo)
        self._placements: dict[str, Placement] | None = None

    @property
    def ref(self) -> RepoRef:
        return self._ref

    @property
    def files(self) -> Sequence[RepoFile]:
        return self._files

    def file(self, path: str) -> RepoFile:
        """The file of the release at ``path`` (KeyError when it has none)."""
        return self._by_path[path]

    def part(self, path: str) -> int:
        """Which of the release's torrents holds ``path`` (0 for a release of one torrent)."""
        return self._part_of[path]

    def blob(self, path: str) -> Path | None:
        """The landed blob of ``path`` (its snapshot link made if missing: a twin of a landed file, an empty
        file), or None while it is not in the cache."""
        if self._placements is None:  # once: a pass over every file per file asked made 10,000 quadratic
            self._placements = {p.file.path: p for p in self.dest.placements(self._files)}
        placement = self._placements[path]
        blob = self.dest.root / placement.final
        if not placement.file.size and not blob.exists():
            blob.parent.mkdir(parents=True, exist_ok=True)
            blob.touch()
        if not self.dest.landed(placement):
            return None
        self.dest.publish(placement)
        return blob

    async def stream(self, path: str, start: int, end: int) -> AsyncIterator[bytes]:
        if path not in self._by_path:
            raise SwarmhubError(f"{path} is not a file of {self._ref.repo_id}@{self._ref.commit[:12]}")
        blob = await asyncio.to_thread(self.blob, path)
        if start >= end:
            return
        if blob is None and not self.confirmed:  # its pieces are only the torrent's word: its etag first
            blob = await self.library.land(self, path)
        if blob is not None:
            async for chunk in _read_file(blob, start, end):
                yield chunk
            return
        pull = await self.library.pull_for(self, path)
        async for chunk in _read_pieces(pull, path, start, end):
            yield chunk


async def _read_file(path: Path, start: int, end: int) -> AsyncIterator[bytes]:
    fd = await asyncio.to_thread(os.open, path, os.O_RDONLY)
    try:
        while start < end:
            chunk = await asyncio.to_thread(os.pread, fd, min(READ_CHUNK, end - start), start)
            if not chunk:
                raise SwarmhubError(f"{path} is shorter than the release says")
            start += len(chunk)
            yield chunk
    finally:
        os.close(fd)


async def _read_pieces(pull: Pull, path: str, start: int, end: int) -> AsyncIterator[bytes]:
    """Bytes ``[start, end)`` of a file from a pull's pieces, in order; the next pieces are already asked for."""
    layout = pull.layout
    storage: StorageFile = next(f for f in layout.files if not f.pad and f.path == path)
    size = layout.piece_size
    lo, hi = storage.offset + start, storage.offset + end  # in the piece stream
    pieces = range(lo // size, (hi - 1) // size + 1)
    ahead = max(4, READ_AHEAD // size)
    window = min(READ_AHEAD_START, ahead)
    asked: collections.deque[asyncio.Task[bytes]] = collections.deque()
    upcoming = iter(pieces)
    try:
        for piece in pieces:
            while len(asked) < window and (nxt := next(upcoming, None)) is not None:
                asked.append(asyncio.create_task(pull.piece(nxt, DEADLINE_STEP_MS * len(asked))))
            data = await asked.popleft()
            window = min(2 * window, ahead)
            base = piece * size
            yield data[max(lo, base) - base : min(hi, base + len(data)) - base]
    finally:
        for task in asked:
            task.cancel()


class Library:
    """Every release the node knows, its torrent in the engine, and the pulls programs started."""

    def __init__(
        self,
        engine: Engine,
        cache_dir: Path,
        state_dir: Path,
        *,
        upstream: OriginClient | None,
        registry: RegistryClient | None = None,
        peers: Sequence[tuple[str, int]] = (),
        trackers: Sequence[str] = (),
        cluster_ca: bytes | None = None,
        peer_grace: float = 3.0,
        stall_timeout: float = 60.0,
        confirmations: Confirmations | None = None,
        max_pulls: int = MAX_PULLS,
    ) -> None:
        self.engine = engine
        self.cache_dir = cache_dir
        self.store = TorrentStore(state_dir)
        self.confirmations = confirmations or Confirmations(state_dir, upstream)
        self.max_pulls = max_pulls
        self.parts = state_dir / "parts"
        self.resume_dir = state_dir / "resume"
        self.preheat_dir = state_dir / "preheats"
        self.upstream = upstream
        self.registry = registry
        self.peers = tuple(peers)
        self.trackers = tuple(trackers)
        self.cluster_ca = cluster_ca  # a private cluster's CA: every torrent becomes its TLS-only variant
        self.assignments: dict[str, frozenset[int]] | None = None  # a coordinator's; None: each pull decides
        self._preheats: dict[RepoRef, asyncio.Task[object]] = {}
        self.peer_grace = peer_grace
        self.stall_timeout = stall_timeout
        self._releases: dict[RepoRef, SwarmRelease] = {}
        self._seeding: dict[RepoRef, list[str]] = {}  # engine keys (hybrid, classic) seeding a release
        self._seeding_paths: dict[str, frozenset[str]] = {}  # engine key seeding -> the files it holds
        self._pulls: dict[tuple[RepoRef, int], tuple[Pull, asyncio.Task[object]]] = {}  # by release and part
        self._registry_misses: dict[RepoRef, float] = {}
        self._kept: set[RepoRef] = set()  # releases whose torrent this node stored
        self._refused: set[RepoRef] = set()  # releases whose stored or registry torrent the upstream contradicts
        self._lock = asyncio.Lock()
        self._preheat_lock = asyncio.Lock()
        self._closing = False
        self.errors = 0
        self._done_bytes = {"peer": 0, "origin": 0}  # of pulls that ended

    # ------------------------------------------------------------------------------------------ seeding

    def seed_all(self) -> int:
        """Seed every stored release the cache holds (any part of); returns how many torrents."""
        return sum(self._seed(stored) for stored in self.store.all())

    def adopt_cache(self) -> int:
        """Store the registry's torrents of releases the cache got another way (huggingface_hub); returns how
        many. ``seed_all`` then seeds them."""
        if self.registry is None:
            return 0
        stored = {s.torrent.repo for s in self.store.all()}
        adopted = 0
        for ref in _cached_releases(self.cache_dir):
            if ref in stored:
                continue
            for classic in (False, True):
                try:
                    data = self.registry.torrent(ref.repo_type, ref.repo_id, ref.commit, classic=classic)
                    torrent = parse_torrent(data)
                except SwarmhubError as exc:
                    log.debug("not adopting %s@%s: %s", ref.repo_id, ref.commit[:12], exc)
                    break
                if torrent.repo == ref:
                    self.store.save(torrent, data)
                    adopted += not classic
        return adopted

    def seed_new(self) -> int:
        """Seed the stored releases not seeded or pulled yet; returns how many torrents."""
        busy = self._seeding.keys() | self._pulled()
        return sum(self._seed(s) for s in self.store.all() if s.torrent.repo not in busy)

    def _pulled(self) -> set[RepoRef]:
        """The releases with a pull (of some part) in the engine."""
        return {ref for ref, _ in self._pulls}

    async def adopt(self, torrent: Torrent, data: bytes, parts: Sequence[tuple[Torrent, bytes]] = ()) -> SwarmRelease:
        """A release handed over with its torrent, or its parts (``swarmhub pull``, a preheat): confirmed
        against the upstream (``TorrentMismatch`` when it disagrees), known from now on, stored once a file of
        it lands."""
        if torrent.repo is None:
            raise MetainfoError(f"{torrent.name} is not a swarmhub release torrent (no Hub identity in info.hf)")
        if torrent.part is not None and not parts:  # part 0 handed over: the others are in the store
            if torrent.part.index:
                raise MetainfoError(
                    f"part {torrent.part.index} of {torrent.name} handed over: a pull starts from part 0"
                )
            parts = [(s.torrent, s.data) for s in self.store.parts(torrent)]
        check_parts([torrent, *(t for t, _ in parts)])
        (torrent, data), *parts = self._ours([(torrent, data), *parts])
        assert torrent.repo is not None  # a variant keeps the identity
        known = self._releases.get(torrent.repo)
        if known is not None and known.torrent.key == torrent.key:
            return known
        release = SwarmRelease(self, torrent, data, parts)
        release.confirmed = await self.confirmations.confirm(release.ref, release.files) == "confirmed"
        self._recorded(release)
        if known is not None and (known.confirmed or not release.confirmed):
            return known  # the release is known already, by a torrent as trusted (another format of it)
        self._releases[release.ref] = release
        return release

    def _ours(self, torrents: Sequence[tuple[Torrent, bytes]]) -> list[tuple[Torrent, bytes]]:
        """In a private cluster, the cluster's variants of a release's torrents, part 0 first (TLS peers only;
        ``bt.metainfo.cluster_variants``); else the torrents themselves."""
        if self.cluster_ca is None:
            return list(torrents)
        variants = cluster_variants([d for _, d in torrents], self.cluster_ca)
        return [(t, d) if v == d else (parse_torrent(v), v) for (t, d), v in zip(torrents, variants, strict=True)]

    def _seed(self, stored: StoredTorrent) -> bool:
        ref = stored.torrent.repo
        assert ref is not None
        ((torrent, data),) = self._ours([(stored.torrent, stored.data)])
        if torrent.key in self.engine.torrents():
            return False  # a cluster's variant of a torrent seeded already
        try:
            key = seed_release(self.engine, torrent, data, self.cache_dir, self.parts, trackers=self.trackers)
        except SwarmhubError as exc:
            log.warning("not seeding %s: %s", stored.path.name, exc)
            return False
        if key is not None:
            self._seeding.setdefault(ref, []).append(key)
            self._seeding_paths[key] = _paths(torrent)
        return key is not None

    # ------------------------------------------------------------------------------------------ lookups

    async def release(
        self, repo_type: RepoType, repo_id: str, commit: str, *, authorization: str | None = None
    ) -> SwarmRelease | None:
        """The release when the swarm knows it and the upstream does not contradict its torrent
        (``authorization``: a program's credential the Hub accepted, to confirm a gated release with)."""
        ref = RepoRef(repo_type, repo_id, commit)
        known = self._releases.get(ref)
        if known is not None:
            if not known.confirmed:  # asked again (at most every RETRY_AFTER seconds while unreachable)
                known.confirmed = await self._confirm(known, authorization)
            return None if ref in self._refused else known
        if ref in self._refused:
            return None
        found = await asyncio.to_thread(self._find, ref)
        if found is None:
            return None
        (torrent, data), *parts = found
        release = SwarmRelease(self, torrent, data, parts)
        release.confirmed = await self._confirm(release, authorization)
        if ref in self._refused:
            return None
        return self._releases.setdefault(ref, release)

    async def _confirm(self, release: SwarmRelease, authorization: str | None = None) -> bool:
        """Whether the upstream confirms ``release``; one it contradicts is dropped from the store and refused."""
        try:
            outcome = await self.confirmations.confirm(release.ref, release.files, authorization=authorization)
        except TorrentMismatch as exc:
            log.warning("%s", exc)
            self._refused.add(release.ref)
            self._kept.discard(release.ref)
            self._releases.pop(release.ref, None)
            for torrent, _ in release.parts:
                await asyncio.to_thread(self.store.remove, torrent)
            return False
        if outcome != "confirmed":
            return False
        self._recorded(release)
        return True

    def _recorded(self, release: SwarmRelease) -> None:
        """``release.whole`` and ``public_at`` from its confirmation record."""
        record = self.confirmations.record(release.ref, release.files)
        if record is not None:
            release.whole, release.public_at = record.whole, record.public_at

    def _find(self, ref: RepoRef) -> list[tuple[Torrent, bytes]] | None:
        """The release's torrent (its parts, part 0 first): from the store, else from the registry."""
        stored = self.store.find(ref.repo_type, ref.repo_id, ref.commit)
        # the hybrid, when there is one, and of a release of several torrents its part 0 (which names the others)
        stored.sort(key=lambda s: (s.torrent.format != "hybrid", s.torrent.part.index if s.torrent.part else 0))
        if stored and stored[0].torrent.repo == ref:
            first = stored[0]
            parts = [first, *self.store.parts(first.torrent)]
            if first.torrent.part is None or len(parts) == first.torrent.part.count:
                return self._ours([(s.torrent, s.data) for s in parts])
        if self.registry is None or time.monotonic() - self._registry_misses.get(ref, -1e9) < REGISTRY_MISS_TTL:
            return None
        try:
            data = self.registry.torrent(ref.repo_type, ref.repo_id, ref.commit)
            torrent = parse_torrent(data)
            count = torrent.part.count if torrent.part is not None else 1
            more = self.registry.other_parts(ref.repo_type, ref.repo_id, ref.commit, count)
            found = [(torrent, data), *((parse_torrent(d), d) for d in more)]
            check_parts([t for t, _ in found])
        except (RegistryError, SwarmhubError) as exc:
            if not isinstance(exc, RegistryError) or exc.status != 404:
                log.warning("registry: %s", exc)
            self._registry_misses[ref] = time.monotonic()
            return None
        if torrent.repo != ref:
            log.warning("registry sent a torrent of %s for %s; ignored", torrent.repo, ref)
            return None
        return self._ours(found)

    async def knows(self, repo_type: RepoType, repo_id: str) -> bool:
        """Whether the swarm may hold a release of this repo (a stored torrent, or a registry to ask)."""
        if self.registry is not None or any(r.repo_type == repo_type and r.repo_id == repo_id for r in self._releases):
            return True
        return bool(await asyncio.to_thread(self.store.find, repo_type, repo_id, None))

    def _ref_file(self, repo_type: RepoType, repo_id: str, revision: str) -> Path:
        return self.cache_dir / RepoRef(repo_type, repo_id, "0" * 40).cache_folder / ref_path_for(revision)

    async def local_head(self, repo_type: RepoType, repo_id: str, revision: str) -> tuple[str, float] | None:
        """The cache's ``refs/<revision>``: (commit, seconds since it was written)."""
        try:
            path = self._ref_file(repo_type, repo_id, revision)
            commit = (await asyncio.to_thread(path.read_text)).strip()
            age = time.time() - path.stat().st_mtime
        except (OSError, SwarmhubError):
            return None
        return (commit, max(0.0, age)) if is_commit(commit) else None

    async def record_head(self, repo_type: RepoType, repo_id: str, revision: str, commit: str) -> None:
        """The upstream says ``revision`` is at ``commit``: ``refs/<revision>`` says so when the node holds that
        release (as huggingface_hub writes it), for the next time the upstream cannot be asked."""
        ref = RepoRef(repo_type, repo_id, commit)
        if ref not in self._releases and not await asyncio.to_thread(self.store.find, repo_type, repo_id, commit):
            return
        try:
            path = self._ref_file(repo_type, repo_id, revision)
            current = await asyncio.to_thread(path.read_text) if path.exists() else None
            if current is None or current.strip() != commit:
                await asyncio.to_thread(atomic_text, path, commit)
            else:
                await asyncio.to_thread(os.utime, path)
        except (OSError, SwarmhubError) as exc:
            log.warning("could not record refs/%s of %s: %s", revision, repo_id, exc)

    # ------------------------------------------------------------------------------------------ pulling

    async def pull_for(self, release: SwarmRelease, path: str) -> Pull:
        """The running pull of ``release``, fetching ``path`` too; started when there is none."""
        part = release.part(path)
        async with self._lock:
            running = self._pulls.get((release.ref, part))
            if running is not None and not running[1].done():
                running[0].want([path])
                return running[0]
            if self.busy(release.ref):
                raise TooManyPulls(
                    f"the node pulls {self.max_pulls} releases already", hint="try again once one of them is done"
                )
            # one torrent per file in the engine: the release's seeding ones that hold a file of this part go
            # (seeded again as the pull ends); the other parts' go on seeding
            torrent, data = release.parts[part]
            pulled, kept = _paths(torrent), []
            for key in self._seeding.pop(release.ref, []):
                if self._seeding_paths.get(key, pulled) & pulled:
                    self.engine.remove(key)
                    self._seeding_paths.pop(key, None)
                else:
                    kept.append(key)
            if kept:
                self._seeding[release.ref] = kept
            pull = Pull(
                self.engine,
                torrent,
                data,
                release.dest,
                include=[],
                origin=HubSource(self.upstream, release.ref) if self.upstream is not None else None,
                peers=self.peers,
                part_file_dir=self.parts,
                resume_dir=self.resume_dir,
                trackers=self.trackers,
                peer_grace=self.peer_grace,
                stall_timeout=self.stall_timeout,
                linger=True,
            )
            pull.want([path])
            if self.assignments is not None:
                pull.assigned = self.assignments.get(torrent.key, frozenset())
            task: asyncio.Task[object] = asyncio.create_task(pull.run())
            task.add_done_callback(functools.partial(self._pull_ended, (release.ref, part), pull))
            self._pulls[(release.ref, part)] = (pull, task)
            return pull

    def busy(self, ref: RepoRef) -> bool:
        """Whether a pull of ``ref`` would be refused: ``max_pulls`` other releases are being pulled."""
        running = {r for (r, _), (_, task) in self._pulls.items() if not task.done()}
        return ref not in running and len(running) >= self.max_pulls

    async def land(self, release: SwarmRelease, path: str) -> Path:
        """``path`` of ``release`` landed in the cache (its etag checked): its blob."""
        pull = await self.pull_for(release, path)
        await pull.until_landed([path], self._pulls[(release.ref, release.part(path))][1])
        blob = await asyncio.to_thread(release.blob, path)
        if blob is None:
            raise SwarmhubError(f"{path} of {release.ref.repo_id} landed but its blob is missing")
        await asyncio.to_thread(self._keep, release, [path])
        return blob

    def _keep(self, release: SwarmRelease, landed: Sequence[str] | None = None) -> None:
        """The torrent in the store once a file of its release is in the cache (``seed`` seeds it then).
        ``landed``: files known to be in the cache, else every file is looked at. Once per release: a look at
        every file and a read of the stored torrent per file asked made a 20,000-file dataset quadratic."""
        if release.ref in self._kept:
            return
        if landed is not None:
            found = any(release.file(path).size for path in landed)
        else:
            found = any(p.file.size and release.dest.landed(p) for p in release.dest.placements(list(release.files)))
        if found:
            for torrent, data in release.parts:
                self.store.save(torrent, data)
            self._kept.add(release.ref)

    async def pull_release(
        self, release: SwarmRelease, paths: Sequence[str], on_progress: Callable[[PullProgress], None]
    ) -> PullProgress:
        """Land these files of ``release`` (``swarmhub pull`` handing its work to the node); returns the
        pull's counters at the end (of every part's pull, for a release of several torrents)."""
        if not paths:
            return PullProgress(0, 0, 0, 0, 0, 0, 0)
        by_part: dict[int, list[str]] = {}
        for path in paths:
            by_part.setdefault(release.part(path), []).append(path)
        pulls: list[Pull] = []
        waiting: list[asyncio.Task[None]] = []
        try:
            for part, wanted in by_part.items():
                pull = await self.pull_for(release, wanted[0])
                pull.want(wanted)
                pulls.append(pull)
                running = self._pulls[(release.ref, part)][1]
                waiting.append(asyncio.create_task(pull.until_landed(wanted, running)))
            while not all(w.done() for w in waiting):
                await asyncio.wait(waiting, timeout=0.5, return_when=asyncio.FIRST_EXCEPTION)
                on_progress(_sum_progress(pulls))
                for w in waiting:
                    if w.done():
                        w.result()
            for w in waiting:
                w.result()
        finally:
            for w in waiting:
                w.cancel()
        await asyncio.to_thread(self._keep, release, paths)
        return _sum_progress(pulls)

    def _pull_ended(self, key: tuple[RepoRef, int], pull: Pull, task: asyncio.Task[object]) -> None:
        ref = key[0]
        if self._pulls.get(key, (None,))[0] is pull:
            del self._pulls[key]
        self._done_bytes["origin"] += pull.origin_bytes()
        with contextlib.suppress(SwarmhubError):
            self._done_bytes["peer"] += self.engine.status(pull.key).payload_download
        if pull.key:
            self.engine.remove(pull.key)
        if not task.cancelled() and task.exception() is not None:
            self.errors += 1
            log.warning("pull of %s@%s ended: %s", ref.repo_id, ref.commit[:12], task.exception())
        release = self._releases.get(ref)
        if release is not None and ref not in self._refused:
            try:
                self._keep(release)
            except OSError as exc:
                log.warning("could not store the torrent of %s: %s", ref.repo_id, exc)
        if not task.cancelled():  # seeded again, but for what a pull of another part still writes
            pulling = frozenset().union(*(_paths(p.torrent) for (r, _), (p, _) in self._pulls.items() if r == ref))
            for stored in self.store.find(ref.repo_type, ref.repo_id, ref.commit):
                if not pulling & _paths(stored.torrent):
                    self._seed(stored)

    async def close(self, grace: float = 10.0) -> None:
        """End the pulls: files whose pieces are all in land first (up to ``grace`` seconds), then the
        verified pieces of the others are recorded (the next start trusts them without a check)."""
        self._closing = True
        running = list(self._pulls.values())
        for pull, _ in running:
            pull.close()
        if running:
            await asyncio.wait([t for _, t in running], timeout=grace)
        for pull, task in running:
            if task.done():
                continue
            try:
                await pull.save_resume()
            except (SwarmhubError, OSError, TimeoutError) as exc:
                log.warning("could not record the pieces of %s: %s", pull.ref.repo_id, exc)
            task.cancel()
        await asyncio.gather(*(t for _, t in running), return_exceptions=True)

    # ------------------------------------------------------------------------------------------ cluster

    def reports(self) -> list[dict[str, Any]]:
        """Per torrent in the engine: the pieces held and the bytes moved (a coordinator's heartbeat)."""
        pulls = {pull.key: pull for pull, _ in self._pulls.values() if pull.key}
        out: list[dict[str, Any]] = []
        for key in self.engine.torrents():
            with contextlib.suppress(SwarmhubError):
                status = self.engine.status(key)
                pull = pulls.get(key)
                have = [i for i, ok in enumerate(status.pieces) if ok]
                wanted = pull.needed_pieces() if pull is not None else have  # a seeder wants what it has
                out.append(
                    {
                        "key": key,
                        "num_pieces": len(status.pieces),
                        "have": encode_pieces(have, len(status.pieces)),
                        "wanted": encode_pieces(wanted, len(status.pieces)),
                        "fetching": encode_pieces(pull.fetching() if pull is not None else (), len(status.pieces)),
                        "origin_bytes": pull.origin_bytes() if pull is not None else 0,
                        "peer_bytes": status.payload_download,
                        "name": pull.ref.repo_id if pull is not None else "",
                    }
                )
        return out

    def assign(self, assignments: dict[str, frozenset[int]] | None) -> None:
        """The coordinator's word on who fetches what from the origin (None: it is gone; decide alone)."""
        self.assignments = assignments
        for pull, _ in self._pulls.values():
            pull.assigned = None if assignments is None else assignments.get(pull.torrent.key, frozenset())

    async def preheat(self, data: bytes, parts: Sequence[bytes] = ()) -> None:
        """Fetch a whole release in the background (a coordinator's preheat), until it is all in: kept in
        ``preheat_dir`` meanwhile, tried again when its pull fails, resumed by ``resume_preheats`` at the next
        start. Once per release at a time. A torrent the upstream contradicts raises ``TorrentMismatch``.
        ``parts``: the other torrents of a release in parts (``data`` its part 0), kept in the store, where
        the resumed preheat finds them."""
        torrent = await asyncio.to_thread(parse_torrent, data)
        others = [(await asyncio.to_thread(parse_torrent, d), d) for d in parts]
        data_of = {t.key: d for t, d in others}
        others = [(t, data_of[t.key]) for t in check_parts([torrent, *(t for t, _ in others)])[1:]]
        for t, d in others:
            await asyncio.to_thread(self.store.save, t, d)
        async with self._preheat_lock:  # the start's resumed preheat and the coordinator's ask came together
            release = await self.adopt(torrent, data, others)
            running = self._preheats.get(release.ref)
            if running is not None and not running.done():
                return
            await asyncio.to_thread(atomic_bytes, self._preheat_file(torrent), data)
            task: asyncio.Task[object] = asyncio.create_task(self._preheat(release))
            task.add_done_callback(functools.partial(self._preheat_ended, release))
            self._preheats[release.ref] = task

    async def resume_preheats(self) -> int:
        """Take up again the preheats a previous run of the node had not finished; returns how many."""
        resumed = 0
        for path in sorted(self.preheat_dir.glob("*.torrent")):
            try:
                await self.preheat(await asyncio.to_thread(path.read_bytes))
                resumed += 1
            except (SwarmhubError, OSError) as exc:
                log.warning("not resuming the preheat %s: %s", path.name, exc)
                if isinstance(exc, (TorrentMismatch, MetainfoError)):
                    path.unlink(missing_ok=True)
        return resumed

    def _preheat_file(self, torrent: Torrent) -> Path:
        return self.preheat_dir / f"{torrent.key}.torrent"

    async def _preheat(self, release: SwarmRelease) -> None:
        paths = [f.path for f in release.files]
        wait = PREHEAT_RETRY[0]
        while True:
            try:
                await self.pull_release(release, paths, lambda _: None)
                return
            except SwarmhubError as exc:
                if self._closing or isinstance(exc, TorrentMismatch) or release.ref in self._refused:
                    raise
                self.errors += 1
                ref = release.ref
                log.warning("preheat of %s@%s failed: %s; again in %.0f s", ref.repo_id, ref.commit[:12], exc, wait)
            await asyncio.sleep(wait)
            wait = min(PREHEAT_RETRY[1], wait * 2)

    def _preheat_ended(self, release: SwarmRelease, task: asyncio.Task[object]) -> None:
        ref = release.ref
        if task.cancelled() or self._closing:
            return  # the node stops: the preheat stays recorded, and resumes at the next start
        if task.exception() is not None:
            self.errors += 1
            log.warning("preheat of %s@%s failed for good: %s", ref.repo_id, ref.commit[:12], task.exception())
        self._preheat_file(release.torrent).unlink(missing_ok=True)

    # ------------------------------------------------------------------------------------------ stats

    def stats(self) -> LibraryStats:
        peer, origin = self._done_bytes["peer"], self._done_bytes["origin"]
        uploaded = peers = 0
        for key in self.engine.torrents():
            with contextlib.suppress(SwarmhubError):
                status = self.engine.status(key)
                peer += status.payload_download
                uploaded += status.payload_upload
                peers += status.num_peers
        origin += sum(pull.origin_bytes() for pull, _ in self._pulls.values())
        return LibraryStats(
            releases=len(self._seeding.keys() | self._pulled()),
            pulling=len(self._pulls),
            peer_bytes=peer,
            origin_bytes=origin,
            uploaded_bytes=uploaded,
            peers=peers,
            errors=self.errors,
        )

    def releases(self) -> list[dict[str, object]]:
        """What the node holds and does, for ``swarmhub status``."""
        out: list[dict[str, object]] = []
        for ref in sorted(self._seeding.keys() | self._pulled(), key=lambda r: (r.repo_id, r.commit)):
            keys = list(self._seeding.get(ref, []))
            running = [pull for (r, _), (pull, _) in self._pulls.items() if r == ref]
            keys += [pull.key for pull in running if pull.key]
            statuses = []
            for key in keys:
                with contextlib.suppress(SwarmhubError):
                    statuses.append(self.engine.status(key))
            out.append(
                {
                    "repo_type": ref.repo_type,
                    "repo_id": ref.repo_id,
                    "commit": ref.commit,
                    "state": "pulling" if running else "seeding",
                    "peers": sum(s.num_peers for s in statuses),
                    "uploaded_bytes": sum(s.payload_upload for s in statuses),
                    "downloaded_bytes": sum(s.payload_download for s in statuses),
                }
            )
        return out


def _paths(torrent: Torrent) -> frozenset[str]:
    return frozenset(f.path for f in torrent.files)


def _sum_progress(pulls: Sequence[Pull]) -> PullProgress:
    """One progress for the pulls of a release's parts."""
    each = [pull.progress() for pull in pulls]
    return PullProgress(*(sum(getattr(p, name) for p in each) for name in PullProgress.__dataclass_fields__))


def _cached_releases(cache_dir: Path) -> list[RepoRef]:
    """Every ``<type>s--org--name/snapshots/<commit>`` of a Hugging Face cache."""
    kinds: dict[str, RepoType] = {"models": "model", "datasets": "dataset", "spaces": "space"}
    out = []
    for snapshot in sorted(cache_dir.glob("*--*/snapshots/*")):
        kind, _, name = snapshot.parent.parent.name.partition("--")
        if kind in kinds and is_commit(snapshot.name) and name:
            out.append(RepoRef(kinds[kind], name.replace("--", "/"), snapshot.name))
    return out
