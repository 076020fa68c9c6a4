"""The coordinator's brain: every missing piece has exactly one fetcher, shares move when fetchers die or stall."""

from __future__ import annotations

import tracemalloc

import pytest
from hypothesis import given
from hypothesis import strategies as st

from swarmhub.bt.metainfo import MAX_PIECES
from swarmhub.cluster.brain import (
    MAX_RELEASES,
    Brain,
    ReleaseReport,
    bits_of,
    decode_bitfield,
    decode_pieces,
    encode_bitfield,
    encode_pieces,
    pieces_of,
)

KEY = "ab" * 32
PIECES = 120


def _report(have: set[int] | frozenset[int] = frozenset()) -> list[ReleaseReport]:
    return [ReleaseReport(KEY, PIECES, bits_of(have))]


def _round(brain: Brain, nodes: dict[str, set[int]], now: float, labels: dict[str, dict[str, str]] | None = None):
    """Every node reports once; returns the brain's assignments after the round (what each node's next
    report is answered: one consistent view)."""
    for i, (n, have) in enumerate(nodes.items()):
        brain.report(n, (labels or {}).get(n, {}), ("198.18.0.1", 6881 + i), _report(have), now)
    current = brain.assignments(KEY)
    return {n: frozenset(pieces_of(current.get(n, 0))) for n in nodes}


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


def test_a_coordinator_started_again_leaves_the_runs_under_way_where_they_are() -> None:
    """A chaos run: the coordinator restarted mid-preheat dealt the pieces afresh, and the runs the fetchers
    had under way were fetched a second time by the nodes they were dealt to (origin/F 1.25)."""
    brain = Brain(fetchers=3)  # the new one: it knows no shares
    under_way = {"a": set(range(0, 10)), "b": set(range(40, 52)), "c": set()}
    for now in (0.0, 0.5, 1.5):  # in the first second it deals nothing new, but keeps what is under way
        for i, (node, fetching) in enumerate(under_way.items()):
            report = ReleaseReport(KEY, PIECES, 0, fetching=bits_of(fetching))
            brain.report(node, {}, ("198.18.0.1", 6881 + i), [report], now)
        shares = {n: set(pieces_of(bits)) for n, bits in brain.assignments(KEY).items()}
        assert shares["a"] >= under_way["a"] and shares["b"] >= under_way["b"], now
    _disjoint_cover({n: frozenset(s) for n, s in shares.items()}, set(range(PIECES)))


def test_a_stalled_fetcher_gets_no_share_back_for_the_runs_it_still_has_under_way() -> None:
    """A fetcher waiting out an origin's 429s says its whole share is under way: the share still goes to the
    others (it drops those runs), and is not handed back to it because it says so."""
    brain = Brain(fetchers=2, dead_after=100, stall_after=5)
    nodes: dict[str, set[int]] = {"a": set(), "b": set(), "c": set()}
    _round(brain, nodes, 0.0)
    shares = _round(brain, nodes, 1.0)
    slow, quick = (n for n, s in shares.items() if s)
    under_way = set(shares[slow])
    for t in range(2, 12):
        nodes[quick] |= set(sorted(shares[quick])[: t * 5])
        for i, (node, have) in enumerate(nodes.items()):
            fetching = bits_of(under_way) if node == slow else 0
            report = ReleaseReport(KEY, PIECES, bits_of(have), fetching=fetching)
            brain.report(node, {}, ("198.18.0.1", 6881 + i), [report], float(t))
        shares = {n: frozenset(pieces_of(brain.assignments(KEY).get(n, 0))) for n in nodes}
    assert not shares[slow], "the stalled fetcher got its share back"
    _disjoint_cover(shares, set(range(PIECES)) - nodes[quick])


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
    bits = bits_of(pieces)
    assert decode_bitfield(encode_bitfield(bits, n), n) == bits and pieces_of(bits) == sorted(pieces)


def test_bitfields_are_bittorrents_on_the_wire() -> None:
    """Piece 0 is the high bit of byte 0 (BEP 3), as the nodes write them; in the brain it is bit 0."""
    assert encode_bitfield(bits_of({0}), 8) == "80" and encode_bitfield(bits_of({7, 8}), 12) == "0180"
    assert decode_bitfield("0180", 12) == 0b1_1000_0000 and encode_pieces({0, 9}, 10) == "8040"


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
        return brain.report(node, {}, None, [ReleaseReport(KEY, PIECES, 0, origin_bytes)], now)[KEY]

    report("a", 0, 0.0)
    report("b", 0, 0.0)
    mine = report("a", 0, 1.0) or report("b", 0, 1.0)
    fetcher = "a" if report("a", 0, 1.0) else "b"
    for t in range(2, 20):  # no piece lands, but its GETs bring bytes every second
        assert report(fetcher, t * 100_000, float(t)) == mine
    for t in range(20, 27):  # now nothing moves at all: stalled, its share goes to the other node
        report(fetcher, 19 * 100_000, float(t))
    assert not brain.assignments(KEY).get(fetcher)


