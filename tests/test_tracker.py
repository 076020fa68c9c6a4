"""The HTTP tracker: query parsing, swarm state and bencoded answers (no I/O), the app, and real clients.

End to end, a libtorrent seed and a Debian client find each other through the tracker alone: aria2c gets
the seed from its announce; transmission (which drops loopback peers a tracker lists, see
support/clients.py) is found by the seed, which re-announces every second to a short-interval tracker.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import json
import random
import re
import signal
import socket
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_from_bytes, unquote_to_bytes

import anyio
import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from support.cli import sigint_default
from support.clients import (
    ARIA2C,
    QBITTORRENT_NOX,
    TRANSMISSION_CLI,
    QBittorrent,
    aria2_download,
    aria2_seed,
    free_port,
    transmission_download,
)
from support.layouts import COMMIT, NAME, create_json, write_layout
from support.lt_peer import LibtorrentPeer
from swarmhub.bt.bencode import decode, encode
from swarmhub.bt.tracker import (
    DEFAULT_MAX_ADDRESS_PEERS,
    DEFAULT_MAX_SWARM_PEERS,
    DEFAULT_NUMWANT,
    MAX_NUMWANT,
    AnnounceReply,
    AnnounceRequest,
    IPAddress,
    SwarmPeer,
    Swarms,
    SwarmStats,
    _unquote,
    encode_announce,
    encode_failure,
    encode_scrape,
    parse_announce,
    parse_scrape,
    peer_ip,
)
from swarmhub.cli.main import build_parser
from swarmhub.errors import TrackerRequestError
from swarmhub.tracker import TrackerServer, protocol, tracker_app
from swarmhub.tracker.http import MAX_HEAD, HTTPError, RequestHead, client_host, parse_head, render

HASH = bytes(range(236, 256))  # every byte a text decoder would mangle
PEER = b"-LT2110-" + bytes([0, 0xFF, 0x25, 0x26, 0x2B, 0x3D, 0x20, 0x7F, 0x80, 0xC3, 0xA9, 0x00])
V4 = ipaddress.ip_address("10.0.0.1")
V6 = ipaddress.ip_address("2001:db8::1")


def query(**fields: bytes | str | int) -> bytes:
    """An announce query as clients write it: every byte outside ``A-Za-z0-9-._~`` percent-encoded."""
    base: dict[str, bytes | str | int] = {
        "info_hash": HASH,
        "peer_id": PEER,
        "port": 6881,
        "uploaded": 0,
        "downloaded": 0,
        "left": 100,
    }
    base.update(fields)
    parts = []
    for name, value in base.items():
        raw = value if isinstance(value, bytes) else str(value).encode()
        parts.append(f"{name}={quote_from_bytes(raw, safe='')}")
    return "&".join(parts).encode()


def announce(**fields: object) -> AnnounceRequest:
    values: dict[str, object] = {
        "info_hash": HASH,
        "peer_id": PEER,
        "port": 6881,
        "uploaded": 0,
        "downloaded": 0,
        "left": 100,
    }
    values.update(fields)
    return AnnounceRequest(**values)  # type: ignore[arg-type]


def peer_id(n: int) -> bytes:
    return b"-XX0000-" + n.to_bytes(12, "big")


def address(n: int) -> IPAddress:
    """The n-th of many peers' addresses: each its own (one address holds a few peers of a swarm at most)."""
    return ipaddress.IPv4Address(0x0A000000 + 1 + n)  # 10.0.0.1 and up


# ------------------------------------------------------------------------------------------------ parsing


def test_parse_announce_takes_raw_bytes() -> None:
    request = parse_announce(query(event="started", numwant=10, uploaded=5, downloaded=7, left=0, compact=1))
    assert request == AnnounceRequest(HASH, PEER, 6881, 5, 7, 0, "started", True, False, 10, None)


def test_parse_announce_as_libtorrent_sends_it() -> None:
    # copied from a libtorrent 2.1.1 announce (lowercase escapes, unescaped peer_id, extra fields)
    raw = (
        b"info_hash=%0d%87%90%14Wa%9bB%f3E%df-%9f%60%c2M%d9%81%5e%7d&peer_id=-LT2110-OqeVG377kAbd&port=42629"
        b"&uploaded=0&downloaded=0&left=0&corrupt=0&key=2A2C3355&event=started&numwant=200&compact=1"
        b"&no_peer_id=1&supportcrypto=1&redundant=0"
    )
    request = parse_announce(raw)
    assert request.info_hash == bytes.fromhex("0d87901457619b42f345df2d9f60c24dd9815e7d")
    assert request.peer_id == b"-LT2110-OqeVG377kAbd"
    assert (request.port, request.left, request.event, request.numwant) == (42629, 0, "started", 200)
    assert request.compact and request.no_peer_id


@given(st.binary(min_size=20, max_size=20), st.binary(min_size=20, max_size=20))
def test_any_twenty_bytes_survive_percent_encoding(info_hash: bytes, peer: bytes) -> None:
    request = parse_announce(query(info_hash=info_hash, peer_id=peer))
    assert (request.info_hash, request.peer_id) == (info_hash, peer)


@given(st.lists(st.sampled_from([b"%", b"\\", b"x", b"+", b"0", b"7", b"a", b"F", b"g", b"\n", b"'", b"\xff"])))
def test_unquote_is_urllibs(parts: list[bytes]) -> None:
    raw = b"".join(parts)
    assert _unquote(raw) == unquote_to_bytes(raw.replace(b"+", b" "))


def test_plus_is_a_space_as_in_any_form_query() -> None:
    raw = query(peer_id=b"x" * 20).replace(b"peer_id=" + b"x" * 20, b"peer_id=" + b"+" * 20)
    assert parse_announce(raw).peer_id == b" " * 20


def test_defaults_and_caps() -> None:
    request = parse_announce(query())
    assert (request.event, request.compact, request.no_peer_id, request.numwant) == ("", True, False, DEFAULT_NUMWANT)
    assert parse_announce(query(numwant=10_000)).numwant == MAX_NUMWANT
    assert parse_announce(query(numwant=0)).numwant == 0
    assert parse_announce(query(compact=0)).compact is False
    assert parse_announce(query(event="empty")).event == ""
    assert parse_announce(query(event="paused")).event == "paused"  # BEP 21


def test_ip_parameter() -> None:
    assert parse_announce(query(ip="192.0.2.7")).ip == ipaddress.ip_address("192.0.2.7")
    assert parse_announce(query(ip="::ffff:192.0.2.7")).ip == ipaddress.ip_address("192.0.2.7")
    assert parse_announce(query(ip="2001:db8::5")).ip == ipaddress.ip_address("2001:db8::5")


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (query(info_hash=HASH[:19]), "info_hash must be 20 bytes, got 19"),
        (query(info_hash=HASH + b"x"), "info_hash must be 20 bytes, got 21"),
        (query(peer_id=b""), "peer_id must be 20 bytes, got 0"),
        (query().replace(b"&port=6881", b""), "missing port"),
        (query().replace(b"info_hash=", b"infohash="), "missing info_hash"),
        (query().replace(b"&left=100", b""), "missing left"),
        (query(port=0), "port must be from 1 to 65535"),
        (query(port=65536), "port must be a whole number from 0 to 65535"),
        (query(port="abc"), "port must be a whole number from 0 to 65535"),
        (query(port="-1"), "port must be a whole number from 0 to 65535"),
        (query(port=" 80"), "port must be a whole number from 0 to 65535"),
        (query(port="٣"), "port must be a whole number from 0 to 65535"),  # a digit, but not ASCII
        (query(left="1e3"), "left must be a whole number from 0 to 9223372036854775807"),
        (query(uploaded=2**64), "uploaded must be a whole number from 0 to 9223372036854775807"),
        (query(event="finished"), "event must be started, completed, stopped or empty"),
        (query(compact="yes"), "compact must be 0 or 1"),
        (query(numwant="-1"), "numwant must be a whole number from 0 to 9223372036854775807"),
        (query(ip="example.com"), "ip must be an IPv4 or IPv6 address"),
        (query(ip="0.0.0.0"), "ip must be a unicast address"),
        (query(ip=b"\xff"), "ip must be an IPv4 or IPv6 address"),
        (query() + b"&port=6882", "port given 2 times"),
        (query() + b"&x=" + b"a" * 9000, "query longer than 8192 bytes"),
        (b"", "missing info_hash"),
        (b"%%%&&&===", "missing info_hash"),
    ],
)
def test_hostile_announce_is_one_line_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(TrackerRequestError) as caught:
        parse_announce(raw)
    assert caught.value.message == reason
    assert "\n" not in reason


