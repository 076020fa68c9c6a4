"""Web-seed URLs of the gateway, and which file of which release a request names, without I/O.

A published torrent carries ``{public_url}/webseed/{repo_type}/{repo_id}/{commit}/`` in its ``url-list``.
BEP 19: for a multi-file torrent a client asks for that URL + torrent name + ``/`` + file path, each part
percent-escaped; so below ``/webseed/`` the gateway sees (decoded once, as every server does)::

    {repo_type}/{org}/{name}/{commit}/{torrent name}/{file path}     repo id "org/name"
    {repo_type}/{name}/{commit}/{torrent name}/{file path}           repo id "name"

Only files of published releases are answered, so the check that matters is membership: the file path must
be one of the torrent's files exactly, or a BEP 47 pad path ``.pad/N`` (0 < N <= piece size) that
Transmission and aria2 ask for and that is answered with zeros. Everything else (``..``, ``.``, empty
components from ``//``, absolute paths, backslashes, NUL, another torrent name) is refused before any
upstream request, whatever its encoding: the gateway is not an open proxy.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Final

from swarmhub.bt.metainfo import Torrent, TorrentFile
from swarmhub.errors import UsageError
from swarmhub.hub.repo import COMMIT_RE, RepoRef, RepoType, path_problem, validate_repo_id

__all__ = ["PadFile", "WebseedPath", "find_file", "pad_file", "webseed_candidates", "webseed_url"]

REPO_TYPES: Final[Mapping[str, RepoType]] = {"model": "model", "dataset": "dataset", "space": "space"}


def webseed_url(public_url: str, repo_type: str, repo_id: str, commit: str) -> str:
    """The ``url-list`` entry of a release's torrents; BEP 19 clients append ``name/path``."""
    return f"{public_url.rstrip('/')}/webseed/{repo_type}/{repo_id}/{commit}/"


@dataclass(frozen=True)
class WebseedPath:
    """One reading of a request path: a release, the torrent name asked for, and a file path below it."""

    repo: RepoRef
    name: str
    path: str


@dataclass(frozen=True)
class PadFile:
    """A BEP 47 pad file: ``size`` zero bytes."""

    size: int


def webseed_candidates(path: str) -> Iterator[WebseedPath]:
    """Readings of ``path`` (below ``/webseed/``, decoded), ``org/name`` before a bare name.

    Nothing is yielded for a path that cannot name a file of a release; which reading names a published
    release is for the caller's lookup to say.
    """
    parts = path.split("/")
    repo_type = REPO_TYPES.get(parts[0])
    if repo_type is None:
        return
    for id_parts in (2, 1):
        rest = parts[1 + id_parts :]
        if len(rest) < 3:  # commit, torrent name, at least one component of a file path
            continue
        commit, name, file_path = rest[0], rest[1], "/".join(rest[2:])
        if not COMMIT_RE.match(commit) or path_problem(name) or path_problem(file_path):
            continue
        try:
            repo_id = validate_repo_id("/".join(parts[1 : 1 + id_parts]))
        except UsageError:
            continue
        yield WebseedPath(RepoRef(repo_type, repo_id, commit), name, file_path)


def pad_file(path: str, piece_size: int) -> PadFile | None:
    """``.pad/N`` as libtorrent names BEP 47 pads: N in canonical decimal, 0 < N <= the piece size."""
    folder, _, size = path.partition("/")
    if folder != ".pad" or not size.isascii() or not size.isdigit() or size.startswith("0") or len(size) > 12:
        return None
    n = int(size)
    return PadFile(n) if n <= piece_size else None


def find_file(torrent: Torrent, files: Mapping[str, TorrentFile], wanted: WebseedPath) -> TorrentFile | PadFile | None:
    """The torrent's file (or pad) that ``wanted`` names; ``files`` is the torrent's files by path."""
    if wanted.name != torrent.name:
        return None
    found = files.get(wanted.path)
    return found if found is not None else pad_file(wanted.path, torrent.piece_size)
