"""Running the real ``swarmhub`` command as a user would: a subprocess with this interpreter."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path


def run_cli(
    *args: str | Path,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """``swarmhub ARGS...``; ``env`` adds to (not replaces) the test environment."""
    return subprocess.run(
        [sys.executable, "-m", "swarmhub", *map(str, args)],
        cwd=cwd,
        env={**os.environ, **env} if env else None,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def sigint_default() -> None:
    """``preexec_fn`` for a child that a test stops with SIGINT (Ctrl-C): a job started in the background by a
    non-interactive shell (as some CI runners start the tests) inherits SIGINT *ignored*, and Python then
    never turns it into KeyboardInterrupt. Restore the default so the child sees Ctrl-C as a user's would."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)
