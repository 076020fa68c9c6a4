"""``swarmhub demo``: the whole job on embedded defaults, no network and no external server.

1. Generate a small model release (safetensors weights as LFS, regular JSON files, nested folders, the
   ``vae/`` vs ``vae-ft.bin`` vs ``vae.json`` ordering trap) under ``DIR/models/swarmhub-demo/tiny-model``.
2. Serve it from the embedded Hub-compatible origin (devhub), which misbehaves like the real one: one 429
   with Retry-After and one connection reset in the middle of an LFS download.
3. Stream the release into a hybrid and a v1 torrent (nothing written but the .torrent files).
4. A local swarm of three nodes, each with its own Hugging Face cache under ``DIR/nodes``: node A pulls the
   release (no peer has it yet, so the origin serves it once) and seeds it; nodes B and C pull it together
   from A and from each other with the origin switched off, straight into their caches.
5. The node daemon: node D (empty cache) serves a Hub-compatible endpoint; an unmodified huggingface_hub
   program run with ``HF_ENDPOINT`` at it downloads the release, which node D fetches from node C while
   the program reads (the torrent comes from the registry), with no byte of it from the origin.
6. Hash the same files from disk (``--from-dir``) and check the torrent is byte-identical.
7. Ask libtorrent to check every piece of the torrent against the files, then print what the torrent holds.
8. huggingface_hub, offline, finds node C's snapshot where it looks for it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import struct
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from swarmhub.bt.layout import Format
from swarmhub.cli.output import Progress, atomic_write, human_size, print_json
from swarmhub.cli.summary import torrent_json, torrent_text
from swarmhub.errors import SwarmhubError

if TYPE_CHECKING:
    from swarmhub.create.release import CreatedTorrent, CreateRequest

__all__ = ["make_demo_release", "register", "run"]

REPO_ID = "swarmhub-demo/tiny-model"
GITATTRIBUTES = """*.safetensors filter=lfs diff=lfs merge=lfs -text
*.bin filter=lfs diff=lfs merge=lfs -text
*.gguf filter=lfs diff=lfs merge=lfs -text
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "demo",
        help="run the end-to-end demo on a generated release (no network needed)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--dir", type=Path, help="where to put the release and torrents (default: a new temp folder)")
    p.add_argument("--size-mb", type=int, default=24, help="size of the demo weights (default: 24)")
    p.add_argument("--serve", action="store_true", help="keep the registry running at the end (Ctrl-C stops)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.set_defaults(func=run)


def _safetensors(tensors: dict[str, tuple[int, ...]], seed: int) -> bytes:
    """A valid safetensors file of F32 tensors: 8-byte header length, JSON header, raw little-endian data."""
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, shape in tensors.items():
        n = 4
        for d in shape:
            n *= d
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the format pads the header to 8 bytes with spaces
    return struct.pack("<Q", len(raw)) + raw + random.Random(seed).randbytes(offset)


def make_demo_release(root: Path, size_mb: int = 24) -> Path:
    """Write the demo release under ``root/models/swarmhub-demo/tiny-model`` and return its folder."""
    repo = root / "models" / REPO_ID
    (repo / "vae").mkdir(parents=True, exist_ok=True)
    hidden = 256
    rows = max(1, size_mb * 1024 * 1024 // (hidden * 4) // 2)
    files: dict[str, bytes] = {
        ".gitattributes": GITATTRIBUTES.encode(),
        "README.md": b"# tiny-model\n\nA generated release for the swarmhub demo.\n",
        "config.json": json.dumps(
            {"model_type": "llama", "hidden_size": hidden, "num_hidden_layers": 2, "vocab_size": rows},
            indent=2,
        ).encode()
        + b"\n",
        "generation_config.json": b'{"max_new_tokens": 32}\n',
        "tokenizer/tokenizer_config.json": b'{"model_max_length": 2048}\n',
        "model.safetensors": _safetensors({"embed.weight": (rows, hidden), "lm_head.weight": (rows, hidden)}, 1),
        "vae/diffusion_pytorch_model.safetensors": _safetensors({"decoder.weight": (64, 1024)}, 2),
        "vae-ft.bin": _safetensors({"w": (32, 1024)}, 3),
        "vae.json": b'{"scaling_factor": 0.18215}\n',
        "empty.txt": b"",
    }
    for path, data in files.items():
        target = repo / path
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists() or target.read_bytes() != data:
            target.write_bytes(data)
    return repo


async def _stream(endpoint: str, request: CreateRequest, progress: Progress) -> CreatedTorrent:
    from swarmhub.create.release import create_release_torrent
    from swarmhub.origin.client import OriginClient

    async with OriginClient(endpoint, None, backoff_base=0.05) as client:
        try:
            return await create_release_torrent(request, client, on_start=progress.start, on_progress=progress.advance)
        finally:
            progress.close()


async def _swarm(
    endpoint: str, registry_url: str, token: str, nodes: Path, origin_bytes: Callable[[], int]
) -> dict[str, Any]:
    """Publish to the registry; node A pulls by name (no peer yet: the registry's gateway serves it) and
    seeds; nodes B and C pull by name at the same time with the origin off, finding peers through the
    registry's tracker alone."""
    from swarmhub.bt.metainfo import parse_torrent
    from swarmhub.engine.session import Engine
    from swarmhub.node.landing import CacheDestination
    from swarmhub.node.pull import Pull, PullResult
    from swarmhub.node.seeding import seed_release
    from swarmhub.node.sources import WebSeedSource
    from swarmhub.origin.client import OriginClient
    from swarmhub.registry.client import RegistryClient
    from swarmhub.registry.publishing import publish_release

    registry = RegistryClient(registry_url, token)
    async with OriginClient(endpoint, None, backoff_base=0.05) as origin:
        published = await publish_release(registry, origin, "model", REPO_ID, "main")
    published_bytes = origin_bytes()
    torrent = await asyncio.to_thread(registry.torrent, "model", REPO_ID, published["commit"])
    parsed = parse_torrent(torrent)
    assert parsed.repo is not None

    def pull(engine: Engine, name: str, **kw: Any) -> Pull:
        dest = CacheDestination(nodes / name / "hub", parsed.repo)  # type: ignore[arg-type]
        return Pull(engine, parsed, torrent, dest, part_file_dir=nodes / name / "swarmhub" / "parts", **kw)

    def summary(r: PullResult) -> dict[str, Any]:
        return {"path": str(r.path), "peer_bytes": r.peer_bytes, "origin_bytes": r.origin_bytes, "seconds": r.seconds}

    with Engine() as a, Engine() as b, Engine() as c:
        async with OriginClient(parsed.webseeds[0], None, backoff_base=0.05) as gateway:
            source = WebSeedSource(gateway, parsed.webseeds[0], parsed.name, parsed.repo)
            first = await pull(a, "a", origin=source, peer_grace=0.0).run()
        a.remove(first.key)
        seed_release(a, parsed, torrent, nodes / "a" / "hub", nodes / "a" / "swarmhub" / "parts")
        await _until_seeding(registry_url, published["info_hash_v1"])
        second, third = await asyncio.gather(pull(b, "b").run(), pull(c, "c").run())
    return {
        **published,
        "a": summary(first),
        "b": summary(second),
        "c": summary(third),
        "origin_bytes_publishing": published_bytes,
        "origin_bytes_nodes": origin_bytes() - published_bytes,
    }


async def _until_seeding(registry_url: str, info_hash_v1: str, timeout: float = 15.0) -> None:
    """Until the registry's tracker lists a seeder (node A's first announce), so B and C find it at once."""
    import urllib.parse
    import urllib.request

    from swarmhub.bt.bencode import decode

    query = urllib.parse.urlencode({"info_hash": bytes.fromhex(info_hash_v1)})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"{registry_url}/scrape?{query}", timeout=5) as response:
            files = decode(response.read())
        counts = files.get(b"files", {}) if isinstance(files, dict) else {}
        if isinstance(counts, dict) and any(isinstance(c, dict) and c.get(b"complete") for c in counts.values()):
            return
        await asyncio.sleep(0.1)
    raise SwarmhubError("node A never announced itself to the registry's tracker")


def _through_node(endpoint: str, registry_url: str, nodes: Path, commit: str) -> dict[str, Any]:
    """Node D, with an empty cache, serves the Hub's API; a program with HF_ENDPOINT at it downloads the
    release (in a subprocess: huggingface_hub reads HF_ENDPOINT at import) while D fetches it from C."""
    import subprocess
    import sys

    from swarmhub.bt.metainfo import parse_torrent
    from swarmhub.engine.session import Engine
    from swarmhub.node.daemon import Node
    from swarmhub.node.seeding import seed_release
    from swarmhub.registry.client import RegistryClient
    from swarmhub.settings import Settings

    torrent = RegistryClient(registry_url).torrent("model", REPO_ID, commit)
    parsed = parse_torrent(torrent)
    settings = Settings.from_env().with_cache(nodes / "d" / "hub")
    with Engine() as c:
        seed_release(c, parsed, torrent, nodes / "c" / "hub", nodes / "c" / "swarmhub" / "parts")
        node = Node(settings, port=0, upstream=endpoint, registry=registry_url, peers=[("127.0.0.1", c.listen_port)])
        with node:
            code = "import sys; from huggingface_hub import snapshot_download; print(snapshot_download(sys.argv[1]))"
            env = {**os.environ, "HF_ENDPOINT": node.url, "HF_HUB_CACHE": str(nodes / "program" / "hub")}
            env.pop("HF_HUB_OFFLINE", None)
            started = time.monotonic()
            done = subprocess.run(
                [sys.executable, "-c", code, REPO_ID], capture_output=True, text=True, env=env, timeout=300
            )
            seconds = time.monotonic() - started
            assert node.library is not None
            stats = node.library.stats()
    if done.returncode != 0:
        raise SwarmhubError(f"huggingface_hub through the node failed: {done.stderr.strip().splitlines()[-1:]}")
    return {
        "url": node.url,
        "snapshot": done.stdout.strip().splitlines()[-1],
        "seconds": round(seconds, 3),
        "peer_bytes": stats.peer_bytes,
        "origin_bytes": stats.origin_bytes,
    }


def _offline_snapshot(cache: Path, commit: str) -> str:
    """What huggingface_hub returns for the release with no network at all (a subprocess: it reads
    ``HF_HUB_OFFLINE`` at import)."""
    import subprocess
    import sys

    code = (
        "import sys; from huggingface_hub import snapshot_download; "
        "print(snapshot_download(sys.argv[1], revision=sys.argv[2], cache_dir=sys.argv[3]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, REPO_ID, commit, str(cache)],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=120,
    )
    return done.stdout.strip().splitlines()[-1] if done.returncode == 0 and done.stdout.strip() else ""


def run(args: argparse.Namespace) -> int:
    from swarmhub.create.release import CreateRequest, create_release_torrent
    from swarmhub.devhub import DevHub
    from swarmhub.engine.check import check_files
    from swarmhub.registry.server import RegistryServer

    root: Path = args.dir or Path(tempfile.mkdtemp(prefix="swarmhub-demo-"))
    say = (lambda *a: None) if args.json else print
    repo = make_demo_release(root, args.size_mb)
    say(f"1. demo release    {REPO_ID} in {repo}")
    results: dict[str, Any] = {"dir": str(root)}
    with DevHub(root) as hub:
        # The Hub misbehaves now and then; swarmhub retries, resumes and re-resolves.
        hub.faults.respond("/lfs/*", 429, retry_after=1, times=1)
        hub.faults.reset("/lfs/*", after_bytes=1_000_000, times=1)
        say(f"2. local origin    {hub.endpoint} (one 429 and one mid-download reset armed)")
        created: dict[str, CreatedTorrent] = {}
        formats: tuple[Format, ...] = ("hybrid", "v1")
        for fmt in formats:
            started = time.monotonic()
            request = CreateRequest("model", REPO_ID, "main", format=fmt)
            progress = Progress(f"streaming ({fmt})", enabled=None if not args.json else False)
            created[fmt] = asyncio.run(_stream(hub.endpoint, request, progress))
            out = root / f"{created[fmt].torrent.name}.{fmt}.torrent"
            atomic_write(out, created[fmt].data)
            origin = sum(e.body_bytes for e in hub.log.entries())
            results[fmt] = {
                **torrent_json(created[fmt].torrent),
                "path": str(out),
                "seconds": round(time.monotonic() - started, 3),
            }
            say(
                f"3. streamed {fmt:6} {out.name}: {human_size(created[fmt].torrent.total_size)} hashed, "
                f"{human_size(origin)} from the origin so far, nothing stored"
            )
        results["origin_429s"] = sum(1 for e in hub.log.entries() if e.status == 429)
        say(
            f"   the origin answered 429 {results['origin_429s']} time(s) and reset one download midway: "
            "retried after Retry-After, resumed from the byte it stopped at"
        )
        with RegistryServer(root / "registry.db", upstream=hub.endpoint) as registry:
            assert registry.catalog is not None
            token = registry.catalog.create_token(f"demo-{time.time_ns()}")
            say(f"4. registry        {registry.url} (SQLite {registry.db}; website, API, tracker, gateway)")
            hub.log.clear()

            def served() -> int:  # file bytes the origin sent (regular files and the CDN's LFS objects)
                return sum(e.body_bytes for e in hub.log.entries("/lfs/*")) + sum(
                    e.body_bytes for e in hub.log.entries("/*/resolve/*")
                )

            swarm = asyncio.run(_swarm(hub.endpoint, registry.url, token, root / "nodes", served))
            results["swarm"] = swarm
            results["registry"] = {"url": registry.url, "db": str(registry.db)}
            say(f"   published        {swarm['torrent_url']}\n                    {swarm['classic_torrent_url']}")
            size = created["hybrid"].torrent.total_size
            say(
                f"   node A          pulled {human_size(size)} by name: {human_size(swarm['a']['origin_bytes'])} "
                "through the registry's web-seed gateway (no peer had it yet); now seeding"
            )
            for name in ("b", "c"):
                node = swarm[name]
                say(
                    f"   node {name.upper()}          {human_size(node['peer_bytes'])} from peers found through the "
                    f"registry's tracker, {human_size(node['origin_bytes'])} from the origin, {node['seconds']:.1f} s"
                )
            say(
                f"   the origin sent {human_size(swarm['origin_bytes_nodes'])} for the three nodes (and "
                f"{human_size(swarm['origin_bytes_publishing'])} to publish: both torrents from one streamed pass)"
            )
            hub.log.clear()
            commit = created["hybrid"].torrent.repo.commit if created["hybrid"].torrent.repo else ""
            via = _through_node(hub.endpoint, registry.url, root / "nodes", commit)
            via["lfs_from_origin"] = sum(e.body_bytes for e in hub.log.entries("/lfs/*"))
            results["node"] = via
            say(
                f"5. node daemon     node D at {via['url']}: HF_ENDPOINT={via['url']} snapshot_download "
                f"got the release in {via['seconds']:.1f} s;\n                   node D fetched "
                f"{human_size(via['peer_bytes'])} from node C while the program read, "
                f"{human_size(via['lfs_from_origin'])} of weights from the origin"
            )
            if args.serve:
                say(f"\nthe registry's website: {registry.url}/ (Ctrl-C stops)")
                with contextlib.suppress(KeyboardInterrupt):
                    while True:
                        time.sleep(1)

    hybrid = created["hybrid"]
    commit = hybrid.torrent.repo.commit if hybrid.torrent.repo else ""
    local = asyncio.run(create_release_torrent(CreateRequest("model", REPO_ID, commit, from_dir=repo), None))
    identical = local.data == hybrid.data
    results["from_dir_identical"] = identical
    say(f"6. from disk       same torrent as streamed: {'yes' if identical else 'NO'}")

    view = root / "libtorrent-view"
    view.mkdir(exist_ok=True)
    link = view / hybrid.torrent.name
    if not link.is_symlink():
        os.symlink(repo, link)
    check = check_files(hybrid.data, view)
    results["libtorrent_check"] = {"pieces": check.pieces, "valid": check.valid_pieces}
    say(
        f"7. libtorrent      {check.valid_pieces}/{check.pieces} pieces valid, info-hashes "
        f"{'match' if check.info_hash_v1 == hybrid.torrent.info_hash_v1 else 'DIFFER'}"
    )
    landed = _offline_snapshot(root / "nodes" / "c" / "hub", commit)
    results["landed"] = landed
    say(f"8. landed          {landed or 'NOT FOUND'}")
    say("                   (huggingface_hub, offline, finds it there: HF_HUB_OFFLINE=1 snapshot_download)")
    swarm_ok = landed == results["swarm"]["c"]["path"] and all(
        results["swarm"][n]["origin_bytes"] == 0 for n in ("b", "c")
    )
    got = Path(results["node"]["snapshot"])
    node_ok = results["node"]["lfs_from_origin"] == 0 and all(
        (got / p.relative_to(repo)).read_bytes() == p.read_bytes()
        for p in repo.rglob("*")
        if p.is_file() and ".git" not in p.relative_to(repo).parts
    )
    say(f"                   the program's files are the release's: {'yes' if node_ok else 'NO'}")
    ok = identical and check.complete and check.info_hash_v2 == hybrid.torrent.info_hash_v2 and swarm_ok and node_ok
    results["ok"] = ok
    if args.json:
        print_json(results)
    else:
        print()
        print(torrent_text(hybrid.torrent))
        print(f"\ntorrents: {results['hybrid']['path']}\n          {results['v1']['path']}")
        print(f"the registry's website: swarmhub registry serve --db {results['registry']['db']}  (then open its URL)")
        print("demo " + ("passed" if ok else "FAILED"))
    if not ok:
        raise SwarmhubError("the demo's checks failed (see above)")
    return 0
