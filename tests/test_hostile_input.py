"""Hostile torrents and magnets as the security review made them (issue 13), each refused the way it promises.

Bombs: a 32 MB ``le`` bomb through ``decode``, ``parse_torrent`` and the real ``swarmhub inspect``, refused
with exit code 2 and a peak resident size measured in the process that decoded it (it was 1.25 GB). A real
100,000-file dataset torrent still parses under the default budget. Names: CR/LF, U+202E and ESC refused at
parse with one line naming the code point; a magnet's ESC sequences printed escaped. Totals: 2,048,000 TiB
refused with exit code 2.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest

from support.cli import run_cli
from support.torrents import make_torrent
from swarmhub.bt.bencode import decode, encode
from swarmhub.bt.layout import plan_torrent
from swarmhub.bt.magnet import build_magnet
from swarmhub.bt.metainfo import build_torrent, parse_torrent
from swarmhub.errors import BencodeError, MetainfoError
from swarmhub.hub.repo import RepoRef

LE_BOMB_BYTES = 32 * 1024 * 1024
PEAK_RSS_BOUND_KIB = 512 * 1024  # before the budget: 1.25 GB; with it ~280 MB (32 MB of it the input)

# Decodes the file named by argv[1] with decode() and parse_torrent(), then reports the errors and the
# process's own peak resident size (ru_maxrss: KiB on Linux, bytes on macOS).
_DECODE_CHILD = """
import json, resource, sys
from swarmhub.bt.bencode import decode
from swarmhub.bt.metainfo import parse_torrent
from swarmhub.errors import BencodeError
data = open(sys.argv[1], "rb").read()
errors = []
for parse in (decode, parse_torrent):
    try:
        parse(data)
    except BencodeError as exc:
        errors.append(str(exc))
