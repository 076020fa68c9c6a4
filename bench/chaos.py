"""Chaos: the cluster pulls one release again and again, each run with faults from a seeded random schedule.

Every run is bench/cluster.py's swarmhub mode (an origin, a tracker and a coordinator on the origin host, N
nodes on hosts of their own in network namespaces with ``tc`` rate limits, one preheat at the start) plus a
few of these faults, each at a random instant of the run and for a random while:

- ``kill-fetcher``      an origin fetcher (one the coordinator dealt pieces to) is SIGKILLed, then restarted
- ``kill-node``         a node that is not a fetcher is SIGKILLed, then restarted
- ``kill-coordinator``  the coordinator is SIGKILLed, then restarted on the same address and state folder
- ``coordinator-down``  the coordinator is SIGKILLed and stays down until the run ends: nodes decide alone
- ``cut-link``          a node's link goes down (``ip link set ... down`` on the bridge's end), then up again
- ``origin-429``        the origin answers 429 with Retry-After to every file request, for a while
- ``origin-5xx``        ... 500 or 503
- ``origin-reset``      ... breaks every answer after a few KB (a body shorter than its Content-Length)
- ``corrupt-peer``      a peer (bench/rogue_peer.py) joins and sends almost right blocks: one byte flipped
- ``disk-full``         one node's disk (a tmpfs of its own) fills up, then space comes back

A node is done when every file of the release is in its snapshot folder (the node makes them visible only
once verified). Then every node's files are checked against the release's SHA-256s; a node that was killed
is checked at that instant too: any file a program could open then must be whole and right. A run fails
when a node is not done within the timeout, a file is wrong or half-written, or a node exits by itself.

Printed per run: its seed, the faults, T/T_min, origin/F (origin body bytes over the release's size), for a
restarted node how many of the pieces it held it still had after the restart, and for a failure the
failing node's last log lines. The summary: runs, failures, worst origin/F with a fetcher killed and with
the coordinator down. ``--seed S --run K`` runs run K of seed S alone: the same faults at the same instants.

    python bench/chaos.py [--runs 50] [--nodes 8] [--size-mb 64] [--seed 1] [--faults K1,K2] [--json]
    python bench/chaos.py --seed S --run K        # one run again, to reproduce a failure

Needs root (network namespaces, tc, tmpfs mounts). The release, the origin and the tracker are shared by
the runs; every run has a new coordinator and new nodes with empty caches.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cluster import MB, cluster_of, origin_bytes, t_min
from cluster_modes import SWARMHUB, Cluster, NodeProc, Run, SwarmhubMode, get_json
from netlab import Host, NetnsLab, netns_available
from pull import clean_env, first_json, sha256_of, wait_for

HERE = Path(__file__).resolve().parent
KINDS = (
    "kill-fetcher",
    "kill-node",
    "kill-coordinator",
    "coordinator-down",
    "cut-link",
    "origin-429",
    "origin-5xx",
    "origin-reset",
    "corrupt-peer",
    "disk-full",
)
# Targets (issue 15): the origin sends each byte at most this many times over.
ORIGIN_TARGET = {"kill-fetcher": 1.15, "coordinator-down": 1.5}
COORDINATOR_PORT = "8490"
FILE_PATHS = ("/lfs/*", "*/resolve/*", "/ws/*")  # what carries the release's bytes (never /api/: commit, listing)


# ---------------------------------------------------------------------------------------------- the schedule


@dataclass(frozen=True)
class Fault:
    kind: str
    at: float  # seconds after the start
    lasts: float  # seconds until it is undone (a restart, a link up, ...); inf: never
    node: int  # index into the run's nodes (0: the first), where the fault has a node
    detail: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        what = f"{self.kind}@{self.at:.1f}s"
        if self.kind in ("cut-link", "disk-full"):  # a kill's victim is chosen when it comes due (victim=)
            what += f" node{self.node + 1}"
        if self.lasts != float("inf") and self.kind != "corrupt-peer":
            what += f" for {self.lasts:.1f}s"
        extra = ",".join(f"{k}={v}" for k, v in self.detail.items())
        return what + (f" ({extra})" if extra else "")


def schedule(seed: str, nodes: int, bound: float, kinds: tuple[str, ...]) -> list[Fault]:
    """One to three faults of different kinds, each in the first 70% of T_min. ``seed`` decides everything."""
    rng = random.Random(seed)
    chosen = rng.sample(kinds, k=min(len(kinds), rng.choice((1, 2, 2, 3))))
    if "kill-coordinator" in chosen and "coordinator-down" in chosen:
        chosen.remove("kill-coordinator")
    faults = []
    for kind in chosen:
        at = rng.uniform(0.1, 0.7) * bound
        lasts = rng.uniform(2.0, 10.0)
        detail: dict[str, Any] = {}
        if kind == "coordinator-down":
            lasts = float("inf")
        elif kind == "origin-429":
            detail = {"retry_after": rng.choice((1, 2, 5))}
        elif kind == "origin-5xx":
            detail = {"status": rng.choice((500, 502, 503))}
        elif kind == "origin-reset":
            detail = {"after_bytes": rng.choice((0, 4096, 65536, 1 << 20))}
        faults.append(Fault(kind, round(at, 2), round(lasts, 2), rng.randrange(nodes), detail))
    return sorted(faults, key=lambda f: f.at)


# ------------------------------------------------------------------------------------------------- one run


@dataclass
class Node:
    host: Host
    folder: Path  # its own folder: hub/ (the HF cache), state/, hf-home/
    proc: NodeProc
    starts: int = 1
    tmpfs: bool = False
    killed: bool = False  # SIGKILLed on purpose; its restart is due
    done_at: float | None = None
    restarts: list[dict[str, Any]] = field(default_factory=list)  # pieces held before a kill, after the restart


class ChaosRun:
    """One run: a coordinator, the nodes, the preheat, the faults as they come due, and the checks."""

    def __init__(self, cluster: Cluster, nodes: int, folder: Path, faults: list[Fault], args: argparse.Namespace):
        self.cluster, self.folder, self.faults, self.args = cluster, folder, faults, args
        self.mode = SwarmhubMode()
        size = cluster.release.size
        self.bound = t_min(size, nodes, cluster.lab.rates)
        timeout = 120 + 4 * self.bound + sum(f.lasts for f in faults if f.lasts != float("inf"))
        self.run = Run(cluster, self.mode, cluster.lab.nodes[:nodes], folder, folder / "go", timeout)
        self.run.extra["token"] = secrets.token_urlsafe(24)
        self.run.extra["node_args"] = list(args.node_args)
        self.coordinator: subprocess.Popen[bytes] | None = None
        self.coordinator_starts = 0
        self.nodes: list[Node] = []
        self.rogue: subprocess.Popen[bytes] | None = None
        self.cut: set[int] = set()  # nodes whose link is down
        self.key = ""
        self.events: list[str] = []
        self.checks: list[Future[str | None]] = []
        self.pool = ThreadPoolExecutor(2)
        self.start = 0.0

    # -- the cast

    def start_coordinator(self) -> None:
        origin = self.cluster.lab.origin
        self.coordinator_starts += 1
        argv = [*SWARMHUB, "-vv", "coordinator", "serve", "--host", origin.address, "--port", COORDINATOR_PORT]
        argv += ["--upstream", self.cluster.endpoint, "--state", str(self.folder / "coordinator"), "--json"]
        env = clean_env(SWARMHUB_CLUSTER_TOKEN=self.run.extra["token"])
        name = f"{self.folder.name}-coordinator-{self.coordinator_starts}"
        proc, out = self.cluster.servers.start(name, origin.command(argv), env)
        self.run.extra["url"] = str(wait_for(proc, out, first_json)["url"])
        self.coordinator = proc

    def start_node(self, node: Node | None, host: Host) -> NodeProc:
        folder = self.folder / host.name
        saved = self.run.folder
        if node is not None:  # a restart: its own log files, the same folders
            self.run.folder = self.folder.with_name(f"{self.folder.name}-r{node.starts}")
        try:
            proc = self.mode.start_node(self.run, host, folder)
        finally:
            self.run.folder = saved
        return proc

    def status(self) -> dict[str, Any] | None:
        try:
            return get_json(f"{self.run.extra['url']}/cluster/status")  # type: ignore[no-any-return]
        except OSError:
            return None

    def held(self, status: dict[str, Any] | None) -> dict[str, int]:
        """Pieces each node holds, by node id, as the coordinator last heard."""
        if status is None or not self.key:
            return {}
        return {n["node_id"]: r["pieces"] for n in status["nodes"] if (r := n["releases"].get(self.key))}

    # -- the run

    def execute(self) -> dict[str, Any]:
        self.folder.mkdir(parents=True)
        try:
            return self._execute()
        finally:
            self._stop_all()
            self.pool.shutdown(wait=True)

    def _execute(self) -> dict[str, Any]:
        release = self.cluster.release
        self.start_coordinator()
        disk_full = {f.node for f in self.faults if f.kind == "disk-full"}
        for i, host in enumerate(self.run.nodes):
            folder = self.folder / host.name
            folder.mkdir()
            if i in disk_full:  # room for the release and its torrent's pads, and a little more
                room = int(release.size * 1.25) + (64 << 20)
                _sh("mount", "-t", "tmpfs", "-o", f"size={room}", "tmpfs", str(folder))
            self.nodes.append(Node(host, folder, self.start_node(None, host), tmpfs=i in disk_full))
        self._wait_ready()
        before = origin_bytes(self.cluster)
        clients_before = _by_client(self.cluster)
        self.start = time.monotonic()
        body = json.dumps({"torrent": _b64(release.torrent.read_bytes())}).encode()
        self.key = get_json(f"{self.run.extra['url']}/cluster/preheat", body, self.run.extra["token"])["key"]
        failure = self._drive()
        served = origin_bytes(self.cluster) - before
        clients = _by_client(self.cluster)
        names = {n.host.address: n.host.name for n in self.nodes}
        by_node = {
            names.get(a, a): round((b - clients_before.get(a, 0)) / release.size, 3)
            for a, b in sorted(clients.items())
            if b > clients_before.get(a, 0)
        }
        seconds = max((n.done_at or 0.0) for n in self.nodes) - self.start if failure is None else None
        if failure is None:
            failure = self._check_all()
        return {
            "faults": [f.describe() for f in self.faults],
            "fault_kinds": sorted({f.kind for f in self.faults}),
            "events": self.events,
            "seconds": None if seconds is None else round(seconds, 1),
            "t_min_seconds": round(self.bound, 1),
            "t_over_t_min": None if seconds is None else round(seconds / self.bound, 2),
            "origin_ratio": round(served / release.size, 4),
            "origin_ratio_by_node": by_node,
            "restarts": [dict(node=n.host.name, **r) for n in self.nodes for r in n.restarts],
            "failure": failure,
        }

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 120
        while True:
            procs = [n.proc for n in self.nodes]
            with contextlib.suppress(OSError, ValueError, KeyError):
                if self.mode.ready(self.run, procs):
                    return
            for n in self.nodes:
                if n.proc.proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"{n.host.name} did not get ready:\n{_tail(n.proc)}")
            time.sleep(0.1)

    def _drive(self) -> str | None:
        """Faults as they come due, until every node is done: None, or why the run failed."""
        due: list[tuple[float, str, Fault]] = [(f.at, "do", f) for f in self.faults]
        deadline = self.start + self.run.timeout
        last_status: dict[str, Any] | None = None
        while True:
            now = time.monotonic()
            status = self.status()
            if status is not None:
                last_status = status
            for item in sorted(due, key=lambda d: d[0]):
                when, step, fault = item
                if now - self.start < when:
                    break
                due.remove(item)
                self.events.append(f"{now - self.start:.1f}s {step} {fault.kind}")
                if step == "undo":
                    self._undo(fault, status)
                elif (undo_at := self._apply(fault, last_status)) is not None:
                    due.append((undo_at, "undo", fault))
            self._note_restarts(status)
            for n in self.nodes:
                if n.done_at is None and _has_all(self._snapshot(n), self.cluster.release.expected):
                    n.done_at = time.monotonic()
                    self.events.append(f"{n.done_at - self.start:.1f}s {n.host.name} done")
                if n.proc.proc.poll() is not None and not n.killed:
                    return f"{n.host.name} exited by itself ({n.proc.proc.returncode})\n{_tail(n.proc)}"
            for check in [c for c in self.checks if c.done()]:
                self.checks.remove(check)
                if (problem := check.result()) is not None:
                    return problem
            if all(n.done_at is not None for n in self.nodes) and not any(step == "undo" for _, step, _ in due):
                return None
            if now > deadline:
                late = [n for n in self.nodes if n.done_at is None]
                held = self.held(last_status)
                tails = "\n".join(
                    f"--- {n.host.name} (held {held.get(_node_id(n), '?')} pieces):\n{_tail(n.proc)}" for n in late
                )
                return f"not done after {self.run.timeout:.0f} s: {[n.host.name for n in late]}\n{tails}"
            time.sleep(0.1)

    # -- faults

    def _apply(self, fault: Fault, status: dict[str, Any] | None) -> float | None:
        """Do ``fault``; the instant (seconds after the start) to undo it, or None."""
        until = fault.at + fault.lasts
        if fault.kind in ("kill-fetcher", "kill-node"):
            node = self._victim(fault, status)
            held = self.held(status).get(_node_id(node), 0)
            os.killpg(node.proc.proc.pid, signal.SIGKILL)
            node.proc.proc.wait()
            node.killed = True
            node.restarts.append({"kind": fault.kind, "held_before": held})
            self.events.append(f"  killed {node.host.name} holding {held} pieces")
            self.checks.append(self.pool.submit(self._check_visible, node))
            fault.detail["victim"] = node.host.name
            return until
        if fault.kind in ("kill-coordinator", "coordinator-down"):
            assert self.coordinator is not None
            os.killpg(self.coordinator.pid, signal.SIGKILL)
            self.coordinator.wait()
            return until if fault.kind == "kill-coordinator" else None
        if fault.kind == "cut-link":
            _link(self.cluster.lab, self.nodes[fault.node].host, up=False)
            self.cut.add(fault.node)
            return until
        if fault.kind.startswith("origin-"):
            self._origin_faults(fault)
            return until
        if fault.kind == "corrupt-peer":
            self._start_rogue()
            return None
        if fault.kind == "disk-full":
            node = self.nodes[fault.node]
            free = shutil.disk_usage(node.folder).free
            ballast = node.folder / "ballast"
            _sh("fallocate", "-l", str(max(0, free - (1 << 20))), str(ballast))
            return until
        raise ValueError(fault.kind)

    def _undo(self, fault: Fault, status: dict[str, Any] | None) -> None:
        if fault.kind in ("kill-fetcher", "kill-node"):
            node = next(n for n in self.nodes if n.host.name == fault.detail["victim"])
            node.proc = self.start_node(node, node.host)
            node.starts += 1
            node.killed = False
            node.restarts[-1]["restarted_at"] = round(time.monotonic() - self.start, 1)
        elif fault.kind == "kill-coordinator":
            self.start_coordinator()
        elif fault.kind == "cut-link":
            _link(self.cluster.lab, self.nodes[fault.node].host, up=True)
            self.cut.discard(fault.node)
        elif fault.kind.startswith("origin-"):
            _put_faults(self.cluster.endpoint, [])
        elif fault.kind == "disk-full":
            (self.nodes[fault.node].folder / "ballast").unlink(missing_ok=True)

    def _victim(self, fault: Fault, status: dict[str, Any] | None) -> Node:
        alive = [n for n in self.nodes if not n.killed]
        fetchers = set((status or {}).get("releases", {}).get(self.key, {}).get("fetchers", {}))
        by_id = {_node_id(n): n for n in alive}
        if fault.kind == "kill-fetcher":
            picked = [by_id[i] for i in sorted(fetchers) if i in by_id]
        else:
            picked = [n for i, n in by_id.items() if i not in fetchers]
        pool = picked or alive
        return pool[fault.node % len(pool)]

    def _origin_faults(self, fault: Fault) -> None:
        d = fault.detail
        if fault.kind == "origin-429":
            rule: dict[str, Any] = {"action": "respond", "status": 429, "retry_after": d["retry_after"]}
        elif fault.kind == "origin-5xx":
            rule = {"action": "respond", "status": d["status"]}
        else:
            rule = {"action": "reset", "after_bytes": d["after_bytes"]}
        _put_faults(self.cluster.endpoint, [{"path": p, **rule} for p in FILE_PATHS])

    def _start_rogue(self) -> None:
        host = self.cluster.lab.nodes[-1]  # the lab's spare host: never one of the run's nodes
        release = self.cluster.release
        argv = [sys.executable, str(HERE / "rogue_peer.py"), str(release.torrent), "--listen", f"{host.address}:6881"]
        argv += ["--files", str(release.folder), "--tracker", self.cluster.announce]
        for n in self.nodes:
            argv += ["--connect", f"{n.host.address}:6881"]
        proc, _ = self.cluster.servers.start(f"{self.folder.name}-rogue", host.command(argv), clean_env())
        self.rogue = proc

    def _note_restarts(self, status: dict[str, Any] | None) -> None:
        """How many pieces a restarted node kept: what the coordinator hears from it once it has served for
        three seconds (it reports every second; before that the coordinator may still hold its last report
        from before the kill)."""
        held = self.held(status)
        for n in self.nodes:
            r = n.restarts[-1] if n.restarts else {}
            if "restarted_at" not in r or "held_after" in r or _node_id(n) not in held:
                continue
            if "serving_at" not in r and first_json(n.proc.out.read_text(errors="replace")):
                r["serving_at"] = time.monotonic()
            if "serving_at" in r and time.monotonic() - r["serving_at"] > 3:
                r["held_after"] = held[_node_id(n)]
                del r["serving_at"]

    # -- checks

    def _snapshot(self, node: Node) -> Path:
        release = self.cluster.release
        return node.folder / "hub" / f"models--{release.repo_id.replace('/', '--')}" / "snapshots" / release.commit

    def _check_visible(self, node: Node) -> str | None:
        """Right now (the node just died): every file a program could open is whole and right."""
        return _wrong_files(node.folder / "hub", self.cluster.release.expected, complete=False)

    def _check_all(self) -> str | None:
        for n in self.nodes:
            problem = _wrong_files(n.folder / "hub", self.cluster.release.expected, complete=True)
            if problem is not None:
                return f"{n.host.name}: {problem}\n{_tail(n.proc)}"
        return None

    def _stop_all(self) -> None:
        for n in self.nodes:
            _stop(n.proc.proc)
        for proc in (self.rogue, self.coordinator):
            if proc is not None:
                _stop(proc)
        for n in self.nodes:
            if n.tmpfs:
                subprocess.run(["umount", "-l", str(n.folder)], capture_output=True)
        with contextlib.suppress(Exception):
            _put_faults(self.cluster.endpoint, [])
        for i in self.cut:
            _link(self.cluster.lab, self.nodes[i].host, up=True)


def _wrong_files(hub: Path, expected: dict[str, str], *, complete: bool) -> str | None:
    """What is wrong in a cache's snapshot folders: a file not of the release, a file whose bytes are not the
    release's (half-written or other bytes), or (``complete``) a file missing."""
    for snapshot in hub.glob("models--*/snapshots/*"):
        found = {
            p.relative_to(snapshot).as_posix(): p
            for p in snapshot.rglob("*")
            if (p.is_file() or p.is_symlink()) and p.relative_to(snapshot).parts[0] != ".pad"
        }
        if extra := sorted(set(found) - set(expected)):
            return f"{snapshot}: files not of the release: {extra[:5]}"
        if complete and (missing := sorted(set(expected) - set(found))):
            return f"{snapshot}: files missing: {missing[:5]}"
        for rel, path in found.items():
            if not path.is_file():
                return f"{path}: a link to nothing"
            if sha256_of(path) != expected[rel]:
                return f"{path}: its bytes are not the release's (half-written or other bytes)"
    return None


