"""Every error swarmhub raises on purpose, in one place.

The tree::

    SwarmhubError                     base; ``exit_code`` for the CLI, ``hint`` tells the user what to do
    ├── UsageError                    bad command-line input (exit 2)
    ├── ConfigError                   a setting or environment variable has a bad value (exit 2)
    ├── BencodeError (ValueError)     bytes that are not valid bencode (exit 2)
    ├── MetainfoError (ValueError)    valid bencode, but not a torrent we accept: bad paths, sizes, hashes (exit 2)
    ├── MagnetError (ValueError)      a magnet URI we cannot read (exit 2)
    ├── TrackerRequestError (ValueError)  an announce or scrape query we refuse (sent back as ``failure reason``)
    ├── OriginError                   talking to a Hub-compatible origin failed
    │   ├── OriginUnavailable         network errors, resets, 5xx/429 that outlived our retries
    │   ├── RepoNotFound (FileNotFoundError)       404 on a repo (or 401 on a private one without a token)
    │   ├── RevisionNotFound (FileNotFoundError)   the repo exists, the revision does not
    │   ├── EntryNotFound (FileNotFoundError)      the revision exists, the file does not
    │   ├── GatedRepoError (PermissionError)       401/403 on a gated or private repo
    │   └── OriginProtocolError       the origin answered something no Hub would (bad JSON, wrong range)
    ├── IntegrityError                bytes do not match the hash they must have (a file's etag, a piece)
    │   └── TorrentMismatch           a torrent's files are not what the upstream lists for its commit (exit 2)
    ├── LocalSourceError              a --from-dir folder is missing files or holds unreadable ones
    ├── StorageError                  writing or moving downloaded bytes failed (disk full, permissions)
    ├── StalledError                  a download made no progress: no peer and no origin gave a byte
    ├── ClusterError                  a coordinator refused a report or preheat, or cannot be reached
    └── ShardError                    a shard cannot be split, found, fetched, verified, loaded or computed on

Errors carry structured attributes (``repo_id``, ``path``, ``status``) so callers need not parse messages.
Foreign exceptions (httpx, OSError, libtorrent) are translated where they enter: ``raise Ours(...) from exc``.
"""

from __future__ import annotations

__all__ = [
    "BencodeError",
    "ClusterError",
    "ConfigError",
    "EntryNotFound",
    "GatedRepoError",
    "IntegrityError",
    "LocalSourceError",
    "MagnetError",
    "MetainfoError",
    "OriginError",
    "OriginProtocolError",
    "OriginUnavailable",
    "RepoNotFound",
    "RevisionNotFound",
    "ShardError",
    "StalledError",
    "StorageError",
    "SwarmhubError",
    "TorrentMismatch",
    "TrackerRequestError",
    "UsageError",
]


class SwarmhubError(Exception):
    """Base of every error swarmhub raises on purpose."""

    exit_code: int = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UsageError(SwarmhubError):
    exit_code = 2


class ConfigError(SwarmhubError):
    exit_code = 2


class BencodeError(SwarmhubError, ValueError):
    """Input is not valid bencode. ``offset`` is where decoding stopped."""

    exit_code = 2

    def __init__(self, message: str, *, offset: int | None = None) -> None:
        where = f" at byte {offset}" if offset is not None else ""
        super().__init__(f"invalid bencode{where}: {message}")
        self.offset = offset


class MetainfoError(SwarmhubError, ValueError):
    """Valid bencode that is not a torrent we accept."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(f"invalid torrent: {message}")


class MagnetError(SwarmhubError, ValueError):
    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(f"invalid magnet URI: {message}")


class TrackerRequestError(SwarmhubError, ValueError):
    """An announce or scrape query the tracker refuses. ``field`` names the query parameter at fault.

    The message is one line: the tracker sends it back as the bencoded ``failure reason`` (BEP 3).
    """

    exit_code = 2

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class OriginError(SwarmhubError):
    """Talking to a Hub-compatible origin failed."""

    def __init__(
        self,
        message: str,
        *,
        url: str | None = None,
        status: int | None = None,
        repo_id: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.url = url
        self.status = status
        self.repo_id = repo_id


class OriginUnavailable(OriginError):
    pass


class RepoNotFound(OriginError, FileNotFoundError):
    pass


class RevisionNotFound(OriginError, FileNotFoundError):
    pass


class EntryNotFound(OriginError, FileNotFoundError):
    pass


class GatedRepoError(OriginError, PermissionError):
    pass


class OriginProtocolError(OriginError):
    pass


class IntegrityError(SwarmhubError):
    """Bytes do not hash to what they must (a file's etag, a piece hash)."""

    def __init__(self, message: str, *, path: str | None = None, expected: str = "", actual: str = "") -> None:
        super().__init__(message)
        self.path = path
        self.expected = expected
        self.actual = actual


class TorrentMismatch(IntegrityError):
    """A torrent naming ``repo@commit`` whose file list the upstream's tree for that commit contradicts: it is
    not that release, whoever handed it over. The message names the first differing file."""

    exit_code = 2

    def __init__(self, message: str, *, repo_id: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.repo_id = repo_id
        self.hint = hint


class LocalSourceError(SwarmhubError):
    exit_code = 2

    def __init__(self, message: str, *, path: str | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.path = path


class StorageError(SwarmhubError):
    """Downloaded bytes could not be written or moved; what was verified stays, nothing half-made is visible."""


class StalledError(SwarmhubError):
    """No progress for too long; the message says what was tried (peers, trackers, the origin)."""


class ClusterError(SwarmhubError):
    """A coordinator refused a node's report or a preheat (bad input, no such node), or could not be reached."""


class ShardError(SwarmhubError):
    """A shard (a file of a split model) cannot be split, found, fetched from peers, verified, loaded or used.

    ``shard_id`` names it when there is one; the message says what was tried (peers, trackers, hashes).
    """

    def __init__(self, message: str, *, shard_id: str | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.shard_id = shard_id
