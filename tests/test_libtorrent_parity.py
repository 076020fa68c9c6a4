"""Our torrents against libtorrent 2.1.1, the reference implementation of BEP 52 hybrids.

For generated layouts (piece boundaries, empty and one-byte files, files of exactly one or two pieces, nested
and unicode names, the ``vae`` ordering case) and for random ones (Hypothesis), in every format, our v1 and
v2 info-hashes equal the ones libtorrent computes for the same files, both from the hashing code directly
and from the real release pipeline (``info["hf"]`` removed). Where libtorrent's own hybrid creator breaks
(full-path order, see ``swarmhub.bt.layout``), libtorrent instead checks our torrent against the files.

Then end to end through the CLI: recheck as a seed, determinism, include/exclude as huggingface_hub's
``filter_repo_objects``, cache snapshots, and corrupted blobs.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import libtorrent as lt
import pytest
from huggingface_hub.utils import filter_repo_objects
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support.layouts import (
    COMMIT,
    NAME,
    REPO_ID,
    content,
    create_json,
    edge_layouts,
    git_blob_sha1,
    info_hashes,
    libtorrent_check,
    libtorrent_info_hashes,
    libtorrent_refuses,
    libtorrent_reorders,
    libtorrent_torrent,
    run_cli,
    strip_hf,
    torrent_by_hashing,
    torrent_by_release,
    write_layout,
)
from swarmhub.bt.bencode import count_tokens, decode
from swarmhub.bt.layout import FORMATS, Format, plan_torrent
from swarmhub.bt.metainfo import info_cost, parse_torrent
from swarmhub.cli.main import main as cli_main
from swarmhub.errors import SwarmhubError

PIECE_SIZES = (16 * 1024, 32 * 1024, 64 * 1024)


def _assert_matches_libtorrent(
    parent: Path,
    files: dict[str, bytes],
    piece: int,
    fmt: Format,
    *,
    chunk_pieces: int = 2,
    order_seed: int | None = None,
) -> None:
    """Both of our ways to build the torrent of ``parent/NAME`` agree with libtorrent (or pass its check)."""
    folder = parent / NAME
    by_hashing = info_hashes(torrent_by_hashing(files, piece, fmt, chunk_pieces=chunk_pieces, order_seed=order_seed))
    released = torrent_by_release(folder, piece, fmt)
    assert info_hashes(strip_hf(released)) == by_hashing
    # libtorrent reads our torrents (hf dict included) and hashes their info dict as we do
    assert libtorrent_info_hashes(released) == info_hashes(released)

    reference = libtorrent_torrent(parent, [(p, len(d)) for p, d in files.items()], piece, fmt)
    if fmt == "hybrid" and libtorrent_reorders(list(files)):
        # libtorrent's hybrid creator lists v1 files by full path, the v2 tree per component, and then refuses
        # what it wrote (unless only empty files moved: then it loads, with other info-hashes than ours). Pin
        # that (we want to know when it changes), and let libtorrent judge our torrent.
        if libtorrent_refuses({p: len(d) for p, d in files.items()}):
            with pytest.raises(RuntimeError, match="v1 and v2 file metadata does not match"):
                lt.torrent_info(reference)
        else:
            assert libtorrent_info_hashes(reference) != by_hashing
        check = libtorrent_check(released, parent)
        assert check.complete, check
        assert check.pieces == parse_torrent(released).num_pieces
    else:
        assert libtorrent_info_hashes(reference) == by_hashing


EDGE_CASES = [
    pytest.param(name, piece, fmt, id=f"{name}-{piece // 1024}k-{fmt}")
    for piece in PIECE_SIZES
    for name in edge_layouts(piece)
    for fmt in FORMATS
]


@pytest.mark.parametrize(("layout_name", "piece", "fmt"), EDGE_CASES)
def test_edge_layouts_match_libtorrent(tmp_path: Path, layout_name: str, piece: int, fmt: Format) -> None:
    layout = edge_layouts(piece)[layout_name]
    assert sum(layout.values()) < 1_000_000
    files = write_layout(tmp_path / NAME, layout)
    _assert_matches_libtorrent(tmp_path, files, piece, fmt)


def test_single_file_hybrid_has_no_tail_pad_like_libtorrent(tmp_path: Path) -> None:
    """libtorrent pads the last file too, except when the torrent has only one file (file_storage.cpp:
    "we don't pad single-file torrents"); an empty second file is enough to bring the tail pad back."""
    for layout in ({"model.safetensors": 3 * 16384 + 1}, {"model.safetensors": 3 * 16384 + 1, "z": 0}):
        parent = tmp_path / str(len(layout))
        files = write_layout(parent / NAME, layout)
        reference = decode(libtorrent_torrent(parent, list(layout.items()), 16384, "hybrid"))[b"info"]
        ours = decode(torrent_by_hashing(files, 16384, "hybrid"))[b"info"]
        assert ours[b"files"] == reference[b"files"], layout


def test_vae_case_is_reordered_by_libtorrent() -> None:
    """The vae layout is where libtorrent's order and ours differ (guards the branch above)."""
    assert libtorrent_reorders(list(edge_layouts(16384)["vae_ordering"]))
    assert not libtorrent_reorders(list(edge_layouts(16384)["nested_folders"]))


