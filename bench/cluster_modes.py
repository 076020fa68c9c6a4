"""How each contender of bench/cluster.py gets the release onto N nodes: one ``Mode`` each.

A mode has these hooks, called in this order for one run (``Cluster`` holds what every mode shares: the lab,
the origin, the tracker, the release and its torrent):

- ``setup(run)``            start what the mode needs besides the origin (a coordinator, ...);
- ``start_node(run, node)`` start one node's client, idle until told to go;
- ``ready(run, nodes)``     True once every node can start (default: each printed ``{"event": "ready"}``);
- ``go(run, at)``           start every node at the CLOCK_MONOTONIC instant ``at`` (default: the go file);
- ``wait_done(run, nodes)`` the instant each node had every byte (default: its ``done`` line), by host name;
                            a node missing from the answer (a fetcher killed on purpose) is not checked;
- ``teardown(run)``         stop what ``setup`` started (the nodes are stopped by the caller).
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netlab import Host, Lab
from pull import Servers, clean_env, first_json, wait_for

__all__ = [
    "MODES",
    "Cluster",
    "HttpMode",
    "Mode",
    "NodeProc",
    "Release",
    "Run",
    "WebseedMode",
    "get_json",
    "mode_named",
]

HERE = Path(__file__).resolve().parent
NODE = [sys.executable, str(HERE / "cluster_node.py")]
SWARMHUB = [sys.executable, "-m", "swarmhub"]


@dataclass(frozen=True)
class Release:
    repo_id: str
    commit: str
    folder: Path  # the repo's files at the origin
    size: int  # F: bytes of every file
    expected: dict[str, str]  # path -> sha256
    torrent: Path  # hybrid, url-list = the origin's web seed, announce = the lab's tracker
    name: str  # the torrent's name
    piece_size: int


@dataclass(frozen=True)
class Cluster:
    """What every run shares: the lab, its long-running servers, the origin's URLs and the release."""

    lab: Lab
    servers: Servers
    work: Path
    endpoint: str  # the origin (HF_ENDPOINT)
    webseed: str
    announce: str
    release: Release


@dataclass
class NodeProc:
    host: Host
    proc: subprocess.Popen[bytes]
    out: Path
    folder: Path

    def lines(self) -> list[dict[str, Any]]:
        found = []
        for line in self.out.read_text(errors="replace").splitlines():
            try:
                found.append(json.loads(line))
            except ValueError:
                continue
        return found

    def event(self, name: str) -> dict[str, Any] | None:
        return next((e for e in self.lines() if e.get("event") == name), None)


@dataclass
class Run:
    """One mode at one N: its folder, its start signal, and anything the mode keeps between hooks."""

    cluster: Cluster
    mode: Mode
    nodes: list[Host]
    folder: Path
    go: Path
    timeout: float
    kill_fetcher_at: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Mode:
    name = ""
    label = ""

    def available(self) -> str | None:
        """None when this mode can run here, else the one line that says why not."""
        return None

    def setup(self, run: Run) -> None:
        pass

    def ready(self, run: Run, nodes: list[NodeProc]) -> bool:
        return all(n.event("ready") is not None for n in nodes)

    def go(self, run: Run, at: float) -> None:
        tmp = run.go.with_suffix(".tmp")
        tmp.write_text(repr(at))
        tmp.rename(run.go)  # atomically: no node reads half a number

    def start_node(self, run: Run, node: Host, folder: Path) -> NodeProc:
        raise NotImplementedError

    def wait_done(self, run: Run, nodes: list[NodeProc]) -> dict[str, float]:
        """Each node's ``done`` instant, by host name; fails on a node that exits or errs first."""
        deadline = time.monotonic() + run.timeout
        done: dict[str, float] = {}
        while len(done) < len(nodes):
            for n in nodes:
                if n.host.name in done:
                    continue
                event = n.event("done")
                if event is not None:
                    done[n.host.name] = float(event["t"])
                    n.folder = Path(event["files"])
                elif n.proc.poll() is not None or n.event("error") is not None:
                    err = n.out.with_suffix(".err").read_text(errors="replace")[-2000:]
                    raise SystemExit(f"{self.name}: {n.host.name} failed ({n.proc.returncode}): {n.lines()}\n{err}")
            if time.monotonic() > deadline:
                missing = [n.host.name for n in nodes if n.host.name not in done]
                raise SystemExit(f"{self.name}: {missing} not done after {run.timeout:.0f} s")
            time.sleep(0.02)
        return done

    def teardown(self, run: Run) -> None:
        pass

    def _start(self, run: Run, node: Host, folder: Path, argv: list[str], env: dict[str, str]) -> NodeProc:
        proc, out = run.cluster.servers.start(f"{run.folder.name}-{node.name}", node.command(argv), env)
        return NodeProc(node, proc, out, folder)


