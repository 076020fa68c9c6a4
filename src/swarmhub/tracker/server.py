"""Running the tracker: uvicorn in a background thread (tests, embedding) or until Ctrl-C (the CLI).

The socket is bound before the server starts, so ``announce_url`` is known at once, even for port 0.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from types import TracebackType

from swarmhub.bt.tracker import Swarms
from swarmhub.serving import UvicornThread, bind, run_until_interrupted, url_host
from swarmhub.tracker.app import tracker_app

__all__ = ["TrackerServer", "serve_forever"]


class TrackerServer:
    """An HTTP tracker served from a background thread; binds 127.0.0.1 unless told otherwise.

    >>> with TrackerServer() as tracker:
    ...     tracker.announce_url   # 'http://127.0.0.1:41234/announce'
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        swarms: Swarms | None = None,
        access_log: bool = False,
    ) -> None:
        self.host = host
        self.swarms = swarms if swarms is not None else Swarms(rng=random.Random())
        self._requested_port = port
        self._access_log = access_log
        self._port: int | None = None  # the port actually bound (kept after stop())
        self._server: UvicornThread | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("TrackerServer not started: call start() or use it as a context manager")
        return self._port

    @property
    def url(self) -> str:
        return f"http://{url_host(self.host)}:{self.port}"

    @property
    def announce_url(self) -> str:
        return f"{self.url}/announce"

    @property
    def scrape_url(self) -> str:
        return f"{self.url}/scrape"  # BEP 48: the announce URL with "announce" replaced by "scrape"

    @property
    def running(self) -> bool:
        return self._server is not None and self._server.running

    def start(self) -> TrackerServer:
        if self._server is not None:
            raise RuntimeError("TrackerServer already started")
        sock = bind(self.host, self._requested_port)
        self._port = int(sock.getsockname()[1])
        self._server = UvicornThread(
            f"tracker-{self._port}", [tracker_app(self.swarms)], [sock], access_log=self._access_log
        )
        self._server.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()

    def __enter__(self) -> TrackerServer:
        return self.start() if self._server is None else self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def serve_forever(
    host: str = "127.0.0.1",
    port: int = 6969,
    *,
    interval: int = 1800,
    access_log: bool = False,
    ready: Callable[[TrackerServer], None] | None = None,
) -> None:
    """Serve until Ctrl-C or SIGTERM; ``ready`` is called once the tracker accepts connections."""
    tracker = TrackerServer(host, port, swarms=Swarms(rng=random.Random(), interval=interval), access_log=access_log)
    run_until_interrupted(tracker, None if ready is None else lambda: ready(tracker))
