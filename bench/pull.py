"""Benchmark: pulling a ~2 GB release from one seeder on loopback, side by side with the alternatives.

One seeder (``swarmhub seed``, filled from the origin first) and one downloader at a time, each contender its
own process writing into an empty folder, interleaved round by round with the order rotated after an
untimed warm-up round (this machine is shared and noisy, so paired ratios from one run mean more than
absolute MB/s):

- ``swarmhub pull`` (hybrid)   the default torrent, peers only (``--no-origin --peer SEEDER``)
- ``swarmhub pull`` (v1)       the same, with the v1 torrent aria2 gets
- ``aria2c``                   the v1 torrent, finding the seeder through ``swarmhub tracker serve``
- ``snapshot_download``        huggingface_hub from the local origin (``swarmhub devhub serve``, LFS bytes from
                               nginx as the Hub's CDN when it is installed), HF_HUB_DISABLE_XET=1, 8 workers

Every contender's files are checked against the release's SHA-256s. Reported per contender: MB/s (median),
user+sys CPU seconds and peak RSS of the downloader, and the CPU the serving side (seeder, origin, CDN,
tracker) spent meanwhile, on the same two cores.

Targets (2 cores): swarmhub >= 1.0x the best alternative, >= 200 MB/s, peak RSS < 300 MB.

    python bench/pull.py [--size-gb 2] [--rounds 3] [--warmup 1] [--dir DIR] [--keep] [--json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

import psutil

from create import REPO_ID, make_release, start_cdn  # bench/create.py: the same synthetic release

T = TypeVar("T")
SWARMHUB = [sys.executable, "-m", "swarmhub"]
HYBRID, V1, ARIA2, HF = "swarmhub pull (hybrid)", "swarmhub pull (v1)", "aria2c (v1)", "snapshot_download"
ALTERNATIVES = (ARIA2, HF)
HF_SCRIPT = """
import sys
from huggingface_hub import snapshot_download
print(snapshot_download(sys.argv[1], cache_dir=sys.argv[2], endpoint=sys.argv[3]))
"""
# aria2 as a fast client would be set up on loopback: nothing but the tracker to find peers (no DHT, LPD,
# PEX), no speed limits, no pre-allocation, exit as soon as the download is complete. Its disk cache
# (default 16 MiB; 0, 128M) and --enable-mmap made no difference here: it is bound by its one thread.
ARIA2_OPTIONS = [
    "--no-conf",
    "--seed-time=0",
    "--enable-dht=false",
    "--enable-dht6=false",
    "--bt-enable-lpd=false",
    "--enable-peer-exchange=false",
    "--check-integrity=false",
    "--file-allocation=none",
    "--bt-max-peers=0",
    "--bt-request-peer-speed-limit=0",
    "--max-overall-download-limit=0",
    "--max-download-limit=0",
    "--bt-stop-timeout=120",
    "--bt-save-metadata=false",
    "--summary-interval=0",
    "--console-log-level=warn",
    "--show-console-readout=false",
]


# ------------------------------------------------------------------------------------------------ processes


class Servers:
    """The long-running processes of the benchmark, each in its own process group, stopped on the way out."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        logs.mkdir(parents=True, exist_ok=True)
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, cmd: list[str], env: dict[str, str]) -> tuple[subprocess.Popen[bytes], Path]:
        """Output goes to files, never to a pipe nobody reads (a chatty server would block on a full one)."""
        out = self.logs / f"{name}.out"
        with out.open("wb") as stdout, (self.logs / f"{name}.err").open("wb") as stderr:
            proc = subprocess.Popen(cmd, stdout=stdout, stderr=stderr, env=env, start_new_session=True)
        self.procs.append(proc)
        return proc, out

    def adopt(self, proc: subprocess.Popen[bytes] | None) -> None:
        if proc is not None:
            self.procs.append(proc)

    def cpu_seconds(self) -> float:
        """User+sys CPU of every server and its children so far (nginx works in a child of its master)."""
        total = 0.0
        for proc in self.procs:
            try:
                parent = psutil.Process(proc.pid)
                for p in [parent, *parent.children(recursive=True)]:
                    t = p.cpu_times()
                    total += t.user + t.system
            except psutil.Error:
                continue
        return total

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            _stop_group(proc)


