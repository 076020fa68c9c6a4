"""A release's torrents, as the user named them: a file, a magnet, a registry, the node's store; checked.

``TorrentSource`` says where (the command line fills it in; nothing below ``cli/`` sees its arguments).
``release_torrent`` gives the torrent of the release (part 0 of one in parts), ``release_parts`` every part
of it in order (``bt.metainfo.check_parts``), ``check_release`` that it is the repo and commit asked for,
``branch_checked`` which ref the origin confirms may be written, ``fallback_source`` what serves the pieces no
peer has, and ``whole_torrent`` a magnet pull's torrent with the v2 piece layers seeding needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from swarmhub.errors import OriginError, OriginUnavailable, RepoNotFound, RevisionNotFound, SwarmhubError, UsageError
from swarmhub.hub.repo import RepoType, is_commit_prefix

if TYPE_CHECKING:
    from swarmhub.bt.metainfo import Torrent
    from swarmhub.engine.session import Engine
    from swarmhub.node.sources import RangeSource
    from swarmhub.origin.client import OriginClient
    from swarmhub.settings import Settings

__all__ = [
    "TorrentSource",
    "branch_checked",
    "check_release",
    "fallback_source",
    "magnet_torrent",
    "release_parts",
    "release_torrent",
    "whole_torrent",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TorrentSource:
    """Where the release's torrent comes from: ``torrent`` (a file, its parts beside it), ``magnet`` (from
    ``peers``), ``registry`` (a URL), else the stored torrents; ``revision`` narrows (a commit or its prefix)
    or names a branch or tag to resolve."""

    torrent: Path | None = None
    magnet: str | None = None
    registry: str | None = None
    revision: str | None = None
    peers: Sequence[tuple[str, int]] = ()


async def release_torrent(
    source: TorrentSource, state_dir: Path, repo_type: RepoType, repo_id: str, origin: OriginClient | None
) -> bytes:
    """The torrent the user named: ``source.torrent``, else the registry's, else the newest stored one of that
    release (``source.revision`` narrows). Not a magnet's (``magnet_torrent``: it needs an engine)."""
    if source.torrent is None and source.registry:
        return await _registry_torrent(source.registry, origin, repo_type, repo_id, source.revision)
    return _torrent_bytes(source, state_dir, repo_type, repo_id)


def _torrent_bytes(source: TorrentSource, state_dir: Path, repo_type: RepoType, repo_id: str) -> bytes:
    from swarmhub.node.store import TorrentStore

    if source.torrent is not None:
        try:
            return bytes(source.torrent.read_bytes())
        except OSError as exc:
            raise UsageError(f"cannot read {source.torrent}: {exc.strerror or exc}") from exc
    found = TorrentStore(state_dir).find(repo_type, repo_id, source.revision)
    if not found:
        raise UsageError(
            f"no torrent known for {repo_id}" + (f"@{source.revision}" if source.revision else ""),
            hint="pass --torrent FILE or --magnet URI (torrents of pulled releases are kept in "
            f"{state_dir / 'torrents'})",
        )
    return max(found, key=lambda s: s.path.stat().st_mtime).data


async def _registry_torrent(
    url: str, origin: OriginClient | None, repo_type: RepoType, repo_id: str, revision: str | None
) -> bytes:
    """The hybrid torrent of the release the user named, from the registry: a commit (or prefix) as is; a
    branch or tag resolved by the origin first; nothing named: the newest published release."""
    from swarmhub.registry.client import RegistryClient

    registry = RegistryClient(url)
    commit: str | None = None
    if revision and is_commit_prefix(revision):
        commit = revision
    elif revision and origin is not None:
        try:
            commit = await origin.resolve_revision(repo_type, repo_id, revision)
        except OriginUnavailable as exc:
            log.warning("taking the newest published release: the origin cannot resolve %s (%s)", revision, exc)
    release = await asyncio.to_thread(registry.release, repo_type, repo_id, commit)
    if release is None:
        what = f"{repo_id}@{commit[:12]}" if commit else repo_id
        raise UsageError(
            f"the registry {url} has no release of {what}",
            hint=f"publish it (swarmhub publish {repo_id} --registry {url}) or pass --torrent FILE",
        )
    return await asyncio.to_thread(registry.torrent, repo_type, repo_id, release["commit"])


