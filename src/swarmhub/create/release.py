"""One release, one torrent: resolve, list, filter, plan, hash (streamed or local), build.

``create_release_torrent`` is what ``swarmhub create`` calls; ``create_hybrid_and_classic`` is what publishing
calls: both torrents of a release from one pass over its bytes (the origin sends each byte once).
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
    Torrent,
    build_torrent,
    info_cost,
    parse_torrent,
)
from swarmhub.create.hashing import FileDigests, PieceStream
from swarmhub.create.pipeline import hash_release
from swarmhub.create.sources import LocalRelease, LocalSource, OriginSource, SourceFile, local_release
from swarmhub.errors import LocalSourceError, UsageError
from swarmhub.hub.patterns import path_selected
from swarmhub.hub.repo import RepoRef, RepoType, is_commit

if TYPE_CHECKING:
    from swarmhub.origin.client import OriginClient

__all__ = ["CreateRequest", "CreatedTorrent", "create_hybrid_and_classic", "create_release_torrent", "torrent_name"]

log = logging.getLogger(__name__)

LOCAL_CHUNK = 4 * 1024 * 1024
ORIGIN_CHUNK = 8 * 1024 * 1024
# Bytes of chunks alive at once. Streaming needs a deeper window than local reads: the file's next chunk
# shares the link with the others in flight, and the etag chain waits for it (measured: 96 -> 128 MiB,
# 8 connections on loopback, 4.1 s -> 3.2 s for 2 GB).
LOCAL_BUDGET = 96 * 1024 * 1024
ORIGIN_BUDGET = 128 * 1024 * 1024


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


@dataclass(frozen=True)
class CreatedTorrent:
    data: bytes
    torrent: Torrent
    magnet: str
    stats: dict[str, int] = field(default_factory=dict)


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

    def check_size(self, plan: TorrentPlan) -> None:
        """Refuse, before a byte is hashed, a torrent the clients we support could not take from peers; warn
        when only aria2 could not."""
        # a folder's etags come with hashing; their lengths are known (sha256 for LFS files, else git sha1)
        etags = [(s.etag or "0" * (64 if s.lfs else 40)) for s in (self.files[f.path] for f in plan.files)]
        size, tokens = info_cost(plan, torrent_name(self.ref), self.ref, etags)
        if tokens > MAX_INFO_TOKENS or size > MAX_INFO_BYTES:
            raise UsageError(
                f"{len(plan.files):,} files make a {plan.format} torrent whose metadata is {size / 2**20:.1f} MiB "
                f"and {tokens:,} bencode tokens: libtorrent and qBittorrent take at most {MAX_INFO_BYTES >> 20} "
                f"MiB and {MAX_INFO_TOKENS:,} tokens from peers",
                hint="make a torrent per part of the release with --include/--exclude (e.g. --include 'data/part-00*'):"
                " one release spanning several torrents is not built yet",
            )
        if plan.format == "v1" and size > ARIA2_MAX_INFO_BYTES:
            log.warning(
                "%s: %.1f MiB of metadata; aria2 takes at most %d MiB from peers, so it can use the .torrent file "
                "but not a magnet link",
                self.ref.repo_id,
                size / 2**20,
                ARIA2_MAX_INFO_BYTES >> 20,
            )

    async def hash(
        self, plan: TorrentPlan, on_progress: Callable[[int], None] | None, stream: PieceStream | None = None
    ) -> FileDigests:
        chunk = _chunk_size(plan, self.target_chunk)
        try:
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
        finally:
            self.source.close()

    def torrent(self, plan: TorrentPlan, v1_pieces: bytes, digests: FileDigests) -> CreatedTorrent:
        data = build_torrent(
            plan,
            torrent_name(self.ref),
            v1_pieces=v1_pieces,
            v2=[(v.root, v.layer) for v in digests.v2],
            repo=self.ref,
            etags=digests.etags,
            trackers=self.request.trackers,
            webseeds=self.request.webseeds,
        )
        torrent = parse_torrent(data)  # what we wrote must be what we accept
        client, streamed = self.client, self.request.from_dir is None
        origin_bytes = client.bytes_received if client is not None and streamed else 0
        return CreatedTorrent(data, torrent, magnet_for(torrent), {"origin_bytes": origin_bytes})


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


async def create_release_torrent(
    request: CreateRequest,
    client: OriginClient | None,
    *,
    on_start: Callable[[int], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> CreatedTorrent:
    """Create the torrent of a release. ``client`` is needed unless ``from_dir`` says everything."""
    release = await _open_release(request, client)
    plan = release.plan(request.format)
    release.check_size(plan)
    if on_start is not None:
        on_start(plan.total_size)
    digests = await release.hash(plan, on_progress)
    return release.torrent(plan, digests.v1_pieces, digests)


async def create_hybrid_and_classic(
    request: CreateRequest,
    client: OriginClient | None,
    *,
    on_start: Callable[[int], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> tuple[CreatedTorrent, CreatedTorrent]:
    """The hybrid torrent of a release and its classic v1 twin (no pads) from one pass over its bytes; each
    is what ``create_release_torrent`` makes with that ``format`` (``request.format`` is not used).

    The pipeline hashes the hybrid layout's chunks; the classic layout's pieces span files, so they come from
    the same bytes fed in torrent order to a ``PieceStream``.
    """
    release = await _open_release(request, client)
    hybrid, classic = release.plan("hybrid"), release.plan("v1")
    release.check_size(hybrid)
    release.check_size(classic)
    if on_start is not None:
        on_start(hybrid.total_size)
    stream = PieceStream(classic)
    digests = await release.hash(hybrid, on_progress, stream)
    return release.torrent(hybrid, digests.v1_pieces, digests), release.torrent(classic, stream.pieces(), digests)


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