@given(st.binary(max_size=400))
def test_any_bytes_parse_or_raise_our_error(raw: bytes) -> None:
    with contextlib.suppress(TrackerRequestError):
        parse_announce(raw)
    with contextlib.suppress(TrackerRequestError):
        parse_scrape(raw)


def test_parse_scrape() -> None:
    other = b"\x01" * 20
    raw = b"&".join(b"info_hash=" + quote_from_bytes(h, safe="").encode() for h in (HASH, other, HASH))
    assert parse_scrape(raw) == (HASH, other)
    with pytest.raises(TrackerRequestError, match="missing info_hash"):
        parse_scrape(b"")
    with pytest.raises(TrackerRequestError, match="must be 20 bytes"):
        parse_scrape(b"info_hash=abc")
    with pytest.raises(TrackerRequestError, match="at most 100"):
        parse_scrape(b"&".join([b"info_hash=" + b"a" * 20] * 101))


def test_peer_ip_believes_ip_only_from_loopback() -> None:
    assert peer_ip("127.0.0.1", V4) == V4
    assert peer_ip("::1", V6) == V6
    assert peer_ip("203.0.113.9", V4) == ipaddress.ip_address("203.0.113.9")
    assert peer_ip("::ffff:203.0.113.9", None) == ipaddress.ip_address("203.0.113.9")
    with pytest.raises(TrackerRequestError, match="cannot list a peer at 'testclient'"):
        peer_ip("testclient", None)


# -------------------------------------------------------------------------------------------------- state


def test_swarm_counts_and_excludes_the_asker() -> None:
    swarms = Swarms(rng=random.Random(0))
    first = swarms.announce(announce(peer_id=peer_id(1), left=0, event="started"), V4, now=0)
    assert first.peers == () and first.stats == SwarmStats(1, 0, 0)
    second = swarms.announce(announce(peer_id=peer_id(2), port=7000, event="started"), V6, now=1)
    assert second.peers == (SwarmPeer(peer_id(1), V4, 6881),)
    assert second.stats == SwarmStats(complete=1, incomplete=1, downloaded=0)
    again = swarms.announce(announce(peer_id=peer_id(2), port=7000), V6, now=2)  # a re-announce: still one peer
    assert again.stats == SwarmStats(1, 1, 0) and again.peers == (SwarmPeer(peer_id(1), V4, 6881),)


def test_seeds_are_told_about_leechers_first_and_seeders_only_to_fill_numwant() -> None:
    """``left=0`` is a seed, and also how aria2 announces a magnet it has no metadata for: told leechers only,
    such a client never found the seeder."""
    swarms = Swarms(rng=random.Random(0))
    for n in range(3):
        swarms.announce(announce(peer_id=peer_id(n), left=0), V4, now=0)
    for n in (8, 9):
        swarms.announce(announce(peer_id=peer_id(n), left=5), V6, now=0)
    reply = swarms.announce(announce(peer_id=peer_id(0), left=0, numwant=3), V4, now=1)
    assert {p.peer_id for p in reply.peers[:2]} == {peer_id(8), peer_id(9)}  # the leechers, both
    assert reply.peers[2].peer_id in {peer_id(1), peer_id(2)}  # then a seeder, never the asker
    assert reply.stats == SwarmStats(3, 2, 0)
    full = swarms.announce(announce(peer_id=peer_id(0), left=0, numwant=1), V4, now=2)
    assert full.peers[0].peer_id in {peer_id(8), peer_id(9)}  # numwant filled by leechers: no seeder
    magnet = swarms.announce(announce(peer_id=peer_id(7), left=0, event="started"), V4, now=3)
    assert peer_id(0) in {p.peer_id for p in magnet.peers}  # the seeder, found by a left=0 announce


def test_completed_and_stopped() -> None:
    swarms = Swarms(rng=random.Random(0))
    swarms.announce(announce(peer_id=peer_id(1), event="started"), V4, now=0)
    done = swarms.announce(announce(peer_id=peer_id(1), left=0, event="completed"), V4, now=5)
    assert done.stats == SwarmStats(complete=1, incomplete=0, downloaded=1)
    gone = swarms.announce(announce(peer_id=peer_id(1), left=0, event="stopped"), V4, now=6)
    assert gone == AnnounceReply(1800, 60, SwarmStats(0, 0, 1), ())
    assert swarms.peers(HASH) == ()
    assert swarms.scrape([HASH], now=7) == {HASH: SwarmStats(0, 0, 1)}  # the count outlives the peers


def test_numwant_samples_with_the_given_rng() -> None:
    def run(seed: int, numwant: int) -> tuple[SwarmPeer, ...]:
        swarms = Swarms(rng=random.Random(seed))
        for n in range(100):
            swarms.announce(announce(peer_id=peer_id(n)), address(n), now=0)
        return swarms.announce(announce(peer_id=peer_id(0), numwant=numwant), address(0), now=1).peers

    picked = run(1, 30)
    assert len(picked) == 30 and len(set(picked)) == 30 and peer_id(0) not in {p.peer_id for p in picked}
    assert run(1, 30) == picked and run(2, 30) != picked
    assert len(run(1, 200)) == 99 and run(1, 0) == ()


def test_peers_expire_without_a_clock() -> None:
    swarms = Swarms(rng=random.Random(0), interval=100, peer_ttl=250)
    swarms.announce(announce(peer_id=peer_id(1)), V4, now=0)
    swarms.announce(announce(peer_id=peer_id(2)), V4, now=200)
    assert {p.peer_id for p in swarms.announce(announce(peer_id=peer_id(3)), V4, now=249).peers} == {
        peer_id(1),
        peer_id(2),
    }
    assert {p.peer_id for p in swarms.announce(announce(peer_id=peer_id(3)), V4, now=251).peers} == {peer_id(2)}
    swarms.sweep(now=1000)
    assert len(swarms) == 0  # idle swarms are dropped


def test_a_min_interval_longer_than_the_interval_cannot_expire_live_peers() -> None:
    """bench/chaos.py's tracker said interval 5, min interval 60: its peers waited the min interval, were
    forgotten after two intervals, and a node restarted 12 s in got no peer (stalled for 60 s)."""
    swarms = Swarms(rng=random.Random(0), interval=5, min_interval=60)
    first = swarms.announce(announce(peer_id=peer_id(1)), V4, now=0)
    assert first.interval == 5 and first.min_interval <= 5  # a client may come back within the peers' lifetime
    again = swarms.announce(announce(peer_id=peer_id(1)), V4, now=first.min_interval)  # when it may
    late = swarms.announce(announce(peer_id=peer_id(2)), V4, now=again.min_interval + 1)
    assert [p.peer_id for p in late.peers] == [peer_id(1)]


def test_sweep_runs_by_itself_every_interval() -> None:
    swarms = Swarms(rng=random.Random(0), interval=10, peer_ttl=5)
    for n in range(50):
        swarms.announce(announce(info_hash=n.to_bytes(20, "big")), V4, now=0)
    assert len(swarms) == 50
    swarms.announce(announce(info_hash=b"\xff" * 20), V4, now=11)  # due: the 50 stale swarms go
    assert len(swarms) == 1


