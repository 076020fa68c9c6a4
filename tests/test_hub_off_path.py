"""Issue 14: a node that holds a release answers programs without asking the Hub — by commit with no upstream
request at all, by branch with one lookup per TTL, and through a Hub that answers 429 or is down — while the
Hub still decides who may read a gated repo.

Real things: a node daemon, `swarmhub pull` into its cache (which confirms the releases against the dev hub),
huggingface_hub 2.x (and 0.36 in its own venv), datasets, transformers and the `hf` CLI as programs; the dev
hub counts every request it gets."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from support.cli import run_cli
from support.swarm import pull, sha256, snapshot_files, swarmhub
from swarmhub.devhub import DevHub
from swarmhub.node.daemon import Node
from swarmhub.settings import Settings

MODEL = "org/tiny-model"
DATASET = "org/tiny-data"
GATED = "org/gated-model"
UNHELD = "org/not-in-the-swarm"  # on the dev hub, never pulled: the node relays it
TOKEN = "hf_gatedTOKENgated0123456789"
BRANCH_TTL = 2
# A real (if tiny) architecture, so transformers' AutoConfig reads it.
TINY_BERT = {
    "architectures": ["BertModel"],
    "model_type": "bert",
    "hidden_size": 8,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "intermediate_size": 16,
    "vocab_size": 8,
    "max_position_embeddings": 16,
}


def _model_files() -> dict[str, bytes]:
    files = {
        ".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n",
        "README.md": b"# tiny\n",
        "config.json": json.dumps(TINY_BERT).encode(),
        "generation_config.json": b"{}",
        "tokenizer.json": b'{"version": "1.0"}',
        "tokenizer_config.json": b"{}",
        "special_tokens_map.json": b"{}",
        "vocab.txt": b"a\nb\n",
    }
    for i in range(3):
        files[f"model-0000{i + 1}-of-00003.safetensors"] = os.urandom(300_000 + i)
    files["model.safetensors.index.json"] = b'{"weight_map": {}}'
    return files


def _dataset_files() -> dict[str, bytes]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = {
        ".gitattributes": b"*.parquet filter=lfs diff=lfs merge=lfs -text\n",
        "README.md": (
            b"---\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n"
            b"    path: data/train-*.parquet\n---\n# data\n"
        ),
    }
    for i in range(2):
        table = pa.table({"id": list(range(i * 50, i * 50 + 50)), "text": [f"row {n}" for n in range(50)]})
        out = io.BytesIO()
        pq.write_table(table, out)
        files[f"data/train-0000{i}-of-00002.parquet"] = out.getvalue()
    return files


def _write(folder: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)


class World:
    def __init__(
        self, root: Path, hub: DevHub, node: Node, files: dict[str, dict[str, bytes]], commits: dict[str, str]
    ):
        self.root, self.hub, self.node, self.files, self.commits = root, hub, node, files, commits
        self._n = 0

    def fresh(self) -> Path:
        """An empty HF cache for one program."""
        self._n += 1
        return self.root / f"client-{self._n}"

    def program_env(self, cache: Path, **extra: str) -> dict[str, str]:
        return {
            **os.environ,
            "HF_ENDPOINT": self.node.url,
            "HF_HUB_CACHE": str(cache),
            "HF_HOME": str(cache / "home"),
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HUB_DISABLE_XET": "1",
            "HF_HUB_DISABLE_PROGRESS_BARS": "1",
            **extra,
        }


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("offpath")
    files = {MODEL: _model_files(), DATASET: _dataset_files(), GATED: _model_files()}
    _write(root / "origin" / "models" / MODEL, files[MODEL])
    _write(root / "origin" / "datasets" / DATASET, files[DATASET])
    _write(root / "origin" / "models" / GATED, files[GATED])
    _write(root / "origin" / "models" / UNHELD, {"config.json": b'{"held": false}'})
    cache = root / "node" / "hub"
    commits = {}
    with DevHub(root / "origin") as hub:
        hub.settings = dataclasses.replace(hub.settings, gated={GATED: TOKEN})
        for repo, kind in ((MODEL, "model"), (DATASET, "dataset"), (GATED, "model")):
            torrent = root / f"{repo.replace('/', '--')}.torrent"
            env = {"HF_TOKEN": TOKEN} if repo == GATED else {}
            made = subprocess.run(
                swarmhub("create", repo, "--repo-type", kind, "--endpoint", hub.endpoint, "-o", torrent, "--json"),
                capture_output=True, text=True, env={**os.environ, **env}, timeout=120,
            )  # fmt: skip
            assert made.returncode == 0, made.stderr
            done = pull(
                f"{repo}@main", "--repo-type", kind, "--torrent", torrent, "--endpoint", hub.endpoint,
                "--cache-dir", cache, env=env,
            )  # fmt: skip
            commits[repo] = done["commit"]
        settings = dataclasses.replace(Settings.from_env().with_cache(cache), token=None, branch_ttl=BRANCH_TTL)
        made = World(root, hub, Node(settings, port=0, upstream=hub.endpoint).start(), files, commits)
        try:
            yield made
        finally:
            made.node.stop()  # the one running now (a test may have restarted it)


@pytest.fixture
def hub(world: World) -> Iterator[DevHub]:
    world.hub.faults.clear()
    world.hub.log.clear()
    yield world.hub
    world.hub.faults.clear()


def _snapshot(world: World, repo: str, **kw: object) -> dict[str, bytes]:
    from huggingface_hub import snapshot_download

    path = snapshot_download(repo, endpoint=world.node.url, cache_dir=world.fresh(), **kw)  # type: ignore[arg-type]
    return snapshot_files(Path(path))


def test_a_pinned_commit_makes_no_hub_request(world: World, hub: DevHub) -> None:
    """snapshot_download of a commit the node holds: every answer from the swarm, the Hub asked nothing."""
    got = _snapshot(world, MODEL, revision=world.commits[MODEL])
    assert got == world.files[MODEL]
    assert [f"{e.method} {e.path}" for e in hub.log.entries()] == []
    stats = world.node.counters()
    assert stats["endpoint_metadata_answers"] >= 1 and stats["endpoint_swarm_answers"] >= len(world.files[MODEL])


def _kinds(hub: DevHub) -> dict[str, int]:
    out: dict[str, int] = {}
    for e in hub.log.entries():
        kind = "revision" if "/revision/" in e.path else "resolve" if "/resolve" in e.path else e.path
        out[kind] = out.get(kind, 0) + 1
    return out


def _lookups_allowed(seconds: float) -> int:
    """Revision lookups a node may make in ``seconds`` of programs: one per TTL begun."""
    return 1 + int(seconds // BRANCH_TTL)


def test_a_branch_costs_one_lookup_per_ttl(world: World, hub: DevHub) -> None:
    """By branch: one revision lookup per TTL for the node, however many programs; no resolve."""
    time.sleep(BRANCH_TTL + 0.5)  # whatever an earlier test left is stale now
    start = time.monotonic()
    for _ in range(3):
        assert _snapshot(world, MODEL) == world.files[MODEL]
    kinds = _kinds(hub)
    assert set(kinds) == {"revision"} and kinds["revision"] <= _lookups_allowed(time.monotonic() - start), kinds


@pytest.mark.parametrize("fault", ["429", "503", "reset", "down"])
def test_programs_complete_while_the_hub_fails(world: World, hub: DevHub, fault: str) -> None:
    """Every request to the Hub fails; programs by branch and by commit get the release, the branch answers
    say how old their head is."""
    time.sleep(BRANCH_TTL + 0.5)
    if fault == "429":
        hub.faults.respond("*", 429, retry_after=30)
    elif fault == "503":
        hub.faults.respond("*", 503)
    elif fault == "reset":
        hub.faults.reset("*", after_bytes=0)
    with _upstream_down(world) if fault == "down" else contextlib.nullcontext():
        assert _snapshot(world, MODEL) == world.files[MODEL]
        assert _snapshot(world, MODEL, revision=world.commits[MODEL]) == world.files[MODEL]
        answer = httpx.get(f"{world.node.url}/api/datasets/{DATASET}", timeout=10)
        assert answer.status_code == 200 and answer.json()["sha"] == world.commits[DATASET]
        assert int(answer.headers["x-swarmhub-stale"]) >= BRANCH_TTL
        assert world.node.counters()["endpoint_stale_answers"] >= 1


def _restart(world: World, upstream: str | None = None) -> None:
    """The node stopped and started again (its state, records and cache kept, its memory of the Hub lost)."""
    settings, upstream = world.node.settings, upstream or world.node.upstream_url
    world.node.stop()
    world.node = Node(settings, port=0, upstream=upstream).start()


@contextlib.contextmanager
def _upstream_down(world: World) -> Iterator[None]:
    """The node restarted with an upstream nobody listens on, then with its own again."""
    upstream = world.node.upstream_url
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    _restart(world, dead)
    try:
        yield
    finally:
        _restart(world, upstream)


def _hashes(files: dict[str, bytes]) -> dict[str, str]:
    return {path: sha256(data) for path, data in files.items()}


def _program(script: str, env: dict[str, str], timeout: float = 120) -> Any:
    """``python -c script`` as a user runs it; its last line of stdout, as JSON."""
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"the program failed ({done.returncode}):\n{done.stderr[-4000:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def _asked_besides_lookups(hub: DevHub, repo: str) -> list[str]:
    """What the Hub was asked about ``repo`` that is not a branch lookup: should be nothing. (Clients ask other
    things of HF_ENDPOINT too: huggingface_hub 2.x fetches ``/api/agent-harnesses`` once a day.)"""
    return [f"{e.method} {e.path} -> {e.status}" for e in hub.log.entries(f"*{repo}*") if "/revision/" not in e.path]


# ----------------------------------------------------------------------------- huggingface_hub 0.36


OLD_SNAPSHOTS = """
import hashlib, json, os
from pathlib import Path
from huggingface_hub import snapshot_download, __version__
out = {"version": __version__}
for name, revision in json.loads(os.environ["REVISIONS"]).items():
    cache = os.path.join(os.environ["CACHE"], name)
    folder = Path(snapshot_download(os.environ["REPO"], revision=revision, cache_dir=cache))
    files = {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in folder.rglob("*") if p.is_file()
    }
    out[name] = {"commit": folder.name, "files": files}
