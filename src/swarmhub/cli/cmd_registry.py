"""``swarmhub registry serve`` and ``swarmhub registry token create NAME``."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from swarmhub.cli.args import add_allow_host, parse_port
from swarmhub.settings import Settings, check_endpoint

__all__ = ["GATEWAY_TOKEN", "register"]

GATEWAY_TOKEN = "SWARMHUB_GATEWAY_TOKEN"  # the only token the registry's gateway sends upstream


def _db_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db", type=Path, metavar="PATH", help="the registry's SQLite file (default: $SWARMHUB_HOME/registry.db)"
    )


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "registry",
        help="the registry: catalog, website, tracker, web-seed gateway (serve; token create)",
        description="The registry: one process and one SQLite file serving the JSON API, the website, the "
        "tracker and the web-seed gateway.",
    )
    commands = p.add_subparsers(dest="registry_command", metavar="SUBCOMMAND", required=True)
    serve = commands.add_parser(
        "serve",
        help="serve the registry until Ctrl-C",
        description="Serve the registry until Ctrl-C. It asks its upstream anonymously (publishes are verified "
        "against it; only public repos are published). The web-seed gateway sends a token upstream only when "
        f"{GATEWAY_TOKEN} is set, and then serves anyone what that token may read; HF_TOKEN is never used.",
    )
    _db_option(serve)
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    serve.add_argument("--port", type=parse_port, default=8470, help="port (default: 8470; 0 picks a free one)")
    serve.add_argument(
        "--upstream",
        metavar="URL",
        help="Hub-compatible origin the gateway fetches from (default: $SWARMHUB_UPSTREAM, $HF_ENDPOINT, "
        "https://huggingface.co)",
    )
    serve.add_argument(
        "--public-url",
        metavar="URL",
        help="how clients reach this registry, used in torrents' web seeds and trackers (default: http://HOST:PORT)",
    )
    serve.add_argument(
        "--follow-interval",
        type=float,
        default=600.0,
        metavar="SECONDS",
        help="how often followed repos are checked for new commits (default: 600; 0: never)",
    )
    serve.add_argument(
        "--follow-concurrency", type=int, default=2, metavar="N", help="releases published at once (default: 2)"
    )
    add_allow_host(
        serve,
        "a Host name to answer besides 127.0.0.1, localhost, [::1] and the public URL's when bound to "
        "loopback (repeatable)",
    )
    serve.add_argument("--access-log", action="store_true", help="log every request")
    serve.set_defaults(func=_serve)
    follow = commands.add_parser(
        "follow",
        help="publish every new commit of a repo, or of each repo of an org, automatically (the running "
        "registry checks them)",
        description="Record a repo (org/name) or an org (no slash) to follow: `registry serve` lists the org's "
        "repos and resolves the branch of each every --follow-interval seconds, and publishes each new commit, "
        "streamed.",
    )
    follow.add_argument("repo_id", metavar="REPO_ID|ORG", help="org/name, or an org for every repo of it")
    follow.add_argument("--branch", default="main", help="branch (or tag) to follow (default: main)")
    follow.add_argument("--repo-type", default="model", choices=["model", "dataset"])
    follow.add_argument("--json", action="store_true", help="print the follow as one JSON object")
    _db_option(follow)
    follow.set_defaults(func=_follow)
    token = commands.add_parser("token", help="publishing tokens")
    token_commands = token.add_subparsers(dest="token_command", metavar="SUBCOMMAND", required=True)
    create = token_commands.add_parser("create", help="create a token; prints it as the last line (shown once)")
    create.add_argument("name", help="who the token is for, e.g. ci-publisher")
    create.add_argument(
        "--org",
        action="append",
        default=[],
        metavar="ORG",
        help="publish repos of this org only (repeatable; default: any org)",
    )
    _db_option(create)
    create.set_defaults(func=_token_create)


def _db(args: argparse.Namespace, settings: Settings) -> Path:
    return Path(args.db) if args.db else settings.state_dir / "registry.db"


def _serve(args: argparse.Namespace) -> int:
    from swarmhub.registry.server import RegistryServer
    from swarmhub.serving import run_until_interrupted

    settings = Settings.from_env()
    upstream = check_endpoint(args.upstream, "--upstream") if args.upstream else settings.endpoint
    public = check_endpoint(args.public_url, "--public-url") if args.public_url else None
    server = RegistryServer(
        _db(args, settings),
        args.host,
        args.port,
        public_url=public,
        upstream=upstream,
        gateway_token=os.environ.get(GATEWAY_TOKEN) or None,  # never HF_TOKEN: see registry.server
        allow_hosts=args.allow_host,
        access_log=args.access_log,
        follow_interval=args.follow_interval,
        follow_concurrency=args.follow_concurrency,
    )

    def ready() -> None:
        print(f"registry serving at {server.url} (public URL {server.public_url}, database {server.db})", flush=True)
        if server.gateway_token_set:
            print(f"the gateway sends {GATEWAY_TOKEN} to {upstream}: it serves what that token may read", flush=True)

    run_until_interrupted(server, ready)
    return 0


def _follow(args: argparse.Namespace) -> int:
    from swarmhub.hub.repo import parse_repo_type, validate_repo_id
    from swarmhub.registry.api import follow_json
    from swarmhub.registry.catalog import Catalog, FollowKind

    name = validate_repo_id(args.repo_id)
    kind: FollowKind = "repo" if "/" in name else "org"  # the Hub's repo ids are org/name: a bare name is an org
    repo_type = parse_repo_type(args.repo_type)
    db = _db(args, Settings.from_env())
    catalog = Catalog(db)
    try:
        new = catalog.follow(repo_type, name, args.branch, kind=kind)
        key = (repo_type, name, args.branch)
        follow = next(f for f in catalog.follows() if (f.repo_type, f.repo_id, f.branch) == key)
    finally:
        catalog.close()
    if args.json:
        print(json.dumps({**follow_json(follow), "new": new, "db": str(db)}))
        return 0
    what = f"every {repo_type} of {name}" if kind == "org" else name
    print(f"{'following' if new else 'already following'} {what}@{args.branch} ({db})")
    return 0


def _token_create(args: argparse.Namespace) -> int:
    from swarmhub.registry.catalog import Catalog

    db = _db(args, Settings.from_env())
    catalog = Catalog(db)
    try:
        token = catalog.create_token(args.name, args.org)
    finally:
        catalog.close()
    scope = f" for repos of {', '.join(sorted({o.lower() for o in args.org}))} only" if args.org else ""
    print(f"token {args.name!r} created in {db}{scope}; publishers set SWARMHUB_TOKEN to:")
    print(token)
    return 0