def _has_all(snapshot: Path, expected: dict[str, str]) -> bool:
    return all((snapshot / p).is_file() for p in expected)


def _node_id(n: Node) -> str:
    try:
        return (n.folder / "state" / "node-id").read_text().strip()
    except OSError:
        return ""


def _tail(proc: NodeProc, lines: int = 25) -> str:
    text = proc.out.with_suffix(".err").read_text(errors="replace").splitlines()
    return "\n".join([line for line in text if "cluster/report" not in line][-lines:])


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _sh(*argv: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip()}")


def _link_name(lab: Any, host: Host) -> str:
    index = lab.nodes.index(host) + 1
    return f"shb{lab.slot}-v{index}"


def _link(lab: Any, host: Host, *, up: bool) -> None:
    _sh("ip", "link", "set", _link_name(lab, host), "up" if up else "down")


def _put_faults(endpoint: str, rules: list[dict[str, Any]]) -> None:
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(f"{endpoint}/_bench/faults", data=json.dumps(rules).encode(), method="PUT")
    with opener.open(request, timeout=10) as answer:
        answer.read()


def _by_client(cluster: Cluster) -> dict[str, int]:
    return {str(a): int(n) for a, n in get_json(f"{cluster.endpoint}/_bench/bytes").get("by_client", {}).items()}


