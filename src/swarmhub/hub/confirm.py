"""Is a torrent's release the Hub's release? Its files compared with the upstream's tree for the commit.

A torrent names a ``repo@commit`` and lists files with sizes and etags inside its ``info`` (``info.hf``), and
the landing checks every byte against those etags — so a torrent whose etags describe other bytes lands those
other bytes under a real commit. Only the upstream can say what the commit holds: before a release is landed
or served as ``repo@commit`` its file list is compared with the upstream's tree, once, and the answer kept.

The rule: every file of the torrent is in the upstream's tree at the same path, with the same size and etag.
The upstream may list more (a torrent made with ``--include`` holds some of a commit's files); it may not list
fewer or other. Pure: the caller lists the tree (``OriginClient.list_files``) and records the outcome.
"""

from __future__ import annotations

from collections.abc import Iterable

from swarmhub.hub.repo import RepoFile

__all__ = ["release_difference"]


def release_difference(files: Iterable[RepoFile], upstream: Iterable[RepoFile]) -> str | None:
    """The first file of ``files`` (in path order) the ``upstream``'s listing disagrees on, said in one line;
    None when the upstream lists every one of them alike."""
    listed = {f.path: f for f in upstream}
    for f in sorted(files, key=lambda f: f.path):
        theirs = listed.get(f.path)
        if theirs is None:
            return f"{f.path} is not in the upstream's tree"
        if theirs.size != f.size:
            return f"{f.path} is {f.size} bytes, the upstream's is {theirs.size}"
        if theirs.etag.lower() != f.etag.lower():
            return f"{f.path} has etag {f.etag[:16]}…, the upstream's is {theirs.etag[:16]}…"
    return None
