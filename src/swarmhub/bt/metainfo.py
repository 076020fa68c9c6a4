"""Torrent files (BEP 3 v1, BEP 52 v2 and hybrid, BEP 47 pads, BEP 19 web seeds), built and parsed, no I/O.

Our torrents carry the release's Hub identity inside ``info`` (so the info-hash authenticates it)::

    info["hf"] = {"repo_type": "model", "repo_id": "org/name", "commit": "<40 hex>",
                  "files": [{"path": "a/b.bin", "size": 123, "etag": "<sha256 or git sha1>"}, ...]}

A release too big for one torrent (issue 16: past ~64,000 small files a hybrid's metadata is more than
libtorrent takes from peers) spans several, its *parts*: each a whole torrent of some of the release's files,
all with the release's name, identity and piece size, ``hf`` adding ``"part": i, "parts": n``. Part 0 also
lists the others' info-hashes in order (``"others": ["<hex>", ...]``: v2 for a hybrid or v2 torrent, v1 for a
classic one), so part 0's info-hash authenticates the whole release, and ``check_parts`` says whether a set of
torrents is one release. A release of one torrent carries none of these keys (its info-hash is unchanged).

``parse_torrent`` accepts any torrent (ours or not) and rejects hostile ones: every failure is a
``MetainfoError`` (or ``BencodeError``) with one line saying what is wrong. Hostile means: bencode past the
decoder's budget (``bt.bencode``), names and paths that ``hub.repo.path_problem`` refuses (traversal,
control, format and bidi characters), sizes, piece counts and totals no torrent libtorrent loads can have,
piece hashes or layers that do not match the files. Tracker and web seed URLs that are not clean text
(not UTF-8, or holding characters ``character_problem`` refuses) are left out, not fatal.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from swarmhub.bt.bencode import MAX_TOKENS, Bencodable, count_tokens, decode, decode_with_spans, encode
from swarmhub.bt.layout import Format, TorrentPlan, valid_piece_size
from swarmhub.bt.merkle import file_root_from_piece_layer
from swarmhub.errors import MetainfoError, UsageError
from swarmhub.hub.repo import (
    COMMIT_RE,
    LFS_ETAG_RE,
    REGULAR_ETAG_RE,
    RepoRef,
    character_problem,
    parse_repo_type,
    path_problem,
    validate_repo_id,
)

__all__ = [
    "Part",
    "Torrent",
    "TorrentFile",
    "build_torrent",
    "check_parts",
    "cluster_variant",
    "cluster_variants",
    "parse_torrent",
]

MAX_FILE_SIZE = 1 << 50  # 1 PiB: no Hub file comes near; larger values are hostile or broken
MAX_FILES = 1_000_000
MAX_PATH_DEPTH = 64
MAX_PIECE_SIZE = 1 << 28
MAX_PIECES = 1 << 21  # libtorrent's load_torrent_limits.max_pieces: it loads no torrent with more
MAX_TOTAL_SIZE = MAX_PIECES * MAX_PIECE_SIZE  # 512 TiB: the most any torrent libtorrent loads can hold
MAX_PARTS = 1000  # 64 million small files; more parts are hostile or broken


@dataclass(frozen=True)
class Part:
    """Torrent ``index`` of the ``count`` a release spans; part 0 names the others' keys (``Torrent.key``)."""

    index: int
    count: int
    others: tuple[str, ...] = ()


@dataclass(frozen=True)
class TorrentFile:
    path: str  # posix, below the torrent's name
    size: int
    etag: str | None = None  # Hub etag, when the torrent carries the Hub identity
    pieces_root: bytes | None = None  # v2


@dataclass(frozen=True)
class Torrent:
    name: str
    format: Format
    piece_size: int
    files: tuple[TorrentFile, ...]
    num_pieces: int  # v1 pieces, or the sum of per-file pieces for v2-only
    info_hash_v1: str | None  # hex; for a v2-only torrent None
    info_hash_v2: str | None  # hex SHA-256; None for v1
    trackers: tuple[str, ...]
    webseeds: tuple[str, ...]
    repo: RepoRef | None
    private: bool
    info_bytes: bytes
    part: Part | None = None  # None: the release is this one torrent

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def key(self) -> str:
        """The v2 info-hash, else the v1 (what the engine keys torrents by)."""
        return self.info_hash_v2 or self.info_hash_v1 or ""


