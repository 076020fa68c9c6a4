"""Before the registry stores a release it asks the upstream, anonymously, whether the release may be published
and whether it is the upstream's.

The rules, all here:

1. **Public repos only.** Publishing is redistribution: whoever reads the registry gets the files, through its
   peers and its gateway, with no token and no terms accepted. So the upstream is asked with no token, and a
   repo it shows to no one is refused: a private one (401/404 to an anonymous client) or a gated one. The Hub
   lists a gated repo's tree to anyone and refuses only its files, so one file is asked for too (a HEAD on
   ``resolve``, as huggingface_hub does before a download).
2. **The upstream's release.** Every file of the torrent is in the upstream's tree for its commit at the same
   path, size and etag (``hub.confirm.release_difference``); a torrent that disagrees is refused with one line
   naming the first differing file. The upstream may list more (a torrent made with ``--include``).
3. **Unverified, not refused, when the upstream cannot say.** No upstream configured, or one that could not be
   asked (network, 5xx/429 past the retries, an answer no Hub would give): the release is stored unverified
   and shown so, and a verified publish of the same commit replaces it (the catalog's rule), so a torrent
   stored while the upstream was down cannot keep the upstream's release out.

``PublishRefused`` carries the HTTP status the API answers: 403 for a repo the registry may not publish, 422
for a torrent that is not the upstream's release.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from swarmhub.errors import GatedRepoError, OriginError, RepoNotFound, RevisionNotFound
from swarmhub.hub.confirm import release_difference
from swarmhub.hub.repo import RepoFile, RepoRef
from swarmhub.origin.client import OriginClient
from swarmhub.registry.pair import PublishRefused

__all__ = ["RETRIES", "Verification", "public_files", "verify_release"]

log = logging.getLogger(__name__)

RETRIES = 3  # a publish waits on the answer: a down upstream costs ~1 s of backoff, then "unverified"


@dataclass(frozen=True)
class Verification:
    """Rule 2's answer: the upstream's release (``verified``), or why nobody could say."""

    verified: bool
    why_not: str | None = None


async def public_files(anonymous: OriginClient, ref: RepoRef) -> list[RepoFile]:
    """The commit's files as anyone sees them (rule 1); ``PublishRefused`` for a repo hidden or gated, the
    origin's own error when it could not be asked."""
    where = f"on {anonymous.endpoint}"
    try:
        files = await anonymous.list_files(ref.repo_type, ref.repo_id, ref.commit)
        if files:
            smallest = min(files, key=lambda f: (f.size, f.path))
            await anonymous.head_file(ref.repo_type, ref.repo_id, ref.commit, smallest.path)
    except GatedRepoError:
        raise PublishRefused(
            f"{ref.repo_id} is gated or private {where}: only public repos are published "
            "(publishing redistributes the files to anyone)",
            status=403,
        ) from None
    except RevisionNotFound:
        raise PublishRefused(f"{ref.repo_id} has no commit {ref.commit} {where}", status=422) from None
    except RepoNotFound:
        raise PublishRefused(
            f"{ref.repo_id} is not a public {ref.repo_type} {where} (private, or not there): only public repos "
            "are published",
            status=403,
        ) from None
    return files


async def verify_release(anonymous: OriginClient | None, ref: RepoRef, files: Sequence[RepoFile]) -> Verification:
    """The rules above for a torrent of ``ref`` listing ``files``: verified, unverified, or ``PublishRefused``."""
    if anonymous is None:
        return Verification(False, "the registry has no upstream to compare it with")
    try:
        listed = await public_files(anonymous, ref)
    except OriginError as exc:
        log.warning("%s@%s: the upstream could not be asked (%s); stored unverified", ref.repo_id, ref.commit, exc)
        return Verification(False, f"the registry could not ask its upstream ({exc})")
    difference = release_difference(files, listed)
    if difference is not None:
        raise PublishRefused(f"{ref.repo_id}@{ref.commit[:12]} is not the upstream's release: {difference}")
    return Verification(True)
