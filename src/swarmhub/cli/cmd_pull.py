"""``swarmhub pull``: a release from the swarm (the origin only for what no peer has) into the HF cache."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from swarmhub.cli.args import add_filter_options, parse_address, split_repo_revision, torrent_source
from swarmhub.cli.engineopts import add_engine_options, disk_io_wanted, engine_from_args, until_signal
from swarmhub.cli.output import human_size, print_json
from swarmhub.errors import (
    SwarmhubError,
    UsageError,
)
from swarmhub.hub.repo import parse_repo_type
from swarmhub.node.client import NodeClient
from swarmhub.settings import Settings, check_endpoint

if TYPE_CHECKING:
    from collections.abc import Callable

    from swarmhub.bt.metainfo import Torrent
    from swarmhub.node.pull import PullProgress, PullResult
    from swarmhub.node.sources import RangeSource

__all__ = ["register", "run"]

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
    from swarmhub.node.acquire import (
        branch_checked,
        check_release,
        fallback_source,
        magnet_torrent,
        release_parts,
        release_torrent,
        whole_torrent,
    )
    from swarmhub.node.confirmation import confirm_here
    from swarmhub.node.landing import CacheDestination, Destination, LocalDirDestination
    from swarmhub.node.parts import PartsProgress, combined
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
    given = torrent_source(args)
    try:
        if engine is not None:
            data = await magnet_torrent(engine, args.magnet, args.peer, settings.state_dir)
        else:
            data = await release_torrent(given, settings.state_dir, repo_type, repo_id, origin)
        torrent = parse_torrent(data)
        check_release(torrent, repo_type, repo_id, args.revision)
        assert torrent.repo is not None
        parts = await release_parts(given, settings.state_dir, engine, torrent, data)
        ref, warning = await branch_checked(origin, torrent, args.revision)
        if warning:
            log.warning("%s", warning)
        bar = _Bar(repo_id, enabled=sys.stderr.isatty() and not (args.json or args.no_progress))
        progress = PartsProgress([t for t, _ in parts], args.include, args.exclude, bar.update)
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
        await confirm_here(
            settings.state_dir, settings.token, [t for t, _ in parts], None if args.no_origin else endpoint
        )
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
                source = fallback_source(settings, part, origin, endpoint_named=bool(args.endpoint))
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
                    part_data = await whole_torrent(engine, result.key, part_data, result.path)
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
        _report(args, combined(results), torrent, torrent_path, len(parts))
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
