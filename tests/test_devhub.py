"""The dev hub: folders as Hub repos, served to real huggingface_hub, with faults, ranges and gating.

Expected hashes are computed here with hashlib directly, not with swarmhub's helpers.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from support.cli import sigint_default
from swarmhub.devhub import DevHub, DevHubSettings, DevHubState, RepoStore, origin_app, rules_from_json
from swarmhub.devhub.app import RangeNotSatisfiable, cdn_app, parse_byte_range, sign_lfs_url
from swarmhub.errors import ConfigError, EntryNotFound, RepoNotFound
from swarmhub.hub.gitattributes import lfs_matcher
from swarmhub.hub.repo import RepoType
from swarmhub.hub.signed_urls import signed_url_expiry

# huggingface_hub reads these at import time: set them before it is imported (inside the tests).
os.environ["HF_HUB_DISABLE_XET"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

GITATTRIBUTES = b"*.bin filter=lfs diff=lfs merge=lfs -text\n"
FILES: dict[str, bytes] = {
    ".gitattributes": GITATTRIBUTES,
    "config.json": b'{"hidden_size": 64}\n',
    "weights.bin": os.urandom(300_000),
    "sub/deep/empty.txt": b"",
    "sub/deep/notes.md": b"# notes\n" * 50,
    "sub/shard.bin": os.urandom(70_000),
}
LFS_PATHS = {"weights.bin", "sub/shard.bin"}


def blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def pointer(data: bytes) -> bytes:
    sha = hashlib.sha256(data).hexdigest()
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha}\nsize {len(data)}\n".encode()


def etag(path: str) -> str:
    data = FILES[path]
    return hashlib.sha256(data).hexdigest() if path in LFS_PATHS else blob_sha1(data)


def file_entry(path: str) -> dict[str, Any]:
    """A file's ``/tree`` (and ``paths-info``) entry, from its bytes."""
    data = FILES[path]
    if path not in LFS_PATHS:
        return {"type": "file", "oid": blob_sha1(data), "size": len(data), "path": path}
    lfs = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": len(pointer(data))}
    return {"type": "file", "oid": blob_sha1(pointer(data)), "size": len(data), "path": path, "lfs": lfs}


def tree_oid(folder: str, etags: dict[str, str] | None = None) -> str:
    """A folder's oid: SHA-1 over "path\\0etag\\n" of the files below it, sorted (default: FILES')."""
    etags = etags if etags is not None else {p: etag(p) for p in FILES}
    lines = "".join(f"{p}\0{etags[p]}\n" for p in sorted(etags) if p.startswith(f"{folder}/"))
    return hashlib.sha1(lines.encode()).hexdigest()


def folder_entry(folder: str, etags: dict[str, str] | None = None) -> dict[str, Any]:
    return {"type": "directory", "oid": tree_oid(folder, etags), "size": 0, "path": folder}


def write_repo(folder: Path, files: dict[str, bytes]) -> None:
    for path, data in files.items():
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_bytes(data)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("devhub")
    write_repo(root / "models/org/tiny", FILES)
    write_repo(root / "models/org/tiny/.git", {"HEAD": b"ref: refs/heads/main\n"})  # never served
    write_repo(root / "datasets/org/data", FILES)
    write_repo(root / "models/solo", {"README.md": b"no org\n"})
    write_repo(root / "models/org/gated", {"secret.bin": b"s" * 5000, ".gitattributes": GITATTRIBUTES})
    return root


@pytest.fixture(scope="module")
def running_hub(root: Path) -> Iterator[DevHub]:
    with DevHub(root, settings=DevHubSettings(page_size=2, gated={"org/gated": "tok-123"})) as hub:
        yield hub


@pytest.fixture
def hub(running_hub: DevHub) -> Iterator[DevHub]:
    """The module's hub, with faults, log and settings back to normal for each test."""
    settings = running_hub.settings
    running_hub.faults.clear()
    running_hub.log.clear()
    yield running_hub
    running_hub.faults.clear()
    running_hub.settings = settings


def asgi(
    state: DevHubState, url: str, method: str = "GET", headers: dict[str, str] | None = None, **body: Any
) -> httpx.Response:
    """One request to the origin app in-process (``body``: httpx's ``data=``, ``json=`` or ``content=``)."""

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=origin_app(state))
        async with httpx.AsyncClient(transport=transport, base_url="http://hub.test") as client:
            return await client.request(method, url, headers=headers, **body)

    return anyio.run(go)


@pytest.fixture
def state(root: Path) -> DevHubState:
    return DevHubState(
        RepoStore(root),
        DevHubSettings(page_size=3, cdn_url="http://cdn.test", gated={"org/gated": "tok-123"}),
    )


# --- gitattributes ----------------------------------------------------------------------------------------

HUB_DEFAULT = """\
*.7z filter=lfs diff=lfs merge=lfs -text
*.bin filter=lfs diff=lfs merge=lfs -text
*.safetensors filter=lfs diff=lfs merge=lfs -text
saved_model/**/* filter=lfs diff=lfs merge=lfs -text
*tfevents* filter=lfs diff=lfs merge=lfs -text
"""


