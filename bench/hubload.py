"""Benchmark: how many requests the Hub sees when programs read releases through swarmhub nodes, and straight.

A dev hub (``swarmhub.devhub.DevHub``, in this process: its request log is the count) serves two small releases
(bench/hubload_release.py): a model of 13 files (config, tokenizer files, three safetensors shards, ...) and a
parquet dataset with a ``configs:`` README. Their torrents are made once (``swarmhub create``). For each N (1, 4
and 16 by default) and mode:

- ``direct``       every program at the origin itself (``HF_ENDPOINT=<hub>``);
- ``nodes``        N node daemons (``swarmhub node run``, loopback, each its own HF cache and state folder) that
                   hold both releases whole: ``swarmhub pull <repo>@main --torrent ...`` into each node's cache
                   before it starts; every program through its own node (``HF_ENDPOINT=<node>``);
- ``coordinator``  the same nodes joined to ``swarmhub coordinator serve --upstream <hub>`` (skipped, with a
                   note, while the coordinator has no ``--upstream`` option).

Each node runs three programs, each a process of its own with an empty HF_HOME/HF_HUB_CACHE, HF_HUB_DISABLE_XET=1
and HF_HUB_DISABLE_TELEMETRY=1: ``snapshot_download(model)`` by branch (main), ``snapshot_download(model,
revision=<commit>)``, and ``datasets.load_dataset(dataset)`` (by branch). A program checks every file it got by
SHA-256 against the release (and the dataset's row count) and fails otherwise. The N nodes run a program at the
same time (a cluster's job start); the three programs run one after the other, because the Hub's log cannot tell
which program sent a request (the model's two programs ask for the same files), so each program's window of the
log is its own. What a node asks the Hub meanwhile, on its own account, is charged to the program it serves.

Origin conditions, through the nodes only (direct fails there by design): ``ok``; ``429`` (once the nodes are
up, every request to the hub and its CDN answered 429 with Retry-After, ``--retry-after``); ``down`` (the hub
stopped once the nodes are up). Each condition starts from nodes just pulled: the node folders are pulled once
(shared by the modes and the Ns) and every condition's daemons start on fresh copies of them, so none inherits
what a node learned under another condition or mode (in ``coordinator`` mode the coordinator starts afresh too).

Hub requests are counted by kind: ``revision`` (``/api/{type}s/{repo}`` and ``.../revision/...``), ``tree``,
``paths-info``, ``resolve`` (``/.../resolve/...`` and ``/api/resolve-cache/...``), ``lfs`` (the CDN; also its
bytes) and ``other``. Reported per mode, program and N: requests per program (mean) and per cluster (total), by
kind, the ratio to direct; the nodes' endpoint counters (answers from the swarm, relayed requests); under 429
and down, how many programs completed (exit 0, files checked) and why the others failed.

Measured here (2 shared cores, all three modes): ``--quick`` 157 s, the default (N = 1, 4, 16) 529 s; at N = 16 a
phase takes 9-10 s (snapshot_download) and 19-24 s (load_dataset): the programs' own CPU is the bound.

    python bench/hubload.py [--nodes 1,4,16 | --quick] [--modes direct,nodes,coordinator] [--json] [--keep]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hubload_release import DATASET_ID, MODEL_ID, PROGRAM, make_dataset, make_model
from pull import SWARMHUB, Servers, check_files, clean_env, first_json, sha256_of, wait_for
from swarmhub.devhub import DevHub, LoggedRequest

MODES = ("direct", "nodes", "coordinator")
ORIGINS = ("ok", "429", "down")  # in this order: "down" stops the hub for good
KINDS = ("revision", "tree", "paths-info", "resolve", "lfs", "other")
HF_ENV = {
    "HF_HUB_DISABLE_XET": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
}
# /api/{type}s/{org}/{name}[/revision|tree|paths-info/...]; no suffix is the repo info (revision of main).
_API = re.compile(r"/api/(?:models|datasets|spaces)/[^/]+/[^/]+(?:/(?P<what>revision|tree|paths-info)(?:/.*)?)?")


@dataclass(frozen=True)
class Program:
    name: str
    kind: str  # "snapshot" (snapshot_download) or "dataset" (load_dataset)
    repo_type: str
    repo_id: str
    by_commit: bool  # revision=<the release's commit>, else "main"

    @property
    def slug(self) -> str:
        return self.name.replace("@", "-")


PROGRAMS = (
    Program("snapshot@main", "snapshot", "model", MODEL_ID, False),
    Program("snapshot@commit", "snapshot", "model", MODEL_ID, True),
    Program("load_dataset", "dataset", "dataset", DATASET_ID, False),
)


@dataclass(frozen=True)
class Release:
    repo_type: str
    repo_id: str
    commit: str
    torrent: Path
    expected: dict[str, str]  # path -> sha256
    rows: int | None
    size: int


@dataclass(frozen=True)
class Setup:
    root: Path  # the hub's folders
    work: Path
    servers: Servers
    releases: dict[str, Release]  # by repo type
    specs: dict[str, Path]  # program name -> its SPEC file
    timeout: float  # per program
    retry_after: int
    keep: bool


@dataclass
class Row:
    """One program on every node of a cluster (or N times straight at the hub), one origin condition."""

    mode: str
    origin: str
    program: str
    nodes: int
    completed: int  # exit 0, files checked
    failures: dict[str, int]  # why the others failed -> how many
    requests: int  # the hub's (origin and CDN), the whole cluster
    kinds: dict[str, int]
    lfs_bytes: int
    statuses: dict[str, int]  # the hub's answers by status
    seconds: float  # median wall time of one program
    node_counters: dict[str, int] = field(default_factory=dict)  # endpoint counters, summed over the nodes
    vs_direct: float | None = None  # requests / direct's, same program and N (origin ok)


# ----------------------------------------------------------------------------------------------- counting


def kind_of(entry: LoggedRequest) -> str:
    if entry.server == "cdn":
        return "lfs"
    if "/resolve/" in entry.path or entry.path.startswith("/api/resolve-cache/"):
        return "resolve"
    match = _API.fullmatch(entry.path)
    if match:
        return match["what"] or "revision"
    return "other"


def tally(entries: Iterable[LoggedRequest]) -> dict[str, Any]:
    kinds, statuses, lfs_bytes, total = dict.fromkeys(KINDS, 0), Counter[str](), 0, 0
    for e in entries:
        kind = kind_of(e)
        kinds[kind] += 1
        statuses[str(e.status)] += 1
        lfs_bytes += e.body_bytes if kind == "lfs" else 0
        total += 1
    return {"requests": total, "kinds": kinds, "lfs_bytes": lfs_bytes, "statuses": dict(statuses)}


def settled(hub: DevHub, mark: int, quiet: float = 0.3, cap: float = 5.0) -> list[LoggedRequest]:
    """The log since ``mark`` once nothing new arrived for ``quiet`` seconds (answers in flight are in)."""
    deadline, seen, since = time.monotonic() + cap, -1, time.monotonic()
    while time.monotonic() < deadline:
        entries = hub.log.entries()
        if len(entries) != seen:
            seen, since = len(entries), time.monotonic()
        elif time.monotonic() - since >= quiet:
            break
        time.sleep(0.05)
    return hub.log.entries()[mark:]


# ------------------------------------------------------------------------------------------------ the setup


def _get_json(url: str, timeout: float = 10) -> Any:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback, never a proxy
    with opener.open(url, timeout=timeout) as answer:
        return json.loads(answer.read())


def make_releases(args: argparse.Namespace, work: Path, root: Path) -> dict[str, Release]:
    """Both releases on disk, and their torrents made once by ``swarmhub create`` against a dev hub."""
    model = make_model(root, int(args.model_mb * 1e6))
    dataset, rows = make_dataset(root, args.rows)
    releases = {}
    with DevHub(root) as hub:
        for repo_type, repo_id, folder, n in (("model", MODEL_ID, model, None), ("dataset", DATASET_ID, dataset, rows)):
            torrent = work / f"{repo_type}.torrent"
            cmd = [*SWARMHUB, "create", repo_id, "--repo-type", repo_type, "--endpoint", hub.endpoint]
            done = subprocess.run([*cmd, "-o", str(torrent), "--json", "--no-progress"], capture_output=True,
                                  text=True, env=clean_env(), timeout=300)  # fmt: skip
            if done.returncode != 0:
                raise SystemExit(f"swarmhub create {repo_id} failed:\n{done.stderr[-2000:]}")
            made = json.loads(done.stdout)
            paths = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
            expected = {p: sha256_of(folder / p) for p in paths}
            size = sum((folder / p).stat().st_size for p in paths)
            releases[repo_type] = Release(repo_type, repo_id, str(made["commit"]), torrent, expected, n, size)
    return releases


def write_specs(work: Path, releases: dict[str, Release]) -> dict[str, Path]:
    specs = {}
    for p in PROGRAMS:
        r = releases[p.repo_type]
        spec = {"kind": p.kind, "repo_id": p.repo_id, "revision": r.commit if p.by_commit else "main",
                "commit": r.commit, "expected": r.expected, "rows": r.rows}  # fmt: skip
        specs[p.name] = work / f"{p.slug}.json"
        specs[p.name].write_text(json.dumps(spec))
    return specs


def coordinator_missing() -> str | None:
    """None when ``swarmhub coordinator serve`` takes ``--upstream``, else why the mode is skipped."""
    done = subprocess.run([*SWARMHUB, "coordinator", "serve", "--help"], capture_output=True, text=True,
                          env=clean_env(), timeout=60)  # fmt: skip
    if done.returncode != 0:
        return "skipped: this swarmhub has no `coordinator serve` command"
    if "--upstream" not in done.stdout:
        return "skipped: `swarmhub coordinator serve` has no --upstream option yet"
    return None


# ------------------------------------------------------------------------------------------------ the nodes


def pull_one(setup: Setup, endpoint: str, node: Path, release: Release) -> None:
    """``swarmhub pull`` of one release into one node's cache (the origin only: no peer has it), then checked."""
    cmd = [*SWARMHUB, "pull", f"{release.repo_id}@main", "--repo-type", release.repo_type, "--torrent",
           str(release.torrent), "--endpoint", endpoint, "--cache-dir", str(node / "hub"), "--origin-after", "0",
           "--json", "--no-progress"]  # fmt: skip
    env = clean_env(SWARMHUB_HOME=str(node / "swarmhub"), HF_HOME=str(node / "hf-home"))
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    if done.returncode != 0:
        raise SystemExit(f"pull of {release.repo_id} into {node} failed:\n{done.stderr[-2000:]}")
    check_files(Path(json.loads(done.stdout)["snapshot_path"]), release.expected)