async def magnet_torrent(engine: Engine, uri: str, peers: Sequence[tuple[str, int]], state_dir: Path) -> bytes:
    """A magnet's torrent (its metadata from ``peers`` or its trackers), within 60 s."""
    from swarmhub.engine.session import MetadataReceived

    key = engine.add_magnet(uri, state_dir / "metadata")
    for host, port in peers:
        engine.connect_peer(key, host, port)
    try:
        async with asyncio.timeout(60):
            async for event in engine.events():
                if isinstance(event, MetadataReceived) and event.info_hash == key:
                    break
    except TimeoutError:
        raise UsageError(
            "no peer sent the torrent's metadata within 60 s",
            hint="check the magnet's trackers, or pass --peer HOST:PORT, or use --torrent FILE",
        ) from None
    data = engine.metadata(key)
    engine.remove(key)
    assert data is not None
    return data


async def release_parts(
    source: TorrentSource, state_dir: Path, engine: Engine | None, first: Torrent, data: bytes
) -> list[tuple[Torrent, bytes]]:
    """The torrents of the release ``first`` starts: itself alone, or every part of it (``bt.metainfo``), in
    order, found by the keys part 0 lists: beside ``source.torrent`` (where ``swarmhub create`` wrote them),
    from peers for a magnet (``engine``: the one that fetched part 0's metadata), from the registry part 0 came
    from, else among the stored torrents of the release."""
    from swarmhub.bt.metainfo import check_parts, parse_torrent
    from swarmhub.create.release import part_path
    from swarmhub.node.store import TorrentStore

    part, repo = first.part, first.repo
    if part is None or repo is None:
        return [(first, data)]
    what = f"{repo.repo_id}@{repo.commit[:12]}"
    if part.index:
        raise UsageError(
            f"this torrent is part {part.index} of the {part.count} of {what}: a pull starts from part 0, which "
            "lists the others",
            hint="pass the part swarmhub create wrote without .part-N in its name",
        )
    found: dict[str, bytes] = {}
    if engine is not None:  # a magnet's
        assert source.magnet is not None
        for key in part.others:
            found[key] = await magnet_torrent(
                engine, _part_magnet(source.magnet, key, first.format), source.peers, state_dir
            )
    elif source.torrent is not None:
        for i in range(1, part.count):
            path = part_path(source.torrent, i)
            try:
                found[str(i)] = path.read_bytes()
            except OSError as exc:
                raise UsageError(
                    f"{what} spans {part.count} torrents and part {i} is not beside {source.torrent}: cannot read "
                    f"{path} ({exc.strerror or exc})",
                    hint="keep the torrents swarmhub create wrote together",
                ) from exc
    elif source.registry:
        from swarmhub.registry.client import RegistryClient

        client = RegistryClient(source.registry)
        more = await asyncio.to_thread(client.other_parts, repo.repo_type, repo.repo_id, repo.commit, part.count)
        found = {str(i): d for i, d in enumerate(more, 1)}
    else:
        found = {s.torrent.key: s.data for s in TorrentStore(state_dir).parts(first)}
    given = [(parse_torrent(d), d) for d in found.values()]
    by_key = {t.key: (t, d) for t, d in given}
    return [(first, data) if t is first else by_key[t.key] for t in check_parts([first, *(t for t, _ in given)])]


def _part_magnet(uri: str, key: str, fmt: str) -> str:
    """The magnet of another part of the release ``uri`` names: its key, the same name, trackers, web seeds."""
    from swarmhub.bt.magnet import build_magnet, parse_magnet

    m = parse_magnet(uri)
    v1 = fmt == "v1"
    return build_magnet(key if v1 else None, None if v1 else key, m.name, m.trackers, m.webseeds)


def _has_all_piece_layers(data: bytes) -> bool:
    from swarmhub.bt.bencode import decode
    from swarmhub.bt.metainfo import parse_torrent

    torrent = parse_torrent(data)
    if torrent.format == "v1":
        return True
    meta = decode(data)
    layers = meta.get(b"piece layers", {}) if isinstance(meta, dict) else {}
    needed = {f.pieces_root for f in torrent.files if f.size > torrent.piece_size}
    return isinstance(layers, dict) and needed <= set(layers)