# --------------------------------------------------------------------------------------------- building


def _info(
    plan: TorrentPlan,
    name: str,
    v1_pieces: bytes,
    v2: Sequence[tuple[bytes | None, bytes]],
    repo: RepoRef | None,
    etags: Sequence[str],
    part: Part | None = None,
) -> tuple[dict[str, Bencodable], dict[bytes, bytes]]:
    info: dict[str, Bencodable] = {"name": name, "piece length": plan.piece_size}
    if plan.has_v1:
        entries: list[dict[str, Bencodable]] = []
        for file in plan.files:
            entries.append({"length": file.size, "path": file.path.split("/")})
            if file.pad_after:
                # BEP 47; libtorrent names pads .pad/<size>
                entries.append({"attr": "p", "length": file.pad_after, "path": [".pad", str(file.pad_after)]})
        info["files"] = entries
        info["pieces"] = v1_pieces
    piece_layers: dict[bytes, bytes] = {}
    if plan.has_v2:
        info["meta version"] = 2
        tree: dict[str, Any] = {}
        for file, (root, layer) in zip(plan.files, v2, strict=True):
            node = tree
            for component in file.path.split("/"):
                node = node.setdefault(component, {})
            leaf: dict[str, Bencodable] = {"length": file.size}
            if root is not None:
                leaf["pieces root"] = root
            node[""] = leaf
            if layer:
                piece_layers[root or b""] = layer
        info["file tree"] = tree
    if repo is not None:
        hf: dict[str, Bencodable] = {
            "repo_type": repo.repo_type,
            "repo_id": repo.repo_id,
            "commit": repo.commit,
            "files": [
                {"path": f.path, "size": f.size, "etag": etag} for f, etag in zip(plan.files, etags, strict=True)
            ],
        }
        if part is not None:
            hf.update(part=part.index, parts=part.count)
            if part.index == 0:
                hf["others"] = list(part.others)
        info["hf"] = hf
    elif part is not None:
        raise UsageError("only a torrent with the release's identity can be a part of it")
    return info, piece_layers


def build_torrent(
    plan: TorrentPlan,
    name: str,
    *,
    v1_pieces: bytes,
    v2: Sequence[tuple[bytes | None, bytes]],  # per file: (pieces root, piece layer)
    repo: RepoRef | None,
    etags: Sequence[str],
    trackers: Sequence[str] = (),
    webseeds: Sequence[str] = (),
    part: Part | None = None,
) -> bytes:
    """Bencode a deterministic torrent (no creation date) for ``plan`` and its hashes."""
    info, piece_layers = _info(plan, name, v1_pieces, v2, repo, etags, part)
    torrent: dict[str, Bencodable] = {"info": info}
    if piece_layers:
        torrent["piece layers"] = piece_layers
    if trackers:
        torrent["announce"] = trackers[0]
        torrent["announce-list"] = [[t] for t in trackers]
    if webseeds:
        torrent["url-list"] = list(webseeds)
    return encode(torrent)


# What one torrent may hold for the clients swarmhub works with (docs/NOTES.md, measured): libtorrent, and
# qBittorrent on it, refuse metadata from peers of more than 2,500,000 bencode tokens (``metadata_token_limit``:
# a hybrid of ~64,000 files) or 30 MiB (``max_metadata_size``); aria2 takes at most 8 MiB of it.
MAX_INFO_TOKENS = 2_500_000
MAX_INFO_BYTES = 30 * 1024 * 1024
ARIA2_MAX_INFO_BYTES = 8 * 1024 * 1024


