"""Bencode: round trips (Hypothesis), canonical form, the token budget, and every malformed input raising our
error (the over-long integers and string lengths at once, at the offset where they start)."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from swarmhub.bt.bencode import MAX_DEPTH, decode, decode_with_spans, encode
from swarmhub.errors import BencodeError

values = st.recursive(
    st.integers() | st.binary(max_size=64),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.binary(max_size=8), children, max_size=5),
    max_leaves=30,
)


@given(values)
def test_round_trip(value: object) -> None:
    assert decode(encode(value)) == value


@given(values)
def test_encoding_is_canonical(value: object) -> None:
    data = encode(value)
    assert encode(decode(data)) == data


def _tokens(value: object) -> int:
    """libtorrent's count: one per integer, string or key, two per list or dictionary (start and end)."""
    if isinstance(value, list):
        return 2 + sum(_tokens(item) for item in value)
    if isinstance(value, dict):
        return 2 + sum(1 + _tokens(item) for item in value.values())
    return 1


@given(values)
def test_budget_admits_exactly_the_tokens_a_value_has(value: object) -> None:
    data = encode(value)
    needed = _tokens(value)
    assert decode(data, max_tokens=needed) == value
    with pytest.raises(BencodeError, match=f"more than {needed - 1} tokens, the decoding budget"):
        decode(data, max_tokens=needed - 1)


def test_budget_through_decode_with_spans_stops_where_it_runs_out() -> None:
    flat = b"l" + b"i1e" * 10 + b"e"  # 2 + 10 tokens
    assert decode_with_spans(flat, max_tokens=12)[0] == [1] * 10
    with pytest.raises(BencodeError, match="at byte 28: more than 11 tokens"):  # the tenth integer
        decode_with_spans(flat, max_tokens=11)


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (b"i" + b"1" * 1_000_000 + b"e", "unterminated integer or one of more than 64 digits"),
        (b"i" + b"1" * 65 + b"e", "malformed integer"),
        (b"i-" + b"1" * 65 + b"e", "unterminated integer or one of more than 64 digits"),
        (b"li1ei" + b"9" * 1_000_000, "unterminated integer or one of more than 64 digits"),
        (b"999999999:" + b"x" * 10, "string of 999999999 bytes runs past the end"),
        (b"9" * 1_000_000 + b":x", "malformed string length"),
    ],
    ids=[
        "million-digit-int",
        "65-digit-int",
        "65-digit-negative",
        "unterminated-long-int",
        "length-past-end",
        "million-digit-length",
    ],
)
def test_long_numbers_fail_at_their_start(data: bytes, needle: str) -> None:
    with pytest.raises(BencodeError, match=needle) as caught:
        decode(data)
    assert caught.value.offset == (4 if data.startswith(b"li1e") else 0)


def test_known_encodings() -> None:
    assert encode({"b": 1, "a": [b"x", "y", -3]}) == b"d1:al1:x1:yi-3ee1:bi1ee"
    assert encode({b"\xff": 0, b"a": 0}) == b"d1:ai0e1:\xffi0ee"  # raw byte order, not text order
    assert decode(b"i0e") == 0 and decode(b"0:") == b""


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"i",
        b"ie",
        b"i-e",
        b"i-0e",
        b"i03e",
        b"i1x2e",
        b"01:a",
        b"2:a",
        b"-1:a",
        b"l",
        b"d",
        b"di1ei2ee",
        b"d1:ai1e1:ai2ee",
        b"i1ei2e",
        b"x",
        b"l" * (MAX_DEPTH + 2) + b"e" * (MAX_DEPTH + 2),
        b"99999999999999999999:a",
        b"d1:a",
        b"1:",
    ],
)
def test_malformed_input_raises_bencode_error(data: bytes) -> None:
    with pytest.raises(BencodeError):
        decode(data)


@given(st.binary(max_size=200))
def test_arbitrary_bytes_decode_or_raise_ours(data: bytes) -> None:
    with contextlib.suppress(BencodeError):
        decode(data)


def test_info_span_is_the_raw_bytes_even_with_unsorted_keys() -> None:
    # Real torrents sometimes have unsorted keys; the info-hash must be over the bytes as written.
    info = b"d4:name1:x1:ai1ee"
    data = b"d4:info" + info + b"8:announce3:urle"
    value, spans = decode_with_spans(data, frozenset({b"info"}))
    start, end = spans[b"info"]
    assert data[start:end] == info
    assert value[b"info"] == {b"name": b"x", b"a": 1}


def test_encode_rejects_bools_and_unknown_types() -> None:
    with pytest.raises(TypeError):
        encode(True)
    with pytest.raises(TypeError):
        encode(1.5)
