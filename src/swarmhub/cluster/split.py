"""How cluster nodes without a coordinator still take each origin byte about once, without I/O.

A node that lost its coordinator (or never reached one) decides alone which pieces it fetches from the origin.
Left to "whatever no peer holds", every node of a fresh cluster takes the same first pieces, since nobody holds
anything yet: origin/F 1.9-3.8 at N = 8 with the coordinator killed before it dealt shares (docs/NOTES.md).
The rules, all here:

- The members a node sees are itself and its connected peers, known by their peer ids (cluster nodes fix one
  per session, ``engine.Engine(peer_id=...)``; libtorrent's are random per torrent, so a node cannot know
  its own otherwise).
- Of the pieces it wants that nobody it sees holds, a node fetches those it owns: rendezvous (highest random
  weight) hashing of the piece over the live members. Nodes that see the same members agree on every share
  without a word; a piece's owner always takes it (it sees itself), so a member missing from another's view
  costs a duplicate, never a gap. When a member leaves, only its pieces move, spread over the rest.
- A member whose share holds pieces nobody holds, none of which became held for ``patience`` seconds, stalled
  (killed, its link cut, its origin refusing it): it is dropped for good (a restarted node comes back with a
  new peer id), and its pieces are dealt to the others, who see the same stall at about the same time.
- A node that stalled itself drops nobody: when the origin refuses everyone, everyone stalls, and dropping
  each other would make every node fetch everything once the origin answers again.
- A member's clock restarts when the live members change, since its share changed with them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable, Set

__all__ = ["PATIENCE", "Split", "owner"]

PATIENCE = 10.0  # seconds a member's share may stand still; an origin run is sized to take ~2 s (node.pull)


def _weight(piece: int, member: bytes) -> bytes:
    return hashlib.blake2b(piece.to_bytes(8, "big"), digest_size=8, key=member[:64]).digest()


def owner(piece: int, members: Iterable[bytes]) -> bytes:
    """The member that fetches ``piece``: the highest weight of (piece, member); any order of members."""
    return max(members, key=lambda m: (_weight(piece, m), m))


class Split:
    """One node's view of who fetches what, for one torrent. Feed it what the node sees, as often as it likes
    (``share``); it reads no clock."""

    def __init__(self, me: bytes, *, patience: float = PATIENCE) -> None:
        self.me = me
        self.patience = patience
        self.dropped: set[bytes] = set()
        self._live: tuple[bytes, ...] = (me,)
        self._owners: dict[int, bytes] = {}  # piece -> its owner among ``_live``
        self._since: dict[bytes, float] = {}  # member -> when its share last shrank (or changed)
        self._unheld: dict[bytes, int] = {}  # member -> pieces of its share nobody held, when last counted

    @property
    def live(self) -> tuple[bytes, ...]:
        return self._live

    def share(self, now: float, wanted: Collection[int], held: Set[int], peers: Iterable[bytes]) -> set[int]:
        """The pieces of ``wanted`` this node fetches from the origin now: those nobody holds (``held``: by this
        node or a connected peer) that it owns among the live members (itself and ``peers``, less the dropped)."""
        self._see(now, {p for p in peers if p != self.me})
        unheld = [p for p in wanted if p not in held]
        by_member = dict.fromkeys(self._live, 0)
        for piece in unheld:
            by_member[self._owner(piece)] += 1
        for member, count in by_member.items():
            if count == 0 or count < self._unheld.get(member, count + 1):
                self._since[member] = now
            self._unheld[member] = count
        if not self._stalled(self.me, now):
            stalled = {m for m in self._live if m != self.me and self._stalled(m, now)}
            if stalled:
                self.dropped |= stalled
                self._see(now, set(self._live) - {self.me})
                return self.share(now, wanted, held, self._live)
        return {p for p in unheld if self._owner(p) == self.me}

    def _see(self, now: float, peers: set[bytes]) -> None:
        live = tuple(sorted({self.me} | (peers - self.dropped)))
        if live == self._live:
            return
        self._live = live
        self._owners.clear()
        self._since = dict.fromkeys(live, now)
        self._unheld = {}

    def _stalled(self, member: bytes, now: float) -> bool:
        return self._unheld.get(member, 0) > 0 and now - self._since.get(member, now) > self.patience

    def _owner(self, piece: int) -> bytes:
        found = self._owners.get(piece)
        if found is None:
            found = self._owners[piece] = owner(piece, self._live)
        return found
