"""A libtorrent session behind a small typed interface: profiles, torrents by info-hash, events.

The rest of swarmhub never sees a libtorrent object. Alerts are polled (``wait_for_alert`` in one thread,
never a Python ``set_alert_notify`` callback: it deadlocks) and turned into our frozen ``Event``s, which an
asyncio consumer reads from ``Engine.events()``.

Settings every profile shares, each a trap measured on this kind of machine (see docs/NOTES.md):
- uTP off: libtorrent picks uTP on loopback and crawls at 6-9 MB/s; TCP does 140-240 MB/s;
- ``allow_multiple_connections_per_ip``: several nodes behind one address must all be reachable;
- ``close_redundant_connections`` off and a short ``min_reconnect_time``: peers otherwise drop a finished
  seeder as "uninteresting" before they have its last piece, then wait 60 s;
- a 16 MiB write queue (not 100 MiB) and a hashing thread per core: less memory, faster pulls.
Profiles: ``isolated`` (127.0.0.1, no DHT/LSD/UPnP/NAT-PMP, a local tracker's interval followed),
``public`` (DHT, LSD, port mapping, encryption preferred), ``cluster`` (LAN: LSD on, no public DHT, no port
mapping). The public profile can join a private DHT instead of the public one (``dht_bootstrap``: a LAN, or
loopback in tests).
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import functools
import logging
import os
import queue
import secrets
import string
import threading
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import libtorrent as lt

from swarmhub import __version__
from swarmhub.errors import ConfigError, MetainfoError, SwarmhubError

__all__ = [
    "DISK_IO",
    "INCONSISTENT_HASHES",
    "MANY_FILES",
    "Engine",
    "Event",
    "FileRenamed",
    "Flushed",
    "HashFailed",
    "MetadataReceived",
    "PeerBanned",
    "PieceFinished",
    "PieceRead",
    "Profile",
    "StorageFile",
    "StorageLayout",
    "TlsIdentity",
    "TorrentChecked",
    "TorrentError",
    "TorrentFileReady",
    "TorrentFinished",
    "TorrentStatus",
    "dht_bootstrap_settings",
    "disk_io_for",
    "new_peer_id",
    "settings_for",
    "storage_layout",
]

Profile = Literal["isolated", "public", "cluster"]

log = logging.getLogger(__name__)

_ALERTS = (
    lt.alert_category.status
    | lt.alert_category.error
    | lt.alert_category.storage
    | lt.alert_category.peer
    | getattr(lt.alert_category, "piece_progress", 0)
)


def dht_bootstrap_settings(nodes: Sequence[tuple[str, int]]) -> dict[str, Any]:
    """Join the DHT through ``nodes`` (host, port), not libtorrent's public routers: a private DHT of our own
    nodes. An empty list: the first node of one (the others bootstrap off it).

    Our nodes often share an address (loopback) or a /24 (a LAN): libtorrent's defaults keep one node per IP
    (per /24 for IPv4) in routing tables and searches, and ignore some real cloud ranges ("dark internet").
    """
    return {
        "dht_bootstrap_nodes": ",".join(
            f"[{host}]:{port}" if ":" in host else f"{host}:{port}" for host, port in nodes
        ),
        "dht_restrict_routing_ips": False,
        "dht_restrict_search_ips": False,
        "dht_ignore_dark_internet": False,
        # a node that starts before its bootstrap node answers is on the DHT only from its next announce: at
        # libtorrent's 15 min a peer looking for it 20 s later found nothing in 60 s, at 60 s it did after 44 s
        # (loopback, measured); a private DHT has few nodes, announces cost it nothing
        "dht_announce_interval": 60,
    }


_STATUS_ALL = 0x7FFFFFFF  # torrent_handle.status()'s default: every query_* flag


def new_peer_id() -> bytes:
    """A random peer id in Azureus style (``-SH0100-`` and 12 random characters), for ``Engine(peer_id=...)``."""
    alphabet = string.ascii_letters + string.digits
    return (
        f"-SH{__version__.replace('.', '')[:4]:0<4}-".encode()
        + "".join(secrets.choice(alphabet) for _ in range(12)).encode()
    )


# libtorrent's disk I/O back-ends, chosen with the pseudo-setting ``disk_io`` (``SWARMHUB_LIBTORRENT``), measured
# (docs/NOTES.md, "The disk I/O"). pread, 2.1's default: the fastest on big files, but its cache never evicts a
# piece a pad file ends, so a hybrid of many small files slows down as it goes (30,000 files from one seeder:
# 128-179 s, against 9 s for 10,000). posix: 30,000 files in 42 s, 2 GB of big files ~15% slower. mmap: 31 s,
# but a node crashed (SIGSEGV) in a chaos run with a corrupt peer; not offered.
DISK_IO = {"pread": "pread_disk_io_constructor", "posix": "posix_disk_io_constructor"}
MANY_FILES = 10_000  # from here on a pull's files are many small ones to pread: posix (``disk_io_for``)


def disk_io_for(files: int) -> str:
    """The disk I/O for an engine whose torrents hold ``files`` files (0: not known): pread, past
    ``MANY_FILES`` posix. A hybrid pads every file, so files count the pads pread never evicts."""
    return "posix" if files >= MANY_FILES else "pread"


def _disk_io(name: object) -> str:
    if name not in DISK_IO:
        raise ConfigError(
            f"disk_io {name!r} is not one of {', '.join(DISK_IO)}",
            hint='e.g. SWARMHUB_LIBTORRENT=\'{"disk_io": "posix"}\' for datasets of many small files',
        )
    return DISK_IO[str(name)]


def settings_for(
    profile: Profile, listen: str | None = None, dht_bootstrap: Sequence[tuple[str, int]] | None = None
) -> dict[str, Any]:
    """libtorrent settings of a profile; ``dht_bootstrap`` (public profile only): see ``dht_bootstrap_settings``."""
    if dht_bootstrap is not None and profile != "public":
        raise ConfigError(
            f"DHT bootstrap nodes given to a {profile} session, which has no DHT",
            hint="use the public profile (--public)",
        )
    common: dict[str, Any] = {
        "enable_outgoing_utp": False,
        "enable_incoming_utp": False,
        "allow_multiple_connections_per_ip": True,
        "close_redundant_connections": False,
        "min_reconnect_time": 1,
        # every tracker of every tier: a cluster's coordinator is added to each torrent beside the torrent's own
        # tracker, and libtorrent asked only the first that answered (the coordinator's, which orders peers
        # by rack and admits the cluster's nodes, was never asked)
        "announce_to_all_trackers": True,
        "announce_to_all_tiers": True,
        # measured on a 2 GB pull over loopback (docs/NOTES.md): the default 100 MiB write queue only costs
        # memory (peak RSS 200 -> 100 MB), one hashing thread is the bottleneck (209-262 -> 244-268 MB/s)
        "max_queued_disk_bytes": 16 * 1024 * 1024,
        "hashing_threads": max(2, os.cpu_count() or 2),
        # peers are dialled, and rate quota dealt, once per tick: at the default 500 ms a torrent added for a
        # reader got its first piece from a loopback peer after ~0.6 s, at 100 ms after ~0.17 s, for ~0.3 ms
        # more CPU per idle second (docs/NOTES.md)
        "tick_interval": 100,
        "alert_mask": _ALERTS,
        "alert_queue_size": 10_000,
        "user_agent": f"swarmhub/{__version__} libtorrent/{lt.__version__}",
    }
    if profile == "isolated":
        return {
            **common,
            # loopback only: follow a local tracker's interval however short (libtorrent's floor is 300 s)
            "min_announce_interval": 1,
            "listen_interfaces": listen or "127.0.0.1:0",
            "enable_dht": False,
            "enable_lsd": False,
            "enable_upnp": False,
            "enable_natpmp": False,
        }
    if profile == "cluster":
        return {
            **common,
            "listen_interfaces": listen or "0.0.0.0:6881,[::]:6881",
            "enable_dht": False,
            "enable_lsd": True,
            "enable_upnp": False,
            "enable_natpmp": False,
            "dht_restrict_routing_ips": False,
            "dht_restrict_search_ips": False,
        }
    private_dht = dht_bootstrap_settings(dht_bootstrap) if dht_bootstrap is not None else {}
    return {**common, "listen_interfaces": listen or "0.0.0.0:6881,[::]:6881", **private_dht}


# ------------------------------------------------------------------------------------------------ events


@dataclass(frozen=True)
class Event:
    info_hash: str  # v2 (SHA-256) hex when the torrent has one, else v1


@dataclass(frozen=True)
class PieceFinished(Event):
    piece: int


@dataclass(frozen=True)
class HashFailed(Event):
    piece: int


@dataclass(frozen=True)
class PieceRead(Event):
    """A piece's bytes, asked for by ``read_piece`` or a deadline; ``error`` set when it could not be read."""

    piece: int
    data: bytes
    error: str | None


