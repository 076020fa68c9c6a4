"""A torrent as JSON (for scripts; field names are a contract) and as text (for people)."""

from __future__ import annotations

from typing import Any

from swarmhub.bt.magnet import magnet_for
from swarmhub.bt.metainfo import Torrent
from swarmhub.cli.output import human_size

__all__ = ["torrent_json", "torrent_text"]


def torrent_json(torrent: Torrent) -> dict[str, Any]:
    repo = torrent.repo
    return {
        "name": torrent.name,
        "format": torrent.format,
        "info_hash_v1": torrent.info_hash_v1,
        "info_hash_v2": torrent.info_hash_v2,
        "magnet": magnet_for(torrent),
        "repo_type": repo.repo_type if repo else None,
        "repo_id": repo.repo_id if repo else None,
        "commit": repo.commit if repo else None,
        "total_size": torrent.total_size,
        "piece_size": torrent.piece_size,
        "num_pieces": torrent.num_pieces,
        "private": torrent.private,
        "trackers": list(torrent.trackers),
        "webseeds": list(torrent.webseeds),
        "files": [{"path": f.path, "size": f.size, "etag": f.etag} for f in torrent.files],
        # a release spanning several torrents: this one's place, and (part 0) the others' keys
        "part": torrent.part.index if torrent.part else None,
        "parts": torrent.part.count if torrent.part else 1,
        "other_parts": list(torrent.part.others) if torrent.part else [],
    }


def torrent_text(torrent: Torrent, *, max_files: int = 50) -> str:
    repo = torrent.repo
    lines = [
        f"name       {torrent.name}",
        f"format     {torrent.format}" + ("  (private)" if torrent.private else ""),
    ]
    if repo:
        lines += [f"repo       {repo.repo_type} {repo.repo_id}", f"commit     {repo.commit}"]
    if torrent.part is not None:
        lines.append(
            f"part       {torrent.part.index} of {torrent.part.count} torrents of the release (0 lists the others)"
        )
        lines += [f"  part {i}   {key}" for i, key in enumerate(torrent.part.others, 1)]
    lines += [
        f"size       {human_size(torrent.total_size)} in {len(torrent.files)} files",
        f"pieces     {torrent.num_pieces} x {human_size(torrent.piece_size)}",
    ]
    if torrent.info_hash_v1:
        lines.append(f"btih (v1)  {torrent.info_hash_v1}")
    if torrent.info_hash_v2:
        lines.append(f"btmh (v2)  {torrent.info_hash_v2}")
    lines += [f"tracker    {t}" for t in torrent.trackers]
    lines += [f"webseed    {w}" for w in torrent.webseeds]
    lines.append(f"magnet     {magnet_for(torrent)}")
    lines.append("files")
    width = max((len(human_size(f.size)) for f in torrent.files), default=0)
    for f in torrent.files[:max_files]:
        etag = f"  {f.etag}" if f.etag else ""
        lines.append(f"  {human_size(f.size):>{width}}  {f.path}{etag}")
    if len(torrent.files) > max_files:
        lines.append(f"  ... and {len(torrent.files) - max_files} more (--json lists all)")
    return "\n".join(lines)
