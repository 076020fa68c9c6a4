"""Talking to a registry from the CLI (publish, pull --registry): its JSON API over plain HTTP(S).

Blocking (urllib) on purpose: a handful of small requests per command; callers run it in a thread.

``SWARMHUB_TOKEN`` goes to the registry's URL as given and nowhere else: a request that carries it (publish)
follows no redirect. urllib's own handler would turn a POST's 301/302/303 into a GET to wherever the
``Location`` names, any host, ``http://`` too, with the ``Authorization`` header still on it (it drops only
``Content-*``); here the redirect is refused with one line naming its target. Requests without the token
(reading releases and torrents) follow redirects as usual. Messages show URLs without userinfo or query
(``origin.credentials.shown_url``), and never the token, even when a registry echoes it back.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any
from urllib.parse import urljoin

from swarmhub import __version__
from swarmhub.errors import ConfigError, SwarmhubError, UsageError
from swarmhub.hub.repo import RepoType
from swarmhub.origin.credentials import RefuseRedirects, has_userinfo, shown_url

__all__ = ["RegistryClient", "RegistryError"]


class RegistryError(SwarmhubError):
    def __init__(self, message: str, *, status: int | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.status = status


class RegistryClient:
    def __init__(self, url: str, token: str | None = None, *, timeout: float = 60.0) -> None:
        if not url.startswith(("http://", "https://")):
            raise ConfigError(
                f"registry {shown_url(url)!r} is not an http(s) URL", hint="e.g. --registry http://127.0.0.1:8470"
            )
        if has_userinfo(url):
            raise ConfigError(
                f"the registry URL {shown_url(url)} carries credentials",
                hint="give the publish token in SWARMHUB_TOKEN, not in the URL",
            )
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def _request(self, path: str, *, body: dict[str, Any] | None = None, auth: bool = False) -> bytes:
        headers = {"User-Agent": f"swarmhub/{__version__}", "Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        handlers: list[urllib.request.BaseHandler] = []
        if auth and self.token:
            headers["Authorization"] = f"Bearer {self.token}"
            handlers.append(RefuseRedirects())
        request = urllib.request.Request(self.url + path, data=data, headers=headers)
        try:
            with urllib.request.build_opener(*handlers).open(request, timeout=self.timeout) as response:
                return bytes(response.read())
        except urllib.error.HTTPError as exc:
            if 300 <= exc.code < 400 and "Authorization" in headers:
                location = exc.headers.get("Location")
                to = f" to {shown_url(urljoin(request.full_url, location))}" if location else ""
                raise RegistryError(
                    f"the registry at {self.url} redirected {path} (HTTP {exc.code}){to}; not followed, so that "
                    "SWARMHUB_TOKEN goes nowhere else",
                    status=exc.code,
                    hint="if you trust where it leads, give that URL as --registry (or SWARMHUB_REGISTRY)",
                ) from None
            try:
                message = str(json.loads(exc.read()).get("error", exc.reason))
            except (ValueError, AttributeError):
                message = exc.reason
            if self.token:
                message = message.replace(self.token, "<token>")  # a registry that echoes the header back
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

    def publish(
        self, hybrid: bytes, classic: bytes, hybrid_parts: Sequence[bytes] = (), classic_parts: Sequence[bytes] = ()
    ) -> dict[str, Any]:
        """Publish a release: its two torrents (the part 0s, and the other parts of a release of several)."""
        if not self.token:
            raise UsageError(
                "publishing needs a token",
                hint="set SWARMHUB_TOKEN to a token from `swarmhub registry token create NAME` on the registry",
            )
        body: dict[str, Any] = {
            "torrent": base64.b64encode(hybrid).decode(),
            "classic_torrent": base64.b64encode(classic).decode(),
        }
        if hybrid_parts or classic_parts:
            body["torrent_parts"] = [base64.b64encode(t).decode() for t in hybrid_parts]
            body["classic_torrent_parts"] = [base64.b64encode(t).decode() for t in classic_parts]
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

    def torrent(self, repo_type: RepoType, repo_id: str, commit: str, *, classic: bool = False, part: int = 0) -> bytes:
        """The release's hybrid (or classic) torrent: part 0, or part ``part`` of a release of several."""
        query = "&".join(q for q in ("classic=1" if classic else "", f"part={part}" if part else "") if q)
        path = f"/api/releases/{repo_type}/{repo_id}/{commit}/torrent"
        return self._request(path + (f"?{query}" if query else ""))

    def other_parts(self, repo_type: RepoType, repo_id: str, commit: str, count: int) -> list[bytes]:
        """Hybrid parts 1 to ``count - 1`` of a release of ``count`` torrents (none for a release of one)."""
        return [self.torrent(repo_type, repo_id, commit, part=i) for i in range(1, count)]
