"""cluster.split: how cluster nodes without a coordinator share the origin's pieces, as pure rules."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from swarmhub.cluster.split import Split, owner

NODES = [f"-SH0100-node{i:08d}".encode() for i in range(8)]


def _shares(members: list[bytes], wanted: range, held: set[int], now: float = 0.0) -> dict[bytes, set[int]]:
    return {m: Split(m).share(now, wanted, held, members) for m in members}


@given(st.integers(1, 8), st.integers(1, 400), st.sets(st.integers(0, 399)))
def test_nodes_that_see_each_other_deal_every_unheld_piece_exactly_once(n: int, pieces: int, held: set[int]) -> None:
    members = NODES[:n]
    shares = _shares(members, range(pieces), held)
    dealt = [p for share in shares.values() for p in share]
    assert sorted(dealt) == [p for p in range(pieces) if p not in held]


def test_the_shares_are_about_even() -> None:
    shares = _shares(NODES, range(4000), set())
    assert all(400 <= len(s) <= 600 for s in shares.values()), [len(s) for s in shares.values()]


def test_a_node_another_cannot_see_costs_duplicates_never_a_gap() -> None:
    a, b, c = NODES[:3]
    shares = {a: Split(a).share(0, range(300), set(), [b, c]), b: Split(b).share(0, range(300), set(), [a])}
    shares[c] = Split(c).share(0, range(300), set(), [a])
    assert set().union(*shares.values()) == set(range(300))
    assert shares[c] >= {p for p in range(300) if owner(p, [a, b, c]) == c}  # the owner takes its own


def test_a_member_that_leaves_hands_on_only_its_own_pieces() -> None:
    me = Split(NODES[0])
    before = me.share(0, range(1000), set(), NODES[1:4])
    after = me.share(1, range(1000), set(), NODES[1:3])  # NODES[3] disconnected
    gone = {p for p in range(1000) if owner(p, NODES[:4]) == NODES[3]}
    assert before < after and after - before <= gone


def test_a_stalled_member_is_dropped_and_its_pieces_go_to_the_rest() -> None:
    a, b, c = NODES[:3]
    split = Split(a, patience=10)
    wanted = range(300)
    mine = split.share(0, wanted, set(), [b, c])
    b_share = {p for p in wanted if owner(p, [a, b, c]) == b}
    held: set[int] = set()
    for t in range(1, 10):  # a and c deliver, b does not
        held |= {p for p in wanted if owner(p, [a, b, c]) != b and p % 10 < t}
        assert split.share(t, wanted, held, [b, c]) == mine - held
    assert b not in split.dropped
    held |= mine | {p for p in wanted if owner(p, [a, b, c]) == c}
    later = split.share(11, wanted, held, [b, c])
    assert split.dropped == {b} and split.live == tuple(sorted([a, c]))
    assert later == {p for p in b_share if owner(p, [a, c]) == a}  # half of b's, by the same hash c uses


def test_nobody_is_dropped_while_this_node_stalls_too() -> None:
    """The origin refusing everyone: every share stands still, and dropping each other would make every
    node fetch everything when it answers again."""
    a, b, c = NODES[:3]
    split = Split(a, patience=10)
    mine = split.share(0, range(300), set(), [b, c])
    assert split.share(60, range(300), set(), [b, c]) == mine and not split.dropped


def test_a_member_whose_share_is_done_never_stalls() -> None:
    a, b = NODES[:2]
    split = Split(a, patience=10)
    wanted = range(100)
    theirs = {p for p in wanted if owner(p, [a, b]) == b}
    split.share(0, wanted, theirs, [b])
    for t in range(1, 40):  # a fetches slowly but steadily; b is done and waits
        held = theirs | {p for p in wanted if p < t * 2}
        split.share(t * 5, wanted, held, [b])
    assert not split.dropped


def test_pieces_a_peer_holds_are_never_fetched() -> None:
    a, b = NODES[:2]
    assert Split(a).share(0, range(50), set(range(50)), [b]) == set()
