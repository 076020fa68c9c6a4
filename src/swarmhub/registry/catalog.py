"""The registry's catalog: releases and their two torrents, publishing tokens, follows, in one SQLite file.

A release spanning several torrents (``bt.metainfo``'s parts) keeps its two part 0s in its row (what every
reader of "the release's torrent" gets, and what authenticates the others) and its other parts in
``release_parts``; the row's files and sizes are the whole release's.

One file, WAL mode (readers never wait for the writer), versioned migrations (``PRAGMA user_version``), one
writer at a time (a lock around every write). A release is (repo type, repo id, commit) -> the hybrid torrent
(libtorrent-based clients, our nodes) and the classic v1 torrent (Transmission 3, aria2), both of the same
files. Publishing the same release again is a no-op; a new commit is a new release; old releases stay.

A release is stored verified (its file list was compared with the upstream's tree, ``registry.verify``) or
unverified (the upstream could not be asked). The rules of replacing one, all here:

- the same torrents again: nothing changes, except that a verified publish marks an unverified release verified;
- other torrents, the stored release unverified, the new one verified: the new one replaces it (a squatter's
  torrent, stored while the upstream was down, cannot keep the upstream's release out);
- other torrents otherwise: refused (409). A verified release is never replaced.

Tokens are stored as SHA-256 digests only: the catalog can check a token, never show one. A token may be scoped
to orgs (``orgs``, lowercase, comma-separated; NULL: any org): it publishes only repos of those orgs.

Follows are repos (a branch of each) the follower publishes by itself, or orgs: an org's repos are those its
last listing gave (``org_repos``), each with the outcome of its own last check.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from swarmhub.errors import SwarmhubError, UsageError
from swarmhub.hub.repo import RepoRef, RepoType, validate_repo_id
from swarmhub.registry.pair import PublishRefused, TorrentPair

__all__ = [
    "FOLLOWER",
    "Catalog",
    "Follow",
    "FollowKind",
    "FollowedRepo",
    "PartHashes",
    "PublishRefused",
    "Publisher",
    "Release",
    "ReleaseFile",
    "ReleaseKey",
    "Sort",
    "TorrentPair",
    "part_tracker_hashes",
]

Sort = Literal["newest", "name", "size"]
ReleaseKey = tuple[str, str, str]  # (repo type, repo id, commit)

MIGRATIONS: tuple[str, ...] = (
    # 1: releases and tokens
    """
    CREATE TABLE releases (
        id INTEGER PRIMARY KEY,
        repo_type TEXT NOT NULL,
        repo_id TEXT NOT NULL,
        org TEXT NOT NULL,
        commit_sha TEXT NOT NULL,
        published_at REAL NOT NULL,
        published_by TEXT NOT NULL,
        total_size INTEGER NOT NULL,
        num_files INTEGER NOT NULL,
        files_json TEXT NOT NULL,
        name TEXT NOT NULL,
        info_hash_v1 TEXT NOT NULL,
        info_hash_v2 TEXT NOT NULL,
        torrent BLOB NOT NULL,
        classic_info_hash TEXT NOT NULL,
        classic_torrent BLOB NOT NULL,
        UNIQUE (repo_type, repo_id, commit_sha)
    );
    CREATE INDEX releases_repo ON releases (repo_type, repo_id, published_at);
    CREATE INDEX releases_v1 ON releases (info_hash_v1);
    CREATE INDEX releases_v2 ON releases (info_hash_v2);
    CREATE INDEX releases_classic ON releases (classic_info_hash);
    CREATE TABLE tokens (
        name TEXT PRIMARY KEY,
        digest TEXT NOT NULL UNIQUE,
        created_at REAL NOT NULL
    );
    """,
    # 2: repos the registry follows (publishes every new commit of a branch)
    """
    CREATE TABLE follows (
        repo_type TEXT NOT NULL,
        repo_id TEXT NOT NULL,
        branch TEXT NOT NULL,
        added_at REAL NOT NULL,
        checked_at REAL,
        last_commit TEXT,
        last_error TEXT,
        PRIMARY KEY (repo_type, repo_id, branch)
    );
    """,
    # 3: following an org (kind 'org', repo_id is then the org's name) and the repos its listing gave
    """
    ALTER TABLE follows ADD COLUMN kind TEXT NOT NULL DEFAULT 'repo';
    CREATE TABLE org_repos (
        repo_type TEXT NOT NULL,
        org TEXT NOT NULL,
        branch TEXT NOT NULL,
        repo_id TEXT NOT NULL,
        checked_at REAL,
        last_commit TEXT,
        last_error TEXT,
        PRIMARY KEY (repo_type, org, branch, repo_id)
    );
    """,
    # 4: each repo's latest release flagged (kept by publish), so listing the latest of every repo reads one
    # partial index instead of running a subquery per release (10k repos x 3 releases: 50-130 ms -> ~1 ms)
    """
    ALTER TABLE releases ADD COLUMN latest INTEGER NOT NULL DEFAULT 0;
    UPDATE releases SET latest = 1 WHERE id IN (
        SELECT id FROM (
            SELECT id, row_number() OVER (
                PARTITION BY repo_type, repo_id ORDER BY published_at DESC, id DESC
            ) AS n FROM releases
        ) WHERE n = 1
    );
    CREATE INDEX releases_latest_newest ON releases (published_at DESC, id DESC) WHERE latest = 1;
    CREATE INDEX releases_latest ON releases (repo_id, repo_type, org) WHERE latest = 1;
    CREATE INDEX releases_latest_size ON releases (total_size DESC, id DESC) WHERE latest = 1;
    CREATE INDEX releases_latest_org ON releases (org, published_at DESC, id DESC) WHERE latest = 1;
    """,
    # 5: whether (and when) a release's file list was verified against the upstream's tree (NULL: unverified;
    # every release stored before is), and the orgs a token may publish (NULL: any)
    """
    ALTER TABLE releases ADD COLUMN verified_at REAL;
    ALTER TABLE tokens ADD COLUMN orgs TEXT;
    """,
    # 6: releases spanning several torrents: how many parts each kind has, and the parts after part 0
    """
    ALTER TABLE releases ADD COLUMN parts INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE releases ADD COLUMN classic_parts INTEGER NOT NULL DEFAULT 1;
    CREATE TABLE release_parts (
        release_id INTEGER NOT NULL REFERENCES releases (id),
        classic INTEGER NOT NULL,
        part INTEGER NOT NULL,
        info_hash_v1 TEXT NOT NULL,
        info_hash_v2 TEXT,
        torrent BLOB NOT NULL,
        PRIMARY KEY (release_id, classic, part)
    );
    CREATE INDEX release_parts_v1 ON release_parts (info_hash_v1);
    CREATE INDEX release_parts_v2 ON release_parts (info_hash_v2);
    """,
)

MAX_OFFSET = 2**62  # SQLite's integers are 64-bit: a larger OFFSET is an OverflowError, not an empty page
FOLLOWER = "follower"  # who the follower's releases are published by; no token may take the name


@dataclass(frozen=True)
class Publisher:
    """Who a publishing token belongs to, and the orgs it may publish (None: any; else lowercase names)."""

    name: str
    orgs: frozenset[str] | None = None

    def may_publish(self, repo_id: str) -> bool:
        return self.orgs is None or repo_id.split("/")[0].lower() in self.orgs


FollowKind = Literal["repo", "org"]


@dataclass(frozen=True)
class FollowedRepo:
    """A repo an org follow's listing gave, with the outcome of its last check."""

    repo_id: str
    checked_at: float | None
    last_commit: str | None
    last_error: str | None