class HttpMode(Mode):
    """Every node runs huggingface_hub's snapshot_download against the origin (8 workers, its own cache)."""

    name = "http"
    label = "HTTP from origin (snapshot_download)"

    def start_node(self, run: Run, node: Host, folder: Path) -> NodeProc:
        c = run.cluster
        argv = [*NODE, "http", "--repo", c.release.repo_id, "--cache", str(folder / "hub"), "--go", str(run.go)]
        env = clean_env(
            HF_ENDPOINT=c.endpoint,
            HF_HUB_DISABLE_XET="1",
            HF_HUB_DISABLE_PROGRESS_BARS="1",
            HF_HUB_DISABLE_TELEMETRY="1",
            HF_HOME=str(folder / "hf-home"),
            NO_PROXY="*",
        )
        return self._start(run, node, folder, argv, env)


class WebseedMode(Mode):
    """Every node runs a plain libtorrent client: the torrent's web seed (the origin) plus the tracker's peers."""

    name = "webseed"
    label = "BitTorrent + web seed (uncoordinated)"

    def start_node(self, run: Run, node: Host, folder: Path) -> NodeProc:
        c = run.cluster
        port = 6881 if node.netns else 0
        argv = [*NODE, "webseed", "--torrent", str(c.release.torrent), "--save", str(folder)]
        argv += ["--listen", f"{node.address}:{port}", "--go", str(run.go)]
        if not c.lab.shaped:
            argv += ["--up-limit", str(c.lab.rates.node_up), "--down-limit", str(c.lab.rates.node_down)]
        return self._start(run, node, folder, argv, clean_env(NO_PROXY="*"))


