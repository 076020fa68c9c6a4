"""The shard agent: a node's answers to shard commands, and its downloads of shards from peers.

Messages (the original design's shapes)::

    request   {"command": "LOAD_SHARD", "request_id": "r1", "from": "coordinator", "to": "node-b",
               "params": {"shard_id": "2"}}
    response  {"command": "LOAD_SHARD", "request_id": "r1", "status": "success", "result": {...}}
              {"command": "LOAD_SHARD", "request_id": "r1", "status": "error", "error": "one line"}

Commands:

- ``LOAD_SHARD {shard_id, peers?, timeout?}``: loaded already -> answered at once; on disk -> SHA-256 checked
  (or trusted from the folder's record when the file did not change) and loaded; missing -> its torrent (from
  the manifest) is added to libtorrent with the node's trackers (the coordinator's ``/announce``) and any
  ``peers`` (``"host:port"``, each an address the node trusts: see ``shards.trust``), and looked up by
  info-hash on the DHT when the node is on one; pieces are checked by libtorrent (SHA-1, peers that send bad
  data are banned), the whole file against the manifest's SHA-256, then it is renamed into place, seeded, and
  loaded. No progress for ``timeout`` seconds is an error that says why: no peer has it, or every peer that had
  it sent corrupt data. Concurrent requests for one shard share one load. Result: ``{shard_id, status:
  "loaded", path, source: "cache"|"disk"|"peers", format, tensors, size}``.
- ``LIST_FILES``: ``{files: [{info_hash, filename, size, shard_id}], loaded: [shard ids]}``: what this node
  can serve.
- ``EXECUTE_TASK {task_type, shard_id, auto_load?, ...}``: a task of ``shards.tasks`` on a loaded shard
  (``auto_load: true`` loads it first).
- ``UNLOAD_SHARD {shard_id}``: drop it from the shard cache (the file stays, and is still seeded).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from swarmhub.engine.session import (
    Engine,
    FileRenamed,
    Flushed,
    HashFailed,
    PeerBanned,
    PieceFinished,
    TorrentChecked,
    TorrentError,
    TorrentStatus,
)
from swarmhub.errors import ShardError, SwarmhubError
from swarmhub.shards.loader import LoadedShard, ShardCache, load_shard_file
from swarmhub.shards.manifest import ShardEntry, normalize_shard_id
from swarmhub.shards.store import LocalShard, ShardStore
from swarmhub.shards.tasks import run_task
from swarmhub.shards.trust import PeerTrust

__all__ = ["COMMANDS", "NOT_LOADED", "ShardAgent", "parse_peer"]

NOT_LOADED = "Shard not loaded. Use LOAD_SHARD command first."
COMMANDS = ("LOAD_SHARD", "LIST_FILES", "EXECUTE_TASK", "UNLOAD_SHARD")
DEFAULT_LOAD_TIMEOUT = 60.0
_KICK_EVERY = 2.0  # seconds between asking trackers (and given peers) again while no peer is connected
# a DHT lookup walks the DHT (dozens of queries, seconds on the public one): asked again less often; libtorrent
# makes the first when the torrent starts, then one every dht_announce_interval (15 min)
_DHT_LOOKUP_EVERY = 6.0
_STEP = 0.25
_HASH_CHUNK = 8 << 20
_HASH_BATCH = 64 << 20  # the SHA-256 follows the download in steps of this many bytes

log = logging.getLogger(__name__)


def parse_peer(value: object) -> tuple[str, int]:
    """``"host:port"`` (``"[v6]:port"``) or ``[host, port]``."""
    if isinstance(value, list | tuple) and len(value) == 2 and isinstance(value[1], int):
        return str(value[0]), int(value[1])
    if isinstance(value, str):
        host, _, port = value.rpartition(":")
        if host and port.isdigit() and 0 < int(port) < 65536:
            return host.strip("[]"), int(port)
    raise ShardError(f"a peer is 'host:port', not {value!r}")


def _sha256_update(digest: Any, path: Path, start: int, stop: int) -> None:
    with path.open("rb") as f:
        f.seek(start)
        while start < stop and (chunk := f.read(min(_HASH_CHUNK, stop - start))):
            digest.update(chunk)
            start += len(chunk)


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class _Fetch:
    """What a download's events told so far."""

    changed: asyncio.Event = field(default_factory=asyncio.Event)
    hash_failures: int = 0
    failed_pieces: set[int] = field(default_factory=set)
    banned: list[str] = field(default_factory=list)
    error: str | None = None
    seen_peers: int = 0
    checked: bool = False  # libtorrent checked the part file: peers connected before are dropped
    flushes: collections.deque[asyncio.Future[None]] = field(default_factory=collections.deque)
    renamed: asyncio.Future[str | None] | None = None
    passed: set[int] = field(default_factory=set)  # pieces that passed their hash
    new_pieces: asyncio.Event = field(default_factory=asyncio.Event)
    complete: bool = False


