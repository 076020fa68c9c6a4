"""Bencode (BEP 3), strict, without I/O.

Decoding rejects everything a canonical encoder would never produce except unsorted dictionary keys (real
torrents have them; the info-hash is taken over the raw bytes anyway): no leading zeros, no ``-0``, no
duplicate keys, no trailing bytes, bounded nesting. Every failure is a ``BencodeError`` with the offset.

Types: ``int``, ``bytes``, ``list``, ``dict[bytes, ...]``. ``encode`` also takes ``str`` (UTF-8) and
dictionaries with ``str`` keys, and always writes keys sorted by their raw bytes (BEP 3).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeAlias

from swarmhub.errors import BencodeError

__all__ = ["Bencodable", "decode", "decode_with_spans", "encode"]

Bencodable: TypeAlias = Any  # int | bytes | str | list[Bencodable] | dict[bytes | str, Bencodable]

MAX_DEPTH = 64
_DIGITS = b"0123456789"


def encode(value: Bencodable) -> bytes:
    out: list[bytes] = []
    _encode(value, out)
    return b"".join(out)


def _encode(value: Bencodable, out: list[bytes]) -> None:
    if isinstance(value, bool):  # bool is an int subclass; never a valid torrent value
        raise TypeError("cannot bencode bool")
    if isinstance(value, int):
        out.append(b"i%de" % value)
    elif isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        out.append(b"%d:" % len(raw))
        out.append(raw)
    elif isinstance(value, str):
        _encode(value.encode("utf-8"), out)
    elif isinstance(value, Mapping):
        items = [(k.encode("utf-8") if isinstance(k, str) else bytes(k), v) for k, v in value.items()]
        items.sort(key=lambda kv: kv[0])
        out.append(b"d")
        previous: bytes | None = None
        for key, item in items:
            if key == previous:
                raise ValueError(f"duplicate dictionary key {key!r}")
            previous = key
            _encode(key, out)
            _encode(item, out)
        out.append(b"e")
    elif isinstance(value, Sequence):
        out.append(b"l")
        for item in value:
            _encode(item, out)
        out.append(b"e")
    else:
        raise TypeError(f"cannot bencode {type(value).__name__}")


class _Decoder:
    """Recursive descent over a bytes buffer. ``spans`` records where chosen top-level keys' values lie."""

    def __init__(self, data: bytes, span_keys: frozenset[bytes]) -> None:
        self.data = data
        self.pos = 0
        self.span_keys = span_keys
        self.spans: dict[bytes, tuple[int, int]] = {}

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
        end = self.data.find(b"e", self.pos + 1)
        if end < 0:
            raise self.fail("unterminated integer")
        digits = self.data[self.pos + 1 : end]
        body = digits[1:] if digits.startswith(b"-") else digits
        if not body or not body.isdigit() or len(body) > 64:
            raise self.fail(f"malformed integer {digits[:20]!r}")
        if (body.startswith(b"0") and len(body) > 1) or digits == b"-0":
            raise self.fail(f"non-canonical integer {digits[:20]!r}")
        self.pos = end + 1
        return int(digits)

    def string(self) -> bytes:
        colon = self.data.find(b":", self.pos)
        if colon < 0 or colon - self.pos > 19:
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
    data: bytes, span_keys: frozenset[bytes] = frozenset()
) -> tuple[Bencodable, dict[bytes, tuple[int, int]]]:
    """Decode ``data``; also return (start, end) byte offsets of the values of the top-level ``span_keys``.

    The info-hash is SHA-1/SHA-256 over ``data[start:end]`` of ``info``, exactly as the file has it.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise BencodeError("input is not bytes")
    decoder = _Decoder(bytes(data), span_keys)
    try:
        value = decoder.value(0)
    except RecursionError as exc:  # MAX_DEPTH is far below Python's limit; belt and braces
        raise BencodeError("nesting too deep") from exc
    if decoder.pos != len(decoder.data):
        raise BencodeError("trailing bytes after the value", offset=decoder.pos)
    return value, decoder.spans


def decode(data: bytes) -> Bencodable:
    return decode_with_spans(data)[0]
