"""A BitTorrent HTTP tracker: ``/announce`` and ``/scrape`` over the in-memory ``Swarms`` of ``bt.tracker``.

::

    with TrackerServer() as tracker:        # 127.0.0.1, any free port
        create(..., trackers=[tracker.announce_url])
        tracker.swarms.peers(info_hash)      # who announced

Modules: ``app`` (``TrackerApp``: the answers, and an ASGI app the registry mounts), ``http`` (request heads
and answers' bytes, without I/O), ``protocol`` (the HTTP/1.x server ``tracker serve`` runs, on uvloop),
``server`` (that server in a thread, or in the foreground).
"""

from swarmhub.tracker.app import tracker_app
from swarmhub.tracker.server import TrackerServer, serve_forever

__all__ = ["TrackerServer", "serve_forever", "tracker_app"]
