"""EXECUTE_TASK kinds: real work on a loaded shard's tensors.

- ``list_tensors``  names, row-major shapes, types and byte sizes (``prefix`` filters by name);
- ``metadata``      the shard's metadata (GGUF keys; long arrays as type and length);
- ``matvec``        dequantize ``tensor`` (gguf's quant code) and multiply it with ``vector`` (a list of ``cols``
                    numbers, or ``{"seed": N}`` for a standard-normal float32 vector from numpy's PCG64);
                    returns the product (up to ``max_values`` numbers) and its summary; ``rows: [a, b]`` limits it;
- ``stats``         min, max, mean, standard deviation and L2 norm of the dequantized ``tensor``;
- ``generate``      (with llama-cpp-python installed) a greedy completion of ``prompt`` (``max_tokens``) by the
                    whole model, run on its first split with every other split on the node.

Tensors are dequantized a block of rows at a time (at most ~16 M floats), so a 500 MB tensor never sits in
memory as float32 whole. Everything here is synchronous CPU work: callers run it in a worker thread.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from swarmhub.errors import ShardError
from swarmhub.shards.loader import LoadedShard, ShardTensor
from swarmhub.shards.manifest import parse_split_name, split_name

__all__ = ["TASKS", "run_task", "task_vector"]

_BLOCK_FLOATS = 16 << 20
DEFAULT_MAX_VALUES = 4096

Params = Mapping[str, Any]


def _blocks(tensor: ShardTensor, start: int, stop: int) -> Iterator[tuple[int, npt.NDArray[np.float32]]]:
    step = max(1, _BLOCK_FLOATS // max(1, tensor.cols))
    for lo in range(start, stop, step):
        yield lo, tensor.rows(lo, min(lo + step, stop))


def _row_range(tensor: ShardTensor, params: Params) -> tuple[int, int]:
    rows = params.get("rows")
    if rows is None:
        return 0, tensor.n_rows
    if not (isinstance(rows, list) and len(rows) == 2 and all(isinstance(r, int) for r in rows)):
        raise ShardError("rows must be [start, stop]")
    return int(rows[0]), int(rows[1])


def task_vector(spec: object, length: int) -> npt.NDArray[np.float32]:
    """The input vector of ``matvec``: a list of numbers, or ``{"seed": N}`` (standard normal, float32)."""
    if isinstance(spec, Mapping) and isinstance(spec.get("seed"), int):
        return np.random.default_rng(int(spec["seed"])).standard_normal(length, dtype=np.float32)
    if isinstance(spec, list) and all(isinstance(v, int | float) and not isinstance(v, bool) for v in spec):
        if len(spec) != length:
            raise ShardError(f"vector has {len(spec)} numbers; the tensor's rows have {length}")
        return np.asarray(spec, dtype=np.float32)
    raise ShardError('vector must be a list of numbers or {"seed": N}')


def _summary(values: npt.NDArray[np.float32]) -> dict[str, Any]:
    if not len(values):
        return {"length": 0}
    as64 = values.astype(np.float64)
    return {
        "length": len(values),
        "sum": float(as64.sum()),
        "l2": float(np.sqrt((as64 * as64).sum())),
        "min": float(values.min()),
        "max": float(values.max()),
        "argmin": int(values.argmin()),
        "argmax": int(values.argmax()),
    }


def list_tensors(shard: LoadedShard, params: Params) -> dict[str, Any]:
    prefix = str(params.get("prefix") or "")
    tensors = [t.describe() for name, t in shard.tensors.items() if name.startswith(prefix)]
    return {"count": len(tensors), "tensors": tensors}


def metadata(shard: LoadedShard, params: Params) -> dict[str, Any]:
    return {"format": shard.format, "metadata": shard.metadata}


def matvec(shard: LoadedShard, params: Params) -> dict[str, Any]:
    tensor = shard.tensor(params.get("tensor"))
    start, stop = _row_range(tensor, params)
    x = task_vector(params.get("vector", {"seed": 0}), tensor.cols)
    out = np.empty(max(0, stop - start), dtype=np.float32)
    for lo, block in _blocks(tensor, start, stop):
        out[lo - start : lo - start + len(block)] = block @ x
    max_values = params.get("max_values", DEFAULT_MAX_VALUES)
    if not isinstance(max_values, int) or max_values < 0:
        raise ShardError("max_values must be a non-negative integer")
    result: dict[str, Any] = {
        "tensor": tensor.name,
        "type": tensor.dtype,
        "shape": list(tensor.shape),
        "rows": [start, stop],
        "summary": _summary(out),
    }
    result["result"] = out.tolist() if len(out) <= max_values else None
    return result


def stats(shard: LoadedShard, params: Params) -> dict[str, Any]:
    tensor = shard.tensor(params.get("tensor"))
    start, stop = _row_range(tensor, params)
    n, total, squares = 0, 0.0, 0.0
    low, high = math.inf, -math.inf
    for _, block in _blocks(tensor, start, stop):
        as64 = block.astype(np.float64)
        n += as64.size
        total += float(as64.sum())
        squares += float((as64 * as64).sum())
        if as64.size:
            low, high = min(low, float(block.min())), max(high, float(block.max()))
    mean = total / n if n else 0.0
    return {
        "tensor": tensor.name,
        "type": tensor.dtype,
        "shape": list(tensor.shape),
        "count": n,
        "min": low if n else None,
        "max": high if n else None,
        "mean": mean,
        "std": math.sqrt(max(0.0, squares / n - mean * mean)) if n else 0.0,
        "l2": math.sqrt(squares),
    }


def generate(shard: LoadedShard, params: Params) -> dict[str, Any]:
    """A completion from the whole model whose first GGUF split (or only file) this shard is, with
    llama-cpp-python (optional: not a swarmhub dependency). llama.cpp finds the other splits by name, next to
    this one: every shard of the set must be on this node."""
    try:
        from llama_cpp import Llama  # type: ignore[import-not-found, unused-ignore]
    except ImportError as exc:
        raise ShardError("the generate task needs llama-cpp-python on the node (pip install llama-cpp-python)") from exc
    if shard.format != "gguf":
        raise ShardError("generate runs on GGUF models", shard_id=shard.shard_id)
    split = parse_split_name(shard.path.name)
    if split is not None:
        stem, number, count = split
        if number != 1:
            raise ShardError(f"generate runs on split 1 of {count}, which names the others", shard_id=shard.shard_id)
        missing = [split_name(stem, k, count) for k in range(2, count + 1)]
        missing = [name for name in missing if not (shard.path.parent / name).is_file()]
        if missing:
            raise ShardError(
                f"generate needs every split of the model on this node; missing {', '.join(missing)}",
                shard_id=shard.shard_id,
                hint="LOAD_SHARD each of them first",
            )
    prompt = params.get("prompt")
    max_tokens = params.get("max_tokens", 32)
    n_ctx = params.get("n_ctx", 512)
    if not isinstance(prompt, str) or not isinstance(max_tokens, int) or not 0 < max_tokens <= 4096:
        raise ShardError("generate needs prompt (a string) and max_tokens (1 to 4096)")
    if not isinstance(n_ctx, int) or not 64 <= n_ctx <= 1 << 17:
        raise ShardError("n_ctx must be an integer between 64 and 131072")
    model = Llama(model_path=str(shard.path), n_ctx=n_ctx, seed=0, verbose=False)
    try:
        out: Any = model.create_completion(prompt, max_tokens=max_tokens, temperature=0.0)  # greedy: reproducible
    finally:
        model.close()
    return {"text": out["choices"][0]["text"], "usage": out.get("usage", {})}


TASKS: dict[str, Callable[[LoadedShard, Params], dict[str, Any]]] = {
    "list_tensors": list_tensors,
    "metadata": metadata,
    "matvec": matvec,
    "stats": stats,
    "generate": generate,
}


def run_task(shard: LoadedShard, task_type: object, params: Params) -> dict[str, Any]:
    """Run one task; its result carries ``task_type``, ``shard_id`` and ``seconds``."""
    task = TASKS.get(task_type) if isinstance(task_type, str) else None
    if task is None:
        raise ShardError(f"unknown task_type {task_type!r}; known: {', '.join(TASKS)}", shard_id=shard.shard_id)
    started = time.perf_counter()
    result = task(shard, params)
    return {"task_type": task_type, "shard_id": shard.shard_id, **result, "seconds": time.perf_counter() - started}
