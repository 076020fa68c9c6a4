"""Where a credential may go, and how a URL may be shown; no I/O.

The rules, all here:

1. A token goes only to the origin it was configured for (``same_origin``): the same scheme, host and port,
   a default port spelled or not (RFC 6454 §4). So a redirect to a CDN, to another port, or to ``http://``
   on the same host is followed, if at all, without it: an https->http downgrade would send the bearer token
   in clear, whoever listens on the path. (requests keeps it on an http->https upgrade, ``should_strip_auth``;
   we do not: no redirect gains a token.) Used for ``HF_TOKEN`` by ``origin.client`` (every request, the
   bulk reads and the redirect targets they keep included) and for the client's own ``Authorization`` by the
   node's ``Upstream``, which contacts nothing but its base.
2. A URL whose authority is anything but ``host[:port]`` (userinfo, a backslash, spaces, a port that is not a
   number) has no origin at all, and so never gets a token: parsers disagree about such URLs (WHATWG reads
   ``https://a\\@b/`` as host ``a``, ``urlsplit`` as host ``b``), and the host we check must be the host the
   request reaches.
3. A client that sends a credential with urllib (the registry's publish, the node's control API, preheat)
   follows no redirect at all (``RefuseRedirects``): urllib would forward ``Authorization`` to any host, and
   turn a POST's 301/302/303 into a GET to it.
4. URLs in messages and logs are shown by ``shown_url``: without userinfo, query and fragment (a signed CDN
   URL's query is a credential for its lifetime), non-printable characters escaped, length bounded.
"""

from __future__ import annotations

import http.client
import re
import urllib.request
from typing import IO
from urllib.parse import quote, urlsplit, urlunsplit

__all__ = ["RefuseRedirects", "has_userinfo", "same_origin", "shown_url"]

DEFAULT_PORTS = {"http": 80, "https": 443}
_AUTHORITY = re.compile(r"(?:[A-Za-z0-9._~-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")
_PRINTABLE_ASCII = "".join(chr(c) for c in range(0x21, 0x7F))  # kept as they are; the rest percent-encoded
SHOWN_MAX = 200  # characters of a URL shown in a message


def _origin(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an http(s) URL whose authority is a plain ``host[:port]``, else None."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # an unclosed "[", a port out of range
        return None
    default = DEFAULT_PORTS.get(parts.scheme)
    if default is None or not parts.hostname or not _AUTHORITY.fullmatch(parts.netloc):
        return None
    return parts.scheme, parts.hostname, default if port is None else port


def same_origin(url: str, origin: str) -> bool:
    """Does ``url`` go to the same scheme, host and port as ``origin`` (so it may carry origin's token)?"""
    here = _origin(url)
    return here is not None and here == _origin(origin)


def has_userinfo(url: str) -> bool:
    """Does ``url`` carry a user name or password (``https://user:secret@host/``)?"""
    try:
        return "@" in urlsplit(url).netloc
    except ValueError:
        return "@" in url


def shown_url(url: str) -> str:
    """``url`` as an error message or a log line may show it: scheme, host, port and path only."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(a URL that does not parse)"
    bare = urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))
    shown = quote(bare, safe=_PRINTABLE_ASCII)
    return shown if len(shown) <= SHOWN_MAX else shown[: SHOWN_MAX - 1] + "…"


class RefuseRedirects(urllib.request.HTTPRedirectHandler):
    """No redirect followed: urllib then raises the 3xx as an ``HTTPError`` for the caller to explain."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: http.client.HTTPMessage,
        newurl: str,
    ) -> urllib.request.Request | None:
        return None
