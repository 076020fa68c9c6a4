"""``swarmhub node run``: the node daemon; ``swarmhub status``: what the node on this machine holds and does."""

from __future__ import annotations

import argparse
from pathlib import Path
from urllib.parse import urlsplit

from swarmhub.cli.args import add_allow_host, parse_address
from swarmhub.cli.engineopts import add_engine_options, engine_params
from swarmhub.cli.output import human_size, print_json
from swarmhub.errors import ConfigError, SwarmhubError
from swarmhub.node.client import NodeClient
from swarmhub.settings import Settings, check_endpoint

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    node = sub.add_parser(
        "node",
        help="run the node daemon (Hub-compatible endpoint for HF_ENDPOINT, seeding, pulls)",
        description="One long-running process per machine: it seeds what the HF cache holds and serves a "
        "Hub-compatible endpoint on 127.0.0.1, so unmodified programs fetch from the swarm with "
        "HF_ENDPOINT=http://127.0.0.1:PORT. Files stream while they download; anything the swarm does not know "
        "passes through to the upstream. GET /status and /metrics (Prometheus) on the same port.",
    )
    node_sub = node.add_subparsers(dest="node_command", metavar="COMMAND", required=True)
    run_p = node_sub.add_parser("run", help="run the node until Ctrl-C or SIGTERM")
    run_p.add_argument("--host", default="127.0.0.1", help="address of the endpoint (default: 127.0.0.1)")
    run_p.add_argument("--port", type=int, default=8480, help="port of the endpoint (default: 8480; 0: any free)")
    add_allow_host(
        run_p,
        "a Host name the node also answers to (it answers 127.0.0.1, localhost and [::1] only: DNS "
        "rebinding); repeatable",
    )
    run_p.add_argument("--cache-dir", type=Path, metavar="DIR", help="HF cache (default: $HF_HUB_CACHE, $HF_HOME/hub)")
    run_p.add_argument("--registry", metavar="URL", help="registry to find torrents in (default: $SWARMHUB_REGISTRY)")
    run_p.add_argument("--upstream", metavar="URL", help="the Hub or a mirror (default: $HF_ENDPOINT, huggingface.co)")
    run_p.add_argument(
        "--seed-all",
        action="store_true",
        help="also seed releases the cache got another way (huggingface_hub), when the registry has their torrent",
    )
    run_p.add_argument(
        "--peer", action="append", default=[], type=parse_address, metavar="HOST:PORT", help="a peer to connect to"
    )
    run_p.add_argument("--coordinator", metavar="URL", help="join a cluster (default: $SWARMHUB_COORDINATOR)")
    run_p.add_argument(
        "--cluster-identity",
        type=Path,
        metavar="DIR",
        help="a private cluster's node identity (swarmhub cluster join): peers over TLS, members only",
    )
    run_p.add_argument(
        "--label",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="where this node is, for a cluster: zone=..., rack=... (peers on the same rack come first)",
    )
    run_p.add_argument(
        "--origin-after",
        type=float,
        default=3.0,
        metavar="SECONDS",
        help="how long peers get before the origin serves pieces none of them sends (default: 3)",
    )
    add_engine_options(run_p, default_port=6881)
    run_p.add_argument("--json", action="store_true", help="print one JSON line when ready")
    run_p.set_defaults(func=_run)

    status = sub.add_parser("status", help="what the node on this machine holds and does")
    status.add_argument("--cache-dir", type=Path, metavar="DIR", help="HF cache of the node (default: as node run)")
    status.add_argument("--json", action="store_true", help="JSON output")
    status.set_defaults(func=_status)


