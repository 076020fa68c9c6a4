"""Magnet URIs (BEP 9, BEP 52 ``btmh``, BEP 19 ``ws``), built and parsed without I/O."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, quote

from swarmhub.errors import MagnetError

if TYPE_CHECKING:
    from swarmhub.bt.metainfo import Torrent

__all__ = ["Magnet", "build_magnet", "magnet_for", "parse_magnet"]

_MULTIHASH_SHA256 = "1220"  # multihash: code 0x12 (sha2-256), length 0x20


@dataclass(frozen=True)
class Magnet:
    info_hash_v1: str | None
    info_hash_v2: str | None
    name: str | None
    trackers: tuple[str, ...]
    webseeds: tuple[str, ...]


def build_magnet(
    info_hash_v1: str | None,
    info_hash_v2: str | None,
    name: str | None = None,
    trackers: Sequence[str] = (),
    webseeds: Sequence[str] = (),
) -> str:
    parts: list[str] = []
    if info_hash_v1:
        parts.append(f"xt=urn:btih:{info_hash_v1}")
    if info_hash_v2:
        parts.append(f"xt=urn:btmh:{_MULTIHASH_SHA256}{info_hash_v2}")
    if not parts:
        raise ValueError("a magnet needs at least one info-hash")
    if name:
        parts.append(f"dn={quote(name, safe='')}")
    parts += [f"tr={quote(t, safe='')}" for t in trackers]
    parts += [f"ws={quote(w, safe='')}" for w in webseeds]
    return "magnet:?" + "&".join(parts)


def magnet_for(torrent: Torrent) -> str:
    """The magnet of a parsed torrent: both info-hashes, name, trackers and web seeds."""
    return build_magnet(torrent.info_hash_v1, torrent.info_hash_v2, torrent.name, torrent.trackers, torrent.webseeds)


def _btih(value: str) -> str:
    if re.fullmatch(r"[0-9a-fA-F]{40}", value):
        return value.lower()
    if re.fullmatch(r"[A-Za-z2-7]{32}", value):  # BEP 9 allows base32
        return base64.b32decode(value.upper()).hex()
    raise MagnetError(f"btih {value[:50]!r} is neither 40 hex digits nor 32 base32 characters")


def _btmh(value: str) -> str:
    if not re.fullmatch(r"1220[0-9a-fA-F]{64}", value):
        raise MagnetError(f"btmh {value[:80]!r} is not a SHA-256 multihash (1220 + 64 hex digits)")
    try:
        binascii.unhexlify(value)
    except binascii.Error as exc:  # pragma: no cover - the regex already checked
        raise MagnetError("btmh is not hex") from exc
    return value[4:].lower()


def parse_magnet(uri: str) -> Magnet:
    if not uri.startswith("magnet:?"):
        raise MagnetError("it does not start with 'magnet:?'")
    v1 = v2 = name = None
    trackers: list[str] = []
    webseeds: list[str] = []
    for key, value in parse_qsl(uri[len("magnet:?") :], keep_blank_values=True):
        if key == "xt" or key.startswith("xt."):
            if value.startswith("urn:btih:"):
                v1 = _btih(value[len("urn:btih:") :])
            elif value.startswith("urn:btmh:"):
                v2 = _btmh(value[len("urn:btmh:") :])
        elif key == "dn":
            name = value
        elif key == "tr" or key.startswith("tr."):
            trackers.append(value)
        elif key == "ws":
            webseeds.append(value)
    if v1 is None and v2 is None:
        raise MagnetError("no xt=urn:btih: or xt=urn:btmh: info-hash")
    return Magnet(v1, v2, name, tuple(trackers), tuple(webseeds))