print(json.dumps({"errors": errors, "maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""

# Runs the real `swarmhub inspect argv[1]` as its only child, so RUSAGE_CHILDREN is that command's peak.
_INSPECT_CHILD = """
import json, resource, subprocess, sys
out = subprocess.run([sys.executable, "-m", "swarmhub", "inspect", sys.argv[1]], capture_output=True, text=True)
maxrss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"code": out.returncode, "stdout": out.stdout, "stderr": out.stderr, "maxrss": maxrss}))
"""


def _kib(maxrss: int) -> int:
    return maxrss // 1024 if sys.platform == "darwin" else maxrss


def _run_child(script: str, path: Path) -> dict[str, object]:
    out = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    result: dict[str, object] = json.loads(out.stdout)
    return result


@pytest.fixture(scope="module")
def le_bomb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A list of 16 M empty lists: every 2 bytes would become a Python list."""
    path = tmp_path_factory.mktemp("bomb") / "le.torrent"
    path.write_bytes(b"l" + b"le" * (LE_BOMB_BYTES // 2 - 1) + b"e")
    return path


def test_le_bomb_through_decode_and_parse_torrent_is_refused_in_bounded_memory(le_bomb: Path) -> None:
    result = _run_child(_DECODE_CHILD, le_bomb)
    errors = result["errors"]
    assert isinstance(errors, list) and len(errors) == 2
    for error in errors:
        assert "decoding budget" in error and "at byte" in error and "\n" not in error
    assert isinstance(result["maxrss"], int) and _kib(result["maxrss"]) < PEAK_RSS_BOUND_KIB


def test_le_bomb_through_inspect_exits_2_in_bounded_memory(le_bomb: Path) -> None:
    result = _run_child(_INSPECT_CHILD, le_bomb)
    assert result["code"] == 2 and result["stdout"] == ""
    stderr = result["stderr"]
    assert isinstance(stderr, str) and stderr.count("\n") == 1 and "decoding budget" in stderr
    assert isinstance(result["maxrss"], int) and _kib(result["maxrss"]) < PEAK_RSS_BOUND_KIB


def test_a_tightened_budget_bounds_memory_by_itself(le_bomb: Path) -> None:
    data = le_bomb.read_bytes()
    tracemalloc.start()
    try:
        with pytest.raises(BencodeError, match="more than 100000 tokens"):
            decode(data, max_tokens=100_000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 1024 * 1024  # 50,000 empty lists, not 16 M


@pytest.fixture(scope="module")
def dataset_100k() -> bytes:
    """The hybrid torrent ``create`` makes for a 100,000-file dataset (hashes faked: nothing checks v1 pieces
    against content here, and files of at most one piece need no piece layer)."""
    files = [(f"data/train/part-{i // 1000:03d}/shard-{i:06d}.parquet", 1000 + i) for i in range(100_000)]
    plan = plan_torrent(files, 16384, "hybrid")
    return build_torrent(
        plan,
        "org--dataset",
        v1_pieces=bytes(20 * plan.num_pieces),
        v2=[(hashlib.sha256(f.path.encode()).digest(), b"") for f in plan.files],
        repo=RepoRef("dataset", "org/dataset", "0123456789abcdef0123456789abcdef01234567"),
        etags=["ab" * 32] * len(plan.files),
    )


def test_a_100k_file_dataset_torrent_parses_under_the_default_budget(dataset_100k: bytes) -> None:
    torrent = parse_torrent(dataset_100k)
    assert len(torrent.files) == 100_000 and torrent.repo is not None
    assert torrent.files[-1].path == "data/train/part-099/shard-099999.parquet"
    # Heavy for real: libtorrent's own default budget (3 M tokens) refuses it.
    with pytest.raises(BencodeError, match="decoding budget"):
        decode(dataset_100k, max_tokens=3_000_000)


@pytest.mark.parametrize(
    ("files", "name", "code_point"),
    [
        ({"con\r\nfig.json": b"{}"}, "org--name", "U+000D control character"),
        ({"model.bin": b"x"}, "org--name\u202egnp.exe", "U+202E format character"),
        ({"model.bin": b"x"}, "\x1b]0;owned\x07\x1b[2Jorg--name", "U+001B control character"),
    ],
    ids=["crlf-in-path", "rlo-in-name", "esc-in-name"],
)
def test_control_and_bidi_characters_are_refused_at_parse(
    tmp_path: Path, files: dict[str, bytes], name: str, code_point: str
) -> None:
    data = make_torrent(files, name=name)  # consistent v1, v2 and hf: what an attacker would publish
    with pytest.raises(MetainfoError, match=re.escape(code_point)) as caught:
        parse_torrent(data)
    assert "\n" not in str(caught.value) and "\x1b" not in str(caught.value)
    path = tmp_path / "evil.torrent"
    path.write_bytes(data)
    out = run_cli("inspect", path, timeout=60)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.count("\n") == 1 and code_point in out.stderr and "\x1b" not in out.stderr


def test_inspect_prints_a_magnets_hostile_text_escaped() -> None:
    clear_screen, retitle = "\x1b[2J\x1b[H", "\x1b]0;owned\x07"
    uri = build_magnet(
        "ab" * 20,
        "cd" * 32,
        f"{clear_screen}model\u202egnp.exe\r\n",
        [f"http://t.example/announce{retitle}"],
        ["http://ws.example/\x9b31m"],
    )
    out = run_cli("inspect", uri, timeout=60)
    assert out.returncode == 0, out.stderr
    assert not any(ch in out.stdout for ch in "\x1b\x07\x9b\r\u202e")
    assert "name       \\x1b[2J\\x1b[Hmodel\\u202egnp.exe\\r\\n\n" in out.stdout
    assert "tracker    http://t.example/announce\\x1b]0;owned\\x07\n" in out.stdout
    assert "webseed    http://ws.example/\\x9b31m\n" in out.stdout
    as_json = run_cli("inspect", uri, "--json", timeout=60)
    assert as_json.returncode == 0 and "\x1b" not in as_json.stdout
    assert json.loads(as_json.stdout)["name"] == f"{clear_screen}model\u202egnp.exe\r\n"


def test_inspect_refuses_a_torrent_claiming_2048000_tib(tmp_path: Path) -> None:
    # v2 needs no piece hashes in the file (piece layers may come from peers): 2,000 files of 1 PiB each.
    tree = {f"shard-{i:04d}.bin": {"": {"length": 1 << 50, "pieces root": b"\x01" * 32}} for i in range(2000)}
    data = encode({"info": {"name": "huge", "piece length": 1 << 28, "meta version": 2, "file tree": tree}})
    with pytest.raises(MetainfoError, match="more than 512 TiB"):
        parse_torrent(data)
    path = tmp_path / "huge.torrent"
    path.write_bytes(data)
    out = run_cli("inspect", path, timeout=60)
    assert out.returncode == 2 and out.stdout == "" and "more than 512 TiB" in out.stderr


def test_more_pieces_than_libtorrent_loads_are_refused() -> None:
    # 64 files of 1 GiB in 16 KiB pieces: 64 GiB is a plausible total, 4 M pieces is not.
    tree = {f"f{i:02d}.bin": {"": {"length": 1 << 30, "pieces root": b"\x01" * 32}} for i in range(64)}
    data = encode({"info": {"name": "many", "piece length": 16384, "meta version": 2, "file tree": tree}})
    with pytest.raises(MetainfoError, match="4194304 pieces, more than the 2097152 libtorrent loads"):
        parse_torrent(data)


def test_tracker_urls_with_control_characters_are_left_out() -> None:
    data = make_torrent({"a.bin": b"x"}, trackers=("http://ok.example/announce", "http://t.example/\r\nX-Evil: 1"))
    assert parse_torrent(data).trackers == ("http://ok.example/announce",)
