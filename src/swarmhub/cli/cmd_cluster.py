"""``swarmhub coordinator serve``: a cluster's tracker and brain; ``swarmhub preheat``: nodes fetch a release now."""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from swarmhub.cli.args import add_allow_host, split_repo_revision, torrent_source
from swarmhub.cli.output import human_size, print_json
from swarmhub.errors import ClusterError, UsageError
from swarmhub.hub.repo import parse_repo_type
from swarmhub.settings import Settings, check_endpoint

if TYPE_CHECKING:
    from swarmhub.cluster.client import CoordinatorClient

__all__ = ["register"]

DEFAULT_PORT = 8490


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    coordinator = sub.add_parser(
        "coordinator",
        help="run a cluster's coordinator (tracker + origin-fetch assignment)",
        description="The cluster's tracker and brain: nodes (swarmhub node run --coordinator URL) report to it "
        "every second; for each release in flight it picks a few nodes that fetch disjoint piece sets from the "
        "origin, so the origin sends each byte once, and everyone else trades with peers (same rack first). "
        "A fetcher that dies or stalls loses its share to the others. Status at / and /cluster/status. "
        "With SWARMHUB_CLUSTER_TOKEN set, nodes, preheats and manifests must send it, and the tracker answers "
        "only nodes that reported with it; without it the coordinator listens on loopback only.",
    )
    c_sub = coordinator.add_subparsers(dest="coordinator_command", metavar="COMMAND", required=True)
    serve = c_sub.add_parser("serve", help="serve until Ctrl-C or SIGTERM")
    serve.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default: 127.0.0.1; any other needs SWARMHUB_CLUSTER_TOKEN)",
    )
    serve.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default: {DEFAULT_PORT}; 0: any)")
    serve.add_argument("--fetchers", type=int, default=3, help="nodes fetching each release from the origin (3)")
    serve.add_argument(
        "--cluster-ca",
        type=Path,
        metavar="DIR",
        help="a private cluster's CA folder (cluster init): preheats send its TLS-only torrents",
    )
    add_allow_host(serve)
    serve.add_argument(
        "--upstream",
        metavar="URL",
        help="the Hub the coordinator looks branches up on for the whole cluster, once per SWARMHUB_BRANCH_TTL "
        "(default: $HF_ENDPOINT, huggingface.co)",
    )
    serve.add_argument("--no-upstream", action="store_true", help="look no branch up: every node asks the Hub itself")
    serve.add_argument(
        "--state",
        type=Path,
        metavar="DIR",
        help="where preheats are kept, so a restarted coordinator still asks for them "
        "(default: <swarmhub home>/coordinator)",
    )
    serve.add_argument("--json", action="store_true", help="print one JSON line when ready")
    serve.set_defaults(func=_serve)

    cluster = sub.add_parser(
        "cluster",
        help="a private cluster's certificates (TLS between nodes)",
        description="Peers of a private cluster prove membership with TLS: 'cluster init' makes the cluster's CA "
        "(keep ca.key on one machine), 'cluster join NAME' issues a node's identity folder, which the node "
        "uses with --cluster-identity DIR. Its torrents then carry the CA (libtorrent SSL torrents): a peer "
        "without a certificate the CA signed gets no byte.",
    )
    cl_sub = cluster.add_subparsers(dest="cluster_command", metavar="COMMAND", required=True)
    init = cl_sub.add_parser("init", help="make the cluster's CA")
    init.add_argument("--dir", type=Path, metavar="DIR", help="where (default: <swarmhub home>/cluster-ca)")
    init.set_defaults(func=_init)
    join = cl_sub.add_parser("join", help="issue a node's identity (certificate, key) signed by the CA")
    join.add_argument("name", help="the node's name (its certificate's common name)")
    join.add_argument("--ca", type=Path, metavar="DIR", help="the CA folder (default: <swarmhub home>/cluster-ca)")
    join.add_argument("--out", type=Path, metavar="DIR", help="default: <swarmhub home>/cluster-identity")
    join.set_defaults(func=_join)

    preheat = sub.add_parser(
        "preheat",
        help="ask a cluster's nodes to fetch a release now",
        description="Send a release's torrent to the coordinator, which has the chosen nodes fetch it at their "
        "next report (the origin sends it once, the nodes share it). --wait follows each node's progress.",
    )
    preheat.add_argument("repo_id", metavar="REPO_ID[@REV]")
    preheat.add_argument("--revision", help="branch, tag or commit (or write REPO_ID@REV)")
    preheat.add_argument("--repo-type", choices=["model", "dataset"], default="model")
    preheat.add_argument("--coordinator", metavar="URL", help="default: $SWARMHUB_COORDINATOR")
    preheat.add_argument("--torrent", type=Path, metavar="FILE", help="the release's torrent")
    preheat.add_argument("--registry", metavar="URL", help="find the torrent here (default: $SWARMHUB_REGISTRY)")
    preheat.add_argument("--nodes", default="all", help="'all' (default), LABEL=VALUE (e.g. zone=a), or a count")
    preheat.add_argument("--wait", action="store_true", help="until every chosen node has the whole release")
    preheat.add_argument("--timeout", type=float, default=3600.0, help="--wait gives up after this long (3600)")
    preheat.add_argument("--json", action="store_true", help="JSON output (with --wait: one line per second)")
    preheat.set_defaults(func=_preheat)