@dataclass(frozen=True)
class TorrentChecked(Event):
    pass


@dataclass(frozen=True)
class TorrentFinished(Event):
    pass


INCONSISTENT_HASHES = 217  # libtorrent: "v1 and v2 hashes do not describe the same data" (a hybrid's piece)


@dataclass(frozen=True)
class TorrentError(Event):
    message: str
    code: int | None = None  # libtorrent's own error value (e.g. INCONSISTENT_HASHES); None for other categories


@dataclass(frozen=True)
class FileRenamed(Event):
    index: int  # libtorrent file index (pads counted)
    error: str | None  # None: renamed; else why not


@dataclass(frozen=True)
class PeerBanned(Event):
    peer: str  # host:port


@dataclass(frozen=True)
class MetadataReceived(Event):
    pass


@dataclass(frozen=True)
class TorrentFileReady(Event):
    """The .torrent as libtorrent now knows it (v2 piece layers included once verified); b"" if it has none."""

    data: bytes


@dataclass(frozen=True)
class Flushed(Event):
    """Every write queued before the matching ``Engine.flush`` is on disk (one event per call, in order)."""


@dataclass(frozen=True)
class TorrentStatus:
    info_hash: str
    state: str
    progress: float  # 0..1 of the wanted pieces
    total_done: int
    num_peers: int
    download_rate: int
    upload_rate: int
    pieces: tuple[bool, ...]
    error: str | None
    payload_download: int  # bytes of pieces received from peers this session (not add_piece)
    payload_upload: int
    total_wanted: int
    total_wanted_done: int
    is_seeding: bool