def _run(args: argparse.Namespace) -> int:
    import os

    from swarmhub.node.daemon import Node
    from swarmhub.serving import run_until_interrupted

    settings = Settings.from_env().with_cache(args.cache_dir)
    upstream = check_endpoint(args.upstream, "--upstream") if args.upstream else settings.endpoint
    registry = args.registry or os.environ.get("SWARMHUB_REGISTRY") or None
    profile, listen, extra = engine_params(args)
    node = Node(
        settings,
        host=args.host,
        port=args.port,
        upstream=upstream,
        registry=registry,
        profile=profile,
        listen=listen,
        engine_settings=extra,
        peers=args.peer,
        adopt_cache=args.seed_all,
        peer_grace=args.origin_after,
        coordinator=args.coordinator or os.environ.get("SWARMHUB_COORDINATOR") or None,
        labels=_labels(args.label),
        cluster_token=os.environ.get("SWARMHUB_CLUSTER_TOKEN") or None,
        cluster_identity=args.cluster_identity,
        allow_hosts=args.allow_host,
    )
    _refuse_loop(upstream, args.host, args.port)

    def ready() -> None:
        assert node.library is not None
        info = {"url": node.url, "port": node.port, "bt_port": node.bt_port, "seeding": node.seeded}
        if args.json:
            print_json(info)
        else:
            print(
                f"node serving at {node.url} — run programs with HF_ENDPOINT={node.url}; peers on port "
                f"{node.bt_port}; seeding {node.seeded} torrent(s) from {settings.hub_cache}",
                flush=True,
            )

    run_until_interrupted(node, ready)
    return 0


def _labels(pairs: list[str]) -> dict[str, str]:
    labels = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key or not value:
            raise ConfigError(f"--label {pair!r} is not KEY=VALUE", hint="e.g. --label zone=eu1 --label rack=r12")
        labels[key] = value
    return labels


def _refuse_loop(upstream: str, host: str, port: int) -> None:
    """HF_ENDPOINT pointing at the node itself (set for programs, inherited by the node) would loop."""
    parts = urlsplit(upstream)
    if port and parts.port == port and parts.hostname in {host, "127.0.0.1", "localhost", "::1"}:
        raise ConfigError(
            f"the upstream {upstream} is this node itself",
            hint="unset HF_ENDPOINT for the node, or give the real Hub with --upstream https://huggingface.co",
        )


def _status(args: argparse.Namespace) -> int:

    settings = Settings.from_env().with_cache(args.cache_dir)
    node = NodeClient.running(settings.state_dir)
    if node is None:
        if args.json:
            print_json({"running": False, "state_dir": str(settings.state_dir)})
        else:
            print(f"no node running for {settings.hub_cache} (start one: swarmhub node run)")
        return 1
    try:
        status = node.status()
    except ValueError as exc:
        raise SwarmhubError(f"the node at {node.url} answered no JSON", hint="restart it: swarmhub node run") from exc
    if args.json:
        print_json({"running": True, **status})
        return 0
    stats = status["stats"]
    print(f"node {status['url']} (peers on port {status['bt_port']}), upstream {status['upstream']}")
    print(
        f"from peers {human_size(stats['peer_bytes'])}, from origin {human_size(stats['origin_bytes'])}, "
        f"uploaded {human_size(stats['uploaded_bytes'])}, {stats['peers']} peer(s), {stats['errors']} error(s)"
    )
    asked = status.get("hub_requests", {})
    total = sum(n for outcomes in asked.values() for n in outcomes.values())
    shown = ", ".join(
        f"{kind} " + "/".join(f"{n} {outcome}" for outcome, n in sorted(outcomes.items()))
        for kind, outcomes in sorted(asked.items())
    )
    print(
        f"Hub requests {total}"
        + (f" ({shown})" if shown else "")
        + f"; answered from the swarm: {stats.get('endpoint_swarm_answers', 0)} files, "
        f"{stats.get('endpoint_metadata_answers', 0)} listings, {stats.get('endpoint_stale_answers', 0)} stale; "
        f"access decisions {stats.get('access_recorded', 0)} asked, {stats.get('access_hits', 0)} cached hits, "
        f"{stats.get('access_refused', 0)} refused"
    )
    for r in status["releases"]:
        print(f"  {r['repo_id']}@{r['commit'][:12]}  {r['state']:8}  {r['peers']} peer(s)")
    return 0
