"""Issue 16: a release spanning several torrents (its parts), made, checked, pulled and seeded as one release.

``bt.metainfo`` says what a part is (``hf.part``/``parts``, part 0 listing the others' keys); these tests make
parts with the real ``create`` (``--max-part-files`` cuts a small release as the metadata limits cut a big
one), check that libtorrent loads each part and finds its files, that ``check_parts`` accepts exactly the
parts of one release, that a hostile ``hf`` part entry is refused in one line, and then the user's path
through the CLI on a local origin: create streamed, an origin-only pull, ``seed`` of the parts, a pull from
that seeder alone by the torrent and by part 0's magnet, every file right.
"""

from __future__ import annotations

import dataclasses
import json
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.cli import run_cli
from support.layouts import COMMIT, NAME, libtorrent_check, write_layout
from support.swarm import SeededDataset, pull, seeded_dataset, seeding, snapshot_files
from swarmhub.bt.bencode import decode, encode
from swarmhub.bt.layout import FORMATS, Format, plan_torrent
from swarmhub.bt.metainfo import Part, Torrent, check_parts, info_cost, parse_torrent
from swarmhub.create.release import CreateRequest, create_release_torrent, create_release_torrents, part_path
from swarmhub.errors import MetainfoError, SwarmhubError
from swarmhub.node.daemon import Node
from swarmhub.registry.server import RegistryServer
from swarmhub.settings import Settings

REPO = "org/rows"
FILES = 30


def _layout() -> dict[str, int]:
    return {f"data/part-{i // 10}/rows-{i:03d}.jsonl": 700 + 53 * i for i in range(FILES)}


def _made(root: Path, fmt: Format = "hybrid", most: int = 10) -> list[bytes]:
    """The torrents ``create`` makes of the layout (written under ``root``), part 0 first."""
    import asyncio

    if not (root / NAME).exists():
        write_layout(root / NAME, _layout())
    request = CreateRequest("model", "org/name", COMMIT, format=fmt, piece_size=16384, from_dir=root / NAME,
                            max_part_files=most)  # fmt: skip
    return [c.data for c in asyncio.run(create_release_torrents(request, None))]


def _parts(root: Path, fmt: Format = "hybrid", most: int = 10) -> list[Torrent]:
    return [parse_torrent(data) for data in _made(root, fmt, most)]


def _with_hf(torrent: Torrent, **changes: Any) -> Torrent:
    """``torrent`` with keys of its ``info.hf`` changed (None: removed), parsed again."""
    info = decode(torrent.info_bytes)
    assert isinstance(info, dict)
    hf = info[b"hf"]
    for key, value in changes.items():
        if value is None:
            hf.pop(key.encode(), None)
        else:
            hf[key.encode()] = value
    return parse_torrent(encode({b"info": info}))


# ------------------------------------------------------------------------------------- made by create


@pytest.mark.parametrize("fmt", FORMATS)
def test_create_cuts_a_release_into_parts_that_libtorrent_loads_and_checks(tmp_path: Path, fmt: Format) -> None:
    made = _made(tmp_path, fmt)
    parts = [parse_torrent(data) for data in made]
    assert [(t.part.index, t.part.count) for t in parts if t.part] == [(0, 3), (1, 3), (2, 3)]
    assert parts[0].part is not None and parts[0].part.others == (parts[1].key, parts[2].key)
    assert all(t.part and not t.part.others for t in parts[1:])
    assert check_parts(list(reversed(parts))) == parts  # any order in, part 0's order out
    assert {t.name for t in parts} == {parts[0].name} and {t.piece_size for t in parts} == {16384}
    paths = [f.path for t in parts for f in t.files]
    assert paths == sorted(_layout())  # runs of the release's files, in torrent order, each once
    for t, data in zip(parts, made, strict=True):
        assert len(t.files) == 10
        checked = libtorrent_check(data, tmp_path)  # libtorrent loads the part and finds its files right
        assert all(checked.valid) and (checked.info_hash_v1, checked.info_hash_v2) == (t.info_hash_v1, t.info_hash_v2)


def test_a_release_that_fits_is_one_torrent_without_part_keys(tmp_path: Path) -> None:
    (single,) = _parts(tmp_path, most=FILES)
    info = decode(single.info_bytes)
    assert isinstance(info, dict) and single.part is None
    assert not {b"part", b"parts", b"others"} & set(info[b"hf"])
    assert check_parts([single]) == [single]


