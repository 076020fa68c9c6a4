"""``swarmhub create`` streamed from an independent Hub mirror (olah): same torrent as from the files on disk."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from support.cli import run_cli
from support.olah import OlahServer, git_blob_sha1, sha256_hex
from swarmhub.engine.check import check_files

pytestmark = pytest.mark.slow

PIECE = 16384
FILES = {
    "config.json": b'{"model_type": "demo", "hidden_size": 64}\n',
    "model.safetensors": os.urandom(600_000),
    "empty.txt": b"",
    "one-piece.txt": b"p" * PIECE,
    "a/b/c.txt": b"nested\n" * 10,
    "vae/x.bin": os.urandom(40_000),
    "vae-ft.bin": os.urandom(20_000),
    "vae.json": b'{"vae": true}\n',
}
LFS = {"model.safetensors", "vae/x.bin", "vae-ft.bin"}


def _swarmhub(*args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args)


@pytest.fixture(scope="module")
def olah(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    with OlahServer(tmp_path_factory.mktemp("olah")) as server:
        commit = server.add_repo("model", "org/demo", FILES, lfs=LFS)
        yield server, commit


def test_streamed_from_olah_equals_from_dir_of_the_hf_snapshot(olah, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server, commit = olah
    out = _swarmhub(
        "create",
        "org/demo",
        "--endpoint",
        server.endpoint,
        "--piece-size",
        "16k",
        "-o",
        str(tmp_path / "streamed.torrent"),
        "--json",
    )
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["commit"] == commit and summary["format"] == "hybrid"
    etags = {f["path"]: f["etag"] for f in summary["files"]}
    for path, data in FILES.items():
        assert etags[path] == (sha256_hex(data) if path in LFS else git_blob_sha1(data)), path
    assert ".gitattributes" in etags

    # Download the release with the real huggingface_hub client, then hash the cache snapshot.
    from huggingface_hub import snapshot_download

    snapshot = Path(snapshot_download("org/demo", endpoint=server.endpoint, cache_dir=tmp_path / "hub", token=False))
    assert snapshot.parent.name == "snapshots" and snapshot.name == commit
    out2 = _swarmhub(
        "create",
        "org/demo",
        "--from-dir",
        str(snapshot),
        "--piece-size",
        "16k",
        "-o",
        str(tmp_path / "local.torrent"),
        "--json",
    )
    assert out2.returncode == 0, out2.stderr
    streamed = (tmp_path / "streamed.torrent").read_bytes()
    assert (tmp_path / "local.torrent").read_bytes() == streamed  # byte-identical: same release, same torrent

    # libtorrent checks our torrent against the real bytes and finds every piece valid.
    data_dir = tmp_path / "data" / summary["name"]
    shutil.copytree(snapshot, data_dir, symlinks=False)
    assert check_files(streamed, tmp_path / "data").complete


def test_streamed_v1_and_v2_formats_and_filters(olah, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server, _ = olah
    for fmt in ("v1", "v2"):
        out = _swarmhub(
            "create",
            "org/demo@main",
            "--endpoint",
            server.endpoint,
            "--format",
            fmt,
            "--include",
            "vae*",
            "--exclude",
            "*.json",
            "-o",
            str(tmp_path / f"{fmt}.torrent"),
            "--json",
        )
        assert out.returncode == 0, out.stderr
        summary = json.loads(out.stdout)
        assert [f["path"] for f in summary["files"]] == ["vae/x.bin", "vae-ft.bin"]
        assert (summary["info_hash_v2"] is None) == (fmt == "v1")
        assert (summary["info_hash_v1"] is None) == (fmt == "v2")


def test_unknown_repo_and_revision_give_one_line_errors(olah, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server, _ = olah
    for target in ("org/missing", "org/demo@no-such-branch"):
        out = _swarmhub("create", target, "--endpoint", server.endpoint, "-o", str(tmp_path / "x.torrent"))
        assert out.returncode == 1
        assert out.stderr.count("\n") == 1 and "swarmhub: error:" in out.stderr and "Traceback" not in out.stderr
        assert not (tmp_path / "x.torrent").exists()