def info_cost(
    plan: TorrentPlan, name: str, repo: RepoRef | None, etags: Sequence[str], part: Part | None = None
) -> tuple[int, int]:
    """(bytes, bencode tokens) of the ``info`` dictionary ``build_torrent`` makes for ``plan``, before any byte
    is hashed (hashes have fixed sizes; so have the info-hashes part 0 lists)."""
    v2 = [(bytes(32) if f.size else None, b"") for f in plan.files] if plan.has_v2 else []
    info, _ = _info(plan, name, bytes(20 * plan.num_pieces) if plan.has_v1 else b"", v2, repo, etags, part)
    return len(encode(info)), count_tokens(info)


# ---------------------------------------------------------------------------------------------- parsing


def _text(value: object, what: str) -> str:
    if not isinstance(value, bytes):
        raise MetainfoError(f"{what} is not a string")
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise MetainfoError(f"{what} is not valid UTF-8") from None


def _int(value: object, what: str, low: int = 0, high: int = MAX_FILE_SIZE) -> int:
    if not isinstance(value, int) or not low <= value <= high:
        raise MetainfoError(f"{what} is not an integer between {low} and {high}")
    return value


def _component(raw: object, where: str) -> str:
    part = _text(raw, f"a path component in {where}")
    problem = "'/' in a component" if "/" in part else path_problem(part)
    if problem:  # the repr escapes what it quotes: the line stays one line and runs nothing in a terminal
        raise MetainfoError(f"unsafe path component {part[:60]!r} in {where}: {problem}")
    return part


def _join(parts: Sequence[str], where: str) -> str:
    if not parts or len(parts) > MAX_PATH_DEPTH:
        raise MetainfoError(f"{where} has an empty or too deep path")
    return "/".join(parts)


def _v1_files(info: dict[bytes, Any], name: str) -> tuple[list[TorrentFile], list[tuple[bool, int]]]:
    """Real files and the full entry list as (is_pad, length), in order."""
    if b"files" not in info:  # single-file torrent: the name is the file
        return [TorrentFile(name, _int(info.get(b"length"), "length"))], [(False, info[b"length"])]
    raw = info[b"files"]
    if not isinstance(raw, list) or not raw or len(raw) > MAX_FILES:
        raise MetainfoError("files is not a non-empty list")
    files: list[TorrentFile] = []
    entries: list[tuple[bool, int]] = []
    seen: set[str] = set()
    for i, entry in enumerate(raw):
        if not isinstance(entry, dict):
            raise MetainfoError(f"files[{i}] is not a dictionary")
        length = _int(entry.get(b"length"), f"files[{i}].length")
        path_list = entry.get(b"path.utf-8", entry.get(b"path"))
        if not isinstance(path_list, list):
            raise MetainfoError(f"files[{i}].path is not a list")
        path = _join([_component(p, f"files[{i}].path") for p in path_list], f"files[{i}]")
        attr = entry.get(b"attr", b"")
        is_pad = isinstance(attr, bytes) and b"p" in attr
        entries.append((is_pad, length))
        if is_pad:
            continue
        if path in seen:
            raise MetainfoError(f"file {path!r} is listed twice")
        seen.add(path)
        files.append(TorrentFile(path, length))
    return files, entries


def _walk_tree(node: object, prefix: list[str], depth: int = 0) -> Iterator[tuple[str, int, bytes | None]]:
    if not isinstance(node, dict) or not node:
        raise MetainfoError(f"file tree node {'/'.join(prefix) or '<root>'} is not a non-empty dictionary")
    if depth > MAX_PATH_DEPTH:
        raise MetainfoError("file tree is too deep")
    for key, child in node.items():
        if key == b"":
            if not prefix or not isinstance(child, dict):
                raise MetainfoError("file tree has a file without a name")
            where = "/".join(prefix)
            length = _int(child.get(b"length"), f"length of {where}")
            root = child.get(b"pieces root")
            if length > 0 and (not isinstance(root, bytes) or len(root) != 32):
                raise MetainfoError(f"{where} has no 32-byte pieces root")
            yield where, length, root if length > 0 else None
            if len(node) != 1:
                raise MetainfoError(f"{where} is both a file and a folder")
        else:
            yield from _walk_tree(child, [*prefix, _component(key, "file tree")], depth + 1)


