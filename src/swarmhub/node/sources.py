"""Where a pull fetches the pieces no peer has: the Hub (its ``resolve`` URLs) or a BEP 19 web seed.

Both read a byte range of one file of the release into a caller's buffer, with the origin client's
retries (Retry-After, resets resumed at the exact byte, expired redirects resolved again). A web seed is
what a registry puts in its torrents: its gateway streams the Hub's bytes with no redirect to expire.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol
from urllib.parse import quote

from swarmhub.hub.repo import RepoRef
from swarmhub.origin.client import OriginClient

__all__ = ["HubSource", "RangeSource", "WebSeedSource"]


class RangeSource(Protocol):
    client: OriginClient

    @property
    def description(self) -> str: ...

    async def read(
        self, path: str, offset: int, view: memoryview, progress: Callable[[int], None] | None = None
    ) -> None:
        """Fill ``view`` from ``offset`` of ``path``; ``progress(done)`` (in a worker thread): ``view[:done]`` is in."""


class HubSource:
    def __init__(self, client: OriginClient, ref: RepoRef) -> None:
        self.client = client
        self.ref = ref

    @property
    def description(self) -> str:
        return f"origin {self.client.endpoint}"

    async def read(
        self, path: str, offset: int, view: memoryview, progress: Callable[[int], None] | None = None
    ) -> None:
        ref = self.ref
        await self.client.read_range_into(ref.repo_type, ref.repo_id, ref.commit, path, offset, view, progress)


class WebSeedSource:
    """``{base}{torrent name}/{file path}`` (BEP 19, multi-file torrents), e.g. a registry's gateway."""

    def __init__(self, client: OriginClient, base: str, torrent_name: str, ref: RepoRef) -> None:
        self.client = client
        self.base = base if base.endswith("/") else base + "/"
        self.name = torrent_name
        self.ref = ref

    @property
    def description(self) -> str:
        return f"web seed {self.base}"

    async def read(
        self, path: str, offset: int, view: memoryview, progress: Callable[[int], None] | None = None
    ) -> None:
        url = f"{self.base}{quote(self.name)}/{quote(path)}"
        what = f"downloading {path}"
        await self.client.read_url_range_into(url, offset, view, what=what, repo_id=self.ref.repo_id, progress=progress)
