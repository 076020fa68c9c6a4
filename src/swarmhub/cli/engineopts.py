"""Options every command that runs a libtorrent session shares: where it listens, which profile, until when."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
from collections.abc import Mapping
from typing import Any

from swarmhub.cli.args import parse_address, parse_size
from swarmhub.engine.session import Engine, Profile, disk_io_for
from swarmhub.errors import ConfigError

__all__ = ["add_engine_options", "disk_io_wanted", "engine_from_args", "until_signal"]


def add_engine_options(parser: argparse.ArgumentParser, *, default_port: int) -> None:
    parser.add_argument(
        "--listen",
        type=parse_address,
        metavar="HOST:PORT",
        help=f"where peers connect (default: 127.0.0.1:{default_port}; --public: 0.0.0.0:{default_port})",
    )
    parser.add_argument(
        "--upload-limit",
        type=parse_size,
        default=0,
        metavar="BYTES",
        help="upload at most this many bytes per second to all peers, LAN included, e.g. 50M (default: no limit)",
    )
    parser.add_argument(
        "--public",
        action="store_true",
        help="join the public swarm: listen on every interface, DHT, local peer discovery, port mapping",
    )
    parser.set_defaults(default_port=default_port)


def engine_from_args(args: argparse.Namespace, *, files: int = 0) -> Engine:
    """The engine the options ask for; ``files``: how many files its torrents hold, when known, for the disk
    I/O (``engine.session.disk_io_for``) unless ``SWARMHUB_LIBTORRENT`` names one."""
    profile, listen, extra = engine_params(args)
    extra["disk_io"] = disk_io_wanted(files)
    return Engine(profile, listen=listen, extra=extra)


def disk_io_wanted(files: int) -> str:
    """The disk I/O for torrents of ``files`` files: the one ``SWARMHUB_LIBTORRENT`` names, else
    ``disk_io_for``'s."""
    return str(libtorrent_overrides(os.environ).get("disk_io", disk_io_for(files)))


def engine_params(args: argparse.Namespace) -> tuple[Profile, str, dict[str, Any]]:
    """The engine's profile, listen address and libtorrent settings the options ask for."""
    if args.listen is not None:
        host, port = args.listen
        listen = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    else:
        listen = f"{'0.0.0.0' if args.public else '127.0.0.1'}:{args.default_port}"
    extra = libtorrent_overrides(os.environ)
    if args.upload_limit:  # for every peer: libtorrent exempts local networks (and loopback) by default
        extra.update(upload_rate_limit=args.upload_limit, ignore_limits_on_local_network=False)
    return ("public" if args.public else "isolated"), listen, extra


def libtorrent_overrides(env: Mapping[str, str]) -> dict[str, Any]:
    """``SWARMHUB_LIBTORRENT``: a JSON object of libtorrent settings_pack names and values, for tuning."""
    raw = env.get("SWARMHUB_LIBTORRENT")
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        raise ConfigError(
            f"SWARMHUB_LIBTORRENT={raw!r} is not a JSON object",
            hint="give libtorrent settings as JSON, e.g. SWARMHUB_LIBTORRENT='{\"hashing_threads\": 2}'",
        )
    return value


async def until_signal() -> int:
    """Wait for SIGINT/SIGTERM; returns the signal number (for a clean shutdown)."""
    loop = asyncio.get_running_loop()
    got: asyncio.Future[int] = loop.create_future()

    def stop(sig: int) -> None:
        if not got.done():
            got.set_result(sig)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop, int(sig))
    try:
        return await got
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
