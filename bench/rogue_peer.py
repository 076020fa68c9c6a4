"""A corrupt BitTorrent peer for the chaos benchmark: it claims every piece and serves wrong bytes.

    python bench/rogue_peer.py TORRENT --listen ADDR:PORT [--files DIR] [--mode flip|random]
                               [--tracker URL] [--announce-every S] [--connect HOST:PORT ...]

A plain wire-protocol peer (BEP 3) in asyncio, not libtorrent: libtorrent hashes what it serves, so it can
never send a bad block. It takes handshakes for the torrent's v1 info-hash and for its v2 info-hash
truncated to 20 bytes (BEP 52), answers with the same hash, reserved bytes all zero (no extension
protocol, no DHT, no fast extension), then a bitfield with every piece, then unchoke, and answers every
request (up to 128 KiB; a larger one closes the connection):

- ``--mode flip`` (the default with ``--files``): the real bytes, read from DIR/<path in the torrent> (the
  release's folder, as the origin holds it), pad files as zeros, with one byte per 16 KiB block xored with
  0xFF at a random offset. The nastiest kind: almost right, and every block differs from the true one.
- ``--mode random`` (the default without ``--files``): random bytes.

It also dials peers: every ``--connect`` address, and with ``--tracker`` every peer the tracker returns for
the v1 or the truncated v2 info-hash (it announces both, compact, ``left=0``, every ``--announce-every``
seconds); each time round it dials again those it is not connected to. BEP 52 hash requests (a client
only sends them to a peer that says it speaks v2, which this one does not) get a hash reject.

What libtorrent 2.1 does with it (hybrid torrent, piece layers in the .torrent): it dials with an encrypted
(MSE) handshake first, which this peer closes, then again in plain text with the v1 info-hash; it sends no
hash requests; it bans the peer at its first failed piece when no one else sent blocks of it. A ban holds
for one address and port: each connection this peer dials comes from a new port and gets in again.

Prints ``{"event": "ready", "port": P, "info_hashes": [v1 hex, v2 hex]}`` once listening, a stats line
to stderr every 10 s, and on SIGTERM or SIGINT ``{"event": "stats", "connections": ..., "blocks_sent":
..., "bytes_sent": ..., "peers_banned_us": ...}`` on stdout before it exits; ``peers_banned_us`` counts the
connections the remote end closed after we had sent it blocks (what a client does to a peer it bans).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import collections
import contextlib
import ipaddress
import json
import os
import random
import signal
import struct
import sys
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from swarmhub.bt.bencode import decode
from swarmhub.bt.metainfo import Torrent, parse_torrent

PROTOCOL = b"\x13BitTorrent protocol"
HANDSHAKE_SIZE = 68
BLOCK = 16 * 1024
MAX_REQUEST = 128 * 1024
KEEPALIVE_EVERY = 60.0
STATS_EVERY = 10.0

CHOKE, UNCHOKE, INTERESTED, NOT_INTERESTED, HAVE, BITFIELD, REQUEST, PIECE, CANCEL, PORT = range(10)
HASH_REQUEST, HASHES, HASH_REJECT = 21, 22, 23


def log(message: str) -> None:
    print(f"rogue_peer: {message}", file=sys.stderr, flush=True)


def say(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


# ---------------------------------------------------------------------------------------------- the torrent


@dataclass(frozen=True)
class Segment:
    offset: int  # in the v1 piece stream
    length: int
    path: str | None  # below the release's folder; None for a pad file (zeros)


@dataclass(frozen=True)
class Layout:
    """The piece stream of a torrent: its files and BEP 47 pads end to end, as libtorrent numbers pieces."""

    segments: tuple[Segment, ...]
    piece_size: int
    total: int  # pads included
    num_pieces: int

    def piece_length(self, index: int) -> int:
        return min(self.piece_size, self.total - index * self.piece_size)


def layout_of(torrent: Torrent) -> Layout:
    info = decode(torrent.info_bytes)
    assert isinstance(info, dict)
    piece = torrent.piece_size
    segments: list[Segment] = []
    offset = 0
    if torrent.format != "v2":  # v1 and hybrid: the v1 file list, pads and all, is the stream
        if b"files" not in info:  # single file: the name is the file (TorrentFile.path holds it)
            segments.append(Segment(0, torrent.files[0].size, torrent.files[0].path))
            offset = torrent.files[0].size
        else:
            real = iter(torrent.files)
            for entry in info[b"files"]:
                attr = entry.get(b"attr", b"")
                is_pad = isinstance(attr, bytes) and b"p" in attr
                length = entry[b"length"]
                segments.append(Segment(offset, length, None if is_pad else next(real).path))
                offset += length
    else:  # v2 only: every file starts on a piece boundary, as in a hybrid
        for file in torrent.files:
            segments.append(Segment(offset, file.size, file.path))
            offset += file.size
            if file.size % piece and file is not torrent.files[-1]:
                segments.append(Segment(offset, piece - file.size % piece, None))
                offset += piece - file.size % piece
    segments = [s for s in segments if s.length]
    num_pieces = -(-offset // piece)
    if num_pieces != torrent.num_pieces:
        raise SystemExit(f"rogue_peer: layout has {num_pieces} pieces, the torrent {torrent.num_pieces}")
    return Layout(tuple(segments), piece, offset, num_pieces)


class Blocks:
    """What we send for a request: real bytes with a byte flipped per 16 KiB (``folder``), or random."""

    def __init__(self, layout: Layout, folder: Path | None) -> None:
        self.layout = layout
        self.folder = folder
        self.starts = [s.offset for s in layout.segments]
        self.fds: dict[str, int] = {}
        if folder is not None:  # every file there, of the right size, before we claim to have it
            for s in layout.segments:
                if s.path is not None:
                    size = (folder / s.path).stat().st_size
                    if size != s.length:
                        raise SystemExit(f"rogue_peer: {folder / s.path} has {size} bytes, the torrent says {s.length}")

    def _fd(self, path: str) -> int:
        fd = self.fds.get(path)
        if fd is None:
            assert self.folder is not None
            fd = self.fds[path] = os.open(self.folder / path, os.O_RDONLY)
        return fd

    def real(self, start: int, length: int) -> bytearray:
        out = bytearray(length)  # zeros: pads stay as they are
        end = start + length
        i = max(0, bisect.bisect_right(self.starts, start) - 1)
        while i < len(self.layout.segments) and self.layout.segments[i].offset < end:
            s = self.layout.segments[i]
            lo, hi = max(start, s.offset), min(end, s.offset + s.length)
            if lo < hi and s.path is not None:
                data = os.pread(self._fd(s.path), hi - lo, lo - s.offset)
                out[lo - start : lo - start + len(data)] = data
            i += 1
        return out

    def block(self, index: int, begin: int, length: int) -> bytes:
        if self.folder is None:
            return random.randbytes(length)
        data = self.real(index * self.layout.piece_size + begin, length)
        for at in range(0, length, BLOCK):
            data[at + random.randrange(min(BLOCK, length - at))] ^= 0xFF
        return bytes(data)

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()


# ------------------------------------------------------------------------------------------------ the peer


@dataclass
class Stats:
    connections: int = 0  # handshakes completed, either way
    blocks_sent: int = 0
    bytes_sent: int = 0  # block payload
    peers_banned_us: int = 0
    handshakes: dict[str, int] = field(default_factory=lambda: {"v1": 0, "v2": 0})
    unknown_messages: dict[str, int] = field(default_factory=dict)  # by message id

    def as_dict(self) -> dict[str, Any]:
        return {
            "connections": self.connections,
            "blocks_sent": self.blocks_sent,
            "bytes_sent": self.bytes_sent,
            "peers_banned_us": self.peers_banned_us,
            "handshakes": self.handshakes,
            "unknown_messages": self.unknown_messages,
        }


class Closed(Exception):
    """The connection must end (a protocol violation on the remote's side, or our refusal)."""


class Rogue:
    def __init__(self, torrent: Torrent, blocks: Blocks) -> None:
        self.layout = blocks.layout
        self.blocks = blocks
        self.hashes: dict[bytes, str] = {}
        if torrent.info_hash_v1:
            self.hashes[bytes.fromhex(torrent.info_hash_v1)] = "v1"
        if torrent.info_hash_v2:
            self.hashes[bytes.fromhex(torrent.info_hash_v2)[:20]] = "v2"
        self.dial_hash = next(iter(self.hashes))  # v1 when there is one
        self.peer_id = b"-RG0001-" + random.randbytes(12)
        self.stats = Stats()
        self.dialled: set[tuple[str, int]] = set()  # outgoing connections open or being opened
        self.selves: set[tuple[str, int]] = set()  # addresses that turned out to be us
        n = self.layout.num_pieces
        bits = bytearray(b"\xff" * (n // 8))
        if n % 8:
            bits.append((0xFF << (8 - n % 8)) & 0xFF)
        self.bitfield = bytes(bits)
        self.max_message = max(len(self.bitfield) + 1, 13 + MAX_REQUEST + 64)

    def handshake(self, info_hash: bytes) -> bytes:
        return PROTOCOL + bytes(8) + info_hash + self.peer_id

    async def accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readexactly(48), 30)
            if head[:20] != PROTOCOL or head[28:48] not in self.hashes:
                return
            info_hash = head[28:48]
            writer.write(self.handshake(info_hash))
            remote = await asyncio.wait_for(reader.readexactly(20), 30)
            if remote == self.peer_id:
                return
            await self.serve(reader, writer, info_hash)
        except (OSError, asyncio.IncompleteReadError, TimeoutError, Closed):
            pass
        finally:
            writer.close()

    async def dial(self, host: str, port: int) -> None:
        address = (host, port)
        if address in self.dialled or address in self.selves:
            return
        self.dialled.add(address)
        writer: asyncio.StreamWriter | None = None
        try:
            reader, opened = await asyncio.wait_for(asyncio.open_connection(host, port), 10)
            writer = opened
            opened.write(self.handshake(self.dial_hash))
            head = await asyncio.wait_for(reader.readexactly(HANDSHAKE_SIZE), 30)
            if head[:20] != PROTOCOL or head[28:48] != self.dial_hash:
                return
            if head[48:68] == self.peer_id:
                self.selves.add(address)
                return
            await self.serve(reader, opened, self.dial_hash)
        except (OSError, asyncio.IncompleteReadError, TimeoutError, Closed):
            pass
        finally:
            self.dialled.discard(address)
            if writer is not None:
                writer.close()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, info_hash: bytes) -> None:
        """After the handshakes: bitfield, unchoke, then answer the remote until it or we hang up."""
        self.stats.connections += 1
        self.stats.handshakes[self.hashes[info_hash]] += 1
        writer.write(struct.pack(">IB", 1 + len(self.bitfield), BITFIELD) + self.bitfield)
        writer.write(struct.pack(">IB", 1, UNCHOKE))
        await writer.drain()
        queue: collections.deque[tuple[int, int, int]] = collections.deque()
        wake = asyncio.Event()
        sent = 0
        remote_closed = False

        async def send() -> None:
            nonlocal sent
            while True:
                try:
                    await asyncio.wait_for(wake.wait(), KEEPALIVE_EVERY)
                except TimeoutError:
                    writer.write(bytes(4))
                    await writer.drain()
                    continue
                wake.clear()
                while queue:
                    index, begin, length = queue.popleft()
                    data = self.blocks.block(index, begin, length)
                    writer.write(struct.pack(">IBII", 9 + length, PIECE, index, begin) + data)
                    await writer.drain()
                    sent += 1
                    self.stats.blocks_sent += 1
                    self.stats.bytes_sent += length

        sender = asyncio.create_task(send())
        try:
            while not sender.done():
                try:
                    (size,) = struct.unpack(">I", await reader.readexactly(4))
                except (asyncio.IncompleteReadError, ConnectionError):
                    remote_closed = True
                    return
                if size == 0:  # keep-alive
                    continue
                if size > self.max_message:
                    raise Closed
                try:
                    message = await reader.readexactly(size)
                except (asyncio.IncompleteReadError, ConnectionError):
                    remote_closed = True
                    return
                self.handle(message, writer, queue, wake)
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await sender
            if sender.done() and not sender.cancelled() and isinstance(sender.exception(), ConnectionError):
                remote_closed = True
            if remote_closed and sent:
                self.stats.peers_banned_us += 1

    def handle(
        self,
        message: bytes,
        writer: asyncio.StreamWriter,
        queue: collections.deque[tuple[int, int, int]],
        wake: asyncio.Event,
    ) -> None:
        kind, payload = message[0], message[1:]
        if kind == REQUEST and len(payload) == 12:
            index, begin, length = struct.unpack(">III", payload)
            if length == 0 or length > MAX_REQUEST or index >= self.layout.num_pieces:
                raise Closed
            if begin + length > self.layout.piece_length(index):
                raise Closed
            queue.append((index, begin, length))
            wake.set()
        elif kind == CANCEL and len(payload) == 12:
            with contextlib.suppress(ValueError):
                queue.remove(struct.unpack(">III", payload))
        elif kind == INTERESTED:
            writer.write(struct.pack(">IB", 1, UNCHOKE))
        elif kind in (CHOKE, UNCHOKE, NOT_INTERESTED, HAVE, BITFIELD, PIECE, PORT, HASHES, HASH_REJECT):
            pass  # a seed needs none of it
        else:
            key = str(kind)
            self.stats.unknown_messages[key] = self.stats.unknown_messages.get(key, 0) + 1
            if kind == HASH_REQUEST:  # BEP 52: we have no hashes to give
                writer.write(struct.pack(">IB", 1 + len(payload), HASH_REJECT) + payload)


# --------------------------------------------------------------------------------------------- the tracker

NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def announce(url: str, info_hash: bytes, peer_id: bytes, port: int, event: str | None) -> list[tuple[str, int]]:
    """One HTTP announce (BEP 3, compact BEP 23, BEP 7 peers6); the peers it returns."""
    query = {
        "info_hash": info_hash,
        "peer_id": peer_id,
        "port": str(port),
        "uploaded": "0",
        "downloaded": "0",
        "left": "0",
        "compact": "1",
        "numwant": "200",
    }
    if event:
        query["event"] = event
    full = url + ("&" if "?" in url else "?") + urllib.parse.urlencode(query)
    with NO_PROXY.open(full, timeout=10) as response:
        reply = decode(response.read())
    if not isinstance(reply, dict):
        raise ValueError("the answer is not a dictionary")
    if b"failure reason" in reply:
        raise ValueError(reply[b"failure reason"].decode(errors="replace"))
    peers: list[tuple[str, int]] = []
    raw = reply.get(b"peers", b"")
    if isinstance(raw, bytes):
        for i in range(0, len(raw) - 5, 6):
            peers.append((str(ipaddress.IPv4Address(raw[i : i + 4])), int.from_bytes(raw[i + 4 : i + 6], "big")))
    elif isinstance(raw, list):
        peers += [(p[b"ip"].decode(), p[b"port"]) for p in raw if isinstance(p, dict)]
    raw6 = reply.get(b"peers6", b"")
    if isinstance(raw6, bytes):
        for i in range(0, len(raw6) - 17, 18):
            peers.append((str(ipaddress.IPv6Address(raw6[i : i + 16])), int.from_bytes(raw6[i + 16 : i + 18], "big")))
    return peers


async def dial_loop(rogue: Rogue, args: argparse.Namespace, me: tuple[str, int]) -> None:
    """Every ``--announce-every`` seconds: announce, then dial every peer known and not connected."""
    started: set[bytes] = set()
    tasks: set[asyncio.Task[None]] = set()
    while True:
        targets = list(args.connect)
        if args.tracker:
            for info_hash in rogue.hashes:
                event = None if info_hash in started else "started"
                try:
                    got = await asyncio.to_thread(announce, args.tracker, info_hash, rogue.peer_id, me[1], event)
                except Exception as exc:
                    log(f"announce to {args.tracker} failed: {exc}")
                    continue
                started.add(info_hash)
                targets += got
        local = {me[0], "127.0.0.1", "::1", "0.0.0.0", "::"}
        for host, port in dict.fromkeys(targets):
            if port == me[1] and host in local:
                continue
            task = asyncio.create_task(rogue.dial(host, port))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.sleep(args.announce_every)


async def stats_loop(rogue: Rogue) -> None:
    while True:
        await asyncio.sleep(STATS_EVERY)
        log(json.dumps({"t": round(time.monotonic(), 1), **rogue.stats.as_dict()}))


def address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


async def run(args: argparse.Namespace) -> int:
    torrent = parse_torrent(args.torrent.read_bytes())
    mode = args.mode or ("flip" if args.files else "random")
    if mode == "flip" and args.files is None:
        raise SystemExit("rogue_peer: --mode flip needs --files DIR")
    blocks = Blocks(layout_of(torrent), args.files if mode == "flip" else None)
    rogue = Rogue(torrent, blocks)
    host, port = args.listen
    server = await asyncio.start_server(rogue.accept, host, port)
    port = server.sockets[0].getsockname()[1]
    hashes = [h for h in (torrent.info_hash_v1, torrent.info_hash_v2) if h]
    say("ready", port=port, info_hashes=hashes, mode=mode, pieces=blocks.layout.num_pieces)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    background = [asyncio.create_task(dial_loop(rogue, args, (host, port))), asyncio.create_task(stats_loop(rogue))]
    await stop.wait()
    say("stats", **rogue.stats.as_dict())
    for task in background:
        task.cancel()
    server.close()
    blocks.close()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("torrent", type=Path, metavar="TORRENT")
    parser.add_argument("--listen", type=address, required=True, help="ADDR:PORT (port 0: any)")
    parser.add_argument("--files", type=Path, help="the release's folder: DIR/<path in the torrent>")
    parser.add_argument("--mode", choices=("flip", "random"), help="default: flip with --files, else random")
    parser.add_argument("--tracker", help="HTTP announce URL")
    parser.add_argument("--announce-every", type=float, default=5.0, metavar="S")
    parser.add_argument("--connect", type=address, action="append", default=[], metavar="HOST:PORT")
    args = parser.parse_args()
    code = asyncio.run(run(args))
    sys.stdout.flush()
    os._exit(code)  # the announce thread may still be waiting on its socket


if __name__ == "__main__":
    sys.exit(main())