class SwarmhubMode(Mode):
    """swarmhub cluster mode: ``swarmhub coordinator serve`` on the origin host, ``swarmhub node run
    --coordinator`` on every node (its own HF cache), and at the start instant one preheat of the release for
    all nodes: the coordinator deals disjoint piece sets to a few fetchers, everyone else trades with peers.

    A node is done when the coordinator's status shows it holding every piece (nodes report each second, so
    a node's time is up to a second late); its snapshot folder is then checked like every other mode's.
    ``--kill-fetcher-at F``: once F of all the nodes' pieces are in, one origin fetcher is killed (SIGKILL);
    the others must finish without it.
    """

    name = "swarmhub"
    label = "swarmhub cluster mode"

    def available(self) -> str | None:
        done = subprocess.run([*SWARMHUB, "--help"], capture_output=True, text=True, env=clean_env())
        if "coordinator" not in done.stdout:
            return "not available yet: needs `swarmhub coordinator` (this swarmhub has no such command)"
        return None

    def setup(self, run: Run) -> None:
        origin = run.cluster.lab.origin
        port = "8490" if origin.netns else "0"
        argv = [*SWARMHUB, "-v", "coordinator", "serve", "--host", origin.address, "--port", port, "--json"]
        # off loopback (the namespaces' bridge) the coordinator needs a token; nodes and the preheat send it
        run.extra["token"] = token = secrets.token_urlsafe(24)
        env = clean_env(SWARMHUB_CLUSTER_TOKEN=token)
        proc, out = run.cluster.servers.start(f"{run.folder.name}-coordinator", origin.command(argv), env)
        run.extra["coordinator"] = proc
        run.extra["url"] = str(wait_for(proc, out, first_json)["url"])

    def start_node(self, run: Run, node: Host, folder: Path) -> NodeProc:
        c = run.cluster
        # Without namespaces every node talks from 127.0.0.1, so that is where its peers must find it.
        host = node.address if node.netns else "127.0.0.1"
        port = "6881" if node.netns else "0"
        argv = [*SWARMHUB, "-v", "node", "run", "--host", host, "--port", "8480" if node.netns else "0"]
        argv += ["--cache-dir", str(folder / "hub"), "--upstream", c.endpoint, "--coordinator", run.extra["url"]]
        argv += ["--listen", f"{host}:{port}", "--label", "zone=lab", "--json", *run.extra.get("node_args", [])]
        env = clean_env(SWARMHUB_HOME=str(folder / "state"), HF_HOME=str(folder / "hf-home"), NO_PROXY="*")
        env["SWARMHUB_CLUSTER_TOKEN"] = run.extra["token"]
        if not c.lab.shaped:
            limits = {"download_rate_limit": int(c.lab.rates.node_down), "ignore_limits_on_local_network": False}
            argv += ["--upload-limit", str(int(c.lab.rates.node_up))]
            env["SWARMHUB_LIBTORRENT"] = json.dumps(limits)
        snapshot = folder / "hub" / f"models--{c.release.repo_id.replace('/', '--')}" / "snapshots" / c.release.commit
        return self._start(run, node, snapshot, argv, env)

    def ready(self, run: Run, nodes: list[NodeProc]) -> bool:
        if not all(first_json(n.out.read_text(errors="replace")) for n in nodes):
            return False
        ids = {_node_id(n): n for n in nodes}
        run.extra["ids"] = ids
        status = get_json(f"{run.extra['url']}/cluster/status")
        return {n["node_id"] for n in status["nodes"] if n["alive"]} >= set(ids)

    def go(self, run: Run, at: float) -> None:
        body = json.dumps({"torrent": base64.b64encode(run.cluster.release.torrent.read_bytes()).decode()})
        time.sleep(max(0.0, at - time.monotonic()))
        run.extra["key"] = get_json(f"{run.extra['url']}/cluster/preheat", body.encode(), run.extra["token"])["key"]

    def wait_done(self, run: Run, nodes: list[NodeProc]) -> dict[str, float]:
        ids: dict[str, NodeProc] = run.extra["ids"]
        key, deadline, done = run.extra["key"], time.monotonic() + run.timeout, {}
        killed: NodeProc | None = None
        while True:
            status = get_json(f"{run.extra['url']}/cluster/status")
            now = time.monotonic()
            held = {n["node_id"]: n["releases"].get(key) for n in status["nodes"]}
            for node_id, node in ids.items():
                h = held.get(node_id)
                if h and h["of"] and h["pieces"] == h["of"] and node.host.name not in done:
                    done[node.host.name] = now
            fetchers = status["releases"].get(key, {}).get("fetchers", {})
            run.extra["fetchers"] = max(run.extra.get("fetchers", 0), len(fetchers))
            if run.kill_fetcher_at is not None and killed is None and fetchers:
                share = sum(h["pieces"] for h in held.values() if h) / max(1, sum(h["of"] for h in held.values() if h))
                if share >= run.kill_fetcher_at and len(held) == len(ids):
                    killed = ids[next(iter(fetchers))]
                    os.killpg(killed.proc.pid, signal.SIGKILL)
                    run.extra["killed_fetcher"] = killed.host.name
            if len(done) == len(nodes) - (killed is not None):
                by_host = {ids[i].host.name: h for i, h in held.items() if i in ids and h}
                run.extra["per_node_origin_bytes"] = {k: h["origin_bytes"] for k, h in sorted(by_host.items())}
                run.extra["per_node_peer_bytes"] = {k: h["peer_bytes"] for k, h in sorted(by_host.items())}
                break
            for n in nodes:
                if n is not killed and n.proc.poll() is not None:
                    err = n.out.with_suffix(".err").read_text(errors="replace")[-2000:]
                    raise SystemExit(f"swarmhub: {n.host.name} exited ({n.proc.returncode})\n{err}")
            if now > deadline:
                raise SystemExit(f"swarmhub: not done after {run.timeout:.0f} s: {held}")
            time.sleep(0.1)
        for name in done:  # the snapshot links appear once the files are verified and laid out
            node = next(n for n in nodes if n.host.name == name)
            _until_files(node.folder, run.cluster.release, time.monotonic() + 60)
        return done

    def teardown(self, run: Run) -> None:
        proc = run.extra.get("coordinator")
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(10)


def _node_id(n: NodeProc) -> str:
    return (n.folder.parents[3] / "state" / "node-id").read_text().strip()  # folder: <node>/hub/models--*/...


def _until_files(folder: Path, release: Release, deadline: float) -> None:
    while time.monotonic() < deadline:
        if all((folder / p).is_file() for p in release.expected):
            return
        time.sleep(0.1)


def get_json(url: str, body: bytes | None = None, token: str | None = None) -> Any:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # the lab is never behind a proxy
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    request = urllib.request.Request(url, data=body, headers=headers)
    with opener.open(request, timeout=30) as answer:
        return json.loads(answer.read())


MODES: tuple[Mode, ...] = (SwarmhubMode(), HttpMode(), WebseedMode())


def mode_named(name: str) -> Mode:
    return next(m for m in MODES if m.name == name)
