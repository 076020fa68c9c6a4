"""A small swarm for tests: a release, `swarmhub seed` and `swarmhub pull` run as a user runs them."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from swarmhub.cli.cmd_demo import make_demo_release

REPO_ID = "swarmhub-demo/tiny-model"
PIECE = "64K"


def make_release(root: Path, size_mb: int = 6) -> dict[str, bytes]:
    """The demo release plus two files whose bytes equal others' (one blob, two snapshot links)."""
    repo = make_demo_release(root, size_mb)
    (repo / "copy-of-config.json").write_bytes((repo / "config.json").read_bytes())
    (repo / "weights").mkdir(exist_ok=True)
    (repo / "weights" / "same-as-vae-ft.bin").write_bytes((repo / "vae-ft.bin").read_bytes())
    return {p.relative_to(repo).as_posix(): p.read_bytes() for p in sorted(repo.rglob("*")) if p.is_file()}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def snapshot_files(snapshot: Path) -> dict[str, bytes]:
    """Every file a program sees in a snapshot (or local_dir), following the links, skipping .cache/."""
    out = {}
    for p in sorted(snapshot.rglob("*")):
        rel = p.relative_to(snapshot).as_posix()
        if rel.startswith(".cache/") or not p.is_file():
            continue
        out[rel] = p.read_bytes()
    return out


def swarmhub(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "swarmhub", *map(str, args)]


def pull(*args: str | Path, env: Mapping[str, str] | None = None, timeout: float = 120) -> dict[str, Any]:
    """``swarmhub pull ... --json``; raises with stderr when it fails."""
    done = subprocess.run(
        swarmhub("pull", *args, "--json"),
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
    if done.returncode != 0:
        raise AssertionError(f"pull failed ({done.returncode}): {done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


@dataclass
class Seeder:
    process: subprocess.Popen[str]
    port: int
    ready: dict[str, Any]


@contextlib.contextmanager
def seeding(cache: Path, *extra: str | Path, timeout: float = 30) -> Iterator[Seeder]:
    """``swarmhub seed --json`` on 127.0.0.1 and a free port; stopped with SIGTERM (as a service manager does)."""
    process = subprocess.Popen(
        swarmhub("seed", "--cache-dir", cache, "--listen", "127.0.0.1:0", "--json", *extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert process.stdout is not None
        lines: list[str] = []
        ready: dict[str, Any] | None = None
        deadline = time.monotonic() + timeout
        while ready is None and time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                stderr = process.stderr.read() if process.stderr else ""
                raise AssertionError(f"swarmhub seed exited ({process.wait()}): {stderr}")
            lines.append(line)
            with contextlib.suppress(json.JSONDecodeError):
                ready = json.loads("".join(lines))
        if ready is None:
            raise AssertionError("swarmhub seed did not get ready")
        yield Seeder(process, int(ready["port"]), ready)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@dataclass(frozen=True)
class SeededDataset:
    """A dataset repo on a local origin, ``swarmhub create``'s torrent of it (and its ``--json``), and a
    seeder's cache filled by an origin-only pull."""

    hub: Any  # swarmhub.devhub.DevHub, serving ``root / "origin"``
    torrent: Path
    created: dict[str, Any]
    files: dict[str, bytes]
    seeder_cache: Path


@contextlib.contextmanager
def seeded_dataset(
    root: Path, repo_id: str, files: dict[str, bytes], *create_args: str, name: str, timeout: float = 120
) -> Iterator[SeededDataset]:
    """``files`` written as dataset ``repo_id`` under ``root / "origin"`` and served by a DevHub while the
    context lasts; ``create_args`` go to ``swarmhub create``, which writes ``root / name``."""
    from swarmhub.devhub import DevHub

    repo = root / "origin" / "datasets" / repo_id
    for path, data in files.items():
        (repo / path).parent.mkdir(parents=True, exist_ok=True)
        (repo / path).write_bytes(data)
    with DevHub(root / "origin") as hub:
        torrent = root / name
        made = subprocess.run(
            swarmhub("create", repo_id, "--repo-type", "dataset", "--endpoint", hub.endpoint, *create_args,
                     "-o", torrent, "--json"),
            capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
        assert made.returncode == 0, made.stderr[-3000:]
        seeder_cache = root / "seeder" / "hub"
        pull(
            repo_id, "--repo-type", "dataset", "--torrent", torrent, "--endpoint", hub.endpoint, "--origin-after",
            "0", "--cache-dir", seeder_cache, timeout=timeout,
        )  # fmt: skip
        yield SeededDataset(hub, torrent, json.loads(made.stdout), files, seeder_cache)
