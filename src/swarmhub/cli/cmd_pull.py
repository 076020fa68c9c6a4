"""``swarmhub pull``: a release from the swarm (the origin only for what no peer has) into the HF cache."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from swarmhub.cli.args import add_filter_options, parse_address, split_repo_revision
from swarmhub.cli.engineopts import add_engine_options, disk_io_wanted, engine_from_args, until_signal
from swarmhub.cli.output import human_size, print_json
from swarmhub.errors import (
    OriginError,
    OriginUnavailable,
    RepoNotFound,
    RevisionNotFound,
    SwarmhubError,
    UsageError,
)
from swarmhub.hub.repo import RepoType, is_commit_prefix, parse_repo_type
from swarmhub.node.client import NodeClient
from swarmhub.settings import Settings, check_endpoint

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from swarmhub.bt.metainfo import Torrent
    from swarmhub.engine.session import Engine
    from swarmhub.node.pull import PullProgress, PullResult
    from swarmhub.node.sources import RangeSource
    from swarmhub.origin.client import OriginClient

__all__ = ["register", "release_torrent", "run"]

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "pull",
        help="download a release from peers (the origin only for what no peer has) into the HF cache",
        description="Download a Hub release through BitTorrent straight into the Hugging Face cache (or a "
        "--local-dir). Pieces come from peers; what no peer has comes from the origin. A file appears in the "
        "snapshot only once it is verified, so programs never load a partial file. Run it again after an "
        "interruption: it resumes.",
    )
    p.add_argument("repo_id", metavar="REPO_ID[@REV]", help="e.g. org/name, org/name@main or org/name@<commit>")
    p.add_argument("--revision", help="branch, tag or commit (default: the torrent's commit)")
    p.add_argument("--repo-type", default="model", choices=["model", "dataset"], help="default: model")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--torrent", type=Path, metavar="FILE", help="the release's .torrent")
    source.add_argument("--magnet", metavar="URI", help="the release's magnet link (metadata comes from peers)")
    source.add_argument(
        "--registry", metavar="URL", help="find the torrent in this registry (default: $SWARMHUB_REGISTRY)"
    )
    p.add_argument(
        "--endpoint",
        help="origin for pieces no peer has (default: the torrent's web seed if it has one, else "
        "$SWARMHUB_UPSTREAM, $HF_ENDPOINT, https://huggingface.co)",
    )
    p.add_argument("--no-origin", action="store_true", help="peers only: never fetch from the origin or a web seed")
    p.add_argument(
        "--origin-after",
        type=float,
        default=3.0,
        metavar="SECONDS",
        help="how long peers get before the origin serves pieces none of them has (default: 3)",
    )
    p.add_argument("--cache-dir", type=Path, metavar="DIR", help="HF cache (default: $HF_HUB_CACHE, $HF_HOME/hub)")
    p.add_argument("--local-dir", type=Path, metavar="DIR", help="a plain folder instead (huggingface_hub local_dir)")
    add_filter_options(p)
    p.add_argument(
        "--peer", action="append", default=[], type=parse_address, metavar="HOST:PORT", help="a peer to connect to"
    )
    add_engine_options(p, default_port=0)
    p.add_argument("--seed", action="store_true", help="keep seeding the release after the pull (until Ctrl-C)")
    p.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="give up after this long without progress (default: 120)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.add_argument("--no-progress", action="store_true", help="no progress bar even on a terminal")
    p.set_defaults(func=run)


# ------------------------------------------------------------------------------------------ the torrent


async def release_torrent(
    args: argparse.Namespace, settings: Settings, repo_type: RepoType, repo_id: str, origin: OriginClient | None
) -> bytes:
    """The torrent the user named: ``--torrent FILE``, else the registry's (``--registry``,
    ``SWARMHUB_REGISTRY``), else the newest stored one of that release (``args.revision`` narrows)."""
    registry = args.registry or os.environ.get("SWARMHUB_REGISTRY")
    if args.torrent is None and registry:
        return await _registry_torrent(registry, origin, repo_type, repo_id, args.revision)
    return _torrent_bytes(args, settings, repo_type, repo_id)


def _torrent_bytes(args: argparse.Namespace, settings: Settings, repo_type: RepoType, repo_id: str) -> bytes:
    from swarmhub.node.store import TorrentStore

    if args.torrent is not None:
        try:
            return bytes(args.torrent.read_bytes())
        except OSError as exc:
            raise UsageError(f"cannot read {args.torrent}: {exc.strerror or exc}") from exc
    found = TorrentStore(settings.state_dir).find(repo_type, repo_id, args.revision)
    if not found:
        raise UsageError(
            f"no torrent known for {repo_id}" + (f"@{args.revision}" if args.revision else ""),
            hint="pass --torrent FILE or --magnet URI (torrents of pulled releases are kept in "
            f"{settings.state_dir / 'torrents'})",
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


async def _magnet_torrent(engine: Engine, uri: str, peers: list[tuple[str, int]], state_dir: Path) -> bytes:
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


async def _whole_torrent(engine: Engine, key: str, info_only: bytes, snapshot: Path) -> bytes:
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


def _check_release(torrent: Torrent, repo_type: RepoType, repo_id: str, revision: str | None) -> None:
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


def _fallback_source(
    args: argparse.Namespace, settings: Settings, torrent: Torrent, origin: OriginClient | None
) -> RangeSource | None:
    """What serves the pieces no peer has: the torrent's web seed (a registry's gateway) unless --endpoint
    names an origin, else the origin; nothing with --no-origin."""
    from swarmhub.node.sources import HubSource, WebSeedSource
    from swarmhub.origin.client import OriginClient

    if origin is None or torrent.repo is None:
        return None
    if torrent.webseeds and not args.endpoint:
        base = torrent.webseeds[0]
        client = OriginClient(base, None, retries=settings.retries, connections=settings.connections)
        return WebSeedSource(client, base, torrent.name, torrent.repo)
    return HubSource(origin, torrent.repo)


async def _branch_checked(
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


# ------------------------------------------------------------------------------------------------ running


class _Bar:
    def __init__(self, repo_id: str, enabled: bool) -> None:
        self.repo_id = repo_id
        self.enabled = enabled
        self._bar: Any = None

    def update(self, p: PullProgress) -> None:
        if not self.enabled:
            return
        if self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(
                total=p.total,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=f"pull {self.repo_id}",
                file=sys.stderr,
                dynamic_ncols=True,
            )
        self._bar.total = p.total
        self._bar.update(p.done - self._bar.n)
        self._bar.set_postfix_str(
            f"{p.peers} peers, peers {human_size(p.peer_bytes)}, origin {human_size(p.origin_bytes)}", refresh=False
        )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


async def _pull(args: argparse.Namespace, settings: Settings) -> int:
    from swarmhub.bt.metainfo import parse_torrent
    from swarmhub.node.landing import CacheDestination, Destination, LocalDirDestination
    from swarmhub.node.pull import Pull
    from swarmhub.node.seeding import seed_release
    from swarmhub.node.store import TorrentStore
    from swarmhub.origin.client import OriginClient

    repo_type = parse_repo_type(args.repo_type)
    explicit = "@" in args.repo_id or args.revision is not None
    repo_id, revision = split_repo_revision(args.repo_id, args.revision)
    args.revision = revision if explicit else None
    endpoint = check_endpoint(args.endpoint, "--endpoint") if args.endpoint else settings.endpoint
    origin = (
        None
        if args.no_origin
        else OriginClient(endpoint, settings.token, retries=settings.retries, connections=settings.connections)
    )
    if args.seed:
        args.default_port = 6881  # a seeder others can be told about
    # a magnet needs the engine for its metadata; else it starts once the torrents say how many files they hold
    engine = engine_from_args(args) if args.magnet else None
    sources: list[RangeSource] = []  # what this pull opened besides the origin, closed at its end
    try:
        if engine is not None:
            data = await _magnet_torrent(engine, args.magnet, args.peer, settings.state_dir)
        else:
            data = await release_torrent(args, settings, repo_type, repo_id, origin)
        torrent = parse_torrent(data)
        _check_release(torrent, repo_type, repo_id, args.revision)
        assert torrent.repo is not None
        parts = await _release_parts(args, settings, engine, torrent, data)
        ref, warning = await _branch_checked(origin, torrent, args.revision)
        if warning:
            log.warning("%s", warning)
        bar = _Bar(repo_id, enabled=sys.stderr.isatty() and not (args.json or args.no_progress))
        progress = _Progress([t for t, _ in parts], args.include, args.exclude, bar.update)
        node = None if args.local_dir or args.seed else NodeClient.running(settings.state_dir)
        if node is not None:  # the node on this machine owns the cache: it pulls, and seeds after
            store = TorrentStore(settings.state_dir)  # the node's: it finds a release's other parts there
            kept = [store.save(t, d) for t, d in parts]
            try:
                result = await asyncio.to_thread(_pull_on_node, node, torrent, data, args, bar.update)
            finally:
                bar.close()
            CacheDestination(settings.hub_cache, torrent.repo).finish(ref)
            _report(args, result, torrent, kept[0], len(parts))
            return 0
        await _confirm(settings, [t for t, _ in parts], None if args.no_origin else endpoint)
        files = sum(len(t.files) for t, _ in parts)
        if engine is not None and engine.disk_io != disk_io_wanted(files):  # a magnet's: the metadata is in
            engine.close()
            engine = None
        if engine is None:
            engine = engine_from_args(args, files=files)
        destination: Destination = (
            LocalDirDestination(args.local_dir, torrent.repo)
            if args.local_dir
            else CacheDestination(settings.hub_cache, torrent.repo)
        )
        results: list[PullResult] = []
        pulled: list[tuple[Torrent, bytes]] = []
        try:
            for part, part_data in parts:
                source = _fallback_source(args, settings, part, origin)
                if source is not None and source.client is not origin:
                    sources.append(source)
                pull = Pull(
                    engine,
                    part,
                    part_data,
                    destination,
                    include=args.include,
                    exclude=args.exclude,
                    origin=source,
                    peers=args.peer,
                    part_file_dir=settings.state_dir / "parts",
                    peer_grace=args.origin_after,
                    stall_timeout=args.timeout,
                    on_progress=progress.of(results),
                )
                result = await pull.run()
                if args.magnet and result.key:
                    part_data = await _whole_torrent(engine, result.key, part_data, result.path)
                results.append(result)
                pulled.append((part, part_data))
        finally:
            bar.close()
        if isinstance(destination, CacheDestination):
            store = TorrentStore(settings.state_dir)
            kept = [store.save(t, d) for t, d in pulled]
            torrent_path: Path | None = kept[0]
            destination.finish(ref)
        else:
            torrent_path = None
        _report(args, _combined(results), torrent, torrent_path, len(parts))
        if args.seed:
            for (part, part_data), result in zip(pulled, results, strict=True):
                if result.key:
                    engine.remove(result.key)
                key = seed_release(engine, part, part_data, settings.hub_cache, settings.state_dir / "parts")
                if key is None:
                    raise UsageError("nothing of the release is in the cache to seed")
            print(f"seeding {repo_id}@{torrent.repo.commit[:12]} on port {engine.listen_port} (Ctrl-C stops)")
            sys.stdout.flush()
            await until_signal()
        return 0
    finally:
        if engine is not None:
            engine.close()
        if origin is not None:
            await origin.aclose()
        for source in sources:
            await source.client.aclose()


async def _release_parts(
    args: argparse.Namespace, settings: Settings, engine: Engine | None, first: Torrent, data: bytes
) -> list[tuple[Torrent, bytes]]:
    """The torrents of the release ``first`` starts: itself alone, or every part of it (``bt.metainfo``), in
    order, found by the keys part 0 lists: beside ``--torrent`` (where ``swarmhub create`` wrote them), from
    peers for a magnet, from the registry part 0 came from, else among the stored torrents of the release."""
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
    registry = args.registry or os.environ.get("SWARMHUB_REGISTRY")
    if engine is not None:  # a magnet's
        for key in part.others:
            found[key] = await _magnet_torrent(
                engine, _part_magnet(args.magnet, key, first.format), args.peer, settings.state_dir
            )
    elif args.torrent is not None:
        for i in range(1, part.count):
            path = part_path(args.torrent, i)
            try:
                found[str(i)] = path.read_bytes()
            except OSError as exc:
                raise UsageError(
                    f"{what} spans {part.count} torrents and part {i} is not beside {args.torrent}: cannot read "
                    f"{path} ({exc.strerror or exc})",
                    hint="keep the torrents swarmhub create wrote together",
                ) from exc
    elif registry:
        from swarmhub.registry.client import RegistryClient

        client = RegistryClient(registry)
        more = await asyncio.to_thread(client.other_parts, repo.repo_type, repo.repo_id, repo.commit, part.count)
        found = {str(i): d for i, d in enumerate(more, 1)}
    else:
        found = {s.torrent.key: s.data for s in TorrentStore(settings.state_dir).parts(first)}
    given = [(parse_torrent(d), d) for d in found.values()]
    by_key = {t.key: (t, d) for t, d in given}
    return [(first, data) if t is first else by_key[t.key] for t in check_parts([first, *(t for t, _ in given)])]


def _part_magnet(uri: str, key: str, fmt: str) -> str:
    """The magnet of another part of the release ``uri`` names: its key, the same name, trackers, web seeds."""
    from swarmhub.bt.magnet import build_magnet, parse_magnet

    m = parse_magnet(uri)
    v1 = fmt == "v1"
    return build_magnet(key if v1 else None, None if v1 else key, m.name, m.trackers, m.webseeds)


class _Progress:
    """One progress over the parts of a release, pulled one after another."""

    def __init__(
        self,
        parts: list[Torrent],
        include: Sequence[str] | None,
        exclude: Sequence[str] | None,
        update: Callable[[PullProgress], None],
    ) -> None:
        from swarmhub.hub.patterns import path_selected

        wanted = [f for t in parts for f in t.files if path_selected(f.path, include, exclude)]
        self.total, self.files = sum(f.size for f in wanted), len(wanted)
        self.update = update

    def of(self, before: list[PullResult]) -> Callable[[PullProgress], None]:
        """What the next part's pull reports through: its figures added to those of the parts before."""
        done, files = sum(r.bytes for r in before), sum(r.files for r in before)
        peer, origin = sum(r.peer_bytes for r in before), sum(r.origin_bytes for r in before)
        return lambda p: self.update(
            dataclasses.replace(
                p,
                done=done + p.done,
                total=self.total,
                peer_bytes=peer + p.peer_bytes,
                origin_bytes=origin + p.origin_bytes,
                files_landed=files + p.files_landed,
                files_total=self.files,
            )
        )