def _b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode()


# ------------------------------------------------------------------------------------------------ reporting


def print_run(k: int, seed: str, row: dict[str, Any], out: Callable[[str], None]) -> None:
    t = "-" if row["t_over_t_min"] is None else f"{row['t_over_t_min']:.2f}"
    verdict = "ok" if row["failure"] is None else "FAILED"
    faults = "; ".join(row["faults"])
    out(f"run {k:3d} seed {seed}: {verdict}  T/T_min {t}  origin/F {row['origin_ratio']:.3f}  {faults}")
    for r in row["restarts"]:
        after = r.get("held_after", "?")
        out(f"          {r['node']} ({r['kind']}): held {r['held_before']} pieces when killed, {after} after restart")
    if row.get("origin_ratio_by_node") and row["origin_ratio"] > 1.05:
        out("          origin/F by node: " + ", ".join(f"{n} {r}" for n, r in row["origin_ratio_by_node"].items()))
    if row["failure"] is not None:
        out("          " + row["failure"].replace("\n", "\n          "))
        out("          events: " + "; ".join(row["events"]))


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    failed = [r for r in rows if r["failure"] is not None]
    worst: dict[str, float] = {}
    for kind in ORIGIN_TARGET:
        ratios = [r["origin_ratio"] for r in rows if kind in r["fault_kinds"] and r["failure"] is None]
        if ratios:
            worst[kind] = max(ratios)
    ok = [r for r in rows if r["failure"] is None]
    return {
        "runs": len(rows),
        "failures": len(failed),
        "failed_runs": [r["run"] for r in failed],
        "worst_origin_ratio": max((r["origin_ratio"] for r in ok), default=None),
        "worst_origin_ratio_by_fault": worst,
        "origin_targets": ORIGIN_TARGET,
        "over_target": [
            r["run"]
            for r in ok
            if any(r["origin_ratio"] > v for k, v in ORIGIN_TARGET.items() if k in r["fault_kinds"])
        ],
        "worst_t_over_t_min": max((r["t_over_t_min"] for r in ok), default=None),
        "restarted_nodes_that_kept_nothing": sum(
            1 for r in ok for x in r["restarts"] if x["held_before"] > 0 and x.get("held_after") == 0
        ),
    }


