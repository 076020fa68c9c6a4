"""Running the dev hub: the origin and the CDN as two uvicorn servers on one event loop.

``DevHub`` runs them in a background thread (tests, the quick-start demo); ``serve_forever`` runs them until
Ctrl-C (the CLI). Sockets are bound before the servers start, so the ports (0 = any free port) are known
at once and the origin can point LFS redirects at the CDN's port.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from starlette.types import ASGIApp

from swarmhub.devhub.app import DevHubSettings, DevHubState, cdn_app, origin_app
from swarmhub.devhub.faults import Faults, InjectedReset, RequestLog
from swarmhub.devhub.repos import RepoStore
from swarmhub.serving import BackgroundServer, run_until_interrupted, url_host

__all__ = ["DevHub", "serve_forever"]


class _DropInjectedResets(logging.Filter):
    """uvicorn logs every exception escaping the app; an injected reset is not news."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], InjectedReset))


def _quiet_injected_resets() -> None:
    error_log = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _DropInjectedResets) for f in error_log.filters):
        error_log.addFilter(_DropInjectedResets())


class DevHub(BackgroundServer):
    """A local Hub-compatible origin plus its CDN, served from a background thread.

    >>> with DevHub(tmp_path, settings=DevHubSettings(page_size=2)) as hub:
    ...     hf_hub_download("org/name", "config.json", endpoint=hub.endpoint, cache_dir=...)
    """

    name = "devhub"

    def __init__(
        self,
        root: Path | str,
        *,
        settings: DevHubSettings | None = None,
        faults: Faults | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        cdn_port: int = 0,
        access_log: bool = False,
    ) -> None:
        super().__init__(host, (port, cdn_port), access_log=access_log)
        self.root = Path(root)
        self.state = DevHubState(RepoStore(self.root), settings or DevHubSettings(), faults=faults or Faults())

    # What tests look at and change while the hub runs.
    @property
    def log(self) -> RequestLog:
        return self.state.log

    @property
    def faults(self) -> Faults:
        return self.state.faults

    @property
    def settings(self) -> DevHubSettings:
        return self.state.settings

    @settings.setter
    def settings(self, value: DevHubSettings) -> None:
        self.state.settings = value

    @property
    def cdn_port(self) -> int:
        return self._bound_port(1)

    @property
    def endpoint(self) -> str:
        """The origin's base URL, e.g. ``http://127.0.0.1:43121`` (what ``HF_ENDPOINT`` would be)."""
        return self.url

    @property
    def cdn_endpoint(self) -> str:
        return f"http://{url_host(self.host)}:{self.cdn_port}"

    def _apps(self) -> tuple[ASGIApp, ASGIApp]:
        _quiet_injected_resets()
        self.state.cdn_port = self.cdn_port
        return origin_app(self.state), cdn_app(self.state)


def serve_forever(
    root: Path | str,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    cdn_port: int = 0,
    settings: DevHubSettings | None = None,
    faults_file: Path | str | None = None,
    access_log: bool = False,
    ready: Callable[[DevHub], None] | None = None,
) -> None:
    """Serve until Ctrl-C or SIGTERM; ``ready`` is called once both servers accept connections."""
    faults = Faults()
    if faults_file is not None:
        faults.load(faults_file)
    hub = DevHub(root, settings=settings, faults=faults, host=host, port=port, cdn_port=cdn_port, access_log=access_log)

    def warm_then_ready() -> None:
        hub.state.store.warm()  # before announcing: the first client request must not wait on hashing
        if ready is not None:
            ready(hub)

    run_until_interrupted(hub, warm_then_ready)
