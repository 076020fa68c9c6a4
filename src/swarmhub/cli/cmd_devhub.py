"""``swarmhub devhub serve ROOT``: serve local folders as a Hugging Face Hub-compatible origin.

Prints one line with the endpoint once both servers accept connections (scripts wait for it), then serves
until Ctrl-C. Binds 127.0.0.1 unless ``--host`` says otherwise: the dev hub has no real authentication.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from swarmhub.cli.args import parse_port
from swarmhub.errors import UsageError

if TYPE_CHECKING:  # the server stack (uvicorn, starlette) loads only when the command runs
    from swarmhub.devhub.server import DevHub

__all__ = ["register", "run"]


def _gated(text: str) -> tuple[str, str]:
    repo, eq, token = text.partition("=")
    if not eq or not repo or not token:
        raise argparse.ArgumentTypeError(f"{text!r} is not REPO=TOKEN (e.g. org/name=hf_xxx)")
    return repo, token


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "devhub",
        help="a local Hugging Face Hub-compatible origin (for tests and demos)",
        description="Serve plain folders as Hub repos, with an LFS 'CDN' on a second port and faults.",
    )
    commands = p.add_subparsers(dest="devhub_command", metavar="SUBCOMMAND", required=True)
    serve = commands.add_parser(
        "serve",
        help="serve ROOT/models/ORG/NAME and ROOT/datasets/ORG/NAME until Ctrl-C",
        description="Serve ROOT/models/ORG/NAME/... and ROOT/datasets/ORG/NAME/... as Hub repos (main).",
    )
    serve.add_argument("root", metavar="ROOT", type=Path, help="folder holding models/ and datasets/")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    serve.add_argument("--port", type=parse_port, default=0, help="origin port (default: 0, any free port)")
    serve.add_argument("--cdn-port", type=parse_port, default=0, help="LFS CDN port (default: 0, any free port)")
    serve.add_argument("--faults", type=Path, metavar="FILE", help="JSON list of fault rules to apply")
    serve.add_argument("--page-size", type=int, default=1000, help="entries per /tree page (default: 1000)")
    serve.add_argument(
        "--url-lifetime",
        type=float,
        default=3600.0,
        help="seconds a signed CDN URL stays valid (default: 3600)",
    )
    serve.add_argument(
        "--gated",
        type=_gated,
        action="append",
        default=[],
        metavar="REPO=TOKEN",
        help="require 'Authorization: Bearer TOKEN' for REPO (org/name, or datasets/org/name); repeatable",
    )
    serve.add_argument(
        "--cdn-url",
        metavar="URL",
        help="send LFS redirects to URL/lfs/<sha256> (e.g. a static server) instead of the built-in CDN",
    )
    serve.add_argument("--access-log", action="store_true", help="log every request (uvicorn access log)")
    serve.set_defaults(func=run)


def _announce(hub: DevHub) -> None:
    print(f"devhub serving {hub.root} at {hub.endpoint} (LFS CDN at {hub.cdn_endpoint})", flush=True)


def run(args: argparse.Namespace) -> int:
    from swarmhub.devhub.app import DevHubSettings
    from swarmhub.devhub.server import serve_forever

    root: Path = args.root
    if not root.is_dir():
        raise UsageError(f"{root} is not a folder", hint="create ROOT/models/ORG/NAME/ with some files in it")
    if args.page_size < 1:
        raise UsageError("--page-size must be at least 1")
    settings = DevHubSettings(
        page_size=args.page_size, url_lifetime=args.url_lifetime, gated=dict(args.gated), cdn_url=args.cdn_url
    )
    serve_forever(
        root,
        host=args.host,
        port=args.port,
        cdn_port=args.cdn_port,
        settings=settings,
        faults_file=args.faults,
        access_log=args.access_log,
        ready=_announce,
    )
    return 0