async def whole_torrent(engine: Engine, key: str, info_only: bytes, snapshot: Path) -> bytes:
    """After a magnet pull: the torrent with all its v2 piece layers, which seeding needs.

    libtorrent has the layers of every file it downloaded; a file it did not (one whose bytes equal another
    file's, or one already in the cache) has none there, and then the torrent is made again from the landed
    files: it must come out with the same info-hash.
    """
    from swarmhub.bt.bencode import decode, encode
    from swarmhub.bt.metainfo import parse_torrent
    from swarmhub.create.release import CreateRequest, create_release_torrent
    from swarmhub.engine.session import TorrentFileReady

    engine.request_torrent_file(key)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(30):
            async for event in engine.events():
                if isinstance(event, TorrentFileReady) and event.info_hash == key:
                    whole = decode(event.data) if event.data else None
                    if isinstance(whole, dict) and whole.get(b"info") == decode(info_only)[b"info"]:
                        data = encode({k: v for k, v in whole.items() if k != b"creation date"})
                        if _has_all_piece_layers(data):
                            return data
                    break
    torrent = parse_torrent(info_only)
    assert torrent.repo is not None
    request = CreateRequest(
        torrent.repo.repo_type,
        torrent.repo.repo_id,
        torrent.repo.commit,
        piece_size=torrent.piece_size,
        format=torrent.format,
        trackers=torrent.trackers,
        webseeds=torrent.webseeds,
        from_dir=snapshot,
    )
    with contextlib.suppress(SwarmhubError):
        remade = await create_release_torrent(request, None)
        if remade.torrent.info_bytes == torrent.info_bytes:
            return remade.data
    log.warning("kept the torrent without all its piece layers: seed it with the original .torrent (--torrent)")
    return info_only


def check_release(torrent: Torrent, repo_type: RepoType, repo_id: str, revision: str | None) -> None:
    repo = torrent.repo
    if repo is None:
        raise UsageError(f"{torrent.name} is not a swarmhub release torrent (no Hub identity in info.hf)")
    if (repo.repo_type, repo.repo_id) != (repo_type, repo_id):
        raise UsageError(
            f"the torrent is for {repo.repo_type} {repo.repo_id}, not {repo_type} {repo_id}",
            hint="pass the torrent of the repo you asked for (swarmhub inspect FILE shows what a torrent holds)",
        )
    if revision and is_commit_prefix(revision) and not repo.commit.startswith(revision):
        raise UsageError(f"the torrent is for commit {repo.commit}, not {revision}")


def fallback_source(
    settings: Settings, torrent: Torrent, origin: OriginClient | None, *, endpoint_named: bool
) -> RangeSource | None:
    """What serves the pieces no peer has: the torrent's web seed (a registry's gateway) unless an origin was
    named (``endpoint_named``: --endpoint), else the origin; nothing without an origin (--no-origin)."""
    from swarmhub.node.sources import HubSource, WebSeedSource
    from swarmhub.origin.client import OriginClient

    if origin is None or torrent.repo is None:
        return None
    if torrent.webseeds and not endpoint_named:
        base = torrent.webseeds[0]
        client = OriginClient(base, None, retries=settings.retries, connections=settings.connections)
        return WebSeedSource(client, base, torrent.name, torrent.repo)
    return HubSource(origin, torrent.repo)


async def branch_checked(
    origin: OriginClient | None, torrent: Torrent, revision: str | None
) -> tuple[str | None, str | None]:
    """(ref to write, warning): a branch or tag is recorded only when the origin confirms the torrent's commit.
    Asked for none, ``main`` is recorded when the origin says it is at the torrent's commit (so the node can
    answer ``main`` while the Hub is down); nothing is said when it is elsewhere or cannot be asked."""
    assert torrent.repo is not None
    if revision is None and origin is not None:
        try:
            main = await origin.resolve_revision(torrent.repo.repo_type, torrent.repo.repo_id, "main")
        except OriginError:
            return None, None
        return ("main" if main == torrent.repo.commit else None), None
    if not revision or is_commit_prefix(revision):
        return None, None
    if origin is None:
        return None, f"not recording refs/{revision}: no origin to confirm it points at {torrent.repo.commit[:12]}"
    try:
        commit = await origin.resolve_revision(torrent.repo.repo_type, torrent.repo.repo_id, revision)
    except (RepoNotFound, RevisionNotFound):
        raise  # the origin says there is no such revision: the user asked for something else
    except OriginError as exc:
        return None, f"not recording refs/{revision}: the origin could not confirm it ({exc})"
    if commit != torrent.repo.commit:
        raise UsageError(
            f"{torrent.repo.repo_id}@{revision} is now {commit[:12]}, the torrent is for {torrent.repo.commit[:12]}",
            hint=f"pull @{torrent.repo.commit} to get the torrent's release, or get the torrent of {commit[:12]}",
        )
    return revision, None