def _over_target(row: dict[str, Any]) -> bool:
    return any(row["origin_ratio"] > v for k, v in ORIGIN_TARGET.items() if k in row["fault_kinds"])


# --------------------------------------------------------------------------------------------------- main


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=50, help="how many runs (default: 50)")
    parser.add_argument("--run", type=int, help="only this run (with the same --seed: the same faults)")
    parser.add_argument("--seed", default="1", help="the schedule's seed (default: 1)")
    parser.add_argument("--nodes", type=int, default=8, help="N (default: 8)")
    parser.add_argument("--size-mb", type=float, default=64, help="release size F in MB (default: 64)")
    parser.add_argument("--faults", default=",".join(KINDS), help=f"the kinds to draw from (default: all: {KINDS})")
    parser.add_argument("--origin-mbps", type=float, default=5, help="origin uplink, MB/s (default: 5)")
    parser.add_argument("--node-mbps", type=float, default=10, help="each node's links, MB/s (default: 10)")
    parser.add_argument("--node-arg", dest="node_args", action="append", default=[], help="more for node run")
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "swarmhub-bench-chaos")
    parser.add_argument("--keep", action="store_true", help="keep every run's folders and logs")
    parser.add_argument("--out", type=Path, help="write the rows and the summary here as JSON")
    parser.add_argument("--json", action="store_true", help="print JSON: the rows and the summary")
    args = parser.parse_args()
    kinds = tuple(k for k in args.faults.split(",") if k)
    if unknown := set(kinds) - set(KINDS):
        parser.error(f"--faults: unknown {sorted(unknown)}; known: {', '.join(KINDS)}")
    args.kinds = kinds
    # what cluster_of reads
    args.no_netns, args.format, args.swarmhub_node_args = False, "hybrid", ""
    return args


