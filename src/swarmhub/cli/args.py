"""Argument parsing helpers shared by commands: sizes, repo@revision, common options."""

from __future__ import annotations

import argparse
import os
import re
from typing import TYPE_CHECKING

from swarmhub.errors import UsageError
from swarmhub.hub.repo import validate_repo_id

if TYPE_CHECKING:
    from swarmhub.node.acquire import TorrentSource

__all__ = [
    "add_filter_options",
    "parse_address",
    "parse_port",
    "parse_size",
    "split_repo_revision",
    "torrent_source",
]

_UNITS = {
    "": 1,
    "k": 1 << 10,
    "kb": 1 << 10,
    "kib": 1 << 10,
    "m": 1 << 20,
    "mb": 1 << 20,
    "mib": 1 << 20,
    "g": 1 << 30,
    "gb": 1 << 30,
    "gib": 1 << 30,
}


def parse_size(text: str) -> int:
    """``4194304``, ``4M``, ``4MiB``, ``512k`` -> bytes (binary units, as piece sizes are)."""
    match = re.fullmatch(r"\s*(\d+)\s*([A-Za-z]*)\s*", text)
    if not match or match.group(2).lower() not in _UNITS:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size such as 4194304, 4M or 4MiB")
    return int(match.group(1)) * _UNITS[match.group(2).lower()]


def parse_port(text: str) -> int:
    """A TCP port for ``--port`` options; 0 lets the system pick a free one."""
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0 picks a free one)")
    return int(text)


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) for ``--peer`` and ``--listen``."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT, e.g. 127.0.0.1:6881")
    return host, int(port)


def split_repo_revision(value: str, revision: str | None) -> tuple[str, str]:
    """``org/name@rev`` -> (repo id, revision); ``--revision`` may say it instead, not both."""
    repo_id, at, inline = value.partition("@")
    if at and revision and inline != revision:
        raise UsageError(f"revision given twice ({inline!r} and --revision {revision!r})")
    return validate_repo_id(repo_id), (inline if at else revision) or "main"


ALLOW_HOST_HELP = "a Host name to answer besides the loopback ones and the bound address (repeatable)"


def add_allow_host(parser: argparse.ArgumentParser, help: str = ALLOW_HOST_HELP) -> None:
    """``--allow-host NAME`` (repeatable): the ``Host`` names a service answers beyond ``guard``'s own."""
    parser.add_argument("--allow-host", action="append", default=[], metavar="NAME", help=help)


def add_filter_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--include",
        action="append",
        metavar="GLOB",
        help="only files matching GLOB (repeatable; huggingface_hub allow_patterns semantics)",
    )
    parser.add_argument(
        "--exclude",
        action="append",
        metavar="GLOB",
        help="skip files matching GLOB (repeatable; huggingface_hub ignore_patterns semantics)",
    )


def torrent_source(args: argparse.Namespace) -> TorrentSource:
    """Where the command line says the release's torrent comes from (``--registry`` defaults to
    ``SWARMHUB_REGISTRY``)."""
    from swarmhub.node.acquire import TorrentSource

    return TorrentSource(
        torrent=args.torrent,
        magnet=getattr(args, "magnet", None),
        registry=args.registry or os.environ.get("SWARMHUB_REGISTRY"),
        revision=args.revision,
        peers=tuple(getattr(args, "peer", None) or ()),
    )
