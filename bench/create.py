"""Benchmark: creating the torrent of a ~2 GB release, side by side with the alternatives, in one run.

Contenders, each run as its own process, interleaved round by round (this machine is shared and noisy, so
ratios from one run mean more than absolute seconds):

- ``swarmhub create --from-dir``          hashes the files on disk (hybrid torrent)
- ``swarmhub create`` streamed            from a local Hub-compatible origin (``swarmhub devhub serve``)
- libtorrent ``set_piece_hashes``         the same files, hybrid, same piece size
- ``sha256sum``                           one pass of SHA-256 over the same bytes

Targets (2 cores): from-dir <= 1.0x libtorrent, streamed <= 1.25x from-dir, peak RSS < 200 MB.

    python bench/create.py [--size-gb 2] [--rounds 3] [--dir DIR] [--json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ID = "bench/synthetic"
LT_SCRIPT = """
import sys, warnings, libtorrent as lt
warnings.simplefilter("ignore")
root, piece = sys.argv[1], int(sys.argv[2])
fs = lt.file_storage()
lt.add_files(fs, root)
ct = lt.create_torrent(fs, piece, 0)
lt.set_piece_hashes(ct, root.rsplit("/", 1)[0])
lt.bencode(ct.generate())
"""


def make_release(root: Path, total: int) -> Path:
    """models/bench/synthetic: four big shards, one medium file, a few small regular ones."""
    repo = root / "models" / REPO_ID
    marker = repo / ".complete"
    if marker.exists() and int(marker.read_text()) == total:
        return repo
    shutil.rmtree(repo, ignore_errors=True)
    repo.mkdir(parents=True)
    (repo / ".gitattributes").write_text(
        "*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.bin filter=lfs diff=lfs merge=lfs -text\n"
    )
    (repo / "config.json").write_text(json.dumps({"model_type": "bench", "hidden_size": 4096}) + "\n")
    (repo / "tokenizer.json").write_bytes(os.urandom(2_000_000).hex().encode()[:3_000_000])
    big = int(total * 0.9) // 4
    sizes = {f"model-{i:05d}-of-00004.safetensors": big for i in range(1, 5)}
    sizes["extra/optimizer.bin"] = total - 4 * big - 3_000_000
    for name, size in sizes.items():
        path = repo / name
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as f:
            left = size
            while left:
                n = min(left, 16 << 20)
                f.write(os.urandom(n))
                left -= n
    marker.write_text(str(total))
    return repo


def files_of(repo: Path) -> list[Path]:
    return sorted(p for p in repo.rglob("*") if p.is_file() and p.name != ".complete")


def run(cmd: list[str]) -> tuple[float, float, str]:
    """Wall seconds, peak RSS in MB, stdout of one process (its own rusage, via wait4)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    out = proc.stdout.read()
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{err.decode(errors='replace')[-2000:]}")
    return wall, usage.ru_maxrss / 1024, out.decode()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_cdn(work: Path, repo: Path) -> tuple[subprocess.Popen[bytes] | None, str | None]:
    """nginx serving LFS objects by sha256 (sendfile, ranges): what the Hub's CDN is, a static file server.

    Without it the origin's Python CDN would spend as much CPU serving bytes as we spend hashing them, on
    the same two cores, and the benchmark would measure the origin. None when nginx is not installed.
    """
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if nginx is None:
        return None, None
    lfs = work / "cdn" / "lfs"
    shutil.rmtree(lfs, ignore_errors=True)
    lfs.mkdir(parents=True)
    for path in files_of(repo):
        if path.suffix in (".safetensors", ".bin"):
            digest = hashlib.sha256()
            with path.open("rb") as f:
                while block := f.read(16 << 20):
                    digest.update(block)
            (lfs / digest.hexdigest()).symlink_to(path)
    port = _free_port()
    conf = work / "cdn" / "nginx.conf"
    conf.write_text(
        f"daemon off; user root; worker_processes 1; pid {work}/cdn/nginx.pid; error_log stderr;\n"
        "events { worker_connections 256; }\n"
        f"http {{ access_log off; sendfile on; tcp_nopush on; client_body_temp_path {work}/cdn/tmp;\n"
        f"  proxy_temp_path {work}/cdn/tmp; fastcgi_temp_path {work}/cdn/tmp; uwsgi_temp_path {work}/cdn/tmp;\n"
        f"  scgi_temp_path {work}/cdn/tmp;\n"
        f"  server {{ listen 127.0.0.1:{port}; location /lfs/ {{ alias {lfs}/; "
        "default_type application/octet-stream; } } }\n"
    )
    (work / "cdn" / "tmp").mkdir(exist_ok=True)
    proc = subprocess.Popen(
        [nginx, "-c", str(conf), "-p", str(work / "cdn"), "-e", "stderr"],
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.05)
    proc.kill()
    return None, None


