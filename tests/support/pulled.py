"""The pull tests' release (a dev hub, its hybrid and v1 torrents) and a cache the origin filled, as fixtures
(a pytest plugin: ``tests/conftest.py`` loads it) for every module that needs a seeder."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from support.cli import run_cli
from support.swarm import PIECE, REPO_ID, make_release, pull, sha256, snapshot_files
from swarmhub.devhub import DevHub

__all__ = ["Release", "release", "repo_dir", "seeded_cache", "unique_bytes"]


@dataclass(frozen=True)
class Release:
    root: Path
    files: dict[str, bytes]
    hub: DevHub
    hybrid: Path
    v1: Path
    commit: str


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Release]:
    root = tmp_path_factory.mktemp("pull")
    files = make_release(root / "origin")
    with DevHub(root / "origin") as hub:
        made = {}
        for fmt in ("hybrid", "v1"):
            out = root / f"{fmt}.torrent"
            done = run_cli(
                "create",
                REPO_ID,
                "--endpoint",
                hub.endpoint,
                "--piece-size",
                PIECE,
                "--format",
                fmt,
                "-o",
                out,
                "--json",
            )
            assert done.returncode == 0, done.stderr
            made[fmt] = (out, json.loads(done.stdout))
        yield Release(root, files, hub, made["hybrid"][0], made["v1"][0], made["hybrid"][1]["commit"])


@pytest.fixture(scope="module")
def seeded_cache(release: Release) -> Path:
    """A cache filled by an origin-only pull, while the origin misbehaves as the Hub does now and then."""
    hub = release.hub
    hub.faults.clear()
    hub.state.settings = replace(hub.state.settings, url_lifetime=0.5)  # signed CDN URLs expire mid-pull
    hub.faults.respond("/lfs/*", 429, retry_after=1, times=2)
    hub.faults.respond("/*/resolve/*", 500, times=2)
    hub.faults.reset("/lfs/*", after_bytes=100_000, times=2)
    cache = release.root / "seeder" / "hub"
    try:
        result = pull(
            f"{REPO_ID}@main", "--torrent", release.hybrid, "--endpoint", hub.endpoint, "--cache-dir", cache,
            "--origin-after", "0",
        )  # fmt: skip
    finally:
        hub.faults.clear()
        hub.state.settings = replace(hub.state.settings, url_lifetime=3600)
    statuses = [e.status for e in hub.log.entries()]
    assert statuses.count(429) == 2 and statuses.count(500) == 2  # every fault fired, and was outlived
    assert len(hub.log.entries("/lfs/*")) > len(hub.log.entries("/*/resolve/*.safetensors"))  # CDN re-visited
    assert result["origin_bytes"] >= unique_bytes(release)
    assert result["peer_bytes"] == 0 and result["commit"] == release.commit
    assert snapshot_files(Path(result["snapshot_path"])) == release.files
    return cache


def unique_bytes(release: Release) -> int:
    """What a pull must move: files with the same bytes share one blob, fetched once."""
    return sum(len(d) for d in {sha256(d): d for d in release.files.values()}.values())


def repo_dir(cache: Path) -> Path:
    return cache / "models--swarmhub-demo--tiny-model"
