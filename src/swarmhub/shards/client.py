"""The client of a shard node's ``POST /command``, and the record through which a program on the node's machine
finds the node's credential.

Every command carries ``Authorization: Bearer <token>`` (see ``shards.server`` for where a node's token comes
from). A running node writes ``<state>/shard-nodes/<port>.json`` (``{url, pid, token}``, mode 0600; ``token``
only when the node made it at start, null when it was given one), and removes it when it stops. A client
sending to ``http://<loopback>:<port>`` takes the token of that record while its node runs; a record's token
is never sent to another host.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from swarmhub.errors import ShardError, UsageError
from swarmhub.guard import is_loopback, read_secret_file, write_secret_file

__all__ = ["node_record", "node_url", "recorded_token", "send_command", "write_node_record"]

_RECORDS = "shard-nodes"
_CONNECT_TIMEOUT = 10.0  # seconds; reading the answer has no limit: a LOAD_SHARD may download for minutes


def node_url(node: str) -> str:
    """``host:port`` or a URL -> the node's base URL."""
    return (node if "://" in node else f"http://{node}").rstrip("/")


def node_record(state_dir: Path, port: int) -> Path:
    return state_dir / _RECORDS / f"{port}.json"


def write_node_record(path: Path, url: str, token: str | None) -> None:
    """The running node's record (see the module's docstring); ``token`` None: the node was given its token."""
    write_secret_file(path, json.dumps({"url": url, "pid": os.getpid(), "token": token}))


def recorded_token(state_dir: Path, node: str) -> str | None:
    """The token that the node running at ``node`` on this machine made and recorded, or None (not a loopback
    URL, no record for its port, its process gone, or a node given its token)."""
    parts = urlsplit(node_url(node))
    try:
        port = parts.port or 80
    except ValueError:
        return None
    if not is_loopback(parts.hostname or ""):
        return None
    path = node_record(state_dir, port)
    if not path.exists():
        return None
    try:
        record = json.loads(read_secret_file(path))
        os.kill(int(record["pid"]), 0)
    except PermissionError:  # alive, another user's: its token is not ours to use
        return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    token = record.get("token")
    return token if isinstance(token, str) and token else None


def send_command(
    node: str, command: str, params: dict[str, Any] | None = None, *, token: str | None = None
) -> dict[str, Any]:
    """POST one message to a node's ``/command``; the result, or ``ShardError`` with the node's error."""
    message = {
        "command": command,
        "request_id": uuid.uuid4().hex[:12],
        "from": "swarmhub-cli",
        "to": node,
        "params": params or {},
    }
    url = f"{node_url(node)}/command"
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        response = httpx.post(
            url, json=message, headers=headers, timeout=httpx.Timeout(_CONNECT_TIMEOUT, read=None), trust_env=False
        )
        reply = response.json()
    except httpx.InvalidURL as exc:
        raise UsageError(f"{node!r} is not a node URL such as http://127.0.0.1:8500: {exc}") from exc
    except httpx.HTTPError as exc:
        raise ShardError(f"cannot reach {url}: {exc}", hint="is 'swarmhub shards serve' running there?") from exc
    except ValueError as exc:
        raise ShardError(f"{url} answered {response.status_code} with no JSON: is it a shard node?") from exc
    if isinstance(reply, dict) and "status" not in reply and isinstance(reply.get("error"), str):
        # refused before any command ran (the guard: credential, Host, Content-Type)
        hint = reply.get("hint") if response.status_code != 401 else _TOKEN_HINT
        raise ShardError(f"{node}: {reply['error']}", hint=hint if isinstance(hint, str) else None)
    if not isinstance(reply, dict) or reply.get("status") not in ("success", "error"):
        raise ShardError(f"{url} answered something that is not a command response")
    if reply["status"] == "error":
        raise ShardError(f"{node}: {reply.get('error')}")
    result = reply.get("result")
    return result if isinstance(result, dict) else {"result": result}


_TOKEN_HINT = (
    "on the node's machine the CLI reads the token the node made; elsewhere set SWARMHUB_SHARDS_TOKEN "
    "(or SWARMHUB_CLUSTER_TOKEN, for a node of a cluster) to the node's token"
)
