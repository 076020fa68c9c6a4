"""The hashing pipeline: fetch chunks in parallel, hash them on every core, keep memory bounded.

Chunks are taken in torrent order. Each is read from its source (ranged GET or pread), then two things
happen: its piece hashes are computed in the thread pool (any order), and its bytes are fed to the file's
whole-file digest (the etag), which must see a file's chunks in order; a chain of steps per file does that.
Optionally a third: a ``PieceStream`` is fed every chunk in torrent order across files (one chain for the
whole release), which hashes the pieces of the classic v1 layout of the same files in the same pass.
A chunk's buffer is released once all are done; a semaphore caps the chunks alive at once, so memory is
O(chunk size x in-flight chunks) whatever the release's size. Disk use is zero.

No deadlock: chunks acquire the semaphore in order, so the chunk every chain waits for is already running.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Callable, Sequence
from functools import partial
from typing import Protocol

from swarmhub.bt.layout import Chunk, TorrentPlan
from swarmhub.create.hashing import FileDigests, PieceStream, PieceStreams, ReleaseHasher, hash_chunk
from swarmhub.errors import SwarmhubError
from swarmhub.workers import PriorityPool

__all__ = ["ChunkSource", "hash_release"]

Feed = Callable[[bytes | memoryview], None]  # a digest that takes bytes in order


class ChunkSource(Protocol):
    """Where a release's bytes come from."""

    async def read(self, path: str, offset: int, length: int) -> bytes | memoryview:
        """Exactly ``length`` bytes of ``path`` from ``offset``."""
        ...

    def release(self, data: bytes | memoryview) -> None:
        """The pipeline is done with ``data``; the source may reuse its buffer."""
        ...


def default_workers() -> int:
    return max(2, os.cpu_count() or 2)


async def hash_release(
    plan: TorrentPlan,
    source: ChunkSource,
    *,
    lfs: Sequence[bool],
    expected_etags: Sequence[str | None],
    chunk_size: int,
    in_flight: int,
    workers: int | None = None,
    on_progress: Callable[[int], None] | None = None,
    stream: PieceStream | PieceStreams | None = None,
) -> FileDigests:
    """Hash ``plan``'s files read from ``source``; ``stream``, if given, is also fed every byte in order."""
    hasher = ReleaseHasher(plan, lfs, expected_etags)
    loop = asyncio.get_running_loop()
    slots = asyncio.Semaphore(max(1, in_flight))
    # Chains (whole-file digests, per file; the stream, across files) are sequential and so the critical
    # path: their links are urgent jobs, taken before any piece hashing by threads as many as the cores.
    with PriorityPool(workers or default_workers(), "swarmhub-hash") as pool:

        async def fetch_and_hash(
            chunk: Chunk, data_ready: asyncio.Future[bytes | memoryview], fed: list[asyncio.Task[None]]
        ) -> None:
            try:
                data = await source.read(chunk.file.path, chunk.file_offset, chunk.length)
                data_ready.set_result(data)
                digest = await asyncio.wrap_future(pool.submit(hash_chunk, plan, chunk, data))
                for piece, joined in hasher.add_chunk(digest):
                    hasher.set_v1_piece(piece, await asyncio.wrap_future(pool.submit(_sha1, joined)))
                for step in fed:
                    await step
                source.release(data)
                if on_progress is not None:
                    on_progress(len(data))
            finally:
                slots.release()

        try:
            async with asyncio.TaskGroup() as group:
                last_step: dict[int | None, asyncio.Task[None]] = {}  # per file index; None: the stream
                for chunk in plan.chunks(chunk_size):
                    await slots.acquire()
                    data_ready: asyncio.Future[bytes | memoryview] = loop.create_future()
                    chains: dict[int | None, Feed] = {chunk.file.index: partial(hasher.feed_whole, chunk.file)}
                    if stream is not None:
                        chains[None] = stream.feed
                    for key, feed in chains.items():
                        last_step[key] = group.create_task(_in_order(pool, feed, data_ready, last_step.get(key)))
                    group.create_task(fetch_and_hash(chunk, data_ready, [last_step[key] for key in chains]))
        except BaseExceptionGroup as group_error:
            raise _first_error(group_error) from None
    return hasher.result()


async def _in_order(
    pool: PriorityPool, feed: Feed, data_ready: asyncio.Future[bytes | memoryview], previous: asyncio.Task[None] | None
) -> None:
    """One link of a chain: ``feed`` this chunk's bytes once the previous link has fed the chunk before."""
    if previous is not None:
        await previous
    data = await data_ready
    await asyncio.wrap_future(pool.submit(feed, data, urgent=True))


def _sha1(data: bytes) -> bytes:
    return hashlib.sha1(data).digest()


def _first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error to report from a failed task group: ours first, then anything else."""
    flat: list[BaseException] = []
    pending: list[BaseException] = [group]
    while pending:
        error = pending.pop(0)
        if isinstance(error, BaseExceptionGroup):
            pending.extend(error.exceptions)
        else:
            flat.append(error)
    for error in flat:
        if isinstance(error, SwarmhubError):
            return error
    return next((e for e in flat if not isinstance(e, asyncio.CancelledError)), flat[0])