def _hf_identity(raw: object, files: list[TorrentFile]) -> tuple[RepoRef, list[TorrentFile]]:
    if not isinstance(raw, dict):
        raise MetainfoError("info.hf is not a dictionary")
    try:
        repo_type = parse_repo_type(_text(raw.get(b"repo_type"), "hf.repo_type"))
        repo_id = validate_repo_id(_text(raw.get(b"repo_id"), "hf.repo_id"))
    except UsageError as exc:
        raise MetainfoError(f"hf: {exc.message}") from None
    commit = _text(raw.get(b"commit"), "hf.commit")
    if not COMMIT_RE.match(commit):
        raise MetainfoError("hf.commit is not a 40-hex commit id")
    listed = raw.get(b"files")
    if not isinstance(listed, list) or len(listed) != len(files):
        raise MetainfoError("hf.files does not list every file of the torrent")
    out: list[TorrentFile] = []
    for file, entry in zip(files, listed, strict=True):
        if not isinstance(entry, dict):
            raise MetainfoError("hf.files has an entry that is not a dictionary")
        path = _text(entry.get(b"path"), "hf.files[].path")
        etag = _text(entry.get(b"etag"), f"etag of {path!r}")
        if path != file.path or entry.get(b"size") != file.size:
            raise MetainfoError(f"hf.files entry {path!r} does not match the torrent's file {file.path!r}")
        if not (REGULAR_ETAG_RE.match(etag) or LFS_ETAG_RE.match(etag)):
            raise MetainfoError(f"etag of {path!r} is neither a git sha1 nor a sha256")
        out.append(TorrentFile(file.path, file.size, etag, file.pieces_root))
    return RepoRef(repo_type, repo_id, commit), out


def _part(raw: dict[bytes, Any], fmt: Format) -> Part | None:
    """``hf.part``/``parts``/``others``: both numbers or neither; part 0 lists every other part's key once."""
    if b"part" not in raw and b"parts" not in raw:
        if b"others" in raw:
            raise MetainfoError("hf.others without hf.part")
        return None
    count = _int(raw.get(b"parts"), "hf.parts", 2, MAX_PARTS)
    index = _int(raw.get(b"part"), "hf.part", 0, count - 1)
    listed = raw.get(b"others")
    if index:
        if listed is not None:
            raise MetainfoError(f"hf.others in part {index}: only part 0 lists the others")
        return Part(index, count)
    width = 40 if fmt == "v1" else 64
    if not isinstance(listed, list) or len(listed) != count - 1:
        raise MetainfoError(f"hf.others does not list the {count - 1} other parts")
    others = tuple(_text(h, "hf.others[]") for h in listed)
    if any(len(h) != width or not all(c in "0123456789abcdef" for c in h) for h in others):
        raise MetainfoError(f"hf.others holds something that is not a {width}-hex info-hash")
    if len(set(others)) != len(others):
        raise MetainfoError("hf.others lists a part twice")
    return Part(0, count, others)


def check_parts(torrents: Sequence[Torrent]) -> list[Torrent]:
    """The parts of one release in order, or a ``MetainfoError`` saying why ``torrents`` are not that: one
    identity, name, format and piece size, every part once, the keys part 0 lists, no file in two parts."""
    if len(torrents) == 1 and torrents[0].part is None:
        return list(torrents)
    if any(t.part is None or t.repo is None for t in torrents):
        raise MetainfoError("a torrent of a release of one torrent given with others")
    first = next((t for t in torrents if t.part is not None and t.part.index == 0), None)
    if first is None or first.part is None:
        raise MetainfoError("part 0 of the release (the one that lists the others) is missing")
    by_key = {t.key: t for t in torrents}
    missing = [key for key in first.part.others if key not in by_key]
    if missing:
        raise MetainfoError(f"{len(missing)} of the release's {first.part.count} parts missing (first: {missing[0]})")
    ordered = [first, *(by_key[key] for key in first.part.others)]
    if len(by_key) != len(ordered):
        raise MetainfoError("a torrent that is not a part of this release was given with it")
    files: set[str] = set()
    for i, t in enumerate(ordered):
        same = (t.repo, t.name, t.format, t.piece_size) == (first.repo, first.name, first.format, first.piece_size)
        if not same or t.part is None or (t.part.index, t.part.count) != (i, first.part.count):
            raise MetainfoError(f"torrent {t.key} is not part {i} of {first.name}")
        paths = {f.path for f in t.files}
        if files & paths:
            raise MetainfoError(f"{sorted(files & paths)[0]!r} is in two parts of {first.name}")
        files |= paths
    return ordered