def _combined(results: list[PullResult]) -> PullResult:
    """One result for the parts of a release (one part: its result)."""
    return dataclasses.replace(
        results[0],
        path=results[-1].path,
        files=sum(r.files for r in results),
        files_downloaded=sum(r.files_downloaded for r in results),
        bytes=sum(r.bytes for r in results),
        peer_bytes=sum(r.peer_bytes for r in results),
        origin_bytes=sum(r.origin_bytes for r in results),
        seconds=sum(r.seconds for r in results),
        banned_peers=tuple(dict.fromkeys(b for r in results for b in r.banned_peers)),
    )


async def _confirm(settings: Settings, parts: list[Torrent], endpoint: str | None) -> None:
    """The confirmation step (``node.confirmation``) before a release lands here: the origin's tree for the
    commit must list the files of the release's torrents alike (``TorrentMismatch`` otherwise); without an
    origin to ask, the release is unconfirmed and lands as far as each file's etag checks."""
    from swarmhub.node.confirmation import Confirmations
    from swarmhub.node.pull import release_files
    from swarmhub.origin.client import OriginClient

    repo = parts[0].repo
    assert repo is not None
    client = None if endpoint is None else OriginClient(endpoint, settings.token, retries=2, timeout=10)
    try:
        files = [f for t in parts for f in release_files(t)]
        await Confirmations(settings.state_dir, client).confirm(repo, files)
    finally:
        if client is not None:
            await client.aclose()


