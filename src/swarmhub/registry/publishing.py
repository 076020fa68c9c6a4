"""Publishing a release: its hybrid and classic torrents, streamed from the origin once, uploaded to a registry.

A release too big for one torrent is published as its parts (``create.release``'s docstring), hybrid and
classic, in one request.

Both torrents carry the registry's gateway as web seed (``{public}/webseed/{type}/{repo}/{commit}/``) and its
tracker, so any BitTorrent client finds peers there and falls back to the Hub through the gateway.

Publishing is redistribution: before streaming anything, the origin is asked anonymously whether anyone may
download the release (``verify.public_files``); a gated or private repo is refused there, in one line, rather
than by the registry after the whole release was streamed with the publisher's token.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from swarmhub.create.release import CreateRequest, create_hybrid_and_classic
from swarmhub.hub.repo import RepoRef, RepoType
from swarmhub.origin.client import OriginClient
from swarmhub.registry.client import RegistryClient
from swarmhub.registry.verify import public_files

__all__ = ["ByteProgress", "publish_release", "release_torrents"]


class ByteProgress(Protocol):
    """What shows the bytes streamed (the command line's bar, ``cli.output.Progress``)."""

    def start(self, total: int) -> None: ...

    def advance(self, n: int) -> None: ...

    def close(self) -> None: ...


class _Silent:
    def start(self, total: int) -> None:
        pass

    def advance(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


async def release_torrents(
    origin: OriginClient,
    repo_type: RepoType,
    repo_id: str,
    commit: str,
    *,
    public_url: str,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
    progress: Callable[[str], ByteProgress] | None = None,
    max_part_files: int | None = None,
) -> tuple[list[bytes], list[bytes]]:
    """The hybrid and the classic torrents of a release (one each, or its parts, part 0 first), streamed once,
    with the registry's web seed and tracker."""
    public_url = public_url.rstrip("/")
    request = CreateRequest(
        repo_type,
        repo_id,
        commit,
        include=include,
        exclude=exclude,
        webseeds=(f"{public_url}/webseed/{repo_type}/{repo_id}/{commit}/",),
        trackers=(f"{public_url}/announce",),
        max_part_files=max_part_files,
    )
    bar = progress(f"hybrid+v1 {repo_id}") if progress else _Silent()
    try:
        hybrid, classic = await create_hybrid_and_classic(request, origin, on_start=bar.start, on_progress=bar.advance)
    finally:
        bar.close()
    return [t.data for t in hybrid], [t.data for t in classic]


async def publish_release(
    registry: RegistryClient,
    origin: OriginClient,
    repo_type: RepoType,
    repo_id: str,
    revision: str,
    *,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
    progress: Callable[[str], ByteProgress] | None = None,
    max_part_files: int | None = None,
) -> dict[str, Any]:
    """Returns the registry's answer: the release with ``info_hash_v1``, ``info_hash_v2``, ``magnet``,
    ``torrent_url``, ``classic_torrent_url`` and ``new``."""
    info = await asyncio.to_thread(registry.info)
    commit = await origin.resolve_revision(repo_type, repo_id, revision)
    async with OriginClient(origin.endpoint, retries=origin.retries) as anonymous:
        await public_files(anonymous, RepoRef(repo_type, repo_id, commit))
    hybrid, classic = await release_torrents(
        origin,
        repo_type,
        repo_id,
        commit,
        public_url=info["public_url"],
        include=include,
        exclude=exclude,
        progress=progress,
        max_part_files=max_part_files,
    )
    return await asyncio.to_thread(registry.publish, hybrid[0], classic[0], hybrid[1:], classic[1:])
