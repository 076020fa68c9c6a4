"""The coordinator's brain, without I/O: which nodes live, what each holds, who fetches what from the origin.

Nodes report every second or so (``report``): their labels, their BitTorrent address and, per release in
flight or held, the pieces they have. The answer is, per release, the pieces this node alone fetches from the
origin. The rules, all here:

- A node lives while it reports within ``dead_after`` seconds; one not heard from for ``forget_after``
  seconds is forgotten, and so is a release no remembered node reports.
- A report names at most ``MAX_RELEASES`` releases, each of at most ``MAX_PIECES`` pieces (libtorrent's own
  limit); anything bigger is refused (``ValueError``), never held.
- Piece sets are bitfields: an ``int`` whose bit ``i`` is piece ``i`` (``bits_of``, ``pieces_of``; on the wire
  ``encode_bitfield``/``decode_bitfield``). 2^21 pieces are 256 KiB, and their unions and differences run in
  C: a report costs the same whether it holds a few pieces or all of them.
- Only pieces some live node needs are fetched (a node reports what it needs: a partial pull needs only its
  files' pieces), and a piece some live node has is never fetched from the origin again: peers spread it.
- Each piece no live node has is assigned to exactly one fetcher, so the origin sends each byte once. Up to
  ``fetchers`` nodes fetch (those that want the release; different racks first, then different zones), each a
  contiguous share — long runs make cheap ranged GETs.
- A fetcher that dies, or whose share does not shrink for ``stall_after`` seconds, loses its unfinished
  pieces to the others (or to a new fetcher) and is not chosen again for ``stall_after`` seconds. A node
  drops the origin runs whose pieces are no longer its share (``node.pull``): they are fetched once.
- Pieces a node says are on their way to it from the origin (``fetching``) and nobody's share become its
  share, unless it is benched: a coordinator that starts again (it knows no shares) leaves runs under way
  where they are instead of dealing them to others, who would fetch them a second time.
- Peers for a node come ordered: same rack, then same zone, then the rest.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from swarmhub.bt.metainfo import MAX_PIECES  # libtorrent's limit: it loads no torrent with more

__all__ = [
    "MAX_RELEASES",
    "Brain",
    "NodeView",
    "ReleaseReport",
    "bits_of",
    "decode_bitfield",
    "decode_pieces",
    "encode_bitfield",
    "encode_pieces",
    "pieces_of",
]

log = logging.getLogger(__name__)

REBALANCE_SLACK = 8  # pieces a share may exceed an even split before its tail is dealt again
MAX_RELEASES = 1024  # releases in one report: a node seeding more than this is not one we plan for

# BitTorrent's bitfields put piece 0 in the high bit of byte 0; ours in bit 0 of an int. Reversing the bits
# of every byte and reading the bytes little-endian turns one into the other, in C.
_REVERSED = bytes(int(f"{b:08b}"[::-1], 2) for b in range(256))


def bits_of(pieces: Iterable[int]) -> int:
    """A piece set as a bitfield (bit ``i`` is piece ``i``)."""
    bits = 0
    for piece in pieces:
        bits |= 1 << piece
    return bits


def pieces_of(bits: int) -> list[int]:
    """The pieces of a bitfield, in order."""
    raw = bits.to_bytes((bits.bit_length() + 7) // 8, "little")
    return [i * 8 + j for i, byte in enumerate(raw) if byte for j in range(8) if byte >> j & 1]


def encode_bitfield(bits: int, num_pieces: int) -> str:
    """A bitfield as the wire's hex (BitTorrent's order: piece 0 is the high bit of byte 0)."""
    return bits.to_bytes((num_pieces + 7) // 8, "little").translate(_REVERSED).hex()


def decode_bitfield(hexbits: str, num_pieces: int) -> int:
    """The bitfield in the wire's hex; ValueError on anything else (or on bits past ``num_pieces``)."""
    raw = bytes.fromhex(hexbits)
    if len(raw) != (num_pieces + 7) // 8:
        raise ValueError(f"a bitfield of {num_pieces} pieces has {(num_pieces + 7) // 8} bytes, not {len(raw)}")
    bits = int.from_bytes(raw.translate(_REVERSED), "little")
    if bits >> num_pieces:
        raise ValueError("bits set past the last piece")
    return bits


