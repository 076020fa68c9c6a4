"""A test's handles on the dev hub's wire: fault rules it adds at runtime, and the log of what was sent.

Both work at the ASGI ``send`` level, wrapped around each app (log outermost, so it records what the
client really received, faults included).

Faults
------

A rule matches a request by path glob (``fnmatch`` on the decoded URL path, never the query; ``*`` crosses
``/``) and optionally by method, for its first ``times`` matches (or forever), and does one thing:

- ``Respond``: answer with a status instead of the app (``429`` + ``Retry-After``, ``500``, ``503``, ...);
- ``Reset``: let the app answer, but break the connection after N body bytes (the client sees a body shorter
  than its ``Content-Length``);
- ``Corrupt``: let the app answer, flipping bytes at an offset of the body (status and length unchanged);
- ``Delay``: sleep before letting the app answer.

Only the first matching rule (in the order added) applies to a request, and only it uses up one of its
``times``. ``Faults`` is thread-safe: tests add and clear rules from their thread while the server's event
loop reads them. For a server in another process, rules come from a JSON file (see ``rules_from_json``).

Request log
-----------
Every HTTP request, logged by the time its client has the answer (or broken off): method, path, query,
``Range``, the Authorization header (so a test can check a token went to the origin and never to the CDN),
status and body bytes sent.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, Literal

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from swarmhub.errors import ConfigError

__all__ = [
    "Corrupt",
    "Delay",
    "FaultAction",
    "FaultInjection",
    "FaultRule",
    "Faults",
    "InjectedReset",
    "LoggedRequest",
    "RequestLog",
    "RequestLogging",
    "Reset",
    "Respond",
    "ServerName",
    "rules_from_json",
]


@dataclass(frozen=True)
class Respond:
    status: int
    retry_after: int | None = None  # seconds, sent as Retry-After
    headers: Mapping[str, str] = field(default_factory=dict)
    body: str | None = None  # default: {"error": "injected fault: <status>"}


@dataclass(frozen=True)
class Reset:
    after_bytes: int


@dataclass(frozen=True)
class Corrupt:
    offset: int = 0  # from the start of the response body
    length: int = 1


@dataclass(frozen=True)
class Delay:
    seconds: float


FaultAction = Respond | Reset | Corrupt | Delay


@dataclass(frozen=True)
class FaultRule:
    path: str  # glob on the URL path
    action: FaultAction
    method: str | None = None  # None: any method
    times: int | None = None  # None: every matching request

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method.upper() == method.upper()) and fnmatchcase(path, self.path)


class Faults:
    """The live rule list. Methods return the rule they add, so a test can keep it around."""

    def __init__(self, rules: list[FaultRule] | None = None) -> None:
        self._lock = threading.Lock()
        self._rules: list[tuple[FaultRule, list[int | None]]] = []  # rule, [remaining]
        for rule in rules or []:
            self.add(rule)

    def add(self, rule: FaultRule) -> FaultRule:
        with self._lock:
            self._rules.append((rule, [rule.times]))
        return rule

    def respond(
        self,
        path: str,
        status: int,
        *,
        retry_after: int | None = None,
        headers: Mapping[str, str] | None = None,
        method: str | None = None,
        times: int | None = None,
    ) -> FaultRule:
        return self.add(FaultRule(path, Respond(status, retry_after, dict(headers or {})), method, times))

    def reset(self, path: str, after_bytes: int, *, method: str | None = None, times: int | None = None) -> FaultRule:
        return self.add(FaultRule(path, Reset(after_bytes), method, times))

    def corrupt(
        self,
        path: str,
        offset: int = 0,
        length: int = 1,
        *,
        method: str | None = None,
        times: int | None = None,
    ) -> FaultRule:
        return self.add(FaultRule(path, Corrupt(offset, length), method, times))

    def delay(self, path: str, seconds: float, *, method: str | None = None, times: int | None = None) -> FaultRule:
        return self.add(FaultRule(path, Delay(seconds), method, times))

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def rules(self) -> list[FaultRule]:
        """Rules that can still fire."""
        with self._lock:
            return [rule for rule, left in self._rules if left[0] is None or left[0] > 0]

    def take(self, method: str, path: str) -> FaultAction | None:
        """The action for this request, using up one of its rule's ``times``."""
        with self._lock:
            for rule, left in self._rules:
                if (left[0] is None or left[0] > 0) and rule.matches(method, path):
                    if left[0] is not None:
                        left[0] -= 1
                    return rule.action
        return None

    def load(self, path: Path | str) -> None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read fault rules from {path}: {exc.strerror}") from exc
        for rule in rules_from_json(text):
            self.add(rule)