class ShardAgent:
    """Answers shard commands for one node. Its coroutines run on one event loop (the node's server)."""

    def __init__(
        self,
        node_id: str,
        store: ShardStore,
        engine: Engine,
        *,
        trackers: Sequence[str] = (),
        peers: Sequence[tuple[str, int]] = (),
        load_timeout: float = DEFAULT_LOAD_TIMEOUT,
        trust: PeerTrust | None = None,
    ) -> None:
        self.node_id = node_id
        self.store = store
        self.engine = engine
        self.trackers = tuple(trackers)
        self.peers = tuple(peers)
        self.load_timeout = load_timeout
        self.trust = trust or PeerTrust()  # which peers a command may name
        self.cache = ShardCache()
        self.fetches: list[str] = []  # shard ids downloaded from peers, one per download (not per request)
        self._loading: dict[str, asyncio.Future[tuple[LoadedShard, str]]] = {}
        self._commands: dict[str, Callable[[Mapping[str, Any]], Awaitable[dict[str, Any]]]] = {
            "LOAD_SHARD": self._cmd_load,
            "LIST_FILES": self._cmd_list,
            "EXECUTE_TASK": self._cmd_execute,
            "UNLOAD_SHARD": self._cmd_unload,
        }

    # ------------------------------------------------------------------------------------------- seeding

    def seed(self, local: LocalShard) -> None:
        """Seed a verified file: every piece trusted (we hashed it), nothing checked again."""
        entry = local.entry
        if entry.info_hash in self.engine.torrents():
            return
        self.engine.add(entry.torrent, self.store.root, have=[True] * entry.num_pieces, trackers=self.trackers)

    # ------------------------------------------------------------------------------------------ messages

    async def handle(self, message: object) -> dict[str, Any]:
        """One request message -> its response message (never raises)."""
        if not isinstance(message, Mapping):
            return {"command": None, "request_id": None, "status": "error", "error": "a command is a JSON object"}
        command, request_id = message.get("command"), message.get("request_id")
        reply: dict[str, Any] = {"command": command, "request_id": request_id}
        try:
            handler = self._commands.get(command) if isinstance(command, str) else None
            if handler is None:
                raise ShardError(f"unknown command {command!r}; known: {', '.join(COMMANDS)}")
            params = message.get("params") or {}
            if not isinstance(params, Mapping):
                raise ShardError("params must be a JSON object")
            result = await handler(params)
        except SwarmhubError as exc:
            text = f"{exc.message} — {exc.hint}" if exc.hint else exc.message
            return {**reply, "status": "error", "error": text}
        except Exception as exc:  # a bug: answered, logged, the node goes on
            log.exception("%s failed", command)
            return {**reply, "status": "error", "error": f"internal error: {type(exc).__name__}: {exc}"}
        return {**reply, "status": "success", "result": result}

    async def _cmd_list(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return {"files": self.list_files(), "loaded": self.cache.ids()}

    def list_files(self) -> list[dict[str, Any]]:
        return [
            {"info_hash": s.entry.info_hash, "filename": s.entry.filename, "size": s.entry.size, "shard_id": sid}
            for sid, s in ((s.entry.shard_id, s) for s in self.store.local())
        ]

    async def _cmd_load(self, params: Mapping[str, Any]) -> dict[str, Any]:
        named = params.get("peers") or []
        if not isinstance(named, list):
            raise ShardError('peers must be a list of "host:port"')
        peers = [self.trust.admit(parse_peer(p)) for p in named]
        timeout = params.get("timeout", self.load_timeout)
        if not isinstance(timeout, int | float) or not 0 < timeout <= 3600:
            raise ShardError("timeout must be a number of seconds between 0 and 3600")
        shard, source = await self.load(params.get("shard_id"), peers=peers, timeout=float(timeout))
        return {"shard_id": shard.shard_id, "status": "loaded", "path": str(shard.path), "source": source} | {
            "format": shard.format,
            "tensors": len(shard.tensors),
            "size": shard.size,
            "seconds": {k: round(v, 3) for k, v in shard.timings.items()},
        }

    async def _cmd_unload(self, params: Mapping[str, Any]) -> dict[str, Any]:
        shard_id = normalize_shard_id(params.get("shard_id"))
        dropped = self.cache.drop(shard_id)
        return {"shard_id": shard_id, "status": "unloaded" if dropped else "not loaded"}

    async def _cmd_execute(self, params: Mapping[str, Any]) -> dict[str, Any]:
        shard_id = normalize_shard_id(params.get("shard_id"))
        shard = self.cache.get(shard_id)
        if shard is None:
            if params.get("auto_load") is not True:
                raise ShardError(NOT_LOADED, shard_id=shard_id)
            shard, _ = await self.load(shard_id)
        return await asyncio.to_thread(run_task, shard, params.get("task_type"), params)

    # --------------------------------------------------------------------------------------------- loading

    async def load(
        self, shard_id: object, *, peers: Sequence[tuple[str, int]] = (), timeout: float | None = None
    ) -> tuple[LoadedShard, str]:
        """The loaded shard and where it came from ("cache", "disk", "peers"); one load per shard at a time."""
        sid = normalize_shard_id(shard_id)
        cached = self.cache.get(sid)
        if cached is not None:
            return cached, "cache"
        pending = self._loading.get(sid)
        if pending is None:
            pending = asyncio.ensure_future(self._load(sid, peers, timeout or self.load_timeout))
            self._loading[sid] = pending
            pending.add_done_callback(lambda _: self._loading.pop(sid, None))
        # shielded: a request that goes away does not cancel the load the others wait for
        return await asyncio.shield(pending)

    async def _load(self, sid: str, peers: Sequence[tuple[str, int]], timeout: float) -> tuple[LoadedShard, str]:
        entry = self.store.known(sid)
        if entry is None:
            raise ShardError(
                f"unknown shard {sid!r}: not in this node's manifest nor among its files",
                shard_id=sid,
                hint="start the node with --manifest FILE (the shard set's shards.json)",
            )
        local = self.store.local_shard(sid)
        timings: dict[str, float] = {}
        started = time.monotonic()
        if local is not None and local.path.is_file():
            await asyncio.to_thread(self.store.verify, entry, local.path)
            path, source = local.path, "disk"
            timings["verify"] = time.monotonic() - started
        elif self.store.path_of(entry).is_file():  # there, but not seeded yet (copied in after the start)
            path, source = self.store.path_of(entry), "disk"
            await asyncio.to_thread(self.store.verify, entry, path)
            timings["verify"] = time.monotonic() - started
            self.seed(self.store.add_local(entry, path))
        else:
            path, source = await self._fetch(entry, [*self.peers, *peers], timeout, timings), "peers"
        shard = await asyncio.to_thread(load_shard_file, sid, path)
        shard.timings = {**timings, "parse": shard.seconds}
        self.cache.put(shard)
        return shard, source

    # -------------------------------------------------------------------------------------------- fetching

    async def _fetch(
        self, entry: ShardEntry, peers: Sequence[tuple[str, int]], timeout: float, timings: dict[str, float]
    ) -> Path:
        """Download ``entry`` from peers into the folder, check it (pieces, then SHA-256), seed it; its path.
        ``timings``: seconds to the last piece (``download``) and of the SHA-256 after it (``verify``)."""
        key = entry.info_hash
        if key in self.engine.torrents():  # a failed earlier attempt's
            self.engine.remove(key)
        self.fetches.append(entry.shard_id)
        state = _Fetch()
        pump = asyncio.create_task(self._pump(key, state))
        hasher = asyncio.create_task(self._sha256_in_order(key, entry, state))
        try:
            started = time.monotonic()
            part = self.store.part_name(entry)
            # in order: the SHA-256 follows the download instead of reading the whole file after it
            self.engine.add(entry.torrent, self.store.root, renamed={0: part}, trackers=self.trackers, sequential=True)
            await self._until_complete(entry, state, peers, timeout)
            downloaded = time.monotonic()
            state.complete = True
            state.passed.update(range(entry.num_pieces))  # some PieceFinished may still be on their way
            state.new_pieces.set()
            try:
                actual = await hasher
            except (OSError, TimeoutError) as exc:
                log.warning("shard %s: hashing while it arrived failed (%s); hashing the file", entry.shard_id, exc)
                actual = ""
            if actual != entry.sha256:  # the prefix read may have raced a write: the whole file, flushed
                await self._flush(key, state)
                actual = await asyncio.to_thread(_sha256_file, self.store.root / part)
            timings.update(download=downloaded - started, verify=time.monotonic() - downloaded)
            if actual != entry.sha256:
                (self.store.root / part).unlink(missing_ok=True)
                raise ShardError(
                    f"shard {entry.shard_id}: every piece passed its hash but the file's SHA-256 is {actual}, "
                    f"the manifest's {entry.sha256}: the manifest's torrent is not this shard's",
                    shard_id=entry.shard_id,
                )
            state.renamed = asyncio.get_running_loop().create_future()
            self.engine.rename_file(key, 0, entry.filename)
            problem = await asyncio.wait_for(state.renamed, 60)
            if problem is not None:
                raise ShardError(
                    f"shard {entry.shard_id}: cannot move it into place: {problem}", shard_id=entry.shard_id
                )
            path = self.store.path_of(entry)
            await asyncio.to_thread(self.store.remember_download, entry, path)
            log.info("shard %s fetched from peers into %s", entry.shard_id, path)
            return path
        except BaseException:
            self.engine.remove(key)  # a retry starts afresh (verified pieces in the part file are kept)
            raise
        finally:
            for task in (hasher, pump):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, ShardError):
                    await task

    async def _flush(self, key: str, state: _Fetch) -> None:
        """Every piece that passed so far is on disk (``PieceFinished`` can come before the write).

        libtorrent also posts one ``Flushed`` of its own when the download finishes (it releases the files, a
        fence behind every write), so an answer taken for ours is never one that leaves a passed piece unwritten.
        """
        flushed = asyncio.get_running_loop().create_future()
        state.flushes.append(flushed)
        self.engine.flush(key)
        await asyncio.wait_for(flushed, 60)

    async def _sha256_in_order(self, key: str, entry: ShardEntry, state: _Fetch) -> str:
        """The file's SHA-256, read from the part file as its pieces pass, in order, in steps of
        ``_HASH_BATCH`` bytes (after a flush): when the last piece is in, the check is nearly done."""
        digest = hashlib.sha256()
        path = self.store.root / self.store.part_name(entry)
        hashed_pieces = 0
        while hashed_pieces < entry.num_pieces:
            end = hashed_pieces
            while end < entry.num_pieces and end in state.passed:
                end += 1
            if end == hashed_pieces or ((end - hashed_pieces) * entry.piece_size < _HASH_BATCH and not state.complete):
                state.new_pieces.clear()
                await state.new_pieces.wait()
                continue
            await self._flush(key, state)
            start, stop = hashed_pieces * entry.piece_size, min(end * entry.piece_size, entry.size)
            await asyncio.to_thread(_sha256_update, digest, path, start, stop)
            hashed_pieces = end
        return digest.hexdigest()

    async def _pump(self, key: str, state: _Fetch) -> None:
        async for event in self.engine.events(key):
            if isinstance(event, PieceFinished):
                state.passed.add(event.piece)
                state.new_pieces.set()
            elif isinstance(event, HashFailed):
                state.hash_failures += 1
                state.failed_pieces.add(event.piece)
            elif isinstance(event, PeerBanned) and event.peer not in state.banned:
                log.warning("banned peer %s: it sent shard data that failed the piece hashes", event.peer)
                state.banned.append(event.peer)
            elif isinstance(event, TorrentChecked):
                state.checked = True
            elif isinstance(event, TorrentError):
                state.error = event.message
            elif isinstance(event, Flushed) and state.flushes:
                flushed = state.flushes.popleft()  # one event per flush call, in order
                if not flushed.done():
                    flushed.set_result(None)
            elif isinstance(event, FileRenamed) and state.renamed is not None and not state.renamed.done():
                state.renamed.set_result(event.error)
            state.changed.set()

    async def _until_complete(
        self, entry: ShardEntry, state: _Fetch, peers: Sequence[tuple[str, int]], timeout: float
    ) -> None:
        key = entry.info_hash
        last_done, last_progress, last_kick = -1, time.monotonic(), -float("inf")
        last_lookup = time.monotonic()
        while True:
            if state.error is not None:
                raise ShardError(f"shard {entry.shard_id}: cannot write it: {state.error}", shard_id=entry.shard_id)
            status = self.engine.status(key)
            # every piece passed its hash (total_wanted_done also counts blocks of pieces not checked yet)
            if status.is_seeding or (status.pieces and all(status.pieces)):
                return
            now = time.monotonic()
            # progress is pieces that passed their hash: a peer sending bad data again and again makes none
            done = sum(status.pieces)
            if done > last_done or not state.checked:  # checking a big part file is not a stall
                last_done, last_progress = done, now
            state.seen_peers = max(state.seen_peers, status.num_peers)
            if state.checked and done > len(state.passed):  # pieces found in a part file at the check
                state.passed.update(i for i, ok in enumerate(status.pieces) if ok)
                state.new_pieces.set()
            if state.checked and status.num_peers == 0 and now - last_kick >= _KICK_EVERY:
                last_kick = now
                if self.trackers:
                    self.engine.reannounce(key)
                for host, port in peers:
                    self.engine.connect_peer(key, host, port)
                if self.engine.dht and now - last_lookup >= _DHT_LOOKUP_EVERY:
                    last_lookup = now
                    self.engine.announce_dht(key)
            if now - last_progress >= timeout:
                raise self._no_source(entry, state, status, peers, timeout)
            state.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(state.changed.wait(), _STEP)

    def _no_source(
        self, entry: ShardEntry, state: _Fetch, status: TorrentStatus, peers: Sequence[tuple[str, int]], timeout: float
    ) -> ShardError:
        asked = []
        if self.trackers:
            asked.append("tracker " + ", ".join(self.trackers))
        if peers:
            asked.append("peers " + ", ".join(f"{h}:{p}" for h, p in peers))
        if self.engine.dht:
            asked.append("the DHT")
        where = "; ".join(asked) or "nobody: this node has no tracker and no peer was given"
        name = f"shard {entry.shard_id} ({entry.filename})"
        hint = "start a node that holds it, or pass peers (LOAD_SHARD params.peers, --peer)"
        if state.banned:
            return ShardError(
                f"{name}: no good source: {len(state.failed_pieces)} piece(s) failed their hash check "
                f"({state.hash_failures} time(s)) and the peer(s) that sent them were banned "
                f"({', '.join(state.banned)}); no other peer sent the missing pieces within {timeout:.0f} s",
                shard_id=entry.shard_id,
                hint="the banned peers hold a corrupt copy: remove it there (their files no longer match the "
                "manifest) or start a node with a good one",
            )
        if status.total_wanted_done == 0 and state.seen_peers == 0:
            return ShardError(
                f"no peer has {name}, info-hash {entry.info_hash}: none found within {timeout:.0f} s (asked {where})",
                shard_id=entry.shard_id,
                hint=hint,
            )
        return ShardError(
            f"{name}: no progress for {timeout:.0f} s at {status.total_wanted_done} of {status.total_wanted} bytes "
            f"({status.num_peers} peer(s) connected, none sending the missing pieces; asked {where})",
            shard_id=entry.shard_id,
            hint=hint,
        )
