"""Running the tracker: its own HTTP server (``tracker.protocol``) in a background thread (tests, embedding)
or until Ctrl-C (the CLI).

The socket is bound before the server starts, so ``announce_url`` is known at once, even for port 0. Bound to
loopback it answers only the loopback ``Host`` names and ``allow_hosts`` (``guard.allowed_hosts``: DNS rebinding).
"""

from __future__ import annotations

import random
import socket
from collections.abc import Callable, Sequence

from swarmhub.bt.tracker import DEFAULT_MAX_ADDRESS_PEERS, DEFAULT_MAX_SWARM_PEERS, Swarms
from swarmhub.guard import allowed_hosts
from swarmhub.serving import BackgroundServer, Startable, run_until_interrupted
from swarmhub.tracker.app import tracker_app
from swarmhub.tracker.protocol import TrackerThread

__all__ = ["TrackerServer", "serve_forever"]


class TrackerServer(BackgroundServer):
    """An HTTP tracker served from a background thread; binds 127.0.0.1 unless told otherwise.

    >>> with TrackerServer() as tracker:
    ...     tracker.announce_url   # 'http://127.0.0.1:41234/announce'
    """

    name = "tracker"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        swarms: Swarms | None = None,
        publish_peer_ids: bool = False,
        allow_hosts: Sequence[str] = (),
        access_log: bool = False,
    ) -> None:
        super().__init__(host, (port,), access_log=access_log)
        self.swarms = swarms if swarms is not None else Swarms(rng=random.Random())
        self.publish_peer_ids = publish_peer_ids
        self.allow_hosts = tuple(allow_hosts)

    @property
    def announce_url(self) -> str:
        return f"{self.url}/announce"

    @property
    def scrape_url(self) -> str:
        return f"{self.url}/scrape"  # BEP 48: the announce URL with "announce" replaced by "scrape"

    def _server_for(self, sockets: list[socket.socket]) -> Startable:
        (sock,) = sockets
        app = tracker_app(self.swarms, publish_peer_ids=self.publish_peer_ids)
        hosts = allowed_hosts(self.host, self.allow_hosts)
        return TrackerThread(f"{self.name}-{self.port}", app, sock, access_log=self._access_log, hosts=hosts)


def serve_forever(
    host: str = "127.0.0.1",
    port: int = 6969,
    *,
    interval: int = 1800,
    max_swarm_peers: int | None = DEFAULT_MAX_SWARM_PEERS,
    max_address_peers: int | None = DEFAULT_MAX_ADDRESS_PEERS,
    publish_peer_ids: bool = False,
    allow_hosts: Sequence[str] = (),
    access_log: bool = False,
    ready: Callable[[TrackerServer], None] | None = None,
) -> None:
    """Serve until Ctrl-C or SIGTERM; ``ready`` is called once the tracker accepts connections. The caps and
    ``publish_peer_ids`` are ``Swarms``' and ``TrackerApp``'s (None: no cap); ``allow_hosts``: ``Host`` names
    answered besides the loopback ones (``guard.allowed_hosts``)."""
    swarms = Swarms(
        rng=random.Random(),
        interval=interval,
        max_swarm_peers=max_swarm_peers,
        max_address_peers=max_address_peers,
    )
    tracker = TrackerServer(
        host, port, swarms=swarms, publish_peer_ids=publish_peer_ids, allow_hosts=allow_hosts, access_log=access_log
    )
    run_until_interrupted(tracker, None if ready is None else lambda: ready(tracker))
