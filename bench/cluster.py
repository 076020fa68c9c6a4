"""Benchmark: N nodes of a cluster all need the same release at once; how long, and how much from the origin?

An origin and N nodes, each a host of its own (bench/netlab.py): network namespaces on one bridge with
``tc`` rate limits on every link (root), or 127.x.0.y addresses with the programs limiting themselves
(``--no-netns``). The origin (bench/cluster_origin.py: the dev hub, its LFS CDN and a web seed) counts every
body byte it sends. Modes (bench/cluster_modes.py), every node starting at the same instant:

- ``swarmhub``  swarmhub cluster mode: ``swarmhub coordinator serve`` on the origin host, ``swarmhub node run
                --coordinator`` on every node, one preheat at the start (``--kill-fetcher-at``: the fault run)
- ``http``      every node runs huggingface_hub's snapshot_download against the origin
- ``webseed``   every node runs a plain libtorrent client with the torrent's web seed and a tracker

Reported per run: T (until the last node has every byte, each node's files then checked against the
release's SHA-256s), T_min = max(F/u_origin, F/d_min, N*F/(u_origin + sum u_i)) (Kumar & Ross 2006: no
schedule can beat it), T/T_min, origin bytes/F (1.0: the origin sent each byte once), and the CPU the nodes,
the servers and everything else on the machine used meanwhile.

    python bench/cluster.py --nodes N --size-mb S --mode swarmhub|http|webseed [--kill-fetcher-at 0.3] --json
    python bench/cluster.py [--mode all] [--nodes 4,8,16] [--size-mb 1024]   # the matrix: table, chart, JSON
    python bench/cluster.py --report A.json B.json [--out DIR]                # one table and chart of earlier runs

Rates (1 MB = 10^6 bytes): origin uplink 5 MB/s, node links 10 MB/s each way. Twice the origin's rate on the
nodes makes the origin the bound at every N (T_min = F/u_origin), as in a data centre with one origin link.
They are this slow because of this machine (2 cores, one disk, shared with other work): a swarm that reaches
T_min at N = 16 moves 16 x 5 = 80 MB/s between nodes, and measured here 16 libtorrent nodes spend 12-15 CPU
seconds per GB they receive (TCP over veth, bridge and tbf; SHA-1 and SHA-256 of every piece of a hybrid
torrent; page-cache writes): 80 MB/s is ~1.2 of the 2 cores, leaving room for the origin and for the
0.3-0.5 core other work takes. At 10 MB/s (160 MB/s at N = 16) the cores, and the disk's ~155 MB/s of
writeback, would be the bound instead of the network. The cost: the http mode takes N x F / u_origin
(~55 min at N = 16 with 1 GB), so the full matrix at 1 GB takes ~2.5 hours here.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil

from cluster_modes import MODES, SWARMHUB, Cluster, Mode, NodeProc, Release, Run, get_json, mode_named
from create import REPO_ID, make_release
from netlab import Lab, LoopbackLab, NetnsLab, Rates, netns_available
from pull import Servers, check_files, clean_env, first_json, sha256_of, url_in, wait_for

HERE = Path(__file__).resolve().parent
MB = 1_000_000
MATRIX_NODES = (4, 8, 16)
# What a mode may add to its rows (swarmhub: from the coordinator's status, as the nodes reported it).
_EXTRA_FIELDS = ("fetchers", "killed_fetcher", "per_node_origin_bytes", "per_node_peer_bytes")


# ------------------------------------------------------------------------------------------------- the bound


def t_min(size: int, nodes: int, rates: Rates) -> float:
    """Kumar & Ross 2006: the origin must send every byte once, the slowest node must receive every byte,
    and all N copies must be uploaded by someone."""
    return max(
        size / rates.origin_up,
        size / rates.node_down,
        nodes * size / (rates.origin_up + nodes * rates.node_up),
    )


# ----------------------------------------------------------------------------------------------- the setup


def origin_bytes(cluster: Cluster) -> int:
    return int(get_json(f"{cluster.endpoint}/_bench/bytes")["total"])


def start_origin(lab: Lab, servers: Servers, root: Path) -> tuple[str, str]:
    """The origin and the tracker on the origin host: (origin endpoint, announce URL)."""
    host = lab.origin
    port, tracker_port = (80, 6969) if host.netns else (0, 0)
    cmd = [sys.executable, str(HERE / "cluster_origin.py"), str(root), "--repo", REPO_ID, "--host", host.address]
    cmd += ["--port", str(port)]
    if not lab.shaped:
        cmd += ["--rate", str(lab.rates.origin_up)]  # no tc: the origin throttles itself
    proc, out = servers.start("origin", host.command(cmd), clean_env())
    info = wait_for(proc, out, first_json, timeout=300)  # the dev hub hashes the release before it answers
    # A short interval: nodes that announce first learn of the later ones within seconds (LAN tracker).
    tracker = [*SWARMHUB, "tracker", "serve", "--host", host.address, "--port", str(tracker_port)]
    proc, out = servers.start("tracker", host.command([*tracker, "--interval", "5"]), clean_env())
    announce = wait_for(proc, out, url_in(r"(http://\S+/announce)"))
    return str(info["endpoint"]), announce


def make_torrent(work: Path, repo: Path, endpoint: str, announce: str, fmt: str) -> Release:
    """The release's hybrid torrent (hashed from the files; the commit asked from the origin), with the
    origin's web seed and the lab's tracker."""
    commit = get_json(f"{endpoint}/api/models/{REPO_ID}/revision/main")["sha"]
    torrent = work / "release.torrent"
    cmd = [*SWARMHUB, "create", REPO_ID, "--from-dir", str(repo), "--revision", commit, "--format", fmt]
    cmd += ["--webseed", f"{endpoint}/ws/", "--tracker", announce, "-o", str(torrent), "--json", "--no-progress"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=clean_env())
    if done.returncode != 0:
        raise SystemExit(f"swarmhub create failed:\n{done.stderr[-2000:]}")
    made = json.loads(done.stdout)
    paths = [f["path"] for f in made["files"]]
    with ThreadPoolExecutor(2) as pool:
        expected = dict(zip(paths, pool.map(lambda p: sha256_of(repo / p), paths), strict=True))
    return Release(
        REPO_ID, commit, repo, int(made["total_size"]), expected, torrent, str(made["name"]), int(made["piece_size"])
    )


@contextmanager
def cluster_of(args: argparse.Namespace, nodes: int, work: Path) -> Iterator[Cluster]:
    rates = Rates(args.origin_mbps * MB, args.node_mbps * MB, args.node_mbps * MB)
    lab: Lab = LoopbackLab(nodes, rates) if args.no_netns else NetnsLab(nodes, rates)
    servers = Servers(work / "logs")
    try:
        root = args.dir / f"release-{int(args.size_mb * MB)}"  # one per size: runs side by side share it
        repo = make_release(root, int(args.size_mb * MB))
        endpoint, announce = start_origin(lab, servers, root)
        release = make_torrent(work, repo, endpoint, announce, args.format)
        print(
            f"release: {release.size / MB:.0f} MB in {len(release.expected)} files, piece {release.piece_size >> 10} "
            f"KiB; lab: {'netns + tc' if lab.shaped else 'loopback, rate limits in the programs'} (slot {lab.slot})",
            file=sys.stderr,
        )
        yield Cluster(lab, servers, work, endpoint, f"{endpoint}/ws/", announce, release)
    finally:
        servers.stop_all()
        lab.close()


# ------------------------------------------------------------------------------------------------ one run


def _cpu_of(pid: int) -> float:
    try:
        t = psutil.Process(pid).cpu_times()
        return float(t.user + t.system)
    except psutil.Error:
        return 0.0


def run_mode(
    cluster: Cluster, mode: Mode, nodes: int, args: argparse.Namespace, kill_fetcher_at: float | None = None
) -> dict[str, Any]:
    folder = cluster.work / "runs" / f"{mode.name}-{nodes}{'-fault' if kill_fetcher_at is not None else ''}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    rates, size = cluster.lab.rates, cluster.release.size
    bound = t_min(size, nodes, rates)
    run = Run(cluster, mode, cluster.lab.nodes[:nodes], folder, folder / "go", 120 + 4 * nodes * size / rates.origin_up)
    run.kill_fetcher_at = kill_fetcher_at
    run.extra["node_args"] = shlex.split(args.swarmhub_node_args)
    mode.setup(run)
    serving = [p.pid for p in cluster.servers.procs if p.poll() is None]  # origin, tracker, what setup started
    started: list[NodeProc] = []
    try:
        for host in run.nodes:
            started.append(mode.start_node(run, host, folder / host.name))
        _wait_ready(run, started)
        before, host_before = origin_bytes(cluster), psutil.cpu_times()
        serving_before = sum(map(_cpu_of, serving))
        go = time.monotonic() + 0.5
        mode.go(run, go)
        done = mode.wait_done(run, started)
        served = origin_bytes(cluster) - before
        host_after = psutil.cpu_times()
        serving_cpu = sum(map(_cpu_of, serving)) - serving_before
        nodes_cpu = sum(_node_cpu(n) for n in started if n.host.name in done)
        errors = sum(e.get("event") == "torrent_error" for n in started for e in n.lines())
    finally:
        for n in started:
            _stop(n)
        mode.teardown(run)
    finished = [n for n in started if n.host.name in done]

    def check(n: NodeProc) -> None:
        try:
            check_files(n.folder, cluster.release.expected)
        except SystemExit as exc:  # what the node said last tells why
            tail = n.out.with_suffix(".err").read_text(errors="replace").splitlines()
            said = "\n".join(line for line in tail if "cluster/report" not in line)[-3000:]
            raise SystemExit(f"{n.host.name}: {exc.code}\n{said}") from None

    with ThreadPoolExecutor(2) as pool:  # every node's files, byte for byte
        list(pool.map(check, finished))
    if not args.keep:
        shutil.rmtree(folder, ignore_errors=True)
    os.sync()  # the next run does not start while the kernel still writes this one's bytes back
    seconds = max(done.values()) - go
    spent = sum(host_after) - sum(host_before)
    busy = spent - (host_after.idle - host_before.idle) - (host_after.iowait - host_before.iowait)
    return {
        "mode": mode.name,
        "label": mode.label if kill_fetcher_at is None else f"{mode.label}, a fetcher killed at {kill_fetcher_at:.0%}",
        "kill_fetcher_at": kill_fetcher_at,
        **(
            {"swarmhub_node_args": args.swarmhub_node_args}
            if mode.name == "swarmhub" and args.swarmhub_node_args
            else {}
        ),
        "nodes": nodes,
        "size_bytes": size,
        "seconds": round(seconds, 2),
        "t_min_seconds": round(bound, 2),
        "t_over_t_min": round(seconds / bound, 3),
        "origin_bytes": served,
        "origin_ratio": round(served / size, 4),
        "per_node_seconds": [round(done[n.host.name] - go, 2) for n in finished],
        **{k: v for k, v in run.extra.items() if k in _EXTRA_FIELDS},
        "verified": True,  # check_files raised otherwise
        "torrent_errors_resumed": errors,
        "rates_mb_s": {
            "origin_up": rates.origin_up / MB,
            "node_up": rates.node_up / MB,
            "node_down": rates.node_down / MB,
        },
        "lab": "netns" if cluster.lab.shaped else "loopback",
        "piece_size": cluster.release.piece_size,
        "cpu": {
            "machine_busy": round(busy / spent, 3) if spent else 0.0,  # share of both cores' time
            "nodes_seconds": round(nodes_cpu, 1),
            "serving_seconds": round(serving_cpu, 1),  # origin and tracker (and a mode's coordinator)
            "others_seconds": round(max(0.0, busy - nodes_cpu - serving_cpu), 1),  # not ours: other work
        },
    }


def _wait_ready(run: Run, nodes: list[NodeProc], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not run.mode.ready(run, nodes):
        for n in nodes:
            if n.proc.poll() is not None or time.monotonic() > deadline:
                err = n.out.with_suffix(".err").read_text(errors="replace")[-2000:]
                raise SystemExit(f"{n.host.name} did not get ready: {n.proc.args!r}\n{err}")
        time.sleep(0.05)


def _node_cpu(n: NodeProc) -> float:
    """User+sys CPU the node spent since it was ready (still running: now; exited: at its done line)."""
    ready, done = n.event("ready") or {}, n.event("done") or {}
    now = _cpu_of(n.proc.pid) if n.proc.poll() is None else float(done.get("cpu", 0.0))
    return max(0.0, now - float(ready.get("cpu", 0.0)))


def _stop(n: NodeProc) -> None:
    if n.proc.poll() is None:
        n.proc.send_signal(signal.SIGTERM)
        try:
            n.proc.wait(10)
        except Exception:
            n.proc.kill()
            n.proc.wait()


# ------------------------------------------------------------------------------------------------ reporting


def print_table(rows: list[dict[str, Any]], skipped: dict[str, str]) -> None:
    if rows:
        r = rows[0]["rates_mb_s"]
        print(
            f"\nlab: {rows[0]['lab']}, "
            f"origin uplink {r['origin_up']:g} MB/s, node links {r['node_up']:g} MB/s up / {r['node_down']:g} MB/s down"
        )
    head = f"{'T s':>8} {'T_min s':>8} {'T/T_min':>8} {'origin/F':>9} {'node s min-max':>15} {'busy':>5}"
    print(f"  {'mode':14} {'N':>3} {'F MB':>5} {head}")
    for row in rows:
        per = row["per_node_seconds"]
        print(
            f"  {_name(row):14} {row['nodes']:3d} {row['size_bytes'] / MB:5.0f} {row['seconds']:8.1f} "
            f"{row['t_min_seconds']:8.1f} "
            f"{row['t_over_t_min']:8.2f} {row['origin_ratio']:9.3f} {min(per):7.1f}-{max(per):<7.1f} "
            f"{_busy(row):>5}"
        )
    for name, why in skipped.items():
        print(f"  {name:14} {why}")


def _busy(row: dict[str, Any]) -> str:
    busy = row.get("cpu", {}).get("machine_busy")
    return "-" if busy is None else f"{busy:.0%}"


def _name(row: dict[str, Any]) -> str:
    return f"{row['mode']}+fault" if row.get("kill_fetcher_at") else str(row["mode"])


def write_chart(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import ScalarFormatter

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name in dict.fromkeys(map(_name, rows)):
        mine = [r for r in rows if _name(r) == name]
        ns = [r["nodes"] for r in mine]
        left.plot(ns, [r["t_over_t_min"] for r in mine], "o-", label=mine[0]["label"])
        right.plot(ns, [r["origin_ratio"] for r in mine], "o-", label=mine[0]["label"])
    bound = sorted({r["nodes"] for r in rows})
    left.axhline(1.0, color="k", linestyle="--", label="T_min (Kumar & Ross)")
    right.axhline(1.0, color="k", linestyle="--", label="each byte once")
    # T / T_min, not seconds: rows of different release sizes (a long mode run smaller) share one chart
    left.set(xlabel="nodes N", ylabel="time until every node has it / T_min", title="time")
    right.set(xlabel="nodes N", ylabel="origin bytes / release size", title="origin traffic")
    for ax in (left, right):
        # log y: http grows with N (N x F from the origin) and would flatten the swarms' lines near the bound
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(ScalarFormatter())
        ax.yaxis.set_minor_formatter(ScalarFormatter())
        ax.tick_params(axis="y", which="minor", labelsize=7)
        ax.set_xticks(bound)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    r = rows[0]["rates_mb_s"]
    sizes = " / ".join(f"{size / MB:.0f}" for size in sorted({row["size_bytes"] for row in rows}, reverse=True))
    fig.suptitle(f"{sizes} MB release, origin {r['origin_up']:g} MB/s, nodes {r['node_up']:g} MB/s ({rows[0]['lab']})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------------------------------- main


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM unwinds like Ctrl-C: servers stopped, namespaces removed


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", default=",".join(map(str, MATRIX_NODES)), help="N, or N1,N2,... (default: 4,8,16)")
    parser.add_argument("--size-mb", type=float, default=1024, help="release size F in MB (default: 1024)")
    parser.add_argument("--mode", default="all", help="swarmhub, http, webseed, all, or a comma list (default: all)")
    parser.add_argument("--kill-fetcher-at", type=float, help="swarmhub: kill one origin fetcher at this share done")
    parser.add_argument(
        "--fault-at", type=float, default=0.3, help="matrix: also swarmhub with a fetcher killed at this share (0: no)"
    )
    parser.add_argument(
        "--swarmhub-node-args",
        default="",
        metavar="ARGS",
        help="swarmhub: more options for node run, e.g. '--origin-after 30'",
    )
    parser.add_argument("--origin-mbps", type=float, default=5, help="origin uplink, MB/s (default: 5)")
    parser.add_argument("--node-mbps", type=float, default=10, help="each node's up and down link, MB/s (default: 10)")
    parser.add_argument("--format", default="hybrid", choices=["hybrid", "v1"], help="torrent (default: hybrid)")
    parser.add_argument("--no-netns", action="store_true", help="loopback addresses, rate limits in the programs")
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "swarmhub-bench-cluster")
    parser.add_argument("--out", type=Path, default=Path("."), help="matrix: folder for cluster.png, cluster.json")
    parser.add_argument("--keep", action="store_true", help="keep each run's files and the logs")
    parser.add_argument("--json", action="store_true", help="print JSON (one object per run, or the matrix's)")
    parser.add_argument(
        "--report", type=Path, nargs="+", metavar="JSON", help="no run: table and chart of earlier runs' JSON output"
    )
    args = parser.parse_args()
    args.node_counts = [int(n) for n in str(args.nodes).split(",")]
    if args.size_mb < 32:
        parser.error("--size-mb must be at least 32 (the release has a 3 MB tokenizer and five large files)")
    known = {m.name for m in MODES} | {"all"}
    if not set(args.mode.split(",")) <= known:
        parser.error(f"--mode: one of {', '.join(sorted(known))}, or a comma list")
    if args.kill_fetcher_at is not None and args.mode != "swarmhub":
        parser.error("--kill-fetcher-at needs --mode swarmhub (only cluster mode has origin fetchers)")
    return args


def report_only(args: argparse.Namespace) -> int:
    """Rows of earlier runs (a matrix's cluster.json or single runs' --json output), in one table and chart."""
    rows: list[dict[str, Any]] = []
    for path in args.report:
        data = json.loads(path.read_text())
        rows += data.get("rows", [data])
    rows.sort(key=lambda r: (r["nodes"], _name(r)))
    return write_outputs(args, {"rows": rows, "skipped": {}, "wall_seconds": None})


def write_outputs(args: argparse.Namespace, report: dict[str, Any]) -> int:
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cluster.json").write_text(json.dumps(report, indent=2) + "\n")
    if report["rows"]:
        write_chart(report["rows"], args.out / "cluster.png")
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_table(report["rows"], report["skipped"])
        wall = f"wall time {report['wall_seconds']:.0f} s; " if report["wall_seconds"] is not None else ""
        print(f"\n{wall}wrote {args.out / 'cluster.json'} and {args.out / 'cluster.png'}")
    return 0


def main() -> int:
    args = parse_args()
    if args.report:
        return report_only(args)
    modes = list(MODES) if args.mode == "all" else [mode_named(m) for m in args.mode.split(",")]
    skipped = {m.name: why for m in modes if (why := m.available()) is not None}
    if len(modes) == 1 and skipped:
        print(f"mode {args.mode}: {skipped[args.mode]}", file=sys.stderr)
        return 2
    if not args.no_netns and (why := netns_available()) is not None:
        print(f"no network namespaces here ({why}): run as root, or with --no-netns", file=sys.stderr)
        return 2
    need = (max(args.node_counts) + 2) * args.size_mb * MB
    if shutil.disk_usage(args.dir.parent if not args.dir.exists() else args.dir).free < need:
        raise SystemExit(f"{args.dir}: the benchmark needs {need / 1e9:.1f} GB free")
    args.dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="work-", dir=args.dir))
    signal.signal(signal.SIGTERM, _interrupted)
    runs = [(m, args.kill_fetcher_at) for m in modes if m.name not in skipped]
    if len(modes) > 1 and "swarmhub" not in skipped and any(m.name == "swarmhub" for m in modes) and args.fault_at:
        runs.append((mode_named("swarmhub"), args.fault_at))  # the matrix's fault run
    rows: list[dict[str, Any]] = []
    failed: dict[str, str] = {}  # a matrix run that failed: its error (the other runs go on)
    started = time.monotonic()
    matrix = len(args.node_counts) * len(runs) > 1
    try:
        with cluster_of(args, max(args.node_counts), work) as cluster:
            for n in args.node_counts:
                for mode, kill in runs:
                    try:
                        row = run_mode(cluster, mode, n, args, kill)
                    except SystemExit as exc:
                        if not matrix:
                            raise
                        name = f"{mode.name}{'+fault' if kill is not None else ''} N={n}"
                        failed[name] = f"failed: {str(exc.code).splitlines()[0][:300]}"
                        print(f"{name}: {exc.code}", file=sys.stderr)
                        continue
                    rows.append(row)
                    print(
                        f"{_name(row):14} N={n:<3} {row['seconds']:7.1f} s  origin/F {row['origin_ratio']:.3f}",
                        file=sys.stderr,
                    )
                    if matrix:  # what is measured is kept, whatever happens to the runs after it
                        args.out.mkdir(parents=True, exist_ok=True)
                        partial = {"rows": rows, "skipped": {**skipped, **failed}, "wall_seconds": None}
                        (args.out / "cluster.json").write_text(json.dumps(partial, indent=2) + "\n")
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept {work}", file=sys.stderr)
    wall = round(time.monotonic() - started, 1)
    single = len(rows) == 1 and len(runs) == 1
    if single:
        print(json.dumps(rows[0], indent=2) if args.json else "", end="\n" if args.json else "")
        if not args.json:
            print_table(rows, skipped)
        return 0
    return write_outputs(args, {"rows": rows, "skipped": {**skipped, **failed}, "wall_seconds": wall})


if __name__ == "__main__":
    raise SystemExit(main())