@pytest.mark.parametrize("fmt", FORMATS)
def test_release_of_only_empty_files_is_refused_or_loads_in_libtorrent(tmp_path: Path, fmt: Format) -> None:
    """A torrent no client can load must not be written: either a clear error, or a torrent libtorrent loads.

    libtorrent refuses torrents whose total length is 0 ("invalid length of torrent").
    """
    write_layout(tmp_path / NAME, {"README.md": 0, "sub/empty.json": 0})
    try:
        data = torrent_by_release(tmp_path / NAME, 16384, fmt)
    except SwarmhubError:
        return
    lt.torrent_info(data)


@pytest.mark.parametrize("fmt", FORMATS)
def test_the_size_create_checks_is_what_it_writes_and_libtorrent_counts(tmp_path: Path, fmt: Format) -> None:
    """``info_cost`` (made before hashing) is the written info's size; its token count is libtorrent's: the
    torrent loads with ``max_decode_tokens`` at the count and not one below."""
    layout = {f"data/part-{i // 7}/rows-{i:03d}.jsonl": 100 + 37 * i for i in range(40)}
    write_layout(tmp_path / NAME, layout)
    data = torrent_by_release(tmp_path / NAME, 16384, fmt)
    torrent = parse_torrent(data)
    assert torrent.repo is not None
    plan = plan_torrent([(f.path, f.size) for f in torrent.files], torrent.piece_size, fmt)
    cost = info_cost(plan, torrent.name, torrent.repo, [f.etag or "" for f in torrent.files])
    meta = decode(data)
    assert isinstance(meta, dict)
    assert cost == (len(torrent.info_bytes), count_tokens(meta[b"info"]))
    tokens = count_tokens(meta)
    lt.torrent_info(data, {"max_decode_tokens": tokens})  # type: ignore[call-overload]  # a dict works
    with pytest.raises(RuntimeError, match="item count limit"):
        lt.torrent_info(data, {"max_decode_tokens": tokens - 1})  # type: ignore[call-overload]


