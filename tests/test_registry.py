"""The registry: catalog (SQLite), publishing with a token, the JSON API, the tracker, `pull --registry`.

End to end as users run it: `swarmhub registry token create`, `swarmhub publish` (streamed from the dev hub),
then node A pulls by name (the origin serves it) and seeds, and node B pulls by name with the origin off,
finding A through the registry's tracker alone.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from support.cli import run_cli
from support.swarm import REPO_ID, make_release, pull, seeding, snapshot_files
from swarmhub.bt.bencode import decode, encode
from swarmhub.bt.metainfo import parse_torrent
from swarmhub.devhub import DevHub, DevHubSettings
from swarmhub.origin.client import OriginClient
from swarmhub.registry import catalog as catalog_module
from swarmhub.registry.catalog import Catalog, Publisher, PublishRefused
from swarmhub.registry.follower import Follower
from swarmhub.registry.server import RegistryServer


@dataclass(frozen=True)
class Setup:
    root: Path
    files: dict[str, bytes]
    hub: DevHub
    registry: RegistryServer
    token: str
    published: dict[str, Any]


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    root = tmp_path_factory.mktemp("registry")
    files = make_release(root / "origin", size_mb=3)
    db = root / "registry.db"
    made = run_cli("registry", "token", "create", "ci-publisher", "--db", db)
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip().splitlines()[-1]
    with DevHub(root / "origin") as hub, RegistryServer(db, upstream=hub.endpoint) as registry:
        env = {"SWARMHUB_TOKEN": token}
        done = run_cli("publish", REPO_ID, "--registry", registry.url, "--endpoint", hub.endpoint, "--json", env=env)
        assert done.returncode == 0, done.stderr
        yield Setup(root, files, hub, registry, token, json.loads(done.stdout))


def test_publish_prints_what_other_tools_depend_on(setup: Setup) -> None:
    p = setup.published
    assert p["new"] is True and p["repo_id"] == REPO_ID
    assert p["verified"] is True  # the registry's upstream is the dev hub the release was streamed from
    for key in ("info_hash_v1", "info_hash_v2", "magnet", "torrent_url", "classic_torrent_url"):
        assert p[key], key
    status, hybrid = _get(p["torrent_url"])
    assert status == 200
    parsed = parse_torrent(hybrid)
    assert (parsed.format, parsed.info_hash_v1, parsed.info_hash_v2) == ("hybrid", p["info_hash_v1"], p["info_hash_v2"])
    assert parsed.trackers == (f"{setup.registry.public_url}/announce",)
    assert parsed.webseeds == (f"{setup.registry.public_url}/webseed/model/{REPO_ID}/{p['commit']}/",)
    status, classic = _get(p["classic_torrent_url"])
    assert status == 200 and parse_torrent(classic).format == "v1"
    assert p["info_hash_v1"] in p["magnet"] and p["info_hash_v2"] in p["magnet"]


def test_publishing_again_is_idempotent_and_needs_a_valid_token(setup: Setup) -> None:
    args = ["publish", REPO_ID, "--registry", setup.registry.url, "--endpoint", setup.hub.endpoint, "--json"]
    again = run_cli(*args, env={"SWARMHUB_TOKEN": setup.token})
    assert again.returncode == 0 and json.loads(again.stdout)["new"] is False
    wrong = run_cli(*args, env={"SWARMHUB_TOKEN": "swh_wrong"})
    assert wrong.returncode == 1 and "refused" in wrong.stderr and "SWARMHUB_TOKEN" in wrong.stderr
    assert wrong.stderr.count("\n") == 1
    missing = run_cli(*args, env={"SWARMHUB_TOKEN": ""})
    assert missing.returncode == 2 and "publishing needs a token" in missing.stderr
    request = urllib.request.Request(f"{setup.registry.url}/api/releases", data=b"{}", method="POST")
    try:
        urllib.request.urlopen(request, timeout=10)
        raise AssertionError("published without a token")
    except urllib.error.HTTPError as exc:
        assert exc.code == 401


def test_api_finds_releases_by_name_hash_and_search(setup: Setup) -> None:
    base, p = setup.registry.url, setup.published
    for h in (p["info_hash_v1"], p["info_hash_v2"], p["info_hash_v2"][:40], p["classic_info_hash"]):
        status, body = _get(f"{base}/api/info-hash/{h}")
        assert status == 200 and json.loads(body)["commit"] == p["commit"], h
    status, body = _get(f"{base}/api/repos/model/{REPO_ID}/latest")
    assert status == 200 and json.loads(body)["commit"] == p["commit"]
    status, body = _get(f"{base}/api/releases/model/{REPO_ID}/{p['commit'][:10]}")
    assert status == 200 and json.loads(body)["info_hash_v2"] == p["info_hash_v2"]
    status, body = _get(f"{base}/api/releases?q=tiny&sort=size")
    assert status == 200 and [r["repo_id"] for r in json.loads(body)["releases"]] == [REPO_ID]
    status, body = _get(f"{base}/api/releases?q=nothing-like-it")
    assert status == 200 and json.loads(body) == {"total": 0, "releases": []}
    assert _get(f"{base}/api/repos/model/org/unknown/latest")[0] == 404
    assert _get(f"{base}/api/releases/model/{REPO_ID}/{'f' * 40}/torrent")[0] == 404
    status, body = _get(f"{base}/api/openapi.json")
    assert status == 200 and "/api/releases" in json.loads(body)["paths"]


def test_tracker_tracks_published_info_hashes_only(setup: Setup) -> None:
    def announce(info_hash: bytes) -> Any:
        query = urllib.parse.urlencode(
            {
                "info_hash": info_hash,
                "peer_id": b"-XX0001-abcdefghijkl",
                "port": 6881,
                "uploaded": 0,
                "downloaded": 0,
                "left": 0,
                "compact": 1,
            }
        )
        return decode(_get(f"{setup.registry.url}/announce?{query}")[1])

    published = announce(bytes.fromhex(setup.published["info_hash_v1"]))
    assert isinstance(published, dict) and b"interval" in published
    unknown = announce(b"\x01" * 20)
    assert isinstance(unknown, dict) and b"failure reason" in unknown


def test_pull_by_name_from_the_registry(setup: Setup, tmp_path: Path) -> None:
    """Node A pulls by name (nobody seeds yet: the origin serves it) and seeds; node B pulls by name with the
    origin off and finds A through the registry's tracker alone (no --peer)."""
    registry = setup.registry.url
    a = pull(REPO_ID, "--registry", registry, "--endpoint", setup.hub.endpoint, "--cache-dir", tmp_path / "a" / "hub",
             "--origin-after", "0")  # fmt: skip
    assert a["commit"] == setup.published["commit"] and a["origin_bytes"] > 0
    with seeding(tmp_path / "a" / "hub"):
        b = pull(REPO_ID, "--registry", registry, "--no-origin", "--cache-dir", tmp_path / "b" / "hub")
    assert b["origin_bytes"] == 0 and b["peer_bytes"] > 0
    assert snapshot_files(Path(b["snapshot_path"])) == setup.files
    unknown = run_cli("pull", "org/unknown", "--registry", registry, "--cache-dir", tmp_path / "c")
    assert unknown.returncode == 2 and "has no release of org/unknown" in unknown.stderr


