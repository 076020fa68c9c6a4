"""Bencode (BEP 3), strict, without I/O.

Decoding rejects everything a canonical encoder would never produce except unsorted dictionary keys (real
torrents have them; the info-hash is taken over the raw bytes anyway): no leading zeros, no ``-0``, no
duplicate keys, no trailing bytes, bounded nesting. Every failure is a ``BencodeError`` with the offset.

Decoding is bounded in work and memory by the input's size *and* by an element budget, counted as libtorrent's
bdecode counts tokens (its ``max_decode_tokens``): an integer or a string (dictionary keys included) is one
token, a list or a dictionary two (its start and its end). Past ``max_tokens`` decoding stops. Without a
budget a list of empty lists (``lle...e``) turns every 2 bytes into a ~64-byte Python object: a 32 MB ``le``
bomb took ``inspect`` 12 s and 1.25 GB (issue 13). The default admits real torrents with room to spare: a
hybrid torrent of a 100,000-file dataset with its Hub identity is 4.0 M tokens (40 a file: the v1 entry and
its pad, the v2 file tree leaf, the ``hf`` entry; measured with ``data/train/part-NNN/shard-NNNNNN.parquet``
paths, 42 MB, 2.5 s and 316 MB to decode). It stops the bomb at 3 M empty lists. libtorrent's own default
is 3 M tokens. Callers that know their input is small pass a tighter budget. Integers and string lengths
are read from a bounded window, so a megabyte of digits fails at once.

Types: ``int``, ``bytes``, ``list``, ``dict[bytes, ...]``. ``encode`` also takes ``str`` (UTF-8) and
dictionaries with ``str`` keys, and always writes keys sorted by their raw bytes (BEP 3).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeAlias

from swarmhub.errors import BencodeError

__all__ = ["MAX_TOKENS", "Bencodable", "count_tokens", "decode", "decode_with_spans", "encode"]

Bencodable: TypeAlias = Any  # int | bytes | str | list[Bencodable] | dict[bytes | str, Bencodable]

MAX_DEPTH = 64
MAX_TOKENS = 6_000_000
_MAX_INT_DIGITS = 64  # 2^212: more than any torrent field needs; ``int()`` of longer strings is quadratic
_MAX_LENGTH_DIGITS = 19  # a string length of 10^19 bytes is past any input already
_DIGITS = b"0123456789"
_CONTAINERS = b"ld"


def encode(value: Bencodable) -> bytes:
    out: list[bytes] = []
    _encode(value, out)
    return b"".join(out)


def count_tokens(value: Bencodable) -> int:
    """Tokens of ``value`` as libtorrent's decoder counts them against its limits (``max_decode_tokens``,
    ``metadata_token_limit``): one per string or integer, two per list or dictionary (start and end), a
    dictionary's keys included."""
    kind = type(value)
    if kind is dict or (kind is not list and isinstance(value, Mapping)):
        assert isinstance(value, Mapping)
        return 2 + len(value) + sum(count_tokens(v) for v in value.values())
    if kind is list or kind is tuple:
        assert isinstance(value, list | tuple)
        return 2 + sum(count_tokens(v) for v in value)
    return 1


def _encode(value: Bencodable, out: list[bytes]) -> None:
    # exact types first: a 100,000-file torrent is 4 million values, and ABC checks cost most of the time
    kind = type(value)
    if kind is str:
        assert isinstance(value, str)
        raw = value.encode("utf-8")
        out.append(b"%d:%b" % (len(raw), raw))
    elif kind is bytes:
        assert isinstance(value, bytes)
        out.append(b"%d:%b" % (len(value), value))
    elif kind is int:
        out.append(b"i%de" % value)
    elif kind is dict:
        assert isinstance(value, dict)
        _encode_dict(value, out)
    elif kind is list or kind is tuple:
        assert isinstance(value, list | tuple)
        out.append(b"l")
        for item in value:
            _encode(item, out)
        out.append(b"e")
    else:
        _encode_other(value, out)


def _encode_dict(value: Mapping[str | bytes, Bencodable], out: list[bytes]) -> None:
    items = [(k.encode("utf-8") if isinstance(k, str) else bytes(k), v) for k, v in value.items()]
    items.sort(key=lambda kv: kv[0])
    out.append(b"d")
    previous: bytes | None = None
    for key, item in items:
        if key == previous:
            raise ValueError(f"duplicate dictionary key {key!r}")
        previous = key
        out.append(b"%d:%b" % (len(key), key))
        _encode(item, out)
    out.append(b"e")


def _encode_other(value: Bencodable, out: list[bytes]) -> None:
    """Subclasses and the other buffer and container types ``Bencodable`` allows."""
    if isinstance(value, bool):  # bool is an int subclass; never a valid torrent value
        raise TypeError("cannot bencode bool")
    if isinstance(value, int):
        out.append(b"i%de" % value)
    elif isinstance(value, bytes | bytearray | memoryview):
        _encode(bytes(value), out)
    elif isinstance(value, str):
        _encode(str(value), out)
    elif isinstance(value, Mapping):
        _encode_dict(value, out)
    elif isinstance(value, Sequence):
        out.append(b"l")
        for item in value:
            _encode(item, out)
        out.append(b"e")
    else:
        raise TypeError(f"cannot bencode {type(value).__name__}")