def encode_pieces(pieces: Iterable[int], num_pieces: int) -> str:
    """A piece set as the wire's hex bitfield; pieces outside ``0..num_pieces-1`` are left out."""
    return encode_bitfield(bits_of(p for p in pieces if 0 <= p < num_pieces), num_pieces)


def decode_pieces(hexbits: str, num_pieces: int) -> frozenset[int]:
    """The pieces of the wire's hex bitfield (``decode_bitfield`` as a set, for a node's own torrents)."""
    return frozenset(pieces_of(decode_bitfield(hexbits, num_pieces)))


def _lowest(bits: int, count: int) -> int:
    """The ``count`` lowest pieces of ``bits`` (all of them if it has fewer): a contiguous run of its pieces."""
    if count <= 0:
        return 0
    if bits.bit_count() <= count:
        return bits
    low, high = 0, bits.bit_length()  # the fewest low bits that hold ``count`` pieces
    while low < high:
        middle = (low + high) // 2
        if (bits & ((1 << middle) - 1)).bit_count() >= count:
            high = middle
        else:
            low = middle + 1
    return bits & ((1 << low) - 1)


def _span(bits: int) -> str:
    return f"{(bits & -bits).bit_length() - 1}-{bits.bit_length() - 1}"


@dataclass(frozen=True)
class ReleaseReport:
    key: str  # the torrent's key (v2 info-hash, else v1)
    num_pieces: int
    have: int  # bitfield
    origin_bytes: int = 0
    peer_bytes: int = 0
    name: str = ""
    wanted: int | None = None  # the pieces this node needs (None: all); a seeder wants what it has
    fetching: int = 0  # pieces on their way from the origin to it now

    def __post_init__(self) -> None:
        if not 0 <= self.num_pieces <= MAX_PIECES:
            raise ValueError(f"a release has at most {MAX_PIECES} pieces (libtorrent's limit), not {self.num_pieces}")
        for name, bits in (("have", self.have), ("wanted", self.wanted or 0), ("fetching", self.fetching)):
            if bits < 0 or bits >> self.num_pieces:
                raise ValueError(f"{name}: pieces past the last of {self.num_pieces}")

    @property
    def needs(self) -> int:
        return (1 << self.num_pieces) - 1 if self.wanted is None else self.wanted

    @property
    def complete(self) -> bool:
        return not self.needs & ~self.have


@dataclass(frozen=True)
class NodeView:
    node_id: str
    labels: Mapping[str, str]
    address: tuple[str, int] | None
    alive: bool
    last_seen: float
    releases: Mapping[str, ReleaseReport]


@dataclass
class _Node:
    node_id: str
    labels: dict[str, str]
    address: tuple[str, int] | None
    last_seen: float
    releases: dict[str, ReleaseReport] = field(default_factory=dict)


@dataclass
class _Release:
    num_pieces: int
    first_seen: float
    assigned: dict[str, int] = field(default_factory=dict)  # fetcher -> the pieces it alone fetches (disjoint)
    shares: dict[str, int] = field(default_factory=dict)  # fetcher -> unfinished pieces at its last change
    progress_at: dict[str, float] = field(default_factory=dict)  # fetcher -> when its share last shrank
    origin_seen: dict[str, int] = field(default_factory=dict)  # fetcher -> origin bytes it last reported
    benched: dict[str, float] = field(default_factory=dict)  # stalled fetcher -> when it stalled


