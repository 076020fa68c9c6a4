"""A tiny real Llama for tests that load a model with transformers: made here (random weights, a few MB of
safetensors), and loaded by ``AutoConfig`` + ``AutoModelForCausalLM`` in a separate Python whose
``HF_ENDPOINT`` (and ``HF_TOKEN``, ``HF_HUB_CACHE``) are set before huggingface_hub is imported, as a user's
script would run.

torch is imported when used, not with this module: collecting the test suite stays fast.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = ["INPUT_IDS", "LlamaClient", "LoadResult", "make_tiny_llama"]

INPUT_IDS = [[1, 17, 123, 999, 5, 2047, 42, 7, 640, 2]]  # a fixed prompt: logits are compared on it
GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"  # as the Hub writes it

# The client: imports once (torch and transformers take seconds), then for each stdin line ["repo", "out"]
# loads the repo, torch.saves its logits on the input ids (argv[1]) to out, and prints one JSON line: what
# it loaded, or the error's class chain (``__cause__`` links) and message.
_CLIENT = """
import json, sys, time
import torch
from transformers import AutoConfig, AutoModelForCausalLM

input_ids = json.loads(sys.argv[1])
for line in sys.stdin:
    repo, out = json.loads(line)
    started = time.monotonic()
    try:
        config = AutoConfig.from_pretrained(repo)
        model = AutoModelForCausalLM.from_pretrained(repo).eval()
    except Exception as exc:
        chain, e = [], exc
        while e is not None:
            chain.append(type(e).__name__)
            e = e.__cause__
        print(json.dumps({"error": chain, "message": str(exc)}), flush=True)
        continue
    loaded = time.monotonic() - started
    with torch.no_grad():
        torch.save(model(torch.tensor(input_ids)).logits, out)
    print(json.dumps({"model_type": config.model_type, "model": type(model).__name__, "loaded_s": loaded}), flush=True)
"""


def make_tiny_llama(folder: Path) -> torch.Tensor:
    """Save a tiny random Llama (safetensors, ~6 MB float32) into ``folder``; return its logits on INPUT_IDS."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(1234)
    config = LlamaConfig(
        vocab_size=2048,
        hidden_size=192,
        intermediate_size=384,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config).eval()
    model.save_pretrained(folder, safe_serialization=True)
    (folder / ".gitattributes").write_bytes(GITATTRIBUTES)
    with torch.no_grad():
        logits: torch.Tensor = model(torch.tensor(INPUT_IDS)).logits
    return logits


@dataclass(frozen=True)
class LoadResult:
    info: dict[str, Any]  # what the client printed: model_type/model/loaded_s, or error (class chain)/message
    logits: torch.Tensor | None


class LlamaClient:
    """A Python that loads repos with transformers through ``HF_ENDPOINT=endpoint``, into the (fresh)
    huggingface_hub cache ``cache``; ``token`` is the user's ``HF_TOKEN`` (none at all when None).

    Started on construction, so its imports run while the test does other things; ``load`` asks it for one
    repo and waits for the answer. Killed on exit.
    """

    def __init__(self, endpoint: str, cache: Path, token: str | None = None) -> None:
        env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")}
        env |= {"HF_ENDPOINT": endpoint, "HF_HUB_CACHE": str(cache), "HF_HUB_DISABLE_XET": "1"}
        if token is not None:
            env["HF_TOKEN"] = token
        self.cache = cache
        self.loads = 0
        self.stderr = cache.parent / f"{cache.name}-stderr.txt"  # a file: a full pipe would block the client
        with self.stderr.open("w") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, "-c", _CLIENT, json.dumps(INPUT_IDS)],
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
            )

    def load(self, repo_id: str, timeout: float = 120) -> LoadResult:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.loads += 1
        out = self.cache.parent / f"{self.cache.name}-logits-{self.loads}.pt"
        self.process.stdin.write(json.dumps([repo_id, str(out)]) + "\n")
        self.process.stdin.flush()
        deadline = time.monotonic() + timeout
        # One line per request and nothing else on stdout: Python's buffer never holds a line select misses.
        while not select.select([self.process.stdout], [], [], 0.5)[0]:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the transformers client failed or hung:\n{self.stderr.read_text()[-4000:]}")
        line = self.process.stdout.readline()
        if not line:
            raise AssertionError(f"the transformers client exited:\n{self.stderr.read_text()[-4000:]}")
        import torch

        return LoadResult(json.loads(line), torch.load(out) if out.exists() else None)

    def __enter__(self) -> LlamaClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.process.kill()  # nothing to finish; a Python with torch takes seconds to exit by itself
        self.process.wait()
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                pipe.close()
