"""``inspect`` and the torrent parser: good torrents read back, hostile ones give one line and exit 2."""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support.cli import run_cli
from support.torrents import COMMIT, make_torrent
from swarmhub.bt.bencode import decode, encode
from swarmhub.bt.magnet import build_magnet, parse_magnet
from swarmhub.bt.metainfo import parse_torrent
from swarmhub.errors import MagnetError, MetainfoError, SwarmhubError

FILES = {
    "config.json": b"{}\n",
    "model.safetensors": bytes(range(256)) * 300,
    "empty.txt": b"",
    "sub/dir/x.bin": b"x" * 40000,
}


def _swarmhub(*args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, timeout=60)


@pytest.fixture(scope="module")
def good() -> bytes:
    return make_torrent(
        FILES,
        lfs=frozenset({"model.safetensors"}),
        trackers=("http://t.example/announce",),
        webseeds=("http://ws.example/",),
    )


def test_parse_reads_back_everything(good: bytes) -> None:
    t = parse_torrent(good)
    assert t.format == "hybrid" and t.repo is not None and t.repo.commit == COMMIT
    assert [f.path for f in t.files] == ["config.json", "empty.txt", "model.safetensors", "sub/dir/x.bin"]
    assert t.total_size == sum(len(b) for b in FILES.values())
    assert t.trackers == ("http://t.example/announce",) and t.webseeds == ("http://ws.example/",)
    etags = {f.path: f.etag for f in t.files}
    assert etags["empty.txt"] == "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"  # git's empty blob
    assert len(etags["model.safetensors"] or "") == 64


def test_inspect_cli_json_and_text(tmp_path: Path, good: bytes) -> None:
    path = tmp_path / "x.torrent"
    path.write_bytes(good)
    out = _swarmhub("inspect", str(path), "--json")
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    t = parse_torrent(good)
    assert summary["info_hash_v1"] == t.info_hash_v1 and summary["info_hash_v2"] == t.info_hash_v2
    assert summary["commit"] == COMMIT and summary["repo_id"] == "org/name"
    assert {f["path"] for f in summary["files"]} == set(FILES)
    assert summary["magnet"].startswith(f"magnet:?xt=urn:btih:{t.info_hash_v1}&xt=urn:btmh:1220{t.info_hash_v2}")
    text = _swarmhub("inspect", str(path))
    assert text.returncode == 0 and t.info_hash_v1 in text.stdout and "sub/dir/x.bin" in text.stdout


def _mutate_info(good: bytes, change) -> bytes:  # type: ignore[no-untyped-def]
    meta = decode(good)
    change(meta[b"info"])
    return encode(meta)


def _set_first_path(info: dict, path: list[bytes]) -> None:  # type: ignore[type-arg]
    info[b"files"][0][b"path"] = path