class _Decoder:
    """Recursive descent over a bytes buffer. ``spans`` records where chosen top-level keys' values lie."""

    def __init__(self, data: bytes, span_keys: frozenset[bytes], max_tokens: int) -> None:
        self.data = data
        self.pos = 0
        self.span_keys = span_keys
        self.spans: dict[bytes, tuple[int, int]] = {}
        self.max_tokens = max_tokens
        self.left = max_tokens  # tokens still allowed: value() spends them, and dictionary() for each key

    def over_budget(self) -> BencodeError:
        return self.fail(f"more than {self.max_tokens} tokens, the decoding budget")

    def fail(self, message: str) -> BencodeError:
        return BencodeError(message, offset=self.pos)

    def peek(self) -> int:
        if self.pos >= len(self.data):
            raise self.fail("unexpected end of data")
        return self.data[self.pos]

    def value(self, depth: int) -> Bencodable:
        if depth > MAX_DEPTH:
            raise self.fail(f"nesting deeper than {MAX_DEPTH}")
        c = self.peek()
        self.left -= 2 if c in _CONTAINERS else 1
        if self.left < 0:
            raise self.over_budget()
        if c == ord("i"):
            return self.integer()
        if c == ord("l"):
            self.pos += 1
            items = []
            while self.peek() != ord("e"):
                items.append(self.value(depth + 1))
            self.pos += 1
            return items
        if c == ord("d"):
            return self.dictionary(depth)
        if c in _DIGITS:
            return self.string()
        raise self.fail(f"unexpected byte {bytes([c])!r}")

    def dictionary(self, depth: int) -> dict[bytes, Bencodable]:
        self.pos += 1
        result: dict[bytes, Bencodable] = {}
        while self.peek() != ord("e"):
            if self.peek() not in _DIGITS:
                raise self.fail("dictionary key is not a string")
            self.left -= 1
            if self.left < 0:
                raise self.over_budget()
            key = self.string()
            if key in result:
                raise self.fail(f"duplicate dictionary key {key[:40]!r}")
            start = self.pos
            result[key] = self.value(depth + 1)
            if depth == 0 and key in self.span_keys:
                self.spans[key] = (start, self.pos)
        self.pos += 1
        return result

    def integer(self) -> int:
        # Look for the "e" only as far as the longest integer we accept (sign included): a megabyte of
        # digits is refused without reading it.
        end = self.data.find(b"e", self.pos + 1, self.pos + 3 + _MAX_INT_DIGITS)
        if end < 0:
            raise self.fail(f"unterminated integer or one of more than {_MAX_INT_DIGITS} digits")
        digits = self.data[self.pos + 1 : end]
        body = digits[1:] if digits.startswith(b"-") else digits
        if not body or not body.isdigit() or len(body) > _MAX_INT_DIGITS:
            raise self.fail(f"malformed integer {digits[:20]!r}")
        if (body.startswith(b"0") and len(body) > 1) or digits == b"-0":
            raise self.fail(f"non-canonical integer {digits[:20]!r}")
        self.pos = end + 1
        return int(digits)

    def string(self) -> bytes:
        colon = self.data.find(b":", self.pos, self.pos + _MAX_LENGTH_DIGITS + 1)
        if colon < 0:
            raise self.fail("malformed string length")
        digits = self.data[self.pos : colon]
        if not digits.isdigit() or (digits.startswith(b"0") and len(digits) > 1):
            raise self.fail(f"malformed string length {digits!r}")
        length = int(digits)
        start = colon + 1
        if start + length > len(self.data):
            raise self.fail(f"string of {length} bytes runs past the end of the data")
        self.pos = start + length
        return self.data[start : self.pos]


def decode_with_spans(
    data: bytes, span_keys: frozenset[bytes] = frozenset(), *, max_tokens: int = MAX_TOKENS
) -> tuple[Bencodable, dict[bytes, tuple[int, int]]]:
    """Decode ``data``; also return (start, end) byte offsets of the values of the top-level ``span_keys``.

    The info-hash is SHA-1/SHA-256 over ``data[start:end]`` of ``info``, exactly as the file has it.
    More than ``max_tokens`` tokens raise ``BencodeError`` (see the module's docstring for how they count).
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise BencodeError("input is not bytes")
    decoder = _Decoder(bytes(data), span_keys, max_tokens)
    try:
        value = decoder.value(0)
    except RecursionError as exc:  # MAX_DEPTH is far below Python's limit; belt and braces
        raise BencodeError("nesting too deep") from exc
    if decoder.pos != len(decoder.data):
        raise BencodeError("trailing bytes after the value", offset=decoder.pos)
    return value, decoder.spans


def decode(data: bytes, *, max_tokens: int = MAX_TOKENS) -> Bencodable:
    return decode_with_spans(data, max_tokens=max_tokens)[0]
