"""Benchmark: one client downloading a ~2 GB release through the web-seed gateway, and straight from the origin.

The setup of bench/pull.py: the synthetic release of bench/create.py, served by ``swarmhub devhub serve`` as the
origin (relative 307 for regular files, 302 to the CDN for LFS ones) with the LFS bytes from nginx as the Hub's
CDN when it is installed; the gateway runs in a process of its own on uvicorn, as the registry serves it,
knowing the release's classic (v1) torrent. Each contender is its own process writing into an empty folder,
interleaved round by round with the order rotated after an untimed warm-up round (this machine is shared and
noisy, so paired ratios from one run mean more than absolute MB/s):

- ``curl direct``        every file of the release from its ``resolve`` URL, following the redirects, one
                         connection at a time (one curl process, connections kept alive)
- ``curl via gateway``   the same curl, every file from its web-seed URL (``url-list`` + name + path)
- ``aria2c web seed``    aria2c with the v1 torrent and no peer at all: the gateway is its only source, asked
                         the ranges a BitTorrent client asks (informative: not part of the target)

Every contender's files are checked against the release's SHA-256s. Reported per contender: MB/s (median),
user+sys CPU of the client, and what the gateway and the serving side (origin, CDN, gateway) spent meanwhile.

Target (2 cores): curl via gateway >= 0.8x curl direct.

    python bench/gateway.py [--size-gb 2] [--rounds 3] [--warmup 1] [--chunk-mib 8] [--window 2] [--dir DIR] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psutil

from create import REPO_ID, make_release, start_cdn  # bench/create.py: the same synthetic release
from pull import (
    SWARMHUB,
    Sample,
    Servers,
    check_files,
    check_room,
    clean_env,
    measure,
    run_bench,
    sha256_of,
    url_in,
    wait_for,
)

DIRECT, GATEWAY, ARIA2 = "curl direct", "curl via gateway", "aria2c web seed"
# The gateway as the registry runs it (uvicorn in a thread, default settings), with the release's torrents
# from a folder as its catalog.
GATEWAY_SCRIPT = """
import sys
from functools import cache
from pathlib import Path
from swarmhub.bt.metainfo import parse_torrent
from swarmhub.gateway import Gateway
from swarmhub.origin.client import OriginClient
from swarmhub.serving import UvicornThread, bind, run_until_interrupted

endpoint, folder, chunk, window = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])

@cache
def lookup(repo_type, repo_id, commit):
    for path in sorted(folder.glob("*.torrent")):
        torrent = parse_torrent(path.read_bytes())
        if torrent.repo and (torrent.repo.repo_type, torrent.repo.repo_id, torrent.repo.commit) == (
            repo_type, repo_id, commit
        ):
            return torrent
    return None

