"""Entry point: ``swarmhub`` / ``python -m swarmhub``.

Each command module has ``register(subparsers)``, which adds its parser and sets ``func`` to a
``run(args) -> int``. Errors we raise on purpose become one line and an exit code; anything else is a bug
and shows a traceback only with ``--debug``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from swarmhub import __version__
from swarmhub.cli import (
    cmd_cluster,
    cmd_create,
    cmd_demo,
    cmd_inspect,
    cmd_node,
    cmd_publish,
    cmd_pull,
    cmd_registry,
    cmd_seed,
    cmd_shards,
)
from swarmhub.cli.output import error_line
from swarmhub.errors import SwarmhubError
from swarmhub.settings import describe_settings

__all__ = ["build_parser", "main"]


def _optional_commands() -> list[object]:
    try:
        from swarmhub.cli import cmd_devhub, cmd_tracker
    except ImportError:  # pragma: no cover - both are part of the package; guard for partial installs
        return []
    return [cmd_devhub, cmd_tracker]


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line with the way out, like every other error (subcommands inherit it)."""

    def error(self, message: str) -> NoReturn:
        print(f"swarmhub: error: {message} — see '{self.prog} --help'", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="swarmhub",
        description="Distribute open model weights over BitTorrent, with Hugging Face as the fallback.",
        epilog=describe_settings(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"swarmhub {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log more (-vv for debug)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of unexpected errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands = (
        cmd_demo,
        cmd_create,
        cmd_inspect,
        cmd_pull,
        cmd_seed,
        cmd_node,
        cmd_cluster,
        cmd_publish,
        cmd_registry,
        cmd_shards,
    )
    for module in (*commands, *_optional_commands()):
        module.register(sub)  # type: ignore[attr-defined]
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    stamp = "%(asctime)s.%(msecs)03d " if args.verbose else ""  # -v, -vv: when, to the millisecond
    logging.basicConfig(level=level, format=stamp + "%(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        return int(args.func(args))
    except SwarmhubError as error:
        print(error_line(error), file=sys.stderr)
        return error.exit_code
    except BrokenPipeError:  # e.g. `swarmhub inspect x --json | head`: the reader left; not an error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("swarmhub: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        if args.debug or os.environ.get("SWARMHUB_DEBUG"):
            raise
        print(
            f"swarmhub: internal error: {type(error).__name__}: {error} — rerun with --debug and report it",
            file=sys.stderr,
        )
        return 1
