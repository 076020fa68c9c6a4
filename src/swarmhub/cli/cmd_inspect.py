"""``swarmhub inspect``: what a .torrent or magnet holds; hostile input gets one line and exit code 2.

Everything shown comes from the input, so text output goes through ``printable``: a name, tracker or web
seed holding ESC sequences prints them as ``\\x1b[...`` instead of running them in the reader's terminal
(``parse_torrent`` already refuses such names in torrents; magnets are only split, never validated).
``--json`` needs nothing: JSON escapes control characters itself.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from swarmhub.bt.magnet import parse_magnet
from swarmhub.bt.metainfo import parse_torrent
from swarmhub.cli.output import print_json, printable
from swarmhub.cli.summary import torrent_json, torrent_text
from swarmhub.errors import UsageError

__all__ = ["register", "run"]

# A 500 GB release makes ~2 MB, a 100,000-file dataset ~42 MB; the decoder's token budget bounds the rest.
MAX_TORRENT_BYTES = 64 * 1024 * 1024


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "inspect",
        help="show what a .torrent file or magnet URI holds",
        description="Show a torrent's files, hashes, Hub identity, web seeds and trackers.",
    )
    p.add_argument("source", metavar="FILE|MAGNET", help="a .torrent file, '-' for stdin, or a magnet: URI")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.set_defaults(func=run)


def _read(source: str) -> bytes:
    if source == "-":
        data = sys.stdin.buffer.read(MAX_TORRENT_BYTES + 1)
    else:
        path = Path(source)
        try:
            with path.open("rb") as f:
                data = f.read(MAX_TORRENT_BYTES + 1)
        except OSError as exc:
            raise UsageError(f"cannot read {source}: {exc.strerror or exc}") from exc
    if len(data) > MAX_TORRENT_BYTES:
        raise UsageError(f"{source} is larger than {MAX_TORRENT_BYTES >> 20} MiB: not a torrent file")
    return data


def run(args: argparse.Namespace) -> int:
    if args.source.startswith("magnet:"):
        magnet = parse_magnet(args.source)
        if args.json:
            print_json(
                {
                    "name": magnet.name,
                    "info_hash_v1": magnet.info_hash_v1,
                    "info_hash_v2": magnet.info_hash_v2,
                    "trackers": list(magnet.trackers),
                    "webseeds": list(magnet.webseeds),
                }
            )
        else:
            lines = [f"name       {magnet.name or '(none)'}"]
            if magnet.info_hash_v1:
                lines.append(f"btih (v1)  {magnet.info_hash_v1}")
            if magnet.info_hash_v2:
                lines.append(f"btmh (v2)  {magnet.info_hash_v2}")
            lines += [f"tracker    {t}" for t in magnet.trackers]
            lines += [f"webseed    {w}" for w in magnet.webseeds]
            print("\n".join(map(printable, lines)))
        return 0
    torrent = parse_torrent(_read(args.source))
    if args.json:
        print_json(torrent_json(torrent))
    else:
        print("\n".join(map(printable, torrent_text(torrent).split("\n"))))
    return 0