gateway = Gateway(lookup, OriginClient(endpoint), chunk_size=chunk, window=window)
sock = bind("127.0.0.1", 0)
server = UvicornThread("gateway", [gateway.app()], [sock])
print(f"gateway at http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
run_until_interrupted(server)
"""
ARIA2_OPTIONS = [
    "--no-conf",
    "--seed-time=0",
    "--enable-dht=false",
    "--enable-dht6=false",
    "--bt-enable-lpd=false",
    "--enable-peer-exchange=false",
    "--check-integrity=false",
    "--file-allocation=none",
    "--bt-stop-timeout=600",
    "--bt-save-metadata=false",
    "--summary-interval=0",
    "--console-log-level=warn",
    "--show-console-readout=false",
]


@dataclass(frozen=True)
class Contender:
    name: str
    command: Callable[[Path], list[str]]  # given its empty output folder
    files: Callable[[Path], Path]  # output folder -> the folder holding the release's files


def _curl(pairs: list[tuple[str, str]]) -> Callable[[Path], list[str]]:
    """One curl for every file: it keeps its connections alive from one URL to the next."""

    def command(out: Path) -> list[str]:
        cmd = ["curl", "--silent", "--show-error", "--fail", "--location", "--create-dirs"]
        for path, url in pairs:
            cmd += ["--output", str(out / path), url]
        return cmd

    return command


def contenders(release: dict[str, Any], endpoint: str, webseed: str, torrent: Path) -> list[Contender]:
    paths = [f["path"] for f in release["files"]]
    resolve = f"{endpoint}/{REPO_ID}/resolve/{release['commit']}/"
    direct = [(p, resolve + quote(p)) for p in paths]
    via = [(p, f"{webseed}{quote(release['name'])}/{quote(p)}") for p in paths]
    return [
        Contender(DIRECT, _curl(direct), lambda out: out),
        Contender(GATEWAY, _curl(via), lambda out: out),
        Contender(
            ARIA2,
            lambda out: ["aria2c", f"--dir={out}", *ARIA2_OPTIONS, str(torrent)],
            lambda out: out / release["name"],
        ),
    ]


# ----------------------------------------------------------------------------------------------- the setup


@dataclass(frozen=True)
class Site:
    endpoint: str  # the origin's
    gateway_url: str
    gateway: subprocess.Popen[bytes]
    cdn_url: str | None


def start_servers(work: Path, servers: Servers, repo: Path, args: argparse.Namespace) -> Site:
    """CDN (nginx, when installed), origin, gateway."""
    cdn, cdn_url = start_cdn(work, repo)
    servers.adopt(cdn)
    origin_cmd = [*SWARMHUB, "devhub", "serve", str(work / "root"), "--port", "0"]
    origin, out = servers.start("origin", origin_cmd + (["--cdn-url", cdn_url] if cdn_url else []), clean_env())
    endpoint = wait_for(origin, out, url_in(r"at (http://127\.0\.0\.1:\d+)"))
    (work / "torrents").mkdir(exist_ok=True)
    chunk, window = str(int(args.chunk_mib * (1 << 20))), str(args.window)
    gateway_cmd = [sys.executable, "-c", GATEWAY_SCRIPT, endpoint, str(work / "torrents"), chunk, window]
    gateway, out = servers.start("gateway", gateway_cmd, clean_env())
    gateway_url = wait_for(gateway, out, url_in(r"gateway at (http://127\.0\.0\.1:\d+)"))
    return Site(endpoint, gateway_url, gateway, cdn_url)


def create_torrent(work: Path, repo: Path, endpoint: str, gateway_url: str) -> tuple[Path, dict[str, Any], str]:
    """The classic torrent with the gateway's web seed (the commit first: the web-seed URL names it)."""
    with urllib.request.urlopen(f"{endpoint}/api/models/{REPO_ID}/revision/main") as answer:
        commit = json.load(answer)["sha"]
    webseed = f"{gateway_url}/webseed/model/{REPO_ID}/{commit}/"
    path = work / "torrents" / "v1.torrent"
    cmd = [*SWARMHUB, "create", REPO_ID, "--from-dir", str(repo), "--revision", commit, "--format", "v1"]
    done = subprocess.run(
        [*cmd, "--webseed", webseed, "-o", str(path), "--json"], capture_output=True, text=True, env=clean_env()
    )
    if done.returncode != 0:
        raise SystemExit(f"create failed:\n{done.stderr[-2000:]}")
    return path, json.loads(done.stdout), webseed


# -------------------------------------------------------------------------------------------------- the run


@dataclass(frozen=True)
class Run:
    sample: Sample
    gateway_cpu_seconds: float


def _cpu(proc: subprocess.Popen[bytes]) -> float:
    times = psutil.Process(proc.pid).cpu_times()
    return float(times.user + times.system)


def run_rounds(
    work: Path,
    servers: Servers,
    gateway: subprocess.Popen[bytes],
    field: list[Contender],
    expected: dict[str, str],
    args: argparse.Namespace,
) -> dict[str, list[Run]]:
    results: dict[str, list[Run]] = {c.name: [] for c in field}
    timeout = 120 + 300 * args.size_gb
    for round_no in range(args.warmup + args.rounds):
        label = f"round {round_no - args.warmup + 1}" if round_no >= args.warmup else "warm-up"
        turn = round_no % len(field)  # rotated: nobody always runs first or after the slowest
        for contender in field[turn:] + field[:turn]:
            out = work / "runs" / re.sub(r"\W+", "-", contender.name)
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir(parents=True)
            os.sync()  # nobody starts while the kernel still writes back someone else's bytes
            before = _cpu(gateway)
            sample = measure(contender.command(out), clean_env(), servers.logs, servers, timeout)
            run = Run(sample, _cpu(gateway) - before)
            check_files(contender.files(out), expected)
            shutil.rmtree(out)
            if round_no >= args.warmup:
                results[contender.name].append(run)
            print(f"{label}: {contender.name:18} {_line(run)}", file=sys.stderr)
    return results


def _line(run: Run) -> str:
    s = run.sample
    return (
        f"{s.seconds:6.2f} s  client CPU {s.cpu_seconds:5.1f} s  gateway CPU {run.gateway_cpu_seconds:5.1f} s  "
        f"serving CPU {s.serving_cpu_seconds:5.1f} s  machine busy {s.busy:4.0%}, others {s.others_cpu_seconds:4.1f} s"
    )


def summarize(results: dict[str, list[Run]], size: int) -> dict[str, Any]:
    def speed(r: Run) -> float:
        return size / r.sample.seconds / 1e6

    def paired(a: str, b: str) -> float:
        return round(statistics.median(speed(x) / speed(y) for x, y in zip(results[a], results[b], strict=True)), 3)

    def median(get: Callable[[Run], float]) -> dict[str, float]:
        return {k: round(statistics.median(map(get, v)), 2) for k, v in results.items()}

    ratios = {f"{a} / {DIRECT}": paired(a, DIRECT) for a in (GATEWAY, ARIA2) if a in results}
    return {
        "bytes": size,
        "rounds": len(results[DIRECT]),
        "mb_per_s": {k: round(statistics.median(map(speed, v)), 1) for k, v in results.items()},
        "client_cpu_seconds": median(lambda r: r.sample.cpu_seconds),
        "gateway_cpu_seconds": median(lambda r: r.gateway_cpu_seconds),
        "serving_cpu_seconds": median(lambda r: r.sample.serving_cpu_seconds),
        "ratios": ratios,
        "targets": {"gateway >= 0.8x direct": ratios[f"{GATEWAY} / {DIRECT}"] >= 0.8},
        "runs": {k: [{**asdict(r.sample), "stdout": None, "gateway_cpu_seconds": r.gateway_cpu_seconds} for r in v]
                 for k, v in results.items()},
    }  # fmt: skip


def print_report(report: dict[str, Any]) -> None:
    print(
        f"\n{report['bytes'] / 1e9:.2f} GB in {report['files']} files, CDN: {report['cdn']}, gateway chunks "
        f"{report['chunk_mib']:g} MiB x {report['window']} in flight; medians of {report['rounds']} interleaved "
        f"rounds after {report['warmup_rounds']} warm-up, order rotated (ratios: median of per-round ratios)"
    )
    print(f"  {'contender':18} {'MB/s':>7} {'client CPU s':>13} {'gateway CPU s':>14} {'serving CPU s':>14}")
    for name, mb_s in report["mb_per_s"].items():
        print(
            f"  {name:18} {mb_s:7.0f} {report['client_cpu_seconds'][name]:13.1f} "
            f"{report['gateway_cpu_seconds'][name]:14.1f} {report['serving_cpu_seconds'][name]:14.1f}"
        )
    for name, value in report["ratios"].items():
        print(f"  {name:32} {value:.2f}x")
    for name, ok in report["targets"].items():
        print(f"  [{'PASS' if ok else 'FAIL'}] {name}")


def bench(args: argparse.Namespace, work: Path, servers: Servers) -> dict[str, Any]:
    repo = make_release(work / "root", int(args.size_gb * 1e9))
    site = start_servers(work, servers, repo, args)
    torrent, release, webseed = create_torrent(work, repo, site.endpoint, site.gateway_url)
    expected = {f["path"]: sha256_of(repo / f["path"]) for f in release["files"]}  # also warms the page cache
    size = int(release["total_size"])
    print(f"release: {size / 1e9:.2f} GB, {len(expected)} files, commit {release['commit'][:12]}", file=sys.stderr)
    field = contenders(release, site.endpoint, webseed, torrent)
    if args.no_aria2:
        field = [c for c in field if c.name != ARIA2]
    report = summarize(run_rounds(work, servers, site.gateway, field, expected, args), size)
    report |= {
        "files": len(expected),
        "warmup_rounds": args.warmup,
        "chunk_mib": args.chunk_mib,
        "window": args.window,
        "cdn": "nginx (sendfile)" if site.cdn_url else "devhub's Python CDN (nginx not installed)",
    }
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-gb", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (default: 3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default: 1)")
    parser.add_argument("--chunk-mib", type=float, default=8.0, help="the gateway's upstream chunk (default: 8)")
    parser.add_argument("--window", type=int, default=2, help="the gateway's chunks in flight (default: 2)")
    parser.add_argument("--no-aria2", action="store_true", help="curl only")
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()), help="where to work (a new folder)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (release, torrent, logs)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    for tool in ("curl", *(() if args.no_aria2 else ("aria2c",))):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed")
    check_room(args.dir, int(args.size_gb * 1e9))
    work = Path(tempfile.mkdtemp(prefix="swarmhub-bench-gateway-", dir=args.dir))
    return run_bench(args, work, bench, print_report)


if __name__ == "__main__":
    raise SystemExit(main())