def start_origin(root: Path, cdn_url: str | None) -> tuple[subprocess.Popen[str], str]:
    extra = ["--cdn-url", cdn_url] if cdn_url else []
    proc = subprocess.Popen(
        [sys.executable, "-m", "swarmhub", "devhub", "serve", str(root), "--port", "0", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        match = re.search(r"(http://127\.0\.0\.1:\d+)", line)
        if match:
            return proc, match.group(1)
        if proc.poll() is not None:
            break
    proc.kill()
    raise SystemExit("the local origin did not start")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-gb", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "swarmhub-bench-create")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    repo = make_release(args.dir, int(args.size_gb * 1e9))
    files = files_of(repo)
    total = sum(p.stat().st_size for p in files)
    for p in files:  # warm the page cache equally for everyone
        with p.open("rb") as f:
            while f.read(16 << 20):
                pass
    cdn, cdn_url = start_cdn(args.dir, repo)
    origin, endpoint = start_origin(args.dir, cdn_url)
    try:
        # The origin computes the commit from the files; from-dir gets the same one via --revision.
        streamed_probe = [
            sys.executable,
            "-m",
            "swarmhub",
            "create",
            REPO_ID,
            "--endpoint",
            endpoint,
            "--include",
            "config.json",
            "--json",
            "-o",
            str(args.dir / "probe.torrent"),
        ]
        commit = json.loads(run(streamed_probe)[2])["commit"]
        contenders = {
            "create --from-dir": [
                sys.executable,
                "-m",
                "swarmhub",
                "create",
                REPO_ID,
                "--from-dir",
                str(repo),
                "--revision",
                commit,
                "--json",
                "-o",
                str(args.dir / "local.torrent"),
            ],
            "create (streamed)": [
                sys.executable,
                "-m",
                "swarmhub",
                "create",
                REPO_ID,
                "--endpoint",
                endpoint,
                "--json",
                "-o",
                str(args.dir / "streamed.torrent"),
            ],
            "libtorrent set_piece_hashes": None,
            "sha256sum": ["sha256sum", *map(str, files)],
        }
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in contenders}
        piece_size = 0
        for round_no in range(args.rounds):
            for name, cmd in contenders.items():
                if cmd is None:
                    cmd = [sys.executable, "-c", LT_SCRIPT, str(repo), str(piece_size)]
                wall, rss, out = run(cmd)
                if name == "create --from-dir":
                    piece_size = json.loads(out)["piece_size"]
                results[name].append((wall, rss))
                print(f"round {round_no + 1}: {name:30} {wall:6.2f} s  {rss:6.0f} MB", file=sys.stderr)
        same = (args.dir / "local.torrent").read_bytes() == (args.dir / "streamed.torrent").read_bytes()
    finally:
        os.killpg(origin.pid, signal.SIGTERM)
        origin.wait(10)
        if cdn is not None:
            os.killpg(cdn.pid, signal.SIGTERM)
            cdn.wait(10)

    median = {name: statistics.median(w for w, _ in runs) for name, runs in results.items()}
    peak = {name: max(r for _, r in runs) for name, runs in results.items()}

    def paired(a: str, b: str) -> float:
        return round(statistics.median(x[0] / y[0] for x, y in zip(results[a], results[b], strict=True)), 3)

    report = {
        "bytes": total,
        "files": len(files),
        "piece_size": piece_size,
        "rounds": args.rounds,
        "median_seconds": {k: round(v, 3) for k, v in median.items()},
        "peak_rss_mb": {k: round(v, 1) for k, v in peak.items()},
        # Median of per-round ratios: contenders of one round ran back to back, under the same load.
        "ratios": {
            "from_dir / libtorrent": paired("create --from-dir", "libtorrent set_piece_hashes"),
            "streamed / from_dir": paired("create (streamed)", "create --from-dir"),
            "from_dir / sha256sum": paired("create --from-dir", "sha256sum"),
            "libtorrent / sha256sum": paired("libtorrent set_piece_hashes", "sha256sum"),
        },
        "streamed_equals_from_dir": same,
        "cdn": "nginx (sendfile)" if cdn_url else "devhub's Python CDN (nginx not installed)",
    }
    targets = {
        "from_dir <= 1.0x libtorrent": report["ratios"]["from_dir / libtorrent"] <= 1.0,
        "streamed <= 1.25x from_dir": report["ratios"]["streamed / from_dir"] <= 1.25,
        "peak RSS < 200 MB": max(peak["create --from-dir"], peak["create (streamed)"]) < 200,
        "byte-identical torrents": same,
    }
    report["targets"] = targets
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(
            f"\n{total / 1e9:.2f} GB in {len(files)} files, piece size {piece_size >> 10} KiB, "
            f"medians of {args.rounds} interleaved rounds (ratios: median of per-round ratios)"
        )
        for name in contenders:
            print(
                f"  {name:30} {median[name]:7.2f} s  {total / median[name] / 1e6:7.0f} MB/s  "
                f"peak RSS {peak[name]:5.0f} MB"
            )
        for name, value in report["ratios"].items():
            print(f"  {name:30} {value:.2f}x")
        for name, ok in targets.items():
            print(f"  [{'ok' if ok else 'MISS'}] {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
