"""Debian's BitTorrent clients, seeding and downloading on loopback for interoperability tests.

- ``aria2_seed`` / ``aria2_download``: aria2c 1.36 (v1 torrents only: it gets a hybrid's info-hash wrong);
- ``transmission_download``: transmission-cli 3.00 (v1 only: it cannot parse a hybrid);
- ``QBittorrent``: qbittorrent-nox 4.5.2 (libtorrent 2.0 inside: v1, v2 and hybrid) through its Web API v2.

Every client runs in its own process group, with all its state (config, resume data, logs) in a folder of
its own, DHT/LSD/PeX/UPnP/NAT-PMP and uTP off, listening on 127.0.0.1 only. Every wait has a deadline; on
the way out the whole process group is killed, whatever happened. A failure raises ``ClientError`` with
the tail of the client's log.

What these clients do that a test must know (measured; see docs/NOTES.md):

- transmission 3.00 drops every peer a tracker lists on 127.0.0.0/8 or ::1 (``isMartianAddr``), so on
  loopback it never connects out: it downloads only from peers that connect *to* it (``port``), e.g. a
  seed that learns its address from a tracker with a short interval. It also waits for its next 10 s
  rechoke before it sends ``interested`` to a peer that connected to it.
- transmission-cli never exits: the ``--finish`` script marks completion, then it is killed. It has no
  SIGTERM handler (SIGTERM ends it at once), which is fine once its files are complete on disk.
- aria2c with ``--seed-time=0`` never announces ``completed`` (``started``, then ``stopped``). A seeding
  aria2 is ready when its ``--on-bt-download-complete`` hook has run after ``--check-integrity``.
- qBittorrent's id for a hybrid torrent is its v2 info-hash cut to 40 hex digits (``qbittorrent_id``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import httpx

from swarmhub.bt.metainfo import Torrent, parse_torrent

__all__ = [
    "ARIA2C",
    "QBITTORRENT_NOX",
    "TRANSMISSION_CLI",
    "Aria2Seed",
    "ClientError",
    "QBittorrent",
    "aria2_download",
    "aria2_seed",
    "free_port",
    "qbittorrent_id",
    "transmission_download",
]

ARIA2C = shutil.which("aria2c")
TRANSMISSION_CLI = shutil.which("transmission-cli")
QBITTORRENT_NOX = shutil.which("qbittorrent-nox")

_POLL = 0.05


class ClientError(RuntimeError):
    """A client failed, refused, or missed its deadline."""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the client binds it a moment later; the race is rare)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _need(binary: str | None, name: str) -> str:
    if binary is None:
        raise ClientError(f"{name} not found (Debian: apt-get install {name})")
    return binary


class _Process:
    """A client in its own process group, stdout and stderr to ``log_path``; ``kill()`` ends the group.

    ``app_log`` is a log the client writes itself; its tail goes into failures too.
    """

    def __init__(
        self,
        argv: Sequence[str | Path],
        log_path: Path,
        env: Mapping[str, str] | None = None,
        app_log: Path | None = None,
    ) -> None:
        self.argv = [str(a) for a in argv]
        self.log_path = log_path
        self.app_log = app_log
        self._log: IO[bytes] = open(log_path, "ab")  # noqa: SIM115 - closed in kill()
        try:
            self.proc = subprocess.Popen(
                self.argv,
                env=dict(env) if env is not None else None,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except BaseException:
            self._log.close()
            raise

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        return _read(self.log_path)

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(_tail(path, lines) for path in (self.log_path, self.app_log) if path is not None)

    def fail(self, message: str) -> ClientError:
        return ClientError(f"{Path(self.argv[0]).name}: {message}\n{self.log_tail()}")

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise self.fail(f"still running after {timeout:.0f}s") from None

    def kill(self, grace: float = 5.0) -> None:
        """SIGTERM to the group, SIGKILL after ``grace`` seconds; always reaps and closes the log."""
        try:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, sig)
                try:
                    self.proc.wait(grace)
                    break
                except subprocess.TimeoutExpired:
                    continue
            else:
                self.proc.wait()
            with contextlib.suppress(ProcessLookupError):  # children that outlived the leader
                os.killpg(self.proc.pid, signal.SIGKILL)
        finally:
            self._log.close()


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace").replace("\r", "\n")  # progress lines end in \r
    except FileNotFoundError:
        return ""


def _tail(path: Path, lines: int) -> str:
    kept = [line for line in _read(path).splitlines() if line.strip()][-lines:]
    return f"--- {path} (last {len(kept)} lines) ---\n" + "\n".join(kept)


def _wait_for(condition: Callable[[], bool], deadline: float, process: _Process, what: str) -> None:
    while not condition():
        if not process.alive:
            raise process.fail(f"exited with code {process.proc.returncode} before {what}")
        if time.monotonic() > deadline:
            raise process.fail(f"timed out waiting for {what}")
        time.sleep(_POLL)


def _files_complete(torrent: Torrent, root: Path) -> bool:
    """Every non-empty file at its full size (transmission 3.00 never creates a torrent's empty files)."""
    base = root / torrent.name
    return all((p := base / f.path).is_file() and p.stat().st_size == f.size for f in torrent.files if f.size)


# ------------------------------------------------------------------------------------------------ aria2


def _aria2_argv(torrent: Path | str, directory: Path, port: int, *extra: str) -> list[str]:
    return [
        _need(ARIA2C, "aria2"),
        "--no-conf",
        f"--dir={directory}",
        f"--listen-port={port}",
        "--interface=127.0.0.1",
        "--disable-ipv6=true",
        "--enable-dht=false",
        "--enable-dht6=false",
        "--bt-enable-lpd=false",
        "--enable-peer-exchange=false",
        "--bt-tracker-connect-timeout=5",
        "--bt-tracker-timeout=5",
        "--file-allocation=none",
        "--auto-file-renaming=false",
        "--summary-interval=0",
        "--console-log-level=notice",
        *extra,
        str(torrent),
    ]


@dataclass
class Aria2Seed:
    port: int
    process: _Process

    def log_tail(self) -> str:
        return self.process.log_tail()


@contextlib.contextmanager
def aria2_seed(torrent: Path, data_dir: Path, port: int, *, ready_timeout: float = 20.0) -> Iterator[Aria2Seed]:
    """aria2c seeding the files under ``data_dir/<name>/`` on 127.0.0.1:``port`` until the block ends.

    Yields once aria2 has verified every piece (``--check-integrity``: its ``--on-bt-download-complete``
    hook runs when the check finds the download complete) and listens. It announces to the torrent's
    trackers, if any.
    """
    tmp = Path(tempfile.mkdtemp(prefix="aria2-seed-"))
    verified = tmp / "verified"
    hook = tmp / "verified.sh"
    hook.write_text(f"#!/bin/sh\ntouch {shlex.quote(str(verified))}\n")
    hook.chmod(0o755)
    extra = (
        "--check-integrity=true",
        "--bt-seed-unverified=false",
        "--seed-ratio=0.0",
        f"--on-bt-download-complete={hook}",
    )
    process = _Process(_aria2_argv(torrent, data_dir, port, *extra), tmp / "aria2c.log")
    try:
        deadline = time.monotonic() + ready_timeout
        listening = f"listening on TCP port {port}"
        _wait_for(lambda: verified.exists() and listening in process.log(), deadline, process, "verified seeding")
        yield Aria2Seed(port, process)
    finally:
        process.kill()
        shutil.rmtree(tmp, ignore_errors=True)


def aria2_download(torrent: Path | str, out_dir: Path, timeout: float = 30.0, *, port: int | None = None) -> None:
    """aria2c downloads ``torrent`` (a .torrent file, or a magnet link) into ``out_dir/<name>/``, finding peers
    through its trackers only."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="aria2-download-") as log_dir:
        argv = _aria2_argv(torrent, out_dir, port or free_port(), "--seed-time=0", "--bt-stop-timeout=0")
        process = _Process(argv, Path(log_dir) / "aria2c.log")
        try:
            code = process.wait(timeout)
            if code != 0:
                raise process.fail(f"exited with code {code}")
        finally:
            process.kill()


# ----------------------------------------------------------------------------------------- transmission


def transmission_download(torrent: Path, out_dir: Path, timeout: float = 30.0, *, port: int | None = None) -> None:
    """transmission-cli downloads ``torrent`` into ``out_dir/<name>/``; returns once every file is there.

    transmission listens on 127.0.0.1:``port`` and ignores loopback peers it is told about, so a seed
    must connect to it (module docstring). Completion is its ``--finish`` script having run and every
    file having its full size; then it is killed (it never exits by itself).
    """
    meta = parse_torrent(torrent.read_bytes())
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="transmission-") as tmp:
        config, done = Path(tmp) / "config", Path(tmp) / "finished"
        config.mkdir()
        settings = {
            "bind-address-ipv4": "127.0.0.1",
            "bind-address-ipv6": "::1",
            "peer-port": port or free_port(),
            "peer-port-random-on-start": False,
            "dht-enabled": False,
            "lpd-enabled": False,
            "pex-enabled": False,
            "utp-enabled": False,
            "port-forwarding-enabled": False,
            "rpc-enabled": False,
            "cache-size-mb": 0,  # no write cache: blocks go to disk as they arrive
            "ratio-limit-enabled": False,
            "message-level": 2,
        }
        (config / "settings.json").write_text(json.dumps(settings))
        script = Path(tmp) / "finished.sh"
        script.write_text(f"#!/bin/sh\ntouch {shlex.quote(str(done))}\n")
        script.chmod(0o755)
        argv: list[str | Path] = [
            _need(TRANSMISSION_CLI, "transmission-cli"),
            "-g",
            config,
            "-w",
            out_dir,
            "-f",
            script,
            torrent,
        ]
        process = _Process(argv, Path(tmp) / "transmission.log", env={**os.environ, "HOME": tmp})
        try:
            deadline = time.monotonic() + timeout
            _wait_for(lambda: done.exists() and _files_complete(meta, out_dir), deadline, process, "the download")
        finally:
            process.kill()


# --------------------------------------------------------------------------------------------- qBittorrent

_QBT_SEEDING = frozenset({"uploading", "stalledUP", "queuedUP", "forcedUP"})
_QBT_FAILED = frozenset({"error", "missingFiles"})


def _qbittorrent_conf(port: int, save_path: Path) -> str:
    """qBittorrent 4.5.2's own keys ([Section] and Key\\Sub as QSettings writes them)."""
    return "\n".join(
        [
            "[LegalNotice]",
            "Accepted=true",  # otherwise qbittorrent-nox asks on stdin and waits
            "",
            "[BitTorrent]",
            "Session\\DHTEnabled=false",
            "Session\\PeXEnabled=false",
            "Session\\LSDEnabled=false",
            f"Session\\Port={port}",
            "Session\\InterfaceAddress=127.0.0.1",  # an address alone: listen there only (no SO_BINDTODEVICE)
            "Session\\BTProtocol=TCP",  # no uTP connections (libtorrent still opens its UDP socket)
            "Session\\MultiConnectionsPerIp=true",  # every peer here is 127.0.0.1
            "Session\\QueueingSystemEnabled=false",  # never queued behind another torrent
            "Session\\AddTorrentPaused=false",
            f"Session\\DefaultSavePath={save_path}",
            "",
            "[Network]",
            "PortForwardingEnabled=false",  # UPnP and NAT-PMP
            "",
            "[Preferences]",
            "Connection\\ResolvePeerCountries=false",  # else it downloads a GeoIP database at start
            "WebUI\\Address=127.0.0.1",
            "WebUI\\LocalHostAuth=false",  # no login from 127.0.0.1
            "WebUI\\UseUPnP=false",
            "WebUI\\HostHeaderValidation=false",
            "WebUI\\CSRFProtection=false",
            "",
        ]
    )


def qbittorrent_id(torrent: Torrent) -> str:
    """qBittorrent's torrent id (``hash`` in its API): libtorrent's ``get_best()``, so for a hybrid the v2
    info-hash cut to 40 hex digits, not the v1 one."""
    if torrent.info_hash_v2 is not None:
        return torrent.info_hash_v2[:40]
    assert torrent.info_hash_v1 is not None
    return torrent.info_hash_v1


class QBittorrent:
    """qbittorrent-nox with its own profile folder, driven through its Web API v2 on 127.0.0.1.

    >>> with QBittorrent(tmp_path / "qbt") as qbt:
    ...     h = qbt.add(torrent_path, save_path)
    ...     qbt.add_peers(h, [f"127.0.0.1:{seed_port}"])
    ...     qbt.wait_complete(h, timeout=20)
    """

    def __init__(self, profile: Path, *, port: int = 0, webui_port: int = 0, startup_timeout: float = 20.0) -> None:
        self.profile = Path(profile)
        self.port = port or free_port()
        self.webui_port = webui_port or free_port()
        self.startup_timeout = startup_timeout
        self.api = f"http://127.0.0.1:{self.webui_port}/api/v2"
        self._process: _Process | None = None
        self._http = httpx.Client(timeout=10.0, trust_env=False)

    # -- lifecycle

    def start(self) -> QBittorrent:
        if self._process is not None:
            raise RuntimeError("qbittorrent-nox already started")
        config = self.profile / "qBittorrent" / "config"
        config.mkdir(parents=True, exist_ok=True)
        (config / "qBittorrent.conf").write_text(_qbittorrent_conf(self.port, self.profile / "downloads"))
        env = {k: v for k, v in os.environ.items() if not k.startswith("QBT_")}  # QBT_* are its options
        env.update(HOME=str(self.profile), XDG_CONFIG_HOME=str(self.profile), XDG_DATA_HOME=str(self.profile))
        argv = [
            _need(QBITTORRENT_NOX, "qbittorrent-nox"),
            f"--profile={self.profile}",
            f"--webui-port={self.webui_port}",
        ]
        app_log = self.profile / "qBittorrent" / "data" / "logs" / "qbittorrent.log"
        self._process = _Process(argv, self.profile / "qbittorrent-nox.log", env, app_log)
        try:
            deadline = time.monotonic() + self.startup_timeout
            _wait_for(self._answers, deadline, self._process, "the Web UI")
        except BaseException:
            self.stop()
            raise
        return self

    def _answers(self) -> bool:
        try:
            return self._http.get(f"{self.api}/app/version").status_code == 200
        except httpx.TransportError:
            return False

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            with contextlib.suppress(httpx.HTTPError):
                self._http.post(f"{self.api}/app/shutdown", timeout=2.0)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.proc.wait(5.0)
            process.kill()
        self._http.close()

    def __enter__(self) -> QBittorrent:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- Web API

    @property
    def process(self) -> _Process:
        if self._process is None:
            raise RuntimeError("qbittorrent-nox not running")
        return self._process

    def _call(self, method: str, endpoint: str, **kwargs: Any) -> httpx.Response:
        response = self._http.request(method, f"{self.api}/{endpoint}", **kwargs)
        if response.status_code != 200:
            raise self.process.fail(f"{endpoint}: HTTP {response.status_code} {response.text[:200]}")
        return response

    def preferences(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "app/preferences").json()
        return result

    def add(
        self,
        torrent: Path,
        save_path: Path,
        *,
        seeding: bool = False,
        skip_checking: bool = False,
        timeout: float = 20.0,
    ) -> str:
        """Add ``torrent`` (files under ``save_path/<name>/``) and return its id once qBittorrent lists it.

        ``seeding``: the files are all there; wait until qBittorrent has checked them (unless
        ``skip_checking``) and seeds. Otherwise it is a download, and this returns at once.
        """
        data = torrent.read_bytes()
        torrent_id = qbittorrent_id(parse_torrent(data))
        fields = {
            "savepath": str(save_path),
            "paused": "false",
            "skip_checking": "true" if skip_checking else "false",
            "autoTMM": "false",
            "contentLayout": "Original",
        }
        response = self._call("POST", "torrents/add", data=fields, files={"torrents": (torrent.name, data)})
        if response.text.strip() != "Ok.":
            raise self.process.fail(f"refused {torrent}: {response.text!r}")
        deadline = time.monotonic() + timeout
        _wait_for(lambda: self._listed(torrent_id), deadline, self.process, f"{torrent_id} to be listed")
        if seeding:
            _wait_for(lambda: self._seeding(torrent_id), deadline, self.process, f"{torrent_id} to seed")
        return torrent_id

    def _listed(self, torrent_id: str) -> bool:
        return bool(self._call("GET", "torrents/info", params={"hashes": torrent_id}).json())

    def _seeding(self, torrent_id: str) -> bool:
        info = self.info(torrent_id)
        return info["progress"] == 1 and info["state"] in _QBT_SEEDING

    def add_peers(self, torrent_id: str, peers: Sequence[str]) -> None:
        """Tell qBittorrent to connect to ``peers`` (``"127.0.0.1:6881"``)."""
        self._call("POST", "torrents/addPeers", data={"hashes": torrent_id, "peers": "|".join(peers)})

    def info(self, torrent_id: str) -> dict[str, Any]:
        """The torrent's entry in ``/torrents/info``: ``progress`` (0..1), ``state``, ``amount_left``..."""
        listed = self._call("GET", "torrents/info", params={"hashes": torrent_id}).json()
        if not listed:
            raise self.process.fail(f"{torrent_id} is not listed")
        entry: dict[str, Any] = listed[0]
        if entry["state"] in _QBT_FAILED:
            raise self.process.fail(f"{torrent_id} is in state {entry['state']}")
        return entry

    def wait_complete(self, torrent_id: str, timeout: float = 30.0) -> dict[str, Any]:
        """Wait until every byte is downloaded and verified; returns the final ``info``."""
        deadline = time.monotonic() + timeout
        _wait_for(lambda: self.info(torrent_id)["amount_left"] == 0, deadline, self.process, f"{torrent_id}")
        _wait_for(lambda: self._seeding(torrent_id), deadline, self.process, f"{torrent_id} to finish")
        return self.info(torrent_id)
