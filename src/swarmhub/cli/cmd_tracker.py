"""``swarmhub tracker serve``: a BitTorrent HTTP tracker (announce and scrape), peers kept in memory.

Prints one line with the announce URL once the tracker accepts connections (scripts wait for it), then
serves until Ctrl-C. Binds 127.0.0.1 unless ``--host`` says otherwise; bound to loopback it answers only the
``Host`` names ``127.0.0.1``, ``localhost``, ``[::1]`` and ``--allow-host`` ones (DNS rebinding).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from swarmhub.bt.tracker import DEFAULT_MAX_ADDRESS_PEERS, DEFAULT_MAX_SWARM_PEERS
from swarmhub.cli.args import add_allow_host, parse_port
from swarmhub.errors import UsageError

if TYPE_CHECKING:  # the server stack (uvicorn, starlette) loads only when the command runs
    from swarmhub.tracker.server import TrackerServer

__all__ = ["register", "run"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "tracker",
        help="a BitTorrent HTTP tracker (announce, scrape)",
        description="A BitTorrent HTTP tracker: /announce and /scrape, peers kept in memory.",
    )
    commands = p.add_subparsers(dest="tracker_command", metavar="SUBCOMMAND", required=True)
    serve = commands.add_parser(
        "serve",
        help="serve /announce and /scrape until Ctrl-C",
        description="Serve /announce and /scrape until Ctrl-C. Peers are kept in memory only.",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    serve.add_argument("--port", type=parse_port, default=6969, help="port (default: 6969; 0 picks a free one)")
    serve.add_argument(
        "--interval", type=int, default=1800, help="seconds clients wait between announces (default: 1800)"
    )
    serve.add_argument(
        "--max-swarm-peers",
        type=_cap,
        default=DEFAULT_MAX_SWARM_PEERS,
        metavar="N",
        help=f"peers one swarm holds; new ones past it are refused (default: {DEFAULT_MAX_SWARM_PEERS}; 0: no cap)",
    )
    serve.add_argument(
        "--max-address-peers",
        type=_cap,
        default=DEFAULT_MAX_ADDRESS_PEERS,
        metavar="N",
        help=f"peers of one swarm at one address, an IPv6 /64 counting as one; loopback is not counted "
        f"(default: {DEFAULT_MAX_ADDRESS_PEERS}; 0: no cap)",
    )
    serve.add_argument(
        "--publish-peer-ids",
        action="store_true",
        help="name each peer's peer id in non-compact answers (compact=0); off by default",
    )
    add_allow_host(serve)
    serve.add_argument("--access-log", action="store_true", help="log every request (uvicorn access log)")
    serve.set_defaults(func=run)


def _cap(value: str) -> int | None:
    """A cap from the command line: a whole number, 0 for none."""
    if not value.isdigit():
        raise argparse.ArgumentTypeError(f"a whole number (0: no cap), not {value!r}")
    return int(value) or None


def _announce(tracker: TrackerServer) -> None:
    print(f"tracker serving at {tracker.announce_url}", flush=True)


def run(args: argparse.Namespace) -> int:
    from swarmhub.tracker.server import serve_forever

    if args.interval < 1:
        raise UsageError("--interval must be at least 1 second")
    serve_forever(
        args.host,
        args.port,
        interval=args.interval,
        max_swarm_peers=args.max_swarm_peers,
        max_address_peers=args.max_address_peers,
        publish_peer_ids=args.publish_peer_ids,
        allow_hosts=args.allow_host,
        access_log=args.access_log,
        ready=_announce,
    )
    return 0
