"""What the olah-based offline Hub mirror (tests/support/olah.py) really answers.

These tests pin down the behaviour our client may rely on (see tests/support/OLAH.md),
including olah's quirks, so that an olah upgrade that changes them fails loudly.
"""

from __future__ import annotations

import json
import random
import socket
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from support.olah import (
    GIT_DATE,
    OlahServer,
    OlahStartupError,
    git_blob_sha1,
    lfs_pointer,
    make_git_repo,
    sha256_hex,
)

# Two olah startups (~2 s each) plus real downloads: ~9-10 s in all.
pytestmark = pytest.mark.slow

MODEL_ID = "test-org/tiny-model"
DATASET_ID = "test-org/tiny-dataset"

_rng = random.Random(20240101)
MODEL_FILES: dict[str, bytes] = {
    "config.json": json.dumps({"model_type": "tiny", "hidden_size": 8}, indent=2).encode() + b"\n",
    "model.bin": _rng.randbytes(300_000),
    "empty.txt": b"",
    "nested/notes.md": b"# notes\n\nnested regular file\n",
    "nested/deeper/shard-00001.bin": _rng.randbytes(4_321),
    "nested/deeper/empty.json": b"",
}
MODEL_LFS = {"model.bin", "nested/deeper/shard-00001.bin"}

DATASET_FILES: dict[str, bytes] = {
    "README.md": b"---\nlicense: mit\n---\n# tiny dataset\n",
    "data/train.csv": b"a,b\n1,2\n3,4\n",
    "data/train-00000.parquet": _rng.randbytes(50_000),
}


def _dataset_lfs(path: str) -> bool:
    return path.endswith(".parquet")


def committed_blob(path: str, files: dict[str, bytes], lfs: set[str] | None) -> bytes:
    """The git blob content olah sees for ``path`` (pointer file for LFS files)."""
    data = files[path]
    is_lfs = path in lfs if lfs is not None else _dataset_lfs(path)
    return lfs_pointer(data) if is_lfs else data


def expected_etag(path: str, files: dict[str, bytes], lfs: set[str] | None) -> str:
    is_lfs = path in lfs if lfs is not None else _dataset_lfs(path)
    return sha256_hex(files[path]) if is_lfs else git_blob_sha1(files[path])


@dataclass
class Mirror:
    olah: OlahServer
    model_commit: str
    dataset_commit: str
    model_files: dict[str, bytes]  # includes the generated .gitattributes

    def client(self) -> httpx.Client:
        # A fresh client per check: olah drops the keep-alive connection after a 500.
        return httpx.Client(base_url=self.olah.endpoint, timeout=10.0, trust_env=False)


@pytest.fixture(scope="module")
def mirror(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mirror]:
    work = tmp_path_factory.mktemp("olah")
    with OlahServer(work) as olah:
        model_commit = olah.add_repo("model", MODEL_ID, MODEL_FILES, MODEL_LFS)
        dataset_commit = olah.add_repo("dataset", DATASET_ID, DATASET_FILES, _dataset_lfs)
        gitattributes = (olah.mirrors_dir / "models" / MODEL_ID / ".gitattributes").read_bytes()
        yield Mirror(olah, model_commit, dataset_commit, {**MODEL_FILES, ".gitattributes": gitattributes})


@pytest.fixture
def hf_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Plain-HTTP downloads from huggingface_hub, whatever the caller's environment says."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(var, raising=False)


# --------------------------------------------------------------------------- make_git_repo


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