def test_create_of_one_torrent_refuses_a_release_too_big_for_one_before_hashing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past what libtorrent takes from peers, a clear error naming the way out (the release's parts, made by
    ``swarmhub create``: tests/test_release_parts.py), before any byte is read."""
    from swarmhub.create import release as release_module

    write_layout(tmp_path / NAME, {f"data/f{i}.bin": 1000 for i in range(50)})
    monkeypatch.setattr(release_module, "MAX_INFO_TOKENS", 500)  # 50 files: ~2,000 tokens as a hybrid
    monkeypatch.setattr(release_module, "PART_TOKENS", 1500)
    monkeypatch.setattr(release_module, "hash_release", None)  # hashing would fail: TypeError
    with pytest.raises(SwarmhubError) as refused:
        torrent_by_release(tmp_path / NAME, 16384, "hybrid")
    assert "needs 2 hybrid torrents" in str(refused.value), refused.value
    assert "--torrent PART0" in (refused.value.hint or "")


# ------------------------------------------------------------------------------------------ Hypothesis

_COMPONENTS = ["a", "b", "vae", "vae-ft.bin", "vae.json", "x.bin", "ü", "日本", "a b", "a.b", "A", "-"]
_EDGE_SIZES = [0, 1, 16383, 16384, 16385, 32767, 32768, 32769, 65536]


def _no_file_folder_clash(layout: dict[str, int]) -> bool:
    folders = {path.rsplit("/", 1)[0] for path in layout if "/" in path}
    folders |= {f.rsplit("/", i)[0] for f in folders for i in range(1, f.count("/") + 1)}
    return not folders & set(layout)


_layouts = (
    st.dictionaries(
        st.lists(st.sampled_from(_COMPONENTS), min_size=1, max_size=3).map("/".join),
        st.one_of(st.integers(0, 100_000), st.sampled_from(_EDGE_SIZES)),
        # one-file layouts are the single_file edge case (libtorrent never pads a torrent's only file);
        # all-empty layouts have their own test
        min_size=2,
        max_size=6,
    )
    .filter(_no_file_folder_clash)
    .filter(lambda layout: sum(layout.values()) > 0)
)


@settings(max_examples=25, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    layout=_layouts,
    piece=st.sampled_from([16 * 1024, 32 * 1024]),
    fmt=st.sampled_from(FORMATS),
    chunk_pieces=st.integers(1, 4),
    order_seed=st.integers(0, 2**16),
    seed=st.integers(0, 2**16),
)
def test_random_layouts_match_libtorrent(
    layout: dict[str, int], piece: int, fmt: Format, chunk_pieces: int, order_seed: int, seed: int
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        parent = Path(tmp)
        files = write_layout(parent / NAME, layout, seed)
        _assert_matches_libtorrent(parent, files, piece, fmt, chunk_pieces=chunk_pieces, order_seed=order_seed)


def test_clash_filter() -> None:
    assert not _no_file_folder_clash({"a": 1, "a/b": 2})
    assert not _no_file_folder_clash({"a/b": 1, "a/b/c/d": 2})
    assert _no_file_folder_clash({"a/b": 1, "a.b": 2, "vae/x.bin": 3, "vae.json": 4})


# ------------------------------------------------------------------------------------- CLI, end to end

VAE = edge_layouts(16384)["vae_ordering"]
# about the run (or the release the torrent is a part of), not the torrent
RUN_KEYS = {"path", "seconds", "torrent_size", "origin_bytes", "part_paths", "release_files", "release_size"}


@pytest.mark.parametrize("fmt", FORMATS)
def test_cli_torrent_of_vae_case_passes_libtorrent_recheck(tmp_path: Path, fmt: Format) -> None:
    folder = tmp_path / NAME
    write_layout(folder, VAE)
    out = tmp_path / "out" / "t.torrent"
    summary = create_json(folder, out, "--revision", COMMIT, "--piece-size", "16k", "--format", fmt)
    data = out.read_bytes()
    assert summary["format"] == fmt and summary["name"] == NAME and summary["commit"] == COMMIT
    assert summary["path"] == str(out)
    assert libtorrent_info_hashes(data) == (summary["info_hash_v1"], summary["info_hash_v2"])

    check = libtorrent_check(data, tmp_path)
    assert check.complete, check
    assert check.valid == (True,) * summary["num_pieces"]

    # Negative control: the check is real. One flipped byte fails exactly the piece that holds it.
    plan = plan_torrent(VAE.items(), 16384, fmt)
    victim = next(f for f in plan.files if f.path == "vae.json")
    raw = bytearray((folder / victim.path).read_bytes())
    raw[0] ^= 0xFF
    (folder / victim.path).write_bytes(raw)
    check = libtorrent_check(data, tmp_path)
    assert not check.complete
    assert [i for i, ok in enumerate(check.valid) if not ok] == [victim.offset // 16384]


def test_cli_json_matches_inspect(tmp_path: Path) -> None:
    folder = tmp_path / NAME
    write_layout(folder, VAE)
    out = tmp_path / "t.torrent"
    created = create_json(folder, out, "--revision", COMMIT, "--piece-size", "16k")
    proc = run_cli("inspect", out, "--json")
    assert proc.returncode == 0, proc.stderr
    inspected = json.loads(proc.stdout)
    assert {k: v for k, v in created.items() if k not in RUN_KEYS} == inspected
    assert [f["path"] for f in created["files"]] == [
        "vae/x.bin",
        "vae/y.safetensors",
        "vae-ft.bin",
        "vae.json",
    ]
    assert created["total_size"] == sum(VAE.values())
    for f in created["files"]:  # no .gitattributes, all < 10 MiB: git blob ids
        assert f["etag"] == git_blob_sha1(content(f["path"], VAE[f["path"]]))


def test_cli_is_deterministic(tmp_path: Path) -> None:
    """Same files, same torrent: twice from one folder, and from a copy written in another order and time."""
    first = tmp_path / "a" / NAME
    write_layout(first, VAE)
    second = tmp_path / "b" / NAME
    for i, path in enumerate(reversed(list(VAE))):
        (second / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(first / path, second / path)
        os.utime(second / path, (1_000_000 + i, 1_000_000 + i))
    args = (
        "--revision",
        COMMIT,
        "--piece-size",
        "32k",
        "--webseed",
        "http://ws.example/",
        "--tracker",
        "http://tr.example/announce",
    )
    outputs = [tmp_path / "1.torrent", tmp_path / "2.torrent", tmp_path / "3.torrent"]
    summaries = [create_json(folder, out, *args) for folder, out in zip((first, first, second), outputs, strict=True)]
    blobs = [out.read_bytes() for out in outputs]
    assert blobs[0] == blobs[1] == blobs[2]
    assert len({s["magnet"] for s in summaries}) == 1
    assert b"creation date" not in blobs[0]


# ---------------------------------------------------------------------------------------- include/exclude

_FILTER_TREE = {
    ".gitattributes": 60,
    "README.md": 40,
    "Upper.JSON": 3,
    "config.json": 20,
    "vae/x.bin": 1000,
    "vae/sub/deep.json": 7,
    "vae-ft.bin": 2000,
    "vae.json": 30,
    "sub/dir/model.bin": 500,
    "[literal].txt": 4,
}

FILTER_CASES = [
    (["*.json"], None),
    (["*.JSON"], None),  # case-sensitive
    (["vae/*"], None),  # "*" crosses "/"
    (["vae/"], None),  # a folder: everything under it
    (["vae\\"], None),  # backslashes are "/"
    (None, ["*.bin"]),
    (["*.bin"], ["vae/*"]),
    (["*/x.bin"], None),
    (["[rv]*"], None),
    (["README.md", "vae.json"], None),  # repeated --include
    (["vae*"], ["vae.json", "*/sub/*"]),  # repeated --exclude
    (None, [".*"]),
    (["*"], ["*/*"]),
    (["?ae.json"], None),
    (["[[]literal].txt"], None),
    (["*.gguf"], None),  # selects nothing
    (["*.json"], ["*"]),  # selects nothing
]


@pytest.mark.parametrize(("include", "exclude"), FILTER_CASES, ids=lambda v: repr(v) if v else "-")
def test_include_exclude_select_what_huggingface_hub_selects(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], include: list[str] | None, exclude: list[str] | None
) -> None:
    folder = tmp_path / "repo"
    write_layout(folder, _FILTER_TREE)
    expected = list(filter_repo_objects(list(_FILTER_TREE), allow_patterns=include, ignore_patterns=exclude))
    argv = [
        "create",
        REPO_ID,
        "--from-dir",
        str(folder),
        "--revision",
        COMMIT,
        "--piece-size",
        "16k",
        "--json",
        "-o",
        str(tmp_path / "out" / "t.torrent"),
    ]
    argv += [arg for pattern in include or [] for arg in ("--include", pattern)]
    argv += [arg for pattern in exclude or [] for arg in ("--exclude", pattern)]
    code = cli_main(argv)
    captured = capsys.readouterr()
    if not expected:
        assert code == 2
        assert "match" in captured.err and len(captured.err.strip().splitlines()) == 1
        assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
        return
    assert code == 0, captured.err
    selected = [f["path"] for f in json.loads(captured.out)["files"]]
    assert sorted(selected) == sorted(expected)


# ------------------------------------------------------------------------------------- HF cache snapshot

_GITATTRIBUTES = b"*.bin filter=lfs diff=lfs merge=lfs -text\n*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
_SNAPSHOT_LAYOUT = {
    "config.json": 200,
    "vae/x.bin": 20_000,
    "vae-ft.bin": 40_000,
    "vae.json": 300,
    "nested/deep/w.safetensors": 50_000,
}


def _release_files() -> dict[str, bytes]:
    files = {p: content(p, size) for p, size in _SNAPSHOT_LAYOUT.items()}
    files[".gitattributes"] = _GITATTRIBUTES
    files["copy-of-config.json"] = files["config.json"]  # one blob, two paths, as the Hub cache stores it
    return files


def _etag(path: str, data: bytes) -> str:
    lfs = path.endswith((".bin", ".safetensors"))
    return hashlib.sha256(data).hexdigest() if lfs else git_blob_sha1(data)


def _make_snapshot(hub: Path, files: dict[str, bytes]) -> Path:
    """huggingface_hub's cache layout: blobs named by etag, snapshot paths as relative symlinks to them."""
    repo = hub / "models--org--name"
    snapshot = repo / "snapshots" / COMMIT
    (repo / "blobs").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    for path, data in files.items():
        blob = repo / "blobs" / _etag(path, data)
        blob.write_bytes(data)
        link = snapshot / path
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    return snapshot