print(json.dumps(out))
"""


def test_old_huggingface_hub_by_commit_and_branch(world: World, hub: DevHub, old_client: Any) -> None:
    """huggingface_hub 0.36 (repo info with ``siblings``, a HEAD and a GET per file): by commit the Hub is asked
    nothing; by branch and by commit it completes while the Hub answers 429 to everything."""
    commit, expected = world.commits[MODEL], _hashes(world.files[MODEL])
    env = world.program_env(world.fresh(), REPO=MODEL)
    out = old_client.run(OLD_SNAPSHOTS, {**env, "CACHE": env["HF_HUB_CACHE"], "REVISIONS": json.dumps({"c": commit})})
    assert out["version"].startswith("0.36.")
    assert out["c"] == {"commit": commit, "files": expected}
    assert [f"{e.method} {e.path}" for e in hub.log.entries()] == []

    time.sleep(BRANCH_TTL + 0.5)
    hub.faults.respond("*", 429, retry_after=30)
    env = world.program_env(world.fresh(), REPO=MODEL)
    revisions = json.dumps({"branch": "main", "commit": commit})
    out = old_client.run(OLD_SNAPSHOTS, {**env, "CACHE": env["HF_HUB_CACHE"], "REVISIONS": revisions})
    assert out["branch"] == out["commit"] == {"commit": commit, "files": expected}
    assert _asked_besides_lookups(hub, MODEL) == []
    assert {e.status for e in hub.log.entries()} == {429}


# ---------------------------------------------------------------------------------------------- datasets


LOAD_DATASET = """
import json, os
from datasets import load_dataset
data = load_dataset(os.environ["REPO"], split="train")
print(json.dumps({"rows": data.num_rows, "ids": sorted(data["id"]), "texts": sorted(set(data["text"]))}))
"""


@pytest.mark.parametrize("fault", [None, "429"])
def test_load_dataset_through_the_node(world: World, hub: DevHub, fault: str | None) -> None:
    """``datasets.load_dataset`` by branch: its README, the ``{name}.py`` it must not find, the tree, paths-info
    and the parquet files all from the swarm; the Hub sees branch lookups only, one per TTL (healthy), or
    nothing that succeeds (429 to everything) and the dataset still loads."""
    time.sleep(BRANCH_TTL + 0.5)
    if fault == "429":
        hub.faults.respond("*", 429, retry_after=30)
    cache = world.fresh()
    before = world.node.counters()
    start = time.monotonic()
    out = _program(LOAD_DATASET, world.program_env(cache, REPO=DATASET, HF_DATASETS_CACHE=str(cache / "datasets")))
    took = time.monotonic() - start
    assert out["rows"] == 100 and out["ids"] == list(range(100)) and len(out["texts"]) == 50
    snapshot = cache / f"datasets--{DATASET.replace('/', '--')}" / "snapshots" / world.commits[DATASET]
    got = snapshot_files(snapshot)
    parquet = {p for p in world.files[DATASET] if p.endswith(".parquet")}
    assert parquet <= set(got) and all(world.files[DATASET][p] == data for p, data in got.items())
    assert _asked_besides_lookups(hub, DATASET) == []  # no resolve, tree, paths-info or repo info reached the Hub
    lookups = hub.log.entries("*/revision/*")
    assert {e.status for e in lookups} == ({200} if fault is None else {429})
    if fault is None:  # (how often a failing Hub is asked: test_a_failing_hub_is_asked_once_per_ttl_too)
        assert len(lookups) <= _lookups_allowed(took), [e.path for e in lookups]
    # Measured (datasets 5.2): 12 answers, all the node's own — README, 2 parquet files (HEAD + GET each),
    # revision by commit, tree, paths-info, and EntryNotFound for {name}.py, .huggingface.yaml, dataset_infos.json.
    done = {k: n - before.get(k, 0) for k, n in world.node.counters().items()}
    assert done["endpoint_swarm_answers"] >= 2 * len(parquet) and done["endpoint_metadata_answers"] >= 2, done
    assert done["endpoint_missing_answers"] >= 1, done  # the {name}.py it must not find: EntryNotFound, no 404
    assert done["endpoint_stale_answers"] >= (0 if fault is None else 1), done


def test_a_failing_hub_is_asked_once_per_ttl_too(world: World, hub: DevHub) -> None:
    """While the Hub answers 429 (Retry-After: 30), programs asking for main get the last head known; the node
    asks the Hub again no more than once per TTL (it was asked to wait), not once per program request."""
    time.sleep(BRANCH_TTL + 0.5)
    hub.faults.respond("*", 429, retry_after=30)
    start = time.monotonic()
    for _ in range(10):
        answer = httpx.get(f"{world.node.url}/api/models/{MODEL}/revision/main", timeout=15)
        assert answer.status_code == 200 and answer.json()["sha"] == world.commits[MODEL], answer.headers
        assert "x-swarmhub-stale" in answer.headers
    lookups = hub.log.entries(f"/api/models/{MODEL}/revision/main")
    assert len(lookups) <= _lookups_allowed(time.monotonic() - start), f"{len(lookups)} lookups for 10 requests"


# ------------------------------------------------------------------------------------------ transformers


AUTOCONFIG = """
import json, os
from transformers import AutoConfig
config = AutoConfig.from_pretrained(os.environ["REPO"])
print(json.dumps({"model_type": config.model_type, "hidden_size": config.hidden_size, "class": type(config).__name__}))
"""


def test_transformers_autoconfig_while_the_hub_answers_429(world: World, hub: DevHub) -> None:
    """``AutoConfig.from_pretrained`` by branch: the config from the swarm, the Hub's 429s never seen."""
    time.sleep(BRANCH_TTL + 0.5)
    hub.faults.respond("*", 429, retry_after=30)
    cache = world.fresh()
    out = _program(AUTOCONFIG, world.program_env(cache, REPO=MODEL))
    assert out == {"model_type": "bert", "hidden_size": TINY_BERT["hidden_size"], "class": "BertConfig"}
    snapshot = cache / f"models--{MODEL.replace('/', '--')}" / "snapshots" / world.commits[MODEL]
    assert (snapshot / "config.json").read_bytes() == world.files[MODEL]["config.json"]
    assert _asked_besides_lookups(hub, MODEL) == []


