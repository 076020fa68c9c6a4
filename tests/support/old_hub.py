"""An old huggingface_hub (0.36.x) in its own virtualenv, to run the way its users still run it.

The virtualenv is made once per machine under the temp folder (keyed by the version spec) and reused by
later runs; a lock file keeps two test runs from building it at the same time. ``None`` when it cannot be
made (no network to PyPI, no venv module): the caller skips with the reason.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

__all__ = ["OLD_SPEC", "OldHub", "old_client", "old_hub"]

OLD_SPEC = "huggingface_hub==0.36.*"


class OldHub:
    """A Python with the old huggingface_hub; ``run`` executes a script and returns its JSON on stdout."""

    def __init__(self, python: Path, version: str) -> None:
        self.python = python
        self.version = version

    def run(self, script: str, env: Mapping[str, str], timeout: float = 180) -> Any:
        result = subprocess.run(
            [str(self.python), "-c", script],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"old huggingface_hub script failed ({result.returncode}):\n{result.stderr[-4000:]}")
        return json.loads(result.stdout.strip().splitlines()[-1])


def _version(python: Path) -> str | None:
    probe = subprocess.run(
        [str(python), "-c", "import huggingface_hub; print(huggingface_hub.__version__)"],
        capture_output=True,
        text=True,
        check=False,
    )
    return probe.stdout.strip() if probe.returncode == 0 else None


def old_hub(spec: str = OLD_SPEC, root: Path | None = None) -> tuple[OldHub | None, str]:
    """The old client, or None and why not."""
    safe = "".join(c if c.isalnum() or c in ".-" else "_" for c in spec)
    venv = (root or Path(tempfile.gettempdir())) / f"swarmhub-tests-{safe}"
    venv.parent.mkdir(parents=True, exist_ok=True)
    python = venv / "bin" / "python"
    with open(f"{venv}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        version = _version(python) if python.exists() else None
        if version is None:
            made = subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], capture_output=True, text=True)
            if made.returncode != 0:
                return None, f"python -m venv failed: {made.stderr.strip()[-500:]}"
            pip = subprocess.run(
                [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", spec],
                capture_output=True,
                text=True,
                timeout=600,
            )
            if pip.returncode != 0:
                return None, f"pip install {spec} failed: {pip.stderr.strip()[-500:]}"
            version = _version(python)
            if version is None:
                return None, f"{spec} installed but does not import"
    return OldHub(python, version), ""


@pytest.fixture(scope="session")
def old_client() -> OldHub:
    """The old huggingface_hub, for any test module (a pytest plugin: ``tests/conftest.py`` loads it)."""
    client, why = old_hub()
    if client is None:
        pytest.skip(f"no old huggingface_hub: {why}")
    return client
