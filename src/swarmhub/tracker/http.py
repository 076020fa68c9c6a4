"""HTTP/1.x as far as a tracker needs it, without I/O: a request head in, the answer's bytes out (RFC 9112).

A tracker is asked ``GET /announce?...`` and ``GET /scrape?...``, with no body, by clients that mostly close
the connection after one answer. So the head (the request line and the header fields, up to the empty line)
is all there is to read, and only the fields that change what we do are looked at:

- ``Connection``: HTTP/1.1 persists unless it says ``close``, HTTP/1.0 only when it says ``keep-alive``
  (RFC 9112 §9.3).
- ``Content-Length``: a body is skipped, unread (``content_length``); ``Transfer-Encoding`` is not
  implemented (``501``, then the connection closes), and never comes with ``Content-Length`` (RFC 9112 §6.3).
- ``X-Forwarded-For``: believed from a loopback proxy only (``client_host``), as uvicorn's proxy headers are.
- ``Host``: kept as sent (``host``), for the server's DNS-rebinding check (``guard.host_refused``); more than
  one is ``400`` (RFC 9112 §3.2), so no two parsers can disagree on which one was checked.

Anything malformed raises ``HTTPError`` with the status to answer before closing: a field name with
whitespace before its colon or a folded line (RFC 9112 §5.1, §5.2), a request line that is not three words,
a protocol other than HTTP/1.0 or 1.1. Answers are HTTP/1.1, ``content-length`` always, with a ``date``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

__all__ = ["MAX_HEAD", "HTTPError", "RequestHead", "client_host", "parse_head", "render"]

MAX_HEAD = 16384  # h11's default; an announce head is ~400 bytes, a 100-hash scrape ~7,500
TRUSTED_PROXY = "127.0.0.1"  # uvicorn's default for --forwarded-allow-ips

_REASONS = {
    200: b"OK",
    400: b"Bad Request",
    403: b"Forbidden",
    404: b"Not Found",
    405: b"Method Not Allowed",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    501: b"Not Implemented",
    505: b"HTTP Version Not Supported",
}
_TOKEN = re.compile(rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+")  # RFC 9110 §5.6.2: methods and field names
_TARGET = re.compile(rb"[^\x00-\x20\x7f]+")  # lenient as httptools: raw bytes >= 0x80 pass, controls do not


class HTTPError(Exception):
    """A request we cannot serve: answer ``status`` and close the connection."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class RequestHead:
    method: str
    target: bytes  # as sent, for the access log
    path: str  # percent-decoded
    query: bytes  # still percent-encoded: bt.tracker reads raw bytes
    http10: bool
    keep_alive: bool
    content_length: int = 0
    forwarded_for: str | None = None  # the X-Forwarded-For fields, joined with ", "
    host: str | None = None  # the Host field as sent (None: none)


def parse_head(head: bytes) -> RequestHead:
    """The request in ``head``: everything before the empty line that ends it (``CRLF CRLF`` excluded)."""
    request_line, *fields = head.split(b"\r\n")
    words = request_line.split(b" ")
    if len(words) != 3 or not _TOKEN.fullmatch(words[0]) or not _TARGET.fullmatch(words[1]):
        raise HTTPError(400, "malformed request line")
    method, target, version = words
    if version == b"HTTP/1.1":
        http10 = False
    elif version == b"HTTP/1.0":
        http10 = True
    elif version.startswith(b"HTTP/"):
        raise HTTPError(505, "only HTTP/1.0 and HTTP/1.1")
    else:
        raise HTTPError(400, "malformed request line")
    connection: list[bytes] = []
    lengths: set[bytes] = set()
    forwarded: list[bytes] = []
    host: bytes | None = None
    chunked = False
    for field in fields:
        name, colon, value = field.partition(b":")
        if not colon or not _TOKEN.fullmatch(name):
            raise HTTPError(400, "malformed header field")
        name = name.lower()
        if name == b"connection":
            connection += (token.strip().lower() for token in value.split(b","))
        elif name == b"content-length":
            lengths.update(v.strip(b" \t") for v in value.split(b","))
        elif name == b"transfer-encoding":
            chunked = True
        elif name == b"x-forwarded-for":
            forwarded.append(value.strip(b" \t"))
        elif name == b"host":
            if host is not None:
                raise HTTPError(400, "more than one Host field")
            host = value.strip(b" \t")
    if chunked:
        raise HTTPError(400 if lengths else 501, "request bodies in Transfer-Encoding are not supported")
    if len(lengths) > 1 or (lengths and not next(iter(lengths)).isdigit()):
        raise HTTPError(400, "malformed Content-Length")
    raw_path, _, query = _origin_form(target).partition(b"?")
    path = raw_path.decode("latin-1")
    return RequestHead(
        method=method.decode("ascii"),
        target=target,
        path=unquote(path) if "%" in path else path,
        query=query,
        http10=http10,
        keep_alive=b"keep-alive" in connection if http10 else b"close" not in connection,
        content_length=int(next(iter(lengths))) if lengths else 0,
        forwarded_for=b", ".join(forwarded).decode("latin-1") if forwarded else None,
        host=None if host is None else host.decode("latin-1"),
    )


def _origin_form(target: bytes) -> bytes:
    """``/path?query`` of any request target; the absolute form (RFC 9112 §3.2.2) loses its scheme and host."""
    if target[:1] == b"/":
        return target
    scheme, sep, rest = target.partition(b"://")
    if sep and scheme.lower() in (b"http", b"https"):
        slash = rest.find(b"/")
        query = rest.find(b"?")
        if slash < 0 or 0 <= query < slash:
            return b"/" + rest[query:] if query >= 0 else b"/"
        return rest[slash:]
    return target  # "*" and the like: a path nothing is served at


def client_host(peer: str, forwarded_for: str | None) -> str:
    """The client's address: the peer's, or from a loopback proxy the last address before our proxies."""
    if peer != TRUSTED_PROXY or not forwarded_for:
        return peer
    hosts = [_without_port(h.strip()) for h in forwarded_for.split(",")]
    for host in reversed(hosts):
        if host != TRUSTED_PROXY:
            return host
    return hosts[0]


def _without_port(host: str) -> str:
    if host.startswith("["):  # [2001:db8::1]:4711
        return host[1:].partition("]")[0]
    if host.count(":") == 1:  # 192.0.2.1:4711
        return host.partition(":")[0]
    return host


def render(
    status: int,
    headers: bytes,
    body: bytes,
    *,
    date: bytes,
    keep_alive: bool,
    http10: bool = False,
    length: int | None = None,
) -> bytes:
    """An answer's bytes: ``headers`` are whole ``name: value\\r\\n`` lines; ``length`` differs from the body's
    for ``HEAD``. A closing answer says ``connection: close``; HTTP/1.0 is told when it may keep the
    connection."""
    connection = b"connection: close\r\n" if not keep_alive else b"connection: keep-alive\r\n" if http10 else b""
    return b"HTTP/1.1 %d %s\r\ndate: %s\r\n%scontent-length: %d\r\n%s\r\n%s" % (
        status,
        _REASONS[status],
        date,
        headers,
        len(body) if length is None else length,
        connection,
        body,
    )
