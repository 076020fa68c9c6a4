"""The two releases of bench/hubload.py, written as plain folders the dev hub serves, and the program that reads one.

- ``bench/hubload-model``: what a small causal LM repo holds (config, generation config, tokenizer files, an
  index and safetensors shards, README, .gitattributes): 13 files, the shards valid safetensors of random F16
  weights;
- ``bench/hubload-data``: parquet files under ``data/`` and a README whose ``configs:`` YAML header names them,
  as the Hub's own parquet datasets do.

Content comes from a seeded RNG, so the same sizes give the same bytes, the same commit and the same torrents run
after run. ``PROGRAM`` is what each program run executes (``python -c PROGRAM SPEC.json``): one
``snapshot_download`` or ``load_dataset`` into the HF cache its environment names, then every file it got checked
by SHA-256 against the release (and the dataset's row count); exit 0 only when all of it holds.
"""

from __future__ import annotations

import json
import random
import struct
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

__all__ = ["DATASET_ID", "MODEL_ID", "PROGRAM", "make_dataset", "make_model"]

MODEL_ID = "bench/hubload-model"
DATASET_ID = "bench/hubload-data"
SHARDS = 3
DATA_FILES = 3
_GITATTRIBUTES = "".join(
    f"*.{ext} filter=lfs diff=lfs merge=lfs -text\n" for ext in ("safetensors", "bin", "parquet", "arrow", "h5")
)

# Run as ``python -c PROGRAM SPEC``: SPEC is a JSON file {kind, repo_id, revision, commit, expected, rows}.
# It prints one JSON line ({"ok": ..., "error": ...}) and exits 0 (checked), 1 (the call failed) or 2 (content).
PROGRAM = r"""
import hashlib, json, os, sys, time
from pathlib import Path

spec = json.loads(Path(sys.argv[1]).read_text())
expected = spec["expected"]
start = time.perf_counter()


def say(code, **fields):
    print(json.dumps({"ok": code == 0, "seconds": round(time.perf_counter() - start, 3), **fields}), flush=True)
    sys.exit(code)


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


try:
    if spec["kind"] == "snapshot":
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(spec["repo_id"], revision=spec["revision"]))
        required, rows = set(expected), None
    else:
        from datasets import load_dataset
        from huggingface_hub import constants

        data = load_dataset(spec["repo_id"], revision=spec["revision"])
        rows = sum(split.num_rows for split in data.values())
        snapshots = Path(constants.HF_HUB_CACHE) / ("datasets--" + spec["repo_id"].replace("/", "--")) / "snapshots"
        folders = sorted(snapshots.iterdir()) if snapshots.is_dir() else []
        if len(folders) != 1:
            say(2, error=f"expected one snapshot of the dataset in the cache, found {[f.name for f in folders]}")
        folder = folders[0]
        required = {p for p in expected if p.startswith("data/")}
except Exception as exc:
    say(1, error=f"{type(exc).__name__}: {' '.join(str(exc).split())[:240]}")

if folder.name != spec["commit"]:
    say(2, error=f"snapshot {folder.name} is not the release's commit {spec['commit']}")
found = {p.relative_to(folder).as_posix(): p for p in folder.rglob("*") if p.is_file()}
missing, unknown = sorted(required - set(found)), sorted(set(found) - set(expected))
differ = sorted(rel for rel, p in found.items() if rel in expected and sha256(p) != expected[rel])
if missing or unknown or differ:
    say(2, error=f"files missing {missing}, not in the release {unknown}, content differs {differ}")
if rows is not None and rows != spec["rows"]:
    say(2, error=f"{rows} rows, the release has {spec['rows']}")
say(0, files=len(found), rows=rows)
"""


def _safetensors(rng: random.Random, tensors: dict[str, tuple[int, int]]) -> bytes:
    """A safetensors file (8-byte little-endian header length, JSON header, data) of random F16 tensors."""
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, (rows, cols) in tensors.items():
        size = rows * cols * 2
        header[name] = {"dtype": "F16", "shape": [rows, cols], "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned
    return struct.pack("<Q", len(text)) + text + rng.randbytes(offset)


def make_model(root: Path, size: int, seed: int = 1) -> Path:
    """ROOT/models/bench/hubload-model: about ``size`` bytes of weights in SHARDS shards, and the usual files."""
    repo = root / "models" / MODEL_ID
    repo.mkdir(parents=True)
    rng = random.Random(seed)
    hidden, per_shard = 256, 2
    rows = max(1, size // (SHARDS * per_shard * hidden * 2))  # F16: 2 bytes a weight
    weight_map, total = {}, 0
    for shard in range(SHARDS):
        name = f"model-{shard + 1:05d}-of-{SHARDS:05d}.safetensors"
        layers = range(shard * per_shard, (shard + 1) * per_shard)
        tensors = {f"model.layers.{layer}.mlp.weight": (rows, hidden) for layer in layers}
        (repo / name).write_bytes(_safetensors(rng, tensors))
        weight_map |= dict.fromkeys(tensors, name)
        total += sum(r * c * 2 for r, c in tensors.values())
    vocab = {f"tok{i}": i for i in range(8000)}
    files = {
        ".gitattributes": _GITATTRIBUTES,
        "README.md": "---\nlicense: apache-2.0\nlibrary_name: transformers\n---\n# hubload-model\n\nSynthetic.\n",
        "config.json": {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": hidden,
                        "num_hidden_layers": SHARDS * per_shard, "vocab_size": len(vocab), "torch_dtype": "float16"},
        "generation_config.json": {"bos_token_id": 1, "eos_token_id": 2, "max_new_tokens": 64},
        "model.safetensors.index.json": {"metadata": {"total_size": total}, "weight_map": weight_map},
        "tokenizer.json": {"version": "1.0", "model": {"type": "BPE", "vocab": vocab, "merges": []}},
        "tokenizer_config.json": {"bos_token": "<s>", "eos_token": "</s>", "model_max_length": 2048},
        "special_tokens_map.json": {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"},
        "vocab.json": vocab,
        "merges.txt": "#version: 0.2\n" + "".join(f"t{i} k{i}\n" for i in range(4000)),
    }  # fmt: skip
    for name, content in files.items():
        (repo / name).write_text(content if isinstance(content, str) else json.dumps(content, indent=1) + "\n")
    return repo


def make_dataset(root: Path, rows: int, seed: int = 2) -> tuple[Path, int]:
    """ROOT/datasets/bench/hubload-data: ``rows`` rows over DATA_FILES parquet files; (folder, rows written)."""
    repo = root / "datasets" / DATASET_ID
    (repo / "data").mkdir(parents=True)
    rng = random.Random(seed)
    words = ["swarm", "piece", "seed", "peer", "hub", "node", "torrent", "origin", "cache", "shard"]
    per_file = max(1, rows // DATA_FILES)
    for i in range(DATA_FILES):
        ids = range(i * per_file, (i + 1) * per_file)
        table = pa.table({
            "id": pa.array(ids, pa.int64()),
            "text": [" ".join(rng.choices(words, k=12)) for _ in ids],
            "label": pa.array([rng.randrange(4) for _ in ids], pa.int8()),
        })  # fmt: skip
        pq.write_table(table, repo / "data" / f"train-{i:05d}-of-{DATA_FILES:05d}.parquet")
    (repo / ".gitattributes").write_text(_GITATTRIBUTES)
    (repo / "README.md").write_text(
        "---\nlicense: cc-by-4.0\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n"
        "    path: data/train-*.parquet\n---\n# hubload-data\n\nSynthetic rows.\n"
    )
    return repo, per_file * DATA_FILES
