"""One release, its torrents: resolve, list, filter, plan, cut, hash (streamed or local), build.

``create_release_torrents`` is what ``swarmhub create`` calls; ``create_hybrid_and_classic`` is what publishing
calls: both torrents of a release from one pass over its bytes (the origin sends each byte once).

A release whose metadata would be more than the clients we support take from peers (``MAX_INFO_TOKENS``,
``MAX_INFO_BYTES``; for a v1 torrent, which is for every client, aria2's ``ARIA2_MAX_INFO_BYTES``) is cut, before
a byte is hashed, into parts (``bt.metainfo``'s docstring): runs of its files in torrent order, as few as keep
each part under ``PART_TOKENS`` and ``PART_BYTES`` (``PART_BYTES_V1``), with room below the limits. A release
that fits stays one torrent, as before.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from swarmhub.bt.layout import Format, TorrentPlan, auto_piece_size, plan_torrent, valid_piece_size
from swarmhub.bt.magnet import magnet_for
from swarmhub.bt.metainfo import (
    ARIA2_MAX_INFO_BYTES,
    MAX_INFO_BYTES,
    MAX_INFO_TOKENS,
    Part,
    Torrent,
    build_torrent,
    check_parts,
    info_cost,
    parse_torrent,
)
from swarmhub.create.hashing import FileDigests, PieceStream, PieceStreams
from swarmhub.create.pipeline import hash_release
from swarmhub.create.sources import LocalRelease, LocalSource, OriginSource, SourceFile, local_release
from swarmhub.errors import LocalSourceError, UsageError
from swarmhub.hub.patterns import path_selected
from swarmhub.hub.repo import RepoRef, RepoType, is_commit

if TYPE_CHECKING:
    from swarmhub.origin.client import OriginClient

__all__ = [
    "CreateRequest",
    "CreatedTorrent",
    "create_hybrid_and_classic",
    "create_release_torrent",
    "create_release_torrents",
    "part_path",
    "torrent_name",
]

log = logging.getLogger(__name__)

LOCAL_CHUNK = 4 * 1024 * 1024
ORIGIN_CHUNK = 8 * 1024 * 1024
# Bytes of chunks alive at once. Streaming needs a deeper window than local reads: the file's next chunk
# shares the link with the others in flight, and the etag chain waits for it (measured: 96 -> 128 MiB,
# 8 connections on loopback, 4.1 s -> 3.2 s for 2 GB).
LOCAL_BUDGET = 96 * 1024 * 1024
ORIGIN_BUDGET = 128 * 1024 * 1024
# What one part may hold: 80% of the limits, so a part never lands at the edge of one
PART_TOKENS = 2_000_000
PART_BYTES = 24 * 1024 * 1024
PART_BYTES_V1 = 7 * 1024 * 1024


@dataclass(frozen=True)
class CreateRequest:
    repo_type: RepoType
    repo_id: str
    revision: str = "main"
    include: Sequence[str] | None = None
    exclude: Sequence[str] | None = None
    webseeds: Sequence[str] = ()
    trackers: Sequence[str] = ()
    piece_size: int | None = None
    format: Format = "hybrid"
    from_dir: Path | None = None
    max_part_files: int | None = None  # cut into torrents of at most this many files, whatever their size


@dataclass(frozen=True)
class CreatedTorrent:
    data: bytes
    torrent: Torrent
    magnet: str
    stats: dict[str, int] = field(default_factory=dict)


def part_path(first: Path, index: int) -> Path:
    """Where ``swarmhub create`` writes part ``index`` of a release whose part 0 it wrote to ``first``, and
    where ``swarmhub pull --torrent FIRST`` looks for it: ``name.torrent`` -> ``name.part-<index>.torrent``."""
    return first if index == 0 else first.with_name(f"{first.name.removesuffix('.torrent')}.part-{index}.torrent")


def torrent_name(ref: RepoRef) -> str:
    """``org--name--<12 hex of the commit>``: one folder per release for clients that download it."""
    return f"{ref.repo_id.replace('/', '--')}--{ref.commit[:12]}"


def _piece_size(request: CreateRequest, total: int) -> int:
    if request.piece_size is None:
        return auto_piece_size(total)
    if not valid_piece_size(request.piece_size):
        raise UsageError(
            f"--piece-size {request.piece_size} is not a power of two between 16 KiB and 256 MiB",
            hint="omit --piece-size to choose automatically, or pass e.g. 4194304 (4 MiB)",
        )
    return request.piece_size


def _chunk_size(plan: TorrentPlan, target: int) -> int:
    return max(plan.piece_size, target // plan.piece_size * plan.piece_size)


async def _origin_files(request: CreateRequest, client: OriginClient) -> tuple[RepoRef, list[SourceFile]]:
    commit = await client.resolve_revision(request.repo_type, request.repo_id, request.revision)
    ref = RepoRef(request.repo_type, request.repo_id, commit)
    listed = await client.list_files(ref.repo_type, ref.repo_id, commit)
    return ref, [SourceFile(f.path, f.size, f.is_lfs, f.etag) for f in listed]


@dataclass(frozen=True)
class _Release:
    """A release's selected files and where their bytes come from: any layout of them is planned from here."""

    request: CreateRequest
    ref: RepoRef
    files: dict[str, SourceFile]  # selected, by path
    source: LocalSource | OriginSource
    target_chunk: int
    budget: int
    client: OriginClient | None

    def plan(self, fmt: Format) -> TorrentPlan:
        sizes = [(f.path, f.size) for f in self.files.values()]
        return plan_torrent(sizes, _piece_size(self.request, sum(s for _, s in sizes)), fmt)

    def _cost(self, plan: TorrentPlan, part: Part | None = None) -> tuple[int, int]:
        # a folder's etags come with hashing; their lengths are known (sha256 for LFS files, else git sha1)
        etags = [(s.etag or "0" * (64 if s.lfs else 40)) for s in (self.files[f.path] for f in plan.files)]
        return info_cost(plan, torrent_name(self.ref), self.ref, etags, part)

    def cut(self, fmt: Format) -> list[TorrentPlan]:
        """The release as one torrent when its metadata fits what peers take, else its parts (module
        docstring); all with the piece size of the whole release."""
        whole = self.plan(fmt)
        size, tokens = self._cost(whole)
        limit = ARIA2_MAX_INFO_BYTES if fmt == "v1" else MAX_INFO_BYTES
        most = self.request.max_part_files or len(whole.files)
        if tokens <= MAX_INFO_TOKENS and size <= limit and len(whole.files) <= most:
            return [whole]
        part_bytes = PART_BYTES_V1 if fmt == "v1" else PART_BYTES
        files = [(f.path, f.size) for f in whole.files]
        count = max(2, -(-tokens // PART_TOKENS), -(-size // part_bytes), -(-len(files) // most))
        while True:
            plans = [
                plan_torrent(files[i * len(files) // count : (i + 1) * len(files) // count], whole.piece_size, fmt)
                for i in range(count)
            ]
            costs = [
                self._cost(p, Part(i, count, ("0" * 64,) * (count - 1) if i == 0 else ())) for i, p in enumerate(plans)
            ]
            if all(t <= PART_TOKENS and b <= part_bytes for b, t in costs):
                break
            if count >= len(files):  # a file alone past the limits: no cut helps
                raise UsageError(f"a file of {self.ref.repo_id} alone makes more metadata than a torrent may hold")
            count += 1
        empty = next((p for p in plans if not p.total_size), None)
        if empty is not None:
            raise UsageError(
                f"part of {self.ref.repo_id} from {empty.files[0].path!r} holds only empty files: a torrent needs "
                "at least one byte",
                hint="leave the empty files out with --exclude",
            )
        log.info(
            "%s: %d files in %d %s torrents (%.1f MiB and %d tokens of metadata in one)",
            self.ref.repo_id,
            len(files),
            count,
            fmt,
            size / 2**20,
            tokens,
        )
        return plans

    async def hash_each(
        self,
        plans: Sequence[TorrentPlan],
        on_progress: Callable[[int], None] | None,
        stream: PieceStream | PieceStreams | None = None,
    ) -> list[FileDigests]:
        """Each plan's digests, one after another (each file is in one plan: every byte is read once);
        ``stream`` is fed every byte in torrent order across them."""
        try:
            return [await self._hash(plan, on_progress, stream) for plan in plans]
        finally:
            self.source.close()

    async def _hash(
        self, plan: TorrentPlan, on_progress: Callable[[int], None] | None, stream: PieceStream | PieceStreams | None
    ) -> FileDigests:
        chunk = _chunk_size(plan, self.target_chunk)
        return await hash_release(
            plan,
            self.source,
            lfs=[self.files[f.path].lfs for f in plan.files],
            expected_etags=[self.files[f.path].etag for f in plan.files],
            chunk_size=chunk,
            in_flight=max(2, self.budget // chunk),
            on_progress=on_progress,
            stream=stream,
        )

    def torrent(
        self, plan: TorrentPlan, v1_pieces: bytes, digests: FileDigests, part: Part | None = None
    ) -> CreatedTorrent:
        data = build_torrent(
            plan,
            torrent_name(self.ref),
            v1_pieces=v1_pieces,
            v2=[(v.root, v.layer) for v in digests.v2],
            repo=self.ref,
            etags=digests.etags,
            trackers=self.request.trackers,
            webseeds=self.request.webseeds,
            part=part,
        )
        torrent = parse_torrent(data)  # what we wrote must be what we accept
        client, streamed = self.client, self.request.from_dir is None
        origin_bytes = client.bytes_received if client is not None and streamed else 0
        return CreatedTorrent(data, torrent, magnet_for(torrent), {"origin_bytes": origin_bytes})

    def torrents(self, plans: Sequence[TorrentPlan], hashed: Sequence[FileDigests]) -> list[CreatedTorrent]:
        """The release's torrents, part 0 first: parts 1.. are built first, since part 0 lists their keys."""
        if len(plans) == 1:
            return [self.torrent(plans[0], hashed[0].v1_pieces, hashed[0])]
        count = len(plans)
        rest = [
            self.torrent(plan, digests.v1_pieces, digests, Part(i, count))
            for i, (plan, digests) in enumerate(zip(plans, hashed, strict=True))
            if i
        ]
        first = self.torrent(
            plans[0], hashed[0].v1_pieces, hashed[0], Part(0, count, tuple(c.torrent.key for c in rest))
        )
        made = [first, *rest]
        check_parts([c.torrent for c in made])  # what we wrote must be what we accept
        return made


async def _open_release(request: CreateRequest, client: OriginClient | None) -> _Release:
    source: LocalSource | OriginSource
    if request.from_dir is not None:
        local = local_release(request.from_dir, request.revision)
        ref, candidates = _local_ref(request, local), list(local.files)
        source, target_chunk, budget = LocalSource(request.from_dir), LOCAL_CHUNK, LOCAL_BUDGET
    elif client is not None:
        ref, candidates = await _origin_files(request, client)
        source, target_chunk, budget = OriginSource(client, ref), ORIGIN_CHUNK, ORIGIN_BUDGET
    else:
        raise UsageError("no origin to stream from")
    chosen = {f.path: f for f in candidates if path_selected(f.path, request.include, request.exclude)}
    _check_selection(request, chosen)
    return _Release(request, ref, chosen, source, target_chunk, budget, client)


def _check_selection(request: CreateRequest, chosen: dict[str, SourceFile]) -> None:
    if not chosen:
        raise UsageError(
            f"no files of {request.repo_id} match the include/exclude patterns",
            hint="check --include/--exclude (they match whole paths, as huggingface_hub's allow_patterns)",
        )
    if not any(f.size for f in chosen.values()):
        raise UsageError(
            f"every selected file of {request.repo_id} is empty: a torrent needs at least one byte",
            hint="select some non-empty files with --include/--exclude",
        )


async def create_release_torrents(
    request: CreateRequest,
    client: OriginClient | None,
    *,
    on_start: Callable[[int], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> list[CreatedTorrent]:
    """The torrents of a release: one, or its parts with part 0 first (module docstring). ``client`` is needed
    unless ``from_dir`` says everything."""
    release = await _open_release(request, client)
    plans = release.cut(request.format)
    if on_start is not None:
        on_start(sum(p.total_size for p in plans))
    return release.torrents(plans, await release.hash_each(plans, on_progress))


async def create_release_torrent(
    request: CreateRequest,
    client: OriginClient | None,
    *,
    on_start: Callable[[int], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> CreatedTorrent:
    """The one torrent of a release; a ``UsageError`` for a release that needs several."""
    release = await _open_release(request, client)
    plans = release.cut(request.format)
    if len(plans) > 1:
        raise _too_big(release.ref, len(plans), request.format)
    if on_start is not None:
        on_start(plans[0].total_size)
    (digests,) = await release.hash_each(plans, on_progress)
    return release.torrent(plans[0], digests.v1_pieces, digests)


def _too_big(ref: RepoRef, parts: int, fmt: Format) -> UsageError:
    return UsageError(
        f"{ref.repo_id}@{ref.commit[:12]} needs {parts} {fmt} torrents: its metadata is more than the clients we "
        "support take from peers in one",
        hint="make its parts with swarmhub create, and pull them with swarmhub pull --torrent PART0",
    )


async def create_hybrid_and_classic(
    request: CreateRequest,
    client: OriginClient | None,
    *,
    on_start: Callable[[int], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> tuple[list[CreatedTorrent], list[CreatedTorrent]]:
    """The hybrid torrents of a release and its classic v1 twins (no pads) from one pass over its bytes; each
    list is what ``create_release_torrents`` makes with that ``format`` (``request.format`` is not used): one
    torrent, or the release's parts, part 0 first (the two may be cut in different places).

    The pipeline hashes the hybrid layout's chunks; the classic layout's pieces span files, so they come from
    the same bytes fed in torrent order to ``PieceStreams`` (the classic parts' files, one after another, are
    the hybrid parts' files in the same order).
    """
    release = await _open_release(request, client)
    hybrids, classics = release.cut("hybrid"), release.cut("v1")
    if on_start is not None:
        on_start(sum(p.total_size for p in hybrids))
    streams = PieceStreams(classics)
    hashed = await release.hash_each(hybrids, on_progress, streams)
    etags = {
        f.path: etag
        for plan, d in zip(hybrids, hashed, strict=True)
        for f, etag in zip(plan.files, d.etags, strict=True)
    }
    classic_digests = [
        FileDigests(tuple(etags[f.path] for f in plan.files), streams.pieces(i), ()) for i, plan in enumerate(classics)
    ]
    return release.torrents(hybrids, hashed), release.torrents(classics, classic_digests)


def _local_ref(request: CreateRequest, local: LocalRelease) -> RepoRef:
    if local.repo_id is not None and (local.repo_id, local.repo_type) != (request.repo_id, request.repo_type):
        raise UsageError(
            f"{local.root} is a snapshot of {local.repo_type} {local.repo_id}, not {request.repo_type} "
            f"{request.repo_id}",
            hint="pass the repo id and --repo-type of the snapshot",
        )
    commit = local.commit
    if commit and is_commit(request.revision) and request.revision != commit:
        raise UsageError(f"{local.root} holds commit {commit}, not {request.revision}")
    if commit is None:
        raise LocalSourceError(
            f"{local.root} does not say which commit it holds",
            hint="pass --revision with the full 40-hex commit sha, or point --from-dir at a snapshot in the HF cache",
        )
    return RepoRef(request.repo_type, request.repo_id, commit)