def _urls(value: object) -> tuple[str, ...]:
    items = value if isinstance(value, list) else [value] if value is not None else []
    return tuple(u for u in (_maybe_text(v) for v in items) if u)


def _maybe_text(value: object) -> str | None:
    try:
        text = _text(value, "url")
    except MetainfoError:
        return None
    return None if character_problem(text) else text


def _check_totals(total: int, num_pieces: int) -> None:
    """Claims no torrent libtorrent loads can make (issue 13: a v2 torrent of 2,000 files of 1 PiB each
    claimed 2,048,000 TiB, and ``inspect`` printed it)."""
    if total > MAX_TOTAL_SIZE:
        raise MetainfoError(f"the files add up to {total} bytes, more than {MAX_TOTAL_SIZE >> 40} TiB")
    if num_pieces > MAX_PIECES:
        raise MetainfoError(f"{num_pieces} pieces, more than the {MAX_PIECES} libtorrent loads")


def _trackers(meta: dict[bytes, Any]) -> tuple[str, ...]:
    seen: list[str] = []
    tiers = meta.get(b"announce-list")
    if isinstance(tiers, list):
        for tier in tiers:
            for url in _urls(tier):
                if url not in seen:
                    seen.append(url)
    for url in _urls(meta.get(b"announce")):
        if url not in seen:
            seen.insert(0, url)
    return tuple(seen)