@dataclass(frozen=True)
class StorageFile:
    index: int  # libtorrent's file index (pad files counted)
    path: str  # as in the torrent, below its name
    size: int
    offset: int  # in the piece stream
    pad: bool

    @property
    def end(self) -> int:
        return self.offset + self.size


@dataclass(frozen=True)
class StorageLayout:
    """How libtorrent lays a torrent's files over its pieces (hybrid and v2: pad files included)."""

    piece_size: int
    num_pieces: int
    total_size: int
    files: tuple[StorageFile, ...]
    v1_hashes: bytes | None = None  # the v1 pieces' SHA-1s, 20 bytes each (v1 and hybrid torrents)

    def piece_length(self, piece: int) -> int:
        return min(self.piece_size, self.total_size - piece * self.piece_size)

    def pieces_of(self, file: StorageFile) -> range:
        """The pieces holding any byte of ``file`` (empty for an empty file)."""
        if not file.size:
            return range(0)
        return range(file.offset // self.piece_size, (file.end - 1) // self.piece_size + 1)

    def segments(self, piece: int) -> list[tuple[StorageFile, int, int]]:
        """(file, offset in file, length) for each run of bytes of ``piece``, pads included, in order."""
        start = piece * self.piece_size
        return self.segments_between(start, start + self.piece_length(piece))

    def segments_between(self, start: int, end: int) -> list[tuple[StorageFile, int, int]]:
        """(file, offset in file, length) for each run of bytes in ``[start, end)`` of the piece stream."""
        out: list[tuple[StorageFile, int, int]] = []
        files, offsets = self.files, self._offsets
        i = max(0, bisect.bisect_right(offsets, start) - 1)  # a dataset of 100,000 files: no walk over them all
        while i < len(files) and files[i].offset < end:
            f = files[i]
            lo, hi = max(start, f.offset), min(end, f.end)
            if lo < hi:
                out.append((f, lo - f.offset, hi - lo))
            i += 1
        return out

    @functools.cached_property
    def _offsets(self) -> list[int]:
        return [f.offset for f in self.files]  # in storage order: ascending


def _torrent_info(torrent: bytes) -> Any:
    try:
        return lt.torrent_info(torrent)
    except RuntimeError as exc:
        raise MetainfoError(f"libtorrent refuses it: {exc}") from exc


def storage_layout(torrent: bytes) -> StorageLayout:
    """libtorrent's file storage of a torrent, pads included: the truth for renames and piece maps."""
    info = _torrent_info(torrent)
    fs = info.files()
    name_prefix = fs.name() + "/"
    files = []
    for i in range(fs.num_files()):
        path = fs.file_path(i)
        files.append(
            StorageFile(
                index=i,
                path=path[len(name_prefix) :] if path.startswith(name_prefix) else path,
                size=int(fs.file_size(i)),
                offset=int(fs.file_offset(i)),
                pad=bool(fs.file_flags(i) & lt.file_storage.flag_pad_file),
            )
        )
    v1 = b"".join(info.hash_for_piece(i) for i in range(info.num_pieces())) if info.info_hashes().has_v1() else None
    return StorageLayout(int(fs.piece_length()), int(fs.num_pieces()), int(fs.total_size()), tuple(files), v1)


def _key(hashes: Any) -> str:
    return str(hashes.v2) if hashes.has_v2() else str(hashes.v1)


def _translate(alert: Any) -> Event | None:
    if isinstance(alert, lt.alerts_dropped_alert):  # a lost PieceFinished or Flushed leaves a waiter waiting
        log.warning("libtorrent dropped alerts (its queue overflowed): %s", alert.message())
        return None
    handle = getattr(alert, "handle", None)
    if handle is None or not handle.is_valid():
        return None
    key = _key(handle.info_hashes())
    if isinstance(alert, lt.piece_finished_alert):
        return PieceFinished(key, int(alert.piece_index))
    if isinstance(alert, lt.hash_failed_alert):
        return HashFailed(key, int(alert.piece_index))
    if isinstance(alert, lt.torrent_checked_alert):
        return TorrentChecked(key)
    if isinstance(alert, lt.torrent_finished_alert):
        return TorrentFinished(key)
    if isinstance(alert, lt.torrent_error_alert | lt.file_error_alert):
        error = alert.error
        code = int(error.value()) if error.category().name() == "libtorrent" else None
        return TorrentError(key, alert.message(), code)
    if isinstance(alert, lt.file_renamed_alert):
        return FileRenamed(key, int(alert.index), None)
    if isinstance(alert, lt.file_rename_failed_alert):
        return FileRenamed(key, int(alert.index), alert.error.message())
    if isinstance(alert, lt.peer_ban_alert):
        host, port = alert.endpoint
        return PeerBanned(key, f"{host}:{port}")
    if isinstance(alert, lt.metadata_received_alert):
        return MetadataReceived(key)
    if isinstance(alert, lt.read_piece_alert):
        failed = alert.error.value() != 0
        return PieceRead(
            key, int(alert.piece), b"" if failed else bytes(alert.buffer), alert.error.message() if failed else None
        )
    if isinstance(alert, lt.cache_flushed_alert):
        return Flushed(key)
    if isinstance(alert, lt.save_resume_data_alert):
        try:  # write_torrent_file_buf() decodes the bytes as UTF-8 in 2.1.1 and fails; bencode the entry
            return TorrentFileReady(key, bytes(lt.bencode(lt.write_torrent_file(alert.params, 0))))  # type: ignore[arg-type]
        except RuntimeError:
            return TorrentFileReady(key, b"")
    return None


# ------------------------------------------------------------------------------------------------ engine


@dataclass(frozen=True)
class TlsIdentity:
    """A node's certificate, key and DH parameters (PEM files) for SSL torrents."""

    cert: Path
    key: Path
    dh: Path


def _with_tls_ports(interfaces: str) -> str:
    """Each ``host:port`` gets a TLS twin on the next port (``s`` suffix); port 0 stays any free port."""
    out = []
    for entry in interfaces.split(","):
        host, _, port = entry.rpartition(":")
        if port.isdigit():
            out += [entry, f"{host}:{int(port) + 1 if int(port) else 0}s"]
        else:
            out.append(entry)
    return ",".join(out)


UNCLAIMED_EVENTS = 100_000


class _Subscriber:
    """One consumer of events: its queue, filled by the alert thread, and the event that wakes its loop."""

    def __init__(self, key: str | None, loop: asyncio.AbstractEventLoop) -> None:
        self.key = key
        self.loop = loop
        self.pending: queue.SimpleQueue[Event] = queue.SimpleQueue()
        self.wakeup = asyncio.Event()

    def wake(self) -> None:
        if not self.pending.empty() and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.wakeup.set)