def test_hybrid_is_two_swarms() -> None:
    # BEP 52: libtorrent announces a hybrid with its v1 hash and with its v2 hash truncated to 20 bytes
    v1, v2 = hashlib.sha1(b"info").digest(), hashlib.sha256(b"info").digest()[:20]
    swarms = Swarms(rng=random.Random(0))
    for info_hash in (v1, v2):
        swarms.announce(announce(info_hash=info_hash, peer_id=peer_id(1), left=0), V4, now=0)
    reply = swarms.announce(announce(info_hash=v2, peer_id=peer_id(2)), V4, now=1)
    assert reply.peers == (SwarmPeer(peer_id(1), V4, 6881),)
    assert swarms.scrape([v1, v2], now=1) == {v1: SwarmStats(1, 0, 0), v2: SwarmStats(1, 1, 0)}


def test_admit_limits_which_swarms_exist() -> None:
    swarms = Swarms(rng=random.Random(0), admit=lambda h: h == HASH)
    swarms.announce(announce(), V4, now=0)
    with pytest.raises(TrackerRequestError, match="not served by this tracker"):
        swarms.announce(announce(info_hash=b"\x00" * 20), V4, now=0)
    assert len(swarms) == 1


def test_a_re_announce_renews_the_peer_and_expiry_takes_the_oldest() -> None:
    swarms = Swarms(rng=random.Random(0), interval=100, peer_ttl=100)
    for n, now in ((1, 0), (2, 10), (3, 20)):
        swarms.announce(announce(peer_id=peer_id(n)), V4, now=now)
    swarms.announce(announce(peer_id=peer_id(1)), V4, now=50)  # 1 is now the most recent
    reply = swarms.announce(announce(peer_id=peer_id(4)), V4, now=115)  # 2 (seen at 10) has expired
    assert {p.peer_id for p in reply.peers} == {peer_id(1), peer_id(3)}
    assert {p.peer_id for p in swarms.peers(HASH)} == {peer_id(1), peer_id(3), peer_id(4)}


def test_counts_follow_a_peer_that_changes_state() -> None:
    swarms = Swarms(rng=random.Random(0), interval=100, peer_ttl=100)
    assert swarms.announce(announce(peer_id=peer_id(1), left=5), V4, now=0).stats == SwarmStats(0, 1, 0)
    assert swarms.announce(announce(peer_id=peer_id(1), left=0), V4, now=1).stats == SwarmStats(1, 0, 0)
    assert swarms.announce(announce(peer_id=peer_id(2), left=0), V4, now=2).stats == SwarmStats(2, 0, 0)
    assert swarms.announce(announce(peer_id=peer_id(1), left=0, event="stopped"), V4, 3).stats == SwarmStats(1, 0, 0)
    assert swarms.announce(announce(peer_id=peer_id(1), left=0, event="stopped"), V4, 4).stats == SwarmStats(1, 0, 0)
    assert swarms.announce(announce(peer_id=peer_id(3), left=9), V4, now=150).stats == SwarmStats(0, 1, 0)  # 2 expired


@given(
    st.lists(
        st.tuples(
            st.integers(0, 5),  # who
            st.booleans(),  # seeding
            st.sampled_from(["", "started", "completed", "stopped"]),
            st.integers(0, 40),  # seconds since the last announce
        ),
        max_size=40,
    )
)
def test_counts_are_what_a_recount_finds(moves: list[tuple[int, bool, str, int]]) -> None:
    swarms = Swarms(rng=random.Random(0), interval=30, peer_ttl=60)
    seen: dict[bytes, tuple[bool, float]] = {}
    now = 0.0
    for who, seeding, event, wait in moves:
        now += wait
        seen = {k: v for k, v in seen.items() if v[1] >= now - 60}
        request = announce(peer_id=peer_id(who), left=0 if seeding else 1, event=event)
        stats = swarms.announce(request, V4, now).stats
        if event == "stopped":
            seen.pop(peer_id(who), None)
        else:
            seen[peer_id(who)] = (seeding, now)
        seeders = sum(s for s, _ in seen.values())
        assert (stats.complete, stats.incomplete) == (seeders, len(seen) - seeders)
        assert {p.peer_id for p in swarms.peers(HASH)} == set(seen)


# ----------------------------------------------------------------------------------------- a flooded swarm


def _fill(swarms: Swarms, seeders: int, leechers: int) -> None:
    for n in range(seeders + leechers):
        swarms.announce(announce(peer_id=peer_id(n), left=0 if n < seeders else 1), address(n), now=0)


def _cost(swarms: Swarms, request: AnnounceRequest, ip: IPAddress) -> tuple[int, int, AnnounceReply]:
    """What one announce costs, counted, not timed: the Python lines it runs (every turn of a loop or a
    comprehension is one) and the most memory it holds at once; and its reply."""
    lines = 0

    def trace(frame: object, event: str, arg: object) -> object:
        nonlocal lines
        lines += event == "line"
        return trace

    tracemalloc.start()
    sys.settrace(trace)  # type: ignore[arg-type]
    try:
        reply = swarms.announce(request, ip, now=1)
    finally:
        sys.settrace(None)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return lines, peak, reply


