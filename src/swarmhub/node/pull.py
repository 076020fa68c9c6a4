"""Pulling one release: pieces from peers, from the origin what no peer has, each file landed once verified.

The flow of ``Pull.run``:

1. Map the torrent's files (libtorrent's storage, pads included) onto the destination: every wanted file
   is renamed in storage to its ``.swarmhub-part`` name, already-landed and unwanted files get priority 0, so
   libtorrent writes only what is missing and never touches a landed file.
2. libtorrent checks what is on disk (this is the resume after a kill: verified pieces are kept).
3. Peers (trackers in the torrent, ``peers`` given) send pieces. After ``peer_grace`` seconds, any wanted
   piece that no connected peer has (or every missing piece when peers send nothing) is fetched by the node
   itself from the origin with ranged GETs and handed to libtorrent, which verifies it like a peer's. In a
   cluster the coordinator deals these pieces instead (``assigned``); a cluster node without one takes its
   rendezvous share of them among the nodes it sees (``cluster.split``).
4. When all pieces of a file are in, its whole content is checked against its etag, libtorrent renames it
   to its final name, and the destination makes it visible (snapshot link / local_dir file).
5. No progress for ``stall_timeout`` seconds is an error saying what was tried.

The node keeps a pull running (``linger``): programs ask for more files (``want``) and read pieces while they
arrive (``piece``: a deadline for libtorrent, first in line for the origin fetcher).
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import concurrent.futures
import contextlib
import dataclasses
import errno
import hashlib
import itertools
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from swarmhub.bt.metainfo import Torrent
from swarmhub.cluster.split import Split
from swarmhub.engine.session import (
    INCONSISTENT_HASHES,
    Engine,
    FileRenamed,
    Flushed,
    HashFailed,
    PeerBanned,
    PieceFinished,
    PieceRead,
    StorageFile,
    StorageLayout,
    TorrentChecked,
    TorrentError,
    storage_layout,
)
from swarmhub.errors import (
    IntegrityError,
    MetainfoError,
    OriginError,
    StalledError,
    StorageError,
    SwarmhubError,
)
from swarmhub.hub.patterns import path_selected
from swarmhub.hub.repo import RepoFile, RepoRef
from swarmhub.node.landing import Destination, Placement, atomic_text, verify_etag
from swarmhub.node.sources import RangeSource

__all__ = ["Pull", "PullProgress", "PullResult", "release_files"]

log = logging.getLogger(__name__)

ORIGIN_HASH_FAILURES = 3  # the origin's bytes failed piece hashes this often: it serves another release
ORIGIN_RUN_BYTES = 8 * 1024 * 1024  # at most this many bytes of consecutive pieces in one ranged GET
ORIGIN_RUN_SECONDS = 2.0  # a run is sized to take about this long at the rate the origin gives
FIRST_RUN_BYTES = 1024 * 1024  # the size of runs until the origin's rate is known
HAND_BYTES = 256 * 1024  # a run's pieces go to libtorrent as they arrive, at least this many bytes at a time
FLUSH_PATIENCE = 60  # seconds a landing waits for libtorrent's flush before it says so in the log
FLUSH_GAP = 0.1  # seconds between the end of a flush and the next one landings ask for
READ_ATTEMPTS = 5  # a piece read libtorrent cancelled (its file moved) is asked for again
WRITE_ERROR_GRACE = 1.0  # seconds an error 217 waits for the write error that may come after it
REDIAL_EVERY = 5.0  # seconds between dials of the given peers while fewer are connected
LOOK_EVERY = 0.25  # seconds between looks at a pull's progress (and stall) in libtorrent's status
SPLIT_EVERY = 0.5  # seconds between looks at the peers' pieces when deciding alone in a cluster
DISK_MARGIN = 4 * 1024 * 1024  # below this much room left, a storage error is a full disk


@dataclass(frozen=True)
class PullProgress:
    done: int  # bytes of wanted pieces verified
    total: int
    peer_bytes: int
    origin_bytes: int
    peers: int
    files_landed: int
    files_total: int


@dataclass(frozen=True)
class PullResult:
    ref: RepoRef
    key: str  # the torrent's key in the engine
    path: Path  # the snapshot folder (or local_dir)
    files: int  # files of the release now in place
    files_downloaded: int  # of which this pull landed
    bytes: int  # size of the wanted files
    peer_bytes: int
    origin_bytes: int
    seconds: float
    banned_peers: tuple[str, ...]


def release_files(torrent: Torrent) -> list[RepoFile]:
    """The Hub files a torrent carries (``info.hf``); a torrent without them cannot land in a cache."""
    if torrent.repo is None or any(f.etag is None for f in torrent.files):
        raise MetainfoError(
            f"{torrent.name}: the torrent carries no Hub identity (info.hf), so its files cannot land in the cache"
        )
    return [RepoFile(f.path, f.size, f.etag or "") for f in torrent.files]


@dataclass
class _File:
    placement: Placement
    storage: StorageFile
    pieces: range
    landed: bool = False


@dataclass
class _State:
    have: set[int] = field(default_factory=set)
    renamed: dict[int, asyncio.Future[str | None]] = field(default_factory=dict)
    flushes: collections.deque[asyncio.Future[None]] = field(default_factory=collections.deque)
    hash_failures: dict[int, int] = field(default_factory=dict)  # piece -> times it failed its hash
    banned: list[str] = field(default_factory=list)
    error: SwarmhubError | None = None
    checked: asyncio.Event = field(default_factory=asyncio.Event)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    readers: dict[int, list[asyncio.Future[bytes]]] = field(default_factory=dict)  # piece -> who waits for it
    wanted_at: float = 0.0  # when files were last added: progress is measured from then


class Pull:
    def __init__(
        self,
        engine: Engine,
        torrent: Torrent,
        torrent_bytes: bytes,
        destination: Destination,
        *,
        include: Sequence[str] | None = None,
        exclude: Sequence[str] | None = None,
        origin: RangeSource | None = None,
        peers: Sequence[tuple[str, int]] = (),
        part_file_dir: Path | None = None,
        resume_dir: Path | None = None,
        trackers: Sequence[str] = (),
        peer_grace: float = 3.0,
        stall_timeout: float = 60.0,
        on_progress: Callable[[PullProgress], None] | None = None,
        linger: bool = False,
    ) -> None:
        self.engine = engine
        self.torrent = torrent
        self.torrent_bytes = torrent_bytes
        self.dest = destination
        self.origin = origin
        self.peers = tuple(peers)
        self.part_file_dir = part_file_dir
        self._origin_wrong = 0  # origin pieces whose bytes did not match the torrent
        self._last_run_bytes = 0  # the run size the origin's last measured rate gave
        self._claimed: dict[int, float] = {}  # origin pieces in flight or awaiting libtorrent's verdict
        self._fed: set[int] = set()  # pieces handed to libtorrent with add_piece (origin bytes)
        self.resume_file = resume_dir / f"{torrent.key}.pieces" if resume_dir is not None else None
        self.peer_grace = peer_grace
        self.stall_timeout = stall_timeout
        self.on_progress = on_progress
        self.linger = linger
        self.trackers = tuple(trackers)
        # A cluster's coordinator says which pieces this node alone fetches from the origin (at once, peers
        # or not); the others come from peers only. None: decide alone (peers first, the origin after a grace).
        self.assigned: frozenset[int] | None = None
        # deciding alone in a cluster (the engine's peer id is fixed): rendezvous shares over the nodes in sight
        self._split = Split(engine.peer_id) if engine.peer_id is not None else None
        self._split_at, self._split_last = -math.inf, set[int]()
        self.closed = False
        assert torrent.repo is not None
        self.ref: RepoRef = torrent.repo
        every = release_files(torrent)
        self._every = {f.path: f for f in every}
        self.wanted = [f for f in every if path_selected(f.path, include, exclude)]
        self.layout: StorageLayout = storage_layout(torrent_bytes)
        self._v1_hashes = self.layout.v1_hashes  # to check the origin's bytes before libtorrent takes them
        self._storage_of = {f.path: f for f in self.layout.files if not f.pad}
        self._files = self._map_files(every)
        self._twins: dict[str, list[_File]] = {}  # etag -> the files of it (a release may hold one blob twice)
        for f in self._files:
            self._twins.setdefault(f.placement.file.etag, []).append(f)
        # Kept as files land and pieces arrive, so that no tick costs a pass over every file (a 10,000-file
        # release spent minutes so): the files to fetch, their pieces, how many landed, and the files to look
        # at again (storage indexes: a piece of theirs came in since the last look).
        self._by_index = {f.storage.index: f for f in self._files}
        self._by_path = {f.placement.file.path: f for f in self._files}
        self._pending: dict[int, _File] = {}  # storage index -> a file this pull writes that has not landed
        self._piece_uses: collections.Counter[int] = collections.Counter()  # piece -> pending files on it
        self._fetch_pieces: set[int] = set()  # the pieces of the pending files
        # ... in ascending order, from the first one still among them (a pass over every piece at each origin
        # run made a 100,000-file pull quadratic: one run per file, each sorting every piece left)
        self._fetch_order: list[int] = []
        self._fetch_front = 0
        self._fetch_order_stale = False
        for f in self._files:
            self._add_pending(f)
        self._landed_count = sum(f.landed for f in self._files)
        self._to_look_at: set[int] = set(self._by_index)
        self._dialled = 0.0  # when the peers given were last dialled
        self._held_217: tuple[float, TorrentError] | None = None  # an error 217 waiting for the write error behind it
        self._finished = 0  # PieceFinished events seen: a flush asked for after the n-th covers pieces 1..n
        self._last_flush: tuple[int, asyncio.Future[None]] | None = None
        self._next_flush: asyncio.Future[None] | None = None  # promised while a flush is under way
        self._origin_failed: str | None = None if origin is not None else "not used"
        self._origin_start = 0
        self._origin_hint: str | None = None
        self._state = _State()
        self.key = ""
        # two files checked at a time: enough to keep up with the network, and memory stays flat
        self._verifier = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="swarmhub-verify")

    # -------------------------------------------------------------------------------------------- planning

    def _map_files(self, every: list[RepoFile]) -> list[_File]:
        real = [f for f in self.layout.files if not f.pad]
        if [(f.path, f.size) for f in real] != [(f.path, f.size) for f in every]:
            raise MetainfoError(f"{self.torrent.name}: libtorrent reads other files than info.hf lists")
        by_path = self._storage_of
        placements = self.dest.placements(self.wanted)
        return [
            _File(p, by_path[p.file.path], self.layout.pieces_of(by_path[p.file.path]), self.dest.landed(p))
            for p in placements
        ]

    def want(self, paths: Iterable[str]) -> None:
        """Fetch these files too (a running pull takes them at once). Costs what the new files cost: a node
        asked for 20,000 files one by one spent ~90 ms a file on passes over every file wanted before."""
        new = [self._every[p] for p in dict.fromkeys(paths) if p not in self._by_path]
        if not new:
            return
        self.wanted += new
        added = []
        for placement in self.dest.placements(new):
            # the first file of an etag this pull wants is the one written, whatever the files before it
            primary = placement.file.etag not in self._twins
            placement = dataclasses.replace(placement, primary=primary)
            storage = self._storage_of[placement.file.path]
            f = _File(placement, storage, self.layout.pieces_of(storage), self.dest.landed(placement))
            added.append(f)
            self._twins.setdefault(placement.file.etag, []).append(f)
            self._by_index[storage.index] = f
            self._by_path[placement.file.path] = f
            self._to_look_at.add(storage.index)
            self._add_pending(f)
        self._files += added
        self._landed_count += sum(f.landed for f in added)
        self._state.wanted_at = time.monotonic()
        if self.key:
            self._plan_added(added)
        self._state.changed.set()

    def _plan_added(self, added: list[_File]) -> None:
        """Storage names and priorities of files wanted after the torrent was added."""
        for f in added:
            self.engine.rename_file(self.key, f.storage.index, self._storage_name(f))
        wanted = {f.storage.index: 1 for f in added if f.storage.index in self._pending}
        self.engine.set_file_priorities(self.key, wanted)
        for f in added:
            if f.landed or not f.placement.file.size or self._twin_landed(f):
                self._land_locally(f)

    def _twin_landed(self, f: _File) -> bool:
        return not f.placement.primary and any(
            t.landed and t.placement.primary for t in self._twins.get(f.placement.file.etag, ())
        )

    def wants(self, path: str) -> bool:
        return path in self._by_path

    async def until_landed(self, paths: Iterable[str], running: asyncio.Task[object]) -> None:
        """Until every file of ``paths`` (wanted before) is in place; the pull's error if ``running`` (its
        ``run()``) ends first."""
        files = [self._by_path[p] for p in paths]
        while not all(f.landed for f in files):
            if running.done():
                error = None if running.cancelled() else running.exception()
                if error is not None:
                    raise error
                raise SwarmhubError(f"the pull of {self.ref.repo_id} ended before its files landed")
            self._state.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._state.changed.wait(), 0.5)

    def progress(self) -> PullProgress:
        status = self.engine.status(self.key, pieces=False) if self.key else None
        return PullProgress(
            done=status.total_wanted_done if status else 0,
            total=status.total_wanted if status else 0,
            peer_bytes=self._peer_bytes(),
            origin_bytes=self.origin_bytes(),
            peers=status.num_peers if status else 0,
            files_landed=self._landed_count,
            files_total=len(self._files),
        )

    def _to_fetch(self) -> Collection[_File]:
        """The files this pull still writes (primary, not empty, not landed)."""
        return self._pending.values()

    def _add_pending(self, f: _File) -> None:
        if f.placement.primary and not f.landed and f.placement.file.size:
            self._pending[f.storage.index] = f
            self._piece_uses.update(f.pieces)
            if not self._fetch_pieces.issuperset(f.pieces):
                self._fetch_pieces.update(f.pieces)
                self._fetch_order_stale = True

    def _mark_landed(self, f: _File) -> None:
        if f.landed:
            return
        f.landed = True
        self._landed_count += 1
        if self._pending.pop(f.storage.index, None) is not None:
            for piece in f.pieces:
                self._piece_uses[piece] -= 1
                if not self._piece_uses[piece]:
                    del self._piece_uses[piece]
                    self._fetch_pieces.discard(piece)

    def fetching(self) -> set[int]:
        """The pieces this node is fetching from the origin now (a coordinator leaves them where they are)."""
        return {p for p in self._claimed if p not in self._state.have}

    def needed_pieces(self) -> set[int]:
        """Every piece of the wanted files this pull writes (landed or not): what it needs to be done."""
        return {p for f in self._files if f.placement.primary and f.placement.file.size for p in f.pieces}

    def _wanted_pieces(self) -> set[int]:
        """The pieces of the files still to fetch (kept as files land or are wanted: do not change it)."""
        return self._fetch_pieces

    def _missing_in_order(self) -> Iterator[int]:
        """The pieces of the files still to fetch that libtorrent does not have, ascending; a piece leaves
        ``_fetch_pieces`` only when its files land (for good, unless a file wanted later brings it back), so the
        pieces before the first one left are passed over once."""
        if self._fetch_order_stale:
            self._fetch_order, self._fetch_front, self._fetch_order_stale = sorted(self._fetch_pieces), 0, False
        order, pieces = self._fetch_order, self._fetch_pieces
        while self._fetch_front < len(order) and order[self._fetch_front] not in pieces:
            self._fetch_front += 1
        have = self._state.have
        for i in range(self._fetch_front, len(order)):
            piece = order[i]
            if piece in pieces and piece not in have:
                yield piece

    def _storage_name(self, f: _File) -> str:
        """Where libtorrent keeps the file: its pending name until it lands. A duplicate's bytes arrive in its
        twin's blob; it points there, so seeding reads the same bytes."""
        if not f.placement.primary:
            f = self._twins[f.placement.file.etag][0]
        return str(f.placement.final if f.landed else f.placement.pending)

    def _storage_plan(self) -> tuple[list[int], dict[int, str]]:
        priorities = [0] * len(self.layout.files)
        for index in self._pending:
            priorities[index] = 1
        return priorities, {f.storage.index: self._storage_name(f) for f in self._files}

    # ------------------------------------------------------------------------------------------------- run

    async def run(self) -> PullResult:
        try:
            return await self._run()
        except BaseException as exc:
            self._fail_readers(exc if isinstance(exc, SwarmhubError) else SwarmhubError(f"the pull ended: {exc!r}"))
            raise
        finally:
            self._fail_readers(SwarmhubError(f"the pull of {self.ref.repo_id} ended"))
            self._verifier.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        """A lingering pull ends once what it fetches has landed."""
        self.closed = True
        self._state.changed.set()

    # ------------------------------------------------------------------------------------------- readers

    async def piece(self, index: int, deadline_ms: int) -> bytes:
        """A piece's bytes once it is in (``deadline_ms``: how soon it is needed, for libtorrent's picker).

        A read can be cancelled by libtorrent when the piece's file moves (it lands) meanwhile: asked again."""
        for attempt in range(READ_ATTEMPTS):
            try:
                return await self._piece_once(index, deadline_ms)
            except StorageError:
                if attempt == READ_ATTEMPTS - 1:
                    raise
                await asyncio.sleep(0.05 * (attempt + 1))  # the move that cancelled it is done by then
        raise AssertionError("unreachable")

    async def _piece_once(self, index: int, deadline_ms: int) -> bytes:
        await self._state.checked.wait()
        self._check_error()
        waiter: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        waiting = self._state.readers.setdefault(index, [])
        waiting.append(waiter)
        if len(waiting) == 1:  # libtorrent reads it for us at once when it already has it
            self.engine.set_deadline(self.key, index, deadline_ms)
        self._state.changed.set()
        try:
            return await waiter
        finally:
            if waiter in waiting:
                waiting.remove(waiter)
            if not waiting and self._state.readers.get(index) is waiting:
                del self._state.readers[index]

    def _answer_readers(self, event: PieceRead) -> None:
        for waiter in self._state.readers.pop(event.piece, []):
            if waiter.done():
                continue
            if event.error is None:
                waiter.set_result(event.data)
            else:
                waiter.set_exception(
                    StorageError(f"cannot read piece {event.piece} of {self.ref.repo_id}: {event.error}")
                )

    def _fail_readers(self, error: SwarmhubError) -> None:
        for waiting in self._state.readers.values():
            for waiter in waiting:
                if not waiter.done():
                    waiter.set_exception(error)
        self._state.readers.clear()

    async def _run(self) -> PullResult:
        started = time.monotonic()
        self._origin_start = self.origin.client.bytes_received if self.origin else 0
        landed_before = sum(f.landed for f in self._files)
        for f in self._files:  # empty files need no peer; landed ones need only their links
            if f.landed or not f.placement.file.size:
                await asyncio.to_thread(self._land_locally, f)
        if self._to_fetch():
            await self._download()
        for f in self._files:
            if not f.placement.primary:
                await asyncio.to_thread(self.dest.publish, f.placement)
                self._mark_landed(f)
        path = await asyncio.to_thread(self.dest.finish, None)
        return PullResult(
            ref=self.ref,
            key=self.key,
            path=path,
            files=len(self._files),
            files_downloaded=sum(f.landed for f in self._files) - landed_before,
            bytes=sum(f.placement.file.size for f in self._files),
            peer_bytes=self._peer_bytes(),
            origin_bytes=self.origin_bytes(),
            seconds=time.monotonic() - started,
            banned_peers=tuple(self._state.banned),
        )

    def _land_locally(self, f: _File) -> None:
        """An empty file (no pieces) or one landed before: make sure it is in place and visible."""
        root = self.dest.root
        if not f.landed and f.placement.primary:
            pending = root / f.placement.pending
            pending.parent.mkdir(parents=True, exist_ok=True)
            pending.touch()
            verify_etag(pending, f.placement.file)
            (root / f.placement.final).parent.mkdir(parents=True, exist_ok=True)
            pending.replace(root / f.placement.final)
        elif f.landed and f.placement.primary:  # an interrupted pull's bytes, landed since by someone else
            (root / f.placement.pending).unlink(missing_ok=True)
        if f.placement.primary or self._twin_landed(f):
            self.dest.publish(f.placement)
            self._mark_landed(f)

    def _peer_bytes(self) -> int:
        if not self.key:
            return 0
        try:
            return self.engine.status(self.key, pieces=False).payload_download
        except SwarmhubError:
            return 0

    def origin_bytes(self) -> int:
        return self.origin.client.bytes_received - self._origin_start if self.origin else 0

    async def _download(self) -> None:
        (self.dest.root / "blobs").mkdir(parents=True, exist_ok=True)
        if self.part_file_dir is not None:
            self.part_file_dir.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(self._check_room)
        have = await asyncio.to_thread(self._resumed)
        # no await from here to the key: a file wanted meanwhile is either in this plan or planned by want()
        priorities, renamed = self._storage_plan()
        self.key = self.engine.add(
            self.torrent_bytes,
            self.dest.root,
            file_priorities=priorities,
            renamed=renamed,
            have=have,
            trackers=self.trackers,
            part_file_dir=self.part_file_dir,
            web_seeds=False,  # the origin (or a web seed) only for what no peer has: that is our job
        )
        tasks = [asyncio.create_task(self._pump_events())]
        try:
            await self._state.checked.wait()
            self._check_error()
            self._dial()
            tasks.append(asyncio.create_task(self._origin_fallback()))
            await self._until_landed()
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, SwarmhubError):
                    await task

    def _dial(self) -> None:
        """Connect to the peers given (``--peer``). libtorrent drops a peer after a few refused connections
        (``max_failcount``): one that is not listening yet (a seeder still starting) is dialled again every
        ``REDIAL_EVERY`` seconds while fewer peers than given are connected (``_land_all``)."""
        self._dialled = time.monotonic()
        for host, port in self.peers:
            self.engine.connect_peer(self.key, host, port)

    def _check_room(self) -> None:
        """Refuse, before a byte is written, a pull the disk cannot hold: a write that fails midway is what
        libtorrent turns into error 217 (``_pump_events``), and a full disk hurts every program on it. What
        the part files of an earlier pull hold counts as written."""
        needed = 0
        for f in self._to_fetch():
            try:
                written = (self.dest.root / f.placement.pending).stat().st_blocks * 512
            except OSError:
                written = 0
            needed += max(0, f.placement.file.size - written)
        try:
            free = shutil.disk_usage(self.dest.root).free
        except OSError:
            return
        if free < needed + DISK_MARGIN:
            raise self._no_room(
                free,
                f"{needed >> 20} MiB to download",
                hint="free some disk space (or pull into another cache: --cache-dir, HF_HUB_CACHE) and run the same "
                "command again",
            )

    def _wake_on_error(self) -> None:
        """Whoever waits for the check or for progress looks at the error (``_check_error``)."""
        self._state.checked.set()
        self._state.changed.set()

    def _check_error(self) -> None:
        held = self._held_217
        if self._state.error is None and held is not None and time.monotonic() - held[0] >= WRITE_ERROR_GRACE:
            self._state.error = self._torrent_error(held[1])  # no write failed: the torrent's trees disagree
        if self._state.error is not None:
            raise self._state.error

    async def _pump_events(self) -> None:
        state = self._state
        async for event in self.engine.events(self.key):
            if event.info_hash != self.key:
                continue
            if isinstance(event, TorrentChecked):
                state.have = {i for i, ok in enumerate(self.engine.status(self.key).pieces) if ok}
                self._to_look_at.update(self._by_index)
                state.checked.set()
            elif isinstance(event, PieceFinished):
                state.have.add(event.piece)
                self._finished += 1
                self._to_look_at.update(s.index for s, _, _ in self.layout.segments(event.piece) if not s.pad)
            elif isinstance(event, PieceRead):
                self._answer_readers(event)
            elif isinstance(event, HashFailed):
                state.hash_failures[event.piece] = state.hash_failures.get(event.piece, 0) + 1
            elif isinstance(event, FileRenamed):
                renamed = state.renamed.pop(event.index, None)
                if renamed is not None and not renamed.done():
                    renamed.set_result(event.error)
            elif isinstance(event, Flushed):
                flushed = state.flushes.popleft() if state.flushes else None
                if flushed is not None and not flushed.done():
                    flushed.set_result(None)
            elif isinstance(event, PeerBanned):
                log.warning("banned peer %s: it sent data that failed the piece hashes", event.peer)
                state.banned.append(event.peer)
            elif isinstance(event, TorrentError):
                # The first error is the cause. libtorrent 2.1 marks blocks whose write failed (a full disk) as
                # written; a hybrid's piece hashed later reads its v1 bytes back from the hole, its v2 hashes
                # came from memory, and the two disagree: error 217 follows the failed write, and must not
                # replace it (issue 15; docs/investigations/err217).
                # The two alerts come in either order: a 217 waits ``WRITE_ERROR_GRACE`` for the write error
                # behind it (``_check_error``).
                if event.code == INCONSISTENT_HASHES:
                    if state.error is not None:
                        log.info("%s: error 217 came with a failed write (after it)", self.ref.repo_id)
                    elif self._held_217 is None:
                        self._held_217 = (time.monotonic(), event)
                        asyncio.get_running_loop().call_later(WRITE_ERROR_GRACE, self._wake_on_error)
                elif state.error is None:
                    state.error = self._torrent_error(event)
                    if self._held_217 is not None:
                        log.info("%s: error 217 came with a failed write (before it)", self.ref.repo_id)
                if state.error is not None:
                    state.checked.set()
            state.changed.set()

    def _torrent_error(self, event: TorrentError) -> SwarmhubError:
        full = self._disk_full(event.message)
        if full is not None:  # a failed write surfaces as ENOSPC, or (hybrids) as error 217 too
            return full
        if event.code != INCONSISTENT_HASHES:
            return self._storage_error(event.message)
        self._log_inconsistent()
        return StorageError(
            f"libtorrent found a piece of {self.ref.repo_id} whose v1 and v2 hashes disagree (error 217): a write "
            "failed (see the log), or the torrent's two hash trees describe different bytes",
            hint="run the same command again (verified pieces are kept); if it repeats, get the torrent again or "
            "make it: swarmhub create",
        )

    def _log_inconsistent(self) -> None:
        """What a hybrid's pieces whose v1 and v2 hashes disagreed had been through (a write that failed first is
        the one cause found, and is reported instead: ``_pump_events``):
        the pieces awaiting libtorrent's verdict and their files, how many this pull fed from the origin, the
        hash failures seen. libtorrent names no piece (and forgets every piece it had: it rechecks)."""
        size = self.layout.piece_size
        waiting = sorted(p for p in self._claimed if p not in self._state.have)
        files = sorted(
            {
                f.path
                for f in self.layout.files
                if not f.pad and any(f.offset < (p + 1) * size and p * size < f.offset + f.size for p in waiting)
            }
        )
        log.error(
            "%s@%s: libtorrent found v1 and v2 hashes disagreeing (error 217) in one of the pieces awaiting its "
            "verdict %s (files %s); %d pieces fed from the origin, hash failures %s, %d peers banned",
            self.ref.repo_id,
            self.ref.commit[:12],
            waiting[:50],
            files[:20],
            len(self._fed),
            dict(sorted(self._state.hash_failures.items())[:50]),
            len(self._state.banned),
        )

    def _storage_error(self, message: str) -> StorageError:
        """libtorrent's storage error, named plainly when the disk is full."""
        hint = "free some disk space (or fix permissions) and run the same command again: verified pieces are kept"
        return self._disk_full(message) or StorageError(f"cannot write {self.ref.repo_id}: {message}", hint=hint)

    def _disk_full(self, message: str) -> StorageError | None:
        """ENOSPC said plainly when the cache's disk has less room than the pull still needs: a failed write can
        surface as ENOSPC, or (hybrids) as v1 and v2 hashes disagreeing about a half-written piece."""
        try:
            free = shutil.disk_usage(self.dest.root).free
            status = self.engine.status(self.key, pieces=False)
            needed = status.total_wanted - status.total_wanted_done
        except (OSError, SwarmhubError):
            return None
        if free >= needed + DISK_MARGIN:
            return None
        return self._no_room(
            free,
            f"{needed >> 20} MiB still to download; libtorrent: {message}",
            hint="free some disk space and run the same command again: verified pieces are kept",
        )

    def _no_room(self, free: int, detail: str, *, hint: str) -> StorageError:
        return StorageError(
            f"cannot write {self.ref.repo_id}: {os.strerror(errno.ENOSPC)} ({free >> 20} MiB free in "
            f"{self.dest.root}, {detail})",
            hint=hint,
        )

    # -------------------------------------------------------------------------------------------- resume

    def _resumed(self) -> list[bool] | None:
        """The pieces a clean stop recorded (``save_resume``) and whose files are still there, plus every
        piece of a landed file: trusted without a check. None (libtorrent checks what is on disk) without a
        record. A record is used once: the next stop writes a fresh one."""
        if self.resume_file is None:
            return None
        try:
            recorded = bytes.fromhex(self.resume_file.read_text().strip())
            self.resume_file.unlink()
        except (OSError, ValueError):
            return None
        have = [
            bool(recorded[i // 8] >> (7 - i % 8) & 1) if i // 8 < len(recorded) else False
            for i in range(self.layout.num_pieces)
        ]
        root = self.dest.root
        for f in self._files:
            gone = not f.landed and f.placement.primary and not (root / f.placement.pending).exists()
            for piece in f.pieces:
                have[piece] = f.landed or (have[piece] and not gone)
        return have

    async def save_resume(self) -> None:
        """Record the verified pieces (after a flush: they are on disk), so the next pull trusts them.

        Only when a file is half-done: one whose pieces are all in lands (or, stopped before, is checked
        again by the next pull), and a record nobody's pull would take would outlive it."""
        have = self._state.have
        half_done = [f for f in self._to_fetch() if not all(p in have for p in f.pieces)]
        if self.resume_file is None or not self.key or not half_done:
            return
        flushed = asyncio.get_running_loop().create_future()
        self._state.flushes.append(flushed)
        self.engine.flush(self.key)
        await asyncio.wait_for(flushed, 30)
        bits = bytearray((self.layout.num_pieces + 7) // 8)
        for piece in self._state.have:
            bits[piece // 8] |= 0x80 >> (piece % 8)
        await asyncio.to_thread(atomic_text, self.resume_file, bits.hex())

    # ------------------------------------------------------------------------------------------- landing

    async def _until_landed(self) -> None:
        landing: dict[int, asyncio.Task[None]] = {}
        try:
            await self._land_all(landing)
        finally:
            for task in landing.values():
                task.cancel()
            await asyncio.gather(*landing.values(), return_exceptions=True)

    async def _land_all(self, landing: dict[int, asyncio.Task[None]]) -> None:
        state = self._state
        last_done, last_change, looked = -1, time.monotonic(), -math.inf
        landed: list[int] = []  # storage indexes of landings that ended

        def ended(index: int) -> Callable[[asyncio.Task[None]], None]:
            return lambda _: landed.append(index)

        while True:
            self._check_error()
            looking, self._to_look_at = self._to_look_at, set()
            for idx in looking:
                f = self._by_index.get(idx)
                if f is None or f.landed or not f.placement.primary or not f.placement.file.size or idx in landing:
                    continue
                if all(p in state.have for p in f.pieces):
                    landing[idx] = task = asyncio.create_task(self._land(f))
                    task.add_done_callback(ended(idx))
            while landed:
                landing.pop(landed.pop()).result()  # raises the landing's error
            if not self._to_fetch() and not landing and (not self.linger or self.closed):
                return
            now = time.monotonic()
            if now - looked >= LOOK_EVERY:  # libtorrent's status costs a pass over its files: not per event
                looked = now
                status = self.engine.status(self.key, pieces=False)
                if status.num_peers < len(self.peers) and now - self._dialled >= REDIAL_EVERY and self._to_fetch():
                    self._dial()
                done = status.total_wanted_done
                self._report(status.total_wanted_done, status.total_wanted, status.num_peers)
                if done != last_done or not self._to_fetch() or state.wanted_at > last_change:
                    last_done, last_change = done, now
                elif now - last_change > self.stall_timeout and not landing:
                    raise self._stalled(status.num_peers)
            state.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(state.changed.wait(), 0.25)

    def _report(self, done: int, total: int, peers: int) -> None:
        if self.on_progress is not None:
            self.on_progress(
                PullProgress(
                    done=done,
                    total=total,
                    peer_bytes=self._peer_bytes(),
                    origin_bytes=self.origin_bytes(),
                    peers=peers,
                    files_landed=self._landed_count,
                    files_total=len(self._files),
                )
            )

    def _stalled(self, peers: int) -> StalledError:
        tried = [f"{peers} peer(s) connected"]
        if self.torrent.trackers:
            tried.append("trackers " + ", ".join(self.torrent.trackers))
        if self.peers:
            tried.append("peers " + ", ".join(f"{h}:{p}" for h, p in self.peers))
        origin = self.origin.description if self.origin else "origin"
        tried.append(f"{origin}: {self._origin_failed}" if self._origin_failed else origin)
        return StalledError(
            f"no progress on {self.ref.repo_id} for {self.stall_timeout:.0f} s; tried " + "; ".join(tried),
            hint=self._origin_hint
            or "start a seeder, pass --peer HOST:PORT, or let the origin serve it (--endpoint / HF_ENDPOINT); "
            "run again to resume",
        )

    def _flush(self) -> asyncio.Future[None]:
        """A flush of libtorrent's store buffer that covers every piece in so far. The last one asked for when
        no piece came in after it; while one is under way, the one that follows it, asked for ``FLUSH_GAP``
        after it ends. Landings share flushes: each is a pass over every piece in libtorrent's cache, and
        libtorrent 2.1 keeps there every piece a pad file ends, so a hybrid's are one per file (a pull of
        30,000 small files flushing per landing slowed down as it went; docs/NOTES.md)."""
        last = self._last_flush
        if last is not None and last[0] >= self._finished and not last[1].cancelled():
            return last[1]
        loop = asyncio.get_running_loop()
        if last is not None and not last[1].done():
            if self._next_flush is None:
                self._next_flush = loop.create_future()
                last[1].add_done_callback(lambda _: loop.call_later(FLUSH_GAP, self._ask_next_flush))
            return self._next_flush
        return self._ask_flush(loop.create_future())

    def _ask_flush(self, flushed: asyncio.Future[None]) -> asyncio.Future[None]:
        self._state.flushes.append(flushed)
        self._last_flush = (self._finished, flushed)
        self.engine.flush(self.key)
        return flushed

    def _ask_next_flush(self) -> None:
        flushed, self._next_flush = self._next_flush, None
        if flushed is None or flushed.done():
            return
        try:
            self._ask_flush(flushed)
        except SwarmhubError as exc:  # the torrent is gone: the pull is ending
            flushed.set_exception(exc)

    async def _land(self, f: _File) -> None:
        p = f.placement
        root = self.dest.root
        flushed = self._flush()
        try:  # the last pieces may still be in libtorrent's store buffer
            await asyncio.wait_for(asyncio.shield(flushed), FLUSH_PATIENCE)
        except TimeoutError:
            log.warning("%s: libtorrent has not confirmed a flush for %d s; still waiting", p.file.path, FLUSH_PATIENCE)
            await flushed
        try:
            await asyncio.get_running_loop().run_in_executor(self._verifier, verify_etag, root / p.pending, p.file)
        except IntegrityError as exc:
            raise IntegrityError(
                f"{p.file.path}: every piece passed the torrent's hashes but the file is not the one the Hub "
                f"lists ({exc}); the torrent does not match {self.ref.repo_id}@{self.ref.commit[:12]}",
                path=p.file.path,
            ) from exc
        twins = list(self._twins.get(p.file.etag, ()))
        waiters = {}
        for t in twins:  # the primary moves the file; the twins only follow the name
            waiter = asyncio.get_running_loop().create_future()
            self._state.renamed[t.storage.index] = waiter
            waiters[t.storage.index] = waiter
            self.engine.rename_file(self.key, t.storage.index, str(p.final))
        for idx, waiter in waiters.items():
            error = await waiter
            if error is not None and idx == f.storage.index:
                raise StorageError(f"{p.file.path}: cannot move it into place: {error}")
        await asyncio.to_thread(self.dest.publish, p)
        self._mark_landed(f)
        if self.linger:  # a one-off pull links the twins at its end
            for t in twins:
                if not t.placement.primary:
                    await asyncio.to_thread(self._land_locally, t)
        self._state.changed.set()

    # -------------------------------------------------------------------------------------------- origin

    async def _origin_fallback(self) -> None:
        try:
            await self._fetch_from_origin()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the pull must end with it, not wait for the stall timeout
            self._state.error = exc if isinstance(exc, SwarmhubError) else SwarmhubError(f"origin fetcher: {exc!r}")
            self._state.changed.set()

    async def _fetch_from_origin(self) -> None:
        """Fetch from the origin the pieces no peer can give, once peers had their chance.

        Runs of consecutive pieces go in one ranged GET per file they touch, ``connections`` runs at a time,
        each sized to take ``ORIGIN_RUN_SECONDS`` at the rate the origin gives (up to ``ORIGIN_RUN_BYTES``): a
        slow origin lands pieces every few seconds instead of after one long GET, a fast one gets long GETs.
        A slot is refilled as soon as its run is handed to libtorrent, whose verdict (``PieceFinished`` /
        ``HashFailed``) arrives later. A piece stays claimed until then.
        """
        if self.origin is None:
            return
        in_flight: dict[asyncio.Task[None], list[int]] = {}  # each run under way, and its pieces
        claimed = self._claimed  # piece -> when it was handed to libtorrent (inf while fetching)
        failures_seen: dict[int, int] = {}  # piece -> its hash failures when we claimed it
        limit = max(1, self.origin.client.connections)
        try:
            await self._fetch_loop(in_flight, claimed, failures_seen, limit)
        finally:
            for task in in_flight:
                task.cancel()
            await asyncio.gather(*in_flight, return_exceptions=True)

    async def _fetch_loop(
        self,
        in_flight: dict[asyncio.Task[None], list[int]],
        claimed: dict[int, float],
        failures_seen: dict[int, int],
        limit: int,
    ) -> None:
        state = self._state
        started = time.monotonic()
        failed_by_origin = 0
        last_peer_bytes, last_peer_progress, peers_looked = 0, time.monotonic(), -math.inf
        assert self.origin is not None
        rate = RateMeter()
        while self._origin_failed is None:
            rate.add(time.monotonic(), self.origin.client.bytes_received)
            for task in [t for t in in_flight if t.done()]:
                run = in_flight.pop(task)
                if task.cancelled():  # withdrawn (below): nothing of it reached libtorrent
                    for piece in run:
                        if claimed.get(piece) == math.inf:
                            del claimed[piece]
                    continue
                exc = task.exception()
                if isinstance(exc, OriginError):
                    self._origin_failed = str(exc)
                    self._origin_hint = exc.hint
                    log.warning("origin gave up: %s; carrying on with peers only", exc)
                elif exc is not None:
                    raise exc
            now = time.monotonic()
            for piece, sent in list(claimed.items()):  # settle the claims libtorrent has ruled on
                if piece in state.have:
                    del claimed[piece]
                elif state.hash_failures.get(piece, 0) > failures_seen.get(piece, 0):
                    failures_seen[piece] = state.hash_failures[piece]
                    del claimed[piece]
                    if self._v1_hashes is None:  # else the origin's bytes were checked: a peer sent the bad ones
                        failed_by_origin += 1
                    if failed_by_origin >= ORIGIN_HASH_FAILURES:
                        raise self._origin_mismatch(piece)
                elif now - sent > 60:  # no verdict (a piece libtorrent ignored): fetch it again
                    del claimed[piece]
            if now - peers_looked >= LOOK_EVERY:  # libtorrent's status: not at every run that ends
                peers_looked, peer_bytes = now, self._peer_bytes()
                if peer_bytes != last_peer_bytes:
                    last_peer_bytes, last_peer_progress = peer_bytes, now
            if next(self._missing_in_order(), None) is None:  # nothing to wait for: peers idle, not stalled,
                started = last_peer_progress = now  # and a file wanted later gets its own grace (the node)
            self._withdraw(in_flight)
            if len(in_flight) < limit:
                run_bytes = origin_run_bytes(rate.rate() if in_flight else None, limit, self._last_run_bytes)
                self._last_run_bytes = run_bytes
                # as many as the runs below can take: ``_runs`` makes the same runs of them as of every piece
                most = limit * max(1, run_bytes // self.layout.piece_size)
                eligible = self._origin_pieces(claimed, now - started, now - last_peer_progress, most)
                for run in self._runs(eligible, limit, run_bytes, limit - len(in_flight)):
                    for piece in run:
                        claimed[piece] = math.inf
                        failures_seen[piece] = state.hash_failures.get(piece, 0)
                    in_flight[asyncio.create_task(self._fetch_run(run, claimed))] = run
            if in_flight:
                await asyncio.wait(in_flight, timeout=0.1, return_when=asyncio.FIRST_COMPLETED)
            else:
                await asyncio.sleep(0.1)

    def _withdraw(self, in_flight: Mapping[asyncio.Task[None], list[int]]) -> None:
        """Cancel the runs none of whose pieces the coordinator still assigns to this node: it dealt them to
        another fetcher (this one seemed stalled, waited out a 429, or was cut off), who fetches them now. Left
        to go on, both would take them from the origin once it answers again."""
        if self.assigned is None:
            return
        for task, run in in_flight.items():
            if not task.done() and not task.cancelling() and self.assigned.isdisjoint(run):
                log.info("origin run of pieces %d-%d withdrawn: dealt to another node", run[0], run[-1])
                task.cancel()

    def _origin_pieces(
        self, claimed: dict[int, float], waited: float, peers_quiet: float, most: int | None = None
    ) -> list[int]:
        """The pieces to fetch from the origin now (the first ``most`` of them), readers' first, then in
        order: those the coordinator assigned (at once), or, deciding alone, after ``peer_grace``: in a cluster
        this node's share of those no connected peer has, elsewhere those no connected peer has, or all while
        peers send nothing."""
        state = self._state
        among: Callable[[int], bool] | None = None
        if self.assigned is not None:
            among = self.assigned.__contains__
        elif waited < self.peer_grace:
            return []
        elif self._split is not None:
            among = self._split_share().__contains__
        elif peers_quiet < self.peer_grace:
            availability = self.engine.availability(self.key)
            if availability:

                def among(piece: int) -> bool:
                    return availability[piece] == 0

        urgent = sorted(
            p
            for p in state.readers
            if p in self._fetch_pieces and p not in state.have and p not in claimed and (among is None or among(p))
        )
        rest = (
            p
            for p in self._missing_in_order()
            if p not in claimed and (among is None or among(p)) and p not in state.readers
        )
        return urgent + list(itertools.islice(rest, None if most is None else max(0, most - len(urgent))))

    def _split_share(self) -> set[int]:
        """This node's share of the pieces no peer holds, among the cluster nodes it sees (``cluster.split``);
        asked of libtorrent at most every ``SPLIT_EVERY`` seconds."""
        assert self._split is not None
        now = time.monotonic()
        if now - self._split_at > 10 * SPLIT_EVERY:  # a coordinator dealt pieces meanwhile: its clocks are stale
            self._split = Split(self._split.me)
        if now - self._split_at >= SPLIT_EVERY:
            availability = self.engine.availability(self.key)
            held = self._state.have | {p for p, n in enumerate(availability) if n}
            share = self._split.share(now, self._wanted_pieces(), held, self.engine.peer_ids(self.key))
            if not share <= self._split_last:  # pieces joined this node's share
                log.info(
                    "deciding alone among %d node(s): %d piece(s) to take from the origin",
                    len(self._split.live),
                    len(share),
                )
            self._split_at, self._split_last = now, share
        return self._split_last

    def _runs(
        self, pieces: list[int], connections: int, run_bytes: int = ORIGIN_RUN_BYTES, count: int | None = None
    ) -> list[list[int]]:
        """Consecutive pieces grouped into runs of at most ``run_bytes`` (one piece at least), and small enough
        that a small remainder still spreads over every connection; the first ``count`` runs (all: None)."""
        piece_size = self.layout.piece_size
        per_run = max(1, min(run_bytes // piece_size, len(pieces) // connections))
        runs: list[list[int]] = []
        for piece in pieces:
            if runs and runs[-1][-1] == piece - 1 and len(runs[-1]) < per_run:
                runs[-1].append(piece)
            elif count is not None and len(runs) == count:
                break
            else:
                runs.append([piece])
        return runs

    async def _fetch_run(self, run: list[int], claimed: dict[int, float]) -> None:
        """One ranged GET per file the run touches; each piece goes to libtorrent as soon as its bytes are in
        (a fetcher killed, or a run withdrawn, midway loses only the pieces still arriving)."""
        assert self.origin is not None
        size = self.layout.piece_size
        start = run[0] * size
        end = (run[-1] * size) + self.layout.piece_length(run[-1])
        buf = bytearray(end - start)  # pads stay zeros
        view = memoryview(buf)
        ends = [p * size - start + self.layout.piece_length(p) for p in run]  # run-relative, ascending
        handed = 0  # run[:handed] went to libtorrent (or failed the check)
        handing: list[asyncio.Task[None]] = []
        loop = asyncio.get_running_loop()

        def hand_up_to(filled: int) -> None:  # on the loop: ``buf[:filled]`` is final
            nonlocal handed
            ready = bisect.bisect_right(ends, filled, lo=handed)
            if ready > handed:
                pieces = {p: bytes(view[p * size - start : p * size - start + self.layout.piece_length(p)])
                          for p in run[handed:ready]}  # fmt: skip
                handed = ready
                handing.append(asyncio.create_task(self._hand(pieces, claimed)))

        def progress_from(at: int) -> Callable[[int], None]:
            crossing = [bisect.bisect_right(ends, at), at]  # the next piece end to pass; where we last said

            def progress(done: int) -> None:  # in the reading thread
                filled = at + done
                if crossing[0] < len(ends) and filled >= ends[crossing[0]] and filled - crossing[1] >= HAND_BYTES:
                    crossing[:] = [bisect.bisect_right(ends, filled), filled]
                    loop.call_soon_threadsafe(hand_up_to, filled)

            return progress

        try:
            for storage, offset, length in self.layout.segments_between(start, end):
                if not storage.pad:
                    at = storage.offset + offset - start
                    hand_up_to(at)  # what lies before, pads included, is in
                    await self.origin.read(storage.path, offset, view[at : at + length], progress_from(at))
            hand_up_to(end - start)
        finally:
            await asyncio.gather(*handing)

    async def _hand(self, pieces: dict[int, bytes], claimed: dict[int, float]) -> None:
        """Origin pieces to libtorrent, each checked against the torrent's SHA-1 first: a peer's bad bytes are
        never blamed on the origin."""
        wrong = await asyncio.to_thread(self._not_matching, pieces)
        late = 0
        for piece, data in pieces.items():
            if piece in wrong:
                claimed.pop(piece, None)
                self._origin_wrong += 1
                if self._origin_wrong >= ORIGIN_HASH_FAILURES:
                    raise self._origin_mismatch(piece)
                continue
            if piece not in self._state.have:
                self.engine.add_piece(self.key, piece, data)
                self._fed.add(piece)
            else:
                late += 1
            claimed[piece] = time.monotonic()
        if late:
            first, last = min(pieces), max(pieces)
            log.info("origin pieces %d-%d: %d had come from peers meanwhile", first, last, late)

    def _not_matching(self, pieces: dict[int, bytes]) -> set[int]:
        """The pieces whose SHA-1 is not the torrent's (v1 and hybrid torrents; a v2-only one: none known)."""
        hashes = self._v1_hashes
        if hashes is None:
            return set()
        return {p for p, data in pieces.items() if hashlib.sha1(data).digest() != hashes[20 * p : 20 * p + 20]}

    def _origin_mismatch(self, piece: int) -> IntegrityError:
        paths = ", ".join(s.path for s, _, _ in self.layout.segments(piece) if not s.pad)
        return IntegrityError(
            f"the origin's bytes for {paths} do not match the torrent (piece {piece}): it serves another release",
            path=paths,
        )


def origin_run_bytes(rate: float | None, connections: int, previous: int = 0) -> int:
    """How long an origin run may be: what one of ``connections`` gets of the origin's ``rate`` (bytes/s over
    all of them) in ``ORIGIN_RUN_SECONDS``, at most ``ORIGIN_RUN_BYTES``. ``rate`` None (not measured, or
    nothing was in flight to measure): the ``previous`` size, or ``FIRST_RUN_BYTES`` at first."""
    if rate is None:
        return previous or FIRST_RUN_BYTES
    return int(min(ORIGIN_RUN_BYTES, rate / max(1, connections) * ORIGIN_RUN_SECONDS))


class RateMeter:
    """A counter's rate over the last ``window`` seconds (None until it spans half a second)."""

    def __init__(self, window: float = 3.0) -> None:
        self.window = window
        self._samples: collections.deque[tuple[float, int]] = collections.deque()

    def add(self, now: float, total: int) -> None:
        self._samples.append((now, total))
        while len(self._samples) > 2 and now - self._samples[1][0] >= self.window:
            self._samples.popleft()

    def rate(self) -> float | None:
        if len(self._samples) < 2:
            return None
        (t0, b0), (t1, b1) = self._samples[0], self._samples[-1]
        return (b1 - b0) / (t1 - t0) if t1 - t0 >= 0.5 else None
