"""Our cache layout equals what huggingface_hub itself writes (real hf_hub_download against devhub)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from swarmhub.devhub import DevHub
from swarmhub.errors import UsageError
from swarmhub.hub.cache import CacheLayout, ref_path_for, safe_repo_path
from swarmhub.hub.repo import RepoRef

FILES = {
    ".gitattributes": b"*.bin filter=lfs diff=lfs merge=lfs -text\n",
    "config.json": b"{}\n",
    "a/b/weights.bin": os.urandom(50_000),
    "same.json": b"{}\n",  # same bytes as config.json: one blob, two links
}


def test_layout_matches_huggingface_hub(tmp_path: Path) -> None:
    from huggingface_hub import HfApi, snapshot_download

    for path, data in FILES.items():
        target = tmp_path / "root" / "models" / "org" / "demo" / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    with DevHub(tmp_path / "root") as hub:
        cache = tmp_path / "hub"
        snapshot = Path(snapshot_download("org/demo", endpoint=hub.endpoint, cache_dir=cache, token=False))
        api = HfApi(endpoint=hub.endpoint, token=False)
        info = api.model_info("org/demo", files_metadata=True)
    from swarmhub.hub.repo import RepoFile

    assert info.siblings is not None
    listed = [RepoFile(s.rfilename, s.size or 0, s.lfs.sha256 if s.lfs else (s.blob_id or "")) for s in info.siblings]
    layout = CacheLayout(RepoRef("model", "org/demo", snapshot.name))
    placed = layout.files(listed)
    repo_folder = cache / str(layout.folder)
    assert repo_folder == snapshot.parent.parent
    for f in placed:
        link = repo_folder / f.link
        assert link.is_symlink() and os.readlink(link) == f.link_target, f
        assert (repo_folder / f.blob).read_bytes() == FILES[f.path]
    assert [f.first_of_blob for f in placed if f.path in ("config.json", "same.json")].count(False) == 1
    assert (repo_folder / ref_path_for("main")).read_text() == snapshot.name


@pytest.mark.parametrize("bad", ["../x", "/etc/passwd", "a/../b", "", "a//b", "a\\..\\b", "./a"])
def test_unsafe_paths_are_refused(bad: str) -> None:
    with pytest.raises(UsageError):
        safe_repo_path(bad)
