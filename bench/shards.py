"""Benchmark: LOAD_SHARD of a ~500 MB shard from peers vs copying the same file over HTTP from a peer.

A GGUF shard of ``--size-mb`` MiB (random float32 tensors: a valid GGUF, not a model) is held by ``--peers``
shard nodes (``swarmhub shards serve``, each its own process, hard links of one file, hashed once). Each
contender fetches it into an empty folder, one at a time, rounds interleaved with the order rotated (this
machine is shared and noisy: paired ratios mean more than absolute MB/s):

- ``bt-1``       a fresh node's ``LOAD_SHARD`` with one peer given (``--peer``, no tracker): download by
                 torrent, piece hashes, SHA-256 of the file, rename, GGUF parse;
- ``bt-N``       the same, the node finding all N peers through a coordinator's tracker;
- ``http``       ``curl`` (httpx without it) copying the file from nginx (sendfile) on peer 1's folder, a
                 plain Python file server without nginx; ``http+sha256`` adds checking the copy's SHA-256,
                 which is what LOAD_SHARD's answer already guarantees.

The node's start-up is not timed (it runs anyway); the time is from sending ``LOAD_SHARD`` to its answer.

    python bench/shards.py [--size-mb 512] [--peers 3] [--rounds 3] [--dir DIR] [--keep] [--json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from gguf import GGUFWriter

from swarmhub.guard import read_secret_file
from swarmhub.shards.client import send_command
from swarmhub.shards.manifest import Manifest, shard_entry, shard_piece_size
from swarmhub.shards.store import RECORD, ShardStore, hash_file

NAME = "bench-shard.gguf"


def make_shard(path: Path, size_mb: int) -> None:
    """A valid GGUF file of about ``size_mb`` MiB: 64 MiB tensors of random float32."""
    rng = np.random.default_rng(0)
    writer = GGUFWriter(path, "llama")
    rows = 16384  # x 1024 float32 = 64 MiB a tensor
    for i in range(max(1, size_mb // 64)):
        writer.add_tensor(f"blk.{i}.weight", rng.standard_normal((rows, 1024), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


class Procs:
    """Processes this benchmark started, stopped by their own ids at the end."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, args: list[str], *, json_line: bool = True) -> tuple[subprocess.Popen[str], dict[str, Any]]:
        proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True
        )
        self.procs.append(proc)
        if not json_line:
            return proc, {}
        assert proc.stdout is not None
        text = ""
        while line := proc.stdout.readline():  # one JSON document, on one line or several
            text += line
            try:
                return proc, json.loads(text)
            except json.JSONDecodeError:
                continue
        raise RuntimeError(f"{' '.join(args[:6])} … exited before it was ready")

    def stop(self, proc: subprocess.Popen[str]) -> None:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if proc in self.procs:
            self.procs.remove(proc)

    def stop_all(self) -> None:
        for proc in list(reversed(self.procs)):
            self.stop(proc)


SWARMHUB = [sys.executable, "-m", "swarmhub"]


def start_http(procs: Procs, work: Path, folder: Path) -> tuple[str, str]:
    """nginx (sendfile) serving ``folder``, or Python's file server without nginx: (base URL, what it is)."""
    port = free_port()
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if nginx is not None:
        conf = work / "nginx" / "nginx.conf"
        (work / "nginx" / "tmp").mkdir(parents=True, exist_ok=True)
        tmp = work / "nginx" / "tmp"
        conf.write_text(
            f"daemon off; user root; worker_processes 1; pid {work}/nginx/nginx.pid; error_log stderr;\n"
            "events { worker_connections 64; }\n"
            f"http {{ access_log off; sendfile on; tcp_nopush on; client_body_temp_path {tmp};\n"
            f"  proxy_temp_path {tmp}; fastcgi_temp_path {tmp}; uwsgi_temp_path {tmp}; scgi_temp_path {tmp};\n"
            f"  server {{ listen 127.0.0.1:{port}; location / {{ root {folder}; "
            "default_type application/octet-stream; } } }\n"
        )
        procs.start([nginx, "-c", str(conf), "-p", str(work / "nginx"), "-e", "stderr"], json_line=False)
        what = "nginx (sendfile)"
    else:
        procs.start(
            [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(folder)],
            json_line=False,
        )
        what = "python -m http.server (nginx not installed)"
    wait_port(port)
    return f"http://127.0.0.1:{port}", what


def http_copy(url: str, dest: Path) -> None:
    curl = shutil.which("curl")
    if curl:
        subprocess.run([curl, "-sSf", "-o", str(dest), url], check=True)
        return
    with httpx.stream("GET", url, timeout=60) as response, dest.open("wb") as f:
        response.raise_for_status()
        for chunk in response.iter_bytes(4 << 20):
            f.write(chunk)


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(8 << 20):
            h.update(block)
    return h.hexdigest()


def load_once(procs: Procs, work: Path, manifest: Path, node_args: list[str], phases: list[dict[str, float]]) -> float:
    """A fresh node loads shard 1; seconds from the command to its answer (the node's own split of them, from
    its answer, appended to ``phases``)."""
    folder = Path(tempfile.mkdtemp(prefix="leecher-", dir=work))
    serve = [*SWARMHUB, "shards", "serve", "--shards-dir", str(folder), "--manifest", str(manifest)]
    proc, info = procs.start(
        [*serve, "--port", "0", "--listen", "127.0.0.1:0", "--load-timeout", "30", "--json", *node_args]
    )
    try:
        # the token it made at start (none recorded: it took SWARMHUB_SHARDS_TOKEN or SWARMHUB_CLUSTER_TOKEN)
        token = json.loads(read_secret_file(Path(info["token_file"])))["token"] or os.environ[info["token_from"]]
        started = time.perf_counter()
        result = send_command(info["url"], "LOAD_SHARD", {"shard_id": "1"}, token=token)
        seconds = time.perf_counter() - started
        if result["source"] != "peers":
            raise RuntimeError(f"LOAD_SHARD did not fetch from peers: {result}")
        phases.append(result["seconds"])
        return seconds
    finally:
        procs.stop(proc)
        shutil.rmtree(folder, ignore_errors=True)


