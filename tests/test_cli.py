"""The command line as a user meets it: entry points, usage errors, and a full disk."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.cli import run_cli
from swarmhub import __version__

COMMIT = "ab" * 20


def _run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, cwd=cwd, timeout=60)


def test_version_help_and_entry_points() -> None:
    out = _run("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"swarmhub {__version__}"
    script = Path(sys.executable).with_name("swarmhub")
    assert subprocess.run([str(script), "--version"], capture_output=True, text=True).stdout == out.stdout
    help_text = _run("--help").stdout
    for word in ("create", "inspect", "demo", "devhub", "HF_TOKEN", "HF_ENDPOINT"):
        assert word in help_text
    assert _run().returncode == 2  # no command: help and a usage exit code


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}\n")
    (tmp_path / "m" / "weights.bin").write_bytes(os.urandom(300_000))
    return tmp_path / "m"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--piece-size", "3000"], "not a power of two"),
        (["--piece-size", "4X"], "is not a size"),
        (["--include", "*.gguf"], "no files of org/x match"),
        (["--revision", "main"], "does not say which commit"),
        (["--endpoint", "localhost:8080"], "is not an http(s) URL"),
    ],
)
def test_usage_errors_are_one_line(folder: Path, tmp_path: Path, args: list[str], needle: str) -> None:
    extra = [] if "--revision" in args else ["--revision", COMMIT]
    out = _run("create", "org/x", "--from-dir", str(folder), *extra, *args, "-o", str(tmp_path / "o.torrent"))
    assert out.returncode == 2, out.stderr
    assert needle in out.stderr and out.stderr.count("\n") == 1
    assert not (tmp_path / "o.torrent").exists()


def test_default_output_name_in_cwd(folder: Path, tmp_path: Path) -> None:
    out = _run("create", f"org/x@{COMMIT}", "--from-dir", str(folder), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / f"org--x--{COMMIT[:12]}.torrent").is_file()


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "full"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8k", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {made.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_disk_full_is_a_clear_error_and_leaves_nothing(folder: Path, tiny_disk: Path) -> None:
    (folder / "more.bin").write_bytes(os.urandom(3_000_000))  # a torrent bigger than the 8 KiB disk
    out = _run(
        "create",
        "org/x",
        "--from-dir",
        str(folder),
        "--revision",
        COMMIT,
        "--piece-size",
        "16k",
        "-o",
        str(tiny_disk / "x.torrent"),
    )
    assert out.returncode == 1
    assert "No space left on device" in out.stderr and out.stderr.count("\n") == 1
    assert list(tiny_disk.iterdir()) == []  # no partial torrent, no temp file


def test_unreachable_origin_fails_fast_with_the_fix(tmp_path: Path) -> None:
    out = _run("create", "org/x", "--endpoint", "http://127.0.0.1:9", "-o", str(tmp_path / "x.torrent"))
    assert out.returncode == 1 and out.stderr.count("\n") == 1
    assert "cannot reach http://127.0.0.1:9" in out.stderr and "HF_ENDPOINT" in out.stderr


def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    """The quick start's first command: generated release, local origin with faults, both torrents, checks."""
    import json

    out = run_cli("demo", "--dir", tmp_path, "--size-mb", "4", "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["ok"] and result["from_dir_identical"] and result["origin_429s"] == 1
    assert result["libtorrent_check"]["valid"] == result["libtorrent_check"]["pieces"] > 0
    assert Path(result["hybrid"]["path"]).is_file() and Path(result["v1"]["path"]).is_file()
    assert result["v1"]["info_hash_v2"] is None and result["hybrid"]["info_hash_v2"]
    swarm = result["swarm"]
    assert swarm["a"]["origin_bytes"] > 0 and swarm["a"]["peer_bytes"] == 0  # node A: nobody had it yet
    for node in ("b", "c"):  # the others: all from peers
        assert swarm[node]["origin_bytes"] == 0 and swarm[node]["peer_bytes"] > 0
    assert swarm["origin_bytes_nodes"] < 1.1 * swarm["a"]["origin_bytes"] + 100_000  # the origin sent it once
    assert swarm["info_hash_v2"] and swarm["torrent_url"].startswith(result["registry"]["url"])
    assert result["landed"] == swarm["c"]["path"] and Path(result["landed"], "model.safetensors").is_file()
    node = result["node"]  # a program with HF_ENDPOINT at node D got the release from node C's pieces
    assert node["lfs_from_origin"] == 0 and node["peer_bytes"] > 4_000_000
    assert (
        Path(node["snapshot"], "model.safetensors").read_bytes()
        == Path(result["landed"], "model.safetensors").read_bytes()
    )


def test_create_from_a_folder_of_more_files_than_may_be_open(tmp_path: Path) -> None:
    """Issue 16: `create --from-dir` of a 30,000-file dataset failed with "Too many open files" (every file
    stayed open until the end). Here 600 files under a limit of 256 open files."""
    import resource

    folder = tmp_path / "many"
    for i in range(600):
        path = folder / f"data/part-{i // 100}/rows-{i:04d}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b'{"i": %d}\n' % i)

    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))

    done = subprocess.run(
        [sys.executable, "-m", "swarmhub", "create", "org/many", "--repo-type", "dataset", "--from-dir", folder,
         "--revision", "a" * 40, "-o", tmp_path / "many.torrent", "--json"],
        capture_output=True, text=True, timeout=300, preexec_fn=low_limit,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(json.loads(done.stdout)["files"]) == 600