def _pull_on_node(
    node: NodeClient,
    torrent: Torrent,
    data: bytes,
    args: argparse.Namespace,
    on_progress: Callable[[PullProgress], None],
) -> PullResult:
    """``POST /pull`` to the running node (of a release of several torrents: part 0, the others in the store):
    its progress lines drive ours; its last line is the result."""
    import time

    from swarmhub.node.pull import PullProgress, PullResult

    assert torrent.repo is not None
    started = time.monotonic()
    done = node.pull(
        data,
        args.include,
        args.exclude,
        timeout=args.timeout + 60,
        on_progress=lambda line: on_progress(PullProgress(**line)),
    )
    try:
        return PullResult(
            ref=torrent.repo,
            key="",
            path=Path(done["snapshot_path"]),
            files=done["files"],
            files_downloaded=done["files_landed"],
            bytes=done["total"],
            peer_bytes=done["peer_bytes"],
            origin_bytes=done["origin_bytes"],
            seconds=time.monotonic() - started,
            banned_peers=(),
        )
    except (KeyError, TypeError) as exc:
        raise SwarmhubError(f"the node at {node.url} answered a result without {exc}", hint="see its log") from exc


def _report(
    args: argparse.Namespace, result: PullResult, torrent: Torrent, torrent_path: Path | None, parts: int = 1
) -> None:
    if args.json:
        print_json(
            {
                "repo_id": result.ref.repo_id,
                "repo_type": result.ref.repo_type,
                "commit": result.ref.commit,
                "revision": args.revision,
                "snapshot_path": str(result.path),
                "files": result.files,
                "files_downloaded": result.files_downloaded,
                "bytes": result.bytes,
                "peer_bytes": result.peer_bytes,
                "origin_bytes": result.origin_bytes,
                "seconds": round(result.seconds, 3),
                "banned_peers": list(result.banned_peers),
                "info_hash_v1": torrent.info_hash_v1,
                "info_hash_v2": torrent.info_hash_v2,
                "torrent_path": str(torrent_path) if torrent_path else None,
                "parts": parts,
            }
        )
        sys.stdout.flush()
        return
    rate = result.bytes / result.seconds if result.seconds else 0.0
    print(
        f"{result.ref.repo_id}@{result.ref.commit[:12]}: {result.files} files, {human_size(result.bytes)} "
        f"in {result.seconds:.1f} s ({human_size(rate)}/s); from peers {human_size(result.peer_bytes)}, "
        f"from the origin {human_size(result.origin_bytes)}"
    )
    print(result.path)
    sys.stdout.flush()


def run(args: argparse.Namespace) -> int:
    settings = Settings.from_env().with_cache(args.cache_dir)
    return asyncio.run(_pull(args, settings))