@contextlib.contextmanager
def _lab_cluster(args: argparse.Namespace, work: Path) -> Iterator[Cluster]:
    with cluster_of(args, args.nodes + 1, work) as cluster:  # one host more: the corrupt peer's
        assert isinstance(cluster.lab, NetnsLab)
        yield cluster


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    args = parse_args()
    if (why := netns_available()) is not None:
        print(f"chaos needs network namespaces ({why}): run as root", file=sys.stderr)
        return 2
    args.dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="work-", dir=args.dir))
    signal.signal(signal.SIGTERM, _interrupted)
    runs = [args.run] if args.run is not None else list(range(1, args.runs + 1))
    rows: list[dict[str, Any]] = []
    say = (lambda s: print(s, file=sys.stderr, flush=True)) if args.json else (lambda s: print(s, flush=True))
    try:
        with _lab_cluster(args, work) as cluster:
            release = cluster.release
            say(f"release {release.size / MB:.0f} MB, N={args.nodes}, seed {args.seed}, {len(runs)} run(s)")
            for k in runs:
                seed = f"{args.seed}:{k}"
                bound = t_min(release.size, args.nodes, cluster.lab.rates)
                faults = schedule(seed, args.nodes, bound, args.kinds)
                folder = work / "runs" / f"run{k}"
                started = time.monotonic()
                try:
                    row = ChaosRun(cluster, args.nodes, folder, faults, args).execute()
                except SystemExit as exc:
                    row = {"faults": [f.describe() for f in faults], "fault_kinds": sorted({f.kind for f in faults})}
                    row |= {"events": [], "seconds": None, "t_min_seconds": round(bound, 1), "t_over_t_min": None}
                    row |= {"origin_ratio": 0.0, "restarts": [], "failure": f"setup: {exc.code}"}
                row = {"run": k, "seed": seed, "wall_seconds": round(time.monotonic() - started, 1), **row}
                rows.append(row)
                print_run(k, seed, row, say)
                if row["failure"] is None and not args.keep:
                    shutil.rmtree(folder, ignore_errors=True)
                if args.out:
                    args.out.write_text(json.dumps({"rows": rows, "summary": summarize(rows)}, indent=2) + "\n")
                os.sync()
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    finally:
        if not args.keep and all(r["failure"] is None for r in rows):
            shutil.rmtree(work, ignore_errors=True)
        else:
            say(f"kept {work} (the logs of failed runs: {work}/logs)")
    summary = summarize(rows)
    if args.json:
        print(json.dumps({"rows": rows, "summary": summary}, indent=2))
    else:
        say(
            f"\n{summary['runs']} runs, {summary['failures']} failed {summary['failed_runs'] or ''}; worst origin/F "
            f"{summary['worst_origin_ratio']}; by fault {summary['worst_origin_ratio_by_fault']} (targets "
            f"{ORIGIN_TARGET}); worst T/T_min {summary['worst_t_over_t_min']}"
        )
    return 1 if summary["failures"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
