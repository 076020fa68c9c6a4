"""``swarmhub shards``: split a GGUF into shards, run a shard node, and send it commands.

- ``shards split MODEL.gguf --shards N --out DIR``  gguf-split files and their manifest (``DIR/shards.json``);
- ``shards serve --shards-dir DIR``                 seed the folder's shards, answer ``POST /command``;
- ``shards ls NODE`` / ``shards load NODE SHARD`` / ``shards exec NODE TASK.json``  one command each.

A node's command token: ``SWARMHUB_SHARDS_TOKEN``, else the cluster's ``SWARMHUB_CLUSTER_TOKEN`` when the node has
a coordinator, else one it makes at start. The commands send the token a node on this machine recorded (a
loopback NODE_URL), else ``SWARMHUB_SHARDS_TOKEN``, else ``SWARMHUB_CLUSTER_TOKEN``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from swarmhub.cli.args import add_allow_host, parse_address
from swarmhub.cli.engineopts import add_engine_options, engine_params
from swarmhub.cli.output import human_size, print_json
from swarmhub.errors import ShardError, UsageError

if TYPE_CHECKING:
    from swarmhub.shards.manifest import Manifest

__all__ = ["register"]

DEFAULT_PORT = 8500
DEFAULT_BT_PORT = 6882  # the node daemon takes 6881


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    shards = sub.add_parser(
        "shards",
        help="shards for distributed inference: split, serve, load from peers, run tasks",
        description="A shard node seeds every .gguf/.safetensors file of its folder and answers commands at "
        "POST /command: LOAD_SHARD (from disk, or from peers by torrent, verified, memory-mapped), LIST_FILES, "
        "EXECUTE_TASK (list_tensors, metadata, matvec, stats), UNLOAD_SHARD. A shard set's manifest "
        "(shards.json, written by 'shards split') tells every node what each shard is before anyone has it.",
    )
    s_sub = shards.add_subparsers(dest="shards_command", metavar="COMMAND", required=True)

    split = s_sub.add_parser("split", help="split a GGUF model into N loadable shards and write their manifest")
    split.add_argument("model", type=Path, metavar="MODEL.gguf")
    split.add_argument("--shards", type=int, required=True, metavar="N", help="how many shards")
    split.add_argument("--out", type=Path, required=True, metavar="DIR", help="where the shards and shards.json go")
    split.add_argument("--json", action="store_true", help="print the manifest's summary as JSON")
    split.set_defaults(func=_split)

    serve = s_sub.add_parser("serve", help="run a shard node until Ctrl-C or SIGTERM")
    serve.add_argument("--shards-dir", type=Path, required=True, metavar="DIR", help="the node's shard folder")
    serve.add_argument("--host", default="127.0.0.1", help="address of the control API (default: 127.0.0.1)")
    serve.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"its port (default: {DEFAULT_PORT}; 0: any)")
    serve.add_argument(
        "--coordinator",
        metavar="URL",
        help="announce to its tracker and put the manifest there (default: $SWARMHUB_COORDINATOR)",
    )
    known = serve.add_mutually_exclusive_group()
    known.add_argument(
        "--manifest", metavar="FILE|URL", help="the shard set's manifest (default: DIR/shards.json when there)"
    )
    known.add_argument(
        "--shard-set",
        metavar="NAME",
        help="with --coordinator and no manifest: take the manifest the coordinator has under NAME",
    )
    serve.add_argument(
        "--peer", action="append", default=[], type=parse_address, metavar="HOST:PORT", help="a peer to fetch from"
    )
    serve.add_argument(
        "--dht-bootstrap",
        action="append",
        type=parse_address,
        metavar="HOST:PORT",
        help="with --public: join a private DHT (a LAN) through this node, e.g. another shard node's BitTorrent "
        "port, instead of the public DHT's routers; repeatable",
    )
    serve.add_argument(
        "--trust-peers",
        action="append",
        default=[],
        metavar="CIDR,...",
        help="networks or addresses a LOAD_SHARD may name as peers, besides loopback and the coordinator "
        "(e.g. 10.0.0.0/8,192.168.1.7; repeatable)",
    )
    add_allow_host(
        serve,
        "a Host name the control API answers besides 127.0.0.1, localhost and [::1] (repeatable)",
    )
    serve.add_argument("--node-id", help="this node's name in messages (default: host name and BitTorrent port)")
    serve.add_argument(
        "--load-timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="a fetch with no verified piece for this long fails (default: 60)",
    )
    serve.add_argument("--json", action="store_true", help="print one JSON line when ready")
    add_engine_options(serve, default_port=DEFAULT_BT_PORT)
    serve.set_defaults(func=_serve)

    ls = s_sub.add_parser("ls", help="LIST_FILES: the shards a node can serve")
    ls.add_argument("node", metavar="NODE_URL")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=_ls)

    load = s_sub.add_parser("load", help="LOAD_SHARD: a node loads a shard (fetching it from peers if needed)")
    load.add_argument("node", metavar="NODE_URL")
    load.add_argument("shard_id", metavar="SHARD_ID")
    load.add_argument("--peer", action="append", default=[], metavar="HOST:PORT", help="also fetch from this peer")
    load.add_argument("--timeout", type=float, metavar="SECONDS", help="the node's no-progress limit for this load")
    load.add_argument("--json", action="store_true")
    load.set_defaults(func=_load)

    run = s_sub.add_parser("exec", help="EXECUTE_TASK: run a task on a node's shard")
    run.add_argument("node", metavar="NODE_URL")
    run.add_argument(
        "task",
        metavar="TASK.json",
        help="the task's params ({task_type, shard_id, ...}) or a whole message; - for stdin",
    )
    run.add_argument("--json", action="store_true")
    run.set_defaults(func=_exec)


# ----------------------------------------------------------------------------------------------- client


def _send(node: str, command: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """One command to ``node``, with the token the module's docstring says."""
    from swarmhub.settings import Settings
    from swarmhub.shards.client import recorded_token, send_command

    token = (
        recorded_token(Settings.from_env().state_dir, node)
        or os.environ.get("SWARMHUB_SHARDS_TOKEN")
        or os.environ.get("SWARMHUB_CLUSTER_TOKEN")
        or None
    )
    return send_command(node, command, params, token=token)


