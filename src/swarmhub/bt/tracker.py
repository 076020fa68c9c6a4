"""An HTTP tracker without I/O: announce and scrape queries in, swarm state, bencoded answers out.

- Queries are parsed from the raw query-string bytes: ``info_hash`` and ``peer_id`` are 20 arbitrary bytes,
  percent-encoded (BEP 3), so they go through ``unquote_to_bytes``, never a text decoder. ``+`` is a space,
  as in any form-encoded query. Anything we refuse raises ``TrackerRequestError`` with one line, which the
  server sends back as the ``failure reason``; a hostile query can never become anything else.
- ``Swarms`` keeps the peers of each info-hash in memory. It reads no clock: every call takes ``now`` (any
  monotonic seconds), and the random sample of peers comes from the ``random.Random`` it is given.
- An announce costs O(numwant), whatever the size of its swarm: peers are drawn by index, expired ones
  leave from the front of a recency order, counts are kept, not recounted (``_Swarm``).
- A peer is its peer_id *at its address* (``peer_key``): from another address the same peer_id is another
  entry, so no one can replace or stop someone else's. A swarm holds at most ``max_swarm_peers``, at most
  ``max_address_peers`` of them from one address; a new peer past a cap gets a failure reason.
- Answers: ``interval``, ``min interval``, ``complete``/``incomplete`` and the peers, compact (BEP 23:
  ``peers`` is 6 bytes per IPv4 peer; BEP 7: ``peers6`` is 18 bytes per IPv6 peer) or as a list of dicts
  (``compact=0``), which carry ``peer id`` only when asked for (``peer_ids``): a peer_id says which client
  and version a peer runs, and was all it took to stop a peer before entries were bound to addresses.
  Scrape answers (BEP 48) map each info-hash to ``complete``/``downloaded``/``incomplete``.

A hybrid torrent (BEP 52) is announced twice by libtorrent: with its v1 info-hash and with its v2 info-hash
truncated to 20 bytes. They are two swarms here, as on every other tracker; clients join both.
"""

from __future__ import annotations

import codecs
import functools
import ipaddress
import random
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal, TypeAlias
from urllib.parse import unquote_to_bytes

from swarmhub.bt.bencode import Bencodable, encode
from swarmhub.errors import TrackerRequestError

__all__ = [
    "DEFAULT_MAX_ADDRESS_PEERS",
    "DEFAULT_MAX_SWARM_PEERS",
    "DEFAULT_NUMWANT",
    "MAX_NUMWANT",
    "AnnounceEvent",
    "AnnounceReply",
    "AnnounceRequest",
    "IPAddress",
    "SwarmPeer",
    "SwarmStats",
    "Swarms",
    "encode_announce",
    "encode_failure",
    "encode_scrape",
    "parse_announce",
    "parse_scrape",
    "peer_ip",
    "peer_key",
]

DEFAULT_NUMWANT = 50
MAX_NUMWANT = 200
MAX_QUERY_BYTES = 8192  # a scrape of MAX_SCRAPE hashes fits; real announces are ~300 bytes
MAX_SCRAPE = 100
_MAX_COUNTER = (1 << 63) - 1  # byte counters are 64-bit in every client
# ~500 bytes a peer: a full swarm is ~25 MB. Drawing peers costs the same at any size (Swarms.announce).
DEFAULT_MAX_SWARM_PEERS = 50_000
# libtorrent connects to one peer per address unless told otherwise (allow_multiple_connections_per_ip), so
# more than a few peers at one address mostly fill other peers' answers with peers they will not reach.
DEFAULT_MAX_ADDRESS_PEERS = 16

AnnounceEvent: TypeAlias = Literal["", "started", "completed", "stopped", "paused"]
IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address

# BEP 3 events, plus BEP 21 "paused" (a partial seed) and the "empty" some old clients spell out.
_EVENTS: dict[bytes, AnnounceEvent] = {
    b"": "",
    b"empty": "",
    b"started": "started",
    b"completed": "completed",
    b"stopped": "stopped",
    b"paused": "paused",
}


