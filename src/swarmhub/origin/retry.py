"""When to retry an origin request and how long to wait, without I/O.

Retried: connection errors and resets, 408, 429, 500, 502, 503, 504. The wait is exponential with full
jitter, but never shorter than what the origin asked for (``Retry-After`` in seconds or as an HTTP date, or
the IETF ``RateLimit`` header's ``t=`` seconds the Hub sends with 429s).
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from time import time

__all__ = ["RETRY_STATUSES", "requested_wait", "retry_delay"]

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
_RATELIMIT_T = re.compile(r"(?:^|[;,\s])t=(\d+)")


def requested_wait(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds the origin asked us to wait, if it said."""
    raw = headers.get("retry-after")
    if raw:
        raw = raw.strip()
        if raw.isdigit():
            return float(raw)
        try:
            when = parsedate_to_datetime(raw).timestamp()
        except (TypeError, ValueError, IndexError):
            when = None
        if when is not None:
            return max(0.0, when - (time() if now is None else now))
    match = _RATELIMIT_T.search(headers.get("ratelimit", ""))
    return float(match.group(1)) if match else None


def retry_delay(
    attempt: int, headers: Mapping[str, str] | None = None, *, base: float = 0.25, cap: float = 20.0
) -> float:
    """Delay before retry number ``attempt`` (1-based)."""
    backoff = random.uniform(0, min(cap, base * 2 ** (attempt - 1)))
    asked = requested_wait(headers or {})
    return max(backoff, asked) if asked is not None else backoff
