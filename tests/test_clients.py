"""What Debian's other BitTorrent clients make of our torrents: transmission 3.00 and aria2 1.36.

A ``--format v1`` torrent is read by both as libtorrent reads it (same info-hash, files, total size). The
default hybrid is not, and the tests pin exactly how each fails, so that we notice when that changes:

- ``transmission-show`` (3.00) cannot parse a hybrid at all: exit code 1, nothing on stdout, and
  ``Error parsing .torrent file "<path>"`` on stderr (the empty-string keys of the BEP 52 ``file tree``,
  transmission#1339).
- ``aria2c -S`` (1.36) reads it, but reports a wrong v1 info-hash: the SHA-1 of the info dict re-encoded
  without the ``""`` keys of the ``file tree``, so it can never join the swarm. It also lists the BEP 47 pad
  files as ordinary files and counts their bytes in the total length.

Skipped only when a binary is missing (CI installs both: ``apt-get install aria2 transmission-cli``).
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from support.layouts import COMMIT, NAME, create_json, edge_layouts, libtorrent_info_hashes, write_layout
from swarmhub.bt.bencode import decode, encode

pytestmark = pytest.mark.clients

TRANSMISSION_SHOW = shutil.which("transmission-show")
ARIA2C = shutil.which("aria2c")
needs_transmission = pytest.mark.skipif(
    TRANSMISSION_SHOW is None, reason="transmission-show not found (Debian: apt-get install transmission-cli)"
)
needs_aria2 = pytest.mark.skipif(ARIA2C is None, reason="aria2c not found (Debian: apt-get install aria2)")

PIECE = 16 * 1024
LAYOUT = {
    **edge_layouts(PIECE)["vae_ordering"],
    "config.json": 321,
    "empty.txt": 0,
    "one-byte": 1,
    "nested/deeper/weights.bin": 2 * PIECE + 5,
    "ünïcödé/日本語.json": 77,
}


@dataclass(frozen=True)
class Created:
    path: Path
    summary: dict[str, Any]
    data: bytes


@pytest.fixture(scope="module")
def torrents(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Created]:
    root = tmp_path_factory.mktemp("clients")
    write_layout(root / NAME, LAYOUT)
    created = {}
    for fmt in ("v1", "hybrid"):
        out = root / f"{fmt}.torrent"
        summary = create_json(root / NAME, out, "--revision", COMMIT, "--piece-size", "16k", "--format", fmt)
        created[fmt] = Created(out, summary, out.read_bytes())
    return created


def _run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=30)


# ------------------------------------------------------------------------------------- transmission-show


def transmission_size(n: int) -> str:
    """transmission 3.00's size text (utils.c ``formatter_get_size_str``, disk units of 1000, kB at least)."""
    units = [("kB", 1000), ("MB", 1000**2), ("GB", 1000**3), ("TB", 1000**4)]
    name, scale = units[0]
    for unit_name, unit_scale in units[1:]:
        if n >= unit_scale:
            name, scale = unit_name, unit_scale
    value = n / scale
    return f"{value:.{2 if value < 100 else 1}f} {name}"


@dataclass(frozen=True)
class TransmissionView:
    info_hash: str
    total_size: str
    piece_count: int
    piece_size: str
    files: list[tuple[str, str]]


def parse_transmission_show(stdout: str) -> TransmissionView:
    fields = dict(re.findall(r"^  ([A-Z][A-Za-z ]+): (.*)$", stdout, re.MULTILINE))
    files_block = stdout.split("\nFILES\n\n", 1)[1]
    files = []
    for line in files_block.splitlines():
        if not line.strip():
            break
        path, size = line.strip().rsplit(" (", 1)
        files.append((path, size.removesuffix(")")))
    return TransmissionView(
        fields["Hash"], fields["Total Size"], int(fields["Piece Count"]), fields["Piece Size"], files
    )


def test_transmission_size_format() -> None:
    # values read off transmission-show 3.00 output
    assert transmission_size(0) == "0.00 kB"
    assert transmission_size(1) == "0.00 kB"
    assert transmission_size(5) == "0.01 kB"
    assert transmission_size(16385) == "16.39 kB"
    assert transmission_size(105_543) == "105.5 kB"
    assert transmission_size(2_500_000) == "2.50 MB"