# ---------------------------------------------------------------------------------------------- parsing


@dataclass(frozen=True)
class AnnounceRequest:
    info_hash: bytes  # 20 bytes (a v2 info-hash arrives truncated to 20, BEP 52)
    peer_id: bytes  # 20 bytes
    port: int
    uploaded: int
    downloaded: int
    left: int
    event: AnnounceEvent = ""
    compact: bool = True
    no_peer_id: bool = False
    numwant: int = DEFAULT_NUMWANT
    ip: IPAddress | None = None  # what the client says its address is; see peer_ip()


def _unquote(raw: bytes) -> bytes:
    """``unquote_to_bytes``, with ``+`` as a space.

    The percent-encoded info_hash and peer_id of every announce make this the costliest step of parsing, so
    the escapes are decoded in C: ``%XX`` becomes ``\\xXX`` for ``codecs.escape_decode`` (backslashes doubled
    first, so nothing else is an escape). A malformed escape raises there and goes to ``unquote_to_bytes``,
    which keeps it as it is."""
    if b"+" in raw:
        raw = raw.replace(b"+", b" ")
    if b"%" not in raw:
        return raw
    try:
        return codecs.escape_decode(raw.replace(b"\\", b"\\\\").replace(b"%", b"\\x"))[0]
    except ValueError:
        return unquote_to_bytes(raw)


def _query_params(query: bytes) -> dict[bytes, list[bytes]]:
    """Each name's values, in order; names stay bytes (``bytes.decode`` per parameter shows in a profile)."""
    if len(query) > MAX_QUERY_BYTES:
        raise TrackerRequestError(f"query longer than {MAX_QUERY_BYTES} bytes")
    params: dict[bytes, list[bytes]] = {}
    for part in query.split(b"&"):
        if not part:
            continue
        name, _, value = part.partition(b"=")
        if b"%" in part or b"+" in part:  # most parts have neither
            name, value = _unquote(name), _unquote(value)
        if name in params:
            params[name].append(value)
        else:
            params[name] = [value]
    return params


def _single(params: Mapping[bytes, list[bytes]], name: bytes) -> bytes | None:
    values = params.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise TrackerRequestError(f"{name.decode()} given {len(values)} times", field=name.decode())
    return values[0]


def _required(params: Mapping[bytes, list[bytes]], name: bytes) -> bytes:
    value = _single(params, name)
    if value is None:
        raise TrackerRequestError(f"missing {name.decode()}", field=name.decode())
    return value


def _twenty_bytes(value: bytes, name: str) -> bytes:
    if len(value) != 20:
        raise TrackerRequestError(f"{name} must be 20 bytes, got {len(value)}", field=name)
    return value


def _number(value: bytes, name: str, high: int = _MAX_COUNTER) -> int:
    if not value.isdigit() or len(value) > 19 or int(value) > high:  # bytes.isdigit: ASCII 0-9 only
        raise TrackerRequestError(f"{name} must be a whole number from 0 to {high}", field=name)
    return int(value)


def _flag(value: bytes | None, name: str, default: bool) -> bool:
    if value is None:
        return default
    if value not in (b"0", b"1"):
        raise TrackerRequestError(f"{name} must be 0 or 1", field=name)
    return value == b"1"


