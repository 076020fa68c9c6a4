"""``swarmhub seed``: seed every release the cache holds (or list them), straight from ``blobs/``."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from swarmhub.cli.engineopts import add_engine_options, engine_from_args, until_signal
from swarmhub.cli.output import human_size, print_json
from swarmhub.errors import SwarmhubError, UsageError
from swarmhub.node.client import NodeClient
from swarmhub.settings import Settings

__all__ = ["register", "run"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "seed",
        help="seed every release in the HF cache (or --list them)",
        description="Seed the releases whose torrents swarmhub keeps (every pull stores one) from the files in "
        "the Hugging Face cache, without re-hashing them. --torrent adds a torrent of a release the cache "
        "already holds (e.g. downloaded with huggingface_hub). Runs until Ctrl-C or SIGTERM.",
    )
    p.add_argument(
        "--torrent",
        action="append",
        default=[],
        type=Path,
        metavar="FILE",
        help="also seed this torrent (kept for next time); its release must be in the cache",
    )
    p.add_argument("--cache-dir", type=Path, metavar="DIR", help="HF cache (default: $HF_HUB_CACHE, $HF_HOME/hub)")
    p.add_argument("--list", action="store_true", help="list what would be seeded, then exit")
    add_engine_options(p, default_port=6881)
    p.add_argument("--json", action="store_true", help="JSON output (one object per line while seeding)")
    p.set_defaults(func=run)


def _row(stored: Any, plan: Any) -> dict[str, Any]:
    t = stored.torrent
    return {
        "repo_id": t.repo.repo_id,
        "repo_type": t.repo.repo_type,
        "commit": t.repo.commit,
        "format": t.format,
        "info_hash_v1": t.info_hash_v1,
        "info_hash_v2": t.info_hash_v2,
        "files": plan.files_total,
        "files_present": plan.files_present,
        "bytes": plan.bytes_total,
        "bytes_present": plan.bytes_present,
        "complete": plan.complete,
        "torrent_path": str(stored.path),
    }


async def _seed(args: argparse.Namespace, settings: Settings) -> int:
    from swarmhub.bt.metainfo import parse_torrent
    from swarmhub.node.seeding import seed_plan, seed_release
    from swarmhub.node.store import TorrentStore

    store = TorrentStore(settings.state_dir)
    for path in args.torrent:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from exc
        torrent = parse_torrent(data)
        if torrent.repo is None:
            raise UsageError(f"{path} is not a swarmhub release torrent (no Hub identity in info.hf)")
        _, plan = seed_plan(torrent, data, settings.hub_cache)
        if not plan.pieces:
            raise UsageError(
                f"{torrent.repo.repo_id}@{torrent.repo.commit[:12]} is not in {settings.hub_cache}",
                hint=f"pull it first (swarmhub pull {torrent.repo.repo_id} --torrent {path}) or pass --cache-dir",
            )
        store.save(torrent, data)
    rows = []
    stored_all = store.all()
    for stored in stored_all:
        _, plan = seed_plan(stored.torrent, stored.data, settings.hub_cache)
        rows.append((stored, plan))
    if args.list:
        if args.json:
            print_json([_row(s, p) for s, p in rows])
        else:
            for s, p in rows:
                state = "complete" if p.complete else f"{p.files_present}/{p.files_total} files"
                t = s.torrent
                assert t.repo is not None
                print(f"{t.repo.repo_id}@{t.repo.commit[:12]}  {t.format:6}  {human_size(p.bytes_total):>10}  {state}")
            if not rows:
                print(f"no releases in {store.dir}")
        return 0
    node = NodeClient.running(settings.state_dir)
    if node is not None:  # it seeds the cache already; it takes the torrents just stored too
        return _seed_on_node(node, args)
    engine = engine_from_args(args)
    try:
        seeding = []
        for stored, plan in rows:
            try:
                parts = settings.state_dir / "parts"
                key = seed_release(engine, stored.torrent, stored.data, settings.hub_cache, parts)
            except SwarmhubError as exc:
                print(f"skipping {stored.path.name}: {exc}", file=sys.stderr)
                continue
            if key is not None:
                seeding.append(_row(stored, plan))
        if not seeding:
            raise UsageError(
                f"nothing to seed: no release in {settings.hub_cache} has a torrent in {store.dir}",
                hint="pull a release first, or add its torrent with --torrent FILE",
            )
        ready = {"seeding": len(seeding), "port": engine.listen_port, "releases": seeding}
        if args.json:
            print_json(ready)
        else:
            for row in seeding:
                size = human_size(row["bytes_present"])
                print(f"seeding {row['repo_id']}@{row['commit'][:12]} ({row['format']}, {size})")
            print(f"seeding {len(seeding)} torrent(s) on port {engine.listen_port} (Ctrl-C stops)")
        sys.stdout.flush()
        await until_signal()
        return 0
    finally:
        engine.close()


def run(args: argparse.Namespace) -> int:
    settings = Settings.from_env().with_cache(args.cache_dir)
    return asyncio.run(_seed(args, settings))


def _seed_on_node(node: NodeClient, args: argparse.Namespace) -> int:
    added = node.seed()
    if args.json:
        print_json({"node": node.url, "added": added})
    else:
        print(f"the node at {node.url} seeds every release in the cache ({added} torrent(s) added now)")
    return 0