@pytest.mark.parametrize(
    ("text", "path", "expected"),
    [
        (HUB_DEFAULT, "model.safetensors", True),
        (HUB_DEFAULT, "a/b/c/model.bin", True),  # no slash: basename at any depth
        (HUB_DEFAULT, "model.bin.json", False),
        (HUB_DEFAULT, "saved_model/variables/v.data", True),
        (HUB_DEFAULT, "saved_model/x", True),
        (HUB_DEFAULT, "other/saved_model/x", False),  # slash: anchored at the root
        (HUB_DEFAULT, "runs/events.out.tfevents.123.host", True),
        (HUB_DEFAULT, "MODEL.BIN", False),  # case-sensitive
        ("/top.bin filter=lfs\n", "top.bin", True),
        ("/top.bin filter=lfs\n", "sub/top.bin", False),
        ("sub/*.pt filter=lfs\n", "sub/a.pt", True),
        ("sub/*.pt filter=lfs\n", "sub/x/a.pt", False),  # * does not cross /
        ("sub/*.pt filter=lfs\n", "x/sub/a.pt", False),
        ("**/w.pt filter=lfs\n", "a/b/w.pt", True),
        ("**/w.pt filter=lfs\n", "w.pt", True),
        ("a/**/b.pt filter=lfs\n", "a/b.pt", True),
        ("a/**/b.pt filter=lfs\n", "a/x/y/b.pt", True),
        ("data/** filter=lfs\n", "data/x/y.csv", True),
        ("shard-?.pt filter=lfs\n", "shard-1.pt", True),
        ("shard-?.pt filter=lfs\n", "shard-10.pt", False),
        ("shard-[0-4].pt filter=lfs\n", "shard-3.pt", True),
        ("shard-[!0-4].pt filter=lfs\n", "shard-7.pt", True),
        ("shard-[!0-4].pt filter=lfs\n", "shard-3.pt", False),
        ("ckpt/ filter=lfs\n", "ckpt/a.bin", False),  # folder-only patterns match no file
        ("*.bin filter=lfs\n*.bin -filter\n", "a.bin", False),  # the last line wins
        ("*.bin filter=lfs\nkeep.bin !filter\n", "keep.bin", False),
        ("*.bin filter=lfs\nkeep.bin !filter\n", "other.bin", True),
        ("*.bin -filter\n*.bin filter=lfs\n", "a.bin", True),
        ("*.bin filter=lfs\n*.bin diff=other\n", "a.bin", True),  # a line without filter changes nothing
        ("*.bin filter=other\n", "a.bin", False),
        ("# *.bin filter=lfs\n\n", "a.bin", False),
        ('"with space.bin" filter=lfs\n', "with space.bin", True),
        ("*.bin\tfilter=lfs\n", "a.bin", True),
        ("", "a.bin", False),
    ],
)
def test_lfs_matcher(text: str, path: str, expected: bool) -> None:
    assert lfs_matcher(text)(path) is expected


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_lfs_matcher_agrees_with_git_check_attr(tmp_path: Path) -> None:
    text = HUB_DEFAULT + "/top/*.pt filter=lfs\n**/ckpt/** filter=lfs\nsub/keep.bin -filter\nx[ab]?.dat filter=lfs\n"
    paths = [
        "m.bin", "a/m.bin", "sub/keep.bin", "keep.bin", "top/a.pt", "top/b/a.pt", "q/top/a.pt",
        "saved_model/a", "saved_model/a/b", "x/saved_model/a", "ckpt/1", "a/ckpt/b/c", "xa1.dat",
        "xc1.dat", "xab1.dat", "e.tfevents", "tfevents", "a.7z", "m.safetensors.idx",
    ]  # fmt: skip
    (tmp_path / ".gitattributes").write_text(text)
    env = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}  # no core.attributesFile
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True, env=env)
    out = subprocess.run(
        ["git", "-C", str(tmp_path), "check-attr", "--stdin", "filter"],
        input="\n".join(paths) + "\n", capture_output=True, text=True, check=True, env=env,
    ).stdout  # fmt: skip
    git_says = {line.split(": filter: ")[0]: line.endswith(": filter: lfs") for line in out.splitlines()}
    is_lfs = lfs_matcher(text)
    assert {p: is_lfs(p) for p in paths} == git_says


# --- repos ------------------------------------------------------------------------------------------------


def test_snapshot_identities(root: Path) -> None:
    snap = RepoStore(root).snapshot("model", "org/tiny")
    assert [f.path for f in snap.files] == sorted(FILES)  # .git skipped
    for f in snap.files:
        data = FILES[f.path]
        assert f.size == len(data)
        assert f.etag == etag(f.path)
        if f.path in LFS_PATHS:
            assert f.lfs is not None
            assert f.blob_id == blob_sha1(pointer(data))
            assert f.lfs.pointer_size == len(pointer(data))
        else:
            assert f.lfs is None
            assert f.blob_id == blob_sha1(data)
    assert re.fullmatch(r"[0-9a-f]{40}", snap.commit)
    assert RepoStore(root).snapshot("dataset", "org/data").commit == snap.commit  # same content, same commit


def test_big_files_are_lfs_without_gitattributes(tmp_path: Path) -> None:
    repo = tmp_path / "models/org/big"
    repo.mkdir(parents=True)
    for name, size in (("just-under", 10 * 2**20 - 1), ("at-limit", 10 * 2**20)):
        with (repo / name).open("wb") as f:
            f.truncate(size)
    snap = RepoStore(tmp_path).snapshot("model", "org/big")
    assert snap.file("just-under").lfs is None
    assert snap.file("at-limit").etag == hashlib.sha256(bytes(10 * 2**20)).hexdigest()


def test_a_big_repo_is_walked_once_and_again_when_it_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """2,500 files: a lookup is not a walk of every file (a download asks once per file); a file added or
    replaced shows once the trusted second is over, a file rewritten in place within ``WALK_AT_LEAST``."""
    from swarmhub.devhub import repos

    repo = tmp_path / "datasets/org/many"
    write_repo(repo, {f"part-{i // 500}/row-{i:05d}.jsonl": b'{"x": %d}\n' % i for i in range(2500)})
    store = RepoStore(tmp_path)
    walks = []
    walk = RepoStore._walk
    monkeypatch.setattr(RepoStore, "_walk", lambda self, *a: walks.append(a) or walk(self, *a))
    first = store.snapshot("dataset", "org/many")
    assert all(store.snapshot("dataset", "org/many") is first for _ in range(100)) and len(walks) == 1
    pages = first.tree(recursive=True)
    assert first.tree(recursive=True) is pages and len(pages) == 2505  # 2,500 files and their 5 folders

    monkeypatch.setattr(repos, "TRUST_FOR", 0.0)
    assert store.snapshot("dataset", "org/many") is first and len(walks) == 1  # folders unchanged: no walk
    write_repo(repo, {"part-9/new.jsonl": b"{}\n"})
    added = store.snapshot("dataset", "org/many")
    assert "part-9/new.jsonl" in {f.path for f in added.files} and added.commit != first.commit

    target = repo / "part-0/row-00000.jsonl"
    target.write_bytes(b'{"x": 7}\n')  # same size, in place: no folder changes
    os.utime(target, ns=(0, target.stat().st_mtime_ns + 10**9))
    assert (
        store.snapshot("dataset", "org/many").file("part-0/row-00000.jsonl").etag
        == added.file("part-0/row-00000.jsonl").etag
    )
    monkeypatch.setattr(repos, "WALK_AT_LEAST", 0.0)
    monkeypatch.setattr(repos, "WALK_SPACING", 0.0)
    assert store.snapshot("dataset", "org/many").file("part-0/row-00000.jsonl").etag == blob_sha1(b'{"x": 7}\n')