def pull_nodes(setup: Setup, endpoint: str, n: int) -> list[Path]:
    """N node folders holding both releases, pulled once for every mode and N: each run starts its nodes on
    copies of them (``start_nodes``); slots pulled for a smaller N are not pulled again."""
    nodes = [setup.work / "pulled" / f"node-{i}" for i in range(n)]
    todo = [node for node in nodes if not node.with_suffix(".pulled").exists()]
    jobs = [(node, r) for node in todo for r in setup.releases.values()]
    with ThreadPoolExecutor(2) as pool:  # 2 cores
        list(pool.map(lambda job: pull_one(setup, endpoint, *job), jobs))
    for node in todo:
        node.with_suffix(".pulled").touch()
    return nodes


@dataclass
class NodeProc:
    proc: subprocess.Popen[bytes]
    folder: Path
    out: Path  # what it printed (its ready line)
    url: str = ""


def start_nodes(setup: Setup, label: str, pulled: list[Path], into: Path, upstream: str, coordinator: str | None
                ) -> list[NodeProc]:  # fmt: skip
    """One daemon per pulled node folder, each on a fresh copy of it; all started at once, then waited for."""
    nodes = []
    for i, source in enumerate(pulled):
        folder = into / source.name
        shutil.copytree(source, folder, symlinks=True)  # the HF cache's snapshot links are relative
        cmd = [*SWARMHUB, "node", "run", "--port", "0", "--listen", "127.0.0.1:0", "--cache-dir", str(folder / "hub"),
               "--upstream", upstream, "--json", *(["--coordinator", coordinator] if coordinator else [])]  # fmt: skip
        env = clean_env(SWARMHUB_HOME=str(folder / "swarmhub"), HF_HOME=str(folder / "hf-home"))
        proc, out = setup.servers.start(f"{label}-node-{i}", cmd, env)
        nodes.append(NodeProc(proc, folder, out))
    try:
        for node in nodes:
            node.url = str(wait_for(node.proc, node.out, first_json, timeout=120)["url"])
    except BaseException:
        stop_procs(setup, [n.proc for n in nodes])
        raise
    return nodes


