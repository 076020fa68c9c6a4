"""One node of the cluster benchmark: the baseline clients, run on a lab host by bench/cluster.py.

    python bench/cluster_node.py http    --repo ORG/NAME --cache DIR --go FILE
    python bench/cluster_node.py webseed --torrent FILE --save DIR --listen ADDR:PORT --go FILE
                                         [--up-limit B/s --down-limit B/s]

Both get ready first (imports, libtorrent session, torrent added paused), print ``{"event": "ready"}``, then
wait for FILE to appear: it holds the CLOCK_MONOTONIC instant (shared by every process on the machine, in
any namespace) at which all nodes start at once. When the node has the whole release it prints
``{"event": "done", "t": <monotonic>, "files": <folder holding the release's files>}``.

- ``http``: ``huggingface_hub.snapshot_download`` against HF_ENDPOINT (the origin) into its own cache, as
  every node of a cluster would without swarmhub (HF_HUB_DISABLE_XET=1 set by the caller); exits when done.
- ``webseed``: a plain libtorrent client holding the torrent's web seed (url-list at the origin), finding
  peers through the torrent's tracker, with swarmhub's isolated settings (TCP only, no DHT/LSD/UPnP/NAT-PMP)
  but listening on the node's own address; it keeps seeding after done, until SIGTERM, like any client.
  ``--up-limit``/``--down-limit`` (the loopback lab) apply to every peer and web seed, loopback included.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import sys
import time
from pathlib import Path
from typing import Any


def say(event: str, **fields: Any) -> None:
    """One JSON line; ``cpu``: this process's user+sys seconds so far (the benchmark takes differences)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"event": event, "cpu": usage.ru_utime + usage.ru_stime, **fields}), flush=True)


def wait_for_go(go: Path) -> float:
    while not go.exists():
        time.sleep(0.005)
    start = float(go.read_text() or 0)
    time.sleep(max(0.0, start - time.monotonic()))
    return start


def run_http(args: argparse.Namespace) -> int:
    from huggingface_hub import snapshot_download

    say("ready")
    wait_for_go(args.go)
    folder = snapshot_download(args.repo, cache_dir=str(args.cache), max_workers=8)
    say("done", t=time.monotonic(), files=folder)
    return 0


def run_webseed(args: argparse.Namespace) -> int:
    import libtorrent as lt

    from swarmhub.engine.session import settings_for

    settings = settings_for("isolated", listen=args.listen)
    settings["alert_mask"] = lt.alert_category.status | lt.alert_category.error
    if args.up_limit or args.down_limit:
        settings["upload_rate_limit"] = int(args.up_limit)
        settings["download_rate_limit"] = int(args.down_limit)
    session = lt.session(settings)  # type: ignore[call-overload]
    if args.up_limit or args.down_limit:
        # Peers on loopback and private networks are in libtorrent's unlimited local class by default.
        everyone = lt.ip_filter()
        everyone.add_rule("0.0.0.0", "255.255.255.255", 1 << lt.session.global_peer_class_id)
        session.set_peer_class_filter(everyone)
    params = lt.add_torrent_params()
    params.ti = lt.torrent_info(str(args.torrent))
    params.save_path = str(args.save)
    params.flags |= lt.torrent_flags.paused
    params.flags &= ~lt.torrent_flags.auto_managed
    handle = session.add_torrent(params)
    while handle.status().state in (lt.torrent_status.checking_files, lt.torrent_status.checking_resume_data):
        time.sleep(0.01)
    stop = False

    def on_term(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    say("ready")
    wait_for_go(args.go)
    handle.resume()
    done = False
    while not stop:
        for alert in session.pop_alerts():
            if isinstance(alert, lt.torrent_finished_alert) and not done:
                done = True
                st = handle.status()
                say("done", t=time.monotonic(), files=str(Path(args.save) / params.ti.name()), peers=st.num_peers)
            elif isinstance(alert, lt.torrent_error_alert):
                # libtorrent 2.1 (issue #6394) sometimes stops a hybrid torrent with "v1 and v2 hashes do not
                # describe the same data" when pieces arrive from a web seed and peers at once: a client run
                # unattended resumes it (the benchmark checks every byte at the end anyway).
                say("torrent_error", message=alert.message())
                handle.clear_error()
                handle.resume()
        session.wait_for_alert(200)
    session.pause()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    modes = parser.add_subparsers(dest="mode", required=True)
    http = modes.add_parser("http")
    http.add_argument("--repo", required=True)
    http.add_argument("--cache", type=Path, required=True)
    http.add_argument("--go", type=Path, required=True)
    webseed = modes.add_parser("webseed")
    webseed.add_argument("--torrent", type=Path, required=True)
    webseed.add_argument("--save", type=Path, required=True)
    webseed.add_argument("--listen", required=True, help="ADDR:PORT")
    webseed.add_argument("--go", type=Path, required=True)
    webseed.add_argument("--up-limit", type=float, default=0, help="bytes/s (0: none)")
    webseed.add_argument("--down-limit", type=float, default=0, help="bytes/s (0: none)")
    args = parser.parse_args()
    os.makedirs(args.cache if args.mode == "http" else args.save, exist_ok=True)
    return run_http(args) if args.mode == "http" else run_webseed(args)


if __name__ == "__main__":
    sys.exit(main())
