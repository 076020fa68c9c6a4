"""Benchmark: ``hf_hub_download`` of a ~2 GB file through the node (bytes from a peer), and straight from the origin.

The release: one big LFS file and a ``config.json``, served by ``swarmhub devhub serve`` as the origin with the LFS
bytes from nginx as the Hub's CDN when it is installed (as bench/pull.py). One peer holds it: ``swarmhub seed``
over a cache filled once by ``swarmhub pull`` from the origin. Two contenders, interleaved round by round with the
order rotated after an untimed warm-up round (this machine is shared and noisy, so paired ratios from one run
mean more than absolute MB/s):

- ``direct``   ``hf_hub_download`` with ``HF_ENDPOINT`` at the origin (HEAD to devhub, GET redirected to nginx)
- ``node``     ``hf_hub_download`` with ``HF_ENDPOINT`` at ``swarmhub node run``, started for the round with an
               empty cache and the release's torrent in its store: every byte comes from the peer while the node
               pulls it (the node's origin grace is its default, and the bytes it took from the origin are counted)

Each download is its own process with its own empty cache, HF_HUB_DISABLE_XET=1; its file is checked against
the release's SHA-256. Before each download, ``--probes`` probe processes (httpx) measure, each on a fresh node of
its own for the node contender, what a reader waits for: the HEAD, the first body byte of a GET of the whole file
(the node has nothing yet: the GET starts the pull), and the first byte of a ``Range`` read from the middle of the
file while the pull is under way (a seek). ``--libtorrent`` passes settings to the node (SWARMHUB_LIBTORRENT).

Reported per contender (medians): first-byte times, MB/s of the ``hf_hub_download`` call and the wall time of
its process, user+sys CPU of the client, of the node, and of the serving side (seeder, origin, CDN) meanwhile,
on the same two cores.

Targets (2 cores): first byte through the node < 1 s while the release is still downloading;
node >= 0.9x direct (MB/s).

    python bench/endpoint.py [--size-mb 2000] [--rounds 3] [--warmup 1] [--probes 3] [--libtorrent JSON] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psutil

from create import start_cdn  # bench/create.py: nginx as the CDN
from pull import (
    SWARMHUB,
    Sample,
    Servers,
    _stop_group,
    clean_env,
    first_json,
    measure,
    run_bench,
    sha256_of,
    url_in,
    wait_for,
)

REPO_ID = "bench/endpoint"
BIG = "model.safetensors"
DIRECT, NODE = "direct", "node"
HF_ENV = {"HF_HUB_DISABLE_XET": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
# HF_ENDPOINT as a user sets it; the time of the call alone (the imports take a second of the process's wall).
DOWNLOAD_SCRIPT = """
import json, sys, time
from huggingface_hub import hf_hub_download
start = time.perf_counter()
path = hf_hub_download(sys.argv[1], sys.argv[2], cache_dir=sys.argv[3])
print(json.dumps({"path": path, "seconds": time.perf_counter() - start}))
"""
# What a reader waits for: the HEAD huggingface_hub sends first, then the first body byte of a GET of the whole
# file and of a read from its middle (each stream closed after its first chunk). Redirects followed (the origin
# sends LFS files to the CDN).
PROBE_SCRIPT = """
import json, sys, time
import httpx
url, middle = sys.argv[1], int(sys.argv[2])
out = {}
with httpx.Client(follow_redirects=True, timeout=60) as client:
    start = time.perf_counter()
    head = client.head(url, follow_redirects=False)
    if head.status_code >= 400:
        head.raise_for_status()
    out["head_s"] = time.perf_counter() - start
    for name, headers in (("first_byte_s", {}), ("seek_first_byte_s", {"Range": f"bytes={middle}-"})):
        start = time.perf_counter()
        with client.stream("GET", url, headers=headers) as response:
            response.raise_for_status()
            next(response.iter_raw())
            out[name] = time.perf_counter() - start