@pytest.mark.parametrize("seeding", [False, True])
def test_an_announce_into_a_flooded_swarm_costs_what_numwant_asks(seeding: bool) -> None:
    """The review's flood: 20,000 peers in one swarm took the tracker from 4,800 to 217 announces/s, every
    announce copying the whole swarm to draw 50. Now its work follows numwant, not the swarm: about the same
    lines and memory at 20,000 peers as at 2,000 (the old code ran 20,000+ lines and held a 160 KB list)."""
    costs = []
    for size in (2_000, 20_000):
        swarms = Swarms(rng=random.Random(size))
        _fill(swarms, seeders=size // 2, leechers=size // 2)
        asker = announce(peer_id=peer_id(size + 1), left=0 if seeding else 1, numwant=50)
        lines, peak, reply = _cost(swarms, asker, address(size + 1))
        assert len(reply.peers) == 50 and len(set(reply.peers)) == 50
        assert peer_id(size + 1) not in {p.peer_id for p in reply.peers}
        if seeding:  # a seed is told about leechers only
            assert all(int.from_bytes(p.peer_id[8:], "big") >= size // 2 for p in reply.peers)
        assert reply.stats == SwarmStats(size // 2 + seeding, size // 2 + (not seeding), 0)
        costs.append((lines, peak))
    (small_lines, small_peak), (big_lines, big_peak) = costs
    # not the same to the line: drawing below 20,001 throws more random bits away than below 2,001
    assert big_lines < 1.25 * small_lines and big_lines < 20 * 50, costs
    assert big_peak < 2 * small_peak and big_peak < 32_000, costs


def test_every_peer_of_a_big_swarm_can_be_drawn() -> None:
    """Seeders and leechers share one range of slots: none is skipped or drawn twice, and a peer that changes
    from leecher to seeder, or leaves, moves out of its slot."""
    swarms = Swarms(rng=random.Random(7))
    seeding = {n: n < 150 for n in range(300)}
    _fill(swarms, seeders=150, leechers=150)
    for n in range(2, 300, 3):  # some leave, some change sides
        if n % 2:
            swarms.announce(announce(peer_id=peer_id(n), event="stopped"), address(n), now=0)
            del seeding[n]
        else:
            seeding[n] = not seeding[n]
            swarms.announce(announce(peer_id=peer_id(n), left=0 if seeding[n] else 1), address(n), now=0)
    seeding[1] = False  # the asker below
    seen: set[bytes] = set()
    for _ in range(60):
        reply = swarms.announce(announce(peer_id=peer_id(1), numwant=50), address(1), now=0)
        drawn = [p.peer_id for p in reply.peers]
        assert len(drawn) == len(set(drawn)) == 50 and peer_id(1) not in drawn
        seen.update(drawn)
    assert seen == {peer_id(n) for n in seeding} - {peer_id(1)}
    seeders = sum(seeding.values())
    assert swarms.scrape([HASH], now=0)[HASH] == SwarmStats(seeders, len(seeding) - seeders, 0)


def test_a_swarm_and_an_address_have_caps() -> None:
    swarms = Swarms(rng=random.Random(0), max_swarm_peers=5, max_address_peers=2)
    for n in range(2):
        swarms.announce(announce(peer_id=peer_id(n)), V4, now=0)
    with pytest.raises(TrackerRequestError, match=r"^2 peers of this swarm announce from 10\.0\.0\.1 already$"):
        swarms.announce(announce(peer_id=peer_id(2)), V4, now=0)
    swarms.announce(announce(peer_id=peer_id(1), port=7000), V4, now=1)  # those listed go on announcing
    swarms.announce(announce(peer_id=peer_id(1), event="stopped"), V4, now=1)
    swarms.announce(announce(peer_id=peer_id(2)), V4, now=1)  # a place was freed
    # an IPv6 host has a /64: its 2^64 addresses are one address here
    swarms.announce(announce(peer_id=peer_id(3)), ipaddress.ip_address("2001:db8::1"), now=1)
    swarms.announce(announce(peer_id=peer_id(4)), ipaddress.ip_address("2001:db8::ffff:1"), now=1)
    with pytest.raises(TrackerRequestError, match=r"from 2001:db8::/64 already"):
        swarms.announce(announce(peer_id=peer_id(5)), ipaddress.ip_address("2001:db8::2:1"), now=1)
    swarms.announce(announce(peer_id=peer_id(5)), ipaddress.ip_address("2001:db8:0:1::1"), now=1)  # next /64
    with pytest.raises(TrackerRequestError, match=r"^this swarm is full: 5 peers$"):
        swarms.announce(announce(peer_id=peer_id(6)), address(99), now=1)
    assert len(swarms.peers(HASH)) == 5
    other = announce(info_hash=b"\x01" * 20, peer_id=peer_id(6))
    assert swarms.announce(other, address(99), now=1).stats == SwarmStats(0, 1, 0)  # caps are per swarm


def test_a_loopback_test_swarm_is_not_capped_by_address() -> None:
    """Every peer of a test swarm announces from 127.0.0.1 (where ``ip=`` is believed anyway): not counted."""
    swarms = Swarms(rng=random.Random(0))
    loopback = ipaddress.ip_address("127.0.0.1")
    for n in range(DEFAULT_MAX_ADDRESS_PEERS * 4):
        swarms.announce(announce(peer_id=peer_id(n), port=10_000 + n), loopback, now=0)
    assert len(swarms.peers(HASH)) == DEFAULT_MAX_ADDRESS_PEERS * 4
    uncapped = Swarms(rng=random.Random(0), max_swarm_peers=None, max_address_peers=None)
    for n in range(DEFAULT_MAX_ADDRESS_PEERS * 2):
        uncapped.announce(announce(peer_id=peer_id(n)), V4, now=0)
    assert len(uncapped.peers(HASH)) == DEFAULT_MAX_ADDRESS_PEERS * 2


def test_another_address_cannot_stop_or_move_a_peer() -> None:
    """The review's eviction: ``event=stopped`` with someone's peer_id, from anywhere, took them off the swarm.
    An entry is a peer_id at its address: from elsewhere the same peer_id is someone else."""
    victim, attacker = ipaddress.ip_address("192.0.2.10"), ipaddress.ip_address("198.51.100.66")
    swarms = Swarms(rng=random.Random(0))
    swarms.announce(announce(peer_id=peer_id(1), left=0, port=6881), victim, now=0)
    swarms.announce(announce(peer_id=peer_id(1), event="stopped"), attacker, now=1)
    assert swarms.peers(HASH) == (SwarmPeer(peer_id(1), victim, 6881),)
    swarms.announce(announce(peer_id=peer_id(1), left=0, port=1), attacker, now=2)  # an entry of its own
    assert set(swarms.peers(HASH)) == {SwarmPeer(peer_id(1), victim, 6881), SwarmPeer(peer_id(1), attacker, 1)}
    swarms.announce(announce(peer_id=peer_id(1), event="stopped"), victim, now=3)  # its own stop still works
    assert swarms.peers(HASH) == (SwarmPeer(peer_id(1), attacker, 1),)


def test_the_app_refuses_stops_from_elsewhere_and_names_no_peer_id() -> None:
    seed = b"/announce?" + query(peer_id=peer_id(1), left=0, port=7001)
    stop = b"/announce?" + query(peer_id=peer_id(1), event="stopped")
    leech = b"/announce?" + query(peer_id=peer_id(2), compact=0)
    swarms = Swarms(rng=random.Random(0))

    async def go() -> list[bytes]:
        answers = []
        for client, path in ((("192.0.2.10", 1), seed), (("198.51.100.66", 1), stop), (("203.0.113.5", 1), leech)):
            transport = httpx.ASGITransport(app=tracker_app(swarms, clock=lambda: 0.0), client=client)
            async with httpx.AsyncClient(transport=transport, base_url="http://tracker") as http:
                answers.append((await http.get(path.decode("latin-1"))).content)
        return answers

    *_, listed = anyio.run(go)
    assert decode(listed)[b"peers"] == [{b"ip": b"192.0.2.10", b"port": 7001}]  # still there, its id unsaid
    published = tracker_app(swarms, clock=lambda: 0.0, publish_peer_ids=True)
    answer = decode(published.announce(query(peer_id=peer_id(3), compact=0), "203.0.113.6"))
    assert {p[b"peer id"] for p in answer[b"peers"]} == {peer_id(1), peer_id(2)}


def test_tracker_serve_takes_the_caps() -> None:
    parser = build_parser()
    args = parser.parse_args(["tracker", "serve", "--max-swarm-peers", "0", "--max-address-peers", "64"])
    assert (args.max_swarm_peers, args.max_address_peers, args.publish_peer_ids) == (None, 64, False)
    args = parser.parse_args(["tracker", "serve", "--publish-peer-ids"])
    assert (args.max_swarm_peers, args.max_address_peers) == (DEFAULT_MAX_SWARM_PEERS, DEFAULT_MAX_ADDRESS_PEERS)
    assert args.publish_peer_ids


# ----------------------------------------------------------------------------------------------- encoding


def test_compact_answer_bytes() -> None:
    peers = (SwarmPeer(peer_id(1), V4, 6881), SwarmPeer(peer_id(2), V6, 443), SwarmPeer(peer_id(3), V4, 1))
    body = encode_announce(AnnounceReply(1800, 60, SwarmStats(2, 1, 0), peers))
    assert body == (
        b"d8:completei2e10:incompletei1e8:intervali1800e12:min intervali60e"
        b"5:peers12:\x0a\x00\x00\x01\x1a\xe1\x0a\x00\x00\x01\x00\x01"
        b"6:peers618:\x20\x01\x0d\xb8" + b"\x00" * 11 + b"\x01\x01\xbbe"
    )


def test_compact_answer_without_ipv6_peers_has_no_peers6() -> None:
    body = decode(encode_announce(AnnounceReply(1800, 60, SwarmStats(0, 0, 0), ())))
    assert body == {b"complete": 0, b"incomplete": 0, b"interval": 1800, b"min interval": 60, b"peers": b""}


def test_dictionary_answer() -> None:
    peers = (SwarmPeer(peer_id(1), V4, 6881), SwarmPeer(peer_id(2), V6, 443))
    reply = AnnounceReply(1800, 60, SwarmStats(1, 1, 0), peers)
    assert decode(encode_announce(reply, compact=False, peer_ids=True))[b"peers"] == [
        {b"peer id": peer_id(1), b"ip": b"10.0.0.1", b"port": 6881},
        {b"peer id": peer_id(2), b"ip": b"2001:db8::1", b"port": 443},
    ]
    assert decode(encode_announce(reply, compact=False))[b"peers"] == [  # peer ids are not published by default
        {b"ip": b"10.0.0.1", b"port": 6881},
        {b"ip": b"2001:db8::1", b"port": 443},
    ]


@given(st.lists(st.tuples(st.booleans(), st.integers(1, 65535)), max_size=60), st.integers(0, 10**12))
def test_compact_answer_is_what_bencode_writes(peers: list[tuple[bool, int]], count: int) -> None:
    listed = tuple(SwarmPeer(peer_id(n), V6 if v6 else V4, port) for n, (v6, port) in enumerate(peers))
    reply = AnnounceReply(1800, 60, SwarmStats(count, count + 1, 0), listed)
    expected: dict[str, object] = {
        "complete": count,
        "incomplete": count + 1,
        "interval": 1800,
        "min interval": 60,
        "peers": b"".join(p.ip.packed + p.port.to_bytes(2, "big") for p in listed if p.ip.version == 4),
    }
    if any(p.ip.version == 6 for p in listed):
        expected["peers6"] = b"".join(p.ip.packed + p.port.to_bytes(2, "big") for p in listed if p.ip.version == 6)
    assert encode_announce(reply) == encode(expected)


def test_failure_and_scrape_bytes() -> None:
    assert encode_failure("missing port") == b"d14:failure reason12:missing porte"
    assert encode_scrape({b"a" * 20: SwarmStats(3, 2, 7)}) == (
        b"d5:filesd20:" + b"a" * 20 + b"d8:completei3e10:downloadedi7e10:incompletei2eeee"
    )


# -------------------------------------------------------------------------------------------- the app


def _get(app_client: tuple[str, int], *paths: bytes) -> list[httpx.Response]:
    swarms = Swarms(rng=random.Random(0))
    app = tracker_app(swarms, clock=lambda: 0.0)

    async def go() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app, client=app_client)
        async with httpx.AsyncClient(transport=transport, base_url="http://tracker") as client:
            return [await client.get(path.decode("latin-1")) for path in paths]

    return anyio.run(go)


HOSTILE = [
    b"/announce",
    b"/announce?",
    b"/announce?info_hash=abc&peer_id=x&port=1&uploaded=0&downloaded=0&left=0",
    b"/announce?" + query(port="99999"),
    b"/announce?" + query(info_hash=HASH[:10]),
    b"/announce?" + query().replace(b"&left=100", b""),
    b"/announce?" + query(ip="not-an-ip"),
    b"/announce?" + query(numwant="many"),
    b"/announce?" + query() + b"&info_hash=" + b"%00" * 20,
    b"/announce?" + query() + b"&z=" + b"%ff" * 5000,
    b"/announce?%ZZ%&&==&%",
    b"/scrape",
    b"/scrape?info_hash=short",
]


def test_hostile_queries_get_a_failure_reason_never_a_500() -> None:
    for response in _get(("198.51.100.4", 5555), *HOSTILE):
        assert response.status_code == 200, response.text
        body = decode(response.content)
        assert list(body) == [b"failure reason"] and body[b"failure reason"]


def test_app_announce_and_scrape() -> None:
    seed = b"/announce?" + query(peer_id=peer_id(1), left=0, port=7001, event="started")
    leech = b"/announce?" + query(peer_id=peer_id(2), port=7002, event="started")
    scrape = b"/scrape?info_hash=" + quote_from_bytes(HASH, safe="").encode()
    _, answer, scraped = _get(("198.51.100.4", 5555), seed, leech, scrape)
    assert answer.headers["content-type"].startswith("text/plain")
    body = decode(answer.content)
    assert body[b"peers"] == bytes([198, 51, 100, 4]) + (7001).to_bytes(2, "big")
    assert (body[b"complete"], body[b"incomplete"]) == (1, 1)
    assert decode(scraped.content) == {b"files": {HASH: {b"complete": 1, b"downloaded": 0, b"incomplete": 1}}}


def test_app_ip_parameter_only_from_loopback() -> None:
    seed = b"/announce?" + query(peer_id=peer_id(1), left=0, ip="192.0.2.50")
    leech = b"/announce?" + query(peer_id=peer_id(2), compact=0)
    for client, listed in ((("127.0.0.1", 1), b"192.0.2.50"), (("198.51.100.4", 1), b"198.51.100.4")):
        _, answer = _get(client, seed, leech)
        assert decode(answer.content)[b"peers"] == [{b"ip": listed, b"port": 6881}]


def test_tracker_server_on_a_free_port() -> None:
    with TrackerServer() as tracker:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/announce", tracker.announce_url)
        response = httpx.get(tracker.announce_url + "?" + query(left=0).decode(), trust_env=False)
        assert decode(response.content)[b"complete"] == 1
        assert tracker.swarms.peers(HASH) == (SwarmPeer(PEER, ipaddress.ip_address("127.0.0.1"), 6881),)
        bad = httpx.get(tracker.announce_url + "?port=x", trust_env=False)
        assert (bad.status_code, decode(bad.content)) == (200, {b"failure reason": b"missing info_hash"})
    assert not tracker.running


def test_cli_serves_until_interrupted() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "swarmhub", "tracker", "serve", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=sigint_default,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.fullmatch(r"tracker serving at (http://127\.0\.0\.1:\d+/announce)\n", line)
        assert match is not None, line
        response = httpx.get(match.group(1) + "?" + query().decode(), trust_env=False)
        assert decode(response.content)[b"incomplete"] == 1
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
        proc.wait()


def test_app_head_unknown_path_and_other_methods() -> None:
    app = tracker_app(Swarms(rng=random.Random(0)), clock=lambda: 0.0)

    async def go() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app, client=("198.51.100.4", 1))
        async with httpx.AsyncClient(transport=transport, base_url="http://tracker") as client:
            return [
                await client.head("/announce?" + query().decode()),
                await client.get("/scrape?info_hash=" + quote_from_bytes(HASH, safe="")),
                await client.get("/announces"),
                await client.post("/announce?" + query().decode()),
            ]

    head, scrape, unknown, post = anyio.run(go)
    assert (head.status_code, head.content, head.headers["cache-control"]) == (200, b"", "no-store")
    assert int(head.headers["content-length"]) > 0
    assert decode(scrape.content)[b"files"][HASH] == {b"complete": 0, b"downloaded": 0, b"incomplete": 1}  # HEAD too
    assert (unknown.status_code, unknown.content) == (404, b"Not Found")
    assert (post.status_code, post.headers["allow"]) == (405, "GET, HEAD")


# ------------------------------------------------------------------------------- HTTP/1.x without I/O

ANNOUNCE_HEAD = b"GET /announce?" + query() + b" HTTP/1.1\r\nHost: t\r\nUser-Agent: x/1\r\nAccept-Encoding: gzip"


def test_parse_head() -> None:
    head = parse_head(ANNOUNCE_HEAD)
    assert head == RequestHead("GET", b"/announce?" + query(), "/announce", query(), False, True, host="t")
    assert parse_head(b"GET / HTTP/1.1\r\nhOsT:  [::1]:6969 ").host == "[::1]:6969"
    assert parse_head(b"GET / HTTP/1.0").host is None
    assert parse_head(b"GET /scrape HTTP/1.1\r\nConnection: Close").keep_alive is False
    assert parse_head(b"GET /scrape HTTP/1.1\r\nconnection: TE, close").keep_alive is False
    assert parse_head(b"GET /scrape HTTP/1.0").keep_alive is False
    assert parse_head(b"GET /scrape HTTP/1.0\r\nConnection: Keep-Alive").keep_alive is True
    assert parse_head(b"GET /%61nnounce?a=%61 HTTP/1.1").path == "/announce"  # the query stays raw
    assert parse_head(b"GET /%61nnounce?a=%61 HTTP/1.1").query == b"a=%61"
    assert parse_head(b"GET http://t.example:6969/announce?x=1 HTTP/1.1").path == "/announce"
    assert parse_head(b"GET http://t.example:6969/announce?x=1 HTTP/1.1").query == b"x=1"
    assert parse_head(b"GET http://t.example?x=1 HTTP/1.1").path == "/"
    assert parse_head(b"POST /announce HTTP/1.1\r\nContent-Length: 12").content_length == 12
    assert parse_head(b"POST /announce HTTP/1.1\r\nContent-Length: 3, 3").content_length == 3
    forwarded = parse_head(b"GET / HTTP/1.1\r\nX-Forwarded-For: 192.0.2.1\r\nx-forwarded-for: 10.0.0.9")
    assert forwarded.forwarded_for == "192.0.2.1, 10.0.0.9"


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"", 400),
        (b"GET /announce", 400),
        (b"GET  /announce HTTP/1.1", 400),
        (b"GET /announce HTTP/1.1 extra", 400),
        (b"G(T /announce HTTP/1.1", 400),
        (b"GET /ann\x01ounce HTTP/1.1", 400),
        (b"GET /announce HTTP/2.0", 505),
        (b"GET /announce HTTX/1.1", 400),
        (b"GET / HTTP/1.1\r\nHost t", 400),
        (b"GET / HTTP/1.1\r\nHost : t", 400),  # RFC 9112 5.1: no whitespace before the colon
        (b"GET / HTTP/1.1\r\nHost: t\r\n folded", 400),  # RFC 9112 5.2: obsolete line folding
        (b"GET / HTTP/1.1\r\n: t", 400),
        (b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: attacker.example", 400),  # RFC 9112 3.2: which one is checked?
        (b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2", 400),
        (b"POST / HTTP/1.1\r\nContent-Length: -1", 400),
        (b"POST / HTTP/1.1\r\nContent-Length: 1e3", 400),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked", 501),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3", 400),  # RFC 9112 6.3
    ],
)
def test_malformed_head_is_an_http_error(raw: bytes, status: int) -> None:
    with pytest.raises(HTTPError) as caught:
        parse_head(raw)
    assert caught.value.status == status