def test_create_of_one_torrent_names_the_parts_a_release_needs(tmp_path: Path) -> None:
    import asyncio

    write_layout(tmp_path / NAME, _layout())
    request = CreateRequest("model", "org/name", COMMIT, from_dir=tmp_path / NAME, max_part_files=10)
    with pytest.raises(SwarmhubError, match="needs 3 hybrid torrents") as refused:
        asyncio.run(create_release_torrent(request, None))
    assert "--torrent PART0" in (refused.value.hint or "")


def test_the_size_of_part_zero_is_known_before_hashing(tmp_path: Path) -> None:
    """``info_cost`` with a ``Part`` is what ``create`` then writes: the cut is decided before a byte is read."""
    first = _parts(tmp_path)[0]
    assert first.repo is not None and first.part is not None
    plan = plan_torrent([(f.path, f.size) for f in first.files], first.piece_size, first.format)
    cost = info_cost(plan, first.name, first.repo, [f.etag or "" for f in first.files], first.part)
    assert cost[0] == len(first.info_bytes)


# --------------------------------------------------------------------------------------- refused


def test_check_parts_takes_exactly_the_parts_of_one_release(tmp_path: Path) -> None:
    parts = _parts(tmp_path / "a")
    others = _parts(tmp_path / "b", most=15)
    with pytest.raises(MetainfoError, match="1 of the release's 3 parts missing"):
        check_parts(parts[:2])
    with pytest.raises(MetainfoError, match=r"part 0 .* is missing"):
        check_parts(parts[1:])
    with pytest.raises(MetainfoError, match="not a part of this release"):
        check_parts([*parts, others[1]])
    with pytest.raises(MetainfoError, match="release of one torrent given with others"):
        check_parts([*parts, _parts(tmp_path / "c", most=FILES)[0]])


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"parts": None}, "hf.parts is not an integer"),
        ({"parts": 1}, "hf.parts is not an integer between 2"),
        ({"part": 3}, "hf.part is not an integer between 0 and 2"),
        ({"others": None}, "hf.others does not list the 2 other parts"),
        ({"others": [b"ab" * 32]}, "hf.others does not list the 2 other parts"),
        ({"others": [b"zz" * 32, b"ab" * 32]}, "not a 64-hex info-hash"),
        ({"others": [b"ab" * 32, b"ab" * 32]}, "lists a part twice"),
        ({"part": None, "parts": None}, "hf.others without hf.part"),
    ],
)
def test_a_hostile_part_entry_is_refused_in_one_line(tmp_path: Path, changes: dict[str, Any], message: str) -> None:
    first = _parts(tmp_path)[0]
    with pytest.raises(MetainfoError, match=message) as refused:
        _with_hf(first, **changes)
    assert "\n" not in str(refused.value)


def test_only_part_zero_lists_the_others(tmp_path: Path) -> None:
    second = _parts(tmp_path)[1]
    with pytest.raises(MetainfoError, match="only part 0 lists the others"):
        _with_hf(second, others=[b"ab" * 32, b"cd" * 32])


def test_parts_disagreeing_on_the_release_are_refused(tmp_path: Path) -> None:
    parts = _parts(tmp_path)
    moved = _with_hf(parts[2], part=1)
    first = _with_hf(parts[0], others=[parts[1].key.encode(), moved.key.encode()])
    with pytest.raises(MetainfoError, match="is not part 2 of"):
        check_parts([first, parts[1], moved])
    assert isinstance(Part(0, 2, ("a" * 64,)), Part)


