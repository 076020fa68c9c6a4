"""The registry website: HTML over HTTP in-process, then a real browser (Debian's Chromium driven by Playwright).

Releases are made the way publishers make them (``swarmhub create --from-dir ... --format hybrid`` and
``--format v1``) and published into a temporary catalog. The in-process tests feed a health function with
known numbers; the browser tests run the registry app (or, while it is missing, the website next to stand-ins
for the two torrent endpoints) and announce peers to its tracker, so the numbers the page shows are live.
"""

from __future__ import annotations

import ipaddress
import os
import random
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, replace
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.testclient import TestClient

from support.cli import run_cli
from support.layouts import write_layout
from swarmhub.bt.bencode import decode, encode
from swarmhub.bt.magnet import parse_magnet
from swarmhub.bt.metainfo import parse_torrent
from swarmhub.bt.tracker import AnnounceRequest, Swarms
from swarmhub.registry.catalog import Catalog, Release
from swarmhub.registry.web import (
    PAGE_SIZE,
    SwarmHealth,
    human_size,
    magnet_uri,
    pull_command,
    torrent_path,
    utc_iso,
    website_routes,
)
from swarmhub.serving import UvicornThread, bind

PUBLIC = "http://registry.test:8080"
OLD, NEW = "9c3a6b1e0d2f4a5b8c7d6e5f4a3b2c1d0e9f8a7b", "5f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c"
HOSTILE_PATHS = (
    "<script>alert(1)</script>.txt",  # a folder "<script>alert(1)<" holding "script>.txt"
    "a&b \"quoted\" 'single' <img src=x onerror=alert(2)>.json",
)
HOSTILE_PUBLISHER = "<img src=x onerror=alert(3)>"
SCREENSHOT = Path(__file__).parent.parent / "docs" / "website.png"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

# repo id -> (repo type, {commit: layout}); published in this order, so the last is the newest
RELEASES: dict[str, tuple[str, dict[str, dict[str, int]]]] = {
    "org/name": (
        "model",
        {
            OLD: {"config.json": 571, "model.safetensors": 150_000},
            NEW: {
                "config.json": 612,
                "generation_config.json": 124,
                "model.safetensors": 2_400_000,
                "tokenizer.json": 180_000,
                "README.md": 3_100,
            },
        },
    ),
    "other-org/big-model": ("model", {"2" * 40: {"weights/shard-1.bin": 3_000_000, "weights/shard-2.bin": 1_000_001}}),
    "org/small-data": ("dataset", {"3" * 40: {"data/train.csv": 5_000, "data/test.csv": 1_000}}),
    "evil-org/escapes": ("model", {"4" * 40: {p: 10 + i for i, p in enumerate(HOSTILE_PATHS)}}),
}


@dataclass(frozen=True)
class Pair:
    hybrid: bytes
    classic: bytes


def create_pair(folder: Path, repo_id: str, repo_type: str, commit: str) -> Pair:
    """``swarmhub create REPO --from-dir folder --revision commit`` in both formats, as a publisher would."""
    out = []
    for fmt in ("hybrid", "v1"):
        torrent = folder.parent / f"{folder.name}.{fmt}.torrent"
        proc = run_cli(
            "create", repo_id, "--repo-type", repo_type, "--from-dir", folder, "--revision", commit,
            "--format", fmt, "--piece-size", "16k", "-o", torrent, "--no-progress",
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        out.append(torrent.read_bytes())
    return Pair(*out)


def renamed(pair: Pair, repo_id: str, commit: str) -> Pair:
    """The same files as another release (new info-hashes): many releases without hashing files again."""

    def one(data: bytes) -> bytes:
        meta = decode(data)
        meta[b"info"][b"hf"][b"repo_id"] = repo_id.encode()
        meta[b"info"][b"hf"][b"commit"] = commit.encode()
        meta[b"info"][b"name"] = f"{repo_id.replace('/', '--')}--{commit[:12]}".encode()
        return encode(meta)

    return Pair(one(pair.hybrid), one(pair.classic))


@dataclass
class Published:
    catalog: Catalog
    pairs: dict[tuple[str, str], Pair]  # (repo id, commit) -> torrents
    releases: dict[tuple[str, str], Release]

    def release(self, repo_id: str, commit: str | None = None) -> Release:
        if commit is None:
            return max((r for (rid, _), r in self.releases.items() if rid == repo_id), key=lambda r: r.published_at)
        return self.releases[repo_id, commit]


def publish_all(root: Path, catalog: Catalog) -> Published:
    pairs, releases = {}, {}
    for repo_id, (repo_type, commits) in RELEASES.items():
        for commit, layout in commits.items():
            folder = root / f"{repo_id.replace('/', '--')}--{commit[:12]}"
            write_layout(folder, layout)
            pair = create_pair(folder, repo_id, repo_type, commit)
            hostile = repo_id == "evil-org/escapes"  # published while the upstream was down: unverified
            by = HOSTILE_PUBLISHER if hostile else "ci-publisher"
            release, new = catalog.publish(pair.hybrid, pair.classic, by=by, verified=not hostile)
            assert new
            pairs[repo_id, commit], releases[repo_id, commit] = pair, release
            time.sleep(0.002)  # distinct publication times: "newest" is well defined
    return Published(catalog, pairs, releases)


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Published]:
    root = tmp_path_factory.mktemp("website")
    catalog = Catalog(root / "catalog.db")
    yield publish_all(root, catalog)
    catalog.close()