def test_catalog_refuses_mismatched_pairs_and_keeps_tokens_hashed(setup: Setup, tmp_path: Path) -> None:
    p = setup.published
    hybrid = _get(p["torrent_url"])[1]
    classic = _get(p["classic_torrent_url"])[1]
    catalog = Catalog(tmp_path / "c.db")
    try:
        with pytest.raises(PublishRefused, match="the classic torrent is hybrid, not v1"):
            catalog.publish(hybrid, hybrid, "t")
        with pytest.raises(PublishRefused, match="the first torrent is v1, not a v1"):
            catalog.publish(classic, classic, "t")
        release, new = catalog.publish(hybrid, classic, "t")
        assert new and catalog.publish(hybrid, classic, "t") == (release, False)
        token = catalog.create_token("someone")
        assert catalog.publisher(token) == Publisher("someone") and catalog.publisher(token + "x") is None
        assert catalog.schema_version == 6
    finally:
        catalog.close()
    raw = b"".join(f.read_bytes() for f in tmp_path.glob("c.db*"))
    assert token.encode() not in raw
    with sqlite3.connect(tmp_path / "c.db") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def _as_release(torrent: bytes, repo_id: str, commit: str) -> bytes:
    """The same files as another release of another repo or commit (new info-hashes, nothing hashed again)."""
    meta = decode(torrent)
    assert isinstance(meta, dict)
    meta[b"info"][b"hf"][b"repo_id"] = repo_id.encode()
    meta[b"info"][b"hf"][b"commit"] = commit.encode()
    meta[b"info"][b"name"] = f"{repo_id.replace('/', '--')}--{commit[:12]}".encode()
    return encode(meta)