class Brain:
    def __init__(
        self,
        *,
        fetchers: int = 3,
        dead_after: float = 10.0,
        stall_after: float = 15.0,
        gather: float = 1.0,
        forget_after: float = 600.0,
    ) -> None:
        if fetchers < 1:
            raise ValueError("at least one fetcher")
        if forget_after < dead_after:
            raise ValueError("a node is forgotten only once it is dead: forget_after >= dead_after")
        self.fetchers = fetchers
        self.gather = gather
        self.dead_after = dead_after
        self.stall_after = stall_after
        self.forget_after = forget_after
        self._nodes: dict[str, _Node] = {}
        self._releases: dict[str, _Release] = {}
        self._next_forget: float | None = None

    # ------------------------------------------------------------------------------------------ reports

    def report(
        self,
        node_id: str,
        labels: Mapping[str, str],
        address: tuple[str, int] | None,
        releases: Sequence[ReleaseReport],
        now: float,
    ) -> dict[str, int]:
        """Record a node's report; returns, per release it reported, the pieces it fetches from the origin."""
        if len(releases) > MAX_RELEASES:
            raise ValueError(f"a report names at most {MAX_RELEASES} releases, not {len(releases)}")
        self._forget_if_due(now)
        node = self._nodes.get(node_id)
        if node is None:
            node = self._nodes[node_id] = _Node(node_id, dict(labels), address, now)
        node.labels, node.address, node.last_seen = dict(labels), address, now
        node.releases = {r.key: r for r in releases}
        out = {}
        for r in releases:
            release = self._releases.get(r.key)
            if release is None or release.num_pieces != r.num_pieces:
                release = self._releases[r.key] = _Release(r.num_pieces, now)
            self._plan(r.key, release, now)
            out[r.key] = release.assigned.get(node_id, 0)
        return out

    def alive(self, node_id: str, now: float) -> bool:
        node = self._nodes.get(node_id)
        return node is not None and now - node.last_seen <= self.dead_after

    def _forget_if_due(self, now: float) -> None:
        """Every ``dead_after`` seconds: forget the nodes silent for ``forget_after``, and the releases no
        remembered node reports."""
        if self._next_forget is not None and now < self._next_forget:
            return
        self._next_forget = now + self.dead_after
        for node_id in [n.node_id for n in self._nodes.values() if now - n.last_seen > self.forget_after]:
            log.info("node %s: not heard from for %.0f s, forgotten", node_id, now - self._nodes[node_id].last_seen)
            del self._nodes[node_id]
        reported = {key for n in self._nodes.values() for key in n.releases}
        self._releases = {key: r for key, r in self._releases.items() if key in reported}

    def _plan(self, key: str, release: _Release, now: float) -> None:
        wanting = [n for n in self._nodes.values() if key in n.releases and now - n.last_seen <= self.dead_after]
        held = needed = 0
        for n in wanting:
            held |= n.releases[key].have
            needed |= n.releases[key].needs
        fetched = {n.node_id: n.releases[key].origin_bytes for n in wanting}
        every = (1 << release.num_pieces) - 1
        self._settle(release, fetched, held | (every & ~needed), now)
        self._adopt_in_flight(release, key, wanting, needed & ~held, now)
        if now - release.first_seen < self.gather:
            return  # the nodes a preheat started report within a heartbeat: choose among all of them
        taken = _taken(release)
        unassigned = needed & ~held & ~taken
        if not unassigned and not release.assigned:
            return
        fetchers = self._fetchers(release, wanting, now)
        if not fetchers:
            return
        in_flight = {n.node_id: n.releases[key].fetching for n in wanting}
        unassigned |= self._take_back_excess(release, fetchers, in_flight)
        self._deal(release, fetchers, unassigned, now)
        self._to_those_who_need(release, key, wanting, now)

    def _adopt_in_flight(self, release: _Release, key: str, wanting: list[_Node], missing: int, now: float) -> None:
        """Pieces on their way to a node from the origin that are nobody's share become its own (not a benched
        node's: its share was just taken back, and it drops those runs)."""
        taken = _taken(release)
        for n in wanting:
            if n.node_id in release.benched:
                continue
            adopted = n.releases[key].fetching & missing & ~taken
            if adopted:
                _give(release, n.node_id, adopted, now)
                taken |= adopted
                log.debug("fetcher %s: %d pieces under way kept (%s)", n.node_id, adopted.bit_count(), _span(adopted))
        release.shares = _shares(release)

    def _deal(self, release: _Release, fetchers: list[str], pieces: int, now: float) -> None:
        """``pieces`` in contiguous runs, lowest first, filling the smallest shares up to an even split."""
        shares = _shares(release)
        left = pieces.bit_count()
        even = -(-(sum(shares.values()) + left) // len(fetchers))
        for i, fetcher in enumerate(sorted(fetchers, key=lambda f: (shares.get(f, 0), f))):
            room = left if i == len(fetchers) - 1 else max(0, min(even - shares.get(fetcher, 0), left))
            run = _give(release, fetcher, _lowest(pieces, room), now)
            if run:
                pieces ^= run
                left -= room
                log.debug("fetcher %s: %d more pieces (%s)", fetcher, room, _span(run))
        release.shares = _shares(release)

    def _to_those_who_need(self, release: _Release, key: str, wanting: list[_Node], now: float) -> None:
        """Pieces dealt to a fetcher that does not need them (a partial pull) go to fetchers that do, fewest
        pieces first; those no fetcher needs, to other nodes that do; those no one needs, to no one."""
        needs = {n.node_id: n.releases[key].needs for n in wanting}
        for fetcher in list(release.assigned):
            bits = release.assigned[fetcher]  # as it is now: it may have taken others' pieces in this loop
            stray = bits & ~needs.get(fetcher, 0)
            if not stray:
                continue
            release.assigned[fetcher] = bits ^ stray
            shares = _shares(release)
            takers = sorted(
                (f for f in shares if f != fetcher and stray & needs.get(f, 0)), key=lambda f: (shares[f], f)
            )
            stray = self._hand_out(release, stray, takers, needs, now)
            for other in sorted(n for n in needs if n not in shares and n != fetcher):
                if not stray:
                    break
                stray = self._hand_out(release, stray, [other], needs, now)
        release.assigned = {f: bits for f, bits in release.assigned.items() if bits}
        release.shares = _shares(release)

    def _hand_out(self, release: _Release, stray: int, takers: list[str], needs: Mapping[str, int], now: float) -> int:
        """``stray`` among ``takers`` in order, each an even part of what is left that it needs, then what is
        still left to the first that needs it; returns what none of them needs."""
        for i, taker in enumerate(takers):
            part = _lowest(stray & needs[taker], -(-stray.bit_count() // (len(takers) - i)))
            stray ^= _give(release, taker, part, now)
        for taker in takers:
            stray ^= _give(release, taker, stray & needs[taker], now)
        return stray

    def _take_back_excess(self, release: _Release, fetchers: list[str], in_flight: Mapping[str, int]) -> int:
        """A fetcher chosen early may hold more than an even split once others join: the tail of its share
        goes back to be dealt again. The tail: nodes fetch their share in order, so those pieces are the
        last they would have asked for (not in flight)."""
        shares = _shares(release)
        even = -(-sum(shares.values()) // len(fetchers))
        back = 0
        for fetcher, count in shares.items():
            if count > even + REBALANCE_SLACK:
                busy = in_flight.get(fetcher, 0)  # on their way: taking them back fetches them twice
                mine = release.assigned[fetcher] & ~busy
                tail = mine ^ _lowest(mine, max(0, even - busy.bit_count()))
                release.assigned[fetcher] ^= tail
                back |= tail
                log.debug("fetcher %s: %d pieces over an even share taken back", fetcher, count - even)
        release.assigned = {f: bits for f, bits in release.assigned.items() if bits}
        return back

    def _settle(self, release: _Release, fetched: Mapping[str, int], held: int, now: float) -> None:
        """Drop what is done, and take back the shares of dead or stalled fetchers. ``fetched``: the live
        nodes' origin bytes. Progress is a shrinking share or bytes still coming from the origin: over a slow
        origin a fetcher's first long ranged GETs take a while to land a piece, and it is not stalled then."""
        live = fetched.keys()
        for fetcher, count in _shares(release).items():
            moving = fetched.get(fetcher, 0) > release.origin_seen.get(fetcher, fetched.get(fetcher, 0))
            if count < release.shares.get(fetcher, count + 1) or moving:
                release.progress_at[fetcher] = now
            if fetcher in fetched:
                release.origin_seen[fetcher] = fetched[fetcher]
            stalled = now - release.progress_at.get(fetcher, now) > self.stall_after
            if fetcher not in live or stalled:
                log.info(
                    "fetcher %s %s: its %d unfinished pieces are dealt again",
                    fetcher,
                    "stalled" if stalled else "is gone",
                    count,
                )
                if stalled:
                    release.benched[fetcher] = now
                release.progress_at.pop(fetcher, None)
                del release.assigned[fetcher]
        release.assigned = {f: left for f, bits in release.assigned.items() if (left := bits & ~held)}
        release.shares = _shares(release)
        release.benched = {f: t for f, t in release.benched.items() if now - t <= self.stall_after}

    def _fetchers(self, release: _Release, wanting: list[_Node], now: float) -> list[str]:
        """The fetchers of a release: those fetching already, then others up to ``fetchers``, spread over
        racks and zones, never a benched one."""
        chosen = sorted(release.assigned)
        places = {_place(self._nodes[f].labels) for f in chosen if f in self._nodes}
        zones = {place[0] for place in places}
        candidates = [n for n in wanting if n.node_id not in chosen and n.node_id not in release.benched]
        while candidates and len(chosen) < self.fetchers:
            # a rack no fetcher is on, in a zone none is in, first: an outage takes fewer shares with it
            best = min(
                candidates, key=lambda n: (_place(n.labels) in places, n.labels.get("zone", "") in zones, n.node_id)
            )
            candidates.remove(best)
            chosen.append(best.node_id)
            places.add(_place(best.labels))
            zones.add(best.labels.get("zone", ""))
        return chosen

    # ------------------------------------------------------------------------------------------ peers

    def order_peers(self, asking: str | None, peers: Sequence[tuple[str, int]]) -> list[tuple[str, int]]:
        """``peers`` (addresses), those on the asker's rack first, then its zone, then the rest."""
        node = self._nodes.get(asking) if asking else None
        if node is None:
            return list(peers)
        by_address = {n.address: n for n in self._nodes.values() if n.address is not None}

        def distance(peer: tuple[str, int]) -> int:
            other = by_address.get(peer)
            if other is None:
                return 3
            if _same(node.labels, other.labels, "zone") and _same(node.labels, other.labels, "rack"):
                return 0
            return 1 if _same(node.labels, other.labels, "zone") else 2

        return sorted(peers, key=distance)

    # ------------------------------------------------------------------------------------------ views

    def node(self, node_id: str, now: float) -> NodeView | None:
        """One node as ``nodes`` shows it, or None if it never reported (or was forgotten)."""
        n = self._nodes.get(node_id)
        return None if n is None else _view(n, now - n.last_seen <= self.dead_after)

    def nodes(self, now: float) -> list[NodeView]:
        return [_view(n, now - n.last_seen <= self.dead_after) for n in sorted(self._nodes.values(), key=_node_id)]

    def assignments(self, key: str) -> dict[str, int]:
        """Fetcher -> the pieces it fetches from the origin now (what its next report is answered)."""
        release = self._releases.get(key)
        return dict(release.assigned) if release is not None else {}

    def fetchers_of(self, key: str) -> dict[str, int]:
        """Fetcher -> pieces it still has to fetch from the origin."""
        release = self._releases.get(key)
        return _shares(release) if release is not None else {}


def _view(n: _Node, alive: bool) -> NodeView:
    return NodeView(n.node_id, dict(n.labels), n.address, alive, n.last_seen, n.releases)


def _node_id(n: _Node) -> str:
    return n.node_id


def _give(release: _Release, fetcher: str, pieces: int, now: float) -> int:
    """``pieces`` added to ``fetcher``'s share (its stall clock starts if it had none); returns them."""
    if pieces:
        release.assigned[fetcher] = release.assigned.get(fetcher, 0) | pieces
        release.progress_at.setdefault(fetcher, now)
    return pieces


def _taken(release: _Release) -> int:
    """Every piece some fetcher has in its share."""
    taken = 0
    for bits in release.assigned.values():
        taken |= bits
    return taken


def _shares(release: _Release) -> dict[str, int]:
    return {fetcher: count for fetcher, bits in release.assigned.items() if (count := bits.bit_count())}


def _place(labels: Mapping[str, str]) -> tuple[str, str]:
    return labels.get("zone", ""), labels.get("rack", "")


def _same(a: Mapping[str, str], b: Mapping[str, str], label: str) -> bool:
    return a.get(label) is not None and a.get(label) == b.get(label)