class KnownHealth:
    """Health numbers chosen by the test, per commit; records which releases it was asked about."""

    def __init__(self, numbers: Mapping[str, SwarmHealth]) -> None:
        self.numbers = dict(numbers)
        self.asked: list[Release] = []

    def __call__(self, release: Release) -> SwarmHealth:
        self.asked.append(release)
        return self.numbers.get(release.commit, SwarmHealth(0, 0, 0))


# the four repos in each order the index offers (health numbers as HEALTH below)
NEWEST_FIRST = ["evil-org/escapes", "org/small-data", "other-org/big-model", "org/name"]
BY_NAME = ["evil-org/escapes", "org/name", "org/small-data", "other-org/big-model"]
BY_SIZE = ["other-org/big-model", "org/name", "org/small-data", "evil-org/escapes"]
BY_SEEDERS = ["other-org/big-model", "org/name", "evil-org/escapes", "org/small-data"]  # 9, 3, 1 (1 leecher), 0

HEALTH = {
    NEW: SwarmHealth(3, 2, 7),
    OLD: SwarmHealth(1, 0, 4),
    "2" * 40: SwarmHealth(9, 1, 12),
    "3" * 40: SwarmHealth(0, 5, 0),
    "4" * 40: SwarmHealth(1, 1, 1),
}


def client_for(catalog: Catalog, health: Callable[[Release], SwarmHealth], **options: float) -> TestClient:
    return TestClient(Starlette(routes=website_routes(catalog, health, public_url=PUBLIC, **options)))


@pytest.fixture
def http(published: Published) -> TestClient:
    return client_for(published.catalog, KnownHealth(HEALTH))


# ------------------------------------------------------------------------------------------ HTML reading