def test_make_git_repo_layout_and_determinism(tmp_path: Path) -> None:
    sha_a = make_git_repo(tmp_path / "a", "model", MODEL_ID, MODEL_FILES, MODEL_LFS)
    sha_b = make_git_repo(tmp_path / "b", "models", MODEL_ID, MODEL_FILES, MODEL_LFS.__contains__)
    assert sha_a == sha_b, "same input must give the same commit"
    assert len(sha_a) == 40

    repo = tmp_path / "a" / "models" / "test-org" / "tiny-model"
    assert _git(repo, "rev-parse", "--abbrev-ref", "HEAD") == "main"
    assert _git(repo, "log", "-1", "--format=%an <%ae> %cn <%ce> %aI %cI") == (
        f"swarmhub-tests <tests@swarmhub.invalid> swarmhub-tests <tests@swarmhub.invalid> {GIT_DATE} {GIT_DATE}"
    )
    tracked = set(_git(repo, "ls-files").splitlines())
    assert tracked == {*MODEL_FILES, ".gitattributes"}
    for path, data in MODEL_FILES.items():
        blob = subprocess.run(
            ["git", "-C", str(repo), "cat-file", "blob", f"HEAD:{path}"], check=True, capture_output=True
        ).stdout
        if path in MODEL_LFS:
            oid = sha256_hex(data)
            assert blob == (
                f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {len(data)}\n".encode()
            )
            assert (repo / ".git" / "lfs" / "objects" / oid[:2] / oid[2:4] / oid).read_bytes() == data
        else:
            assert blob == data
    assert (repo / ".gitattributes").read_text() == (
        "/model.bin filter=lfs diff=lfs merge=lfs -text\n"
        "/nested/deeper/shard-00001.bin filter=lfs diff=lfs merge=lfs -text\n"
    )

    # A second call commits a new full snapshot on top of main.
    sha_2 = make_git_repo(tmp_path / "a", "model", MODEL_ID, {"only.txt": b"x"}, set(), date="2024-02-02T00:00:00Z")
    assert _git(repo, "rev-parse", "HEAD~1") == sha_a
    assert _git(repo, "rev-parse", "HEAD") == sha_2
    assert _git(repo, "ls-files").splitlines() == ["only.txt"]

    dataset = make_git_repo(tmp_path / "a", "dataset", DATASET_ID, DATASET_FILES, _dataset_lfs)
    assert _git(tmp_path / "a" / "datasets" / "test-org" / "tiny-dataset", "rev-parse", "HEAD") == dataset


def test_make_git_repo_rejects_what_olah_cannot_serve(tmp_path: Path) -> None:
    bad = bytes(range(128, 256)) + b"\xff\xfe"  # 130 bytes, not UTF-8
    with pytest.raises(ValueError, match=r"121\.\.149"):
        make_git_repo(tmp_path, "model", "o/r", {"bad.dat": bad}, set())
    # Fine as LFS, or when explicitly allowed.
    make_git_repo(tmp_path, "model", "o/lfs", {"bad.dat": bad}, {"bad.dat"})
    make_git_repo(tmp_path, "model", "o/unsafe", {"bad.dat": bad}, set(), olah_safe=False)
    with pytest.raises(ValueError):
        make_git_repo(tmp_path, "model", "no-slash", {}, set())
    with pytest.raises(ValueError):
        make_git_repo(tmp_path, "space", "o/r", {}, set())


# --------------------------------------------------------------------------- server lifecycle


def test_server_startup_and_shutdown(tmp_path: Path) -> None:
    olah = OlahServer(tmp_path / "olah")
    with olah:
        assert olah.running
        assert olah.endpoint == f"http://127.0.0.1:{olah.port}"
        assert 0 < olah.startup_seconds < olah.startup_timeout
        r = httpx.get(f"{olah.endpoint}{olah.READY_PATH}", trust_env=False)
        assert r.status_code == 404
        assert "Traceback" not in olah.log_path.read_text()
        # All olah state stays in the work dir.
        assert (tmp_path / "olah" / "olah.toml").is_file()
        assert (tmp_path / "olah" / "logs" / "olah.log").is_file()
    assert not olah.running
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", olah.port)) != 0, "olah still listening after stop()"
    assert "Finished server process" in olah.log_path.read_text()