print(json.dumps(out))
"""


# ----------------------------------------------------------------------------------------------- the setup


def make_release(root: Path, total: int) -> Path:
    """models/bench/endpoint: one big LFS file of random bytes and a config.json."""
    repo = root / "models" / REPO_ID
    repo.mkdir(parents=True)
    (repo / ".gitattributes").write_text("*.safetensors filter=lfs diff=lfs merge=lfs -text\n")
    (repo / "config.json").write_text(json.dumps({"model_type": "bench", "hidden_size": 4096}) + "\n")
    with (repo / BIG).open("wb") as f:
        left = total
        while left:
            n = min(left, 16 << 20)
            f.write(os.urandom(n))
            left -= n
    return repo


@dataclass(frozen=True)
class Site:
    endpoint: str  # the origin's
    cdn_url: str | None
    seeder_port: int
    torrent: Path  # the release's torrent as the seeder's store keeps it
    commit: str
    fill_seconds: float


def start_servers(work: Path, servers: Servers, repo: Path) -> Site:
    """CDN (nginx, when installed) and origin; the torrent; the seeder's cache filled from the origin, seeded."""
    cdn, cdn_url = start_cdn(work, repo)
    servers.adopt(cdn)
    origin_cmd = [*SWARMHUB, "devhub", "serve", str(work / "root"), "--port", "0"]
    origin, out = servers.start("origin", origin_cmd + (["--cdn-url", cdn_url] if cdn_url else []), clean_env())
    endpoint = wait_for(origin, out, url_in(r"at (http://127\.0\.0\.1:\d+)"))
    torrent = work / "release.torrent"
    create = [*SWARMHUB, "create", REPO_ID, "--endpoint", endpoint, "-o", str(torrent), "--json"]
    done = subprocess.run(create, capture_output=True, text=True, env=clean_env())
    if done.returncode != 0:
        raise SystemExit(f"create failed:\n{done.stderr[-2000:]}")
    commit = json.loads(done.stdout)["commit"]
    cache = work / "seeder" / "hub"
    fill = [*SWARMHUB, "pull", REPO_ID, "--torrent", str(torrent), "--endpoint", endpoint]
    filled = measure([*fill, "--cache-dir", str(cache), "--origin-after", "0", "--json"], clean_env(), servers.logs,
                     servers, timeout=3600)  # fmt: skip
    proc, out = servers.start("seeder", [*SWARMHUB, "seed", "--cache-dir", str(cache), "--listen", "127.0.0.1:0",
                                         "--json"], clean_env())  # fmt: skip
    ready = wait_for(proc, out, first_json, timeout=120)
    if ready["seeding"] != 1:
        raise SystemExit(f"the seeder seeds {ready['seeding']} torrents, expected 1: {ready}")
    (stored,) = (work / "seeder" / "swarmhub" / "torrents").glob("*.torrent")
    return Site(endpoint, cdn_url, int(ready["port"]), stored, commit, filled.seconds)


class FreshNode:
    """``swarmhub node run`` with an empty cache whose store holds the release's torrent (as after a registry
    lookup), the seeder as its peer; stopped and its folder removed on the way out."""

    def __init__(self, work: Path, servers: Servers, site: Site, libtorrent: str | None) -> None:
        self.folder = work / "node"
        self.servers = servers
        self.site = site
        self.env = clean_env(**({"SWARMHUB_LIBTORRENT": libtorrent} if libtorrent else {}))

    def __enter__(self) -> FreshNode:
        shutil.rmtree(self.folder, ignore_errors=True)
        (self.folder / "swarmhub" / "torrents").mkdir(parents=True)
        shutil.copy(self.site.torrent, self.folder / "swarmhub" / "torrents" / self.site.torrent.name)
        cmd = [*SWARMHUB, "node", "run", "--port", "0", "--json", "--cache-dir", str(self.folder / "hub")]
        cmd += ["--upstream", self.site.endpoint, "--peer", f"127.0.0.1:{self.site.seeder_port}"]
        self.proc, out = self.servers.start("node", [*cmd, "--listen", "127.0.0.1:0"], self.env)
        self.url: str = wait_for(self.proc, out, first_json, timeout=60)["url"]
        return self

    def cpu_seconds(self) -> float:
        times = psutil.Process(self.proc.pid).cpu_times()
        return float(times.user + times.system)

    def stats(self) -> dict[str, int]:
        with urllib.request.urlopen(f"{self.url}/status", timeout=30) as answer:
            stats: dict[str, int] = json.load(answer)["stats"]
        return stats

    def __exit__(self, *exc: object) -> None:
        _stop_group(self.proc, grace=30)  # a node lands what it holds before it stops: not timed
        self.servers.procs.remove(self.proc)
        shutil.rmtree(self.folder, ignore_errors=True)