class Elements(HTMLParser):
    """Text and attributes of every element, with its classes and id (enough to read our own pages)."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[dict[str, Any]] = []
        self._open: list[dict[str, Any]] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = {"tag": tag, "attrs": dict(attrs), "text": ""}
        self.found.append(element)
        if tag not in ("input", "meta", "link", "br", "img"):
            self._open.append(element)

    def handle_endtag(self, tag: str) -> None:
        while self._open:
            if self._open.pop()["tag"] == tag:
                break

    def handle_data(self, data: str) -> None:
        for element in self._open:
            element["text"] += data

    def select(self, tag: str | None = None, cls: str | None = None, id: str | None = None) -> list[dict[str, Any]]:
        return [
            e
            for e in self.found
            if (tag is None or e["tag"] == tag)
            and (cls is None or cls in (e["attrs"].get("class") or "").split())
            and (id is None or e["attrs"].get("id") == id)
        ]

    def texts(self, tag: str | None = None, cls: str | None = None) -> list[str]:
        return [" ".join(e["text"].split()) for e in self.select(tag, cls)]

    def one(self, id: str) -> dict[str, Any]:
        (element,) = self.select(id=id)
        return element


def page(client: TestClient, url: str, status: int = 200) -> Elements:
    response = client.get(url)
    assert response.status_code == status, response.text[:500]
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    return Elements(response.text)


# ------------------------------------------------------------------------------------------- formatting


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, "0 B"),
        (999, "999 B"),
        (1000, "1.0 kB"),
        (1536, "1.5 kB"),
        (99_940, "99.9 kB"),
        (99_950, "100 kB"),
        (548_105_171, "548 MB"),
        (999_499, "999 kB"),
        (999_500, "1.0 MB"),
        (1_500_000_000, "1.5 GB"),
        (10**18, "1000 PB"),
    ],
)
def test_sizes_read_like_the_hubs(size: int, text: str) -> None:
    assert human_size(size) == text


def test_dates_are_utc_iso() -> None:
    assert utc_iso(0) == "1970-01-01T00:00:00Z"
    assert utc_iso(1_700_000_000.9) == "2023-11-14T22:13:20Z"


def test_links_of_a_release(published: Published) -> None:
    release = published.release("org/name")
    assert torrent_path(release) == f"/api/releases/model/org/name/{NEW}/torrent"
    assert torrent_path(release, classic=True) == f"/api/releases/model/org/name/{NEW}/torrent?classic=1"
    assert pull_command(release, latest=True) == "swarmhub pull org/name"
    assert pull_command(release, latest=False) == f"swarmhub pull org/name@{NEW}"
    dataset = published.release("org/small-data")
    assert pull_command(dataset, latest=True) == "swarmhub pull --repo-type dataset org/small-data"
    magnet = parse_magnet(magnet_uri(release, PUBLIC + "/"))
    hybrid = parse_torrent(published.pairs["org/name", NEW].hybrid)
    assert (magnet.info_hash_v1, magnet.info_hash_v2) == (hybrid.info_hash_v1, hybrid.info_hash_v2)
    assert magnet.name == hybrid.name == f"org--name--{NEW[:12]}"
    assert magnet.trackers == (f"{PUBLIC}/announce",)
    assert magnet.webseeds == (f"{PUBLIC}/webseed/model/org/name/{NEW}/",)


# ----------------------------------------------------------------------------------------------- index


def test_index_lists_each_repos_latest_release_newest_first(http: TestClient, published: Published) -> None:
    doc = page(http, "/")
    assert doc.texts("a", "repo") == NEWEST_FIRST
    assert doc.texts("a", "commit") == ["4" * 12, "3" * 12, "2" * 12, NEW[:12]]
    assert doc.one("count")["text"].strip() == "4 repositories"
    release = published.release("org/name")
    assert utc_iso(release.published_at) in doc.texts("time")
    assert doc.texts("td", "health-seeders") == ["1", "0", "9", "3"]
    assert doc.texts("td", "health-leechers") == ["1", "5", "1", "2"]
    assert doc.texts("td", "health-completed") == ["1", "0", "12", "7"]
    assert release.total_size == 2_583_836 and "2.6 MB" in doc.texts("td", "num")


def test_search_filters_by_repo_id(http: TestClient) -> None:
    assert page(http, "/?q=big").texts("a", "repo") == ["other-org/big-model"]
    assert page(http, "/?q=ORG/").texts("a", "repo") == NEWEST_FIRST
    assert page(http, "/?q=%25").texts("a", "repo") == []  # LIKE wildcards are text
    none = page(http, "/?q=nothing-like-this")
    assert none.texts("a", "repo") == []
    assert "No repository matches." in none.texts("p", "empty")
    assert none.one("count")["text"].strip() == "0 repositories matching “nothing-like-this”"


def test_sorts(http: TestClient) -> None:
    def order(sort: str) -> list[str]:
        return page(http, f"/?sort={sort}").texts("a", "repo")

    assert order("name") == BY_NAME
    assert order("size") == BY_SIZE
    assert order("newest") == NEWEST_FIRST
    assert order("seeders") == BY_SEEDERS
    # the current sort is marked, and the search box keeps it
    doc = page(http, "/?sort=size&q=org")
    assert [e["attrs"]["data-sort"] for e in doc.select("a", "sort") if "aria-current" in e["attrs"]] == ["size"]
    assert [e["attrs"]["value"] for e in doc.select("input") if e["attrs"].get("name") == "sort"] == ["size"]


def test_filters_by_org_and_type(http: TestClient) -> None:
    assert page(http, "/?org=org").texts("a", "repo") == ["org/small-data", "org/name"]
    assert page(http, "/?type=dataset").texts("a", "repo") == ["org/small-data"]
    assert page(http, "/?type=model&org=org").texts("a", "repo") == ["org/name"]


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ("sort=popular", "sort 'popular' is not one of newest, name, size, seeders"),
        ("page=0", "page '0' is not a page number"),
        ("page=two", "page 'two' is not a page number"),
        ("type=space-station", "type 'space-station' is not one of model, dataset, space"),
        ("q=" + "x" * 201, "longer than 200 characters"),
    ],
)
def test_bad_index_queries_get_a_400_page(http: TestClient, query: str, says: str) -> None:
    doc = page(http, "/?" + query, status=400)
    assert says in doc.one("error")["text"]


# ------------------------------------------------------------------------------------------- repo page


def test_repo_page_shows_releases_files_links_and_health(http: TestClient, published: Published) -> None:
    doc = page(http, "/models/org/name")
    release = published.release("org/name", NEW)
    assert doc.one("repo-id")["text"] == "org/name"
    assert doc.one("commit")["text"] == NEW
    assert doc.one("pull-command")["text"] == "swarmhub pull org/name"
    assert [doc.one(k)["text"] for k in ("seeders", "leechers", "completed")] == ["3", "2", "7"]
    # files in torrent order, with human sizes and the exact size on hover
    assert doc.texts("td", "path") == [f.path for f in release.files]
    sizes = {e["attrs"]["title"]: " ".join(e["text"].split()) for e in doc.select("td", "num") if "title" in e["attrs"]}
    assert sizes["2400000 bytes"] == "2.4 MB" and sizes["612 bytes"] == "612 B"
    # both torrents and the magnet
    assert doc.one("torrent-hybrid")["attrs"]["href"] == f"/api/releases/model/org/name/{NEW}/torrent"
    assert doc.one("torrent-classic")["attrs"]["href"] == f"/api/releases/model/org/name/{NEW}/torrent?classic=1"
    magnet = parse_magnet(doc.one("magnet")["attrs"]["href"])
    assert (magnet.info_hash_v1, magnet.info_hash_v2) == (release.info_hash_v1, release.info_hash_v2)
    assert doc.one("hash-classic")["text"] == release.classic_info_hash
    # the releases, newest first, the selected one marked, each with its health
    assert doc.texts("a", "commit") == [NEW[:12], OLD[:12]]
    assert [" ".join(e["text"].split())[:12] for e in doc.select("tr", "selected")] == [NEW[:12]]
    assert doc.texts("td", "health-seeders") == ["3", "1"]
    assert doc.one("verified")["text"].startswith("its files are the upstream's at this commit")
    assert doc.select("span", "unverified") == []


def test_an_unverified_release_says_so(http: TestClient) -> None:
    doc = page(http, "/models/evil-org/escapes")
    assert doc.one("verified")["text"].startswith("unverified: the registry could not compare its files")
    assert len(doc.select("span", "unverified")) == 2  # the selected release's heading and its row
    index = page(http, "/")
    assert [" ".join(e["text"].split()) for e in index.select("span", "unverified")] == ["unverified"]


def test_an_older_release_by_commit_or_abbreviation(http: TestClient, published: Published) -> None:
    for commit in (OLD, OLD[:7]):
        doc = page(http, f"/models/org/name?commit={commit}")
        assert doc.one("commit")["text"] == OLD
        assert doc.one("pull-command")["text"] == f"swarmhub pull org/name@{OLD}"
        assert doc.texts("td", "path") == ["config.json", "model.safetensors"]
        assert [doc.one(k)["text"] for k in ("seeders", "leechers", "completed")] == ["1", "0", "4"]
        assert doc.one("torrent-hybrid")["attrs"]["href"] == f"/api/releases/model/org/name/{OLD}/torrent"


def test_datasets_live_under_datasets(http: TestClient) -> None:
    doc = page(http, "/datasets/org/small-data")
    assert doc.one("pull-command")["text"] == "swarmhub pull --repo-type dataset org/small-data"
    assert doc.one("torrent-hybrid")["attrs"]["href"].startswith("/api/releases/dataset/org/small-data/")
    page(http, "/models/org/small-data", status=404)


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("/models/org/unknown", "no release of models/org/unknown is published here"),
        ("/models/org/name?commit=" + "f" * 40, "is not a published release of org/name"),
        ("/models/org/name?commit=zz", "is not a published release of org/name"),
        ("/models/org/a..b", "is not a repo id"),
        ("/models/-org/name", "is not a repo id"),
        ("/models/org/name?page=x", "is not a page number"),
    ],
)
def test_missing_things_get_an_html_error(http: TestClient, url: str, says: str) -> None:
    response = http.get(url)
    assert response.status_code in (400, 404)
    assert says in Elements(response.text).one("error")["text"]


# ------------------------------------------------------------------------------------------ escaping


def test_publisher_text_is_escaped(http: TestClient) -> None:
    response = http.get("/models/evil-org/escapes")
    assert response.status_code == 200
    body = response.text
    for raw in ("<script>alert(1)", "<img src=x onerror=alert(2)>", HOSTILE_PUBLISHER):
        assert raw not in body
    assert "&lt;script&gt;alert(1)&lt;/script&gt;.txt" in body
    doc = Elements(body)
    assert sorted(doc.texts("td", "path")) == sorted(" ".join(p.split()) for p in HOSTILE_PATHS)
    assert [e["tag"] for e in doc.found].count("script") == 1  # ours: /static/site.js
    assert HOSTILE_PUBLISHER in doc.select("dd")[0]["text"]


def test_search_text_is_escaped_where_it_is_echoed(http: TestClient) -> None:
    hostile = '"><script>alert(4)</script>'
    response = http.get("/", params={"q": hostile, "sort": "name"})
    assert response.status_code == 200
    assert "<script>alert(4)" not in response.text
    doc = Elements(response.text)
    assert [e["attrs"]["value"] for e in doc.select("input") if e["attrs"].get("name") == "q"] == [hostile]
    assert hostile in doc.one("count")["text"]


def test_pages_forbid_inline_script_and_serve_their_own_assets(http: TestClient) -> None:
    response = http.get("/")
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "default-src 'none'" in policy and "unsafe-inline" not in policy
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "no-cache"
    for asset, kind in (("/static/site.css", "text/css"), ("/static/site.js", "javascript")):
        served = http.get(asset)
        assert served.status_code == 200 and kind in served.headers["content-type"] and len(served.content) > 500
        assert asset in response.text
    assert "http" not in http.get("/static/site.css").text  # works offline: no outside URL at all


# -------------------------------------------------------------------------------------------- paging


@pytest.fixture(scope="module")
def crowded(tmp_path_factory: pytest.TempPathFactory, published: Published) -> Iterator[Catalog]:
    """2,000 repos over 25 orgs, and one repo with 120 releases."""
    catalog = Catalog(tmp_path_factory.mktemp("crowded") / "catalog.db")
    base = published.pairs["org/name", NEW]
    for i in range(2000):
        pair = renamed(base, f"org{i % 25}/model-{i:04d}", f"{i:040x}")
        catalog.publish(pair.hybrid, pair.classic, by="bulk")
    for i in range(120):
        pair = renamed(base, "busy/repo", f"{i + 1:040x}")
        catalog.publish(pair.hybrid, pair.classic, by="bulk")
    yield catalog
    catalog.close()


def by_number(release: Release) -> SwarmHealth:
    """Seeders from the commit (``model-0042`` has commit ...02a): 2,000 distinct counts."""
    n = int(release.commit, 16)
    return SwarmHealth(seeders=(n * 7919) % 2003, leechers=n % 3, completed=n)


def test_index_pages_fifty_at_a_time(crowded: Catalog) -> None:
    health = KnownHealth({})
    client = client_for(crowded, health)
    first = page(client, "/?sort=name")
    assert len(first.texts("a", "repo")) == PAGE_SIZE
    assert len(health.asked) == PAGE_SIZE  # health is asked only about the rows shown
    assert first.one("count")["text"].strip() == "2001 repositories"
    (next_link,) = [e["attrs"]["href"] for e in first.select("a") if e["attrs"].get("rel") == "next"]
    assert next_link == "/?sort=name&page=2"
    last = page(client, "/?sort=name&page=41")
    assert len(last.texts("a", "repo")) == 1 and "Page 41 of 41" in last.texts("span")
    past = page(client, "/?sort=name&page=99")
    assert past.texts("a", "repo") == [] and "back to the first page" in past.texts("p", "empty")[0]
    names = [n for p in range(1, 42) for n in page(client, f"/?sort=name&page={p}").texts("a", "repo")]
    assert names == sorted(names) and len(set(names)) == 2001


def test_sorting_by_seeders_ranks_every_repo_quickly(crowded: Catalog) -> None:
    client = client_for(crowded, by_number)
    started = time.monotonic()
    first = page(client, "/?sort=seeders")
    elapsed = time.monotonic() - started
    seeders = [int(s) for s in first.texts("td", "health-seeders")]
    assert seeders[0] == 2002 and seeders == sorted(seeders, reverse=True) and len(seeders) == PAGE_SIZE
    second = [int(s) for s in page(client, "/?sort=seeders&page=2").texts("td", "health-seeders")]
    assert max(second) <= min(seeders)
    assert elapsed < 2.0, f"sorting 2,001 repos by seeders took {elapsed:.2f} s"
    assert page(client, "/?sort=seeders&org=org3").one("count")["text"].strip() == "80 repositories"


class CountingCatalog(Catalog):
    searches = 0

    def search(self, *args: Any, **kwargs: Any) -> tuple[list[Release], int]:
        self.searches += 1
        return super().search(*args, **kwargs)


def test_the_seeders_sort_reuses_its_release_list_but_never_the_health(crowded: Catalog) -> None:
    catalog = CountingCatalog(crowded.path)
    seeders: dict[str, int] = {}
    client = client_for(catalog, lambda r: SwarmHealth(seeders.get(r.repo_id, 0), 0, 0), seeders_ttl=60)
    seeders["org7/model-0007"] = 5
    assert page(client, "/?sort=seeders").texts("a", "repo")[0] == "org7/model-0007"
    assert catalog.searches == 5  # 2,001 repos, 500 at a time
    seeders["org9/model-1234"] = 6
    assert page(client, "/?sort=seeders&page=1").texts("a", "repo")[:2] == ["org9/model-1234", "org7/model-0007"]
    assert catalog.searches == 5
    page(client, "/?sort=seeders&org=org9")  # another filter, another list
    assert catalog.searches == 6
    uncached = client_for(catalog, lambda r: SwarmHealth(0, 0, 0), seeders_ttl=0)
    page(uncached, "/?sort=seeders")
    page(uncached, "/?sort=seeders")
    assert catalog.searches == 16
    catalog.close()


def test_a_repo_with_many_releases_pages_them(crowded: Catalog) -> None:
    health = KnownHealth({})
    client = client_for(crowded, health)
    started = time.monotonic()
    doc = page(client, "/models/busy/repo")
    assert time.monotonic() - started < 1.0
    assert len(doc.texts("a", "commit")) == PAGE_SIZE
    assert len(health.asked) == PAGE_SIZE + 1  # the rows shown and the selected release
    assert doc.one("commit")["text"] == f"{120:040x}"
    third = page(client, f"/models/busy/repo?commit={5:040x}&page=3")
    assert third.one("commit")["text"] == f"{5:040x}"  # the selection survives paging
    assert len(third.texts("a", "commit")) == 20
    assert [" ".join(e["text"].split())[:12] for e in third.select("tr", "selected")] == [f"{5:040x}"[:12]]


# --------------------------------------------------------------------------------------------- browser


def announce_peers(swarms: Swarms, info_hash: str, *, seeders: int, leechers: int, completed: int) -> None:
    """Peers as a tracker hears them: ``completed`` finished downloads, of which ``seeders`` still seed."""
    assert completed >= seeders
    ip, now = ipaddress.ip_address("127.0.0.1"), time.monotonic()
    key = bytes.fromhex(info_hash)[:20]
    for i in range(completed):
        peer = AnnounceRequest(key, b"-SH0100-seed%08d" % i, 6881 + i, 0, 100, 0, event="completed")
        swarms.announce(peer, ip, now)
        if i >= seeders:
            swarms.announce(AnnounceRequest(key, peer.peer_id, peer.port, 0, 100, 0, event="stopped"), ip, now)
    for i in range(leechers):
        swarms.announce(AnnounceRequest(key, b"-SH0100-leec%08d" % i, 7881 + i, 0, 0, 100, event="started"), ip, now)


def standin_app(catalog: Catalog, swarms: Swarms, public_url: str) -> Starlette:
    """The website with the two torrent endpoints it links to, and health from the tracker's counts."""

    def health(release: Release) -> SwarmHealth:
        keys = [bytes.fromhex(h)[:20] for h in (release.info_hash_v1, release.info_hash_v2, release.classic_info_hash)]
        counts = swarms.scrape(keys, time.monotonic()).values()
        return SwarmHealth(*(sum(getattr(c, f) for c in counts) for f in ("complete", "incomplete", "downloaded")))

    async def torrent(request: Request) -> Response:
        p = request.path_params
        classic = request.query_params.get("classic") == "1"
        data = catalog.torrent(p["repo_type"], f"{p['org']}/{p['name']}", p["commit"], classic=classic)
        if data is None:
            return Response("no such release", status_code=404)
        return Response(data, media_type="application/x-bittorrent")

    routes = [Route("/api/releases/{repo_type}/{org}/{name}/{commit}/torrent", torrent)]
    return Starlette(routes=[*routes, *website_routes(catalog, health, public_url=public_url)])