def _stop_group(proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    if proc.returncode is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        proc.wait()


def wait_for(proc: subprocess.Popen[bytes], out: Path, ready: Callable[[str], T | None], timeout: float = 60) -> T:
    """What ``ready`` finds in what ``proc`` printed so far (its ready line), or exit with its stderr."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = ready(out.read_text(errors="replace"))
        if found is not None:
            return found
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    err = out.with_suffix(".err").read_text(errors="replace")[-2000:]
    raise SystemExit(f"not ready: {proc.args!r}\n{err}")


def url_in(pattern: str) -> Callable[[str], str | None]:
    def find(text: str) -> str | None:
        match = re.search(pattern, text)
        return match.group(1) if match else None

    return find


def first_json(text: str) -> Any:
    """The first JSON object printed (``--json`` output is indented over several lines), once it is whole."""
    try:
        return json.JSONDecoder().raw_decode(text.lstrip())[0]
    except ValueError:
        return None


def clean_env(**extra: str) -> dict[str, str]:
    """No inherited HF/swarmhub settings or proxies: every contender sees only what the benchmark sets."""
    drop = ("HF_", "SWARMHUB_", "HUGGINGFACE_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop) and "proxy" not in k.lower()}
    return {**env, "NO_PROXY": "127.0.0.1,localhost", **extra}


# ---------------------------------------------------------------------------------------------- measuring


@dataclass(frozen=True)
class Sample:
    seconds: float
    cpu_seconds: float  # user+sys of the downloader
    rss_mb: float  # ru_maxrss: peak resident set (heap and buffers, libraries, any mapped file pages)
    anon_mb: float  # peak RssAnon, polled every 0.1 s: heap and buffers alone
    serving_cpu_seconds: float  # seeder, origin, CDN and tracker meanwhile
    busy: float  # share of the machine's CPU time that was busy meanwhile
    others_cpu_seconds: float  # busy CPU time that was neither ours nor theirs: noise from other work
    stdout: str


class _RssPoll(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.status = Path(f"/proc/{pid}/status")
        self.anon_kb = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.1):
            try:
                text = self.status.read_text()
            except OSError:
                return
            match = re.search(r"^RssAnon:\s+(\d+)", text, re.MULTILINE)
            if match:
                self.anon_kb = max(self.anon_kb, int(match.group(1)))


def _wait(proc: subprocess.Popen[bytes], timeout: float) -> Any:
    """Its rusage, reaped with wait4; killed after ``timeout``, and on the way out if we are interrupted."""
    watchdog = threading.Timer(timeout, os.killpg, (proc.pid, signal.SIGKILL))
    watchdog.start()
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    except BaseException:
        _stop_group(proc)
        raise
    finally:
        watchdog.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)
    return usage


def measure(cmd: list[str], env: dict[str, str], logs: Path, servers: Servers, timeout: float) -> Sample:
    """Run one downloader to its end: wall time, its own rusage, and what the rest of the machine did meanwhile."""
    serving, host = servers.cpu_seconds(), psutil.cpu_times()
    with (logs / "contender.out").open("w+b") as out, (logs / "contender.err").open("wb") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, start_new_session=True)
        poll = _RssPoll(proc.pid)
        poll.start()
        usage = _wait(proc, timeout)
        wall = time.perf_counter() - start
        poll.done.set()
        out.seek(0)
        stdout = out.read().decode(errors="replace")
    if proc.returncode != 0:
        err_text = (logs / "contender.err").read_text(errors="replace")[-3000:]
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{err_text}")
    serving, after = servers.cpu_seconds() - serving, psutil.cpu_times()
    spent = sum(after) - sum(host)
    busy = spent - (after.idle - host.idle) - (after.iowait - host.iowait)
    cpu = usage.ru_utime + usage.ru_stime
    return Sample(
        seconds=wall,
        cpu_seconds=cpu,
        rss_mb=usage.ru_maxrss / 1024,
        anon_mb=poll.anon_kb / 1024,
        serving_cpu_seconds=serving,
        busy=busy / spent if spent else 0.0,
        others_cpu_seconds=max(0.0, busy - cpu - serving),
        stdout=stdout,
    )


# ------------------------------------------------------------------------------------------------ checking


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(16 << 20):
            digest.update(block)
    return digest.hexdigest()


def check_files(folder: Path, expected: dict[str, str]) -> None:
    """Exactly the release's files (symlinks followed, BEP 47 pad files aside), byte for byte."""
    found = {
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.is_file() and p.relative_to(folder).parts[0] != ".pad"
    }
    if found != set(expected):
        raise SystemExit(f"{folder}: files {sorted(found ^ set(expected))} missing or unexpected")
    for rel, digest in expected.items():
        if sha256_of(folder / rel) != digest:
            raise SystemExit(f"{folder / rel}: content differs from the release")


# ---------------------------------------------------------------------------------------------- contenders


@dataclass(frozen=True)
class Contender:
    name: str
    command: Callable[[Path], list[str]]  # given its empty output folder
    files: Callable[[Path, str], Path]  # (output folder, its stdout) -> the folder holding the release's files
    env: dict[str, str]


def contenders(torrents: dict[str, Path], release: dict[str, Any], seeder: int, endpoint: str) -> list[Contender]:
    def pull(torrent: Path) -> Callable[[Path], list[str]]:
        return lambda out: [
            *SWARMHUB,
            "pull",
            REPO_ID,
            "--torrent",
            str(torrent),
            "--cache-dir",
            str(out / "hub"),
            "--no-origin",
            "--peer",
            f"127.0.0.1:{seeder}",
            "--json",
        ]

    def snapshot(_: Path, stdout: str) -> Path:
        return Path(json.loads(stdout)["snapshot_path"])

    def hf_snapshot(_: Path, stdout: str) -> Path:
        return Path(stdout.strip().splitlines()[-1])

    return [
        Contender(HYBRID, pull(torrents["hybrid"]), snapshot, clean_env()),
        Contender(V1, pull(torrents["v1"]), snapshot, clean_env()),
        Contender(
            ARIA2,
            lambda out: ["aria2c", f"--dir={out}", *ARIA2_OPTIONS, str(torrents["v1"])],
            lambda out, _: out / release["name"],
            clean_env(),
        ),
        Contender(
            HF,
            lambda out: [sys.executable, "-c", HF_SCRIPT, REPO_ID, str(out / "hub"), endpoint],
            hf_snapshot,
            clean_env(HF_HUB_DISABLE_XET="1", HF_HUB_DISABLE_PROGRESS_BARS="1", HF_HUB_DISABLE_TELEMETRY="1"),
        ),
    ]


# ----------------------------------------------------------------------------------------------- the setup


def create_torrents(work: Path, endpoint: str, announce: str) -> tuple[dict[str, Path], dict[str, Any]]:
    """v1 and hybrid torrents of the release, streamed from the origin; the hybrid's ``create --json``."""
    torrents, release = {}, {}
    for fmt in ("v1", "hybrid"):
        path = work / f"{fmt}.torrent"
        cmd = [*SWARMHUB, "create", REPO_ID, "--endpoint", endpoint, "--format", fmt, "--tracker", announce]
        done = subprocess.run([*cmd, "-o", str(path), "--json"], capture_output=True, text=True, env=clean_env())
        if done.returncode != 0:
            raise SystemExit(f"create --format {fmt} failed:\n{done.stderr[-2000:]}")
        torrents[fmt], release = path, json.loads(done.stdout)
    return torrents, release


def start_seeder(work: Path, servers: Servers, torrents: dict[str, Path], endpoint: str) -> tuple[int, Sample]:
    """Fill the seeder's cache from the origin (an origin-only pull of the hybrid), then seed both torrents."""
    cache = work / "seeder" / "hub"
    fill = [*SWARMHUB, "pull", REPO_ID, "--torrent", str(torrents["hybrid"]), "--endpoint", endpoint]
    fill += ["--cache-dir", str(cache), "--origin-after", "0", "--json"]
    filled = measure(fill, clean_env(), servers.logs, servers, timeout=3600)
    seed = [*SWARMHUB, "seed", "--cache-dir", str(cache), "--torrent", str(torrents["v1"])]
    proc, out = servers.start("seeder", [*seed, "--listen", "127.0.0.1:0", "--json"], clean_env())
    ready = wait_for(proc, out, first_json, timeout=120)
    if ready["seeding"] != 2:
        raise SystemExit(f"the seeder seeds {ready['seeding']} torrents, expected 2: {ready}")
    return int(ready["port"]), filled


def start_servers(work: Path, servers: Servers, repo: Path) -> tuple[str, str, str | None]:
    """CDN (nginx, when installed), origin, tracker: (origin endpoint, announce URL, CDN URL)."""
    cdn, cdn_url = start_cdn(work, repo)
    servers.adopt(cdn)
    origin_cmd = [*SWARMHUB, "devhub", "serve", str(work / "root"), "--port", "0"]
    origin, out = servers.start("origin", origin_cmd + (["--cdn-url", cdn_url] if cdn_url else []), clean_env())
    endpoint = wait_for(origin, out, url_in(r"at (http://127\.0\.0\.1:\d+)"))
    tracker, out = servers.start("tracker", [*SWARMHUB, "tracker", "serve", "--port", "0"], clean_env())
    announce = wait_for(tracker, out, url_in(r"(http://\S+/announce)"))
    return endpoint, announce, cdn_url


def check_room(folder: Path, size: int) -> None:
    """Release, CDN links, seeder cache and one contender's copy at a time, with a margin."""
    free = shutil.disk_usage(folder).free
    if free < 3.5 * size:
        raise SystemExit(f"{folder}: {free / 1e9:.1f} GB free, the benchmark needs {3.5 * size / 1e9:.1f} GB")


# -------------------------------------------------------------------------------------------------- the run


def run_rounds(
    work: Path, servers: Servers, field: list[Contender], expected: dict[str, str], args: argparse.Namespace
) -> dict[str, list[Sample]]:
    """``args.warmup`` untimed rounds first: the first pull after the seeder started was 2-5 s slower in every run."""
    results: dict[str, list[Sample]] = {c.name: [] for c in field}
    timeout = 120 + 300 * args.size_gb
    for round_no in range(args.warmup + args.rounds):
        label = f"round {round_no - args.warmup + 1}" if round_no >= args.warmup else "warm-up"
        turn = round_no % len(field)  # rotated: nobody always runs first or after the slowest
        for contender in field[turn:] + field[:turn]:
            out = work / "runs" / re.sub(r"\W+", "-", contender.name)
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir(parents=True)
            os.sync()  # nobody starts while the kernel still writes back someone else's bytes
            sample = measure(contender.command(out), contender.env, servers.logs, servers, timeout)
            check_files(contender.files(out, sample.stdout), expected)
            shutil.rmtree(out)
            if round_no >= args.warmup:
                results[contender.name].append(sample)
            print(f"{label}: {contender.name:24} {_line(sample)}", file=sys.stderr)
    return results


def _line(s: Sample) -> str:
    return (
        f"{s.seconds:6.2f} s  CPU {s.cpu_seconds:5.1f} s  RSS {s.rss_mb:4.0f} MB (anon {s.anon_mb:4.0f})  "
        f"serving CPU {s.serving_cpu_seconds:4.1f} s  machine busy {s.busy:4.0%}, others {s.others_cpu_seconds:4.1f} s"
    )


def summarize(results: dict[str, list[Sample]], size: int, release: dict[str, Any]) -> dict[str, Any]:
    def speed(s: Sample) -> float:
        return size / s.seconds / 1e6

    def paired(a: str, against: tuple[str, ...]) -> float:
        rounds = zip(results[a], *(results[b] for b in against), strict=True)
        return round(statistics.median(speed(x) / max(speed(y) for y in ys) for x, *ys in rounds), 3)

    mb_s = {k: round(statistics.median(map(speed, v)), 1) for k, v in results.items()}
    rss = {k: round(max(s.rss_mb for s in v), 1) for k, v in results.items()}
    ratios = {
        "swarmhub hybrid / best alternative": paired(HYBRID, ALTERNATIVES),
        "swarmhub v1 / aria2c": paired(V1, (ARIA2,)),
        "swarmhub hybrid / snapshot_download": paired(HYBRID, (HF,)),
    }
    targets = {
        "swarmhub >= 1.0x the best alternative": ratios["swarmhub hybrid / best alternative"] >= 1.0,
        "swarmhub >= 200 MB/s": min(mb_s[HYBRID], mb_s[V1]) >= 200,
        "swarmhub peak RSS < 300 MB": max(rss[HYBRID], rss[V1]) < 300,
    }
    return {
        "bytes": size,
        "files": len(release["files"]),
        "piece_size": release["piece_size"],
        "rounds": len(results[HYBRID]),
        "mb_per_s": mb_s,
        "cpu_seconds": {k: round(statistics.median(s.cpu_seconds for s in v), 2) for k, v in results.items()},
        "peak_rss_mb": rss,
        "peak_anon_rss_mb": {k: round(max(s.anon_mb for s in v), 1) for k, v in results.items()},
        "serving_cpu_seconds": {
            k: round(statistics.median(s.serving_cpu_seconds for s in v), 2) for k, v in results.items()
        },
        "ratios": ratios,
        "targets": targets,
        "runs": {k: [{**asdict(s), "stdout": None} for s in v] for k, v in results.items()},
    }


def print_report(report: dict[str, Any]) -> None:
    print(
        f"\n{report['bytes'] / 1e9:.2f} GB in {report['files']} files, piece size {report['piece_size'] >> 10} KiB, "
        f"one seeder on loopback, CDN: {report['cdn']}; medians of {report['rounds']} interleaved rounds after "
        f"{report['warmup_rounds']} warm-up, order rotated (ratios: median of per-round ratios of MB/s)"
    )
    print(f"  {'contender':24} {'MB/s':>7} {'CPU s':>7} {'peak RSS MB':>12} {'(anon)':>7} {'serving CPU s':>14}")
    for name, mb_s in report["mb_per_s"].items():
        print(
            f"  {name:24} {mb_s:7.0f} {report['cpu_seconds'][name]:7.1f} {report['peak_rss_mb'][name]:12.0f} "
            f"{report['peak_anon_rss_mb'][name]:7.0f} {report['serving_cpu_seconds'][name]:14.1f}"
        )
    fill = report["seeder_fill"]
    print(f"  (seeder fill, swarmhub pull from the origin only: {fill['mb_per_s']:.0f} MB/s, once)")
    for name, value in report["ratios"].items():
        print(f"  {name:38} {value:.2f}x")
    for name, ok in report["targets"].items():
        print(f"  [{'PASS' if ok else 'FAIL'}] {name}")


def bench(args: argparse.Namespace, work: Path, servers: Servers) -> dict[str, Any]:
    repo = make_release(work / "root", int(args.size_gb * 1e9))
    endpoint, announce, cdn_url = start_servers(work, servers, repo)
    torrents, release = create_torrents(work, endpoint, announce)
    expected = {f["path"]: sha256_of(repo / f["path"]) for f in release["files"]}  # also warms the page cache
    size = int(release["total_size"])
    print(f"release: {size / 1e9:.2f} GB, {len(expected)} files, commit {release['commit'][:12]}", file=sys.stderr)
    seeder, filled = start_seeder(work, servers, torrents, endpoint)
    field = contenders(torrents, release, seeder, endpoint)
    results = run_rounds(work, servers, field, expected, args)
    report = summarize(results, size, release)
    report["warmup_rounds"] = args.warmup
    report["cdn"] = "nginx (sendfile)" if cdn_url else "devhub's Python CDN (nginx not installed)"
    report["seeder_fill"] = {"seconds": round(filled.seconds, 2), "mb_per_s": round(size / filled.seconds / 1e6, 1)}
    return report


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM unwinds like Ctrl-C: every server is stopped on the way out


def run_bench(
    args: argparse.Namespace,
    work: Path,
    bench: Callable[[argparse.Namespace, Path, Servers], dict[str, Any]],
    print_report: Callable[[dict[str, Any]], None],
) -> int:
    """``bench(args, work, servers)`` with its servers logging to ``work/logs``; SIGTERM unwinds like Ctrl-C.
    On the way out every server is stopped and ``work`` removed (kept with ``args.keep``); then the report is
    printed, as JSON with ``args.json``. Returns the exit status (130 when interrupted)."""
    servers = Servers(work / "logs")
    signal.signal(signal.SIGTERM, _interrupted)
    try:
        report = bench(args, work, servers)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        servers.stop_all()
        if getattr(args, "keep", False):
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-gb", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (default: 3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default: 1)")
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()), help="where to work (a new folder)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (release, torrents, logs)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if shutil.which("aria2c") is None:
        raise SystemExit("aria2c is not installed (apt-get install aria2)")
    check_room(args.dir, int(args.size_gb * 1e9))
    work = Path(tempfile.mkdtemp(prefix="swarmhub-bench-pull-", dir=args.dir))
    return run_bench(args, work, bench, print_report)


if __name__ == "__main__":
    raise SystemExit(main())