def _action_from_json(item: Mapping[str, Any]) -> FaultAction:
    kind = item.get("action")
    if kind == "respond":
        return Respond(int(item["status"]), item.get("retry_after"), dict(item.get("headers", {})), item.get("body"))
    if kind == "reset":
        return Reset(int(item["after_bytes"]))
    if kind == "corrupt":
        return Corrupt(int(item.get("offset", 0)), int(item.get("length", 1)))
    if kind == "delay":
        return Delay(float(item["seconds"]))
    raise ValueError(f"unknown action {kind!r}")


def rules_from_json(text: str) -> list[FaultRule]:
    """Rules from JSON: a list of objects such as
    ``{"path": "/api/*", "method": "GET", "times": 1, "action": "respond", "status": 429, "retry_after": 2}``,
    ``{"path": "/lfs/*", "action": "reset", "after_bytes": 1000}``,
    ``{"path": "/lfs/*", "action": "corrupt", "offset": 10, "length": 1}``,
    ``{"path": "*", "action": "delay", "seconds": 0.5}``.
    """
    try:
        items = json.loads(text)
        if not isinstance(items, list):
            raise ValueError("expected a JSON list of rules")
        return [
            FaultRule(str(item["path"]), _action_from_json(item), item.get("method"), item.get("times"))
            for item in items
        ]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(
            f"invalid fault rules: {exc}",
            hint='write a JSON list like [{"path": "/lfs/*", "action": "delay", "seconds": 1}]',
        ) from exc


class InjectedReset(Exception):
    """Raised to the server so it drops the connection mid-body (uvicorn closes the transport)."""


def _contains_reset(exc: BaseException) -> bool:
    if isinstance(exc, InjectedReset):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return any(_contains_reset(e) for e in exc.exceptions)
    return False


class FaultInjection:
    """ASGI middleware consulting ``faults`` on every HTTP request."""

    def __init__(self, app: ASGIApp, faults: Faults) -> None:
        self.app = app
        self.faults = faults

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        action = self.faults.take(scope["method"], scope["path"]) if scope["type"] == "http" else None
        if action is None:
            await self.app(scope, receive, send)
        elif isinstance(action, Delay):
            await anyio.sleep(action.seconds)
            await self.app(scope, receive, send)
        elif isinstance(action, Respond):
            await _respond(action, send)
        elif isinstance(action, Corrupt):
            await self.app(scope, receive, _corrupting(send, action))
        else:
            try:
                await self.app(scope, receive, _resetting(send, action))
            except BaseException as exc:
                # Re-raise a bare InjectedReset (not wrapped in a task group's ExceptionGroup) so the server's
                # log filter recognises it.
                if _contains_reset(exc):
                    raise InjectedReset(f"connection reset after {action.after_bytes} bytes") from None
                raise


async def _respond(action: Respond, send: Send) -> None:
    body = (action.body or json.dumps({"error": f"injected fault: {action.status}"})).encode()
    headers = {"content-type": "application/json", "content-length": str(len(body))}
    if action.retry_after is not None:
        headers["retry-after"] = str(action.retry_after)
    headers.update({k.lower(): v for k, v in action.headers.items()})
    raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": action.status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def _corrupting(send: Send, action: Corrupt) -> Send:
    sent = 0

    async def corrupting_send(message: Message) -> None:
        nonlocal sent
        if message["type"] == "http.response.body":
            body = bytearray(message.get("body", b""))
            lo, hi = max(action.offset - sent, 0), min(action.offset + action.length - sent, len(body))
            for i in range(lo, hi):
                body[i] ^= 0xFF
            sent += len(body)
            message = {**message, "body": bytes(body)}
        await send(message)

    return corrupting_send