@dataclass(frozen=True)
class Follow:
    """A followed repo, or a followed org (every repo the upstream lists for it): ``kind`` says which.

    For an org, ``repo_id`` is the org's name, ``last_error`` the last listing's error, ``last_commit`` None,
    and ``repos`` what the last listing gave (each with its own check); for a repo, ``repos`` is empty.
    """

    repo_type: RepoType
    repo_id: str
    branch: str
    checked_at: float | None
    last_commit: str | None
    last_error: str | None
    kind: FollowKind = "repo"
    repos: tuple[FollowedRepo, ...] = ()

    @property
    def is_org(self) -> bool:
        return self.kind == "org"


@dataclass(frozen=True)
class ReleaseFile:
    path: str
    size: int
    etag: str


@dataclass(frozen=True)
class PartHashes:
    """A part after part 0 of a release's hybrid or classic torrents, by its info-hashes (hex)."""

    classic: bool
    part: int
    info_hash_v1: str
    info_hash_v2: str | None


@dataclass(frozen=True)
class Release:
    repo_type: RepoType
    repo_id: str
    commit: str
    published_at: float
    published_by: str
    total_size: int
    files: tuple[ReleaseFile, ...]
    name: str  # the torrents' name (the folder BitTorrent clients download into)
    info_hash_v1: str  # of the hybrid
    info_hash_v2: str
    classic_info_hash: str  # v1 info-hash of the classic torrent
    verified_at: float | None = None  # when its files were found in the upstream's tree; None: unverified
    parts: int = 1  # hybrid torrents the release spans
    classic_parts: int = 1
    other_parts: tuple[PartHashes, ...] = ()  # the parts after each part 0

    @property
    def org(self) -> str:
        return self.repo_id.split("/")[0]

    @property
    def verified(self) -> bool:
        return self.verified_at is not None