def parse_torrent(data: bytes, *, max_tokens: int = MAX_TOKENS) -> Torrent:
    """Parse and validate a .torrent file; ``max_tokens`` is the bencode decoder's budget."""
    meta, spans = decode_with_spans(data, frozenset({b"info"}), max_tokens=max_tokens)
    if not isinstance(meta, dict) or not isinstance(meta.get(b"info"), dict):
        raise MetainfoError("no info dictionary")
    info: dict[bytes, Any] = meta[b"info"]
    info_bytes = bytes(data[slice(*spans[b"info"])])
    name = _component(info.get(b"name.utf-8", info.get(b"name")), "name")
    piece_size = _int(info.get(b"piece length"), "piece length", 1, MAX_PIECE_SIZE)
    has_v2 = info.get(b"meta version") == 2 and b"file tree" in info
    has_v1 = b"pieces" in info
    if not has_v1 and not has_v2:
        raise MetainfoError("neither v1 pieces nor a v2 file tree")
    if has_v2 and not valid_piece_size(piece_size):
        raise MetainfoError(f"piece length {piece_size} is not a power of two of at least 16 KiB")

    v1_files: list[TorrentFile] = []
    files: list[TorrentFile]
    if has_v1:
        v1_files, entries = _v1_files(info, name)
        stream = sum(length for _, length in entries)
        pieces = info[b"pieces"]
        expected = -(-stream // piece_size)
        _check_totals(stream, expected)
        if not isinstance(pieces, bytes) or len(pieces) != 20 * expected:
            raise MetainfoError(
                f"pieces holds {len(pieces) // 20 if isinstance(pieces, bytes) else 0} "
                f"hashes but the files need {expected}"
            )
        files = v1_files
        num_pieces = expected
    if has_v2:
        files = [TorrentFile(p, size, None, root) for p, size, root in _walk_tree(info[b"file tree"], [])]
        if len(files) > MAX_FILES:
            raise MetainfoError("too many files")
        _check_totals(sum(f.size for f in files), sum(-(-f.size // piece_size) for f in files))
        if has_v1:
            if [(f.path, f.size) for f in v1_files] != [(f.path, f.size) for f in files]:
                raise MetainfoError("the v1 and v2 file lists of this hybrid torrent differ")
            _check_hybrid_padding(entries, piece_size)
        else:
            num_pieces = sum(-(-f.size // piece_size) for f in files)
        _check_piece_layers(meta.get(b"piece layers"), files, piece_size)
    fmt: Format = "hybrid" if has_v1 and has_v2 else "v2" if has_v2 else "v1"

    repo, part = None, None
    if b"hf" in info:
        repo, files = _hf_identity(info[b"hf"], files)
        part = _part(info[b"hf"], fmt)
    return Torrent(
        name=name,
        format=fmt,
        piece_size=piece_size,
        files=tuple(files),
        num_pieces=num_pieces,
        info_hash_v1=hashlib.sha1(info_bytes).hexdigest() if has_v1 else None,
        info_hash_v2=hashlib.sha256(info_bytes).hexdigest() if has_v2 else None,
        trackers=_trackers(meta),
        webseeds=_urls(meta.get(b"url-list")),
        repo=repo,
        private=info.get(b"private") == 1,
        info_bytes=info_bytes,
        part=part,
    )


def _check_hybrid_padding(entries: list[tuple[bool, int]], piece_size: int) -> None:
    """BEP 52 hybrids: every file starts on a piece boundary in the v1 stream."""
    offset = 0
    for is_pad, length in entries:
        if not is_pad and length and offset % piece_size:
            raise MetainfoError("a file of this hybrid torrent does not start on a piece boundary")
        offset += length


def _check_piece_layers(raw: object, files: list[TorrentFile], piece_size: int) -> None:
    """Piece layers may be absent (metadata from peers); when present they must hash to each file's root."""
    if raw is None:
        return
    if not isinstance(raw, dict):
        raise MetainfoError("piece layers is not a dictionary")
    leaves_per_piece = piece_size // (16 * 1024)
    for file in files:
        if file.size <= piece_size or file.pieces_root is None:
            continue
        layer = raw.get(file.pieces_root)
        if layer is None:
            raise MetainfoError(f"piece layers lack the layer of {file.path!r}")
        count = -(-file.size // piece_size)
        if not isinstance(layer, bytes) or len(layer) != 32 * count:
            raise MetainfoError(f"the piece layer of {file.path!r} has the wrong length")
        hashes = [layer[i : i + 32] for i in range(0, len(layer), 32)]
        if file_root_from_piece_layer(hashes, leaves_per_piece) != file.pieces_root:
            raise MetainfoError(f"the piece layer of {file.path!r} does not hash to its pieces root")


def cluster_variant(data: bytes, ca_pem: bytes, others: Sequence[str] | None = None) -> bytes:
    """The torrent a private cluster trades: the same files and pieces (no byte hashed again), with the
    cluster's CA as ``ssl-cert`` (libtorrent then talks to peers over TLS only, and only to those holding a
    certificate that CA signed) and ``private`` set in ``info``; no public trackers or web seeds (the
    coordinator is the tracker, nodes fetch from the origin themselves). A new info-hash; applying it twice
    changes nothing. ``others``: part 0's list of the other parts, theirs as variants (``cluster_variants``)."""
    parse_torrent(data)  # only a torrent we accept becomes a cluster's
    meta = decode(data)
    assert isinstance(meta, dict) and isinstance(meta.get(b"info"), dict)
    info: dict[bytes, Any] = {**meta[b"info"], b"ssl-cert": ca_pem, b"private": 1}
    if others is not None:
        info[b"hf"] = {**info[b"hf"], b"others": [k.encode() for k in others]}
    out = {k: v for k, v in meta.items() if k not in (b"announce", b"announce-list", b"url-list")}
    out[b"info"] = info
    return encode(out)


def cluster_variants(datas: Sequence[bytes], ca_pem: bytes) -> list[bytes]:
    """``cluster_variant`` of a release's torrents, part 0 first (``check_parts`` order): a release in parts
    stays one release, part 0 naming the other parts' variants; applying it twice changes nothing."""
    if len(datas) == 1:
        return [cluster_variant(datas[0], ca_pem)]
    rest = [cluster_variant(d, ca_pem) for d in datas[1:]]
    return [cluster_variant(datas[0], ca_pem, [parse_torrent(d).key for d in rest]), *rest]