def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(args.dir or tempfile.mkdtemp(prefix="swarmhub-bench-shards-"))
    work.mkdir(parents=True, exist_ok=True)
    procs = Procs()
    try:
        source = work / NAME
        if not source.exists():
            make_shard(source, args.size_mb)
        size = source.stat().st_size
        piece = shard_piece_size(size)
        _, sha256, pieces = hash_file(source, piece)
        manifest = Manifest("bench", (shard_entry("1", NAME, size, sha256, piece, pieces),))
        manifest_path = work / "shards.json"
        manifest_path.write_bytes(manifest.to_json())

        _, c_info = procs.start([*SWARMHUB, "coordinator", "serve", "--port", "0", "--json"])
        peers = []
        for i in range(args.peers):
            folder = work / f"peer-{i + 1}"
            folder.mkdir(exist_ok=True)
            if not (folder / NAME).exists():
                os.link(source, folder / NAME)
            if i == 0:  # hashed once here; the record serves every hard link (same size and mtime)
                ShardStore(folder, manifest).scan()
            else:
                shutil.copy(work / "peer-1" / RECORD, folder / RECORD)
            serve = [*SWARMHUB, "shards", "serve", "--shards-dir", str(folder), "--manifest", str(manifest_path)]
            _, info = procs.start(
                [*serve, "--port", "0", "--listen", "127.0.0.1:0", "--coordinator", c_info["url"], "--json"]
            )
            peers.append(info)
        http_url, http_what = start_http(procs, work, work / "peer-1")
        time.sleep(1.5)  # every peer announced

        bt_n = f"bt-{args.peers}"
        phases: dict[str, list[dict[str, float]]] = {"bt-1": [], bt_n: []}
        one_peer = ["--peer", f"127.0.0.1:{peers[0]['bt_port']}"]
        contenders = {
            "bt-1": lambda: load_once(procs, work, manifest_path, one_peer, phases["bt-1"]),
            bt_n: lambda: load_once(procs, work, manifest_path, ["--coordinator", c_info["url"]], phases[bt_n]),
            "http": lambda: timed_http(work, f"{http_url}/{NAME}", sha256, verify=False),
            "http+sha256": lambda: timed_http(work, f"{http_url}/{NAME}", sha256, verify=True),
        }
        names = list(contenders)
        times: dict[str, list[float]] = {n: [] for n in names}
        for r in range(args.warmup + args.rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            for name in order:
                seconds = contenders[name]()
                if r >= args.warmup:
                    times[name].append(seconds)
                if not args.json:
                    print(f"round {r + 1}{' (warm-up)' if r < args.warmup else ''}: {name:<12} {seconds:6.2f} s")
        median = {n: statistics.median(t) for n, t in times.items()}
        timed = {n: p[args.warmup :] for n, p in phases.items()}
        return {
            "size_bytes": size,
            "piece_size": piece,
            "peers": args.peers,
            "rounds": args.rounds,
            "http_server": http_what,
            "seconds": times,
            "median_seconds": median,
            "mb_per_s": {n: size / 1e6 / s for n, s in median.items()},
            # the node's own split: to the last piece, SHA-256 left after it, GGUF parse
            "node_seconds": {n: {k: statistics.median(x[k] for x in p) for k in p[0]} for n, p in timed.items()},
            "ratios": {
                "bt-1 / http": median["bt-1"] / median["http"],
                "bt-1 / http+sha256": median["bt-1"] / median["http+sha256"],
                f"{bt_n} / bt-1": median[bt_n] / median["bt-1"],
            },
        }
    finally:
        procs.stop_all()
        if not args.keep and not args.dir:
            shutil.rmtree(work, ignore_errors=True)


def timed_http(work: Path, url: str, sha256: str, *, verify: bool) -> float:
    dest = work / "http-copy.gguf"
    started = time.perf_counter()
    http_copy(url, dest)
    if verify and sha256_of(dest) != sha256:
        raise RuntimeError("the HTTP copy differs")
    seconds = time.perf_counter() - started
    dest.unlink()
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=512, help="shard size in MiB (default: 512)")
    parser.add_argument("--peers", type=int, default=3, help="peers holding the shard (default: 3)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (default: 3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default: 1)")
    parser.add_argument("--dir", help="work folder (kept; the shard is reused when there)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary work folder")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args()
    report = run(args)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    size, piece = report["size_bytes"] / 1e6, report["piece_size"] >> 20
    print(f"\nshard {size:.0f} MB, {piece} MiB pieces, {report['peers']} peers, HTTP: {report['http_server']}")
    for name, seconds in report["median_seconds"].items():
        print(f"  {name:<12} {seconds:6.2f} s  {report['mb_per_s'][name]:7.1f} MB/s")
    for name, split in report["node_seconds"].items():
        print(f"  {name:<12} node: " + ", ".join(f"{k} {v:.2f} s" for k, v in split.items()))
    for name, ratio in report["ratios"].items():
        print(f"  {name:<20} {ratio:5.2f}x the time")
    return 0


if __name__ == "__main__":
    sys.exit(main())