_COLUMNS = (
    "repo_type, repo_id, commit_sha, published_at, published_by, total_size, files_json, name, "
    "info_hash_v1, info_hash_v2, classic_info_hash, verified_at, parts, classic_parts, id"
)


def _release(row: sqlite3.Row) -> Release:
    files = tuple(ReleaseFile(f["path"], f["size"], f["etag"]) for f in json.loads(row["files_json"]))
    return Release(
        repo_type=row["repo_type"],
        repo_id=row["repo_id"],
        commit=row["commit_sha"],
        published_at=row["published_at"],
        published_by=row["published_by"],
        total_size=row["total_size"],
        files=files,
        name=row["name"],
        info_hash_v1=row["info_hash_v1"],
        info_hash_v2=row["info_hash_v2"],
        classic_info_hash=row["classic_info_hash"],
        verified_at=row["verified_at"],
        parts=row["parts"],
        classic_parts=row["classic_parts"],
    )


# Ties broken so that paging never repeats or skips a release (and the latest-only indexes give the order).
_ORDERS: dict[Sort, str] = {
    "newest": "published_at DESC, id DESC",
    "name": "repo_id ASC, repo_type ASC",
    "size": "total_size DESC, id DESC",
}


def _flag_latest(db: sqlite3.Connection, repo_type: str, repo_id: str) -> None:
    """Flag the repo's latest release (newest ``published_at``, then the last stored), as ``latest()`` picks it."""
    db.execute(
        "UPDATE releases SET latest = (id = (SELECT id FROM releases WHERE repo_type = ? AND repo_id = ? "
        "ORDER BY published_at DESC, id DESC LIMIT 1)) WHERE repo_type = ? AND repo_id = ?",
        (repo_type, repo_id, repo_type, repo_id),
    )


_KEY = "repo_type = ? AND repo_id = ? AND commit_sha = ?"
_TORRENT_COLUMNS = (
    "total_size, num_files, files_json, name, info_hash_v1, info_hash_v2, torrent, classic_info_hash, "
    "classic_torrent, parts, classic_parts"
)


def _key(ref: RepoRef) -> tuple[str, str, str]:
    return ref.repo_type, ref.repo_id, ref.commit


def _torrent_values(pair: TorrentPair) -> tuple[object, ...]:
    """The values of ``_TORRENT_COLUMNS`` for a pair, in that order."""
    h, c = pair.parsed_hybrid, pair.parsed_classic
    files = [{"path": f.path, "size": f.size, "etag": f.etag} for f in pair.files]
    return (
        sum(f.size for f in pair.files),
        len(files),
        json.dumps(files),
        h.name,
        h.info_hash_v1,
        h.info_hash_v2,
        pair.hybrid,
        c.info_hash_v1,
        pair.classic,
        1 + len(pair.hybrid_parts),
        1 + len(pair.classic_parts),
    )


