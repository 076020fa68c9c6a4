"""Benchmark: HTTP announces per second on loopback, ``swarmhub tracker serve`` side by side with opentracker.

Each tracker runs in a process of its own, started once and kept running over the rounds (the swarms fill up
to their steady size in the warm-up round). The load is the same for every contender: a pre-generated mix of
announces (``--torrents`` torrents, ``--peers`` distinct peers spread over them, a third of them seeding,
5 % ``started`` and 5 % ``stopped`` events, ``compact=1``), sent for ``--seconds`` per round by the client:
``--client wrk`` (the default when Debian's ``wrk`` is installed: C, epoll, ``--workers`` threads) or
``--client python`` (``--workers`` asyncio processes), ``--connections`` connections in all. A reply counts
when it is a whole bencoded dictionary with an ``interval``. The client matters on 2 cores: the Python one
spends ~230 us of CPU per announce, more than any of the servers, so what it measures is mostly itself;
wrk spends a fraction of that and leaves the servers the CPU a real tracker host gives them. Contenders:

- ``swarmhub``               one TCP connection per announce, as BitTorrent clients announce (opentracker closes
                             every connection after its reply anyway, so this is the shape both can serve)
- ``opentracker``            Debian's build, open to the benchmark's torrents (it is built with a whitelist,
                             so the benchmark's info hashes are whitelisted), the same shape
- ``swarmhub (keep-alive)``  informative: the same announces on kept-alive connections, what HTTP/1.1 saves
- ``null server``            informative: a constant reply from a bare asyncio server (on uvloop, as the tracker,
                             when installed), connection per announce: the ceiling of this client on this
                             machine (server and client share 2 cores)

opentracker and the null server close every connection without saying ``connection: close``; wrk learns it
from the failed write of its next request and reconnects: those show as socket errors, not as announces (every
announce counted is a whole, checked reply).

Rounds are interleaved with the order rotated after an untimed warm-up round. Reported per contender:
announces/s (median), the server's user+sys CPU seconds per round, errors; and swarmhub / opentracker.

- ``--swarm-peers N``  one swarm of N peers instead (issue 13's flood: 20,000), every peer at an address of its
                       own (``ip=``, believed from loopback), as a real swarm's are; each tracker is filled with
                       all N (one announce each, on kept-alive connections) before the warm-up.
- ``--baseline REV``   one more contender: ``tracker serve`` of the git revision REV (its ``src/`` from ``git
                       archive``), connection per announce; reported as swarmhub / swarmhub @REV.

Target (2 cores): swarmhub >= 5,000 announces/s (connection per announce).

    python bench/tracker.py [--client wrk|python] [--rounds 3] [--seconds 5] [--workers 2] [--connections 32]
                            [--swarm-peers N] [--baseline REV] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import multiprocessing
import random
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psutil

from pull import SWARMHUB, Servers, clean_env, run_bench, url_in, wait_for

OURS, OURS_KEEPALIVE, OPENTRACKER, NULL = "swarmhub", "swarmhub (keep-alive)", "opentracker", "null server"
TARGET = 5000.0
NULL_SCRIPT = """
import asyncio, sys
BODY = b"d8:completei1e10:incompletei1e8:intervali1800e5:peers6:\\x7f\\x00\\x00\\x01\\x1a\\xe1e"
REPLY = b"HTTP/1.1 200 OK\\r\\ncontent-type: text/plain\\r\\ncontent-length: %d\\r\\n\\r\\n%s" % (len(BODY), BODY)