# ------------------------------------------------------------------------------------------------ hf CLI


def test_hf_cli_download_while_the_hub_answers_503(world: World, hub: DevHub) -> None:
    """``hf download REPO --revision main``: the whole snapshot from the swarm while the Hub answers 503."""
    time.sleep(BRANCH_TTL + 0.5)
    hub.faults.respond("*", 503)
    cache = world.fresh()
    hf = Path(sys.executable).parent / "hf"
    done = subprocess.run(
        [str(hf), "download", MODEL, "--revision", "main", "--cache-dir", str(cache)],
        env=world.program_env(cache, HF_HUB_DISABLE_UPDATE_CHECK="1"),
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    said = [line.split("path:", 1)[1].strip() for line in done.stdout.splitlines() if "path:" in line]
    assert len(said) == 1, done.stdout  # "✓ Downloaded" then "  path: <snapshot folder>"
    folder = Path(said[0])
    assert folder.name == world.commits[MODEL]
    assert snapshot_files(folder) == world.files[MODEL]
    assert _asked_besides_lookups(hub, MODEL) == []
    assert {e.status for e in hub.log.entries()} == {503}


# ------------------------------------------------------------------------------------------- gated repo


def _download(world: World, repo: str, path: str, **kw: object) -> bytes:
    from huggingface_hub import hf_hub_download

    got = hf_hub_download(repo, path, endpoint=world.node.url, cache_dir=world.fresh(), **kw)  # type: ignore[arg-type]
    return Path(got).read_bytes()


def _get_gated(world: World, path: str, token: str | None) -> httpx.Response:
    """A GET of a file of the gated release through the node, by commit."""
    headers = {"authorization": f"Bearer {token}"} if token else {}
    url = f"{world.node.url}/{GATED}/resolve/{world.commits[GATED]}/{path}"
    return httpx.get(url, headers=headers, timeout=15)


def test_a_gated_repo_is_the_hubs_decision(world: World, hub: DevHub) -> None:
    """The Hub decides once per credential (one HEAD with the program's token); while it cannot be asked, the
    credential it allowed is still served, another one or none is refused, with the Hub's headers, no bytes."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError

    _restart(world)  # no decision in memory from an earlier test
    hub.log.clear()
    commit, files = world.commits[GATED], world.files[GATED]
    weights = "model-00001-of-00003.safetensors"
    assert _snapshot(world, GATED, revision=commit, token=TOKEN) == files
    asked = [(e.method, e.path, e.token, e.status) for e in hub.log.entries()]
    assert len(asked) == 1 and asked[0][0] == "HEAD" and asked[0][2] == TOKEN and asked[0][3] in (200, 302, 307)
    assert asked[0][1].startswith(f"/{GATED}/resolve/{commit}/")

    # No token while the Hub answers: its refusal passed on (and remembered for the refusal TTL).
    with pytest.raises(GatedRepoError):
        _download(world, GATED, "config.json", revision=commit, token=False)
    answer = _get_gated(world, weights, None)
    assert answer.status_code == 401 and answer.headers["x-error-code"] == "GatedRepo"
    assert "restricted" in answer.headers["x-error-message"] and "error" in answer.json()  # no bytes

    hub.faults.respond("*", 503)
    hub.log.clear()
    # The token the Hub allowed: still served from the swarm.
    assert _download(world, GATED, weights, revision=commit, token=TOKEN) == files[weights]
    assert _download(world, GATED, "config.json", revision="main", token=TOKEN) == files["config.json"]
    # No token: the Hub's refusal, remembered.
    answer = _get_gated(world, weights, None)
    assert answer.status_code == 401 and answer.headers["x-error-code"] == "GatedRepo"
    # A token the Hub never judged: it cannot be asked, so no bytes. (hf_hub_download retries a 503 five times,
    # ~23 s, then raises LocalEntryNotFoundError: its first HEAD, get_hf_file_metadata, is asked here.)
    url = hf_hub_url(GATED, "config.json", revision=commit, endpoint=world.node.url)
    with pytest.raises(HfHubHTTPError) as raised:
        get_hf_file_metadata(url, token="hf_someoneElse0000")
    assert raised.value.response.status_code == 503 and "cannot be confirmed" in str(raised.value)
    answer = _get_gated(world, weights, "hf_someoneElse0000")
    assert answer.status_code == 503, answer.headers
    assert "cannot be confirmed right now" in answer.headers["x-error-message"]
    assert answer.json()["error"].startswith("access to this repo cannot be confirmed right now")  # no bytes
    head = httpx.head(answer.request.url, headers={"authorization": "Bearer hf_someoneElse0000"}, timeout=15)
    assert head.status_code == 503 and "cannot be confirmed" in head.headers["x-error-message"]
    assert world.node.counters()["endpoint_refused"] >= 3
    assert all(e.status == 503 for e in hub.log.entries())


# ---------------------------------------------------------------------------------------- a branch moves


def test_a_moved_branch_reaches_programs_within_the_ttl(world: World, hub: DevHub) -> None:
    """The Hub's main moves to a commit the swarm does not hold: within the TTL, a program asking for main
    gets the new commit's files (relayed); once it moves back, the swarm's release again."""
    readme = world.root / "origin" / "models" / MODEL / "README.md"
    original = readme.read_bytes()
    old = world.commits[MODEL]
    from huggingface_hub import snapshot_download

    def main_on_the_node() -> str:
        answer = httpx.get(f"{world.node.url}/api/models/{MODEL}/revision/main", timeout=15)
        assert answer.status_code == 200, answer.text
        sha: str = answer.json()["sha"]
        return sha

    def wait_for(commit: str) -> float:
        start = time.monotonic()
        deadline = start + BRANCH_TTL + 5
        while (seen := main_on_the_node()) != commit:
            assert time.monotonic() < deadline, f"main still at {seen} on the node, the Hub has {commit}"
            time.sleep(0.2)
        return time.monotonic() - start

    assert main_on_the_node() == old
    try:
        readme.write_bytes(b"# tiny, moved on\n")
        new = httpx.get(f"{hub.endpoint}/api/models/{MODEL}/revision/main", timeout=15).json()["sha"]
        assert new != old
        assert wait_for(new) <= BRANCH_TTL + 1.5
        folder = Path(snapshot_download(MODEL, endpoint=world.node.url, cache_dir=world.fresh()))
        assert folder.name == new
        assert snapshot_files(folder) == {**world.files[MODEL], "README.md": b"# tiny, moved on\n"}
        assert hub.log.entries(f"/{MODEL}/resolve/{new}/*")  # the new commit came from the Hub
    finally:
        readme.write_bytes(original)
        # The node's head of main says the new commit until it looks again, a TTL on (meanwhile the relayed
        # answers are the Hub's, the old commit): a later test whose lookup fails would get the new one.
        time.sleep(BRANCH_TTL + 0.5)
    hub.log.clear()
    assert main_on_the_node() == old
    assert [e.status for e in hub.log.entries()] == [200]  # the one lookup; the answer from the swarm
    assert _snapshot(world, MODEL) == world.files[MODEL]
    assert set(_kinds(hub)) == {"revision"}  # by the swarm's release again: no resolve


# --------------------------------------------------------------------------------------- the relay rule


def test_the_hubs_429_for_a_repo_the_swarm_does_not_hold(world: World, hub: DevHub) -> None:
    """Relayed: a short Retry-After is waited out by the node, a long one is passed on with its header."""
    url = f"{world.node.url}/api/models/{UNHELD}/revision/main"
    hub.faults.respond("*", 429, retry_after=30)
    answer = httpx.get(url, timeout=15)
    assert answer.status_code == 429 and answer.headers["retry-after"] == "30"
    assert len(hub.log.entries(f"/api/models/{UNHELD}/*")) == 1

    hub.faults.clear()
    hub.log.clear()
    hub.faults.respond("*", 429, retry_after=1, times=1)
    start = time.monotonic()
    answer = httpx.get(url, timeout=15)
    assert answer.status_code == 200 and answer.json()["id"] == UNHELD
    assert time.monotonic() - start >= 0.9
    assert [e.status for e in hub.log.entries(f"/api/models/{UNHELD}/*")] == [429, 200]


# ------------------------------------------------------------------------------------- what the node tells


def test_metrics_and_status_count_the_hub_requests(world: World, hub: DevHub) -> None:
    """The node counts what it asked the Hub, by kind and outcome: /metrics and ``swarmhub status`` show it."""
    time.sleep(BRANCH_TTL + 0.5)
    hub.faults.respond("*", 429, retry_after=30)
    answer = httpx.get(f"{world.node.url}/api/models/{MODEL}/revision/main", timeout=15)
    assert answer.status_code == 200, (answer.headers, answer.text)
    assert answer.json()["sha"] == world.commits[MODEL]
    assert "x-swarmhub-stale" in answer.headers
    asked = world.node.hub_requests()
    assert asked["revision"]["429"] >= 1, asked
    metrics = httpx.get(f"{world.node.url}/metrics", timeout=15).text
    line = f'swarmhub_hub_requests_total{{kind="revision",outcome="429"}} {asked["revision"]["429"]}'
    assert line in metrics.splitlines(), metrics
    done = run_cli("status", "--cache-dir", world.root / "node" / "hub")  # finds the node by its state folder
    assert done.returncode == 0, done.stderr
    shown = next((line for line in done.stdout.splitlines() if line.startswith("Hub requests ")), None)
    assert shown is not None, done.stdout
    total = sum(n for outcomes in asked.values() for n in outcomes.values())
    assert shown.startswith(f"Hub requests {total} ("), shown
    assert re.search(rf"\brevision [^,]*\b{asked['revision']['429']} 429\b", shown), shown


def test_a_release_public_long_ago_is_served_while_the_hub_is_down(world: World, hub: DevHub) -> None:
    """``public_at`` older than the access TTL (a release pulled yesterday): the repo was public, so a node
    started while the Hub is down still serves it (hubstate: "a repo once public stays public")."""
    records = [
        path
        for path in (world.node.settings.state_dir / "confirmed").iterdir()
        if json.loads(path.read_text())["repo_id"] == MODEL
    ]
    assert records
    kept = {path: path.read_text() for path in records}
    commit, readme = world.commits[MODEL], world.files[MODEL]["README.md"]

    def restore() -> None:  # before the node starts again with its upstream: later tests need a recent public_at
        for path, text in kept.items():
            path.write_text(text)

    try:
        for path, text in kept.items():
            path.write_text(json.dumps({**json.loads(text), "public_at": time.time() - 86_400}) + "\n")
        with _upstream_down(world):
            try:
                answer = httpx.get(f"{world.node.url}/{MODEL}/resolve/{commit}/README.md", timeout=15)
                assert (answer.status_code, answer.content) == (200, readme), answer.headers
                info = httpx.get(f"{world.node.url}/api/models/{MODEL}/revision/{commit}", timeout=15)
                assert info.status_code == 200 and info.json()["sha"] == commit, info.headers
            finally:
                restore()
    finally:
        restore()
