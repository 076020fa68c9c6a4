"""Terminal output shared by commands: errors as one line, progress bars, JSON, sizes."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from swarmhub.errors import SwarmhubError

if TYPE_CHECKING:
    from tqdm import tqdm

__all__ = ["Progress", "atomic_write", "error_line", "human_size", "print_json", "printable"]


def error_line(error: SwarmhubError) -> str:
    """``swarmhub: error: <what went wrong> — <what to do>`` on one line, escaped for the terminal."""
    text = " ".join(error.message.split())
    if error.hint:
        text += f" — {error.hint}"
    return f"swarmhub: error: {printable(text)}"


def printable(text: str) -> str:
    """``text`` safe to write to a terminal: every character ``str.isprintable`` refuses (controls such as
    ESC and CR, bidi and zero-width format characters, separators) shown as its Python escape (``\\x1b``,
    ``\\u202e``), so text taken from the input cannot move the cursor, recolour or rewrite the screen."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def print_json(value: Any, stream: TextIO | None = None) -> None:
    print(json.dumps(value, indent=2, sort_keys=False), file=stream or sys.stdout)


def human_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


class Progress:
    """A byte progress bar (rate, ETA) on a terminal's stderr; silent otherwise or when disabled."""

    def __init__(self, description: str, *, enabled: bool | None = None) -> None:
        self.description = description
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self._bar: tqdm[Any] | None = None

    def start(self, total: int) -> None:
        if self.enabled:
            from tqdm import tqdm  # only on a terminal: it costs 40 ms of start-up

            self._bar = tqdm(
                total=total,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=self.description,
                file=sys.stderr,
                dynamic_ncols=True,
            )

    def advance(self, n: int) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so a reader sees the old file or the whole new one, never a part."""
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise SwarmhubError(
            f"cannot write {path}: {exc.strerror or exc}",
            hint="choose another output path with -o, or free some disk space",
        ) from exc
