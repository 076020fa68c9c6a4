"""The cluster benchmark's network: one origin and N nodes, each its own host with rate-limited links.

``NetnsLab`` (root, ``ip netns``): every host is a network namespace wired to one Linux bridge by a veth
pair, addressed from 198.18.0.0/15 (RFC 2544's benchmarking range: never a real network's address). Each
veth is shaped on both ends with ``tc`` tbf, so a host's upload is the egress of its own end and its
download is the egress of the bridge's end::

    root namespace:  bridge shb<K>-br (198.18.K.1/24)
                       |-- shb<K>-v0 ==== eth0 in netns shb<K>-o   origin  198.18.K.2    up: --origin-mbps
                       |-- shb<K>-v1 ==== eth0 in netns shb<K>-n1  node 1  198.18.K.11   up/down: --node-mbps
                       ...

K is a lab slot (0..99), held with an flock on /run/shb-netlab/K.lock for the lab's lifetime, so two
benchmarks (say a test and a long run) can run side by side, each in its own /24. At the start, anything
named ``shb<K>-*`` whose slot lock nobody holds is left over from a crashed run and is removed. The lab
removes what it made on the way out: ``with`` block, atexit, and SIGTERM (turned into KeyboardInterrupt by
the caller).

``LoopbackLab`` (no root): the same hosts as 127.0.K.x addresses in the one namespace; nothing shapes the
links, so the programs rate-limit themselves (libtorrent's limits on the nodes, a token bucket in the
origin): ``Lab.shaped`` tells them.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import os
import re
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Self

__all__ = ["Host", "Lab", "LoopbackLab", "NetnsLab", "Rates", "netns_available"]

LOCKS = Path("/run/shb-netlab")
SLOTS = 100
_NAME = re.compile(r"^shb(\d+)-")


@dataclass(frozen=True)
class Rates:
    """Link rates in bytes per second (1 MB = 10^6 bytes)."""

    origin_up: float
    node_up: float
    node_down: float


@dataclass(frozen=True)
class Host:
    name: str  # "origin", "node1", ...
    address: str
    netns: str | None  # None: the machine's own namespace

    def command(self, argv: list[str]) -> list[str]:
        """``argv`` run on this host (``ip netns exec`` execs it: the pid is the program's own)."""
        return ["ip", "netns", "exec", self.netns, *argv] if self.netns else list(argv)


class Lab:
    """An origin and nodes; ``shaped`` is True when the network itself enforces ``rates``."""

    shaped = False

    def __init__(self, nodes: int, rates: Rates) -> None:
        if not 1 <= nodes <= 200:
            raise ValueError("1..200 nodes")
        self.rates = rates
        self.slot = -1
        self.origin = Host("origin", "", None)
        self.nodes: list[Host] = []
        self._count = nodes

    @property
    def controller(self) -> str:
        """The address the benchmark itself uses to reach the hosts (bridge or loopback)."""
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LoopbackLab(Lab):
    """Hosts on 127.0.K.x: origin .2, nodes .11, .12, ...; K = a free slot (other labs are elsewhere)."""

    def __init__(self, nodes: int, rates: Rates) -> None:
        super().__init__(nodes, rates)
        self._lock = _take_slot(Path(os.environ.get("TMPDIR", "/tmp")) / "shb-netlab")
        self.slot = self._lock[0]
        net = f"127.{100 + self.slot}.0"  # not 127.0.0.x, where everything else on this machine listens
        self.origin = Host("origin", f"{net}.2", None)
        self.nodes = [Host(f"node{i}", f"{net}.{10 + i}", None) for i in range(1, nodes + 1)]

    @property
    def controller(self) -> str:
        return self.origin.address

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._lock[1])


