"""A BitTorrent HTTP tracker: ``/announce`` and ``/scrape`` over the in-memory ``Swarms`` of ``bt.tracker``.

::

    with TrackerServer() as tracker:        # 127.0.0.1, any free port
        create(..., trackers=[tracker.announce_url])
        tracker.swarms.peers(info_hash)      # who announced

Modules: ``app`` (the Starlette app), ``server`` (uvicorn in a thread, or in the foreground).
"""

from swarmhub.tracker.app import tracker_app
from swarmhub.tracker.server import TrackerServer, serve_forever

__all__ = ["TrackerServer", "serve_forever", "tracker_app"]
