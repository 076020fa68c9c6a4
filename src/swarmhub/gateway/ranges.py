"""The byte range one GET asks for (RFC 9110 §14), without I/O.

What the gateway answers, by what the ``Range`` header holds:

- nothing, another unit, or something malformed (``bytes=abc``, ``bytes=5-2``): the server may ignore the
  header (§14.2), so 200 and the whole file;
- one range: 206 with it, the end clamped to the file (``bytes=0-`` is open-ended, ``bytes=-N`` the last N
  bytes);
- several ranges: 206 with the **first satisfiable one only**, and its ``Content-Range`` says which bytes
  came. No BitTorrent client asks for several; a 200 with a whole multi-GB shard for a client that wanted two
  small pieces is the expensive reading of the RFC, and multipart/byteranges is not worth its code here;
- no satisfiable range (a start at or past the end, ``bytes=-0``, any range of an empty file): 416 with
  ``Content-Range: bytes */SIZE``.

Only GET has range semantics (§14.2): a HEAD ignores ``Range`` and describes the whole file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["ByteRange", "RangeNotSatisfiable", "parse_range"]

# 30 digits is past any file size; longer numbers are treated as malformed rather than parsed (a header of a
# million digits must cost nothing).
_SPEC = re.compile(r"(\d{0,30})\s*-\s*(\d{0,30})")


class RangeNotSatisfiable(ValueError):
    """No range of the header lies in the file: answer 416."""


@dataclass(frozen=True)
class ByteRange:
    """Bytes ``start`` up to (not including) ``end`` of a file of ``size`` bytes."""

    start: int
    end: int
    size: int

    @property
    def length(self) -> int:
        return self.end - self.start

    @property
    def content_range(self) -> str:
        return f"bytes {self.start}-{self.end - 1}/{self.size}"


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The range to send of a file of ``size`` bytes; None means the whole file (200)."""
    if not header:
        return None
    unit, sep, specs = header.partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return None
    parsed: list[tuple[str, str]] = []
    for spec in specs.split(","):
        spec = spec.strip()
        if not spec:  # RFC 9110 §5.6.1: empty list elements are allowed and ignored
            continue
        match = _SPEC.fullmatch(spec)
        if match is None or match.group(1) == match.group(2) == "":
            return None
        first, last = match.group(1), match.group(2)
        if first and last and int(last) < int(first):
            return None  # §14.1.1: an invalid range-spec makes the whole header ignorable
        parsed.append((first, last))
    if not parsed:
        return None
    for first, last in parsed:
        if first == "":  # suffix: the last N bytes
            n = int(last)
            if n > 0 and size > 0:
                return ByteRange(max(size - n, 0), size, size)
        elif int(first) < size:
            end = size if last == "" else min(int(last) + 1, size)
            return ByteRange(int(first), end, size)
    raise RangeNotSatisfiable(header)