def stop_procs(setup: Setup, procs: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM to all at once (a node takes a moment to stop), then wait for each; SIGKILL after 15 s."""
    for proc in procs:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    for proc in procs:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if proc in setup.servers.procs:
            setup.servers.procs.remove(proc)


def node_counters(nodes: list[NodeProc]) -> Counter[str]:
    """The endpoint's counters (``/status``: ``endpoint_swarm_answers``, ``endpoint_relayed``, ...), summed."""
    total = Counter[str]()
    for node in nodes:
        try:
            stats = _get_json(f"{node.url}/status")["stats"]
        except (OSError, ValueError, KeyError):
            continue
        total.update({k.removeprefix("endpoint_"): v for k, v in stats.items() if k.startswith("endpoint_")})
    return total


def start_coordinator(setup: Setup, label: str, upstream: str) -> tuple[subprocess.Popen[bytes], str]:
    cmd = [*SWARMHUB, "coordinator", "serve", "--port", "0", "--upstream", upstream, "--json"]
    proc, out = setup.servers.start(f"{label}-coordinator", cmd, clean_env())
    return proc, str(wait_for(proc, out, first_json, timeout=60)["url"])


def wait_members(url: str, n: int, timeout: float = 30) -> int:
    """How many nodes the coordinator sees alive, once all ``n`` are (or at the deadline)."""
    deadline, alive = time.monotonic() + timeout, 0
    while time.monotonic() < deadline:
        try:
            alive = sum(bool(node.get("alive")) for node in _get_json(f"{url}/cluster/status")["nodes"])
        except (OSError, ValueError, KeyError):
            alive = 0
        if alive >= n:
            break
        time.sleep(0.2)
    return alive


# --------------------------------------------------------------------------------------------- the programs


@dataclass(frozen=True)
class Outcome:
    ok: bool
    error: str | None
    seconds: float


def run_program(setup: Setup, program: Program, endpoint: str, home: Path, log: Path) -> Outcome:
    """One program in a fresh HF home; a failure or a timeout is an outcome, never an exception."""
    home.mkdir(parents=True)
    env = clean_env(HF_ENDPOINT=endpoint, HF_HOME=str(home), HF_HUB_CACHE=str(home / "hub"), **HF_ENV)
    cmd = [sys.executable, "-c", PROGRAM, str(setup.specs[program.name])]
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=home,
                            start_new_session=True)  # fmt: skip
    try:
        out, err = proc.communicate(timeout=setup.timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        log.write_bytes(err)
        return Outcome(False, f"timeout after {setup.timeout:g} s", time.monotonic() - start)
    seconds = time.monotonic() - start
    said: dict[str, Any] = {}
    for line in reversed(out.decode(errors="replace").splitlines()):
        try:
            said = json.loads(line)
            break
        except ValueError:
            continue
    if proc.returncode == 0 and said.get("ok"):
        return Outcome(True, None, seconds)
    log.write_bytes(err)
    tail = err.decode(errors="replace").strip().splitlines()
    why = said.get("error") or (tail[-1][:240] if tail else "no output")
    return Outcome(False, f"exit {proc.returncode}: {why}", seconds)


def run_phase(setup: Setup, hub: DevHub, program: Program, mode: str, origin: str, endpoints: list[str],
              folder: Path, nodes: list[NodeProc]) -> Row:  # fmt: skip
    """``program`` on every endpoint at once; the hub's log over that window, the nodes' counters."""
    before, mark = node_counters(nodes), len(hub.log.entries())
    label = f"{mode}-{len(endpoints)}-{origin}-{program.slug}"
    with ThreadPoolExecutor(len(endpoints)) as pool:
        outcomes = list(pool.map(lambda i: run_program(setup, program, endpoints[i], folder / f"{program.slug}-{i}",
                                                       setup.servers.logs / f"{label}-{i}.err"),
                                 range(len(endpoints))))  # fmt: skip
    entries = settled(hub, mark)
    counted = tally(entries)
    if setup.keep:  # the window's requests, for a look at what was asked
        with (setup.servers.logs / f"{label}-hub.jsonl").open("w") as f:
            f.writelines(json.dumps({"kind": kind_of(e), **asdict(e)}) + "\n" for e in entries)
    counters = node_counters(nodes)
    counters.subtract(before)
    if not setup.keep:
        for i in range(len(endpoints)):
            shutil.rmtree(folder / f"{program.slug}-{i}", ignore_errors=True)
    return Row(
        mode, origin, program.name, len(endpoints),
        completed=sum(o.ok for o in outcomes),
        failures=dict(Counter(o.error for o in outcomes if o.error)),
        seconds=round(statistics.median(o.seconds for o in outcomes), 2),
        node_counters=dict(sorted(counters.items())) if nodes else {},
        **counted,
    )  # fmt: skip


# ------------------------------------------------------------------------------------------------- the runs


def run_direct(setup: Setup, n: int, report: Callable[[Row], None]) -> None:
    folder = setup.work / f"direct-{n}"
    with DevHub(setup.root) as hub:
        hub.state.store.warm()
        for program in PROGRAMS:
            report(run_phase(setup, hub, program, "direct", "ok", [hub.endpoint] * n, folder, []))


def run_cluster(setup: Setup, mode: str, n: int, report: Callable[[Row], None], startup: list[dict[str, Any]]) -> None:
    """N nodes holding both releases, started afresh for each origin condition on fresh copies of their folders."""
    folder = setup.work / f"{mode}-{n}"
    with DevHub(setup.root) as hub:
        hub.state.store.warm()
        began = time.monotonic()
        pulled = pull_nodes(setup, hub.endpoint, n)
        print(f"{mode} N={n}: both releases pulled onto the nodes in {time.monotonic() - began:.1f} s", file=sys.stderr)
        for origin in ORIGINS:
            label, into = f"{mode}-{n}-{origin}", folder / origin
            mark, procs, began = len(hub.log.entries()), [], time.monotonic()
            try:
                coordinator = None
                if mode == "coordinator":
                    proc, coordinator = start_coordinator(setup, label, hub.endpoint)
                    procs.append(proc)
                nodes = start_nodes(setup, label, pulled, into, hub.endpoint, coordinator)
                procs += [node.proc for node in nodes]
                members = wait_members(coordinator, n) if coordinator else None
                up = round(time.monotonic() - began, 1)
                startup.append({"mode": mode, "origin": origin, "nodes": n, "members": members, "seconds": up,
                                **tally(settled(hub, mark))})  # fmt: skip
                print(f"{label}: {n} node(s) up in {up:.1f} s", file=sys.stderr)
                if origin == "429":  # faults.py: fnmatch on the path, "*" crosses "/": every request
                    hub.faults.respond("*", 429, retry_after=setup.retry_after)
                elif origin == "down":
                    hub.stop()
                for program in PROGRAMS:
                    report(run_phase(setup, hub, program, mode, origin, [x.url for x in nodes], into, nodes))
            finally:
                stop_procs(setup, procs)
                hub.faults.clear()
                if not setup.keep:
                    shutil.rmtree(into, ignore_errors=True)
        if not setup.keep:
            shutil.rmtree(folder, ignore_errors=True)


def add_ratios(rows: list[Row]) -> None:
    direct = {(r.program, r.nodes): r.requests for r in rows if r.mode == "direct"}
    for r in rows:
        base = direct.get((r.program, r.nodes))
        if r.mode != "direct" and r.origin == "ok" and base:
            r.vs_direct = round(r.requests / base, 3)


# -------------------------------------------------------------------------------------------------- report


def _counter(row: Row, name: str) -> str:
    """A node counter per program, or "-" (direct; a counter this node version does not have)."""
    value = row.node_counters.get(name)
    return "-" if value is None else f"{value / row.nodes:.1f}"


def print_report(report: dict[str, Any]) -> None:
    rows = [Row(**r) for r in report["rows"]]
    rel = report["releases"]
    print(
        f"\nreleases: {rel['model']['repo_id']} {rel['model']['files']} files {rel['model']['bytes'] / 1e6:.1f} MB, "
        f"{rel['dataset']['repo_id']} {rel['dataset']['files']} files {rel['dataset']['bytes'] / 1e6:.1f} MB "
        f"({rel['dataset']['rows']} rows); hub requests per program (mean over the N programs) and per cluster"
    )
    kinds = " ".join(f"{k:>10}" for k in KINDS)
    head = f"  {'mode':11} {'program':16} {'N':>3} {'done':>6} {'req/prog':>9} {'req/cluster':>11} {kinds}"
    print(f"{head} {'lfs MB':>7} {'swarm':>6} {'meta':>5} {'relayed':>7} {'s':>6}  vs direct")
    for r in (r for r in rows if r.origin == "ok"):
        per = " ".join(f"{r.kinds[k] / r.nodes:10.1f}" for k in KINDS)
        ratio = f"{r.mode}/direct {r.vs_direct:.2f}" if r.vs_direct is not None else ""
        node = " ".join(f"{_counter(r, k):>{w}}" for k, w in (("swarm_answers", 6), ("metadata_answers", 5),
                                                                ("relayed", 7)))  # fmt: skip
        print(
            f"  {r.mode:11} {r.program:16} {r.nodes:3d} {r.completed:>3}/{r.nodes:<2} {r.requests / r.nodes:9.1f} "
            f"{r.requests:11d} {per} {r.lfs_bytes / r.nodes / 1e6:7.2f} {node} {r.seconds:6.1f}  {ratio}"
        )
    print(
        "  (per program: kinds, lfs MB; the nodes' endpoint counters: swarm = resolve answers from the swarm, "
        "meta = /api/ answers made from a release, relayed = requests passed to the upstream)"
    )
    for r in (r for r in rows if r.origin == "ok" and r.failures):
        print(f"  {r.mode} {r.program} N={r.nodes} failed: " + "; ".join(f"{n}x {e}" for e, n in r.failures.items()))
    faulted = [r for r in rows if r.origin != "ok"]
    if faulted:
        print("\ncompletions with the origin answering 429 to everything, or stopped (exit 0, files checked):")
        head = f"  {'mode':11} {'origin':6} {'program':16} {'N':>3} {'done':>6} {'req/prog':>9}"
        print(f"{head} {'stale':>6} {'offline':>7} {'relayed':>7} {'s':>6}  why not")
        for r in faulted:
            why = "; ".join(f"{n}x {e}" for e, n in r.failures.items())
            node = " ".join(f"{_counter(r, k):>{w}}" for k, w in (("stale_answers", 6), ("offline_answers", 7),
                                                                    ("relayed", 7)))  # fmt: skip
            print(
                f"  {r.mode:11} {r.origin:6} {r.program:16} {r.nodes:3d} {r.completed:>3}/{r.nodes:<2} "
                f"{r.requests / r.nodes:9.1f} {node} {r.seconds:6.1f}  {why[:200]}"
            )
        print(
            "  (per program: req/prog = requests the hub saw, its 429s included; the nodes' counters: stale = answers "
            "from a branch head the hub could not refresh, offline = answers without the upstream, relayed)"
        )
    if report["startup"]:
        print("\nhub requests while the nodes started (per cluster, before any program): " + ", ".join(
            f"{s['mode']} N={s['nodes']} {s['origin']}: {s['requests']}" for s in report["startup"]))  # fmt: skip
    for name, why in report["skipped"].items():
        print(f"{name}: {why}")
    print(f"\nbench wall time {report['seconds']:.0f} s")


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM unwinds like Ctrl-C: nodes and servers stopped, the work folder removed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", default="1,4,16", help="cluster sizes N (default: 1,4,16)")
    parser.add_argument("--quick", action="store_true", help="N = 1,4 only")
    parser.add_argument("--modes", default=",".join(MODES), help=f"a comma list of {', '.join(MODES)} (default: all)")
    parser.add_argument("--model-mb", type=float, default=4.5, help="model weights, MB (default: 4.5)")
    parser.add_argument("--rows", type=int, default=30_000, help="dataset rows (default: 30000)")
    parser.add_argument("--retry-after", type=int, default=1, help="Retry-After of the 429s, seconds (default: 1)")
    parser.add_argument("--timeout", type=float, default=180, help="seconds a program may take (default: 180)")
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()), help="where to work (a new folder)")
    parser.add_argument(
        "--keep", action="store_true", help="keep the work folder (nodes, programs' caches, logs, hub requests)"
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args()
    counts = [1, 4] if args.quick else [int(n) for n in args.nodes.split(",")]
    modes = args.modes.split(",")
    if not set(modes) <= set(MODES):
        parser.error(f"--modes: a comma list of {', '.join(MODES)}")
    signal.signal(signal.SIGTERM, _interrupted)
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="swarmhub-bench-hubload-", dir=args.dir))
    servers = Servers(work / "logs")
    skipped: dict[str, str] = {}
    if "coordinator" in modes and (why := coordinator_missing()) is not None:
        skipped["coordinator"] = why
        print(f"coordinator: {why}", file=sys.stderr)
    rows: list[Row] = []
    startup: list[dict[str, Any]] = []

    def report(row: Row) -> None:
        rows.append(row)
        print(f"{row.mode:11} {row.origin:4} N={row.nodes:<2} {row.program:16} {row.completed}/{row.nodes} done, "
              f"hub {row.requests / row.nodes:.1f} req/program, {row.seconds:.1f} s", file=sys.stderr)  # fmt: skip

    try:
        root = work / "root"
        releases = make_releases(args, work, root)
        setup = Setup(root, work, servers, releases, write_specs(work, releases), args.timeout, args.retry_after,
                      args.keep)  # fmt: skip
        for n in counts:
            for mode in (m for m in MODES if m in modes and m not in skipped):
                try:
                    run_direct(setup, n, report) if mode == "direct" else run_cluster(setup, mode, n, report, startup)
                except SystemExit as exc:  # a setup that failed (a pull, a node that did not start): the others go on
                    skipped[f"{mode} N={n}"] = f"failed: {str(exc.code)[:600]}"
                    print(f"{mode} N={n}: {exc.code}", file=sys.stderr)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        servers.stop_all()
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    add_ratios(rows)
    out = {
        "releases": {
            t: {"repo_id": r.repo_id, "commit": r.commit, "files": len(r.expected), "bytes": r.size, "rows": r.rows}
            for t, r in releases.items()
        },
        "rows": [asdict(r) for r in rows],
        "startup": startup,
        "skipped": skipped,
        "seconds": round(time.monotonic() - started, 1),
    }
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print_report(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
