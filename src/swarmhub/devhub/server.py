"""Running the dev hub: the origin and the CDN as two uvicorn servers on one event loop.

``DevHub`` runs them in a background thread (tests, the quick-start demo); ``serve_forever`` runs them until
Ctrl-C (the CLI). Sockets are bound before the servers start, so the ports (0 = any free port) are known
at once and the origin can point LFS redirects at the CDN's port.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType, TracebackType

import uvicorn
from starlette.types import ASGIApp

from swarmhub.devhub.app import DevHubSettings, DevHubState, cdn_app, origin_app
from swarmhub.devhub.faults import Faults, InjectedReset, RequestLog
from swarmhub.devhub.repos import RepoStore
from swarmhub.errors import ConfigError

__all__ = ["DevHub", "serve_forever"]

_READY_TIMEOUT = 10.0
_STOP_TIMEOUT = 5.0


class _DropInjectedResets(logging.Filter):
    """uvicorn logs every exception escaping the app; an injected reset is not news."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], InjectedReset))


def _quiet_injected_resets() -> None:
    error_log = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _DropInjectedResets) for f in error_log.filters):
        error_log.addFilter(_DropInjectedResets())


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}", hint="pick another --port") from exc
    sock.set_inheritable(True)
    return sock


def _url_host(host: str) -> str:
    """How clients on this machine reach a bound address."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


class DevHub:
    """A local Hub-compatible origin plus its CDN, served from a background thread.

    >>> with DevHub(tmp_path, settings=DevHubSettings(page_size=2)) as hub:
    ...     hf_hub_download("org/name", "config.json", endpoint=hub.endpoint, cache_dir=...)
    """

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
        self.root = Path(root)
        self.host = host
        self.state = DevHubState(RepoStore(self.root), settings or DevHubSettings(), faults=faults or Faults())
        self._ports = (port, cdn_port)
        self._access_log = access_log
        self._sockets: list[socket.socket] = []
        self._bound: list[int] = []  # the ports actually bound (kept after stop())
        self._servers: list[uvicorn.Server] = []
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

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

    def _bound_port(self, which: int) -> int:
        if not self._bound:
            raise RuntimeError("DevHub not started: call start() or use it as a context manager")
        return self._bound[which]

    @property
    def port(self) -> int:
        return self._bound_port(0)

    @property
    def cdn_port(self) -> int:
        return self._bound_port(1)

    @property
    def endpoint(self) -> str:
        """The origin's base URL, e.g. ``http://127.0.0.1:43121`` (what ``HF_ENDPOINT`` would be)."""
        return f"http://{_url_host(self.host)}:{self.port}"

    @property
    def cdn_endpoint(self) -> str:
        return f"http://{_url_host(self.host)}:{self.cdn_port}"

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> DevHub:
        if self._thread is not None:
            raise RuntimeError("DevHub already started")
        _quiet_injected_resets()
        self._sockets = [_bind(self.host, p) for p in self._ports]
        self._bound = [int(sock.getsockname()[1]) for sock in self._sockets]
        self.state.cdn_port = self.cdn_port
        apps = (origin_app(self.state), cdn_app(self.state))
        self._servers = [uvicorn.Server(self._config(app)) for app in apps]
        self._thread = threading.Thread(target=self._run, name=f"devhub-{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + _READY_TIMEOUT
        while not all(s.started for s in self._servers):
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("devhub did not start") from self._error
            time.sleep(0.005)
        return self

    def _config(self, app: ASGIApp) -> uvicorn.Config:
        return uvicorn.Config(
            app,
            log_config=None,  # leave logging to the host process
            access_log=self._access_log,
            lifespan="off",
            ws="none",
            server_header=False,  # the Hub sends no "server: uvicorn"
            timeout_graceful_shutdown=1,  # then in-flight downloads are cancelled
        )

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported by start() or stop()
            self._error = exc

    async def _serve(self) -> None:
        await asyncio.gather(*(s.serve(sockets=[sock]) for s, sock in zip(self._servers, self._sockets, strict=True)))

    def stop(self) -> None:
        for server in self._servers:
            server.should_exit = True
        if self._thread is not None:
            self._thread.join(_STOP_TIMEOUT)
            if self._thread.is_alive():  # a download that outlived the graceful timeout
                for server in self._servers:
                    server.force_exit = True
                self._thread.join(_STOP_TIMEOUT)
        for sock in self._sockets:
            sock.close()

    def __enter__(self) -> DevHub:
        return self.start() if self._thread is None else self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


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
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if main_thread else None
    try:
        with hub:
            hub.state.store.warm()  # before announcing: the first client request must not wait on hashing
            if ready is not None:
                ready(hub)
            while hub.running:
                time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