@dataclass
class Site:
    url: str
    swarms: Swarms
    published: Published


@pytest.fixture(scope="module")
def site(published: Published) -> Iterator[Site]:
    sock = bind("127.0.0.1", 0)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    swarms = Swarms(rng=random.Random(0))
    try:
        from swarmhub.registry.server import registry_app
    except ImportError:  # the registry app is not there yet: the website and stand-ins
        app = standin_app(published.catalog, swarms, url)
    else:
        app = registry_app(published.catalog, public_url=url, swarms=swarms)
    for (_, commit), release in published.releases.items():
        announce_peers(swarms, release.info_hash_v1, **asdict(HEALTH[commit]))
    server = UvicornThread("website", [app], [sock])
    server.start()
    yield Site(url, swarms, published)
    server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if CHROMIUM is None:
        pytest.skip("chromium not found (Debian: apt-get install chromium; make system-deps does it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM)
        yield launched
        launched.close()


@pytest.fixture
def tab(browser: Any, site: Site) -> Iterator[Any]:
    context = browser.new_context(
        base_url=site.url, viewport={"width": 1200, "height": 900}, accept_downloads=True, color_scheme="light"
    )
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=site.url)
    tab = context.new_page()
    dialogs: list[str] = []
    tab.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    tab.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    yield tab
    context.close()
    assert dialogs == [], f"a script ran: {dialogs}"
    assert errors == [], f"errors in the page: {errors}"


