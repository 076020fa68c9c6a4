"""Who may drive a swarmhub service: the checks every app's requests pass before any handler runs.

The threat is a web page on the user's own machine (or a page that rebinds its DNS name to 127.0.0.1): it can
send a CORS "simple request" — a POST with a ``text/plain`` or form body and no preflight — to anything that
listens on localhost, and with a rebound name it can read the answers too. So, in this order:

1. **Host** (DNS rebinding). A service bound to a loopback address answers only requests whose ``Host`` is
   ``127.0.0.1``, ``localhost``, ``[::1]`` (any port) or a name it was told to answer to (``--allow-host``);
   anything else is ``403``. Bound to another address the service is meant to be reached by any name, so no
   Host check unless names were given (then those, the loopback names and the bound address). ``host_refused``
   is this rule alone, for the one server that is not ASGI (``tracker serve``'s own, ``tracker.protocol``).
2. **Browsers** on mutating calls. A request that may change something (any method but GET, HEAD, OPTIONS)
   carrying an ``Origin`` header comes from a page's script: ``403``, whatever the origin. Programs
   (huggingface_hub, the CLI, curl) send none.
3. **JSON only** on the control routes (``control_routes``): a mutating call whose ``Content-Type`` is not
   ``application/json`` is ``415`` — a page cannot send that type without a preflight, which we never answer.
4. **A credential** on the control routes' mutating calls: ``Authorization: Bearer <token>``, compared in
   constant time (``bearer_ok``); ``401`` without it. Each service says where its token comes from (the node
   makes one at start, mode 0600 in its state folder; the coordinator takes ``SWARMHUB_CLUSTER_TOKEN``).

Answers are one-line JSON ``{"error": ..., "hint": ...}`` so the CLI can print them as any other error.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import os
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from starlette.types import ASGIApp, Receive, Scope, Send

from swarmhub.errors import ConfigError

__all__ = [
    "HOST_HINT",
    "LOOPBACK_NAMES",
    "SAFE_METHODS",
    "Guard",
    "GuardRules",
    "allowed_hosts",
    "bearer_ok",
    "bearer_token",
    "host_name",
    "host_refused",
    "is_loopback",
    "new_secret",
    "read_secret_file",
    "refusal_body",
    "write_secret_file",
]

LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
HOST_HINT = "use http://127.0.0.1:<port>, or start it with --allow-host NAME"


def is_loopback(host: str) -> bool:
    """Whether a bind address (or a Host name) is this machine only."""
    name = host.strip("[]").lower()
    if name in ("localhost", ""):
        return name == "localhost"
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def host_name(value: str) -> str:
    """The name of a ``Host`` header value, without its port, brackets or case: ``[::1]:80`` -> ``::1``."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def allowed_hosts(bind_host: str, extra: Iterable[str] = ()) -> frozenset[str] | None:
    """The Host names a service bound to ``bind_host`` answers (None: any). See the module's docstring."""
    names = frozenset(host_name(n) for n in extra if n)
    if is_loopback(bind_host):
        return LOOPBACK_NAMES | {host_name(bind_host)} | names
    if not names:
        return None
    wildcard = bind_host in ("", "0.0.0.0", "::")
    return LOOPBACK_NAMES | names | (frozenset() if wildcard else {host_name(bind_host)})


def host_refused(hosts: frozenset[str] | None, host: str | None, service: str) -> str | None:
    """Why a request whose ``Host`` is ``host`` (None: it sent none) is refused by a service answering ``hosts``
    (``allowed_hosts``; None: any), or None when it is answered. The answer is ``403`` with ``HOST_HINT``."""
    if hosts is None:
        return None
    name = host_name(host or "")
    if name in hosts:
        return None
    return f"{service} does not answer to the host name {name[:100] or '(none)'!r}"


def refusal_body(message: str, hint: str) -> bytes:
    """A refusal's body, as every service words it: one line of JSON the CLI prints as any other error."""
    return json.dumps({"error": message, "hint": hint}).encode()


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` value (the scheme in any case); None for anything else."""
    scheme, _, value = (authorization or "").strip().partition(" ")
    return (value.strip() or None) if scheme.lower() == "bearer" else None


def bearer_ok(authorization: str | None, token: str) -> bool:
    """``Authorization: Bearer <token>``, compared in constant time."""
    given = bearer_token(authorization)
    return given is not None and hmac.compare_digest(given.encode(), token.encode())


@dataclass(frozen=True)
class GuardRules:
    """What ``Guard`` enforces. ``hosts``: the Host names answered (None: any). ``control``: whether a path is
    a control route (JSON and, with ``token``, the credential on its mutating calls). ``token``: the
    credential's value, or a callable giving it (read each time: a node makes its own at start)."""

    hosts: frozenset[str] | None
    control: Callable[[str], bool] = lambda path: False
    token: str | Callable[[], str | None] | None = None
    service: str = "this service"

    def current_token(self) -> str | None:
        return self.token() if callable(self.token) else self.token


class Guard:
    """ASGI middleware: ``app`` behind ``rules`` (see the module's docstring)."""

    def __init__(self, app: ASGIApp, rules: GuardRules) -> None:
        self.app = app
        self.rules = rules

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            problem = self.problem(scope)
            if problem is not None:
                status, message, hint, extra = problem
                await _refuse(send, status, message, hint, extra)
                return
        await self.app(scope, receive, send)

    def problem(self, scope: Scope) -> tuple[int, str, str, dict[str, str]] | None:
        """Why a request is refused (status, message, hint, extra headers), or None."""
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", ())}
        rules = self.rules
        refused = host_refused(rules.hosts, headers.get("host"), rules.service)
        if refused is not None:
            return 403, refused, HOST_HINT, {}
        method = scope.get("method", "GET")
        if method in SAFE_METHODS:
            return None
        if "origin" in headers:
            return (
                403,
                f"{rules.service} refuses requests from web pages (Origin: {headers['origin'][:100]})",
                "call it from a program or the swarmhub CLI, not from a browser",
                {},
            )
        if not rules.control(scope.get("path", "")):
            return None
        media_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if media_type != "application/json":
            return (
                415,
                f"{rules.service} takes JSON only (Content-Type: application/json), not {media_type or 'none'!r}",
                "send the body as application/json",
                {},
            )
        token = rules.current_token()
        if token is not None and not bearer_ok(headers.get("authorization"), token):
            return (
                401,
                f"{rules.service} needs its credential (Authorization: Bearer <token>)",
                "use the swarmhub CLI on the same machine, which reads it, or pass the token",
                {"www-authenticate": 'Bearer realm="swarmhub"'},
            )
        return None


async def _refuse(send: Send, status: int, message: str, hint: str, extra: dict[str, str]) -> None:
    body = refusal_body(message, hint)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"x-error-message", message.encode("ascii", "replace")),
        *((k.encode(), v.encode()) for k, v in extra.items()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def new_secret() -> str:
    """A fresh credential: 256 random bits, URL-safe."""
    return secrets.token_urlsafe(32)


def write_secret_file(path: Path, content: str) -> None:
    """``content`` written to ``path`` atomically, readable by its owner only (0600) from the first byte."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask, or a file left there before
        os.write(fd, content.encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)


def read_secret_file(path: Path) -> str:
    """A secret file's content; ``ConfigError`` when it is missing or readable by others than its owner."""
    try:
        mode = path.stat().st_mode
        text = path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}", hint="is the service running as this user?") from exc
    if mode & 0o077:
        raise ConfigError(f"{path} is readable by other users", hint=f"chmod 600 {path}")
    return text