HOSTILE = {
    "dotdot v1 path": lambda i: _set_first_path(i, [b"..", b"etc", b"passwd"]),
    "absolute-looking component": lambda i: _set_first_path(i, [b"/etc/passwd"]),
    "backslash traversal": lambda i: _set_first_path(i, [b"..\\..\\x"]),
    "windows drive": lambda i: _set_first_path(i, [b"C:", b"x"]),
    "empty component": lambda i: _set_first_path(i, [b""]),
    "dotdot name": lambda i: i.__setitem__(b"name", b".."),
    "dotdot in file tree": lambda i: i[b"file tree"].__setitem__(
        b"..", {b"": {b"length": 1, b"pieces root": b"x" * 32}}
    ),
    "absurd size": lambda i: i[b"files"][0].__setitem__(b"length", 1 << 62),
    "negative size": lambda i: i[b"files"][0].__setitem__(b"length", -5),
    "pieces short": lambda i: i.__setitem__(b"pieces", i[b"pieces"][:-20]),
    "pieces ragged": lambda i: i.__setitem__(b"pieces", i[b"pieces"][:-1]),
    "piece length zero": lambda i: i.__setitem__(b"piece length", 0),
    "piece length not pow2": lambda i: i.__setitem__(b"piece length", 20000),
    "hybrid lists differ": lambda i: i[b"files"].__setitem__(0, {b"length": 3, b"path": [b"other.json"]}),
    "hf commit bad": lambda i: i[b"hf"].__setitem__(b"commit", b"main"),
    "hf etag bad": lambda i: i[b"hf"][b"files"][0].__setitem__(b"etag", b"zz"),
    "hf files short": lambda i: i[b"hf"].__setitem__(b"files", i[b"hf"][b"files"][:1]),
    "hf repo id traversal": lambda i: i[b"hf"].__setitem__(b"repo_id", b"../../x"),
    "no files": lambda i: (i.pop(b"files"), i.pop(b"file tree"), i.pop(b"pieces")),
    "name not utf8": lambda i: i.__setitem__(b"name", b"\xff\xfe"),
    "hf commit with newline": lambda i: i[b"hf"].__setitem__(b"commit", COMMIT.encode() + b"\n"),
    "hf etag with newline": lambda i: i[b"hf"][b"files"][0].__setitem__(b"etag", b"ab" * 20 + b"\n"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_torrents_are_rejected(good: bytes, case: str) -> None:
    with pytest.raises(MetainfoError):
        parse_torrent(_mutate_info(good, HOSTILE[case]))


UNSAFE_CHARACTERS = {  # what path_problem refuses, named by code point
    "crlf in v1 path": (lambda i: _set_first_path(i, [b"config.json\r\nX-Evil: 1"]), "U+000D control character"),
    "del in v1 path": (lambda i: _set_first_path(i, [b"a\x7fb"]), "U+007F control character"),
    "c1 csi in name": (lambda i: i.__setitem__(b"name", "\x9b2J".encode()), "U+009B control character"),
    "zero width in name": (lambda i: i.__setitem__(b"name", "org\u200b--name".encode()), "U+200B format character"),
    "isolate in file tree": (
        lambda i: i[b"file tree"].__setitem__("\u2067x".encode(), {b"": {b"length": 1, b"pieces root": b"x" * 32}}),
        "U+2067 format character",
    ),
    "esc in name.utf-8": (lambda i: i.__setitem__(b"name.utf-8", b"\x1b[31mred"), "U+001B control character"),
    "line separator in path": (lambda i: _set_first_path(i, ["a\u2028b".encode()]), "U+2028 line separator"),
    "newline in hf repo id": (lambda i: i[b"hf"].__setitem__(b"repo_id", b"org/name\n"), "U+000A control character"),
}


@pytest.mark.parametrize("case", sorted(UNSAFE_CHARACTERS))
def test_unsafe_characters_are_refused_by_code_point(good: bytes, case: str) -> None:
    change, reason = UNSAFE_CHARACTERS[case]
    with pytest.raises(MetainfoError, match=re.escape(reason)) as caught:
        parse_torrent(_mutate_info(good, change))
    assert str(caught.value).isprintable()  # one line, nothing a terminal would run


def test_piece_layer_that_does_not_hash_to_root_is_rejected(good: bytes) -> None:
    meta = decode(good)
    layers = meta[b"piece layers"]
    key = next(iter(layers))
    layers[key] = bytes(len(layers[key]))
    with pytest.raises(MetainfoError, match="does not hash"):
        parse_torrent(encode(meta))


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (b"not bencode at all", "invalid bencode"),
        (b"d4:infoi1ee", "no info dictionary"),
        (b"", "invalid bencode"),
    ],
)
def test_inspect_cli_one_line_error_exit_2(tmp_path: Path, data: bytes, needle: str) -> None:
    path = tmp_path / "bad.torrent"
    path.write_bytes(data)
    out = _swarmhub("inspect", str(path))
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and needle in out.stderr and "Traceback" not in out.stderr


def test_inspect_cli_hostile_path_and_missing_file(tmp_path: Path, good: bytes) -> None:
    path = tmp_path / "evil.torrent"
    path.write_bytes(_mutate_info(good, HOSTILE["dotdot v1 path"]))
    out = _swarmhub("inspect", str(path), "--json")
    assert out.returncode == 2 and "unsafe path component" in out.stderr and out.stdout == ""
    out = _swarmhub("inspect", str(tmp_path / "nope.torrent"))
    assert out.returncode == 2 and "cannot read" in out.stderr


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.data())
def test_fuzz_mutated_torrents_parse_or_raise_ours(good: bytes, data: st.DataObject) -> None:
    """The invariant: every input either parses or raises our own error (never IndexError, KeyError, ...)."""
    blob = bytearray(good)
    for _ in range(data.draw(st.integers(1, 8))):
        op = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        at = data.draw(st.integers(0, max(0, len(blob) - 1)))
        if op == "flip" and blob:
            blob[at] = data.draw(st.integers(0, 255))
        elif op == "cut":
            del blob[at : at + data.draw(st.integers(1, 64))]
        else:
            blob[at:at] = data.draw(st.binary(min_size=1, max_size=16))
    with contextlib.suppress(SwarmhubError):
        parse_torrent(bytes(blob))


@given(st.binary(max_size=300))
def test_fuzz_random_bytes_parse_or_raise_ours(blob: bytes) -> None:
    with contextlib.suppress(SwarmhubError):
        parse_torrent(blob)


def test_magnet_round_trip_and_errors() -> None:
    v1, v2 = "ab" * 20, "cd" * 32
    uri = build_magnet(v1, v2, "org--name", ["http://t/announce?x=1&y=2"], ["http://ws/"])
    m = parse_magnet(uri)
    assert (m.info_hash_v1, m.info_hash_v2, m.name) == (v1, v2, "org--name")
    assert m.trackers == ("http://t/announce?x=1&y=2",) and m.webseeds == ("http://ws/",)
    for bad in ["http://x", "magnet:?dn=x", "magnet:?xt=urn:btih:zz", "magnet:?xt=urn:btmh:1220abc"]:
        with pytest.raises(MagnetError):
            parse_magnet(bad)


def test_inspect_cli_magnet() -> None:
    uri = build_magnet("ab" * 20, None, "x")
    out = _swarmhub("inspect", uri, "--json")
    assert out.returncode == 0 and json.loads(out.stdout)["info_hash_v1"] == "ab" * 20
    out = _swarmhub("inspect", "magnet:?xt=urn:btih:nothex")
    assert out.returncode == 2 and "invalid magnet URI" in out.stderr
