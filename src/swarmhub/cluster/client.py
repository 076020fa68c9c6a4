"""The coordinator's client, beside its server (``cluster.coordinator``): nodes' heartbeats and branch lookups,
``swarmhub preheat`` and its status, shard servers' manifests.

One async httpx stack: JSON bodies (the coordinator takes no other, ``guard.Guard``), the cluster token as a
bearer credential, sent to the coordinator only: no redirect is followed and no proxy is used
(``trust_env=False``), as the heartbeats always went direct. Each call says its own timeout. The errors of the
calls programs see are ``ClusterError`` in one line with the fix; the node's background calls get the
response or httpx's error and decide themselves (a heartbeat that fails is tried again, a branch lookup that
fails is asked of the Hub).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Coroutine, Mapping
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import quote

import httpx

from swarmhub.errors import ClusterError

__all__ = ["CoordinatorClient", "blocking"]

T = TypeVar("T")


class CoordinatorClient:
    def __init__(self, url: str, *, token: str | None = None, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._client = httpx.AsyncClient(timeout=timeout, headers=headers, trust_env=False, follow_redirects=False)

    async def __aenter__(self) -> CoordinatorClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Mapping[str, Any] | None = None,
        content: bytes | None = None,
        params: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> httpx.Response:
        """The one transport method: ``body`` as JSON, or ``content`` (already JSON) as is."""
        headers = {"Content-Type": "application/json"} if body is not None or content is not None else {}
        return await self._client.request(
            method,
            self.url + path,
            json=body,
            content=content,
            params=params,
            headers=headers,
            timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
        )

    # ---------------------------------------------------------------------------------------- nodes

    async def report(self, body: Mapping[str, Any], *, timeout: float | None = None) -> dict[str, Any]:
        """A node's heartbeat; the answer (assignments, releases to pull). Refused: ``ClusterError``."""
        reply = await self.request("POST", "/cluster/report", body=body, timeout=timeout)
        if reply.status_code != 200:
            raise ClusterError(f"coordinator answered {reply.status_code}: {reply.text[:200]}")
        answer: dict[str, Any] = reply.json()
        return answer

    async def revision(
        self, repo_type: str, repo_id: str, revision: str, *, timeout: float | None = None
    ) -> tuple[int, Any]:
        """(status, JSON body) of ``GET /cluster/revision`` (``Coordinator.revision`` says what they mean)."""
        params = {"type": repo_type, "repo": repo_id, "rev": revision}
        reply = await self.request("GET", "/cluster/revision", params=params, timeout=timeout)
        return reply.status_code, reply.json()

    # ------------------------------------------------------------------------------ preheats, status

    async def preheat(self, body: Mapping[str, Any]) -> dict[str, Any]:
        return await self._asked("POST", "/cluster/preheat", body)

    async def status(self) -> dict[str, Any]:
        return await self._asked("GET", "/cluster/status")

    async def _asked(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """A call a user made (``swarmhub preheat``): its answer, or ``ClusterError`` in one line with the fix."""
        try:
            reply = await self.request(method, path, body=body)
        except httpx.HTTPError as exc:
            raise ClusterError(
                f"cannot reach the coordinator at {self.url}: {exc}", hint="start it: swarmhub coordinator serve"
            ) from exc
        if reply.status_code != 200:
            try:
                message = reply.json().get("error", reply.reason_phrase)
            except (ValueError, AttributeError):
                message = reply.reason_phrase
            hint = (
                "set SWARMHUB_CLUSTER_TOKEN to the coordinator's token"
                if reply.status_code == 401
                else "see swarmhub preheat --help"
            )
            raise ClusterError(f"the coordinator refused: {message}", hint=hint)
        try:
            answer: dict[str, Any] = reply.json()
        except ValueError as exc:
            raise ClusterError(
                f"cannot reach the coordinator at {self.url}: {exc}", hint="start it: swarmhub coordinator serve"
            ) from exc
        return answer

    # ------------------------------------------------------------------------------- shard manifests

    def manifest_url(self, name: str) -> str:
        return f"{self.url}/shards/manifests/{quote(name, safe='')}"

    async def put_manifest(self, name: str, manifest_json: bytes) -> httpx.Response:
        return await self.request("PUT", f"/shards/manifests/{quote(name, safe='')}", content=manifest_json)

    async def get_manifest(self, name: str) -> httpx.Response:
        return await self.request("GET", f"/shards/manifests/{quote(name, safe='')}")


def blocking(call: Coroutine[Any, Any, T]) -> T:
    """``call`` run to its end from code that does not run in an event loop, or does (in a thread of its own)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(call)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, call).result()