def _torrent_fields(summary: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in summary.items() if k not in RUN_KEYS}


def test_cache_snapshot_equals_plain_folder_with_revision(tmp_path: Path) -> None:
    files = _release_files()
    snapshot = _make_snapshot(tmp_path / "hub", files)
    plain = tmp_path / "plain"
    for path, data in files.items():
        (plain / path).parent.mkdir(parents=True, exist_ok=True)
        (plain / path).write_bytes(data)

    from_cache = create_json(snapshot, tmp_path / "cache.torrent", "--piece-size", "16k")
    from_plain = create_json(plain, tmp_path / "plain.torrent", "--revision", COMMIT, "--piece-size", "16k")
    assert from_cache["commit"] == COMMIT and from_cache["name"] == NAME
    assert from_cache["info_hash_v1"] == from_plain["info_hash_v1"]
    assert from_cache["info_hash_v2"] == from_plain["info_hash_v2"]
    assert _torrent_fields(from_cache) == _torrent_fields(from_plain)
    assert (tmp_path / "cache.torrent").read_bytes() == (tmp_path / "plain.torrent").read_bytes()
    assert {f["path"]: f["etag"] for f in from_cache["files"]} == {p: _etag(p, d) for p, d in files.items()}


@pytest.mark.parametrize("victim", ["vae/x.bin", "vae.json"], ids=["lfs-blob", "regular-blob"])
def test_corrupted_blob_in_snapshot_fails_with_one_line(tmp_path: Path, victim: str) -> None:
    files = _release_files()
    snapshot = _make_snapshot(tmp_path / "hub", files)
    blob = (snapshot / victim).resolve()
    raw = bytearray(blob.read_bytes())
    raw[len(raw) // 2] ^= 0x01  # same size, wrong bytes
    blob.write_bytes(raw)

    out_dir = tmp_path / "out"
    out_dir.mkdir()
    proc = run_cli(
        "create",
        REPO_ID,
        "--from-dir",
        snapshot,
        "--piece-size",
        "16k",
        "-o",
        out_dir / "t.torrent",
        "--json",
    )
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("swarmhub: error:") and victim in lines[0], lines[0]
    assert "internal error" not in lines[0]
    assert proc.stdout == ""
    assert list(out_dir.iterdir()) == []  # no torrent, no temporary file


@pytest.mark.parametrize(
    "layout",
    [
        {"a b": 0, "a/a": 180, "A": 1},  # libtorrent renames "A" (a folder "a" exists) to "A.1"
        {"b": 1, "a b": 0, "a/a": 0},  # full-path and per-component orders differ only in empty files
    ],
)
def test_layouts_hypothesis_found(tmp_path: Path, layout: dict[str, int]) -> None:
    files = write_layout(tmp_path / NAME, layout, seed=110)
    _assert_matches_libtorrent(tmp_path, files, 32768, "hybrid", chunk_pieces=1, order_seed=489)
