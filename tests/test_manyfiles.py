"""Issue 16: a dataset release of 20,000 small files, end to end.

Made on the local origin as Hub datasets are laid out (JSON lines in folders of 500); then ``swarmhub create``
streamed from it, a seeder filled by an origin-only pull, a pull from that seeder alone, and the same release
by magnet (metadata from the seeder), and the user's whole path: ``swarmhub publish`` to a registry, then
``datasets.load_dataset`` through a node that finds the release in that registry and its bytes at the seeder.
Timings belong to ``bench/manyfiles.py``; this checks that every step works at this size and every file is
right.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.cli import run_cli
from support.swarm import SeededDataset, pull, seeded_dataset, seeding, snapshot_files
from swarmhub.node.daemon import Node
from swarmhub.registry.server import RegistryServer
from swarmhub.settings import Settings

REPO = "org/many-rows"
N = 20_000
PER_FOLDER = 500


def _rows(i: int) -> bytes:
    return (json.dumps({"id": i, "text": f"row {i} of the many-files dataset"}) + "\n").encode()


@pytest.fixture(scope="module")
def many(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeededDataset]:
    files = {f"data/part-{i // PER_FOLDER:03d}/rows-{i:05d}.jsonl": _rows(i) for i in range(N)}
    with seeded_dataset(tmp_path_factory.mktemp("many"), REPO, files, name="many.torrent", timeout=600) as many:
        yield many


def _snapshot(cache: Path, commit: object) -> Path:
    return cache / f"datasets--{REPO.replace('/', '--')}" / "snapshots" / str(commit)


def test_the_torrent_holds_every_file_and_the_origin_only_pull_lands_them(many: SeededDataset) -> None:
    assert len(many.created["files"]) == N  # type: ignore[arg-type]
    assert snapshot_files(_snapshot(many.seeder_cache, many.created["commit"])) == many.files


def test_a_pull_from_one_seeder_and_by_magnet(many: SeededDataset, tmp_path: Path) -> None:
    with seeding(many.seeder_cache, "--torrent", many.torrent, timeout=120) as seeder:
        peer = f"127.0.0.1:{seeder.port}"
        by_torrent = pull(
            REPO, "--repo-type", "dataset", "--torrent", many.torrent, "--no-origin", "--peer", peer,
            "--cache-dir", tmp_path / "a", timeout=600,
        )  # fmt: skip
        by_magnet = pull(
            REPO, "--repo-type", "dataset", "--magnet", str(many.created["magnet"]), "--no-origin", "--peer", peer,
            "--cache-dir", tmp_path / "b", timeout=600,
        )  # fmt: skip
    for result in (by_torrent, by_magnet):
        assert result["files"] == N and result["origin_bytes"] == 0
        assert snapshot_files(Path(result["snapshot_path"])) == many.files


LOAD_DATASET = """
import json, os
from datasets import load_dataset
data = load_dataset(os.environ["REPO"], split="train")
print(json.dumps({"rows": data.num_rows, "ids": sorted(data["id"])}))
"""


def test_publish_then_load_dataset_through_a_node_from_the_seeder(many: SeededDataset, tmp_path: Path) -> None:
    with RegistryServer(tmp_path / "registry.db", upstream=many.hub.endpoint) as registry:
        assert registry.catalog is not None
        token = registry.catalog.create_token("ci")
        done = run_cli(
            "publish", REPO, "--repo-type", "dataset", "--registry", registry.url, "--endpoint", many.hub.endpoint,
            "--json", env={"SWARMHUB_TOKEN": token}, timeout=600,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        published = json.loads(done.stdout)
        assert published["verified"] is True and published["info_hash_v2"] == many.created["info_hash_v2"]
        many.hub.log.clear()
        with seeding(many.seeder_cache, "--torrent", many.torrent, timeout=120) as seeder:
            cache = tmp_path / "node" / "hub"
            settings = dataclasses.replace(Settings.from_env().with_cache(cache), token=None)
            node = Node(
                settings,
                port=0,
                upstream=many.hub.endpoint,
                registry=registry.url,
                peers=[("127.0.0.1", seeder.port)],
                # posix: the disk I/O for datasets of many small files (docs/NOTES.md, "The disk I/O"); with
                # 2.1's pread a node once answered 503 for one of the 20,000 files here
                engine_settings={"disk_io": "posix"},
            ).start()
            try:
                program = tmp_path / "program"
                env = {
                    **os.environ,
                    "HF_ENDPOINT": node.url,
                    "HF_HUB_CACHE": str(program / "hub"),
                    "HF_HOME": str(program / "home"),
                    "HF_DATASETS_CACHE": str(program / "datasets"),
                    "HF_HUB_DISABLE_XET": "1",
                    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
                    "REPO": REPO,
                }
                ran = subprocess.run(
                    [sys.executable, "-c", LOAD_DATASET], env=env, capture_output=True, text=True, timeout=1200
                )
                assert ran.returncode == 0, ran.stderr[-4000:]
            finally:
                node.stop()
    out = json.loads(ran.stdout.strip().splitlines()[-1])
    assert out["rows"] == N and out["ids"] == list(range(N))
    # every file's bytes came from the seeder: the origin served none of them (the one HEAD the node makes of a
    # release it confirms, to know it is public, is all it asked about a file)
    assert [e.path for e in many.hub.log.entries("*/resolve/*", method="GET")] == []
    assert len(many.hub.log.entries("*/resolve/*", method="HEAD")) <= 1
    assert snapshot_files(_snapshot(cache, many.created["commit"])) == many.files