def _store_parts(db: sqlite3.Connection, ref: RepoRef, pair: TorrentPair) -> None:
    """The release's parts after its part 0s, replacing any stored before."""
    (release_id,) = db.execute(f"SELECT id FROM releases WHERE {_KEY}", _key(ref)).fetchone()
    db.execute("DELETE FROM release_parts WHERE release_id = ?", (release_id,))
    db.executemany(
        "INSERT INTO release_parts (release_id, classic, part, info_hash_v1, info_hash_v2, torrent) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        [
            (release_id, classic, i, t.info_hash_v1, t.info_hash_v2, data)
            for classic, parts in ((0, pair.hybrid_parts), (1, pair.classic_parts))
            for i, (data, t) in enumerate(parts, 1)
        ],
    )


def _storing(
    existing: Release | None, pair: TorrentPair, verified: bool
) -> Literal["insert", "keep", "verify", "replace"]:
    """What publishing ``pair`` does to the release stored for its commit (the module docstring's rules)."""
    if existing is None:
        return "insert"
    h, c = pair.parsed_hybrid, pair.parsed_classic
    if (existing.info_hash_v2, existing.classic_info_hash) == (h.info_hash_v2, c.info_hash_v1):
        return "verify" if verified and not existing.verified else "keep"
    if verified and not existing.verified:
        return "replace"
    ref = pair.repo
    rule = (
        "a verified release is never replaced"
        if existing.verified
        else "only torrents the registry verifies against its upstream replace it"
    )
    raise PublishRefused(
        f"{ref.repo_id}@{ref.commit[:12]} is published with other torrents "
        f"({'verified' if existing.verified else 'unverified'}, v2 {existing.info_hash_v2[:16]}...): {rule}",
        status=409,
    )


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Catalog:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._lock = threading.RLock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=5000")
            self._migrate()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _migrate(self) -> None:
        version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
        if version > len(MIGRATIONS):
            raise SwarmhubError(
                f"{self.path} was made by a newer swarmhub (schema {version}, this one knows {len(MIGRATIONS)})",
                hint="upgrade swarmhub, or point --db at another file",
            )
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            with self._write() as db:
                for statement in script.split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute(f"PRAGMA user_version = {number}")

    @property
    def schema_version(self) -> int:
        with self._lock:
            return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    # ------------------------------------------------------------------------------------------- tokens

    def create_token(self, name: str, orgs: Iterable[str] = ()) -> str:
        """A new publishing token named ``name``, for repos of ``orgs`` only (none given: any org)."""
        if not name or len(name) > 100 or not name.isprintable():
            raise UsageError(f"{name!r} is not a token name (1-100 printable characters)")
        if name == FOLLOWER:
            raise UsageError(f"{FOLLOWER!r} names the registry's own follower", hint="pick another name")
        scope = sorted({org.lower() for org in orgs})
        for org in scope:
            if "/" in org:
                raise UsageError(f"{org!r} is not an org (an org has no slash)", hint="e.g. --org openai-community")
            validate_repo_id(org)
        token = "swh_" + secrets.token_urlsafe(32)
        try:
            with self._write() as db:
                db.execute(
                    "INSERT INTO tokens (name, digest, created_at, orgs) VALUES (?, ?, ?, ?)",
                    (name, _digest(token), time.time(), ",".join(scope) or None),
                )
        except sqlite3.IntegrityError:
            raise UsageError(f"a token named {name!r} exists", hint="pick another name") from None
        return token

    def publisher(self, token: str) -> Publisher | None:
        """Whose token this is (and its scope), or None for no such token."""
        with self._lock:
            row = self._db.execute("SELECT name, orgs FROM tokens WHERE digest = ?", (_digest(token),)).fetchone()
        if row is None:
            return None
        return Publisher(str(row["name"]), frozenset(row["orgs"].split(",")) if row["orgs"] else None)

    # ------------------------------------------------------------------------------------------ follows

    def follow(self, repo_type: RepoType, repo_id: str, branch: str = "main", *, kind: FollowKind = "repo") -> bool:
        """Follow a repo's branch, or (``kind="org"``, ``repo_id`` an org) that branch of each of the org's
        repos (idempotent); True when it is new."""
        with self._write() as db:
            cursor = db.execute(
                "INSERT OR IGNORE INTO follows (repo_type, repo_id, branch, added_at, kind) VALUES (?, ?, ?, ?, ?)",
                (repo_type, repo_id, branch, time.time(), kind),
            )
            return cursor.rowcount == 1

    def follows(self) -> list[Follow]:
        with self._lock:
            rows = self._db.execute(
                "SELECT repo_type, repo_id, branch, checked_at, last_commit, last_error, kind FROM follows "
                "ORDER BY added_at"
            ).fetchall()
            listed = self._db.execute(
                "SELECT repo_type, org, branch, repo_id, checked_at, last_commit, last_error FROM org_repos "
                "ORDER BY repo_id"
            ).fetchall()
        repos: dict[tuple[str, str, str], list[FollowedRepo]] = {}
        for r in listed:
            repos.setdefault((r[0], r[1], r[2]), []).append(FollowedRepo(r[3], r[4], r[5], r[6]))
        return [
            Follow(
                repo_type=row["repo_type"],
                repo_id=row["repo_id"],
                branch=row["branch"],
                checked_at=row["checked_at"],
                last_commit=row["last_commit"],
                last_error=row["last_error"],
                kind=row["kind"],
                repos=tuple(repos.get((row["repo_type"], row["repo_id"], row["branch"]), ())),
            )
            for row in rows
        ]

    def record_check(self, follow: Follow, commit: str | None, error: str | None) -> None:
        """The outcome of checking a followed repo (its commit, or an error), or of listing a followed org."""
        with self._write() as db:
            db.execute(
                "UPDATE follows SET checked_at = ?, last_commit = coalesce(?, last_commit), last_error = ? "
                "WHERE repo_type = ? AND repo_id = ? AND branch = ?",
                (time.time(), commit, error, follow.repo_type, follow.repo_id, follow.branch),
            )

    def set_org_repos(self, follow: Follow, repo_ids: Iterable[str]) -> None:
        """An org follow's repos are now those its listing gave: new ones are added, gone ones dropped (their
        releases stay)."""
        key = (follow.repo_type, follow.repo_id, follow.branch)
        wanted = set(repo_ids)
        with self._write() as db:
            known = {
                row[0]
                for row in db.execute(
                    "SELECT repo_id FROM org_repos WHERE repo_type = ? AND org = ? AND branch = ?", key
                ).fetchall()
            }
            db.executemany(
                "DELETE FROM org_repos WHERE repo_type = ? AND org = ? AND branch = ? AND repo_id = ?",
                [(*key, r) for r in known - wanted],
            )
            db.executemany(
                "INSERT INTO org_repos (repo_type, org, branch, repo_id) VALUES (?, ?, ?, ?)",
                [(*key, r) for r in sorted(wanted - known)],
            )

    def record_org_repo(self, follow: Follow, repo_id: str, commit: str | None, error: str | None) -> None:
        """The outcome of checking one repo of a followed org."""
        with self._write() as db:
            db.execute(
                "UPDATE org_repos SET checked_at = ?, last_commit = coalesce(?, last_commit), last_error = ? "
                "WHERE repo_type = ? AND org = ? AND branch = ? AND repo_id = ?",
                (time.time(), commit, error, follow.repo_type, follow.repo_id, follow.branch, repo_id),
            )

    # ----------------------------------------------------------------------------------------- releases

    def publish(self, hybrid: bytes, classic: bytes, by: str, *, verified: bool = False) -> tuple[Release, bool]:
        """Store a release (see the module's docstring for what replaces what); returns it and whether the
        catalog took torrents it did not hold (a new release, or one replacing an unverified release)."""
        return self.store(TorrentPair.parse(hybrid, classic), by, verified=verified)

    def store(self, pair: TorrentPair, by: str, *, verified: bool = False) -> tuple[Release, bool]:
        """``publish`` for a pair parsed already."""
        ref, now = pair.repo, time.time()
        with self._write() as db:
            existing = self.get(ref.repo_type, ref.repo_id, ref.commit)
            action = _storing(existing, pair, verified)
            if action == "insert":
                values: tuple[object, ...] = (*_key(ref), ref.repo_id.split("/")[0], now, by, now if verified else None)
                values += _torrent_values(pair)
                db.execute(
                    "INSERT INTO releases (repo_type, repo_id, commit_sha, org, published_at, published_by, "
                    f"verified_at, {_TORRENT_COLUMNS}) VALUES ({', '.join('?' * len(values))})",
                    values,
                )
                _store_parts(db, ref, pair)
                _flag_latest(db, ref.repo_type, ref.repo_id)
            elif action == "verify":
                db.execute(f"UPDATE releases SET verified_at = ? WHERE {_KEY}", (now, *_key(ref)))
            elif action == "replace":  # published_at stays: the release keeps its place among the repo's
                assignments = ", ".join(f"{column} = ?" for column in _TORRENT_COLUMNS.split(", "))
                db.execute(
                    f"UPDATE releases SET published_by = ?, verified_at = ?, {assignments} WHERE {_KEY}",
                    (by, now, *_torrent_values(pair), *_key(ref)),
                )
                _store_parts(db, ref, pair)
        release = self.get(ref.repo_type, ref.repo_id, ref.commit)
        assert release is not None
        return release, action in ("insert", "replace")

    def mark_verified(self, release: Release) -> None:
        """The upstream's tree agrees with a stored release's files (its torrents unchanged since it was read)."""
        with self._write() as db:
            db.execute(
                f"UPDATE releases SET verified_at = coalesce(verified_at, ?) WHERE {_KEY} AND info_hash_v2 = ?",
                (time.time(), release.repo_type, release.repo_id, release.commit, release.info_hash_v2),
            )

    def _one(self, where: str, *args: object) -> Release | None:
        with self._lock:
            row = self._db.execute(f"SELECT {_COLUMNS} FROM releases WHERE {where} LIMIT 1", args).fetchone()
        return None if row is None else self._releases([row])[0]

    def _releases(self, rows: list[sqlite3.Row]) -> list[Release]:
        """Rows as releases, with the parts of those that span several torrents (one query for them all)."""
        releases = [_release(row) for row in rows]
        spanning = {row["id"]: i for i, row in enumerate(rows) if row["parts"] > 1 or row["classic_parts"] > 1}
        if not spanning:
            return releases
        found: dict[int, list[PartHashes]] = {}
        with self._lock:
            for release_id, classic, part, v1, v2 in self._db.execute(
                "SELECT release_id, classic, part, info_hash_v1, info_hash_v2 FROM release_parts WHERE release_id "
                f"IN ({', '.join('?' * len(spanning))}) ORDER BY release_id, classic, part",
                list(spanning),
            ):
                found.setdefault(release_id, []).append(PartHashes(bool(classic), part, v1, v2))
        for release_id, i in spanning.items():
            releases[i] = dataclasses.replace(releases[i], other_parts=tuple(found.get(release_id, ())))
        return releases

    def get(self, repo_type: RepoType, repo_id: str, commit: str) -> Release | None:
        return self._one("repo_type = ? AND repo_id = ? AND commit_sha = ?", repo_type, repo_id, commit)

    def find_commit(self, repo_type: RepoType, repo_id: str, prefix: str) -> Release | None:
        """A release by its commit or an abbreviation of it (newest first if several match)."""
        return self._one(
            "repo_type = ? AND repo_id = ? AND substr(commit_sha, 1, ?) = ? ORDER BY published_at DESC",
            repo_type,
            repo_id,
            len(prefix),
            prefix,
        )

    def latest(self, repo_type: RepoType, repo_id: str) -> Release | None:
        return self._one("repo_type = ? AND repo_id = ? ORDER BY published_at DESC, id DESC", repo_type, repo_id)

    def by_info_hash(self, info_hash: str) -> Release | None:
        """By the hybrid's v1 or v2 info-hash (v2 also truncated to 40 hex, as BEP 52 trackers see it), or
        the classic torrent's."""
        h = info_hash.lower()
        if len(h) == 64:
            found = self._one("info_hash_v2 = ?", h)
            of_part = "info_hash_v2 = ?"
        else:
            found = self._one("info_hash_v1 = ? OR classic_info_hash = ? OR substr(info_hash_v2, 1, 40) = ?", h, h, h)
            of_part = "info_hash_v1 = ? OR substr(info_hash_v2, 1, 40) = ?"
        if found is not None:
            return found
        with self._lock:
            row = self._db.execute(
                f"SELECT release_id FROM release_parts WHERE {of_part} LIMIT 1", (h,) * of_part.count("?")
            ).fetchone()
        return None if row is None else self._one("id = ?", row[0])

    def torrent(
        self, repo_type: RepoType, repo_id: str, commit: str, *, classic: bool = False, part: int = 0
    ) -> bytes | None:
        """A torrent of the release: the hybrid (or classic) part 0, or a later part; None if there is none."""
        with self._lock:
            if part:
                row = self._db.execute(
                    "SELECT p.torrent FROM release_parts p JOIN releases r ON r.id = p.release_id WHERE "
                    "r.repo_type = ? AND r.repo_id = ? AND r.commit_sha = ? AND p.classic = ? AND p.part = ?",
                    (repo_type, repo_id, commit, int(classic), part),
                ).fetchone()
            else:
                row = self._db.execute(
                    f"SELECT {'classic_torrent' if classic else 'torrent'} FROM releases WHERE {_KEY}",
                    (repo_type, repo_id, commit),
                ).fetchone()
        return None if row is None else bytes(row[0])

    def search(
        self,
        text: str = "",
        *,
        org: str | None = None,
        repo_type: RepoType | None = None,
        sort: Sort = "newest",
        limit: int = 50,
        offset: int = 0,
        latest_only: bool = True,
    ) -> tuple[list[Release], int]:
        """Releases matching ``text`` (in the repo id) and filters; with the total count for paging."""
        where: list[str] = []
        args: list[object] = []
        if text:
            where.append("repo_id LIKE ? ESCAPE '\\'")
            args.append("%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%")
        if org:
            where.append("org = ?")
            args.append(org)
        if repo_type:
            where.append("repo_type = ?")
            args.append(repo_type)
        if latest_only:
            # Filtering reads ``releases_latest`` alone: it holds every column a filter tests. Left to itself,
            # SQLite counts through the smallest partial index and looks each row up to test the filters
            # (10k repos: 15-50 ms instead of 2). A text match picks the rows the same way, then sorts them.
            matching = " AND ".join(["latest = 1", *where])
            counted = f"SELECT count(*) FROM releases INDEXED BY releases_latest WHERE {matching}"
            chosen = (
                f"id IN (SELECT id FROM releases INDEXED BY releases_latest WHERE {matching})" if text else matching
            )
        else:
            chosen = " AND ".join(where) or "1 = 1"
            counted = f"SELECT count(*) FROM releases WHERE {chosen}"
        with self._lock:
            total = int(self._db.execute(counted, args).fetchone()[0])
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM releases WHERE {chosen} ORDER BY {_ORDERS[sort]} LIMIT ? OFFSET ?",
                [*args, max(0, min(limit, 500)), max(0, min(offset, MAX_OFFSET))],
            ).fetchall()
        return self._releases(rows), total

    def releases_of(self, repo_type: RepoType, repo_id: str) -> list[Release]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM releases WHERE repo_type = ? AND repo_id = ? ORDER BY published_at DESC",
                (repo_type, repo_id),
            ).fetchall()
        return self._releases(rows)

    def info_hashes(self) -> dict[ReleaseKey, tuple[bytes, ...]]:
        """Every release's info-hashes as trackers see them (20 bytes: the hybrid's v1, its v2 truncated, the
        classic's, then those of its other parts)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, repo_type, repo_id, commit_sha, info_hash_v1, info_hash_v2, classic_info_hash FROM releases"
            ).fetchall()
            parts: dict[int, list[bytes]] = {}
            for release_id, v1, v2 in self._db.execute(
                "SELECT release_id, info_hash_v1, info_hash_v2 FROM release_parts"
            ):
                parts.setdefault(release_id, []).extend(part_tracker_hashes(v1, v2))
        return {
            (kind, repo_id, commit): (
                bytes.fromhex(v1),
                bytes.fromhex(v2)[:20],
                bytes.fromhex(classic),
                *parts.get(release_id, ()),
            )
            for release_id, kind, repo_id, commit, v1, v2, classic in rows
        }


def part_tracker_hashes(v1: str, v2: str | None) -> tuple[bytes, ...]:
    """A part's info-hashes as trackers see them (20 bytes: v1, and v2 truncated for a hybrid part)."""
    return (bytes.fromhex(v1),) if v2 is None else (bytes.fromhex(v1), bytes.fromhex(v2)[:20])