def test_a_report_past_the_limits_is_refused_before_anything_is_held() -> None:
    """The review's report: num_pieces = 16 M left 1.23 GB resident (sets of ints). At most libtorrent's
    2^21 pieces a release, MAX_RELEASES releases a report."""
    with pytest.raises(ValueError, match="at most 2097152 pieces"):
        ReleaseReport(KEY, 16 << 20, 0)
    with pytest.raises(ValueError, match="have: pieces past the last of 8"):
        ReleaseReport(KEY, 8, 1 << 8)
    brain = Brain()
    with pytest.raises(ValueError, match=f"at most {MAX_RELEASES} releases"):
        brain.report("a", {}, None, [ReleaseReport(f"{i:064x}", 1, 0) for i in range(MAX_RELEASES + 1)], 0.0)
    assert brain.nodes(0.0) == []


def test_the_most_pieces_a_release_can_have_are_held_as_bitfields() -> None:
    """2^21 pieces, three nodes that need them all: the brain deals them all, once, holding a few bitfields
    (256 KiB each), where sets and a piece -> fetcher dict took hundreds of MB."""
    brain = Brain(fetchers=2)
    nodes = ("a", "b", "c")
    tracemalloc.start()
    try:
        for now in (0.0, 1.0, 2.0):
            for node in nodes:
                brain.report(node, {}, None, [ReleaseReport(KEY, MAX_PIECES, 0)], now)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    shares = brain.assignments(KEY)
    assert len(shares) == 2 and sum(bits.bit_count() for bits in shares.values()) == MAX_PIECES
    first, second = shares.values()
    assert not first & second and first | second == (1 << MAX_PIECES) - 1
    assert peak < 16 << 20, f"{peak / 2**20:.1f} MiB"


@given(
    st.lists(st.tuples(st.sets(st.integers(0, 39)), st.sets(st.integers(0, 39)) | st.none()), min_size=1, max_size=5),
    st.integers(1, 3),
)
def test_each_needed_piece_has_one_fetcher_that_needs_it(nodes: list[tuple[set[int], set[int] | None]], k: int) -> None:
    """Partial pulls (each node needs some pieces, has some): every piece some node needs and none has is
    fetched by exactly one node, which needs it."""
    brain = Brain(fetchers=k)
    reports = {f"n{i}": ReleaseReport(KEY, 40, bits_of(have), wanted=None if want is None else bits_of(want))
               for i, (have, want) in enumerate(nodes)}  # fmt: skip
    for now in (0.0, 1.0):
        for node, report in reports.items():
            brain.report(node, {}, None, [report], now)
    shares = brain.assignments(KEY)
    held = needed = dealt = 0
    for report in reports.values():
        held |= report.have
        needed |= report.needs
    for fetcher, bits in shares.items():
        assert bits and not bits & dealt and not bits & ~reports[fetcher].needs
        dealt |= bits
    assert dealt == needed & ~held


def test_a_node_silent_for_long_is_forgotten_with_the_releases_only_it_reported() -> None:
    brain = Brain(dead_after=5, stall_after=1000, forget_after=60)
    for now in (0.0, 1.0):
        brain.report("gone", {}, ("198.18.0.9", 6881), _report(), now)
    other = [ReleaseReport("cd" * 32, 8, 0)]
    for now in range(0, 60, 5):
        brain.report("here", {}, ("198.18.0.1", 6881), other, float(now))
    assert [(n.node_id, n.alive) for n in brain.nodes(55.0)] == [("gone", False), ("here", True)]  # dead, shown
    assert brain.assignments(KEY)  # nobody reported it since: its plan stands, stale
    brain.report("here", {}, ("198.18.0.1", 6881), other, 62.0)
    assert [n.node_id for n in brain.nodes(62.0)] == ["here"] and brain.node("gone", 62.0) is None
    assert brain.assignments(KEY) == {} and brain.fetchers_of(KEY) == {}
    assert brain.assignments("cd" * 32)  # what a live node still reports is kept