class NetnsLab(Lab):
    shaped = True

    def __init__(self, nodes: int, rates: Rates) -> None:
        super().__init__(nodes, rates)
        self._made: list[tuple[str, str]] = []  # ("netns"|"link", name), removed in reverse
        self._closed = False
        self.slot, self._fd = _take_slot(LOCKS)
        atexit.register(self.close)
        try:
            _remove_stale(self.slot)
            self._build(nodes)
        except BaseException:
            self.close()
            raise

    @property
    def controller(self) -> str:
        return f"198.18.{self.slot}.1"

    def _build(self, nodes: int) -> None:
        k = self.slot
        bridge = f"shb{k}-br"
        _ip("link", "add", bridge, "type", "bridge")
        self._made.append(("link", bridge))
        _ip("addr", "add", f"198.18.{k}.1/24", "dev", bridge)
        _ip("link", "set", bridge, "up")
        self.origin = self._host(0, "origin", f"shb{k}-o", f"198.18.{k}.2", self.rates.origin_up, None)
        self.nodes = [
            self._host(i, f"node{i}", f"shb{k}-n{i}", f"198.18.{k}.{10 + i}", self.rates.node_up, self.rates.node_down)
            for i in range(1, nodes + 1)
        ]

    def _host(self, i: int, name: str, ns: str, address: str, up: float, down: float | None) -> Host:
        k = self.slot
        outside, inside = f"shb{k}-v{i}", f"shb{k}-p{i}"
        _ip("netns", "add", ns)
        self._made.append(("netns", ns))
        _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
        self._made.append(("link", outside))  # its peer goes with it
        _ip("link", "set", inside, "netns", ns)
        _ip("link", "set", outside, "master", f"shb{k}-br", "up")
        inns = ("ip", "netns", "exec", ns)
        _run(*inns, "ip", "link", "set", inside, "name", "eth0")
        _run(*inns, "ip", "addr", "add", f"{address}/24", "dev", "eth0")
        _run(*inns, "ip", "link", "set", "eth0", "up")
        _run(*inns, "ip", "link", "set", "lo", "up")
        _run(*inns, "tc", "qdisc", "add", "dev", "eth0", "root", *_tbf(up))  # the host's upload
        if down is not None:
            _run("tc", "qdisc", "add", "dev", outside, "root", *_tbf(down))  # the host's download
        return Host(name, address, ns)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for kind, name in reversed(self._made):
            _remove(kind, name)
        with contextlib.suppress(OSError):
            os.close(self._fd)


def _tbf(rate: float) -> list[str]:
    """tbf at ``rate`` bytes/s. The bucket holds 5 ms of traffic and at least 256 KiB: veth hands tbf GSO
    packets of up to 64 KiB, and a bucket smaller than a packet makes tbf split every one (CPU)."""
    burst = max(256 * 1024, int(rate * 0.005))
    return ["tbf", "rate", f"{int(rate * 8)}bit", "burst", str(burst), "latency", "50ms"]


def _ip(*args: str) -> None:
    _run("ip", *args)


def _run(*argv: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip()}")


def _remove(kind: str, name: str) -> None:
    argv = ["ip", "netns", "del", name] if kind == "netns" else ["ip", "link", "del", name]
    subprocess.run(argv, capture_output=True)


def _take_slot(folder: Path) -> tuple[int, int]:
    """The first slot whose lock nobody holds: (slot, the open lock's fd, held until closed or exit)."""
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(SLOTS):
        fd = os.open(folder / f"{k}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        return k, fd
    raise RuntimeError(f"all {SLOTS} lab slots in {folder} are taken")


def _slot_free(k: int) -> bool:
    path = LOCKS / f"{k}.lock"
    if not path.exists():
        return True
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)  # releases the probe's lock too
    return True


def _remove_stale(mine: int) -> None:
    """Namespaces and links ``shb<K>-*`` that no live lab holds: left by a run killed with SIGKILL (whose
    programs, still running in those namespaces, are ours and are killed too). Our own slot counts: we hold
    its lock now, so whatever bears its number is left over."""
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    free: dict[int, bool] = {mine: True}
    for kind, names in (("netns", netns), ("link", re.findall(r"^\d+: ([^:@\s]+)", links, re.M))):
        for name in names:
            m = _NAME.match(name)
            if m is None or not free.setdefault(int(m.group(1)), _slot_free(int(m.group(1)))):
                continue
            if kind == "netns":
                pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout
                for pid in map(int, pids.split()):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            _remove(kind, name)


def netns_available() -> str | None:
    """None when this process can build a ``NetnsLab``, else why not."""
    if os.geteuid() != 0:
        return "not root"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install iproute2)"
    probe = f"shbprobe{os.getpid()}"[:15]
    done = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if done.returncode != 0:
        return f"ip netns add failed: {done.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None
