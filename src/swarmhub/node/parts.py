"""A release in parts (``bt.metainfo``) pulled here as one: one progress over its parts, one result."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

from swarmhub.bt.metainfo import Torrent
from swarmhub.hub.patterns import path_selected
from swarmhub.node.pull import PullProgress, PullResult

__all__ = ["PartsProgress", "combined"]


class PartsProgress:
    """One progress over the parts of a release, pulled one after another."""

    def __init__(
        self,
        parts: list[Torrent],
        include: Sequence[str] | None,
        exclude: Sequence[str] | None,
        update: Callable[[PullProgress], None],
    ) -> None:
        wanted = [f for t in parts for f in t.files if path_selected(f.path, include, exclude)]
        self.total, self.files = sum(f.size for f in wanted), len(wanted)
        self.update = update

    def of(self, before: list[PullResult]) -> Callable[[PullProgress], None]:
        """What the next part's pull reports through: its figures added to those of the parts before."""
        done, files = sum(r.bytes for r in before), sum(r.files for r in before)
        peer, origin = sum(r.peer_bytes for r in before), sum(r.origin_bytes for r in before)
        return lambda p: self.update(
            dataclasses.replace(
                p,
                done=done + p.done,
                total=self.total,
                peer_bytes=peer + p.peer_bytes,
                origin_bytes=origin + p.origin_bytes,
                files_landed=files + p.files_landed,
                files_total=self.files,
            )
        )


def combined(results: list[PullResult]) -> PullResult:
    """One result for the parts of a release (one part: its result)."""
    return dataclasses.replace(
        results[0],
        path=results[-1].path,
        files=sum(r.files for r in results),
        files_downloaded=sum(r.files_downloaded for r in results),
        bytes=sum(r.bytes for r in results),
        peer_bytes=sum(r.peer_bytes for r in results),
        origin_bytes=sum(r.origin_bytes for r in results),
        seconds=sum(r.seconds for r in results),
        banned_peers=tuple(dict.fromkeys(b for r in results for b in r.banned_peers)),
    )