@needs_transmission
def test_transmission_reads_v1_torrent_as_libtorrent_does(torrents: dict[str, Created]) -> None:
    v1 = torrents["v1"]
    proc = _run(TRANSMISSION_SHOW or "", "--unsorted", v1.path)  # --unsorted: torrent order, not by name
    assert proc.returncode == 0, proc.stderr
    view = parse_transmission_show(proc.stdout)
    lt_v1, lt_v2 = libtorrent_info_hashes(v1.data)
    assert lt_v2 is None
    assert view.info_hash == lt_v1 == v1.summary["info_hash_v1"]
    assert view.files == [(f"{NAME}/{f['path']}", transmission_size(f["size"])) for f in v1.summary["files"]]
    assert sorted(path for path, _ in view.files) == sorted(f"{NAME}/{p}" for p in LAYOUT)
    assert view.total_size == transmission_size(sum(LAYOUT.values()))
    assert v1.summary["total_size"] == sum(LAYOUT.values())
    assert view.piece_count == v1.summary["num_pieces"] == -(-sum(LAYOUT.values()) // PIECE)
    assert view.piece_size == "16.00 KiB"


@needs_transmission
def test_transmission_cannot_parse_hybrid_torrent(torrents: dict[str, Created]) -> None:
    hybrid = torrents["hybrid"]
    proc = _run(TRANSMISSION_SHOW or "", hybrid.path)
    assert (proc.returncode, proc.stdout) == (1, "")
    assert proc.stderr.strip() == f'Error parsing .torrent file "{hybrid.path}"'


# ------------------------------------------------------------------------------------------- aria2c -S


@dataclass(frozen=True)
class Aria2View:
    info_hash: str
    total_length: int
    pieces: int
    mode: str
    files: list[tuple[str, int]]


def parse_aria2_show(stdout: str) -> Aria2View:
    fields = dict(re.findall(r"^([A-Z][A-Za-z ]+): (.*)$", stdout, re.MULTILINE))
    # Files:  "  1|./name/path"  then  "   |39KiB (40,000)"
    entries = re.findall(r"^\s*\d+\|(.*)\n\s*\|.*\(([\d,]+)\)$", stdout, re.MULTILINE)
    total = re.search(r"\(([\d,]+)\)", fields["Total Length"])
    assert total is not None, stdout
    return Aria2View(
        info_hash=fields["Info Hash"],
        total_length=int(total.group(1).replace(",", "")),
        pieces=int(fields["The Number of Pieces"]),
        mode=fields["Mode"],
        files=[(path, int(size.replace(",", ""))) for path, size in entries],
    )


def _aria2_show(path: Path) -> subprocess.CompletedProcess[str]:
    return _run(ARIA2C or "", "--no-conf", "-S", path)


@needs_aria2
def test_aria2_reads_v1_torrent_as_libtorrent_does(torrents: dict[str, Created]) -> None:
    v1 = torrents["v1"]
    proc = _aria2_show(v1.path)
    assert proc.returncode == 0, proc.stderr
    view = parse_aria2_show(proc.stdout)
    lt_v1, _ = libtorrent_info_hashes(v1.data)
    assert view.info_hash == lt_v1 == v1.summary["info_hash_v1"]
    assert view.mode == "multi"
    assert view.files == [(f"./{NAME}/{f['path']}", f["size"]) for f in v1.summary["files"]]
    assert sorted(view.files) == sorted((f"./{NAME}/{p}", size) for p, size in LAYOUT.items())
    assert view.total_length == v1.summary["total_size"] == sum(LAYOUT.values())
    assert view.pieces == v1.summary["num_pieces"]


def _without_empty_keys(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _without_empty_keys(v) for k, v in node.items() if k != b""}
    return node


@needs_aria2
def test_aria2_gets_the_info_hash_of_hybrid_torrent_wrong(torrents: dict[str, Created]) -> None:
    hybrid = torrents["hybrid"]
    proc = _aria2_show(hybrid.path)
    assert proc.returncode == 0, proc.stderr
    view = parse_aria2_show(proc.stdout)
    lt_v1, lt_v2 = libtorrent_info_hashes(hybrid.data)
    assert (lt_v1, lt_v2) == (hybrid.summary["info_hash_v1"], hybrid.summary["info_hash_v2"])
    assert view.info_hash != lt_v1
    # what aria2 hashes instead: the info dict, re-encoded, without the file tree's "" keys
    info = decode(hybrid.data)[b"info"]
    assert view.info_hash == hashlib.sha1(encode(_without_empty_keys(info))).hexdigest()
    # and it takes the BEP 47 pad files for real ones
    listed = [("/".join(p.decode() for p in e[b"path"]), e[b"length"]) for e in info[b"files"]]
    assert any(path.startswith(".pad/") for path, _ in listed)
    assert view.files == [(f"./{NAME}/{path}", size) for path, size in listed]
    assert view.total_length == sum(size for _, size in listed) > hybrid.summary["total_size"]
    assert view.pieces == hybrid.summary["num_pieces"]
