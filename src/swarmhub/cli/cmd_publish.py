"""``swarmhub publish``: stream a release into its two torrents (hybrid + classic v1) and upload them."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Any

from swarmhub.cli.args import add_filter_options, split_repo_revision
from swarmhub.cli.output import Progress, print_json
from swarmhub.errors import UsageError
from swarmhub.hub.repo import parse_repo_type
from swarmhub.settings import Settings, check_endpoint

__all__ = ["register", "run"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "publish",
        help="publish a Hub release to a registry (streamed: nothing stored on disk)",
        description="Create a release's hybrid and classic v1 torrents, streamed from the origin, with the "
        "registry's web seed and tracker, and upload them. Needs SWARMHUB_TOKEN (from `swarmhub registry token "
        "create NAME` on the registry). Publishing is redistribution: only public repos are published (checked "
        "anonymously before streaming), and the registry compares the files with its upstream's. Publishing a "
        "release again changes nothing.",
    )
    p.add_argument("repo_id", metavar="REPO_ID[@REV]")
    p.add_argument("--revision", help="branch, tag or commit (default: main)")
    p.add_argument("--repo-type", default="model", choices=["model", "dataset"])
    p.add_argument("--registry", metavar="URL", help="the registry (default: $SWARMHUB_REGISTRY)")
    p.add_argument(
        "--endpoint", help="origin to stream from (default: $SWARMHUB_UPSTREAM, $HF_ENDPOINT, https://huggingface.co)"
    )
    add_filter_options(p)
    p.add_argument(
        "--max-part-files",
        type=int,
        metavar="N",
        help="publish the release as torrents of at most N files (default: cut only what one torrent cannot hold)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--no-progress", action="store_true", help="no progress bars even on a terminal")
    p.set_defaults(func=run)


async def _publish(args: argparse.Namespace, settings: Settings, registry_url: str) -> dict[str, Any]:
    from swarmhub.origin.client import OriginClient
    from swarmhub.registry.client import RegistryClient
    from swarmhub.registry.publishing import publish_release

    registry = RegistryClient(registry_url, os.environ.get("SWARMHUB_TOKEN"))
    if not registry.token:
        registry.publish(b"", b"")  # the one-line error with the way out, before streaming anything
    repo_id, revision = split_repo_revision(args.repo_id, args.revision)
    endpoint = check_endpoint(args.endpoint, "--endpoint") if args.endpoint else settings.endpoint
    quiet = args.json or args.no_progress
    async with OriginClient(
        endpoint, settings.token, retries=settings.retries, connections=settings.connections
    ) as client:
        return await publish_release(
            registry,
            client,
            parse_repo_type(args.repo_type),
            repo_id,
            revision,
            include=args.include,
            exclude=args.exclude,
            progress=lambda what: Progress(what, enabled=None if not quiet else False),
            max_part_files=args.max_part_files,
        )


def run(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    if args.max_part_files is not None and args.max_part_files < 1:
        raise UsageError(f"--max-part-files {args.max_part_files} is not a positive number of files")
    registry_url = args.registry or os.environ.get("SWARMHUB_REGISTRY")
    if not registry_url:
        raise UsageError("which registry?", hint="pass --registry URL or set SWARMHUB_REGISTRY")
    result = asyncio.run(_publish(args, settings, registry_url))
    if args.json:
        print_json({k: v for k, v in result.items() if k != "files"})
    else:
        state = "published" if result.get("new") else "already published"
        print(f"{state}: {result['repo_id']}@{result['commit'][:12]}")
        if result.get("verified"):
            print("  verified         the registry's upstream lists these files at this commit")
        else:
            why = result.get("unverified_reason") or "the registry could not compare it with its upstream"
            print(f"  unverified       {why}; a verified publish will replace it")
        print(f"  hybrid torrent   {result['torrent_url']}")
        print(f"  classic torrent  {result['classic_torrent_url']}  (Transmission, aria2)")
        if result.get("parts", 1) > 1 or result.get("classic_parts", 1) > 1:
            print(
                f"  parts            {result['parts']} hybrid, {result['classic_parts']} classic torrents "
                "(part 0's magnet or torrent leads to the others)"
            )
        print(f"  magnet           {result['magnet']}")
        sys.stdout.flush()
    return 0