def _resetting(send: Send, action: Reset) -> Send:
    sent = 0

    async def resetting_send(message: Message) -> None:
        nonlocal sent
        if message["type"] != "http.response.body":
            await send(message)
            return
        body: bytes = message.get("body", b"")
        room = action.after_bytes - sent
        if len(body) <= room:  # a body that ends within the allowance completes normally
            sent += len(body)
            await send(message)
            return
        if room > 0:
            await send({"type": "http.response.body", "body": body[:room], "more_body": True})
        raise InjectedReset(f"connection reset after {action.after_bytes} bytes")

    return resetting_send


# --- request log ------------------------------------------------------------------------------------------

ServerName = Literal["origin", "cdn"]


@dataclass(frozen=True)
class LoggedRequest:
    server: ServerName
    method: str
    path: str  # decoded URL path
    query: str
    range: str | None  # the Range header
    authorization: str | None  # the Authorization header, verbatim
    status: int | None  # None if the app failed before answering
    body_bytes: int  # response body bytes handed to the server

    @property
    def token(self) -> str | None:
        """The bearer token sent, if any."""
        if self.authorization is None:
            return None
        return self.authorization.removeprefix("Bearer ").strip()


class RequestLog:
    """Thread-safe, append-only list of ``LoggedRequest`` (``clear()`` between test phases)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: list[LoggedRequest] = []

    def append(self, entry: LoggedRequest) -> None:
        with self._lock:
            self._entries.append(entry)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def entries(
        self, path: str = "*", *, server: ServerName | None = None, method: str | None = None
    ) -> list[LoggedRequest]:
        """Logged requests whose path matches the glob (and server, method when given), oldest first."""
        with self._lock:
            entries = list(self._entries)
        return [
            e
            for e in entries
            if fnmatchcase(e.path, path)
            and (server is None or e.server == server)
            and (method is None or e.method == method.upper())
        ]

    def body_bytes(self, path: str = "*", *, server: ServerName | None = None) -> int:
        return sum(e.body_bytes for e in self.entries(path, server=server))


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


class RequestLogging:
    """ASGI middleware appending one ``LoggedRequest`` per HTTP request to ``log``."""

    def __init__(self, app: ASGIApp, log: RequestLog, server: ServerName) -> None:
        self.app = app
        self.log = log
        self.server = server

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status: int | None = None
        sent = 0
        expected: int | None = None  # body bytes the client waits for
        logged = False
        head = scope["method"] == "HEAD"  # the server drops HEAD bodies: nothing goes on the wire

        def record() -> None:
            nonlocal logged
            if not logged:
                logged = True
                self.log.append(
                    LoggedRequest(
                        server=self.server,
                        method=scope["method"],
                        path=scope["path"],
                        query=bytes(scope.get("query_string", b"")).decode("latin-1"),
                        range=_header(scope, b"range"),
                        authorization=_header(scope, b"authorization"),
                        status=status,
                        body_bytes=sent,
                    )
                )

        async def logging_send(message: Message) -> None:
            nonlocal status, sent, expected
            # Log before the message that completes the answer for the client (the headers, for HEAD or
            # an empty body; else the last byte of Content-Length), so a client that has its answer also
            # finds it in the log.
            if message["type"] == "http.response.start":
                status = int(message["status"])
                length = dict(message.get("headers", [])).get(b"content-length")
                expected = 0 if head or status in (204, 304) else None if length is None else int(length)
                if expected == 0:
                    record()
            elif message["type"] == "http.response.body":
                sent += 0 if head else len(message.get("body", b""))
                if not message.get("more_body", False) or (expected is not None and sent >= expected):
                    record()
            await send(message)

        try:
            await self.app(scope, receive, logging_send)
        finally:
            record()  # a response broken off (or never started) is logged too
