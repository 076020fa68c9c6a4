"""``NodeClient``: the CLI's side of the node's control API (``node.daemon``), beside it.

The node writes ``<state>/node.json`` (mode 0600: its URL, pid and the control secret it made at start); a
client on the same machine, as the same user, reads it and sends the secret as ``Authorization: Bearer``.
Nobody else can: the file is the credential. Calls are plain ``urllib`` (no event loop needed), JSON in and
out; a refusal or a broken connection is a ``SwarmhubError`` with the node's own message and hint.
"""

from __future__ import annotations

import base64
import json
import os
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from swarmhub.errors import SwarmhubError, TorrentMismatch
from swarmhub.origin.credentials import RefuseRedirects

__all__ = ["NodeClient"]


_OPENER = urllib.request.build_opener(RefuseRedirects, urllib.request.ProxyHandler({}))  # loopback: never a proxy


@dataclass(frozen=True)
class NodeClient:
    url: str
    secret: str
    pid: int = 0

    @classmethod
    def running(cls, state_dir: Path) -> NodeClient | None:
        """The node running on this machine for this state folder, or None (none running, or not ours)."""
        try:
            info = json.loads((state_dir / "node.json").read_text())
            pid = int(info["pid"])
            os.kill(pid, 0)
            url, secret = info["url"], info["secret"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if not isinstance(url, str) or not isinstance(secret, str):
            return None
        return cls(url, secret, pid)

    # ------------------------------------------------------------------------------------------- calls

    def _request(self, path: str, body: object | None) -> urllib.request.Request:
        headers = {"Authorization": f"Bearer {self.secret}"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        return urllib.request.Request(f"{self.url}{path}", data=data, headers=headers, method="POST" if data else "GET")

    def _open(self, request: urllib.request.Request, timeout: float) -> Any:
        try:
            return _OPENER.open(request, timeout=timeout)
        except urllib.error.HTTPError as exc:
            raise _refusal(self.url, exc) from None
        except (OSError, urllib.error.URLError) as exc:
            raise SwarmhubError(
                f"the node at {self.url} does not answer: {exc}", hint="restart it: swarmhub node run"
            ) from exc

    def status(self) -> dict[str, Any]:
        with self._open(self._request("/status", None), 10) as response:
            status: dict[str, Any] = json.loads(response.read())
        return status

    def seed(self) -> int:
        """Seed the store's torrents not seeded yet; how many torrents were added."""
        with self._open(self._request("/seed", {}), 60) as response:
            return int(json.loads(response.read())["seeding"])

    def pull(
        self,
        data: bytes,
        include: Sequence[str] | None,
        exclude: Sequence[str] | None,
        *,
        timeout: float,
        on_progress: Callable[[dict[str, Any]], None],
    ) -> dict[str, Any]:
        """Land those files of the torrent ``data``; ``on_progress`` gets each progress line; the result. Of a
        release of several torrents, ``data`` is part 0 and the node finds the others in its store (where
        ``swarmhub pull`` puts them first: the node and the command share the state folder)."""
        body: dict[str, Any] = {"torrent": base64.b64encode(data).decode(), "include": include, "exclude": exclude}
        try:
            with self._open(self._request("/pull", body), timeout) as response:
                for line in _lines(response):
                    if "progress" in line:
                        on_progress(line["progress"])
                    elif "error" in line:
                        raise SwarmhubError(str(line["error"]), hint=line.get("hint"))
                    elif "result" in line:
                        result: dict[str, Any] = line["result"]
                        return result
        except (OSError, ValueError) as exc:
            raise SwarmhubError(f"the node at {self.url} failed the pull: {exc}", hint="see its log") from exc
        raise SwarmhubError(f"the node at {self.url} ended the pull without a result", hint="see its log")


def _lines(response: Any) -> Iterator[dict[str, Any]]:
    for raw in response:
        line = json.loads(raw)
        if isinstance(line, dict):
            yield line


def _refusal(url: str, exc: urllib.error.HTTPError) -> SwarmhubError:
    """The node's own one-line error for a refused call."""
    try:
        body = json.loads(exc.read() or b"{}")
    except ValueError:
        body = {}
    message = body.get("error") if isinstance(body, dict) else None
    hint = body.get("hint") if isinstance(body, dict) else None
    text = str(message or f"the node at {url} answered {exc.code}")
    if exc.code == 409:  # the upstream contradicts the torrent
        return TorrentMismatch(text, repo_id="", hint=hint)
    return SwarmhubError(text, hint=hint)