def _serve(args: argparse.Namespace) -> int:
    from swarmhub.cluster.coordinator import CoordinatorServer
    from swarmhub.serving import run_until_interrupted

    token = os.environ.get("SWARMHUB_CLUSTER_TOKEN") or None
    ca_pem = None
    if args.cluster_ca is not None:
        try:
            ca_pem = (args.cluster_ca / "ca.pem").read_bytes()
        except OSError as exc:
            raise UsageError(f"no ca.pem in {args.cluster_ca}", hint="make it: swarmhub cluster init") from exc
    settings = Settings.from_env()
    upstream = None if args.no_upstream else check_endpoint(args.upstream or settings.endpoint, "--upstream")
    server = CoordinatorServer(
        args.host,
        args.port,
        fetchers=args.fetchers,
        token=token,
        ca_pem=ca_pem,
        allow_hosts=args.allow_host,
        upstream=upstream,
        branch_ttl=settings.branch_ttl,
        state_dir=args.state or settings.state_dir / "coordinator",
    )

    def ready() -> None:
        if args.json:
            print_json(
                {"url": server.url, "port": server.port, "announce": f"{server.url}/announce", "upstream": upstream}
            )
        else:
            print(f"coordinator at {server.url} (nodes: swarmhub node run --coordinator {server.url})", flush=True)

    run_until_interrupted(server, ready)
    return 0


def _init(args: argparse.Namespace) -> int:
    from swarmhub.cluster.pki import init_ca

    folder = args.dir or Settings.from_env().state_dir / "cluster-ca"
    init_ca(folder)
    print(f"cluster CA in {folder} (keep ca.key there); identities: swarmhub cluster join NAME --ca {folder}")
    return 0


def _join(args: argparse.Namespace) -> int:
    from swarmhub.cluster.pki import issue

    state = Settings.from_env().state_dir
    out = args.out or state / "cluster-identity"
    issue(args.ca or state / "cluster-ca", args.name, out)
    print(f"identity of {args.name} in {out}: swarmhub node run --cluster-identity {out} --coordinator URL")
    return 0