class Null(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport, self.buffer = transport, b""
    def data_received(self, data):
        self.buffer += data
        while b"\\r\\n\\r\\n" in self.buffer:
            head, self.buffer = self.buffer.split(b"\\r\\n\\r\\n", 1)
            self.transport.write(REPLY)
            if b"connection: close" in head.lower():
                self.transport.close()
                return

async def main():
    server = await asyncio.get_running_loop().create_server(Null, "127.0.0.1", 0, backlog=1024)
    print(f"null server at http://127.0.0.1:{server.sockets[0].getsockname()[1]}/announce", flush=True)
    await server.serve_forever()

try:
    import uvloop  # the tracker's loop: the ceiling is measured on it too
except ImportError:
    asyncio.run(main())
else:
    uvloop.run(main())
"""


# ---------------------------------------------------------------------------------------------- the load


@dataclass(frozen=True)
class Peer:
    peer_id: bytes
    port: int
    info_hash: bytes
    left: int
    ip: str | None  # its own address (ip=, believed from loopback), or None: 127.0.0.1

    def target(self, event: str = "") -> str:
        return (
            f"/announce?info_hash={quote(self.info_hash, safe='')}&peer_id={quote(self.peer_id, safe='')}"
            f"&port={self.port}&uploaded=0&downloaded=0&left={self.left}&compact=1"
            + (f"&ip={self.ip}" if self.ip else "")
            + (f"&event={event}" if event else "")
        )


def make_population(torrents: list[bytes], peers: int, spread: bool, seed: int = 0) -> list[Peer]:
    """``peers`` peers spread over ``torrents``, a third of them seeding; ``spread``: each at its own address."""
    rng = random.Random(seed)
    return [
        Peer(
            rng.randbytes(20),
            10000 + i % 50000,
            torrents[i % len(torrents)],
            0 if i % 3 == 0 else rng.randrange(1, 1 << 30),
            str(ipaddress.IPv4Address(0x0A000001 + i)) if spread else None,  # 10.0.0.1 and up
        )
        for i in range(peers)
    ]


def make_requests(port: int, count: int, population: list[Peer], keepalive: bool, seed: int) -> list[bytes]:
    """``count`` announce requests: random peers of the population, each peer always on the same torrent."""
    rng = random.Random(seed)
    connection = b"keep-alive" if keepalive else b"close"
    requests = []
    for _ in range(count):
        peer = rng.choice(population)
        roll = rng.random()
        target = peer.target("started" if roll < 0.05 else "stopped" if roll < 0.10 else "")
        requests.append(
            f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n".encode() + b"Connection: " + connection + b"\r\n\r\n"
        )
    return requests


async def _fill_connection(port: int, peers: list[Peer]) -> int:
    """Every peer announces once, ``event=started``, pipelined on one kept-alive connection; the answers read."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answered = 0
    try:
        for start in range(0, len(peers), 200):
            batch = peers[start : start + 200]
            writer.write(
                b"".join(f"GET {p.target('started')} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode() for p in batch)
            )
            for _ in batch:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(int(ln[15:]) for ln in head.split(b"\r\n") if ln[:15].lower() == b"content-length:")
                answered += b"8:intervali" in await reader.readexactly(length)
    finally:
        writer.close()
    return answered


def fill(port: int, population: list[Peer], connections: int = 4) -> float:
    """The tracker at ``port`` holds every peer of ``population``; returns the seconds it took."""
    started = time.monotonic()

    async def go() -> int:
        parts = [population[i::connections] for i in range(connections)]
        return sum(await asyncio.gather(*(_fill_connection(port, part) for part in parts)))

    answered = asyncio.run(go())
    if answered != len(population):
        raise SystemExit(f"filling the swarm: {answered} of {len(population)} announces answered")
    return time.monotonic() - started


async def _connection(port: int, requests: list[bytes], start: int, keepalive: bool, end: float) -> tuple[int, int]:
    ok = errors = 0
    i = start
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    while time.monotonic() < end:
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            assert reader is not None
            writer.write(requests[i % len(requests)])
            i += 1
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            body = await reader.readexactly(length)
            if time.monotonic() < end:
                if body[:1] == b"d" and body[-1:] == b"e" and b"8:intervali" in body:
                    ok += 1
                else:
                    errors += 1
            if not keepalive:
                writer.close()
                writer = None
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            errors += 1
            if writer is not None:
                writer.close()
            writer = None
    if writer is not None:
        writer.close()
    return ok, errors


async def _load(port: int, requests: list[bytes], connections: int, keepalive: bool, start_at: float, end: float):
    await asyncio.sleep(max(0.0, start_at - time.monotonic()))
    step = len(requests) // max(connections, 1)
    results = await asyncio.gather(*(_connection(port, requests, c * step, keepalive, end) for c in range(connections)))
    return sum(r[0] for r in results), sum(r[1] for r in results)


def _worker(port: int, requests: list[bytes], connections: int, keepalive: bool, start_at: float, end: float, out):
    """One client process (CLOCK_MONOTONIC is system-wide, so every worker starts and stops at the same time)."""
    ok, errors = asyncio.run(_load(port, requests, connections, keepalive, start_at, end))
    usage = psutil.Process().cpu_times()
    out.put((ok, errors, usage.user + usage.system))


@dataclass(frozen=True)
class Sample:
    announces_per_s: float
    errors: int
    server_cpu_seconds: float  # user+sys of the tracker process during the round
    client_cpu_seconds: float  # user+sys of the client processes


@dataclass(frozen=True)
class Contender:
    name: str
    port: int
    pid: int
    keepalive: bool
    requests: list[list[bytes]]  # one list per worker


def cpu_of(pid: int) -> float:
    try:
        parent = psutil.Process(pid)
        return sum(t.user + t.system for t in (p.cpu_times() for p in [parent, *parent.children(recursive=True)]))
    except psutil.Error:
        return 0.0


def measure(contender: Contender, connections: int, seconds: float) -> Sample:
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    workers = len(contender.requests)
    start_at = time.monotonic() + 0.3  # the workers are forked and ready before the clock starts
    end = start_at + seconds
    per_worker = [connections // workers + (1 if w < connections % workers else 0) for w in range(workers)]
    procs = [
        ctx.Process(target=_worker, args=(contender.port, reqs, n, contender.keepalive, start_at, end, out))
        for reqs, n in zip(contender.requests, per_worker, strict=True)
    ]
    for p in procs:
        p.start()
    try:
        time.sleep(max(0.0, start_at - time.monotonic()))
        cpu_before = cpu_of(contender.pid)
        time.sleep(max(0.0, end - time.monotonic()))
        cpu_after = cpu_of(contender.pid)
        results = [out.get(timeout=30 + seconds) for _ in procs]
    finally:
        for p in procs:
            p.join(5)
            if p.is_alive():
                p.kill()
                p.join()
    return Sample(
        announces_per_s=sum(r[0] for r in results) / seconds,
        errors=sum(r[1] for r in results),
        server_cpu_seconds=cpu_after - cpu_before,
        client_cpu_seconds=sum(r[2] for r in results),
    )


# wrk: each thread walks the same announce targets from its own offset; a reply is checked as the Python client
# checks it; done() prints one JSON line with the counts.
WRK_SCRIPT = """
local targets = {}
for line in io.lines(os.getenv("SWARMHUB_BENCH_TARGETS")) do targets[#targets + 1] = line end
local connection = os.getenv("SWARMHUB_BENCH_CONNECTION")
local threads, counter = {}, 0

function setup(thread)
  counter = counter + 1
  thread:set("id", counter)
  table.insert(threads, thread)
end

function init(args)
  i = (id - 1) * math.floor(#targets / 8)
  bad = 0
  headers = {["Connection"] = connection}
end

function request()
  i = i + 1
  return wrk.format("GET", targets[i % #targets + 1], headers)
end

function response(status, hdrs, body)
  if status ~= 200 or body:sub(1, 1) ~= "d" or body:sub(-1) ~= "e" or not body:find("8:intervali", 1, true) then
    bad = bad + 1
  end
end

function done(summary, latency, requests)
  local bads = 0
  for _, t in ipairs(threads) do bads = bads + t:get("bad") end
  local e = summary.errors
  io.write(string.format('{"requests": %d, "bad": %d, "socket_errors": %d}\\n',
    summary.requests, bads, e.connect + e.read + e.write + e.timeout))
end
"""


def measure_wrk(contender: Contender, connections: int, seconds: float, threads: int, work: Path) -> Sample:
    """One round of ``wrk`` against ``contender``; the announce targets are those of its first request list."""
    targets = work / "targets.txt"
    targets.write_bytes(b"".join(r.split(b" ", 2)[1] + b"\n" for r in contender.requests[0]))
    script = work / "announce.lua"
    script.write_text(WRK_SCRIPT)
    env = {
        **clean_env(),
        "SWARMHUB_BENCH_TARGETS": str(targets),
        "SWARMHUB_BENCH_CONNECTION": "keep-alive" if contender.keepalive else "close",
    }
    cmd = [
        shutil.which("wrk") or "wrk",
        f"-t{threads}",
        f"-c{max(connections, threads)}",
        f"-d{seconds:g}s",
        "--timeout",
        "5s",
        "-s",
        str(script),
        f"http://127.0.0.1:{contender.port}",
    ]
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_before = cpu_of(contender.pid)  # the server idles until wrk connects: its whole run is the window
    client = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = client.communicate(timeout=30 + seconds)
    cpu_after = cpu_of(contender.pid)
    children_after = resource.getrusage(resource.RUSAGE_CHILDREN)  # wrk's, now that it has been waited for
    client_cpu = (children_after.ru_utime + children_after.ru_stime) - (
        children_before.ru_utime + children_before.ru_stime
    )
    line = [ln for ln in out.decode().splitlines() if ln.startswith("{")]
    if client.returncode != 0 or not line:
        raise SystemExit(f"wrk failed ({client.returncode}): {err.decode().strip() or out.decode().strip()}")
    counts = json.loads(line[-1])
    return Sample(
        announces_per_s=(counts["requests"] - counts["bad"]) / seconds,
        errors=counts["bad"] + counts["socket_errors"],
        server_cpu_seconds=cpu_after - cpu_before,
        client_cpu_seconds=client_cpu,
    )


# ---------------------------------------------------------------------------------------------- the servers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(proc: subprocess.Popen[bytes], port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"not ready: {proc.args!r}")


def start_swarmhub(servers: Servers, name: str = "swarmhub", src: Path | None = None) -> tuple[int, int]:
    """``tracker serve`` of this tree, or of the sources in ``src`` (a baseline revision's)."""
    cmd = [*SWARMHUB, "tracker", "serve", "--host", "127.0.0.1", "--port", "0", "--interval", "1800"]
    env = clean_env() if src is None else clean_env(PYTHONPATH=str(src))
    proc, out = servers.start(name.replace(" ", "-"), cmd, env)
    url = wait_for(proc, out, url_in(r"tracker serving at (http://\S+/announce)"))
    return int(url.rsplit(":", 1)[1].split("/")[0]), proc.pid


def baseline_sources(work: Path, revision: str) -> Path:
    """``src/`` of ``revision`` (``git archive``: the work tree is not touched), under ``work``."""
    folder = work / "baseline"
    folder.mkdir()
    repo = Path(__file__).resolve().parents[1]
    archive = subprocess.run(["git", "-C", str(repo), "archive", revision, "src"], capture_output=True, check=False)
    if archive.returncode != 0:
        raise SystemExit(f"git archive {revision}: {archive.stderr.decode().strip()}")
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)
    return folder / "src"


def start_opentracker(work: Path, servers: Servers, torrents: list[bytes]) -> tuple[int, int]:
    """Debian's opentracker is built with a whitelist: every torrent of the benchmark is on it, nothing else.

    It chroots to ``-d`` (the work folder) before it reads the whitelist, hence the path from that root."""
    port = free_port()
    (work / "whitelist.txt").write_text("".join(h.hex() + "\n" for h in torrents))
    (work / "opentracker.conf").write_text(
        f"listen.tcp 127.0.0.1:{port}\nlisten.udp 127.0.0.1:{port}\naccess.whitelist /whitelist.txt\n"
    )
    binary = shutil.which("opentracker") or "/usr/bin/opentracker"
    proc, _ = servers.start("opentracker", [binary, "-f", str(work / "opentracker.conf"), "-d", str(work)], clean_env())
    wait_port(proc, port)
    probe = make_requests(port, 1, torrents, 1, False, seed=0)[0]
    deadline = time.monotonic() + 20
    while b"8:intervali" not in _fetch(port, probe):  # it loads the whitelist in a thread of its own, later
        if time.monotonic() > deadline:
            raise SystemExit("opentracker does not accept the benchmark's torrents (whitelist not loaded)")
        time.sleep(0.1)
    return port, proc.pid


def _fetch(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(request)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def start_null(servers: Servers) -> tuple[int, int]:
    proc, out = servers.start("null", [sys.executable, "-c", NULL_SCRIPT], clean_env())
    url = wait_for(proc, out, url_in(r"null server at (http://\S+/announce)"))
    return int(url.rsplit(":", 1)[1].split("/")[0]), proc.pid


# ---------------------------------------------------------------------------------------------- the report


def bench(args: argparse.Namespace, work: Path, servers: Servers) -> dict[str, Any]:
    if args.swarm_peers:
        args.torrents, args.peers = 1, args.swarm_peers
    torrents = [random.Random(i).randbytes(20) for i in range(args.torrents)]
    population = make_population(torrents, args.peers, spread=bool(args.swarm_peers))
    ours_port, ours_pid = start_swarmhub(servers)
    found: list[tuple[str, int, int, bool]] = [
        (OURS, ours_port, ours_pid, False),
        (OURS_KEEPALIVE, ours_port, ours_pid, True),
    ]
    baseline = f"swarmhub @{args.baseline}" if args.baseline else None
    if baseline is not None:
        found.append((baseline, *start_swarmhub(servers, baseline, baseline_sources(work, args.baseline)), False))
    if shutil.which("opentracker") or Path("/usr/bin/opentracker").exists():
        found.append((OPENTRACKER, *start_opentracker(work, servers, torrents), False))
    else:
        print("opentracker is not installed (apt-get install opentracker): benchmarking swarmhub only", file=sys.stderr)
    found.append((NULL, *start_null(servers), False))
    contenders = [
        Contender(
            name,
            port,
            pid,
            keepalive,
            [make_requests(port, 20000, population, keepalive, seed=w) for w in range(args.workers)],
        )
        for name, port, pid, keepalive in found
    ]
    filled: dict[str, float] = {}
    if args.swarm_peers:
        for c in contenders:
            if c.name not in (NULL, OURS_KEEPALIVE):  # the kept-alive contender is the same server as OURS
                filled[c.name] = round(fill(c.port, population), 1)
                if not args.json:
                    print(f"{c.name}: {args.swarm_peers:,} peers in {filled[c.name]} s", file=sys.stderr)

    def run(c: Contender, seconds: float) -> Sample:
        if args.client == "wrk":
            return measure_wrk(c, args.connections, seconds, args.workers, work)
        return measure(c, args.connections, seconds)

    for _ in range(args.warmup):
        for c in contenders:
            run(c, min(args.seconds, 2.0))
    results: dict[str, list[Sample]] = {c.name: [] for c in contenders}
    for r in range(args.rounds):
        shift = r % len(contenders)
        for c in contenders[shift:] + contenders[:shift]:
            sample = run(c, args.seconds)
            results[c.name].append(sample)
            if not args.json:
                print(
                    f"round {r + 1}  {c.name:<22} {sample.announces_per_s:9,.0f}/s  server cpu "
                    f"{sample.server_cpu_seconds:5.2f} s  client cpu {sample.client_cpu_seconds:5.2f} s  "
                    f"errors {sample.errors}",
                    file=sys.stderr,
                )
    summary = {
        name: {
            "announces_per_s": round(statistics.median(s.announces_per_s for s in samples)),
            "server_cpu_seconds": round(statistics.median(s.server_cpu_seconds for s in samples), 2),
            "client_cpu_seconds": round(statistics.median(s.client_cpu_seconds for s in samples), 2),
            "errors": sum(s.errors for s in samples),
            "rounds": [asdict(s) for s in samples],
        }
        for name, samples in results.items()
    }
    ours = summary[OURS]["announces_per_s"]
    report: dict[str, Any] = {
        "settings": {
            k: getattr(args, k)
            for k in (
                "client",
                "rounds",
                "warmup",
                "seconds",
                "workers",
                "connections",
                "torrents",
                "peers",
                "swarm_peers",
                "baseline",
            )
        },
        "fill_seconds": filled,
        "cpus": psutil.cpu_count(),
        "contenders": summary,
        "target_announces_per_s": TARGET,
        "pass": ours >= TARGET,
    }
    if OPENTRACKER in summary and summary[OPENTRACKER]["announces_per_s"]:
        report["ratio_swarmhub_to_opentracker"] = round(ours / summary[OPENTRACKER]["announces_per_s"], 3)
    if baseline is not None and summary[baseline]["announces_per_s"]:
        report["ratio_swarmhub_to_baseline"] = round(ours / summary[baseline]["announces_per_s"], 2)
    return report


def print_report(report: dict[str, Any]) -> None:
    s = report["settings"]
    print(
        f"announces on loopback, {s['rounds']} rounds of {s['seconds']} s, client {s['client']} "
        f"({s['workers']} {'threads' if s['client'] == 'wrk' else 'processes'}), "
        f"{s['connections']} connections, {s['torrents']} torrents, {s['peers']} peers"
        f"{' (one swarm, each peer at its own address)' if s['swarm_peers'] else ''}, {report['cpus']} cpus"
    )
    print(f"{'contender':<24}{'announces/s':>12}{'server cpu s':>14}{'client cpu s':>14}{'errors':>8}")
    for name, c in report["contenders"].items():
        print(
            f"{name:<24}{c['announces_per_s']:>12,}{c['server_cpu_seconds']:>14.2f}"
            f"{c['client_cpu_seconds']:>14.2f}{c['errors']:>8}"
        )
    if "ratio_swarmhub_to_opentracker" in report:
        print(f"swarmhub / opentracker: {report['ratio_swarmhub_to_opentracker']:.2f}x")
    if "ratio_swarmhub_to_baseline" in report:
        print(f"swarmhub / swarmhub @{s['baseline']}: {report['ratio_swarmhub_to_baseline']:.2f}x")
    for name, seconds in report["fill_seconds"].items():
        print(f"{name}: filled with {s['peers']:,} peers in {seconds} s")
    verdict = "PASS" if report["pass"] else "FAIL"
    ours = report["contenders"][OURS]["announces_per_s"]
    print(f"{verdict}: swarmhub {ours:,}/s (target >= {report['target_announces_per_s']:,.0f}/s)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (default: 3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first, 2 s each (default: 1)")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of a round (default: 5)")
    parser.add_argument(
        "--client",
        choices=("wrk", "python"),
        default="wrk" if shutil.which("wrk") else "python",
        help="load generator (default: wrk when installed: apt-get install wrk)",
    )
    parser.add_argument("--workers", type=int, default=2, help="client threads (wrk) or processes (default: 2)")
    parser.add_argument("--connections", type=int, default=32, help="concurrent connections in all (default: 32)")
    parser.add_argument("--torrents", type=int, default=100)
    parser.add_argument("--peers", type=int, default=2000)
    parser.add_argument("--swarm-peers", type=int, default=0, metavar="N", help="one swarm of N peers instead")
    parser.add_argument("--baseline", metavar="REV", help="also tracker serve of this git revision (e.g. HEAD)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="swarmhub-bench-tracker-"))
    work.chmod(0o755)  # opentracker drops to nobody
    return run_bench(args, work, bench, print_report)


if __name__ == "__main__":
    sys.exit(main())