@given(st.binary(max_size=300))
def test_any_head_parses_or_raises_http_error(raw: bytes) -> None:
    with contextlib.suppress(HTTPError):
        head = parse_head(raw)
        assert head.content_length >= 0 and isinstance(head.path, str)


def test_client_host_believes_x_forwarded_for_from_a_loopback_proxy_only() -> None:
    assert client_host("127.0.0.1", None) == "127.0.0.1"
    assert client_host("127.0.0.1", "203.0.113.9") == "203.0.113.9"
    assert client_host("127.0.0.1", "198.51.100.1, 203.0.113.9:4711") == "203.0.113.9"  # the last proxy's client
    assert client_host("127.0.0.1", "[2001:db8::7]:4711, 127.0.0.1") == "2001:db8::7"
    assert client_host("127.0.0.1", "127.0.0.1") == "127.0.0.1"
    assert client_host("198.51.100.4", "203.0.113.9") == "198.51.100.4"


def test_render() -> None:
    fields = b"content-type: text/plain\r\n"
    assert render(200, fields, b"d1:xi1ee", date=b"D", keep_alive=True) == (
        b"HTTP/1.1 200 OK\r\ndate: D\r\ncontent-type: text/plain\r\ncontent-length: 8\r\n\r\nd1:xi1ee"
    )
    assert render(404, b"", b"", date=b"D", keep_alive=False, length=9) == (
        b"HTTP/1.1 404 Not Found\r\ndate: D\r\ncontent-length: 9\r\nconnection: close\r\n\r\n"
    )
    assert b"\r\nconnection: keep-alive\r\n" in render(200, b"", b"", date=b"D", keep_alive=True, http10=True)


