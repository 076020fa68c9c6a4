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


def test_landed_release_is_what_huggingface_hub_loads_offline(tmp_path: Path) -> None:
    """Bytes in blobs/<etag>.swarmhub-part, verified, landed: huggingface_hub finds them with local_files_only."""
    import hashlib

    from huggingface_hub import hf_hub_download, snapshot_download

    from swarmhub.errors import IntegrityError
    from swarmhub.hub.repo import RepoFile, git_blob_hasher
    from swarmhub.node.landing import CacheDestination, verify_etag

    def etag(path: str, data: bytes) -> str:
        if path.endswith(".bin"):
            return hashlib.sha256(data).hexdigest()
        h = git_blob_hasher(len(data))
        h.update(data)
        return h.hexdigest()

    commit = "c0ffee" + "0" * 34
    dest = CacheDestination(tmp_path / "hub", RepoRef("model", "org/landed", commit))
    placed = dest.placements([RepoFile(p, len(d), etag(p, d)) for p, d in FILES.items()])
    assert all(p.pending.name == p.final.name + ".swarmhub-part" and p.final.parent.name == "blobs" for p in placed)
    for p in placed:
        if p.primary:
            (dest.root / p.pending).parent.mkdir(parents=True, exist_ok=True)
            (dest.root / p.pending).write_bytes(FILES[p.file.path])
    corrupt = next(p for p in placed if p.file.path == "a/b/weights.bin")
    (dest.root / corrupt.pending).write_bytes(b"x" + FILES[corrupt.file.path][1:])
    with pytest.raises(IntegrityError, match=r"a/b/weights\.bin"):
        verify_etag(dest.root / corrupt.pending, corrupt.file)
    (dest.root / corrupt.pending).write_bytes(FILES[corrupt.file.path])  # the right bytes arrive later
    for p in placed:
        if p.primary:
            verify_etag(dest.root / p.pending, p.file)
            (dest.root / p.pending).rename(dest.root / p.final)  # what libtorrent's rename_file does
        assert dest.landed(p)
        dest.publish(p)
    assert dest.finish("main") == dest.snapshot
    repo_dir = dest.root
    assert not list((repo_dir / "blobs").glob("*.swarmhub-part"))
    assert (repo_dir / "refs" / "main").read_text() == commit

    cache = tmp_path / "hub"
    got = hf_hub_download("org/landed", "a/b/weights.bin", cache_dir=cache, local_files_only=True)
    assert Path(got).read_bytes() == FILES["a/b/weights.bin"]
    folder = Path(snapshot_download("org/landed", cache_dir=cache, local_files_only=True))
    assert folder.name == commit
    assert {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()} == set(FILES)
    dest.publish(placed[0])  # idempotent
    assert (dest.snapshot / placed[0].file.path).is_symlink()
