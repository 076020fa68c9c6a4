"""The coordinator's brain, without I/O: which nodes live, what each holds, who fetches what from the origin.

Nodes report every second or so (``report``): their labels, their BitTorrent address and, per release in
flight or held, the pieces they have. The answer is, per release, the pieces this node alone fetches from the
origin. The rules, all here:

- A node lives while it reports within ``dead_after`` seconds.
- Only pieces some live node needs are fetched (a node reports what it needs: a partial pull needs only its
  files' pieces), and a piece some live node has is never fetched from the origin again: peers spread it.
- Each piece no live node has is assigned to exactly one fetcher, so the origin sends each byte once. Up to
  ``fetchers`` nodes fetch (those that want the release; different racks first, then different zones), each a
  contiguous share — long runs make cheap ranged GETs.
- A fetcher that dies, or whose share does not shrink for ``stall_after`` seconds, loses its unfinished
  pieces to the others (or to a new fetcher) and is not chosen again for ``stall_after`` seconds.
- Peers for a node come ordered: same rack, then same zone, then the rest.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

__all__ = ["Brain", "NodeView", "ReleaseReport", "decode_pieces", "encode_pieces"]

log = logging.getLogger(__name__)

REBALANCE_SLACK = 8  # pieces a share may exceed an even split before its tail is dealt again


def encode_pieces(pieces: Iterable[int], num_pieces: int) -> str:
    """A piece set as a hex bitfield (BitTorrent's order: piece 0 is the high bit of byte 0)."""
    bits = bytearray((num_pieces + 7) // 8)
    for piece in pieces:
        if 0 <= piece < num_pieces:
            bits[piece // 8] |= 0x80 >> (piece % 8)
    return bits.hex()


def decode_pieces(hexbits: str, num_pieces: int) -> frozenset[int]:
    """The pieces of a hex bitfield; ValueError on anything else (or on bits past ``num_pieces``)."""
    bits = bytes.fromhex(hexbits)
    if len(bits) != (num_pieces + 7) // 8:
        raise ValueError(f"a bitfield of {num_pieces} pieces has {(num_pieces + 7) // 8} bytes, not {len(bits)}")
    out = {i * 8 + j for i, byte in enumerate(bits) if byte for j in range(8) if byte & (0x80 >> j)}
    if out and max(out) >= num_pieces:
        raise ValueError("bits set past the last piece")
    return frozenset(out)


@dataclass(frozen=True)
class ReleaseReport:
    key: str  # the torrent's key (v2 info-hash, else v1)
    num_pieces: int
    have: frozenset[int]
    origin_bytes: int = 0
    peer_bytes: int = 0
    name: str = ""
    wanted: frozenset[int] | None = None  # the pieces this node needs (None: all); a seeder wants what it has
    fetching: frozenset[int] = frozenset()  # pieces on their way from the origin to it now

    @property
    def needs(self) -> frozenset[int]:
        return frozenset(range(self.num_pieces)) if self.wanted is None else self.wanted

    @property
    def complete(self) -> bool:
        return self.needs <= self.have


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
    assigned: dict[int, str] = field(default_factory=dict)  # piece -> the one node fetching it
    shares: dict[str, int] = field(default_factory=dict)  # fetcher -> unfinished pieces at its last change
    progress_at: dict[str, float] = field(default_factory=dict)  # fetcher -> when its share last shrank
    origin_seen: dict[str, int] = field(default_factory=dict)  # fetcher -> origin bytes it last reported
    benched: dict[str, float] = field(default_factory=dict)  # stalled fetcher -> when it stalled


class Brain:
    def __init__(
        self, *, fetchers: int = 3, dead_after: float = 10.0, stall_after: float = 15.0, gather: float = 1.0
    ) -> None:
        if fetchers < 1:
            raise ValueError("at least one fetcher")
        self.fetchers = fetchers
        self.gather = gather
        self.dead_after = dead_after
        self.stall_after = stall_after
        self._nodes: dict[str, _Node] = {}
        self._releases: dict[str, _Release] = {}

    # ------------------------------------------------------------------------------------------ reports

    def report(
        self,
        node_id: str,
        labels: Mapping[str, str],
        address: tuple[str, int] | None,
        releases: Sequence[ReleaseReport],
        now: float,
    ) -> dict[str, frozenset[int]]:
        """Record a node's report; returns, per release it reported, the pieces it fetches from the origin."""
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
            out[r.key] = frozenset(p for p, fetcher in release.assigned.items() if fetcher == node_id)
        return out

    def alive(self, node_id: str, now: float) -> bool:
        node = self._nodes.get(node_id)
        return node is not None and now - node.last_seen <= self.dead_after

    def _plan(self, key: str, release: _Release, now: float) -> None:
        wanting = [n for n in self._nodes.values() if key in n.releases and now - n.last_seen <= self.dead_after]
        held: set[int] = set()
        needed: set[int] = set()
        for n in wanting:
            held |= n.releases[key].have
            needed |= n.releases[key].needs
        fetched = {n.node_id: n.releases[key].origin_bytes for n in wanting}
        self._settle(release, fetched, held | (set(range(release.num_pieces)) - needed), now)
        if now - release.first_seen < self.gather:
            return  # the nodes a preheat started report within a heartbeat: choose among all of them
        unassigned = sorted(needed - held - release.assigned.keys())
        if not unassigned and not release.assigned:
            return
        fetchers = self._fetchers(release, wanting, now)
        if not fetchers:
            return
        in_flight = {n.node_id: n.releases[key].fetching for n in wanting}
        unassigned = sorted(unassigned + self._take_back_excess(release, fetchers, in_flight))
        self._deal(release, fetchers, unassigned, now)
        self._to_those_who_need(release, key, wanting, now)

    def _deal(self, release: _Release, fetchers: list[str], pieces: list[int], now: float) -> None:
        """``pieces`` (sorted) in contiguous runs, filling the smallest shares up to an even split."""
        shares = _shares(release)
        even = -(-(sum(shares.values()) + len(pieces)) // len(fetchers))
        at = 0
        for i, fetcher in enumerate(sorted(fetchers, key=lambda f: (shares.get(f, 0), f))):
            room = (
                len(pieces) - at
                if i == len(fetchers) - 1
                else max(0, min(even - shares.get(fetcher, 0), len(pieces) - at))
            )
            for piece in pieces[at : at + room]:
                release.assigned[piece] = fetcher
            if room:
                log.debug("fetcher %s: %d more pieces (%d-%d)", fetcher, room, pieces[at], pieces[at + room - 1])
            if room and fetcher not in release.progress_at:
                release.progress_at[fetcher] = now  # a new fetcher: its stall clock starts
            at += room
        release.shares = _shares(release)

    def _to_those_who_need(self, release: _Release, key: str, wanting: list[_Node], now: float) -> None:
        """A piece dealt to a fetcher that does not need it (a partial pull) goes to one that does."""
        needs = {n.node_id: n.releases[key].needs for n in wanting}
        for piece, fetcher in list(release.assigned.items()):
            if piece in needs.get(fetcher, frozenset()):
                continue
            takers = [f for f in set(release.assigned.values()) if piece in needs.get(f, frozenset())]
            takers = takers or sorted(n for n, need in needs.items() if piece in need)
            if takers:
                shares = _shares(release)
                taker = min(takers, key=lambda f: (shares.get(f, 0), f))
                release.assigned[piece] = taker
                release.progress_at.setdefault(taker, now)
            else:
                del release.assigned[piece]
        release.shares = _shares(release)

    def _take_back_excess(
        self, release: _Release, fetchers: list[str], in_flight: Mapping[str, frozenset[int]]
    ) -> list[int]:
        """A fetcher chosen early may hold more than an even split once others join: the tail of its share
        goes back to be dealt again. The tail: nodes fetch their share in order, so those pieces are the
        last they would have asked for (not in flight)."""
        shares = _shares(release)
        even = -(-sum(shares.values()) // len(fetchers))
        back: list[int] = []
        for fetcher, count in shares.items():
            if count > even + REBALANCE_SLACK:
                busy = in_flight.get(fetcher, frozenset())  # on their way: taking them back fetches them twice
                mine = sorted(p for p, f in release.assigned.items() if f == fetcher and p not in busy)
                for piece in mine[max(0, even - len(busy)) :]:
                    del release.assigned[piece]
                    back.append(piece)
                log.debug("fetcher %s: %d pieces over an even share taken back", fetcher, count - even)
        return back

    def _settle(self, release: _Release, fetched: Mapping[str, int], held: set[int], now: float) -> None:
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
                release.assigned = {p: f for p, f in release.assigned.items() if f != fetcher}
        release.assigned = {p: f for p, f in release.assigned.items() if p not in held}
        release.shares = _shares(release)
        release.benched = {f: t for f, t in release.benched.items() if now - t <= self.stall_after}

    def _fetchers(self, release: _Release, wanting: list[_Node], now: float) -> list[str]:
        """The fetchers of a release: those fetching already, then others up to ``fetchers``, spread over
        racks and zones, never a benched one."""
        chosen = sorted(set(release.assigned.values()))
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

    def nodes(self, now: float) -> list[NodeView]:
        return [
            NodeView(
                n.node_id, dict(n.labels), n.address, now - n.last_seen <= self.dead_after, n.last_seen, n.releases
            )
            for n in sorted(self._nodes.values(), key=lambda n: n.node_id)
        ]

    def assignments(self, key: str) -> dict[str, frozenset[int]]:
        """Fetcher -> the pieces it fetches from the origin now (what its next report is answered)."""
        release = self._releases.get(key)
        out: dict[str, set[int]] = {}
        for piece, fetcher in release.assigned.items() if release is not None else ():
            out.setdefault(fetcher, set()).add(piece)
        return {f: frozenset(p) for f, p in out.items()}

    def fetchers_of(self, key: str) -> dict[str, int]:
        """Fetcher -> pieces it still has to fetch from the origin."""
        release = self._releases.get(key)
        return _shares(release) if release is not None else {}


def _shares(release: _Release) -> dict[str, int]:
    counts: dict[str, int] = {}
    for fetcher in release.assigned.values():
        counts[fetcher] = counts.get(fetcher, 0) + 1
    return counts


def _place(labels: Mapping[str, str]) -> tuple[str, str]:
    return labels.get("zone", ""), labels.get("rack", "")


def _same(a: Mapping[str, str], b: Mapping[str, str], label: str) -> bool:
    return a.get(label) is not None and a.get(label) == b.get(label)
