"""The coordinator's brain: every missing piece has exactly one fetcher, shares move when fetchers die or stall."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from swarmhub.cluster.brain import Brain, ReleaseReport, decode_pieces, encode_pieces

KEY = "ab" * 32
PIECES = 120


def _report(have: set[int] | frozenset[int] = frozenset()) -> list[ReleaseReport]:
    return [ReleaseReport(KEY, PIECES, frozenset(have))]


def _round(brain: Brain, nodes: dict[str, set[int]], now: float, labels: dict[str, dict[str, str]] | None = None):
    """Every node reports once; returns the brain's assignments after the round (what each node's next
    report is answered: one consistent view)."""
    for i, (n, have) in enumerate(nodes.items()):
        brain.report(n, (labels or {}).get(n, {}), ("198.18.0.1", 6881 + i), _report(have), now)
    current = brain.assignments(KEY)
    return {n: current.get(n, frozenset()) for n in nodes}


def _disjoint_cover(shares: dict[str, frozenset[int]], missing: set[int]) -> None:
    seen: set[int] = set()
    for share in shares.values():
        assert not share & seen, "a piece has two fetchers: the origin would send it twice"
        seen |= share
    assert seen == missing


def test_missing_pieces_are_dealt_once_in_contiguous_even_shares() -> None:
    brain = Brain(fetchers=3)
    shares = _round(brain, {f"n{i}": set() for i in range(6)}, 0.0)
    shares = _round(brain, {f"n{i}": set() for i in range(6)}, 1.0)  # everyone has reported: shares even out
    _disjoint_cover(shares, set(range(PIECES)))
    fetching = {n: s for n, s in shares.items() if s}
    assert len(fetching) == 3
    for share in fetching.values():
        assert abs(len(share) - PIECES / 3) <= 9  # within the slack of an even split
        assert max(share) - min(share) + 1 <= len(share) * 2  # long runs, not scattered pieces


def test_held_pieces_are_never_fetched_and_a_complete_swarm_fetches_nothing() -> None:
    brain = Brain(fetchers=2)
    _round(brain, {"a": set(range(0, 60)), "b": set()}, 0.0)
    shares = _round(brain, {"a": set(range(0, 60)), "b": set()}, 1.0)
    _disjoint_cover(shares, set(range(60, PIECES)))
    assert _round(brain, {"a": set(range(PIECES)), "b": set()}, 2.0) == {"a": frozenset(), "b": frozenset()}


def test_a_dead_fetchers_share_goes_to_the_others() -> None:
    brain = Brain(fetchers=2, dead_after=5, stall_after=100)
    _round(brain, {"a": set(), "b": set(), "c": set()}, 0.0)
    shares = _round(brain, {"a": set(), "b": set(), "c": set()}, 1.0)
    dead = next(n for n, s in shares.items() if s)
    done = set(list(shares[dead])[:10])  # it fetched some before dying: a peer has those now
    alive = {n: set() for n in shares if n != dead}
    first_alive = next(iter(alive))
    alive[first_alive] = done
    later = _round(brain, alive, 10.0)  # the dead one stopped reporting 9 s ago
    _disjoint_cover(later, set(range(PIECES)) - done)
    assert dead not in later and not brain.alive(dead, 10.0)


def test_a_stalled_fetcher_loses_its_share_and_is_benched() -> None:
    brain = Brain(fetchers=2, dead_after=100, stall_after=5)
    nodes: dict[str, set[int]] = {"a": set(), "b": set(), "c": set()}
    _round(brain, nodes, 0.0)
    shares = _round(brain, nodes, 1.0)
    slow, quick = (n for n, s in shares.items() if s)
    for t in range(2, 9):  # the quick one makes progress every second, the slow one none
        nodes[quick] |= set(sorted(shares[quick])[: t * 5])
        shares = _round(brain, nodes, float(t))
    assert not shares[slow], "the stalled fetcher still holds pieces"
    _disjoint_cover(shares, set(range(PIECES)) - nodes[quick])
    assert "c" in {n for n, s in shares.items() if s}  # the third node took over


def test_fetchers_spread_over_racks_and_peers_come_rack_first() -> None:
    labels = {
        "a1": {"zone": "z1", "rack": "r1"},
        "a2": {"zone": "z1", "rack": "r1"},
        "b1": {"zone": "z1", "rack": "r2"},
        "c1": {"zone": "z2", "rack": "r3"},
    }
    brain = Brain(fetchers=3)
    _round(brain, {n: set() for n in labels}, 0.0, labels)
    shares = _round(brain, {n: set() for n in labels}, 1.0, labels)
    assert {n for n, s in shares.items() if s} == {"a1", "b1", "c1"}  # one per rack
    addresses = [("198.18.0.1", 6881 + i) for i in range(4)]  # a1, a2, b1, c1 in report order
    ordered = brain.order_peers("a1", list(reversed(addresses)))
    assert set(ordered[:2]) == {("198.18.0.1", 6881), ("198.18.0.1", 6882)}  # itself and its rack mate
    assert ordered[2] == ("198.18.0.1", 6883)  # same zone
    assert brain.order_peers(None, addresses) == addresses


@given(st.integers(1, 300).flatmap(lambda n: st.tuples(st.just(n), st.sets(st.integers(0, n - 1)))))
def test_bitfields_round_trip(case: tuple[int, set[int]]) -> None:
    n, pieces = case
    assert decode_pieces(encode_pieces(pieces, n), n) == pieces


def test_bad_bitfields_are_refused() -> None:
    with pytest.raises(ValueError):
        decode_pieces("zz", 8)
    with pytest.raises(ValueError):
        decode_pieces("ff", 4)  # bits past the last piece
    with pytest.raises(ValueError):
        decode_pieces("ff00", 8)  # wrong length


def test_a_fetcher_whose_origin_bytes_grow_is_not_stalled() -> None:
    """Over a slow origin the first long ranged GETs land no piece for a while: bytes arriving are progress."""
    brain = Brain(fetchers=1, dead_after=100, stall_after=5)

    def report(node: str, origin_bytes: int, now: float) -> frozenset[int]:
        return brain.report(node, {}, None, [ReleaseReport(KEY, PIECES, frozenset(), origin_bytes)], now)[KEY]

    report("a", 0, 0.0)
    report("b", 0, 0.0)
    mine = report("a", 0, 1.0) or report("b", 0, 1.0)
    fetcher = "a" if report("a", 0, 1.0) else "b"
    for t in range(2, 20):  # no piece lands, but its GETs bring bytes every second
        assert report(fetcher, t * 100_000, float(t)) == mine
    for t in range(20, 27):  # now nothing moves at all: stalled, its share goes to the other node
        report(fetcher, 19 * 100_000, float(t))
    assert not brain.assignments(KEY).get(fetcher)