# --------------------------------------------------------------------------------------------- commands


def _split(args: argparse.Namespace) -> int:
    from swarmhub.shards.split import split_gguf

    if not args.model.is_file():
        raise UsageError(f"no such file: {args.model}")
    result = split_gguf(args.model, args.shards, args.out)
    if args.json:
        print_json(
            {
                "manifest": str(result.manifest_path),
                "shards": [
                    {**{k: v for k, v in e.to_json().items() if k != "torrent"}, "shard_id": e.shard_id, "tensors": n}
                    for e, n in zip(result.manifest.shards, result.tensors_per_shard, strict=True)
                ],
            }
        )
        return 0
    for entry, tensors in zip(result.manifest.shards, result.tensors_per_shard, strict=True):
        print(
            f"{entry.shard_id:>4}  {entry.filename}  {human_size(entry.size):>10}  {tensors} tensors  {entry.info_hash}"
        )
    print(f"manifest: {result.manifest_path} (serve: swarmhub shards serve --shards-dir {args.out})")
    return 0


def _read_manifest(where: str) -> bytes:
    if where.startswith(("http://", "https://")):
        import httpx

        try:
            response = httpx.get(where, timeout=30, follow_redirects=True)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            raise ShardError(f"cannot fetch the manifest {where}: {exc}") from exc
        return response.content
    try:
        return Path(where).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read the manifest {where}: {exc.strerror or exc}") from exc


def _node_manifest(
    args: argparse.Namespace, coordinator: str | None, token: str | None
) -> tuple[Manifest | None, str | None, bool]:
    """The node's manifest, where it came from (--manifest, DIR/shards.json, the coordinator's NAME), and
    whether it came from the coordinator (then it is not put back there)."""
    from swarmhub.shards.manifest import Manifest, shard_set_name
    from swarmhub.shards.server import fetch_manifest
    from swarmhub.shards.split import MANIFEST_NAME

    own = args.shards_dir / MANIFEST_NAME
    where = args.manifest or (str(own) if own.is_file() else None)
    if where:
        manifest = Manifest.from_json(_read_manifest(where))
        if args.shard_set and shard_set_name(manifest) != args.shard_set:
            raise UsageError(
                f"{where} is shard set {shard_set_name(manifest)!r}, not {args.shard_set!r}: "
                "drop --shard-set or serve another folder"
            )
        return manifest, where, False
    if not args.shard_set:
        return None, None, False
    if not coordinator:
        raise UsageError("--shard-set NAME takes the manifest from a coordinator: give --coordinator URL")
    manifest = fetch_manifest(coordinator, args.shard_set, token=token)
    return manifest, f"{args.shard_set} from the coordinator", True