def test_startup_failure_shows_log_tail(tmp_path: Path) -> None:
    fake = tmp_path / "fake-python"
    fake.write_text("#!/bin/sh\necho 'olah exploded: bad config' >&2\nexit 3\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    olah = OlahServer(tmp_path / "olah", python=str(fake), startup_timeout=10)
    with pytest.raises(OlahStartupError, match=r"(?s)exited with code 3.*olah exploded: bad config"):
        olah.start()
    assert not olah.running


# --------------------------------------------------------------------------- revision API


def test_revision_api(mirror: Mirror) -> None:
    base = f"/api/models/{MODEL_ID}/revision"
    with mirror.client() as c:
        for url in (f"{base}/main", f"{base}/main?blobs=true", f"{base}/{mirror.model_commit}"):
            r = c.get(url)
            assert r.status_code == 200, url
            info = r.json()
            assert info["sha"] == mirror.model_commit
            assert info["id"] == MODEL_ID
            assert info["private"] is False
            assert info["lastModified"] == "2024-01-01T00:00:00.000000Z"
            # siblings: every file (no directories), rfilename only -- even with ?blobs=true
            # there is no size / blobId / lfs.
            assert sorted(s["rfilename"] for s in info["siblings"]) == sorted(mirror.model_files)
            assert all(set(s) == {"rfilename"} for s in info["siblings"])

        # Unknown revision or repo: 401 RepoNotFound (the Hub says 404 RevisionNotFound).
        for url in (f"{base}/no-such-branch", "/api/models/test-org/no-such-repo/revision/main"):
            r = c.get(url)
            assert r.status_code == 401, url
            assert r.headers["x-error-code"] == "RepoNotFound"
        refs = c.get(f"/api/models/{MODEL_ID}/refs").json()
        assert refs["branches"] == [{"name": "main", "ref": "refs/heads/main", "targetCommit": mirror.model_commit}]
        commits = c.get(f"/api/models/{MODEL_ID}/commits/main").json()
        assert [x["id"] for x in commits] == [mirror.model_commit]
        # Without /revision/<rev> olah offline only knows its upstream cache: 401 for a mirror repo.
        assert c.get(f"/api/models/{MODEL_ID}").status_code == 401


# --------------------------------------------------------------------------- tree API


def _check_tree_entries(entries: list[dict], files: dict[str, bytes], lfs: set[str] | None) -> None:
    by_path = {e["path"]: e for e in entries}
    assert len(by_path) == len(entries), "duplicate paths"
    for path, data in files.items():
        e = by_path[path]
        assert e["type"] == "file"
        assert e["size"] == len(data)
        blob = committed_blob(path, files, lfs)
        assert e["oid"] == git_blob_sha1(blob)  # git blob id (of the pointer for LFS files)
        if blob != data:
            assert e["lfs"] == {"oid": sha256_hex(data), "size": len(data), "pointerSize": len(blob)}
        else:
            assert "lfs" not in e


def test_tree_api_recursive(mirror: Mirror) -> None:
    commit = mirror.model_commit
    with mirror.client() as c:
        # Without a trailing slash olah answers 307 to .../tree/<rev>/ (query kept, absolute URL).
        r = c.get(f"/api/models/{MODEL_ID}/tree/{commit}", params={"recursive": "true", "expand": "false"})
        assert r.status_code == 307
        assert r.headers["location"] == (
            f"{mirror.olah.endpoint}/api/models/{MODEL_ID}/tree/{commit}/?recursive=true&expand=false"
        )
        r = c.get(r.headers["location"])
        assert r.status_code == 200
        assert "link" not in r.headers  # no pagination: the whole tree in one page
        entries = r.json()

    _check_tree_entries(entries, mirror.model_files, MODEL_LFS)
    dirs = {e["path"] for e in entries if e["type"] == "directory"}
    assert dirs == {"nested", "nested/deeper"}
    assert {e["path"] for e in entries} == {*mirror.model_files, *dirs}
    for e in entries:
        assert set(e) <= {"type", "oid", "size", "path", "lfs"}
        assert len(e["oid"]) == 40
    # Order: a directory's own entries (git order), then each subdirectory recursively.
    paths = [e["path"] for e in entries]
    assert paths.index("nested") < paths.index("nested/notes.md") < paths.index("nested/deeper/empty.json")


def test_tree_api_expand(mirror: Mirror) -> None:
    with mirror.client() as c:
        r = c.get(
            f"/api/models/{MODEL_ID}/tree/main/",
            params={"recursive": "true", "expand": "true"},
            follow_redirects=True,
        )
    assert r.status_code == 200
    entries = r.json()
    _check_tree_entries(entries, mirror.model_files, MODEL_LFS)
    for e in entries:
        assert e["lastCommit"]["id"] == mirror.model_commit
        assert e["lastCommit"]["date"] == "2024-01-01T00:00:00.000000Z"
        assert e["security"]["blobId"] == e["oid"]


def test_tree_api_subpath_and_non_recursive(mirror: Mirror) -> None:
    with mirror.client() as c:
        top = c.get(f"/api/models/{MODEL_ID}/tree/main/").json()
        sub = c.get(f"/api/models/{MODEL_ID}/tree/main/nested/deeper").json()
        on_file = c.get(f"/api/models/{MODEL_ID}/tree/main/config.json")
        missing = c.get(f"/api/models/{MODEL_ID}/tree/main/nope")
        missing_sha = c.get(f"/api/models/{MODEL_ID}/tree/{mirror.model_commit}/nope")
        bad_rev = c.get(f"/api/models/{MODEL_ID}/tree/no-such-branch/")
    assert {e["path"] for e in top} == {".gitattributes", "config.json", "model.bin", "empty.txt", "nested"}
    assert {e["path"] for e in sub} == {"nested/deeper/shard-00001.bin", "nested/deeper/empty.json"}
    # A file path, a missing path or an unknown revision: 401 RepoNotFound under a branch
    # name; 404 EntryNotFound for a missing path under a full sha.
    assert on_file.status_code == 401
    assert missing.status_code == 401
    assert bad_rev.status_code == 401
    assert missing_sha.status_code == 404
    assert missing_sha.headers["x-error-code"] == "EntryNotFound"


def test_paths_info(mirror: Mirror) -> None:
    with mirror.client() as c:
        r = c.post(
            f"/api/models/{MODEL_ID}/paths-info/{mirror.model_commit}",
            data={"paths": ["model.bin", "nested/notes.md", "nested", "does/not/exist"]},
        )
    assert r.status_code == 200
    entries = r.json()
    assert [e["path"] for e in entries] == ["model.bin", "nested/notes.md", "nested"]  # missing: dropped
    files = {p: MODEL_FILES[p] for p in ("model.bin", "nested/notes.md")}
    _check_tree_entries(entries, files, MODEL_LFS)


# --------------------------------------------------------------------------- resolve


def test_resolve_head_and_get(mirror: Mirror) -> None:
    commit = mirror.model_commit
    with mirror.client() as c:
        for path, data in mirror.model_files.items():
            etag = expected_etag(path, mirror.model_files, MODEL_LFS)
            for rev in (commit, "main"):
                for url in (f"/{MODEL_ID}/resolve/{rev}/{path}", f"/models/{MODEL_ID}/resolve/{rev}/{path}"):
                    h = c.head(url)
                    assert h.status_code == 200, url
                    assert h.headers["x-repo-commit"] == commit
                    assert h.headers["content-length"] == str(len(data))
                    assert h.headers["etag"] == etag  # unquoted
                    # No X-Linked-*, no redirect to a CDN, no Accept-Ranges.
                    for absent in ("x-linked-etag", "x-linked-size", "location", "accept-ranges"):
                        assert absent not in h.headers, (url, absent)

            g = c.get(f"/{MODEL_ID}/resolve/{commit}/{path}")
            assert g.status_code == 200
            assert g.content == data
            assert not g.history
            # GET is a chunked stream with no metadata headers at all.
            assert g.headers.get("transfer-encoding") == "chunked"
            for absent in ("content-length", "etag", "x-repo-commit"):
                assert absent not in g.headers


def test_resolve_quirks(mirror: Mirror) -> None:
    data = MODEL_FILES["model.bin"]
    with mirror.client() as c:
        r = c.get(f"/{MODEL_ID}/resolve/main/model.bin", headers={"Range": "bytes=10-19"})
    # Range is ignored: full body, 200.
    assert r.status_code == 200
    assert r.content == data
    # A missing file: HEAD says 404 EntryNotFound only when the revision is a full sha;
    # under a branch name olah falls back to resolving the branch in its (empty) upstream
    # cache and says 401 RepoNotFound.  GET crashes (500, KeyError) either way.
    with mirror.client() as c:
        r = c.head(f"/{MODEL_ID}/resolve/{mirror.model_commit}/missing.txt")
    assert r.status_code == 404
    assert r.headers["x-error-code"] == "EntryNotFound"
    with mirror.client() as c:
        r = c.head(f"/{MODEL_ID}/resolve/main/missing.txt")
    assert r.status_code == 401
    assert r.headers["x-error-code"] == "RepoNotFound"
    for rev in (mirror.model_commit, "main"):
        with mirror.client() as c:
            r = c.get(f"/{MODEL_ID}/resolve/{rev}/missing.txt")
        assert r.status_code == 500
    # An abbreviated sha is accepted and resolved.
    with mirror.client() as c:
        r = c.head(f"/{MODEL_ID}/resolve/{mirror.model_commit[:7]}/config.json")
    assert r.status_code == 200
    assert r.headers["x-repo-commit"] == mirror.model_commit
    with mirror.client() as c:
        r = c.head(f"/{MODEL_ID}/resolve/no-such-branch/config.json")
    assert r.status_code == 401
    assert r.headers["x-error-code"] == "RepoNotFound"
    with mirror.client() as c:
        r = c.head(f"/{MODEL_ID}/resolve/main/nested")
    assert r.status_code == 200  # a directory "resolves" (to its git tree object)


def test_dataset_repo(mirror: Mirror) -> None:
    with mirror.client() as c:
        info = c.get(f"/api/datasets/{DATASET_ID}/revision/main").json()
        assert info["sha"] == mirror.dataset_commit
        assert info["cardData"] == {"license": "mit"}
        tree = c.get(f"/api/datasets/{DATASET_ID}/tree/main/", params={"recursive": "true"}).json()
        _check_tree_entries(tree, DATASET_FILES, None)
        for path, data in DATASET_FILES.items():
            h = c.head(f"/datasets/{DATASET_ID}/resolve/main/{path}")
            assert h.status_code == 200
            assert h.headers["x-repo-commit"] == mirror.dataset_commit
            assert h.headers["etag"] == expected_etag(path, DATASET_FILES, None)
            assert h.headers["content-length"] == str(len(data))
            assert c.get(f"/datasets/{DATASET_ID}/resolve/main/{path}").content == data
        # The model namespace does not see the dataset.
        assert c.get(f"/api/models/{DATASET_ID}/revision/main").status_code == 401


def test_new_commit_is_served(mirror: Mirror) -> None:
    repo_id = "test-org/evolving"
    c1 = mirror.olah.add_repo("model", repo_id, {"w.bin": b"one" * 100}, {"w.bin"})
    with mirror.client() as c:
        assert c.get(f"/api/models/{repo_id}/revision/main").json()["sha"] == c1
    c2 = mirror.olah.add_repo("model", repo_id, {"w.bin": b"two" * 100}, {"w.bin"}, date="2024-03-01T00:00:00Z")
    assert c2 != c1
    with mirror.client() as c:
        assert c.get(f"/api/models/{repo_id}/revision/main").json()["sha"] == c2
        assert c.get(f"/{repo_id}/resolve/main/w.bin").content == b"two" * 100
        assert c.get(f"/{repo_id}/resolve/{c1}/w.bin").content == b"one" * 100
        assert c.head(f"/{repo_id}/resolve/{c1}/w.bin").headers["x-repo-commit"] == c1


# --------------------------------------------------------------------------- real huggingface_hub


def test_hf_hub_download(mirror: Mirror, hf_env: None, tmp_path: Path) -> None:
    from huggingface_hub import hf_hub_download

    cache = tmp_path / "hf-cache"
    for path in ("model.bin", "config.json", "nested/deeper/shard-00001.bin", "nested/deeper/empty.json"):
        local = hf_hub_download(MODEL_ID, path, endpoint=mirror.olah.endpoint, cache_dir=cache, token=False)
        assert Path(local).read_bytes() == MODEL_FILES[path]
        assert f"/snapshots/{mirror.model_commit}/" in local
        # The cache blob is named after the etag olah sent (sha256 for LFS, blob sha1 otherwise).
        blob = cache / "models--test-org--tiny-model" / "blobs" / expected_etag(path, MODEL_FILES, MODEL_LFS)
        assert blob.read_bytes() == MODEL_FILES[path]
    ref = cache / "models--test-org--tiny-model" / "refs" / "main"
    assert ref.read_text() == mirror.model_commit

    local = hf_hub_download(
        DATASET_ID,
        "data/train-00000.parquet",
        repo_type="dataset",
        endpoint=mirror.olah.endpoint,
        cache_dir=cache,
        token=False,
    )
    assert Path(local).read_bytes() == DATASET_FILES["data/train-00000.parquet"]


def test_snapshot_download(mirror: Mirror, hf_env: None, tmp_path: Path) -> None:
    from huggingface_hub import snapshot_download

    root = Path(snapshot_download(MODEL_ID, endpoint=mirror.olah.endpoint, cache_dir=tmp_path / "hf", token=False))
    assert root.name == mirror.model_commit
    got = {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}
    assert got == mirror.model_files

    ds_root = Path(
        snapshot_download(
            DATASET_ID,
            repo_type="dataset",
            endpoint=mirror.olah.endpoint,
            cache_dir=tmp_path / "hf",
            token=False,
            allow_patterns=["data/*"],
        )
    )
    got = {str(p.relative_to(ds_root)): p.read_bytes() for p in ds_root.rglob("*") if p.is_file()}
    assert got == {k: v for k, v in DATASET_FILES.items() if k.startswith("data/")}