def test_browser_search_and_sort(tab: Any) -> None:
    tab.goto("/")
    assert tab.locator("a.repo").all_inner_texts() == NEWEST_FIRST
    tab.get_by_role("searchbox").fill("big")
    tab.get_by_role("searchbox").press("Enter")
    tab.wait_for_url("**/?q=big")
    assert tab.locator("a.repo").all_inner_texts() == ["other-org/big-model"]
    tab.get_by_role("searchbox").fill("org/")
    tab.get_by_role("button", name="Search").click()
    tab.locator("a.sort", has_text="size").click()
    tab.wait_for_url("**/?q=org%2F&sort=size")
    assert tab.locator("a.repo").all_inner_texts() == BY_SIZE
    tab.locator("a.sort", has_text="seeders").click()
    assert tab.locator("a.repo").all_inner_texts() == BY_SEEDERS
    assert tab.locator("td.health-seeders").all_inner_texts() == ["9", "3", "1", "0"]


def test_browser_model_page_links_resolve(tab: Any, site: Site, tmp_path: Path) -> None:
    release = site.published.release("org/name", NEW)
    tab.goto("/")
    tab.get_by_role("link", name="org/name", exact=True).click()
    tab.wait_for_url("**/models/org/name")
    assert tab.locator("h1").inner_text() == "org/name"
    assert [tab.locator(f"#{k}").inner_text() for k in ("seeders", "leechers", "completed")] == ["3", "2", "7"]
    assert tab.locator("td.path").all_inner_texts() == [f.path for f in release.files]

    magnet = parse_magnet(tab.locator("#magnet").get_attribute("href"))
    assert (magnet.info_hash_v1, magnet.info_hash_v2) == (release.info_hash_v1, release.info_hash_v2)
    assert magnet.trackers == (f"{site.url}/announce",)
    assert magnet.webseeds == (f"{site.url}/webseed/model/org/name/{NEW}/",)

    for link, expected in (("#torrent-hybrid", release.info_hash_v1), ("#torrent-classic", release.classic_info_hash)):
        with tab.expect_download() as download:
            tab.locator(link).click()
        saved = tmp_path / f"{link[1:]}.torrent"
        download.value.save_as(saved)
        torrent = parse_torrent(saved.read_bytes())
        assert torrent.info_hash_v1 == expected
        assert torrent.repo is not None and torrent.repo.commit == NEW
    assert parse_torrent((tmp_path / "torrent-hybrid.torrent").read_bytes()).info_hash_v2 == release.info_hash_v2

    tab.screenshot(path=str(tmp_path / "website.png"), full_page=True)
    assert (tmp_path / "website.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("SWARMHUB_UPDATE_SCREENSHOT"):  # README's picture: refreshed on demand, not by every run
        SCREENSHOT.parent.mkdir(exist_ok=True)
        shutil.copyfile(tmp_path / "website.png", SCREENSHOT)


def test_browser_older_release_and_copy_button(tab: Any) -> None:
    tab.goto("/models/org/name")
    tab.locator("table.releases a.commit", has_text=OLD[:12]).click()
    tab.wait_for_url(f"**/models/org/name?commit={OLD}")
    assert tab.locator("#pull-command").inner_text() == f"swarmhub pull org/name@{OLD}"
    assert [tab.locator(f"#{k}").inner_text() for k in ("seeders", "leechers", "completed")] == ["1", "0", "4"]
    copy = tab.locator("button[data-copy=pull-command]")
    copy.click()
    assert tab.evaluate("navigator.clipboard.readText()") == f"swarmhub pull org/name@{OLD}"
    assert copy.inner_text() == "Copied"


def test_browser_health_is_live(tab: Any, site: Site) -> None:
    """A seeder that joins shows on the next page load, and is gone once it says ``stopped``."""
    release = site.published.release("other-org/big-model")
    key, ip = bytes.fromhex(release.classic_info_hash), ipaddress.ip_address("127.0.0.1")
    joining = AnnounceRequest(key, b"-TR3000-late-seeder1", 51413, 0, 0, 0, event="started")  # a Transmission seed
    tab.goto("/models/other-org/big-model")
    assert tab.locator("#seeders").inner_text() == "9"
    site.swarms.announce(joining, ip, time.monotonic())
    try:
        tab.reload()
        assert tab.locator("#seeders").inner_text() == "10"
        assert tab.locator("#completed").inner_text() == "12"
    finally:
        site.swarms.announce(replace(joining, event="stopped"), ip, time.monotonic())
    tab.reload()
    assert tab.locator("#seeders").inner_text() == "9"


def test_browser_without_javascript(browser: Any, site: Site) -> None:
    context = browser.new_context(base_url=site.url, java_script_enabled=False)
    tab = context.new_page()
    tab.goto("/")
    tab.get_by_role("searchbox").fill("small")
    tab.get_by_role("searchbox").press("Enter")
    tab.wait_for_url("**/?q=small")
    tab.get_by_role("link", name="org/small-data").click()
    tab.wait_for_url("**/datasets/org/small-data")
    assert tab.locator("#pull-command").inner_text() == "swarmhub pull --repo-type dataset org/small-data"
    assert tab.locator("button[data-copy]").first.is_hidden()  # nothing that cannot work
    assert [tab.locator(f"#{k}").inner_text() for k in ("seeders", "leechers", "completed")] == ["0", "5", "0"]
    context.close()


def test_browser_hostile_names_stay_text(tab: Any) -> None:
    tab.goto("/models/evil-org/escapes")
    assert sorted(tab.locator("td.path").all_inner_texts()) == sorted(HOSTILE_PATHS)
    assert HOSTILE_PUBLISHER in tab.locator("dl.facts").inner_text()
    tab.goto("/?q=" + "%3Cscript%3Ealert(5)%3C%2Fscript%3E")
    assert tab.get_by_role("searchbox").input_value() == "<script>alert(5)</script>"


def test_a_release_of_many_files_lists_them_a_thousand_a_page(tmp_path: Path) -> None:
    """A dataset of 2,500 files (issue 16: releases of 100,000 files): the page shows 1,000 of them, with
    links to the others, not one table of every file."""
    folder = tmp_path / "many"
    write_layout(folder, {f"data/part-{i // 500:02d}/rows-{i:05d}.jsonl": 20 + i % 7 for i in range(2500)})
    pair = create_pair(folder, "org/many-files", "dataset", "5" * 40)
    catalog = Catalog(tmp_path / "catalog.db")
    try:
        catalog.publish(pair.hybrid, pair.classic, by="ci-publisher", verified=True)
        http = client_for(catalog, KnownHealth({}))
        first = http.get("/datasets/org/many-files")
        last = http.get("/datasets/org/many-files?files=3")
        past = http.get("/datasets/org/many-files?files=4")
    finally:
        catalog.close()
    assert first.status_code == 200 and last.status_code == 200
    assert first.text.count('<td class="path">') == 1000 and "Files 1–1000 of 2500" in first.text
    assert "data/part-00/rows-00000.jsonl" in first.text and "rows-01000.jsonl" not in first.text
    assert 'href="/datasets/org/many-files?files=2#files"' in first.text
    assert last.text.count('<td class="path">') == 500 and "data/part-04/rows-02499.jsonl" in last.text
    assert past.status_code == 404 and "past the last (3)" in past.text