def _address(value: bytes, name: str) -> IPAddress:
    try:
        address = ipaddress.ip_address(value.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise TrackerRequestError(f"{name} must be an IPv4 or IPv6 address", field=name) from None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # a dual-stack socket's view of an IPv4 peer
    if address.is_unspecified or address.is_multicast:
        raise TrackerRequestError(f"{name} must be a unicast address", field=name)
    return address


def parse_announce(query: bytes) -> AnnounceRequest:
    """The announce in a raw query string (the bytes after ``?``, still percent-encoded)."""
    params = _query_params(query)
    info_hash = _twenty_bytes(_required(params, b"info_hash"), "info_hash")
    peer_id = _twenty_bytes(_required(params, b"peer_id"), "peer_id")
    port = _number(_required(params, b"port"), "port", high=65535)
    if port == 0:
        raise TrackerRequestError("port must be from 1 to 65535", field="port")
    uploaded = _number(_required(params, b"uploaded"), "uploaded")
    downloaded = _number(_required(params, b"downloaded"), "downloaded")
    left = _number(_required(params, b"left"), "left")
    event = _single(params, b"event") or b""
    if event not in _EVENTS:
        raise TrackerRequestError("event must be started, completed, stopped or empty", field="event")
    numwant = _single(params, b"numwant")
    ip = _single(params, b"ip")
    return AnnounceRequest(
        info_hash,
        peer_id,
        port,
        uploaded,
        downloaded,
        left,
        event=_EVENTS[event],
        compact=_flag(_single(params, b"compact"), "compact", default=True),
        no_peer_id=_flag(_single(params, b"no_peer_id"), "no_peer_id", default=False),
        numwant=DEFAULT_NUMWANT if numwant is None else min(_number(numwant, "numwant"), MAX_NUMWANT),
        ip=None if ip is None else _address(ip, "ip"),
    )


def parse_scrape(query: bytes) -> tuple[bytes, ...]:
    """The info-hashes of a scrape query (BEP 48), each once, in order. A full scrape is refused."""
    values = _query_params(query).get(b"info_hash", [])
    if not values:
        raise TrackerRequestError("missing info_hash (scraping every torrent is not supported)", field="info_hash")
    if len(values) > MAX_SCRAPE:
        raise TrackerRequestError(f"at most {MAX_SCRAPE} info_hash per scrape", field="info_hash")
    return tuple(dict.fromkeys(_twenty_bytes(v, "info_hash") for v in values))


def peer_ip(client_host: str, requested: IPAddress | None) -> IPAddress:
    """The address to list for a peer: where its request came from.

    The ``ip`` parameter is believed only from loopback (a client, proxy or test on this machine); from
    anyone else it would let one host point a swarm at another.
    """
    client = _client_address(client_host)
    if requested is not None and client.is_loopback:
        return requested
    return client


@functools.lru_cache(maxsize=4096)  # peers announce again and again from the same few addresses
def _client_address(host: str) -> IPAddress:
    try:
        return _address(host.encode("ascii", "replace"), "client address")
    except TrackerRequestError:
        raise TrackerRequestError(f"cannot list a peer at {host!r}") from None


# ------------------------------------------------------------------------------------------------ state


@dataclass(frozen=True)
class SwarmPeer:
    """A peer as other peers are told about it."""

    peer_id: bytes
    ip: IPAddress
    port: int
    compact: bytes = field(init=False, repr=False, compare=False)  # BEP 23 / BEP 7: address, then port

    def __post_init__(self) -> None:
        # once per announce that changes the peer, not once per answer that lists it
        object.__setattr__(self, "compact", self.ip.packed + self.port.to_bytes(2, "big"))


@dataclass(frozen=True)
class SwarmStats:
    complete: int  # seeders (left == 0)
    incomplete: int  # leechers
    downloaded: int  # "completed" events seen


@dataclass(frozen=True)
class AnnounceReply:
    interval: int
    min_interval: int
    stats: SwarmStats
    peers: tuple[SwarmPeer, ...]


@dataclass(slots=True)
class _Peer:
    listed: SwarmPeer
    seeding: bool
    last_seen: float
    slot: int  # where it is in its swarm's list of seeders, or of leechers
    crowd: bytes  # the key its address is counted under (b"": not counted, see _crowd)


def _crowd(ip: IPAddress) -> bytes:
    """Whom a peer's address counts against for ``max_address_peers``: an IPv4 address; an IPv6 one's /64, the
    network one host is given (RFC 6177), so its 2^64 addresses are one. Loopback counts against nobody: from
    there ``ip=`` is believed (``peer_ip``), so a peer on this machine can be listed at any address anyway."""
    if ip.is_loopback:
        return b""
    return ip.packed if ip.version == 4 else ip.packed[:8]


class _Swarm:
    """The peers of one swarm: by (peer_id, address), least recently announced first; the seeders and the
    leechers each in a list, for drawing peers by index; how many peers each address has here.

    Every announce moves its peer to the end, so the expired ones are always at the front (``now`` never
    goes back); a peer leaves its list by swapping the last one into its slot. Announcing, expiring, counting
    and drawing ``n`` peers cost O(1), O(1) per peer expired, O(1) and O(n), whatever the size of the swarm.
    """

    __slots__ = ("by_crowd", "completed", "leechers", "peers", "seeders")

    def __init__(self) -> None:
        self.peers: OrderedDict[bytes, _Peer] = OrderedDict()
        self.seeders: list[_Peer] = []
        self.leechers: list[_Peer] = []
        self.by_crowd: dict[bytes, int] = {}
        self.completed = 0

    def stats(self) -> SwarmStats:
        return SwarmStats(len(self.seeders), len(self.leechers), self.completed)

    def put(self, key: bytes, peer_id: bytes, ip: IPAddress, port: int, seeding: bool, now: float) -> _Peer:
        """Record an announce of the peer ``key`` (``peer_key``), new or known; returns its entry."""
        peer = self.peers.get(key)
        if peer is None:
            peer = self.peers[key] = _Peer(SwarmPeer(peer_id, ip, port), seeding, now, 0, _crowd(ip))
            self._enlist(peer)
            if peer.crowd:
                self.by_crowd[peer.crowd] = self.by_crowd.get(peer.crowd, 0) + 1
            return peer
        self.peers.move_to_end(key)
        peer.last_seen = now
        if peer.listed.port != port:
            peer.listed = SwarmPeer(peer_id, ip, port)
        if peer.seeding != seeding:
            self._delist(peer)
            peer.seeding = seeding
            self._enlist(peer)
        return peer

    def remove(self, key: bytes) -> None:
        peer = self.peers.pop(key, None)
        if peer is not None:
            self._forget(peer)

    def expire(self, oldest: float) -> None:
        """Forget the peers last seen before ``oldest``."""
        peers = self.peers
        while peers:
            key = next(iter(peers))
            if peers[key].last_seen >= oldest:
                return
            self._forget(peers.pop(key))

    def sample(self, rng: random.Random, asking: _Peer, numwant: int) -> tuple[SwarmPeer, ...]:
        """Up to ``numwant`` peers drawn at random, never ``asking``. A seed is told about leechers first, and
        about seeders only to fill ``numwant``: a seed has nothing to fetch from another seed, but ``left=0`` is
        also how aria2 announces a magnet whose size it does not know yet, and told leechers only it never
        found the seeder. Draws cost O(numwant), not O(swarm): ``numwant + 1`` slots of a range are drawn
        (``random.sample`` of a range), the asker left out if it is among them."""
        if not asking.seeding:
            seeders, leechers = self.seeders, self.leechers
            return tuple(p.listed for p in _draw(rng, seeders, leechers, asking, numwant))
        picked = _draw(rng, self.leechers, [], asking, numwant)
        if len(picked) < numwant:
            picked += _draw(rng, self.seeders, [], asking, numwant - len(picked))
        return tuple(p.listed for p in picked)

    def _enlist(self, peer: _Peer) -> None:
        group = self.seeders if peer.seeding else self.leechers
        peer.slot = len(group)
        group.append(peer)

    def _delist(self, peer: _Peer) -> None:
        group = self.seeders if peer.seeding else self.leechers
        last = group.pop()
        if last is not peer:
            group[peer.slot] = last
            last.slot = peer.slot

    def _forget(self, peer: _Peer) -> None:
        self._delist(peer)
        if peer.crowd:
            count = self.by_crowd[peer.crowd] - 1
            if count:
                self.by_crowd[peer.crowd] = count
            else:
                del self.by_crowd[peer.crowd]


_NO_SWARM = SwarmStats(0, 0, 0)


def _draw(rng: random.Random, first: list[_Peer], then: list[_Peer], asking: _Peer, n: int) -> list[_Peer]:
    """Up to ``n`` peers of ``first + then`` (one range of slots, never copied) drawn at random, never
    ``asking``; all of them when they fit."""
    size = len(first) + len(then)
    among = any(asking.slot < len(g) and g[asking.slot] is asking for g in (first, then))
    slots: Iterable[int] = range(size) if size - among <= n else rng.sample(range(size), n + 1)
    s = len(first)
    return [p for p in (first[i] if i < s else then[i - s] for i in slots) if p is not asking][:n]


def peer_key(peer_id: bytes, ip: IPAddress) -> bytes:
    """A peer in a swarm: its peer_id at its address. BEP 3 names a peer by its peer_id alone, and then anyone
    who learns (or guesses) one can move that peer elsewhere or stop it; bound to the address it announces from,
    an entry is changed and stopped from that address only."""
    return peer_id + ip.packed


class Swarms:
    """The peers of every swarm, in memory.

    A peer is forgotten when it says ``stopped`` (from its own address: ``peer_key``) or when it has not
    announced for ``peer_ttl`` seconds (default: two intervals, so one lost announce is forgiven). A swarm
    with no peers and no completed download is dropped. ``admit(info_hash)``, when given, decides which swarms
    may exist at all (a registry's tracker serves only its torrents).

    Caps (None: none): a swarm holds at most ``max_swarm_peers`` peers, and at most ``max_address_peers`` of
    them from one address (``_crowd``: an IPv6 /64 is one address; loopback is not counted). A new peer past
    a cap is refused with a failure reason; those already listed go on announcing.
    """

    def __init__(
        self,
        *,
        rng: random.Random,
        interval: int = 1800,
        min_interval: int = 60,
        peer_ttl: float | None = None,
        admit: Callable[[bytes], bool] | None = None,
        max_swarm_peers: int | None = DEFAULT_MAX_SWARM_PEERS,
        max_address_peers: int | None = DEFAULT_MAX_ADDRESS_PEERS,
    ) -> None:
        self.interval = interval
        # never above the interval: clients wait for the larger of the two (libtorrent does), and a peer that
        # announces every `min interval` would be forgotten after two `interval`s (bench/chaos.py: a tracker
        # with interval 5 and min interval 60 gave a restarted node no peer: all had expired)
        self.min_interval = min(min_interval, interval)
        self.peer_ttl = 2.0 * interval if peer_ttl is None else peer_ttl
        self.max_swarm_peers = max_swarm_peers
        self.max_address_peers = max_address_peers
        self._rng = rng
        self._admit = admit
        self._swarms: dict[bytes, _Swarm] = {}
        self._next_sweep: float | None = None

    def __len__(self) -> int:
        return len(self._swarms)

    def announce(self, request: AnnounceRequest, ip: IPAddress, now: float) -> AnnounceReply:
        """Record the announcing peer at ``ip`` and pick the peers to send back."""
        if self._admit is not None and not self._admit(request.info_hash):
            raise TrackerRequestError("this torrent is not served by this tracker", field="info_hash")
        self._sweep_if_due(now)
        swarm = self._swarms.get(request.info_hash)
        if swarm is None:
            swarm = self._swarms[request.info_hash] = _Swarm()
        swarm.expire(now - self.peer_ttl)
        key = peer_key(request.peer_id, ip)
        if request.event == "stopped":
            swarm.remove(key)
            peers: tuple[SwarmPeer, ...] = ()
        else:
            if key not in swarm.peers:
                self._check_room(swarm, ip)
            if request.event == "completed":
                swarm.completed += 1
            peer = swarm.put(key, request.peer_id, ip, request.port, request.left == 0, now)
            peers = swarm.sample(self._rng, peer, request.numwant)
        stats = swarm.stats()
        self._drop_if_idle(request.info_hash, swarm)
        return AnnounceReply(self.interval, self.min_interval, stats, peers)

    def _check_room(self, swarm: _Swarm, ip: IPAddress) -> None:
        """A new peer fits under the caps, or ``TrackerRequestError`` says which one it is past."""
        if self.max_swarm_peers is not None and len(swarm.peers) >= self.max_swarm_peers:
            raise TrackerRequestError(f"this swarm is full: {len(swarm.peers)} peers")
        crowd = _crowd(ip)
        if crowd and self.max_address_peers is not None:
            count = swarm.by_crowd.get(crowd, 0)
            if count >= self.max_address_peers:
                where = ip if ip.version == 4 else f"{ipaddress.IPv6Network((ip, 64), strict=False)}"
                raise TrackerRequestError(f"{count} peers of this swarm announce from {where} already")

    def scrape(self, info_hashes: Iterable[bytes], now: float) -> dict[bytes, SwarmStats]:
        """Counts for each info-hash; zeros for swarms we do not know (BEP 48 lets a tracker omit them)."""
        self._sweep_if_due(now)
        return {h: swarm.stats() if (swarm := self._swarms.get(h)) else _NO_SWARM for h in info_hashes}

    def peers(self, info_hash: bytes) -> tuple[SwarmPeer, ...]:
        """Everyone listed in a swarm right now (for tests and status pages)."""
        swarm = self._swarms.get(info_hash)
        # list() copies in C, in one go: safe while another thread announces (tests, the registry's pages)
        return tuple(p.listed for p in list(swarm.peers.values())) if swarm else ()

    def sweep(self, now: float) -> None:
        """Forget expired peers in every swarm, and the swarms left idle."""
        for info_hash, swarm in list(self._swarms.items()):
            swarm.expire(now - self.peer_ttl)
            self._drop_if_idle(info_hash, swarm)
        self._next_sweep = now + self.interval

    def _sweep_if_due(self, now: float) -> None:
        if self._next_sweep is None:
            self._next_sweep = now + self.interval
        elif now >= self._next_sweep:
            self.sweep(now)

    def _drop_if_idle(self, info_hash: bytes, swarm: _Swarm) -> None:
        if not swarm.peers and not swarm.completed:
            self._swarms.pop(info_hash, None)


# --------------------------------------------------------------------------------------------- encoding


def encode_announce(reply: AnnounceReply, *, compact: bool = True, peer_ids: bool = False) -> bytes:
    """The bencoded answer to an announce; ``peer_ids``: the list-of-dicts answer names each peer's ``peer id``."""
    if compact:
        return _encode_compact(reply)
    answer: dict[str, Bencodable] = {
        "interval": reply.interval,
        "min interval": reply.min_interval,
        "complete": reply.stats.complete,
        "incomplete": reply.stats.incomplete,
    }
    answer["peers"] = [
        {"peer id": p.peer_id, "ip": str(p.ip), "port": p.port} if peer_ids else {"ip": str(p.ip), "port": p.port}
        for p in reply.peers
    ]
    return encode(answer)


def _encode_compact(reply: AnnounceReply) -> bytes:
    """``bencode.encode`` of the compact answer, written out: the keys in their sorted order, ``peers`` with
    the IPv4 peers (BEP 23), ``peers6`` with the IPv6 ones if any (BEP 7). Most answers are this one."""
    v4 = b"".join([p.compact for p in reply.peers])
    mixed = len(v4) != 6 * len(reply.peers)  # an IPv6 peer's is 18 bytes
    if mixed:
        v4 = b"".join([p.compact for p in reply.peers if len(p.compact) == 6])
    answer = b"d8:completei%de10:incompletei%de8:intervali%de12:min intervali%de5:peers%d:%s" % (
        reply.stats.complete,
        reply.stats.incomplete,
        reply.interval,
        reply.min_interval,
        len(v4),
        v4,
    )
    if mixed:
        v6 = b"".join([p.compact for p in reply.peers if len(p.compact) == 18])
        answer += b"6:peers6%d:%s" % (len(v6), v6)
    return answer + b"e"


def encode_failure(reason: str) -> bytes:
    return encode({"failure reason": reason})


def encode_scrape(files: Mapping[bytes, SwarmStats]) -> bytes:
    """BEP 48: ``files`` maps each 20-byte info-hash to its counts."""
    return encode(
        {
            "files": {
                h: {"complete": s.complete, "downloaded": s.downloaded, "incomplete": s.incomplete}
                for h, s in files.items()
            }
        }
    )