class Engine:
    """One libtorrent session. Methods are thread-safe (libtorrent's are); events go to every subscriber."""

    def __init__(
        self,
        profile: Profile = "isolated",
        *,
        listen: str | None = None,
        extra: dict[str, Any] | None = None,
        tls: TlsIdentity | None = None,
        dht_bootstrap: Sequence[tuple[str, int]] | None = None,
        peer_id: bytes | None = None,
    ) -> None:
        self.profile = profile
        self.tls = tls
        settings = {**settings_for(profile, listen, dht_bootstrap), **(extra or {})}
        # libtorrent draws a random peer id per torrent, which it does not tell: a cluster node fixes its own
        # for the session so that it knows how its peers know it (``cluster.split``)
        self.peer_id = peer_id
        if peer_id is not None:
            if len(peer_id) != 20 or not peer_id.isascii():
                raise ConfigError(f"a peer id is 20 ASCII bytes, not {peer_id!r}")
            settings["peer_fingerprint"] = peer_id.decode("ascii")  # 20 bytes: the whole id
        if tls is not None:  # SSL torrents' peers connect to a second, TLS, port
            settings["listen_interfaces"] = _with_tls_ports(str(settings["listen_interfaces"]))
        try:
            params = lt.session_params()
            self.disk_io = str(settings.pop("disk_io", "pread"))  # which back-end (``DISK_IO``)
            params.disk_io_constructor = _disk_io(self.disk_io)
            params.settings = settings  # type: ignore[assignment]  # the binding takes a dict
            self._session = lt.session(params)
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"libtorrent refuses a setting: {exc}", hint="check SWARMHUB_LIBTORRENT") from exc
        # on a DHT, peers are found there by info-hash (libtorrent's default is on: read what it has)
        self.dht = bool(self._session.get_settings()["enable_dht"])
        self._handles: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._subscribers: list[_Subscriber] = []
        # events no subscriber took yet, so a consumer that starts late loses nothing (bounded: a torrent
        # nobody listens to must not grow it for ever)
        self._unclaimed: collections.deque[Event] = collections.deque(maxlen=UNCLAIMED_EVENTS)
        self._closed = threading.Event()
        self._pump = threading.Thread(target=self._pump_alerts, name="swarmhub-alerts", daemon=True)
        self._pump.start()

    @property
    def listen_port(self) -> int:
        return int(self._session.listen_port())

    @property
    def tls_port(self) -> int | None:
        """Where peers of SSL torrents (a cluster's) connect, when this engine has a TLS identity."""
        return int(self._session.ssl_listen_port()) if self.tls is not None else None

    # -------------------------------------------------------------------------------------- torrents

    def add(
        self,
        torrent: bytes,
        save_path: Path,
        *,
        seed_mode: bool = False,
        file_priorities: Sequence[int] | None = None,
        renamed: Mapping[int, str] | None = None,
        have: Sequence[bool] | None = None,
        part_file_dir: Path | None = None,
        upload_only: bool = False,
        web_seeds: bool = True,
        trackers: Sequence[str] = (),
        sequential: bool = False,
    ) -> str:
        """Start a torrent; returns its key (v2 info-hash, else v1).

        ``seed_mode`` trusts every file; ``have`` trusts exactly those pieces (no check at all: the caller
        verified them, e.g. whole files against their etags). ``renamed`` maps file indices to paths
        (relative to ``save_path``, or absolute); ``part_file_dir`` keeps libtorrent's part file (bytes of
        unwanted files that share a piece with wanted ones) out of ``save_path``. ``upload_only`` never
        downloads (a seeder of verified files that must not be written to). ``web_seeds=False``: libtorrent
        does not use the torrent's BEP 19 web seeds (it would fetch from them eagerly, peers or not, and drops
        a file for the session after one error). ``sequential``: pieces are asked for in order (not rarest
        first), so a reader can follow the download (the shard agent hashes the file while it arrives).
        """
        params = lt.add_torrent_params()
        params.ti = _torrent_info(torrent)
        params.save_path = str(save_path)
        params.flags &= ~(lt.torrent_flags.auto_managed | lt.torrent_flags.paused)
        if seed_mode:
            params.flags |= lt.torrent_flags.seed_mode
        if upload_only:
            params.flags |= lt.torrent_flags.upload_mode
        if sequential:
            params.flags |= lt.torrent_flags.sequential_download
        if not web_seeds:  # the torrent's url-list is ignored (pull fetches from the origin itself)
            params.url_seeds = []
            params.flags |= lt.torrent_flags.override_web_seeds
        if have is not None:
            params.have_pieces = list(have)
            params.verified_pieces = list(have)
            params.flags |= lt.torrent_flags.no_verify_files
        if file_priorities is not None:
            params.file_priorities = list(file_priorities)
        if renamed:
            params.renamed_files = {int(i): str(p) for i, p in renamed.items()}
        if part_file_dir is not None:
            params.part_file_dir = str(part_file_dir)
        if params.ti.ssl_cert() and self.tls is None:
            raise ConfigError(
                "this torrent is a cluster's (TLS peers only) and this node has no cluster identity",
                hint="give the node its identity: --cluster-identity DIR (swarmhub cluster join)",
            )
        handle = self._session.add_torrent(params)
        if params.ti.ssl_cert() and self.tls is not None:
            handle.set_ssl_certificate(str(self.tls.cert), str(self.tls.key), str(self.tls.dh))
        for url in trackers:  # announced to as well as the torrent's own (a cluster's coordinator)
            handle.add_tracker({"url": url, "tier": 0})
        key = _key(handle.info_hashes())
        self._handles[key] = handle
        return key

    def add_magnet(self, uri: str, save_path: Path) -> str:
        """Join a swarm by magnet link to fetch the torrent's metadata only (nothing else is downloaded)."""
        try:
            params = lt.parse_magnet_uri(uri)
        except RuntimeError as exc:
            raise MetainfoError(f"libtorrent refuses the magnet link: {exc}") from exc
        params.save_path = str(save_path)
        params.flags &= ~(lt.torrent_flags.auto_managed | lt.torrent_flags.paused)
        params.flags |= lt.torrent_flags.upload_mode
        handle = self._session.add_torrent(params)
        key = _key(handle.info_hashes())
        self._handles[key] = handle
        return key

    def metadata(self, key: str) -> bytes | None:
        """The torrent's ``info`` dictionary as a .torrent, or None before the metadata came from peers."""
        info = self._handle(key).torrent_file()
        if info is None:
            return None
        return bytes(lt.bencode({"info": lt.bdecode(info.info_section())}))

    def request_torrent_file(self, key: str) -> None:
        """Ask for the whole .torrent (with v2 piece layers once verified); a ``TorrentFileReady`` follows."""
        self._handle(key).save_resume_data(lt.torrent_handle.save_info_dict)

    def _handle(self, key: str) -> Any:
        try:
            return self._handles[key]
        except KeyError:
            raise SwarmhubError(f"no torrent {key} in this session") from None

    def info_hashes(self, key: str) -> tuple[str | None, str | None]:
        """(v1, v2) as libtorrent computes them."""
        hashes = self._handle(key).info_hashes()
        return (str(hashes.v1) if hashes.has_v1() else None, str(hashes.v2) if hashes.has_v2() else None)

    def connect_peer(self, key: str, host: str, port: int) -> None:
        """Dial a peer. Given as a tracker's: libtorrent dials a peer it was told of with no source once, and
        after it refused a connection never again, however often it is given (a seeder still starting up);
        one a tracker names again is dialled again (measured, 2.1.1: docs/NOTES.md)."""
        self._handle(key).connect_peer((host, port), lt.peer_info.tracker)

    def reannounce(self, key: str) -> None:
        """Ask the torrent's trackers for peers now, whatever their interval (a node that found none asks again)."""
        self._handle(key).force_reannounce(0, -1, lt.reannounce_flags_t.ignore_min_interval)

    def announce_dht(self, key: str) -> None:
        """Look the torrent up on the DHT and announce it there now (libtorrent does when the torrent starts,
        then every ``dht_announce_interval``, 15 min); nothing without a DHT."""
        if self.dht:
            self._handle(key).force_dht_announce()

    def add_piece(self, key: str, piece: int, data: bytes) -> None:
        """Hand libtorrent a piece fetched elsewhere (the origin); it verifies it like any other.

        libtorrent drops pieces handed over while it is still checking files: wait for ``TorrentChecked``.
        """
        self._handle(key).add_piece(piece, data, 0)

    def flush(self, key: str) -> None:
        """Ask for every queued write to reach the disk; a ``Flushed`` event follows.

        ``PieceFinished`` can come before the piece is written (libtorrent hashes from its store buffer),
        so anything that reads a file from disk must flush first.
        """
        self._handle(key).flush_cache()

    def read_piece(self, key: str, piece: int) -> None:
        """Ask for a piece's bytes (a piece the torrent has); a ``PieceRead`` event follows."""
        self._handle(key).read_piece(piece)

    def set_deadline(self, key: str, piece: int, milliseconds: int) -> None:
        """Want ``piece`` within ``milliseconds`` (libtorrent asks peers for it first, block by block); a
        ``PieceRead`` with its bytes follows once it is there."""
        self._handle(key).set_piece_deadline(piece, milliseconds, lt.deadline_flags_t.alert_when_available)

    def set_file_priorities(self, key: str, priorities: Mapping[int, int]) -> None:
        """Priorities of some files (0: skip, 1-7: download); the others keep theirs."""
        handle = self._handle(key)
        for index, priority in priorities.items():
            handle.file_priority(index, priority)

    def rename_file(self, key: str, index: int, path: str) -> None:
        """Move one file in storage (libtorrent moves it on disk); a ``FileRenamed`` event follows."""
        self._handle(key).rename_file(index, path)

    def availability(self, key: str) -> list[int]:
        """Per piece: how many connected peers have it."""
        return [int(n) for n in self._handle(key).piece_availability()]

    def peer_ids(self, key: str) -> list[bytes]:
        """The peer ids of the peers this torrent trades with (handshake done)."""
        ids = []
        for peer in self._handle(key).get_peer_info():
            if peer.flags & (lt.peer_info.connecting | lt.peer_info.handshake):
                continue
            pid = bytes(peer.pid.to_bytes())
            if any(pid):
                ids.append(pid)
        return ids

    def status(self, key: str, *, pieces: bool = True) -> TorrentStatus:
        """The torrent's state; ``pieces=False`` leaves ``pieces`` empty (a 100,000-piece tuple per call is
        what a pull's once-a-tick look at its progress cost most)."""
        flags = _STATUS_ALL if pieces else _STATUS_ALL & ~lt.status_flags_t.query_pieces
        s = self._handle(key).status(flags)
        return TorrentStatus(
            info_hash=key,
            state=str(s.state),
            progress=float(s.progress),
            total_done=int(s.total_done),
            num_peers=int(s.num_peers),
            download_rate=int(s.download_rate),
            upload_rate=int(s.upload_rate),
            pieces=tuple(map(bool, s.pieces)) if pieces else (),
            error=s.errc.message() if s.errc.value() else None,
            payload_download=int(s.total_payload_download),
            payload_upload=int(s.total_payload_upload),
            total_wanted=int(s.total_wanted),
            total_wanted_done=int(s.total_wanted_done),
            is_seeding=bool(s.is_seeding),
        )

    def torrents(self) -> list[str]:
        """The torrents in the session."""
        return list(self._handles)

    def remove(self, key: str) -> None:
        handle = self._handles.pop(key, None)
        if handle is not None:
            self._session.remove_torrent(handle)

    # ---------------------------------------------------------------------------------------- events

    def _pump_alerts(self) -> None:
        while not self._closed.is_set():
            self._session.wait_for_alert(200)
            events = [e for e in map(_translate, self._session.pop_alerts()) if e is not None]
            with self._lock:
                for event in events:
                    takers = [sub for sub in self._subscribers if sub.key in (None, event.info_hash)]
                    for sub in takers:
                        sub.pending.put(event)
                    if not takers:
                        self._unclaimed.append(event)
                subscribers = list(self._subscribers)
            for sub in subscribers:  # checked on every round, not only when new events came: no wakeup is lost
                sub.wake()

    async def events(self, key: str | None = None) -> AsyncIterator[Event]:
        """Events in order: those nobody took yet (since the engine started), then new ones as they come.

        ``key``: only that torrent's. Several consumers may listen at once (one per torrent, or one for all).
        """
        sub = _Subscriber(key, asyncio.get_running_loop())
        with self._lock:
            kept: collections.deque[Event] = collections.deque(maxlen=UNCLAIMED_EVENTS)
            for event in self._unclaimed:
                if key in (None, event.info_hash):
                    sub.pending.put(event)
                else:
                    kept.append(event)
            self._unclaimed = kept
            self._subscribers.append(sub)
        try:
            while True:
                try:
                    yield sub.pending.get_nowait()
                except queue.Empty:
                    sub.wakeup.clear()
                    if sub.pending.empty():
                        await sub.wakeup.wait()
        finally:
            with self._lock:
                self._subscribers.remove(sub)

    def close(self) -> None:
        self._closed.set()
        self._pump.join(timeout=5)
        for key in list(self._handles):
            self.remove(key)

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
