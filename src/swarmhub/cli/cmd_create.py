"""``swarmhub create``: the torrent of a release (or its parts), streamed from the origin or hashed from a folder."""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path
from typing import TYPE_CHECKING

from swarmhub.bt.layout import FORMATS
from swarmhub.cli.args import add_filter_options, parse_size, split_repo_revision
from swarmhub.cli.output import Progress, atomic_write, human_size, print_json
from swarmhub.cli.summary import torrent_json, torrent_text
from swarmhub.errors import UsageError
from swarmhub.hub.repo import parse_repo_type
from swarmhub.settings import Settings, check_endpoint

if TYPE_CHECKING:
    from swarmhub.create.release import CreatedTorrent, CreateRequest

__all__ = ["register", "run"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "create",
        help="create the torrent of a Hub release (streamed: nothing is stored on disk)",
        description="Create a BitTorrent v1+v2 hybrid (or v1/v2) torrent of a Hub release. Files are streamed "
        "from the origin and hashed on the fly, or read from --from-dir.",
    )
    p.add_argument("repo_id", metavar="REPO_ID[@REV]", help="e.g. openai-community/gpt2 or org/name@v1.0")
    p.add_argument("--revision", help="branch, tag or commit (default: main); resolved to a commit first")
    p.add_argument("--repo-type", default="model", choices=["model", "dataset"], help="default: model")
    p.add_argument(
        "--endpoint",
        help="Hub-compatible origin (default: $SWARMHUB_UPSTREAM, $HF_ENDPOINT, https://huggingface.co)",
    )
    p.add_argument(
        "--from-dir",
        type=Path,
        metavar="DIR",
        help="hash local files instead: a folder, a local_dir download, or a snapshot in the HF cache",
    )
    add_filter_options(p)
    p.add_argument("--webseed", action="append", default=[], metavar="URL", help="BEP 19 web seed (repeatable)")
    p.add_argument("--tracker", action="append", default=[], metavar="URL", help="tracker URL (repeatable)")
    p.add_argument(
        "--piece-size",
        type=parse_size,
        metavar="BYTES",
        help="power of two >= 16 KiB, e.g. 4M (default: chosen from the release size)",
    )
    p.add_argument(
        "--format",
        choices=FORMATS,
        default="hybrid",
        help="hybrid (v1+v2, default), v1 (every client reads it), v2",
    )
    p.add_argument(
        "--max-part-files",
        type=int,
        metavar="N",
        help="cut the release into torrents of at most N files (default: cut only what one torrent cannot hold)",
    )
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        metavar="FILE",
        help="where to write the .torrent (default: ./<name>.torrent; parts 1.. beside it as <name>.part-N.torrent)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.add_argument("--no-progress", action="store_true", help="no progress bar even on a terminal")
    p.set_defaults(func=run)


async def _create(
    request: CreateRequest, settings: Settings, endpoint: str | None, progress: Progress
) -> list[CreatedTorrent]:
    from swarmhub.create.release import create_release_torrents

    needs_origin = request.from_dir is None
    if needs_origin:
        from swarmhub.origin.client import OriginClient
    client = (
        OriginClient(
            endpoint or settings.endpoint,
            settings.token,
            retries=settings.retries,
            connections=settings.connections,
        )
        if needs_origin
        else None
    )
    try:
        return await create_release_torrents(request, client, on_start=progress.start, on_progress=progress.advance)
    finally:
        progress.close()
        if client is not None:
            await client.aclose()


def run(args: argparse.Namespace) -> int:
    from swarmhub.create.release import CreateRequest, part_path

    if args.max_part_files is not None and args.max_part_files < 1:
        raise UsageError(f"--max-part-files {args.max_part_files} is not a positive number of files")
    settings = Settings.from_env()
    repo_id, revision = split_repo_revision(args.repo_id, args.revision)
    request = CreateRequest(
        repo_type=parse_repo_type(args.repo_type),
        repo_id=repo_id,
        revision=revision,
        include=args.include,
        exclude=args.exclude,
        webseeds=tuple(args.webseed),
        trackers=tuple(args.tracker),
        piece_size=args.piece_size,
        format=args.format,
        from_dir=args.from_dir,
        max_part_files=args.max_part_files,
    )
    progress = Progress(f"hashing {repo_id}", enabled=None if not (args.json or args.no_progress) else False)
    started = time.monotonic()
    endpoint = check_endpoint(args.endpoint, "--endpoint") if args.endpoint else None
    made = asyncio.run(_create(request, settings, endpoint, progress))
    output: Path = args.output or Path(f"{made[0].torrent.name}.torrent")
    paths = [part_path(output, i) for i in range(len(made))]
    for created, path in zip(made, paths, strict=True):  # parts 1.. first: part 0 is what names them
        if created is not made[0]:
            atomic_write(path, created.data)
    atomic_write(output, made[0].data)
    created = made[0]
    if args.json:
        summary = torrent_json(created.torrent)
        summary.update(
            path=str(output),
            seconds=round(time.monotonic() - started, 3),
            torrent_size=len(created.data),
            origin_bytes=created.stats.get("origin_bytes", 0),
            part_paths=[str(p) for p in paths],
            release_files=sum(len(c.torrent.files) for c in made),
            release_size=sum(c.torrent.total_size for c in made),
        )
        print_json(summary)
        return 0
    for c, path in zip(made, paths, strict=True):
        print(f"wrote {path} ({len(c.data)} bytes)")
    if len(made) > 1:
        files, size = sum(len(c.torrent.files) for c in made), sum(c.torrent.total_size for c in made)
        print(
            f"the release spans {len(made)} torrents ({files} files, {human_size(size)}): keep them together; "
            f"swarmhub pull --torrent {output} reads the others beside it"
        )
    print(torrent_text(created.torrent, max_files=20))
    return 0
