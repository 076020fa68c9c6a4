"""When a signed download URL stops working, read from the URL itself, and how long to reuse it; no I/O.

The Hub's ``resolve`` of an LFS (or Xet) file redirects to a signed CDN URL that says when it expires:

- CloudFront signed URLs (the Hub's ``cdn-lfs*.hf.co``, ``cas-bridge.xethub.hf.co``): ``Expires=<unix seconds>``
  (a canned policy; a custom ``Policy=`` has the date inside the signed policy, which we do not read);
- S3 presigned URLs (SigV4, mirrors on S3 or MinIO): ``X-Amz-Date=YYYYMMDDTHHMMSSZ`` (UTC, when signed) plus
  ``X-Amz-Expires=<seconds>`` (at most 604800, seven days).

A URL with both expires at the earlier. Anything unreadable (not digits, an impossible date, a number too
long to be a time) counts as no expiry at all: the caller then reuses the URL for its default time, and a
refusal from the CDN still makes it resolve again.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

__all__ = ["MARGIN_SHARE", "MAX_MARGIN", "reuse_for", "signed_url_expiry"]

MAX_MARGIN = 30.0  # seconds before expiry a URL stops being reused: room for clock skew and a slow request
MARGIN_SHARE = 0.1  # ... or this share of its remaining lifetime, when that is shorter
_SECONDS = re.compile(r"[0-9]{1,12}")  # 12 digits: beyond the year 30000; longer is not a time
_AMZ_DATE = re.compile(r"([0-9]{8})T([0-9]{6})Z")


def _one(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    if not values or len(set(values)) != 1:
        return None  # absent, or said twice differently: nothing to trust
    return values[0]


def _cloudfront(query: dict[str, list[str]]) -> float | None:
    raw = _one(query, "Expires")
    return float(raw) if raw is not None and _SECONDS.fullmatch(raw) else None


def _s3(query: dict[str, list[str]]) -> float | None:
    date, lifetime = _one(query, "X-Amz-Date"), _one(query, "X-Amz-Expires")
    if date is None or lifetime is None or not _SECONDS.fullmatch(lifetime):
        return None
    m = _AMZ_DATE.fullmatch(date)
    if m is None:
        return None
    try:
        signed = datetime.strptime(m.group(1) + m.group(2), "%Y%m%d%H%M%S").replace(tzinfo=UTC)
    except ValueError:  # month 13, February 30th, ...
        return None
    return signed.timestamp() + int(lifetime)


def signed_url_expiry(url: str) -> float | None:
    """The Unix time a signed URL expires at, if it says (``Expires=`` or ``X-Amz-Date`` + ``X-Amz-Expires``)."""
    query = parse_qs(urlsplit(url).query, keep_blank_values=True)
    found = [t for t in (_cloudfront(query), _s3(query)) if t is not None]
    return min(found) if found else None


def reuse_for(url: str, now: float, *, default: float) -> float:
    """Seconds from ``now`` (Unix time) a redirect target may be reused: until shortly before it expires
    (``MAX_MARGIN``, or ``MARGIN_SHARE`` of what is left of its life when that is less), 0 once that is past,
    ``default`` when the URL does not say when it expires."""
    expiry = signed_url_expiry(url)
    if expiry is None:
        return default
    left = expiry - now
    return max(0.0, left - min(MAX_MARGIN, MARGIN_SHARE * left))