def _serve(args: argparse.Namespace) -> int:
    from swarmhub.serving import run_until_interrupted
    from swarmhub.settings import Settings
    from swarmhub.shards.server import ShardServer

    coordinator = args.coordinator or os.environ.get("SWARMHUB_COORDINATOR") or None
    token = os.environ.get("SWARMHUB_CLUSTER_TOKEN") or None
    if args.dht_bootstrap and not args.public:
        raise UsageError("--dht-bootstrap joins a DHT, which only --public turns on: add --public")
    command_token, token_from = _command_token(coordinator, token)
    manifest, where, fetched = _node_manifest(args, coordinator, token)
    profile, listen, extra = engine_params(args)
    server = ShardServer(
        args.shards_dir,
        args.host,
        args.port,
        manifest=manifest,
        coordinator=coordinator,
        peers=args.peer,
        profile=profile,
        listen=listen,
        engine_settings=extra,
        dht_bootstrap=args.dht_bootstrap,
        load_timeout=args.load_timeout,
        node_id=args.node_id,
        cluster_token=token,
        publish=not fetched,
        token=command_token,
        state_dir=Settings.from_env().state_dir,
        trust_peers=args.trust_peers,
        allow_hosts=args.allow_host,
    )

    def ready() -> None:
        files = server.agent.list_files()
        credential = token_from or f"made at start, in {server.record}"
        if args.json:
            info = {"url": server.url, "node_id": server.agent.node_id, "bt_port": server.agent.engine.listen_port}
            info |= {"token_file": str(server.record), "token_from": token_from or "made at start"}
            print(json.dumps({**info, "files": files, "problems": server.store.problems}), flush=True)
            return
        for problem in server.store.problems:
            print(f"swarmhub: warning: {problem}", file=sys.stderr)
        print(
            f"shard node {server.agent.node_id} at {server.url}: seeding {len(files)} shard(s) "
            f"from {args.shards_dir} (BitTorrent port {server.agent.engine.listen_port}"
            f"{', manifest ' + where if where else ''}); commands need its token ({credential})",
            flush=True,
        )

    run_until_interrupted(server, ready)
    return 0


def _command_token(coordinator: str | None, cluster_token: str | None) -> tuple[str | None, str | None]:
    """The node's command token and the variable it came from; (None, None): the node makes one."""
    own = os.environ.get("SWARMHUB_SHARDS_TOKEN")
    if own:
        return own, "SWARMHUB_SHARDS_TOKEN"
    if coordinator and cluster_token:  # the orchestrator that drives the cluster's nodes holds the cluster token
        return cluster_token, "SWARMHUB_CLUSTER_TOKEN"
    return None, None


def _ls(args: argparse.Namespace) -> int:
    result = _send(args.node, "LIST_FILES")
    if args.json:
        print_json(result)
        return 0
    loaded = set(result.get("loaded") or [])
    for f in result.get("files") or []:
        mark = "loaded" if f["shard_id"] in loaded else ""
        print(f"{f['shard_id']:>4}  {f['filename']}  {human_size(f['size']):>10}  {f['info_hash']}  {mark}".rstrip())
    return 0


def _load(args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"shard_id": args.shard_id}
    if args.peer:
        params["peers"] = args.peer
    if args.timeout is not None:
        params["timeout"] = args.timeout
    result = _send(args.node, "LOAD_SHARD", params)
    if args.json:
        print_json(result)
    else:
        print(f"shard {result['shard_id']} {result['status']} from {result.get('source')}: {result['path']}")
    return 0


def _exec(args: argparse.Namespace) -> int:
    try:
        text = sys.stdin.read() if args.task == "-" else Path(args.task).read_text()
        task = json.loads(text)
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read the task {args.task}: {exc}") from exc
    if not isinstance(task, dict):
        raise UsageError("a task is a JSON object: {task_type, shard_id, ...} or a whole EXECUTE_TASK message")
    if "command" in task:  # a whole message: sent as it is
        params = task.get("params") or {}
        result = _send(args.node, str(task["command"]), params)
    else:
        result = _send(args.node, "EXECUTE_TASK", task)
    if args.json:
        print_json(result)
        return 0
    summary = result.get("summary")
    if result.get("task_type") == "list_tensors":
        for t in result.get("tensors") or []:
            print(f"{t['name']:<40} {t['type']:>6} {'x'.join(map(str, t['shape'])):>14} {human_size(t['n_bytes']):>10}")
    elif summary is not None:
        print(json.dumps({k: v for k, v in result.items() if k != "result"}, indent=2))
    else:
        print_json(result)
    return 0