def test_a_long_walk_due_by_time_runs_beside_the_requests(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A walk due by time alone that takes ``WALK_BESIDE`` or more does not hold requests: they get the kept
    listing while it runs in a thread, and its result once it is done; a folder that changed is walked at once."""
    from swarmhub.devhub import repos

    repo = tmp_path / "datasets/org/many"
    write_repo(repo, {f"part-{i // 500}/row-{i:05d}.jsonl": b'{"x": %d}\n' % i for i in range(600)})
    store = RepoStore(tmp_path)
    first = store.snapshot("dataset", "org/many")
    started, release, walls = threading.Event(), threading.Event(), []
    walk = RepoStore._walk

    def slow_walk(self: RepoStore, *a: Any) -> repos.RepoSnapshot:
        walls.append(threading.current_thread() is threading.main_thread())
        started.set()
        release.wait(10)
        return walk(self, *a)

    target = repo / "part-0/row-00000.jsonl"
    target.write_bytes(b'{"x": 7}\n')  # same size, in place: no folder changes
    os.utime(target, ns=(0, target.stat().st_mtime_ns + 10**9))
    for name, value in (("TRUST_FOR", 0.0), ("WALK_AT_LEAST", 0.0), ("WALK_SPACING", 0.0), ("WALK_BESIDE", 0.0)):
        monkeypatch.setattr(repos, name, value)
    monkeypatch.setattr(RepoStore, "_walk", slow_walk)
    assert store.snapshot("dataset", "org/many") is first  # the walk started beside, held by slow_walk
    assert started.wait(10) and store.snapshot("dataset", "org/many") is first and walls == [False]  # one walk
    release.set()
    for _ in range(100):
        if not store._kept[("dataset", "org/many")].refreshing:
            break
        time.sleep(0.05)
    monkeypatch.setattr(repos, "WALK_AT_LEAST", 1000.0)  # no walk due by time from here
    assert store.snapshot("dataset", "org/many").file("part-0/row-00000.jsonl").etag == blob_sha1(b'{"x": 7}\n')
    write_repo(repo, {"part-9/new.jsonl": b"{}\n"})  # a folder changed: walked before the answer
    assert "part-9/new.jsonl" in {f.path for f in store.snapshot("dataset", "org/many").files}
    assert walls[-1] is True


def test_a_walk_that_takes_long_is_spaced_by_its_own_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """A repo whose walk takes 2 s (100,000 files) is walked again after 40 s, not every ``WALK_AT_LEAST``."""
    from swarmhub.devhub import repos

    kept = repos._Kept(None, [], walked=100.0, looked=100.0, cost=2.0)  # type: ignore[arg-type]
    assert not kept.walk_due(100.0 + repos.WALK_AT_LEAST) and not kept.walk_due(139.0) and kept.walk_due(140.0)
    quick = repos._Kept(None, [], walked=100.0, looked=100.0, cost=0.01)  # type: ignore[arg-type]
    assert not quick.walk_due(109.0) and quick.walk_due(100.0 + repos.WALK_AT_LEAST)


def test_hashes_cached_per_size_and_mtime(tmp_path: Path) -> None:
    repo = tmp_path / "models/org/live"
    write_repo(repo, {"a.txt": b"aaaa"})
    store = RepoStore(tmp_path)
    first = store.snapshot("model", "org/live")
    st_before = (repo / "a.txt").stat()
    (repo / "a.txt").write_bytes(b"bbbb")  # same size; put the old mtime back: the cache must not notice
    os.utime(repo / "a.txt", ns=(st_before.st_atime_ns, st_before.st_mtime_ns))
    assert store.snapshot("model", "org/live").file("a.txt").etag == blob_sha1(b"aaaa")
    os.utime(repo / "a.txt", ns=(st_before.st_atime_ns, st_before.st_mtime_ns + 10**9))
    second = store.snapshot("model", "org/live")
    assert second.file("a.txt").etag == blob_sha1(b"bbbb")
    assert second.commit != first.commit
    write_repo(repo, {"new/b.txt": b"b"})  # files added between requests appear
    assert [f.path for f in store.snapshot("model", "org/live").files] == ["a.txt", "new/b.txt"]


def test_repo_lookup(root: Path) -> None:
    store = RepoStore(root)
    assert [f.path for f in store.snapshot("model", "solo").files] == ["README.md"]
    for repo_type, repo_id in [
        ("model", "org"),
        ("model", "org/nope"),
        ("dataset", "org/tiny"),
        ("model", "../x"),
    ]:
        with pytest.raises(RepoNotFound):
            store.snapshot(repo_type, repo_id)  # type: ignore[arg-type]
    with pytest.raises(EntryNotFound):
        store.snapshot("model", "org/tiny").file("nope.txt")


def test_tree_listing(root: Path) -> None:
    snap = RepoStore(root).snapshot("model", "org/tiny")
    top = snap.tree()
    assert [(e["type"], e["path"]) for e in top] == [
        ("file", ".gitattributes"), ("file", "config.json"), ("directory", "sub"), ("file", "weights.bin"),
    ]  # fmt: skip
    assert [e["path"] for e in snap.tree("sub")] == ["sub/deep", "sub/shard.bin"]
    everything = snap.tree(recursive=True)
    assert {e["path"] for e in everything if e["type"] == "directory"} == {"sub", "sub/deep"}
    files = {e["path"]: e for e in everything if e["type"] == "file"}
    assert set(files) == set(FILES)
    w = FILES["weights.bin"]
    assert files["weights.bin"] == {
        "type": "file", "oid": blob_sha1(pointer(w)), "size": len(w), "path": "weights.bin",
        "lfs": {"oid": hashlib.sha256(w).hexdigest(), "size": len(w), "pointerSize": len(pointer(w))},
    }  # fmt: skip
    config = FILES["config.json"]
    assert files["config.json"] == {
        "type": "file",
        "oid": blob_sha1(config),
        "size": len(config),
        "path": "config.json",
    }
    with pytest.raises(EntryNotFound):
        snap.tree("nope")


def test_path_info(root: Path, tmp_path: Path) -> None:
    snap = RepoStore(root).snapshot("model", "org/tiny")
    for path in ("config.json", "weights.bin", "sub/deep/empty.txt"):
        assert snap.path_info(path) == file_entry(path)
    assert snap.path_info("sub") == folder_entry("sub")
    assert snap.path_info("sub/deep") == folder_entry("sub/deep")
    for missing in ("", "/", "nope", "su", "sub/", "/sub", "sub/dee", "sub/deep/notes", "config.json/x", "SUB"):
        assert snap.path_info(missing) is None, missing
    # Names that sort around "a/": "a-b" and "a.txt" before it, "a0" and "ab" after.
    names = ("a-b/c", "a.txt", "a/b", "a/c/d", "a0", "ab/x")
    write_repo(tmp_path / "models/org/edge", {n: n.encode() for n in names})
    edge = RepoStore(tmp_path).snapshot("model", "org/edge")
    etags = {n: blob_sha1(n.encode()) for n in names}
    for folder in ("a", "a/c", "a-b", "ab"):
        assert edge.path_info(folder) == folder_entry(folder, etags)
    assert edge.path_info("a0") == {"type": "file", "oid": etags["a0"], "size": 2, "path": "a0"}
    assert edge.path_info("a/c/d/e") is None
    folders = [e for e in edge.tree() if e["type"] == "directory"]  # /tree's folder oids: the same rule
    assert folders == [folder_entry(f, etags) for f in ("a", "a-b", "ab")]


# --- byte ranges ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        (None, 10, None),
        ("bytes=0-0", 10, (0, 0)),
        ("bytes=2-5", 10, (2, 5)),
        ("bytes=2-", 10, (2, 9)),
        ("bytes=2-100", 10, (2, 9)),
        ("bytes=-3", 10, (7, 9)),
        ("bytes=-30", 10, (0, 9)),
        ("bytes=5-2", 10, None),  # invalid: ignored
        ("bytes=0-1,4-5", 10, None),  # several ranges: we send the whole file
        ("items=0-1", 10, None),
    ],
)
def test_parse_byte_range(header: str | None, size: int, expected: tuple[int, int] | None) -> None:
    assert parse_byte_range(header, size) == expected


@pytest.mark.parametrize(
    ("header", "size"), [("bytes=10-", 10), ("bytes=10-20", 10), ("bytes=-0", 10), ("bytes=0-", 0)]
)
def test_parse_byte_range_unsatisfiable(header: str, size: int) -> None:
    with pytest.raises(RangeNotSatisfiable):
        parse_byte_range(header, size)


@given(size=st.integers(1, 10**12), a=st.integers(0, 10**12), b=st.integers(0, 10**12))
def test_parse_byte_range_stays_in_bounds(size: int, a: int, b: int) -> None:
    try:
        got = parse_byte_range(f"bytes={a}-{b}", size)
    except RangeNotSatisfiable:
        assert a >= size
        return
    if b < a:
        assert got is None
    else:
        assert got == (a, min(b, size - 1))


# --- the origin, in-process -------------------------------------------------------------------------------


def test_repo_info(state: DevHubState) -> None:
    r = asgi(state, "/api/models/org/tiny")
    assert r.status_code == 200
    info = r.json()
    assert info["id"] == "org/tiny"
    assert [s["rfilename"] for s in info["siblings"]] == sorted(FILES)
    assert "blobId" not in info["siblings"][0]
    commit = info["sha"]
    r = asgi(state, f"/api/models/org/tiny/revision/{commit}?blobs=true")
    assert r.status_code == 200 and r.json()["sha"] == commit
    siblings = {s["rfilename"]: s for s in r.json()["siblings"]}
    w = FILES["weights.bin"]
    assert siblings["weights.bin"] == {
        "rfilename": "weights.bin", "blobId": blob_sha1(pointer(w)), "size": len(w),
        "lfs": {"sha256": hashlib.sha256(w).hexdigest(), "size": len(w), "pointerSize": len(pointer(w))},
    }  # fmt: skip
    config = FILES["config.json"]
    assert siblings["config.json"] == {
        "rfilename": "config.json",
        "blobId": blob_sha1(config),
        "size": len(config),
    }
    assert asgi(state, "/api/datasets/org/data/revision/main").json()["sha"] == commit


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("/api/models/org/nope", "RepoNotFound"),
        ("/api/datasets/org/tiny", "RepoNotFound"),
        ("/api/models/org/tiny/revision/v1.0", "RevisionNotFound"),
        ("/api/models/org/tiny/revision/refs%2Fpr%2F1", "RevisionNotFound"),
        ("/api/models/org/tiny/tree/" + "0" * 40, "RevisionNotFound"),
        ("/api/models/org/tiny/tree/main/nope", "EntryNotFound"),
        ("/org/tiny/resolve/main/nope.txt", "EntryNotFound"),
        ("/org/tiny/resolve/refs%2Fpr%2F1/config.json", "RevisionNotFound"),
        ("/datasets/org/nope/resolve/main/config.json", "RepoNotFound"),
    ],
)
def test_errors_carry_hub_codes(state: DevHubState, url: str, code: str) -> None:
    r = asgi(state, url)
    assert r.status_code == 404
    assert r.headers["X-Error-Code"] == code
    assert r.headers["X-Error-Message"] == r.json()["error"]


def test_tree_pages_follow_link(state: DevHubState) -> None:
    url: str | None = "/api/models/org/tiny/tree/main?recursive=true&expand=false"
    seen: list[dict[str, Any]] = []
    pages = 0
    while url is not None:
        r = asgi(state, url)
        assert r.status_code == 200
        assert len(r.json()) <= 3
        seen += r.json()
        pages += 1
        link = r.headers.get("Link")
        m = re.fullmatch(
            r'<(http://hub\.test/api/models/org/tiny/tree/main\?[^>]*cursor=[^>]+)>; rel="next"', link or ""
        )
        assert (m is None) == (link is None)
        url = m.group(1) if m else None
    assert pages == 3  # 6 files + 2 folders, 3 per page
    assert [e["path"] for e in seen] == [
        e["path"] for e in RepoStore(state.store.root).snapshot("model", "org/tiny").tree(recursive=True)
    ]
    sub = asgi(state, "/api/models/org/tiny/tree/main/sub%2Fdeep").json()
    assert [e["path"] for e in sub] == ["sub/deep/empty.txt", "sub/deep/notes.md"]


def test_repo_listings_page_by_limit_and_link(state: DevHubState) -> None:
    commits = {r: RepoStore(state.store.root).snapshot("model", r).commit for r in ("org/gated", "org/tiny")}
    url: str | None = "/api/models?author=org&expand=sha&limit=1"
    seen: list[dict[str, Any]] = []
    while url is not None:
        r = asgi(state, url)
        assert r.status_code == 200 and len(r.json()) <= 1
        seen += r.json()
        m = re.fullmatch(r'<(http://hub\.test/api/models\?[^>]*cursor=[^>]+)>; rel="next"', r.headers.get("Link", ""))
        assert m is not None or "Link" not in r.headers
        url = m.group(1) if m else None
        if url is not None:
            assert "limit=1" in url and "author=org" in url and "expand=sha" in url  # the query is kept
    assert [(e["id"], e["sha"]) for e in seen] == list(commits.items())  # gated repos are listed too
    assert set(seen[0]) == {"_id", "id", "sha"}  # expand=sha: only what was asked for
    everything = asgi(state, "/api/models").json()  # no author: every model, 3 (page_size) a page
    assert [e["id"] for e in everything] == ["org/gated", "org/tiny", "solo"]
    assert "sha" not in everything[0] and everything[0]["modelId"] == "org/gated"  # the Hub's default fields
    assert [e["id"] for e in asgi(state, "/api/datasets?author=org").json()] == ["org/data"]
    assert asgi(state, "/api/models?author=nobody").json() == []
    for bad in ("limit=0", "limit=x", "cursor=_w%3D%3D"):  # the last: not UTF-8
        assert asgi(state, f"/api/models?{bad}").status_code == 400, bad


def test_list_models_with_real_client(hub: DevHub) -> None:
    from huggingface_hub import HfApi

    api = HfApi(endpoint=hub.endpoint, token=False)
    listed = {m.id: m.sha for m in api.list_models(author="org", expand=["sha"])}
    assert listed == {r: hub.state.store.snapshot("model", r).commit for r in ("org/gated", "org/tiny")}
    assert len(hub.log.entries("/api/models")) == 1  # page_size 2: one page, no Link
    assert [m.id for m in api.list_models()] == ["org/gated", "org/tiny", "solo"]
    assert len(hub.log.entries("/api/models")) == 3  # two pages, the second through the Link header


def test_repo_info_expand_holds_only_what_was_asked_with_real_client(hub: DevHub) -> None:
    """``repo_info(expand=[...])``: only ``_id``, ``id`` and the properties named (a node asks ``expand=sha`` of
    every program's branch lookup: a 100,000-file repo's siblings are 5 MB)."""
    from huggingface_hub import HfApi

    api = HfApi(endpoint=hub.endpoint, token=False)
    commit = hub.state.store.snapshot("dataset", "org/data").commit
    full = api.repo_info("org/data", repo_type="dataset", revision="main")
    assert full.sha == commit and full.siblings
    info = api.repo_info("org/data", repo_type="dataset", revision="main", expand=["sha"])
    assert info.sha == commit and info.siblings is None and info.last_modified is None
    answer = httpx.get(f"{hub.endpoint}/api/datasets/org/data/revision/main?expand=sha&expand=lastModified")
    assert set(answer.json()) == {"_id", "id", "sha", "lastModified"}


def test_tree_can_be_switched_off(state: DevHubState) -> None:
    state.settings = replace(state.settings, tree_404=True)
    assert asgi(state, "/api/models/org/tiny/tree/main").status_code == 404
    assert asgi(state, "/api/models/org/tiny").status_code == 200  # siblings still there


def test_resolve_regular_file(state: DevHubState) -> None:
    commit = asgi(state, "/api/models/org/tiny").json()["sha"]
    for method in ("HEAD", "GET"):
        r = asgi(state, "/org/tiny/resolve/main/sub/deep/notes.md", method)
        assert r.status_code == 307
        assert r.headers["Location"] == f"/api/resolve-cache/models/org/tiny/{commit}/sub/deep/notes.md"
        assert r.headers["ETag"] == f'"{etag("sub/deep/notes.md")}"'
        assert r.headers["X-Repo-Commit"] == commit
        assert not any(h.lower().startswith("x-xet") for h in r.headers)
    r = asgi(state, f"/api/resolve-cache/models/org/tiny/{commit}/sub/deep/notes.md")
    assert r.status_code == 200 and r.content == FILES["sub/deep/notes.md"]
    assert r.headers["ETag"] == f'"{etag("sub/deep/notes.md")}"'
    assert r.headers["Accept-Ranges"] == "bytes"
    r = asgi(state, f"/api/resolve-cache/models/org/tiny/{commit}/config.json", headers={"Range": "bytes=2-7"})
    assert r.status_code == 206
    assert r.content == FILES["config.json"][2:8]
    assert r.headers["Content-Range"] == f"bytes 2-7/{len(FILES['config.json'])}"
    r = asgi(state, f"/datasets/org/data/resolve/{commit}/config.json", "HEAD")
    assert r.headers["Location"] == f"/api/resolve-cache/datasets/org/data/{commit}/config.json"


def test_resolve_lfs_file_redirects_to_signed_cdn_url(state: DevHubState) -> None:
    sha = etag("sub/shard.bin")
    r = asgi(state, "/org/tiny/resolve/main/sub/shard.bin", "HEAD")
    assert r.status_code == 302
    location = r.headers["Location"]  # CloudFront style, as the Hub's cdn-lfs URLs
    pattern = rf"http://cdn\.test/lfs/{sha}\?Expires=(\d+)&Signature=([0-9a-f]{{64}})&Key-Pair-Id=\w+"
    m = re.fullmatch(pattern, location)
    assert m is not None
    assert m.group(2) == sign_lfs_url(state.secret, sha, int(m.group(1)))
    assert 3500 < int(m.group(1)) - time.time() <= 3601
    assert signed_url_expiry(location) == int(m.group(1))  # what the gateway reads to know how long to keep it
    assert r.headers["X-Linked-Etag"] == f'"{sha}"'
    assert r.headers["X-Linked-Size"] == str(len(FILES["sub/shard.bin"]))
    assert r.headers["X-Repo-Commit"] == asgi(state, "/api/models/org/tiny").json()["sha"]


def test_gated_repo_in_process(state: DevHubState) -> None:
    for url in (
        "/api/models/org/gated",
        "/org/gated/resolve/main/secret.bin",
        "/api/models/org/gated/tree/main",
    ):
        for headers in (None, {"Authorization": "Bearer wrong"}):
            r = asgi(state, url, headers=headers)
            assert (r.status_code, r.headers["X-Error-Code"]) == (401, "GatedRepo")
        assert asgi(state, url, headers={"Authorization": "Bearer tok-123"}).status_code in (200, 302)
    assert asgi(state, "/api/models/org/tiny").json()["gated"] is False
    info = asgi(state, "/api/models/org/gated", headers={"Authorization": "Bearer tok-123"}).json()
    assert info["gated"] == "auto"


PATHS_INFO = "/api/models/org/tiny/paths-info/main"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def test_paths_info_in_process(state: DevHubState) -> None:
    asked = ["sub/deep/notes.md", "nope.txt", "weights.bin", "sub", "sub/", "", "weights.bin"]
    r = asgi(state, PATHS_INFO, "POST", data={"paths": asked, "expand": False})  # what huggingface_hub sends
    assert r.status_code == 200
    wanted = [file_entry("sub/deep/notes.md"), file_entry("weights.bin"), folder_entry("sub")]  # asked order, once
    assert r.json() == wanted
    assert asgi(state, PATHS_INFO, "POST", json={"paths": asked, "expand": False}).json() == wanted
    requests_style = b"paths=sub%2Fdeep&expand=False"  # requests writes Python's bool
    assert asgi(state, PATHS_INFO, "POST", FORM, content=requests_style).json() == [folder_entry("sub/deep")]
    assert asgi(state, PATHS_INFO, "POST", json={"paths": "config.json"}).json() == [file_entry("config.json")]
    assert asgi(state, PATHS_INFO, "POST", data={"expand": False}).json() == []  # no paths: nothing
    commit = asgi(state, "/api/models/org/tiny").json()["sha"]
    url = f"/api/datasets/org/data/paths-info/{commit}"
    expanded = asgi(state, url, "POST", data={"paths": ["config.json", "sub"], "expand": True}).json()
    assert [e.pop("lastCommit")["id"] for e in expanded] == [commit, commit]
    assert expanded == [file_entry("config.json"), folder_entry("sub")]
    state.settings = replace(state.settings, xet=True)  # LFS entries get the same xetHash as in /tree
    tree = {e["path"]: e for e in asgi(state, "/api/models/org/tiny/tree/main/sub").json()}
    assert "xetHash" in tree["sub/shard.bin"]
    got = asgi(state, PATHS_INFO, "POST", data={"paths": ["sub/shard.bin", "sub/deep"]}).json()
    assert got == [tree["sub/shard.bin"], tree["sub/deep"]]


@pytest.mark.parametrize(
    ("url", "body", "status", "code"),
    [
        ("/api/models/org/nope/paths-info/main", {"data": {"paths": ["a"]}}, 404, "RepoNotFound"),
        ("/api/datasets/org/tiny/paths-info/main", {"data": {"paths": ["a"]}}, 404, "RepoNotFound"),
        ("/api/models/org/tiny/paths-info/v1.0", {"data": {"paths": ["a"]}}, 404, "RevisionNotFound"),
        ("/api/models/org/tiny/paths-info/refs%2Fpr%2F1", {"data": {"paths": ["a"]}}, 404, "RevisionNotFound"),
        ("/api/models/org/gated/paths-info/main", {"data": {"paths": ["secret.bin"]}}, 401, "GatedRepo"),
        (PATHS_INFO, {"data": {"paths": ["a"], "expand": "maybe"}}, 400, None),
        (PATHS_INFO, {"content": b"paths=%ff"}, 400, None),  # not UTF-8
        (PATHS_INFO, {"json": ["config.json"]}, 400, None),
        (PATHS_INFO, {"json": {"paths": [1]}}, 400, None),
        (PATHS_INFO, {"json": {"paths": ["a"], "expand": "true"}}, 400, None),
        (PATHS_INFO, {"content": b"{", "headers": {"Content-Type": "application/json"}}, 400, None),
        (PATHS_INFO, {"content": b"paths=a", "headers": {"Content-Type": "text/plain"}}, 415, None),
        (PATHS_INFO, {"data": {"paths": [str(i) for i in range(1000)], "expand": False}}, 413, None),  # 1,001 fields
        (PATHS_INFO, {"json": {"paths": [str(i) for i in range(1001)]}}, 413, None),
        (PATHS_INFO, {"content": b"paths=" + b"a" * 2**20}, 413, None),  # over 1 MiB
    ],
)
def test_paths_info_refusals(state: DevHubState, url: str, body: dict[str, Any], status: int, code: str | None) -> None:
    r = asgi(state, url, "POST", **body)
    assert r.status_code == status, r.text
    assert r.headers.get("X-Error-Code") == code
    assert r.json()["error"]


def test_paths_info_limits_and_methods(state: DevHubState) -> None:
    fields = {"paths": [str(i) for i in range(999)], "expand": False}  # 1,000 fields: the Hub's most
    assert asgi(state, PATHS_INFO, "POST", data=fields).json() == []
    gated = "/api/models/org/gated/paths-info/main"
    got = asgi(state, gated, "POST", {"Authorization": "Bearer tok-123"}, data={"paths": ["secret.bin"]})
    assert [e["path"] for e in got.json()] == ["secret.bin"]
    for method in ("GET", "HEAD", "PUT"):
        r = asgi(state, PATHS_INFO, method)
        assert (r.status_code, r.headers["Allow"]) == (405, "POST"), method
    r = asgi(state, "/api/models/org/tiny", "POST", data={"paths": ["a"]})
    assert (r.status_code, r.headers["Allow"]) == (405, "GET, HEAD")


# --- the real server and the real client ------------------------------------------------------------------


def _blobs(cache: Path, folder: str) -> set[str]:
    return {p.name for p in (cache / folder / "blobs").iterdir()}


def test_hf_hub_download(hub: DevHub, tmp_path: Path) -> None:
    from huggingface_hub import hf_hub_download

    for name in ("config.json", "weights.bin"):
        local = hf_hub_download("org/tiny", name, endpoint=hub.endpoint, cache_dir=tmp_path, token=False)
        assert Path(local).read_bytes() == FILES[name]
    assert _blobs(tmp_path, "models--org--tiny") == {etag("config.json"), etag("weights.bin")}
    cdn = hub.log.entries(server="cdn")
    assert [e.body_bytes for e in cdn] == [len(FILES["weights.bin"])]


@pytest.mark.parametrize(("repo_type", "repo_id"), [("model", "org/tiny"), ("dataset", "org/data")])
def test_snapshot_download(hub: DevHub, tmp_path: Path, repo_type: str, repo_id: str) -> None:
    from huggingface_hub import snapshot_download

    folder = Path(
        snapshot_download(repo_id, repo_type=repo_type, endpoint=hub.endpoint, cache_dir=tmp_path, token=False)
    )
    got = {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    assert got == FILES
    assert _blobs(tmp_path, f"{repo_type}s--{repo_id.replace('/', '--')}") == {etag(p) for p in FILES}
    assert len(hub.log.entries("/api/*/tree/*")) == 4  # 8 entries, 2 per page


def test_list_repo_tree_pages(hub: DevHub) -> None:
    from huggingface_hub import HfApi
    from huggingface_hub.hf_api import RepoFile

    api = HfApi(endpoint=hub.endpoint, token=False)
    files = [f for f in api.list_repo_tree("org/tiny", recursive=True) if isinstance(f, RepoFile)]
    assert {f.path: f.blob_id for f in files} == {
        p: blob_sha1(pointer(d)) if p in LFS_PATHS else blob_sha1(d) for p, d in FILES.items()
    }
    assert {f.path: f.lfs.sha256 for f in files if f.lfs} == {p: etag(p) for p in LFS_PATHS}
    assert len(hub.log.entries("/api/models/org/tiny/tree/main")) == 4


def test_gated_repo_with_real_client(hub: DevHub, tmp_path: Path) -> None:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import GatedRepoError

    with pytest.raises(GatedRepoError):
        hf_hub_download("org/gated", "secret.bin", endpoint=hub.endpoint, cache_dir=tmp_path, token=False)
    hub.log.clear()
    local = hf_hub_download("org/gated", "secret.bin", endpoint=hub.endpoint, cache_dir=tmp_path, token="tok-123")
    assert Path(local).read_bytes() == b"s" * 5000
    assert {e.token for e in hub.log.entries(server="origin")} == {"tok-123"}
    assert [e.authorization for e in hub.log.entries(server="cdn")] == [None]  # the token stays on the Hub


@pytest.mark.parametrize(("repo_type", "repo_id"), [("model", "org/tiny"), ("dataset", "org/data")])
def test_get_paths_info_with_real_client(hub: DevHub, repo_type: RepoType, repo_id: str) -> None:
    from huggingface_hub import HfApi
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError
    from huggingface_hub.hf_api import RepoFile, RepoFolder

    api = HfApi(endpoint=hub.endpoint, token=False)
    commit = hub.state.store.snapshot(repo_type, repo_id).commit
    asked = ["weights.bin", "nope.bin", "sub/deep", "config.json", "sub/nope"]
    got = api.get_paths_info(repo_id, asked, repo_type=repo_type, revision=commit)
    assert [i.path for i in got] == ["weights.bin", "sub/deep", "config.json"]
    weights, deep, config = got
    w = FILES["weights.bin"]
    assert isinstance(weights, RepoFile) and weights.lfs is not None
    assert (weights.size, weights.blob_id, weights.lfs.sha256) == (len(w), blob_sha1(pointer(w)), etag("weights.bin"))
    assert isinstance(config, RepoFile) and config.lfs is None
    assert (config.size, config.blob_id) == (len(FILES["config.json"]), blob_sha1(FILES["config.json"]))
    assert isinstance(deep, RepoFolder) and deep.tree_id == tree_oid("sub/deep")
    (shard,) = api.get_paths_info(repo_id, "sub/shard.bin", expand=True, repo_type=repo_type)
    assert shard.last_commit is not None and shard.last_commit.oid == commit
    calls = hub.log.entries(f"/api/{repo_type}s/{repo_id}/paths-info/*")
    assert [(e.method, e.status) for e in calls] == [("POST", 200)] * 2
    with pytest.raises(RevisionNotFoundError):
        api.get_paths_info(repo_id, ["config.json"], repo_type=repo_type, revision="v9")
    with pytest.raises(RepositoryNotFoundError):
        api.get_paths_info("org/nope", ["config.json"], repo_type=repo_type)


def test_hf_file_system_info_and_ls(hub: DevHub) -> None:
    from huggingface_hub import HfFileSystem

    fs = HfFileSystem(endpoint=hub.endpoint, token=False, skip_instance_cache=True)
    commit = hub.state.store.snapshot("model", "org/tiny").commit
    # Nothing listed yet: info with expand_info goes straight to paths-info.
    info = fs.info("org/tiny/sub/shard.bin", expand_info=True)
    assert (info["name"], info["type"], info["size"]) == ("org/tiny/sub/shard.bin", "file", len(FILES["sub/shard.bin"]))
    assert (info["lfs"].sha256, info["last_commit"].oid) == (etag("sub/shard.bin"), commit)
    folder = fs.info("datasets/org/data/sub/deep", expand_info=True)
    assert (folder["type"], folder["tree_id"]) == ("directory", tree_oid("sub/deep"))
    with pytest.raises(FileNotFoundError):
        fs.info("org/tiny/sub/nope.bin", expand_info=True)
    assert len(hub.log.entries("/api/*/paths-info/*", method="POST")) == 3
    # refresh=True: the parent is listed (tree), then the path asked again (paths-info).
    config = {"name": "org/tiny/config.json", "size": len(FILES["config.json"]), "type": "file"}
    assert fs.info("org/tiny/config.json", refresh=True) == config
    assert len(hub.log.entries("/api/*/paths-info/*", method="POST")) == 4
    assert fs.ls("org/tiny/sub", detail=False) == ["org/tiny/sub/deep", "org/tiny/sub/shard.bin"]
    assert fs.info("datasets/org/data/sub/deep")["type"] == "directory"
    assert fs.info("org/tiny/sub/deep/notes.md")["type"] == "file"
    assert fs.cat_file("org/tiny/sub/deep/notes.md") == FILES["sub/deep/notes.md"]


# --- faults -----------------------------------------------------------------------------------------------


def _lfs_url(hub: DevHub, path: str = "weights.bin") -> str:
    return httpx.head(f"{hub.endpoint}/org/tiny/resolve/main/{path}").headers["Location"]


def test_fault_429_with_retry_after(hub: DevHub) -> None:
    hub.faults.respond("/api/models/*", 429, retry_after=7, times=1)
    with httpx.Client(base_url=hub.endpoint) as client:
        first = client.get("/api/models/org/tiny?blobs=true")  # the glob sees the path, not the query
        assert (first.status_code, first.headers["Retry-After"]) == (429, "7")
        assert client.get("/api/models/org/tiny").status_code == 200
    assert [e.status for e in hub.log.entries("/api/models/*")] == [429, 200]


def test_fault_method_filter_and_json_rules(hub: DevHub) -> None:
    for rule in rules_from_json(json.dumps([{"path": "/org/*", "method": "GET", "action": "respond", "status": 503}])):
        hub.faults.add(rule)
    assert httpx.head(f"{hub.endpoint}/org/tiny/resolve/main/config.json").status_code == 307
    assert httpx.get(f"{hub.endpoint}/org/tiny/resolve/main/config.json").status_code == 503
    with pytest.raises(ConfigError):
        rules_from_json('[{"path": "/x", "action": "explode"}]')


def test_fault_reset_mid_body(hub: DevHub) -> None:
    url = _lfs_url(hub)
    hub.faults.reset("/lfs/*", 1000, times=1)
    received = bytearray()
    with pytest.raises(httpx.RemoteProtocolError), httpx.stream("GET", url) as r:
        assert r.headers["Content-Length"] == str(len(FILES["weights.bin"]))
        for chunk in r.iter_bytes():
            received += chunk
    assert bytes(received) == FILES["weights.bin"][:1000]
    assert hub.log.entries("/lfs/*")[-1].body_bytes == 1000
    assert httpx.get(url).content == FILES["weights.bin"]  # used up: the next request is whole


def test_fault_corrupt(hub: DevHub) -> None:
    url = _lfs_url(hub)
    hub.faults.corrupt("/lfs/*", offset=100_000, length=3, times=1)
    r = httpx.get(url)
    data = FILES["weights.bin"]
    assert r.status_code == 200 and len(r.content) == len(data)
    assert r.content[:100_000] == data[:100_000] and r.content[100_003:] == data[100_003:]
    assert all(r.content[i] == data[i] ^ 0xFF for i in range(100_000, 100_003))


def test_fault_delay(hub: DevHub) -> None:
    hub.faults.delay("/api/*", 0.3, times=1)
    start = time.monotonic()
    assert httpx.get(f"{hub.endpoint}/api/models/org/tiny").status_code == 200
    assert time.monotonic() - start >= 0.3


def test_cdn_signed_urls_expire(hub: DevHub) -> None:
    hub.settings = replace(hub.settings, url_lifetime=-5)
    r = httpx.get(_lfs_url(hub))
    assert r.status_code == 403 and "Request has expired" in r.text
    hub.settings = replace(hub.settings, url_lifetime=3600)
    url = _lfs_url(hub)
    signature = re.search(r"Signature=([0-9a-f]+)", url)
    assert signature is not None
    tampered = url.replace(signature.group(1), signature.group(1)[::-1])
    assert httpx.get(tampered).status_code == 403
    assert httpx.get(url.replace("Expires=", "Expires=1")).status_code == 403  # a later expiry, not signed
    assert httpx.get(url).status_code == 200


def test_cdn_ranges(hub: DevHub) -> None:
    url, data = _lfs_url(hub, "sub/shard.bin"), FILES["sub/shard.bin"]
    size = len(data)
    for header, (first, last) in [
        ("bytes=10-19", (10, 19)),
        ("bytes=-5", (size - 5, size - 1)),
        ("bytes=69990-", (69990, size - 1)),
    ]:
        r = httpx.get(url, headers={"Range": header})
        assert r.status_code == 206
        assert r.headers["Content-Range"] == f"bytes {first}-{last}/{size}"
        assert r.content == data[first : last + 1]
        assert hub.log.entries("/lfs/*")[-1].range == header
    r = httpx.get(url, headers={"Range": f"bytes={size}-"})
    assert (r.status_code, r.headers["Content-Range"]) == (416, f"bytes */{size}")
    r = httpx.head(url, headers={"Range": "bytes=0-99"})
    assert (r.status_code, r.headers["Content-Length"], r.content) == (206, "100", b"")
    assert hub.log.body_bytes("/lfs/*") == 10 + 5 + (size - 69990)


def test_cdn_app_alone_refuses_unknown_objects(root: Path) -> None:
    state = DevHubState(RepoStore(root))
    sha, expires = "0" * 64, int(time.time()) + 60

    async def go() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=cdn_app(state)), base_url="http://cdn") as c:
            signature = sign_lfs_url(state.secret, sha, expires)
            return await c.get(f"/lfs/{sha}?Expires={expires}&Signature={signature}")

    assert anyio.run(go).status_code == 404


# --- the CLI ----------------------------------------------------------------------------------------------

_CLI = """
import argparse, sys
from swarmhub.cli import cmd_devhub
parser = argparse.ArgumentParser()
cmd_devhub.register(parser.add_subparsers())
args = parser.parse_args(sys.argv[1:])
sys.exit(args.func(args))
"""


def test_cli_serve_until_interrupted(root: Path, tmp_path: Path) -> None:
    faults = tmp_path / "faults.json"
    faults.write_text(json.dumps([{"path": "/api/*", "times": 1, "action": "respond", "status": 503}]))
    proc = subprocess.Popen(
        [sys.executable, "-c", _CLI, "devhub", "serve", str(root), "--faults", str(faults)],
        stdout=subprocess.PIPE, text=True, preexec_fn=sigint_default,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        m = re.search(r"at (http://127\.0\.0\.1:\d+) ", line)
        assert m is not None, line
        assert httpx.get(f"{m.group(1)}/api/models/org/tiny").status_code == 503
        assert httpx.get(f"{m.group(1)}/api/models/org/tiny").json()["id"] == "org/tiny"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
        proc.wait()