# ------------------------------------------------------------------------------------ through the CLI


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeededDataset]:
    files = {path: (f"{path}\n" * (size // len(path))).encode() for path, size in _layout().items()}
    with seeded_dataset(
        tmp_path_factory.mktemp("parts"), REPO, files, "--max-part-files", "12", name="rows.torrent"
    ) as release:
        yield release


def _snapshot(cache: Path, commit: object) -> Path:
    return cache / f"datasets--{REPO.replace('/', '--')}" / "snapshots" / str(commit)


def test_create_writes_the_parts_beside_part_zero(release: SeededDataset) -> None:
    created = release.created
    assert created["parts"] == 3 and created["part"] == 0 and len(created["other_parts"]) == 2
    assert created["part_paths"] == [str(part_path(release.torrent, i)) for i in range(3)]
    assert created["release_files"] == FILES and len(created["files"]) == 10
    assert Path(created["part_paths"][2]).name == "rows.part-2.torrent"
    shown = run_cli("inspect", created["part_paths"][0])
    assert shown.returncode == 0 and "part       0 of 3 torrents" in shown.stdout


def test_the_origin_only_pull_of_the_parts_lands_the_whole_release(release: SeededDataset) -> None:
    assert snapshot_files(_snapshot(release.seeder_cache, release.created["commit"])) == release.files


def test_a_pull_of_the_parts_from_one_seeder_by_torrent_and_by_magnet(release: SeededDataset, tmp_path: Path) -> None:
    torrents = [a for p in release.created["part_paths"] for a in ("--torrent", p)]
    with seeding(release.seeder_cache, *torrents) as seeder:
        peer = f"127.0.0.1:{seeder.port}"
        by_torrent = pull(
            REPO, "--repo-type", "dataset", "--torrent", release.torrent, "--no-origin", "--peer", peer,
            "--cache-dir", tmp_path / "a",
        )  # fmt: skip
        by_magnet = pull(
            REPO, "--repo-type", "dataset", "--magnet", release.created["magnet"], "--no-origin", "--peer", peer,
            "--cache-dir", tmp_path / "b",
        )  # fmt: skip
    for result in (by_torrent, by_magnet):
        assert result["parts"] == 3 and result["files"] == FILES and result["origin_bytes"] == 0
        assert result["peer_bytes"] >= sum(map(len, release.files.values()))
        assert snapshot_files(Path(result["snapshot_path"])) == release.files


def test_a_pull_from_a_part_that_is_not_the_first_or_without_its_others_says_what_to_do(
    release: SeededDataset, tmp_path: Path
) -> None:
    second = release.created["part_paths"][1]
    refused = run_cli("pull", REPO, "--repo-type", "dataset", "--torrent", second, "--no-origin")
    assert refused.returncode != 0 and "part 1 of the 3" in refused.stderr and "part 0" in refused.stderr
    alone = tmp_path / "rows.torrent"
    alone.write_bytes(release.torrent.read_bytes())
    missing = run_cli("pull", REPO, "--repo-type", "dataset", "--torrent", alone, "--no-origin")
    assert missing.returncode != 0 and "part 1 is not beside" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) <= 2  # the error and its hint


@pytest.mark.parametrize("fmt", ["hybrid", "v1"])
def test_a_release_of_100000_files_is_cut_under_what_every_client_takes(fmt: Format) -> None:
    """At the real limits (no hashing: the cut is made from sizes and names alone): libtorrent's and
    qBittorrent's 2,500,000 tokens / 30 MiB for a hybrid, aria2's 8 MiB for a classic v1 torrent."""
    from swarmhub.bt.metainfo import ARIA2_MAX_INFO_BYTES, MAX_INFO_BYTES, MAX_INFO_TOKENS
    from swarmhub.create.release import _Release
    from swarmhub.create.sources import SourceFile
    from swarmhub.hub.repo import RepoRef

    files = {
        p: SourceFile(p, 550, False, "0" * 40)
        for p in (f"data/part-{i // 500:03d}/rows-{i:06d}.jsonl" for i in range(100_000))
    }
    request = CreateRequest("dataset", REPO, COMMIT, format=fmt)
    release = _Release(request, RepoRef("dataset", REPO, COMMIT), files, None, 0, 0, None)  # type: ignore[arg-type]
    plans = release.cut(fmt)
    assert 2 <= len(plans) <= 6 and sum(len(p.files) for p in plans) == 100_000
    for i, plan in enumerate(plans):
        part = Part(i, len(plans), ("0" * (40 if fmt == "v1" else 64),) * (len(plans) - 1) if i == 0 else ())
        size, tokens = info_cost(
            plan, "org--rows--" + COMMIT[:12], RepoRef("dataset", REPO, COMMIT), ["0" * 40] * len(plan.files), part
        )
        assert tokens <= MAX_INFO_TOKENS and size <= (ARIA2_MAX_INFO_BYTES if fmt == "v1" else MAX_INFO_BYTES)


def _announce(registry: str, info_hash: bytes) -> bytes:
    query = urllib.parse.urlencode(
        {
            "info_hash": info_hash,
            "peer_id": b"-TT0001-" + bytes(12),
            "port": 6881,
            "uploaded": 0,
            "downloaded": 0,
            "left": 0,
            "compact": 1,
        }
    )
    with urllib.request.urlopen(f"{registry}/announce?{query}", timeout=10) as answer:
        return bytes(answer.read())


def test_publish_of_a_release_in_parts_then_pull_it_from_the_registry(release: SeededDataset, tmp_path: Path) -> None:
    """The registry takes every part (hybrid and classic), its API and website list them, its tracker admits
    each part's hashes, and a pull by the release's name from the registry gets the whole release."""
    with RegistryServer(tmp_path / "registry.db", upstream=release.hub.endpoint) as registry:
        assert registry.catalog is not None
        token = registry.catalog.create_token("ci")
        done = run_cli(
            "publish", REPO, "--repo-type", "dataset", "--registry", registry.url, "--endpoint", release.hub.endpoint,
            "--max-part-files", "12", "--json", env={"SWARMHUB_TOKEN": token},
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        published = json.loads(done.stdout)
        assert published["verified"] is True and (published["parts"], published["classic_parts"]) == (3, 3)
        parts = [parse_torrent(_get(url)) for url in published["torrent_urls"]]
        classics = [parse_torrent(_get(url)) for url in published["classic_torrent_urls"]]
        assert check_parts(parts) == parts and check_parts(classics) == classics
        assert {t.format for t in parts} == {"hybrid"} and {t.format for t in classics} == {"v1"}
        assert [f.path for t in parts for f in t.files] == sorted(release.files)
        listed = json.loads(_get(f"{registry.url}/api/releases/dataset/{REPO}/{published['commit']}"))
        assert len(listed["files"]) == FILES and listed["total_size"] == sum(map(len, release.files.values()))
        by_part = json.loads(_get(f"{registry.url}/api/info-hash/{parts[2].info_hash_v2}"))
        assert by_part["commit"] == published["commit"]
        for t in (*parts, *classics):
            assert t.info_hash_v1 is not None
            assert b"failure reason" not in _announce(registry.url, bytes.fromhex(t.info_hash_v1))
        assert b"failure reason" in _announce(registry.url, bytes(20))  # the tracker admits only what it holds
        page = _get(f"{registry.url}/datasets/{REPO}")
        assert b'id="parts"' in page and b"Hybrid part 2" in page and b"Classic part 2" in page
        pulled = pull(
            REPO, "--repo-type", "dataset", "--registry", registry.url, "--endpoint", release.hub.endpoint,
            "--cache-dir", tmp_path / "cache",
        )  # fmt: skip
        # a node that knows the release from the registry alone serves a file of its last part
        settings = dataclasses.replace(Settings.from_env().with_cache(tmp_path / "node" / "hub"), token=None)
        node = Node(settings, port=0, upstream=release.hub.endpoint, registry=registry.url).start()
        try:
            from huggingface_hub import hf_hub_download

            last = max(release.files)
            read = hf_hub_download(REPO, last, repo_type="dataset", revision=str(published["commit"]),
                                   endpoint=node.url, cache_dir=tmp_path / "program", token=False)  # fmt: skip
            assert Path(read).read_bytes() == release.files[last]
            assert node.library is not None and [r["repo_id"] for r in node.library.releases()] == [REPO]
        finally:
            node.stop()
    assert pulled["parts"] == 3 and pulled["files"] == FILES
    assert snapshot_files(Path(pulled["snapshot_path"])) == release.files


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as answer:
        return bytes(answer.read())


def test_a_node_pulls_and_serves_a_release_in_parts_from_the_seeder(release: SeededDataset, tmp_path: Path) -> None:
    """``swarmhub pull`` hands all the parts to the node running on the machine; programs then read any file
    of any part through the node's endpoint, every byte from the seeder (none from the origin)."""
    from huggingface_hub import hf_hub_download, snapshot_download

    torrents = [a for p in release.created["part_paths"] for a in ("--torrent", p)]
    with seeding(release.seeder_cache, *torrents) as seeder:
        cache = tmp_path / "node" / "hub"
        settings = dataclasses.replace(Settings.from_env().with_cache(cache), token=None)
        node = Node(settings, port=0, upstream=release.hub.endpoint, peers=[("127.0.0.1", seeder.port)]).start()
        try:
            release.hub.log.clear()
            handed = pull(
                REPO, "--repo-type", "dataset", "--torrent", release.torrent, "--include", "data/part-2/*",
                "--cache-dir", cache,
            )  # fmt: skip
            assert handed["parts"] == 3 and handed["files"] == 10 and handed["origin_bytes"] == 0
            assert node.library is not None and [r["repo_id"] for r in node.library.releases()] == [REPO]  # the node's
            commit = str(release.created["commit"])
            first = min(release.files)  # in part 0, which the node has not pulled
            read = hf_hub_download(REPO, first, repo_type="dataset", revision=commit, endpoint=node.url,
                                   cache_dir=tmp_path / "program", token=False)  # fmt: skip
            assert Path(read).read_bytes() == release.files[first]
            whole = snapshot_download(REPO, repo_type="dataset", revision=commit, endpoint=node.url,
                                      cache_dir=tmp_path / "program", token=False)  # fmt: skip
            assert snapshot_files(Path(whole)) == release.files
        finally:
            node.stop()
    assert [e.path for e in release.hub.log.entries("*/resolve/*", method="GET")] == []
    assert snapshot_files(_snapshot(cache, release.created["commit"])) == release.files


def test_a_node_finds_a_release_in_parts_in_its_store_whatever_order_they_are_listed_in(
    release: SeededDataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store lists torrents by file name (their keys): part 0, which names the others, may come last."""
    import asyncio

    from swarmhub.engine.session import Engine
    from swarmhub.node.library import Library
    from swarmhub.node.store import TorrentStore

    state = tmp_path / "state"
    store = TorrentStore(state)
    for path in release.created["part_paths"]:
        data = Path(path).read_bytes()
        store.save(parse_torrent(data), data)
    listed = TorrentStore.find
    monkeypatch.setattr(TorrentStore, "find", lambda self, *a: list(reversed(listed(self, *a))))
    with Engine() as engine:
        library = Library(engine, tmp_path / "hub", state, upstream=None)
        found = asyncio.run(library.release("dataset", REPO, str(release.created["commit"])))
    assert found is not None and [t.part.index for t, _ in found.parts if t.part] == [0, 1, 2]
    assert sorted(f.path for f in found.files) == sorted(release.files)


def test_a_node_pulling_one_part_goes_on_seeding_the_others(release: SeededDataset, tmp_path: Path) -> None:
    """A node that holds part 2 (seeded from its store at start) and is asked a file of part 0 pulls part 0
    without taking part 2 out of the engine: a part's pull stops only the torrents holding one of its files."""
    from huggingface_hub import hf_hub_download

    from swarmhub.node.store import TorrentStore

    parts = [(Path(p).read_bytes(), parse_torrent(Path(p).read_bytes())) for p in release.created["part_paths"]]
    cache = tmp_path / "node" / "hub"
    torrents = [a for p in release.created["part_paths"] for a in ("--torrent", p)]
    include = [a for f in parts[2][1].files for a in ("--include", f.path)]
    with seeding(release.seeder_cache, *torrents) as seeder:
        pull(REPO, "--repo-type", "dataset", "--torrent", release.torrent, *include, "--no-origin", "--peer",
             f"127.0.0.1:{seeder.port}", "--cache-dir", cache)  # fmt: skip
        settings = dataclasses.replace(Settings.from_env().with_cache(cache), token=None)
        store = TorrentStore(settings.state_dir)
        for data, torrent in parts:
            store.save(torrent, data)
        node = Node(settings, port=0, upstream=release.hub.endpoint, peers=[("127.0.0.1", seeder.port)]).start()
        try:
            assert node.engine is not None and parts[2][1].key in node.engine.torrents()  # seeded at start
            first = min(f.path for f in parts[0][1].files)
            read = hf_hub_download(REPO, first, repo_type="dataset", revision=str(release.created["commit"]),
                                   endpoint=node.url, cache_dir=tmp_path / "program", token=False)  # fmt: skip
            assert Path(read).read_bytes() == release.files[first]
            assert parts[0][1].key in node.engine.torrents()  # part 0 pulled, and part 2 seeds on
            assert parts[2][1].key in node.engine.torrents() and node.engine.status(parts[2][1].key).is_seeding
        finally:
            node.stop()


# ------------------------------------------------------------------------------------ a cluster's preheat


def _report(node: str, torrents: list[Torrent], complete: bool = False) -> dict[str, Any]:
    from swarmhub.cluster.brain import encode_bitfield

    have = [(1 << t.num_pieces) - 1 if complete else 0 for t in torrents]
    releases = [{"key": t.key, "num_pieces": t.num_pieces, "have": encode_bitfield(h, t.num_pieces)}
                for t, h in zip(torrents, have, strict=True)]  # fmt: skip
    return {"node_id": node, "labels": {}, "bt_port": 7000, "releases": releases}


def test_a_coordinator_preheats_a_release_in_parts_as_one(tmp_path: Path) -> None:
    """``/cluster/preheat`` takes part 0 and the others (in any order); a node is sent them all, part 0 first,
    again only after ``RESEND_AFTER``; it is done once it holds every part; a set that is not one release is
    refused in one line; the record on disk brings the parts back after a restart."""
    import base64

    from swarmhub.cluster import coordinator as module
    from swarmhub.cluster.brain import Brain
    from swarmhub.cluster.coordinator import Coordinator
    from swarmhub.errors import ClusterError

    datas = _made(tmp_path)
    torrents = [parse_torrent(d) for d in datas]
    b64 = [base64.b64encode(d).decode() for d in datas]
    clock = [0.0]
    coordinator = Coordinator(Brain(), clock=lambda: clock[0], state_dir=tmp_path / "state")
    coordinator.report(_report("a", []), "127.0.0.1")
    with pytest.raises(ClusterError, match=r"not the torrents of one release: .*part"):
        coordinator.preheat({"torrent": b64[0], "parts": b64[1:2]})
    asked = coordinator.preheat({"torrent": b64[0], "parts": [b64[2], b64[1]], "nodes": "all"})
    assert asked["keys"] == [t.key for t in torrents] and asked["nodes"] == ["a"]
    assert coordinator.report(_report("a", []), "127.0.0.1")["pull"] == [b64]
    clock[0] += 1
    assert coordinator.report(_report("a", torrents[:1]), "127.0.0.1")["pull"] == []  # sent a second ago
    clock[0] += module.RESEND_AFTER
    assert coordinator.report(_report("a", torrents[:2]), "127.0.0.1")["pull"] == [b64]  # part 2 still missing
    assert coordinator.report(_report("a", torrents), "127.0.0.1")["pull"] == []
    assert coordinator.status()["preheats"][asked["key"]]["done"] == []  # added, not complete
    coordinator.report(_report("a", torrents, complete=True), "127.0.0.1")
    assert coordinator.status()["preheats"][asked["key"]]["done"] == ["a"]
    again = Coordinator(Brain(), state_dir=tmp_path / "state")
    assert [t.key for _, t in again.preheats[asked["key"]].torrents] == asked["keys"]


def test_a_private_cluster_s_variants_of_a_release_in_parts_stay_one_release(tmp_path: Path) -> None:
    """Each part gets the cluster's CA, and part 0 names the others' variants: ``check_parts`` takes them, the
    keys are new, and making the variants again changes nothing (the coordinator and the nodes both do)."""
    from swarmhub.bt.metainfo import cluster_variants

    datas = _made(tmp_path)
    variants = cluster_variants(datas, b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    ordered = check_parts([parse_torrent(v) for v in variants])
    assert all(t.private for t in ordered)
    assert {t.key for t in ordered}.isdisjoint(parse_torrent(d).key for d in datas)
    assert cluster_variants(variants, b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n") == variants


def test_preheat_of_a_release_in_parts_lands_it_on_every_node(release: SeededDataset, tmp_path: Path) -> None:
    """``swarmhub preheat --torrent`` of part 0 finds the other parts beside it; two nodes of a cluster each
    end with the whole release where huggingface_hub looks, and ``--wait`` counts every part."""
    import contextlib

    from swarmhub.cluster.coordinator import CoordinatorServer

    with CoordinatorServer(fetchers=1) as coordinator, contextlib.ExitStack() as stack:
        for i in range(2):
            settings = dataclasses.replace(Settings.from_env().with_cache(tmp_path / f"node{i}" / "hub"), token=None)
            stack.enter_context(Node(settings, port=0, upstream=release.hub.endpoint, coordinator=coordinator.url))
        done = run_cli("preheat", REPO, "--repo-type", "dataset", "--torrent", release.torrent, "--coordinator",
                       coordinator.url, "--wait", "--json", "--timeout", "120")  # fmt: skip
        assert done.returncode == 0, done.stderr
    last = json.loads(done.stdout.strip().splitlines()[-1])
    assert last["complete"] == last["nodes"] == 2 and set(last["per_node"].values()) == {f"{FILES}/{FILES}"}
    for i in range(2):
        assert snapshot_files(_snapshot(tmp_path / f"node{i}" / "hub", release.created["commit"])) == release.files