# -------------------------------------------------------------------------------------------------- the run


@dataclass(frozen=True)
class Run:
    probes: list[dict[str, float]]  # head_s, first_byte_s, seek_first_byte_s of each probe
    download_seconds: float  # the hf_hub_download call
    sample: Sample  # its process (wall, CPU), and the machine meanwhile
    node_cpu_seconds: float  # the node's CPU during the download (0 for direct)
    origin_bytes: int  # what the node took from the origin (0 for direct)


def probe(url: str, middle: int, logs: Path) -> dict[str, float]:
    done = subprocess.run([sys.executable, "-c", PROBE_SCRIPT, url, str(middle)], capture_output=True, text=True,
                          env=clean_env(), timeout=300)  # fmt: skip
    if done.returncode != 0:
        (logs / "probe.err").write_text(done.stderr)
        raise SystemExit(f"probe of {url} failed:\n{done.stderr[-3000:]}")
    result: dict[str, float] = json.loads(done.stdout)
    return result


def download(endpoint: str, out: Path, servers: Servers, expected: str, timeout: float) -> tuple[float, Sample]:
    """hf_hub_download of the big file into an empty cache at ``out``; checked against the release's SHA-256."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    os.sync()  # nobody starts while the kernel still writes back someone else's bytes
    cmd = [sys.executable, "-c", DOWNLOAD_SCRIPT, REPO_ID, BIG, str(out)]
    sample = measure(cmd, clean_env(HF_ENDPOINT=endpoint, **HF_ENV), servers.logs, servers, timeout)
    result = json.loads(sample.stdout.strip().splitlines()[-1])
    if sha256_of(Path(result["path"])) != expected:
        raise SystemExit(f"{result['path']}: content differs from the release")
    shutil.rmtree(out)
    return float(result["seconds"]), sample


@dataclass(frozen=True)
class Setup:
    work: Path
    servers: Servers
    site: Site
    size: int
    expected: str  # the big file's SHA-256
    timeout: float
    libtorrent: str | None  # SWARMHUB_LIBTORRENT for the node
    probes: int  # per round and contender


def run_direct(b: Setup) -> Run:
    url = f"{b.site.endpoint}/{REPO_ID}/resolve/main/{quote(BIG)}"
    first = [probe(url, b.size // 2, b.servers.logs) for _ in range(b.probes)]
    seconds, sample = download(b.site.endpoint, b.work / "client", b.servers, b.expected, b.timeout)
    return Run(first, seconds, sample, 0.0, 0)


def run_node(b: Setup) -> Run:
    first = []
    for _ in range(b.probes):
        with FreshNode(b.work, b.servers, b.site, b.libtorrent) as node:  # a node of its own: its GET starts the pull
            first.append(probe(f"{node.url}/{REPO_ID}/resolve/main/{quote(BIG)}", b.size // 2, b.servers.logs))
    with FreshNode(b.work, b.servers, b.site, b.libtorrent) as node:
        before = node.cpu_seconds()
        seconds, sample = download(node.url, b.work / "client", b.servers, b.expected, b.timeout)
        cpu = node.cpu_seconds() - before
        origin = node.stats()["origin_bytes"]
    return Run(first, seconds, sample, cpu, origin)


CONTENDERS: dict[str, Callable[[Setup], Run]] = {DIRECT: run_direct, NODE: run_node}


def run_rounds(b: Setup, rounds: int, warmup: int) -> dict[str, list[Run]]:
    results: dict[str, list[Run]] = {name: [] for name in CONTENDERS}
    names = list(CONTENDERS)
    for round_no in range(warmup + rounds):
        label = f"round {round_no - warmup + 1}" if round_no >= warmup else "warm-up"
        turn = round_no % len(names)  # rotated: nobody always runs first
        for name in names[turn:] + names[:turn]:
            run = CONTENDERS[name](b)
            if round_no >= warmup:
                results[name].append(run)
            print(f"{label}: {name:6} {_line(run, b.size)}", file=sys.stderr)
    return results


def _line(run: Run, size: int) -> str:
    s = run.sample

    def ms(key: str) -> str:
        return "/".join(f"{p[key] * 1e3:.0f}" for p in run.probes)

    return (
        f"HEAD {ms('head_s')} ms  first byte {ms('first_byte_s')} ms  seek {ms('seek_first_byte_s')} ms  |  "
        f"{size / run.download_seconds / 1e6:5.0f} MB/s ({run.download_seconds:5.2f} s, process {s.seconds:5.2f} s)  "
        f"client CPU {s.cpu_seconds:4.1f} s  node CPU {run.node_cpu_seconds:4.1f} s  "
        f"serving CPU {s.serving_cpu_seconds - run.node_cpu_seconds:4.1f} s  origin {run.origin_bytes >> 20} MiB  "
        f"machine busy {s.busy:4.0%}, others {s.others_cpu_seconds:4.1f} s"
    )


# --------------------------------------------------------------------------------------------- the report


def summarize(results: dict[str, list[Run]], size: int) -> dict[str, Any]:
    def speed(r: Run) -> float:
        return size / r.download_seconds / 1e6

    def median(get: Callable[[Run], float], digits: int = 3) -> dict[str, float]:
        return {k: round(statistics.median(map(get, v)), digits) for k, v in results.items()}

    paired = statistics.median(speed(n) / speed(d) for n, d in zip(results[NODE], results[DIRECT], strict=True))

    def probes(key: str, pick: Callable[[list[float]], float] = statistics.median) -> dict[str, float]:
        return {k: round(pick([p[key] for r in v for p in r.probes]), 3) for k, v in results.items()}

    first_byte = probes("first_byte_s")
    origin = max(r.origin_bytes for r in results[NODE])
    return {
        "bytes": size,
        "rounds": len(results[NODE]),
        "probes": len(results[NODE]) * len(results[NODE][0].probes),
        "head_s": probes("head_s"),
        "first_byte_s": first_byte,
        "first_byte_worst_s": probes("first_byte_s", max),
        "seek_first_byte_s": probes("seek_first_byte_s"),
        "mb_per_s": median(speed, 1),
        "download_seconds": median(lambda r: r.download_seconds, 2),
        "process_seconds": median(lambda r: r.sample.seconds, 2),
        "client_cpu_seconds": median(lambda r: r.sample.cpu_seconds, 2),
        "node_cpu_seconds": median(lambda r: r.node_cpu_seconds, 2),
        "serving_cpu_seconds": median(lambda r: r.sample.serving_cpu_seconds - r.node_cpu_seconds, 2),
        "node_origin_bytes_max": origin,
        "ratios": {"node / direct (MB/s)": round(paired, 3)},
        "targets": {
            "first byte through the node < 1 s": first_byte[NODE] < 1.0,
            "node >= 0.9x direct": paired >= 0.9,
            "node's bytes all from the peer": origin == 0,
        },
        "runs": {k: [{**asdict(r), "sample": {**asdict(r.sample), "stdout": None}} for r in v]
                 for k, v in results.items()},
    }  # fmt: skip


def print_report(report: dict[str, Any]) -> None:
    print(
        f"\n{report['bytes'] / 1e9:.2f} GB file (+ config.json), one seeder on loopback, CDN: {report['cdn']}; "
        f"medians of {report['rounds']} interleaved rounds after {report['warmup_rounds']} warm-up, order rotated, "
        f"{report['probes']} first-byte probes (ratio: median of per-round ratios); node's event loop: "
        f"{report['node_loop']}, HTTP: {report['node_http']}"
        + (f", libtorrent settings {report['node_libtorrent']}" if report["node_libtorrent"] else "")
    )
    print(
        f"  {'contender':10} {'HEAD ms':>8} {'1st byte ms':>12} {'(worst)':>8} {'seek ms':>8} {'MB/s':>6} "
        f"{'call s':>7} {'process s':>10} {'client CPU s':>13} {'node CPU s':>11} {'serving CPU s':>14}"
    )
    for name in report["mb_per_s"]:
        print(
            f"  {name:10} {report['head_s'][name] * 1e3:8.0f} {report['first_byte_s'][name] * 1e3:12.0f} "
            f"{report['first_byte_worst_s'][name] * 1e3:8.0f} {report['seek_first_byte_s'][name] * 1e3:8.0f} "
            f"{report['mb_per_s'][name]:6.0f} {report['download_seconds'][name]:7.2f} "
            f"{report['process_seconds'][name]:10.2f} {report['client_cpu_seconds'][name]:13.1f} "
            f"{report['node_cpu_seconds'][name]:11.1f} {report['serving_cpu_seconds'][name]:14.1f}"
        )
    print(f"  (seeder fill, swarmhub pull from the origin only: {report['seeder_fill_mb_per_s']:.0f} MB/s, once)")
    for name, value in report["ratios"].items():
        print(f"  {name:24} {value:.2f}x")
    for name, ok in report["targets"].items():
        print(f"  [{'PASS' if ok else 'FAIL'}] {name}")


def _module(*names: str) -> str:
    """The first of ``names`` this interpreter can import (what uvicorn's "auto" picks), else the last."""
    import importlib.util

    return next((n for n in names if importlib.util.find_spec(n) is not None), names[-1])


def bench(args: argparse.Namespace, work: Path, servers: Servers) -> dict[str, Any]:
    started = time.monotonic()
    size = int(args.size_mb * 1e6)
    repo = make_release(work / "root", size)
    expected = sha256_of(repo / BIG)  # also warms the page cache
    site = start_servers(work, servers, repo)
    print(f"release: {size / 1e9:.2f} GB + config.json, commit {site.commit[:12]}", file=sys.stderr)
    setup = Setup(work, servers, site, size, expected, 120 + 300 * size / 1e9, args.libtorrent, args.probes)
    report = summarize(run_rounds(setup, args.rounds, args.warmup), size)
    report |= {
        "warmup_rounds": args.warmup,
        "cdn": "nginx (sendfile)" if site.cdn_url else "devhub's Python CDN (nginx not installed)",
        "seeder_fill_mb_per_s": round(size / site.fill_seconds / 1e6, 1),
        "node_loop": _module("uvloop", "asyncio"),
        "node_http": _module("httptools", "h11"),
        "node_libtorrent": args.libtorrent,
        "bench_seconds": round(time.monotonic() - started, 1),  # the servers' teardown not included
    }
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=float, default=2000.0, help="size of the big file (default: 2000)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (default: 3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default: 1)")
    parser.add_argument("--probes", type=int, default=3, help="first-byte probes per round and contender (default: 3)")
    parser.add_argument("--libtorrent", metavar="JSON", help="libtorrent settings for the node (SWARMHUB_LIBTORRENT)")
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()), help="where to work (a new folder)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (release, torrent, logs)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    free, needed = shutil.disk_usage(args.dir).free, 4.5 * args.size_mb * 1e6  # release, seeder, node, client
    if free < needed:
        raise SystemExit(f"{args.dir}: {free / 1e9:.1f} GB free, the benchmark needs {needed / 1e9:.1f} GB")
    work = Path(tempfile.mkdtemp(prefix="swarmhub-bench-endpoint-", dir=args.dir))
    return run_bench(args, work, bench, print_report)


if __name__ == "__main__":
    raise SystemExit(main())