def test_each_repos_latest_release_is_flagged_by_publish_and_by_the_migration(
    setup: Setup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Listing the latest release of every repo reads a flag (schema 4) instead of a subquery per release: the
    flag must pick what ``latest()`` picks (newest ``published_at``, a tie going to the later stored), whether
    publish set it or the migration of an older catalog did."""
    hybrid, classic = _get(setup.published["torrent_url"])[1], _get(setup.published["classic_torrent_url"])[1]
    clock = [0.0]
    monkeypatch.setattr(catalog_module, "time", SimpleNamespace(time=lambda: clock[0]))  # the catalog's clock
    db = tmp_path / "c.db"
    catalog = Catalog(db)
    c = [f"{n:040x}" for n in range(1, 6)]
    # org/a: c1, then c2 and c3 at the same time (c3 stored later wins), then c4 from a clock that went back
    for repo_id, commit, when in [("org/a", c[0], 100), ("org/a", c[1], 300), ("org/a", c[2], 300),
                                  ("org/b", c[4], 250), ("org/a", c[3], 200)]:  # fmt: skip
        clock[0] = when
        catalog.publish(_as_release(hybrid, repo_id, commit), _as_release(classic, repo_id, commit), "t")

    def listed(catalog: Catalog) -> dict[str, list[tuple[str, str]]]:
        out = {}
        for sort in ("newest", "name", "size"):
            releases, total = catalog.search(sort=sort)  # type: ignore[arg-type]
            assert total == len(releases)
            out[sort] = [(r.repo_id, r.commit) for r in releases]
        out["text"] = [(r.repo_id, r.commit) for r in catalog.search("a", org="org")[0]]
        return out

    expected = [("org/a", c[2]), ("org/b", c[4])]
    assert [(r, catalog.latest("model", r).commit) for r in ("org/a", "org/b")] == expected  # type: ignore[union-attr]
    by_publish = listed(catalog)
    assert by_publish["newest"] == by_publish["name"] == expected
    assert by_publish["text"] == [("org/a", c[2])]
    catalog.close()
    with sqlite3.connect(db) as raw:  # back to schema 3: no flag, no indexes on it (nor schema 5's and 6's)
        raw.execute("DROP TABLE release_parts")
        raw.execute("ALTER TABLE releases DROP COLUMN parts")
        raw.execute("ALTER TABLE releases DROP COLUMN classic_parts")
        for index in ("releases_latest", "releases_latest_newest", "releases_latest_size", "releases_latest_org"):
            raw.execute(f"DROP INDEX {index}")
        raw.execute("ALTER TABLE releases DROP COLUMN latest")
        raw.execute("ALTER TABLE releases DROP COLUMN verified_at")
        raw.execute("ALTER TABLE tokens DROP COLUMN orgs")
        raw.execute("PRAGMA user_version = 3")
    catalog = Catalog(db)
    try:
        assert catalog.schema_version == 6 and listed(catalog) == by_publish
    finally:
        catalog.close()


def _wait_json(url: str, ready: Any, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, body = _get(url)
        if status == 200 and ready(value := json.loads(body)):
            return value
        time.sleep(0.2)
    raise AssertionError(f"{url} never got there")


def test_the_registry_follows_a_repo_and_publishes_each_new_commit(tmp_path: Path) -> None:
    repo = make_release(tmp_path / "origin", size_mb=1) and tmp_path / "origin" / "models" / REPO_ID
    db = tmp_path / "registry.db"
    added = run_cli("registry", "follow", REPO_ID, "--db", db)
    assert added.returncode == 0 and added.stdout.startswith("following"), added.stderr
    with DevHub(tmp_path / "origin") as hub, RegistryServer(db, upstream=hub.endpoint, follow_interval=0.3) as reg:
        latest = f"{reg.url}/api/repos/model/{REPO_ID}/latest"
        first = _wait_json(latest, lambda r: True)
        assert first["published_by"] == "follower"
        (repo / "README.md").write_text("# tiny-model, second commit\n")
        second = _wait_json(latest, lambda r: r["commit"] != first["commit"])
        body = _get(f"{reg.url}/api/repos/model/{REPO_ID}")[1]
        assert [r["commit"] for r in json.loads(body)["releases"]] == [second["commit"], first["commit"]]
        follows = _wait_json(f"{reg.url}/api/follows", lambda f: f["follows"][0]["last_commit"] == second["commit"])
        assert follows["follows"][0]["last_error"] is None
        query = urllib.parse.urlencode(
            {
                "info_hash": bytes.fromhex(second["info_hash_v1"]),
                "peer_id": b"-XX0001-abcdefghijkl",
                "port": 6881,
                "uploaded": 0,
                "downloaded": 0,
                "left": 0,
            }
        )
        answer = decode(_get(f"{reg.url}/announce?{query}")[1])
        assert isinstance(answer, dict) and b"interval" in answer  # the new release is tracked at once


def _org_repo(root: Path, repo_id: str, text: str) -> Path:
    folder = root / "models" / repo_id
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"model": repo_id}))
    (folder / "README.md").write_text(text)
    return folder


def test_the_registry_follows_an_org_repo_by_repo(tmp_path: Path) -> None:
    """An org follow lists the org's repos every round (all pages) and publishes each one's new commits; a repo
    that fails is recorded as failing and the others go on; a repo whose listed commit is published already
    costs no resolve."""
    root, db = tmp_path / "origin", tmp_path / "registry.db"
    a = _org_repo(root, "acme/alpha", "# alpha\n")
    _org_repo(root, "acme/beta", "# beta\n")
    _org_repo(root, "acme/gated", "# gated\n")  # listed, but its revision needs a token we do not have
    _org_repo(root, "other/gamma", "# not acme's\n")
    added = run_cli("registry", "follow", "acme", "--json", "--db", db)
    assert added.returncode == 0, added.stderr
    shown = json.loads(added.stdout)
    assert (shown["kind"], shown["org"], shown["repo_id"], shown["branch"], shown["new"]) == (
        "org",
        "acme",
        None,
        "main",
        True,
    )
    assert shown["repos"] == []
    assert json.loads(run_cli("registry", "follow", "acme", "--json", "--db", db).stdout)["new"] is False
    settings = DevHubSettings(page_size=1, gated={"acme/gated": "hf_secret"})  # one repo per listing page

    async def two_rounds(hub: DevHub, catalog: Catalog) -> tuple[list[str], list[str]]:
        async with OriginClient(hub.endpoint, retries=2, backoff_base=0.01) as origin:
            follower = Follower(catalog, origin, "http://registry.test", interval=0)
            first = [r.repo_id for r in await follower.check_all()]
            (a / "README.md").write_text("# alpha, second commit\n")
            second = [r.repo_id for r in await follower.check_all()]
        return first, second

    with DevHub(root, settings=settings) as hub:
        catalog = Catalog(db)
        try:
            first, second = asyncio.run(two_rounds(hub, catalog))
            assert sorted(first) == ["acme/alpha", "acme/beta"] and second == ["acme/alpha"]
            assert [len(catalog.releases_of("model", r)) for r in ("acme/alpha", "acme/beta")] == [2, 1]
            assert catalog.releases_of("model", "other/gamma") == []
        finally:
            catalog.close()
        listings = hub.log.entries("/api/models", method="GET")
        assert len(listings) == 2 * 3 and all("author=acme" in e.query for e in listings)  # 3 pages a round
        assert len(hub.log.entries("/api/models/acme/beta/revision/main")) == 1  # round 2: its listed sha sufficed
        assert len(hub.log.entries("/api/models/acme/alpha/revision/main")) == 2
        with RegistryServer(db) as registry:
            follows = json.loads(_get(f"{registry.url}/api/follows")[1])["follows"]
    (org,) = follows
    assert (org["kind"], org["org"], org["repo_id"], org["last_error"]) == ("org", "acme", None, None)
    assert org["checked_at"] is not None
    repos = {r["repo_id"]: r for r in org["repos"]}
    assert sorted(repos) == ["acme/alpha", "acme/beta", "acme/gated"]
    assert repos["acme/alpha"]["last_commit"] == hub.state.store.snapshot("model", "acme/alpha").commit
    assert repos["acme/beta"]["last_error"] is None and repos["acme/beta"]["last_commit"]
    assert repos["acme/gated"]["last_commit"] is None and "HTTP 401" in repos["acme/gated"]["last_error"]