def _preheat(args: argparse.Namespace) -> int:
    from swarmhub.bt.metainfo import parse_torrent
    from swarmhub.node.acquire import release_parts, release_torrent

    url = (args.coordinator or os.environ.get("SWARMHUB_COORDINATOR") or "").rstrip("/")
    if not url:
        raise UsageError("no coordinator", hint="pass --coordinator URL or set SWARMHUB_COORDINATOR")
    settings = Settings.from_env()
    explicit = "@" in args.repo_id or args.revision is not None
    repo_id, revision = split_repo_revision(args.repo_id, args.revision)
    args.revision = revision if explicit else None
    given = torrent_source(args)
    data = asyncio.run(release_torrent(given, settings.state_dir, parse_repo_type(args.repo_type), repo_id, None))
    torrent = parse_torrent(data)
    if torrent.repo is None or torrent.repo.repo_id != repo_id:
        raise UsageError(f"the torrent is not of {repo_id}")
    parts = asyncio.run(release_parts(given, settings.state_dir, None, torrent, data))  # of a release in parts: all
    nodes: object = int(args.nodes) if args.nodes.isdigit() else args.nodes
    body = {"torrent": base64.b64encode(data).decode(), "nodes": nodes}
    if len(parts) > 1:
        body["parts"] = [base64.b64encode(d).decode() for _, d in parts[1:]]
    return asyncio.run(_ask(url, body, repo_id, sum(t.total_size for t, _ in parts), args))


async def _ask(url: str, body: dict[str, Any], repo_id: str, size: int, args: argparse.Namespace) -> int:
    from swarmhub.cluster.client import CoordinatorClient

    async with CoordinatorClient(url, token=os.environ.get("SWARMHUB_CLUSTER_TOKEN"), timeout=30.0) as client:
        asked = await client.preheat(body)
        if not args.wait:
            if args.json:
                print_json(asked)
            else:
                nodes = ", ".join(asked["nodes"])
                print(f"{len(asked['nodes'])} node(s) fetch {repo_id}@{asked['commit'][:12]}: {nodes}")
            return 0
        return await _follow(client, asked, size, args)


def _held(releases: dict[str, Any], keys: list[str]) -> dict[str, int] | None:
    """A node's pieces of the release's torrents, summed; None until it holds every one of them."""
    held = [releases.get(key) for key in keys]
    if any(h is None for h in held):
        return None
    return {"pieces": sum(h["pieces"] for h in held if h), "of": sum(h["of"] for h in held if h)}


async def _follow(client: CoordinatorClient, asked: dict[str, Any], size: int, args: argparse.Namespace) -> int:
    """Until every chosen node holds the whole release (every part of one in parts): per node pieces; at the
    end origin vs peer bytes."""
    keys, chosen = asked.get("keys", [asked["key"]]), set(asked["nodes"])
    started = time.monotonic()
    while True:
        status = await client.status()
        progress = {n["node_id"]: _held(n["releases"], keys) for n in status["nodes"] if n["node_id"] in chosen}
        gone = sorted(n["node_id"] for n in status["nodes"] if n["node_id"] in chosen and not n["alive"])
        done = [n for n, p in progress.items() if p and p["pieces"] == p["of"] and n not in gone]
        releases = [status["releases"].get(key, {}) for key in keys]
        line = {
            "seconds": round(time.monotonic() - started, 1),
            "complete": len(done),
            "nodes": len(chosen),
            "origin_bytes": sum(r.get("origin_bytes", 0) for r in releases),
            "peer_bytes": sum(r.get("peer_bytes", 0) for r in releases),
            "per_node": {n: f"{p['pieces']}/{p['of']}" if p else "waiting" for n, p in sorted(progress.items())},
            "gone": gone,
        }
        if args.json:
            print(json.dumps(line), flush=True)  # one line a second (JSON lines)
        elif sys.stderr.isatty():
            print(
                f"\r{line['complete']}/{line['nodes']} nodes complete, {line['seconds']:.0f} s", end="", file=sys.stderr
            )
        if len(done) + len(gone) == len(chosen):
            break
        if time.monotonic() - started > args.timeout:
            raise ClusterError(f"preheat not done after {args.timeout:.0f} s: {line['per_node']}")
        await asyncio.sleep(1.0)
    if not args.json:
        print(
            f"\n{len(done)} node(s) hold the release after {line['seconds']:.1f} s; the origin sent "
            f"{human_size(line['origin_bytes'])} ({line['origin_bytes'] / size:.2f}x the release)"
        )
    if gone:
        raise ClusterError(f"{len(gone)} node(s) stopped reporting before they had it: {', '.join(gone)}")
    return 0