# --------------------------------------------------------------------------------- the tracker's server


def _read_answer(
    sock: socket.socket, buffer: bytearray, *, head_only: bool = False
) -> tuple[int, dict[str, str], bytes]:
    """One answer off ``sock`` (what is read past it stays in ``buffer``)."""
    deadline = time.monotonic() + 5
    while b"\r\n\r\n" not in buffer:
        assert time.monotonic() < deadline
        chunk = sock.recv(65536)
        assert chunk, f"closed before an answer: {bytes(buffer)!r}"
        buffer += chunk
    end = buffer.index(b"\r\n\r\n")
    status_line, *lines = bytes(buffer[:end]).decode("latin-1").split("\r\n")
    del buffer[: end + 4]
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    length = 0 if head_only else int(headers["content-length"])
    while len(buffer) < length:
        chunk = sock.recv(65536)
        assert chunk, "closed in a body"
        buffer += chunk
    body = bytes(buffer[:length])
    del buffer[:length]
    assert status_line.startswith("HTTP/1.1 ")
    return int(status_line.split()[1]), headers, body


def _closed(sock: socket.socket, timeout: float = 5) -> bool:
    """Whether the server closes ``sock`` (having sent nothing more) within ``timeout``."""
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


@pytest.fixture(params=["uvloop", "asyncio"])
def tracker(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[TrackerServer]:
    """The tracker's server on uvloop, and on asyncio's loop (where uvloop is not installed)."""
    if request.param == "asyncio":
        monkeypatch.setattr(protocol, "new_event_loop", asyncio.new_event_loop)
    with TrackerServer(swarms=Swarms(rng=random.Random(0))) as server:
        assert type(server._server._loop).__module__.startswith(request.param)  # the loop asked for
        yield server


def _connect(tracker: TrackerServer) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", tracker.port), timeout=5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def test_server_keeps_the_connection_alive_and_answers_pipelined_requests_in_order(tracker: TrackerServer) -> None:
    requests = [
        b"GET /announce?" + query(peer_id=peer_id(n), port=7000 + n) + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        for n in range(3)
    ]
    with _connect(tracker) as sock:
        buffer = bytearray()
        sock.sendall(requests[0])
        first = _read_answer(sock, buffer)
        sock.sendall(requests[1] + requests[2])  # pipelined, in one segment
        second, third = _read_answer(sock, buffer), _read_answer(sock, buffer)
        sock.sendall(
            b"GET /scrape?info_hash="
            + quote_from_bytes(HASH, safe="").encode()
            + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        )
        scraped = _read_answer(sock, buffer)
    assert [a[0] for a in (first, second, third, scraped)] == [200] * 4
    assert [decode(a[2])[b"incomplete"] for a in (first, second, third)] == [1, 2, 3]
    assert len(decode(third[2])[b"peers"]) == 12  # the two before it
    assert decode(scraped[2])[b"files"][HASH][b"incomplete"] == 3
    assert first[1]["content-type"] == "text/plain" and first[1]["cache-control"] == "no-store"
    assert "connection" not in first[1] and first[1]["date"].endswith(" GMT")


def test_server_request_in_one_byte_pieces(tracker: TrackerServer) -> None:
    with _connect(tracker) as sock:
        for byte in b"GET /announce?" + query() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n":
            sock.send(bytes([byte]))
        status, headers, body = _read_answer(sock, bytearray())
        assert (status, headers["connection"], decode(body)[b"incomplete"]) == (200, "close", 1)
        assert _closed(sock)


def test_server_closes_after_connection_close_and_after_http10(tracker: TrackerServer) -> None:
    for request in (
        b"GET /announce?" + query() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        b"GET /announce?" + query() + b" HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n",
    ):
        with _connect(tracker) as sock:
            sock.sendall(request + b"GET /announce HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")  # never answered
            buffer = bytearray()
            assert _read_answer(sock, buffer)[1]["connection"] == "close"
            assert _closed(sock) and not buffer
    with _connect(tracker) as sock:
        sock.sendall(b"GET /announce?" + query() + b" HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: keep-alive\r\n\r\n")
        assert _read_answer(sock, bytearray())[1]["connection"] == "keep-alive"
        assert not _closed(sock, timeout=0.2)


def test_server_head_404_405_and_a_body_skipped(tracker: TrackerServer) -> None:
    with _connect(tracker) as sock:
        buffer = bytearray()
        sock.sendall(b"HEAD /announce?" + query() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        status, headers, body = _read_answer(sock, buffer, head_only=True)
        assert (status, body) == (200, b"") and int(headers["content-length"]) > 0
        sock.sendall(b"GET /announces HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert _read_answer(sock, buffer)[::2] == (404, b"Not Found")
        sock.sendall(b"POST /announce HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\n\r\nhello")
        status, headers, _ = _read_answer(sock, buffer)
        assert (status, headers["allow"]) == (405, "GET, HEAD")
        sock.sendall(
            b"GET /scrape?info_hash="
            + quote_from_bytes(HASH, safe="").encode()
            + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        )
        assert decode(_read_answer(sock, buffer)[2])[b"files"][HASH][b"incomplete"] == 1  # the HEAD announced


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET /announce HTTP/1.1\r\nHost : t\r\n\r\n", 400),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400),  # TLS to a plain-HTTP port
        (b"GET /announce HTTP/3\r\n\r\n", 505),
        (
            b"POST /announce HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            501,
        ),
        (b"GET /announce?" + b"x" * MAX_HEAD + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n", 431),  # no end in sight
        (
            b"POST /announce HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n\r\n",
            405,
        ),  # a body not worth reading past
    ],
)
def test_server_answers_a_bad_request_and_closes(tracker: TrackerServer, request_bytes: bytes, status: int) -> None:
    with _connect(tracker) as sock:
        sock.sendall(request_bytes)
        buffer = bytearray()
        answer = _read_answer(sock, buffer)
        assert (answer[0], answer[1]["connection"]) == (status, "close")
        assert _closed(sock)
    assert decode(httpx.get(tracker.announce_url + "?" + query().decode(), trust_env=False).content)[b"complete"] == 0


def test_server_closes_idle_connections(tracker: TrackerServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(protocol, "KEEP_ALIVE", 1)
    with _connect(tracker) as sock:
        sock.sendall(b"GET /announce?" + query() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert _read_answer(sock, bytearray())[0] == 200
        started = time.monotonic()
        assert _closed(sock, timeout=5)
        assert time.monotonic() - started >= 0.9  # one tick may already be under way, not two
    with _connect(tracker) as sock:
        sock.sendall(b"GET /announce")  # a head that never ends
        assert _closed(sock, timeout=5)


def test_server_drops_a_client_that_never_reads(tracker: TrackerServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(protocol, "KEEP_ALIVE", 1)
    live = tracker._server._shared.live  # the connections the server holds
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", tracker.port))
        sock.settimeout(0.5)
        with contextlib.suppress(TimeoutError):  # until the server stops reading: its answers have backed up
            while True:
                sock.sendall((b"GET /announce?" + query() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n") * 100)
        assert len(live) == 1
        deadline = time.monotonic() + 10
        while live:
            assert time.monotonic() < deadline, "still connected"
            time.sleep(0.05)


def test_server_lists_the_client_behind_a_loopback_proxy(tracker: TrackerServer) -> None:
    with _connect(tracker) as sock:
        sock.sendall(
            b"GET /announce?" + query(left=0) + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Forwarded-For: 203.0.113.9\r\n\r\n"
        )
        assert _read_answer(sock, bytearray())[0] == 200
    assert tracker.swarms.peers(HASH) == (SwarmPeer(PEER, ipaddress.ip_address("203.0.113.9"), 6881),)


def test_a_rebinding_page_can_neither_announce_nor_read_peers(tracker: TrackerServer) -> None:
    """A page at attacker.example rebinds its name to 127.0.0.1 and fetches its own
    ``http://attacker.example:PORT/announce?...`` (and ``/scrape``): the browser sends ``Host:
    attacker.example:PORT``. Refused with the guard's 403 before anything is announced, and so is a request
    naming no Host; the loopback names BitTorrent clients send (the announce URL's ``host:port``) are answered."""
    port = tracker.port
    scrape = b"GET /scrape?info_hash=" + quote_from_bytes(HASH, safe="").encode()
    refusals = []
    for request in (
        b"GET /announce?" + query(left=0) + b" HTTP/1.1\r\nHost: attacker.example:%d\r\n\r\n" % port,
        scrape + b" HTTP/1.1\r\nHost: attacker.example:%d\r\n\r\n" % port,
        b"GET /announce?" + query(left=0) + b" HTTP/1.1\r\nHost: 127.0.0.1.attacker.example\r\n\r\n",
        b"GET /announce?" + query(left=0) + b" HTTP/1.0\r\n\r\n",  # no Host: the guard refuses it too
    ):
        with _connect(tracker) as sock:
            sock.sendall(request)
            status, headers, body = _read_answer(sock, bytearray())
            assert (status, headers["content-type"], headers["connection"]) == (403, "application/json", "close")
            refusals.append(json.loads(body))
            assert _closed(sock)
    assert [r["error"].rpartition(" ")[2] for r in refusals] == [
        "'attacker.example'", "'attacker.example'", "'127.0.0.1.attacker.example'", "'(none)'"
    ]  # fmt: skip
    assert all("--allow-host" in r["hint"] for r in refusals)
    assert tracker.swarms.peers(HASH) == ()
    names = [b"127.0.0.1:%d" % port, b"localhost:%d" % port, b"[::1]:%d" % port, b"LocalHost", b"127.0.0.1"]
    with _connect(tracker) as sock:
        buffer = bytearray()
        for n, name in enumerate(names):
            sock.sendall(b"GET /announce?" + query(peer_id=peer_id(n)) + b" HTTP/1.1\r\nHost: " + name + b"\r\n\r\n")
            assert decode(_read_answer(sock, buffer)[2])[b"incomplete"] == n + 1
        sock.sendall(scrape + b" HTTP/1.1\r\nHost: localhost:%d\r\n\r\n" % port)
        assert decode(_read_answer(sock, buffer)[2])[b"files"][HASH][b"incomplete"] == len(names)


def test_a_name_given_with_allow_host_is_answered_and_others_still_refused() -> None:
    with TrackerServer(allow_hosts=["tracker.lan"]) as tracker:
        answered = httpx.get(
            tracker.announce_url + "?" + query().decode(),
            headers={"Host": f"Tracker.LAN:{tracker.port}"},
            trust_env=False,
        )
        refused = httpx.get(
            tracker.announce_url + "?" + query().decode(), headers={"Host": "attacker.example"}, trust_env=False
        )
    assert decode(answered.content)[b"incomplete"] == 1
    assert refused.status_code == 403
    assert refused.json()["error"] == "the tracker does not answer to the host name 'attacker.example'"
    assert refused.headers["x-error-message"] == refused.json()["error"]
    args = build_parser().parse_args(["tracker", "serve", "--allow-host", "a.lan", "--allow-host", "b.lan"])
    assert args.allow_host == ["a.lan", "b.lan"]


def test_server_access_log(caplog: pytest.LogCaptureFixture) -> None:
    with TrackerServer(access_log=True) as tracker, caplog.at_level("INFO", logger="swarmhub.tracker.access"):
        httpx.get(tracker.url + "/nothing", trust_env=False)
        with _connect(tracker) as sock:
            sock.sendall(b"BAD\r\n\r\n")
            assert _read_answer(sock, bytearray())[0] == 400
    assert [r.getMessage() for r in caplog.records if r.name == "swarmhub.tracker.access"] == [
        '127.0.0.1 - "GET /nothing HTTP/1.1" 404',
        '127.0.0.1 - "-" 400',
    ]


def test_server_stops_with_connections_open() -> None:
    tracker = TrackerServer().start()
    sock = _connect(tracker)
    sock.sendall(b"GET /announce")
    started = time.monotonic()
    tracker.stop()
    assert not tracker.running and time.monotonic() - started < 2
    assert _closed(sock, timeout=2)
    sock.close()


# ------------------------------------------------------------------------------ real clients, end to end

LAYOUT = {"model.bin": 300_000, "sub/b.bin": 70_001, "c.txt": 5}


def _release(root: Path, announce_url: str, fmt: str = "v1") -> tuple[Path, dict[str, Any]]:
    """A torrent announcing to ``announce_url`` of files under ``root/seed``, and its ``create --json`` summary."""
    write_layout(root / "seed" / NAME, LAYOUT)
    torrent = root / f"{fmt}.torrent"
    summary = create_json(
        root / "seed" / NAME, torrent, "--revision", COMMIT, "--piece-size", "16k", "--format", fmt,
        "--tracker", announce_url,
    )  # fmt: skip
    return torrent, summary


def _same_files(a: Path, b: Path) -> bool:
    return all((a / p).read_bytes() == (b / p).read_bytes() for p in LAYOUT)


class RecordingSwarms(Swarms):
    """Swarms that keep every announce and its answer, to see what a real client sent."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(rng=random.Random(), **kwargs)
        self.log: list[tuple[AnnounceRequest, AnnounceReply]] = []

    def announce(self, request: AnnounceRequest, ip: IPAddress, now: float) -> AnnounceReply:
        reply = super().announce(request, ip, now)
        self.log.append((request, reply))
        return reply

    def by(self, client_prefix: bytes) -> list[tuple[AnnounceRequest, AnnounceReply]]:
        return [(q, a) for q, a in self.log if q.peer_id.startswith(client_prefix)]


def _seed_announced(
    tmp_path: Path, swarms: RecordingSwarms, tracker: TrackerServer, seeder: LibtorrentPeer
) -> tuple[Path, dict[str, Any]]:
    """The release's v1 torrent for ``tracker``, seeded by ``seeder`` once the tracker has its announce."""
    torrent, summary = _release(tmp_path, tracker.announce_url)
    info_hash = bytes.fromhex(summary["info_hash_v1"])
    handle = seeder.add(torrent.read_bytes(), tmp_path / "seed")
    seeder.wait(lambda: bool(swarms.peers(info_hash)), 10, handle, "the seed's announce")
    return torrent, summary


@pytest.mark.clients
@pytest.mark.skipif(ARIA2C is None, reason="aria2c not found (Debian: apt-get install aria2)")
def test_aria2_downloads_from_libtorrent_through_the_tracker(tmp_path: Path) -> None:
    swarms = RecordingSwarms()
    with TrackerServer(swarms=swarms) as tracker, LibtorrentPeer() as seeder:
        torrent, summary = _seed_announced(tmp_path, swarms, tracker, seeder)
        info_hash = bytes.fromhex(summary["info_hash_v1"])
        aria2_download(torrent, tmp_path / "aria2", timeout=30)
    assert _same_files(tmp_path / "aria2" / NAME, tmp_path / "seed" / NAME)
    # aria2 1.36 with --seed-time=0: "started", then "stopped" with left=0; it never says "completed"
    aria2 = swarms.by(b"A2-")
    assert [(q.event, q.left) for q, _ in aria2] == [("started", sum(LAYOUT.values())), ("stopped", 0)]
    assert all(q.info_hash == info_hash for q, _ in aria2)
    seed = SwarmPeer(swarms.by(b"-LT")[0][0].peer_id, ipaddress.ip_address("127.0.0.1"), seeder.port)
    assert aria2[0][1].peers == (seed,)  # the only way aria2 could learn of it


@pytest.mark.clients
@pytest.mark.skipif(ARIA2C is None, reason="aria2c not found (Debian: apt-get install aria2)")
def test_aria2_finds_the_seed_of_a_magnet_through_the_tracker(tmp_path: Path) -> None:
    """aria2 announces a magnet it has no metadata for with ``left=0``, as a seed would: told leechers only,
    it never found the seeder (docs/NOTES.md)."""
    swarms = RecordingSwarms()
    with TrackerServer(swarms=swarms) as tracker, LibtorrentPeer() as seeder:
        _, summary = _seed_announced(tmp_path, swarms, tracker, seeder)
        magnet = f"magnet:?xt=urn:btih:{summary['info_hash_v1']}&tr={quote(tracker.announce_url, safe='')}"
        aria2_download(magnet, tmp_path / "aria2", timeout=30)
    assert _same_files(tmp_path / "aria2" / NAME, tmp_path / "seed" / NAME)
    first, reply = swarms.by(b"A2-")[0]
    assert first.left == 0 and reply.peers  # a seed's announce, and the seeder in its answer


@pytest.mark.clients
@pytest.mark.skipif(TRANSMISSION_CLI is None, reason="transmission-cli not found (apt-get install transmission-cli)")
def test_transmission_downloads_from_libtorrent_through_the_tracker(tmp_path: Path) -> None:
    swarms = RecordingSwarms(interval=1, min_interval=1)  # the seed must come back for news
    with TrackerServer(swarms=swarms) as tracker, LibtorrentPeer(min_announce_interval=1) as seeder:
        torrent, summary = _release(tmp_path, tracker.announce_url)
        info_hash = bytes.fromhex(summary["info_hash_v1"])
        seeder.wait_seeding(seeder.add(torrent.read_bytes(), tmp_path / "seed"))
        port = free_port()
        transmission_download(torrent, tmp_path / "transmission", timeout=40, port=port)
    assert _same_files(tmp_path / "transmission" / NAME, tmp_path / "seed" / NAME)
    transmission = swarms.by(b"-TR")
    assert transmission and {(q.info_hash, q.port) for q, _ in transmission} == {(info_hash, port)}
    # transmission drops the loopback seed it is sent; the seed, told about transmission, connects to it
    assert any(seeder.port == p.port for _, a in transmission for p in a.peers)
    assert any(port == p.port for _, a in swarms.by(b"-LT") for p in a.peers)


def test_libtorrent_hybrid_swarm_through_the_tracker(tmp_path: Path) -> None:
    """Two libtorrent sessions, a hybrid torrent, no hint but the tracker; BEP 52: two swarms, both work."""
    swarms = RecordingSwarms()
    with TrackerServer(swarms=swarms) as tracker, LibtorrentPeer() as seeder, LibtorrentPeer() as leecher:
        torrent, summary = _release(tmp_path, tracker.announce_url, "hybrid")
        seeder.wait_seeding(seeder.add(torrent.read_bytes(), tmp_path / "seed"))
        leecher.wait_seeding(leecher.add(torrent.read_bytes(), tmp_path / "leech"), timeout=20)
    assert _same_files(tmp_path / "leech" / NAME, tmp_path / "seed" / NAME)
    v1, v2 = bytes.fromhex(summary["info_hash_v1"]), bytes.fromhex(summary["info_hash_v2"])[:20]
    peers = {q.peer_id for q, _ in swarms.log}
    assert len(peers) == 2
    for peer in peers:  # each session announced the torrent under both hashes
        assert {q.info_hash for q, _ in swarms.log if q.peer_id == peer} == {v1, v2}


@pytest.mark.clients
@pytest.mark.skipif(
    ARIA2C is None or QBITTORRENT_NOX is None, reason="needs aria2c and qbittorrent-nox (apt-get install aria2 ...)"
)
def test_two_real_clients_find_each_other_through_the_tracker(tmp_path: Path) -> None:
    """aria2c seeds, qbittorrent-nox downloads; neither is told about the other: only our tracker knows."""
    swarms = RecordingSwarms()
    with TrackerServer(swarms=swarms) as tracker:
        torrent, summary = _release(tmp_path, tracker.announce_url)
        info_hash = bytes.fromhex(summary["info_hash_v1"])
        with aria2_seed(torrent, tmp_path / "seed", free_port()), QBittorrent(tmp_path / "qbt") as qbt:
            deadline = time.monotonic() + 20
            while not swarms.by(b"A2-") and time.monotonic() < deadline:
                time.sleep(0.05)
            torrent_id = qbt.add(torrent, tmp_path / "qbt-out")
            qbt.wait_complete(torrent_id, timeout=40)
    assert _same_files(tmp_path / "qbt-out" / NAME, tmp_path / "seed" / NAME)
    seeder = swarms.by(b"A2-")[0][0]
    downloader = [a for q, a in swarms.log if not q.peer_id.startswith(b"A2-")]
    assert downloader and any(p.port == seeder.port for a in downloader for p in a.peers)
    assert all(q.info_hash == info_hash for q, _ in swarms.log)
