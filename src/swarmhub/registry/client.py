"""Talking to a registry from the CLI (publish, pull --registry): its JSON API over plain HTTP(S).

Blocking (urllib) on purpose: a handful of small requests per command; callers run it in a thread.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from typing import Any

from swarmhub import __version__
from swarmhub.errors import ConfigError, SwarmhubError, UsageError
from swarmhub.hub.repo import RepoType

__all__ = ["RegistryClient", "RegistryError"]


class RegistryError(SwarmhubError):
    def __init__(self, message: str, *, status: int | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.status = status


class RegistryClient:
    def __init__(self, url: str, token: str | None = None, *, timeout: float = 60.0) -> None:
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"registry {url!r} is not an http(s) URL", hint="e.g. --registry http://127.0.0.1:8470")
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def _request(self, path: str, *, body: dict[str, Any] | None = None, auth: bool = False) -> bytes:
        headers = {"User-Agent": f"swarmhub/{__version__}", "Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if auth and self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(self.url + path, data=data, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return bytes(response.read())
        except urllib.error.HTTPError as exc:
            try:
                message = json.loads(exc.read()).get("error", exc.reason)
            except (ValueError, AttributeError):
                message = exc.reason
            if exc.code == 401:
                raise RegistryError(
                    f"the registry refused to publish: {message}",
                    status=401,
                    hint="set SWARMHUB_TOKEN to a token from `swarmhub registry token create NAME` on the registry",
                ) from None
            raise RegistryError(f"registry {self.url}: {message} (HTTP {exc.code})", status=exc.code) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise RegistryError(
                f"cannot reach the registry at {self.url}: {reason}",
                hint="check --registry (or SWARMHUB_REGISTRY) and that `swarmhub registry serve` runs there",
            ) from None

    def _json(self, path: str, **kw: Any) -> dict[str, Any]:
        value = json.loads(self._request(path, **kw))
        if not isinstance(value, dict):
            raise RegistryError(f"registry {self.url}: unexpected answer to {path}")
        return value

    def info(self) -> dict[str, Any]:
        return self._json("/api/info")

    def publish(self, hybrid: bytes, classic: bytes) -> dict[str, Any]:
        if not self.token:
            raise UsageError(
                "publishing needs a token",
                hint="set SWARMHUB_TOKEN to a token from `swarmhub registry token create NAME` on the registry",
            )
        body = {"torrent": base64.b64encode(hybrid).decode(), "classic_torrent": base64.b64encode(classic).decode()}
        return self._json("/api/releases", body=body, auth=True)

    def release(self, repo_type: RepoType, repo_id: str, commit: str | None) -> dict[str, Any] | None:
        """A release by commit (or prefix), or the newest one when ``commit`` is None; None if not published."""
        path = f"/api/releases/{repo_type}/{repo_id}/{commit}" if commit else f"/api/repos/{repo_type}/{repo_id}/latest"
        try:
            return self._json(path)
        except RegistryError as exc:
            if exc.status == 404:
                return None
            raise

    def torrent(self, repo_type: RepoType, repo_id: str, commit: str, *, classic: bool = False) -> bytes:
        path = f"/api/releases/{repo_type}/{repo_id}/{commit}/torrent"
        return self._request(path + ("?classic=1" if classic else ""))
