"""Offline Hugging Face Hub mirror for tests, built on olah.

Two helpers:

* :func:`make_git_repo` writes a git repository in the layout olah serves from its
  ``mirrors-path`` (``<root>/{models|datasets}/<org>/<name>``), with LFS files stored
  as pointer files and the real objects placed in ``.git/lfs/objects`` by hand (no
  git-lfs binary needed).
* :class:`OlahServer` runs olah as a subprocess on ``127.0.0.1`` in offline mode,
  with every bit of its state (config, cache, logs, ``~/.olah``) under one directory.

What olah does and does not answer is written down in ``OLAH.md`` next to this file.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import IO

import httpx

__all__ = [
    "GIT_DATE",
    "GIT_EMAIL",
    "GIT_NAME",
    "OlahServer",
    "OlahStartupError",
    "git_blob_sha1",
    "lfs_pointer",
    "make_git_repo",
    "olah_can_serve_blob",
    "sha256_hex",
]

GIT_NAME = "swarmhub-tests"
GIT_EMAIL = "tests@swarmhub.invalid"
GIT_DATE = "2024-01-01T00:00:00+00:00"

_REPO_DIRS = {"model": "models", "models": "models", "dataset": "datasets", "datasets": "datasets"}


# --------------------------------------------------------------------------- hashing


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def git_blob_sha1(data: bytes) -> str:
    """The git blob id of ``data`` (what olah reports as ``oid``/``ETag`` of regular files)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(data: bytes) -> bytes:
    """The git-lfs v1 pointer file for ``data``."""
    return (f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256_hex(data)}\nsize {len(data)}\n").encode()


def olah_can_serve_blob(blob: bytes) -> bool:
    """False for git blobs that crash olah 0.5.4's LFS-pointer sniffing (see make_git_repo)."""
    if 120 < len(blob) < 150:
        try:
            blob.decode("utf-8")
        except UnicodeDecodeError:
            return False
    return True


# --------------------------------------------------------------------------- git repos


def _git_env(date: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("GIT_") and k not in {"HOME", "XDG_CONFIG_HOME", "EMAIL"}
    }
    env.update(
        GIT_AUTHOR_NAME=GIT_NAME,
        GIT_AUTHOR_EMAIL=GIT_EMAIL,
        GIT_AUTHOR_DATE=date,
        GIT_COMMITTER_NAME=GIT_NAME,
        GIT_COMMITTER_EMAIL=GIT_EMAIL,
        GIT_COMMITTER_DATE=date,
        # Ignore the user's and the system's git config (hooks, signing, git-lfs filters...).
        GIT_CONFIG_GLOBAL=os.devnull,
        GIT_CONFIG_NOSYSTEM="1",
        GIT_TERMINAL_PROMPT="0",
        LC_ALL="C",
    )
    return env


def _git(repo: Path, env: Mapping[str, str], *args: str) -> str:
    proc = subprocess.run(
        ["git", "-C", str(repo), *args],
        env=dict(env),
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return proc.stdout


def _attr_pattern(path: str) -> str:
    # gitattributes patterns are whitespace separated; anchor at the repo root.
    return "/" + path.replace(" ", "[[:space:]]")


def make_git_repo(
    root: Path,
    repo_type: str,
    repo_id: str,
    files: Mapping[str, bytes],
    lfs: Iterable[str] | Callable[[str], bool] = frozenset(),
    *,
    message: str = "Test snapshot",
    date: str = GIT_DATE,
    olah_safe: bool = True,
) -> str:
    """Commit ``files`` to ``root/{models|datasets}/{org}/{name}`` on branch ``main``.

    ``files`` maps repo-relative POSIX paths (nested folders allowed) to contents; it is
    the complete snapshot: calling this again on an existing repo adds a commit on top
    of ``main`` whose tree is exactly ``files`` (plus ``.gitattributes``).  Paths selected
    by ``lfs`` (a set of paths or a predicate) are committed as LFS pointer files with
    the real object in ``.git/lfs/objects/<aa>/<bb>/<sha256>``, and are marked
    ``filter=lfs diff=lfs merge=lfs -text`` in ``.gitattributes`` (appended to a
    ``.gitattributes`` given in ``files``, if any).  Author, committer and date are fixed,
    so the same input gives the same commit sha.  Returns the commit sha.

    With ``olah_safe`` (the default) a regular (non-LFS) file that olah 0.5.4 cannot
    serve raises ``ValueError``: olah sniffs every blob of 121..149 bytes for an LFS
    pointer with ``.decode("utf-8")`` and answers 500 for the *whole tree* (tree API,
    paths-info, HEAD/GET of that file) when such a blob is not valid UTF-8.
    """
    try:
        type_dir = _REPO_DIRS[repo_type]
    except KeyError:
        raise ValueError(f"repo_type must be one of {sorted(_REPO_DIRS)}, not {repo_type!r}") from None
    org, sep, name = repo_id.partition("/")
    if not sep or not org or not name or "/" in name:
        raise ValueError(f"repo_id must be 'org/name', not {repo_id!r}")
    is_lfs = lfs if callable(lfs) else frozenset(lfs).__contains__

    repo = Path(root) / type_dir / org / name
    env = _git_env(date)
    if not (repo / ".git").is_dir():
        repo.mkdir(parents=True, exist_ok=True)
        _git(repo, env, "init", "--quiet", "--initial-branch=main")
    else:
        # Start from an empty tree so that `files` is the whole snapshot.
        _git(repo, env, "rm", "-r", "--quiet", "--cached", "--ignore-unmatch", ".")
        for child in repo.iterdir():
            if child.name != ".git":
                _remove_tree(child)

    lfs_paths: list[str] = []
    for rel, data in files.items():
        if rel.startswith("/") or ".." in rel.split("/") or rel.startswith(".git/"):
            raise ValueError(f"bad path in repo: {rel!r}")
        content = bytes(data)
        lfs_file = rel != ".gitattributes" and is_lfs(rel)
        if olah_safe and not lfs_file and not olah_can_serve_blob(content):
            raise ValueError(
                f"{rel!r}: olah 0.5.4 answers 500 for non-UTF-8 blobs of 121..149 bytes "
                "(store it as LFS, change its size, or pass olah_safe=False)"
            )
        if lfs_file:
            lfs_paths.append(rel)
            oid = sha256_hex(content)
            obj = repo / ".git" / "lfs" / "objects" / oid[:2] / oid[2:4] / oid
            obj.parent.mkdir(parents=True, exist_ok=True)
            obj.write_bytes(content)
            content = lfs_pointer(content)
        target = repo / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)

    if lfs_paths:
        attrs = repo / ".gitattributes"
        existing = attrs.read_bytes().decode() if attrs.exists() else ""
        if existing and not existing.endswith("\n"):
            existing += "\n"
        attr = "filter=lfs diff=lfs merge=lfs -text"
        attrs.write_text(existing + "".join(f"{_attr_pattern(p)} {attr}\n" for p in sorted(lfs_paths)))

    _git(repo, env, "add", "--all", "--force", ".")
    _git(repo, env, "commit", "--quiet", "--allow-empty", "--no-verify", "--no-gpg-sign", "-m", message)
    return _git(repo, env, "rev-parse", "HEAD").strip()


def _remove_tree(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        for child in path.iterdir():
            _remove_tree(child)
        path.rmdir()
    else:
        path.unlink()


# --------------------------------------------------------------------------- server


class OlahStartupError(RuntimeError):
    pass


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _toml_str(value: str | Path) -> str:
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


class OlahServer:
    """Run olah offline against ``mirrors_dir`` (default ``<workdir>/mirrors``).

    Usage::

        with OlahServer(tmp_path / "olah") as olah:
            make_git_repo(olah.mirrors_dir, "model", "org/name", {...}, lfs={...})
            httpx.get(f"{olah.endpoint}/api/models/org/name/revision/main")

    Repos may be created before or after start: olah looks them up on every request.
    Everything olah writes lives under ``workdir``: ``olah.toml``, ``cache/`` (its
    repos-path), ``logs/``, ``home/`` (``$HOME``, for ``~/.olah``) and ``olah.out``
    (stdout+stderr; its tail is put in :class:`OlahStartupError`).
    """

    READY_PATH = "/-olah-fixture-ready"

    def __init__(
        self,
        workdir: Path,
        mirrors_dir: Path | None = None,
        *,
        startup_timeout: float = 30.0,
        python: str = sys.executable,
    ) -> None:
        self.workdir = Path(workdir)
        self.mirrors_dir = Path(mirrors_dir) if mirrors_dir is not None else self.workdir / "mirrors"
        self.startup_timeout = startup_timeout
        self.python = python
        self.port = 0
        self.endpoint = ""
        self.startup_seconds = 0.0
        self.config_path = self.workdir / "olah.toml"
        self.log_path = self.workdir / "olah.out"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    # -- lifecycle

    def __enter__(self) -> OlahServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        if self._proc is not None:
            raise RuntimeError("olah already started")
        last_error: OlahStartupError | None = None
        # The free port is picked before olah binds it; retry on the (rare) race.
        for _ in range(3):
            try:
                self._start_once()
                return
            except OlahStartupError as e:
                last_error = e
                self.stop()
                if "address already in use" not in str(e).lower():
                    raise
        assert last_error is not None
        raise last_error

    def _start_once(self) -> None:
        self.port = _free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        for d in (self.workdir, self.mirrors_dir, self.workdir / "cache", self.workdir / "logs"):
            d.mkdir(parents=True, exist_ok=True)
        home = self.workdir / "home"
        home.mkdir(exist_ok=True)
        self.config_path.write_text(
            "[basic]\n"
            'host = "127.0.0.1"\n'
            f"port = {self.port}\n"
            f"repos-path = {_toml_str(self.workdir / 'cache')}\n"
            f"mirrors-path = [{_toml_str(self.mirrors_dir)}]\n"
            'mirror-scheme = "http"\n'
            f'mirror-netloc = "127.0.0.1:{self.port}"\n'
            f'mirror-lfs-netloc = "127.0.0.1:{self.port}"\n'
            "\n[accessibility]\n"
            "offline = true\n"
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_", "OLAH_"))}
        env.update(
            HOME=str(home),
            PYTHONUNBUFFERED="1",
            HF_HOME=str(home / "hf"),
            HF_HUB_OFFLINE="1",
            NO_PROXY="*",
        )
        cmd = [
            self.python,
            "-c",
            "from olah.server import cli; cli()",
            "--config",
            str(self.config_path),
            "--log-path",
            str(self.workdir / "logs"),
        ]
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._log_file = log
        t0 = time.monotonic()
        self._proc = subprocess.Popen(
            cmd,
            cwd=self.workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group, killed as a whole in stop()
        )
        deadline = t0 + self.startup_timeout
        with httpx.Client(timeout=2.0, trust_env=False) as client:
            while True:
                code = self._proc.poll()
                if code is not None:
                    raise OlahStartupError(f"olah exited with code {code} during startup\n{self.log_tail()}")
                try:
                    # A path no route matches: a cheap 404 from olah, no side effects, no
                    # traceback (olah's own index page "/" answers 500 with this starlette).
                    client.get(f"{self.endpoint}{self.READY_PATH}")
                except httpx.TransportError:
                    pass
                else:
                    break  # any HTTP answer means uvicorn is serving
                if time.monotonic() > deadline:
                    raise OlahStartupError(
                        f"olah did not answer on {self.endpoint} within {self.startup_timeout:.0f}s\n{self.log_tail()}"
                    )
                time.sleep(0.05)
        self.startup_seconds = time.monotonic() - t0

    def stop(self, timeout: float = 10.0) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=timeout)
        log, self._log_file = self._log_file, None
        if log is not None:
            log.close()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no olah log)"
        tail = "\n".join(text.splitlines()[-lines:])
        return f"--- last {lines} lines of {self.log_path} ---\n{tail}"

    # -- conveniences

    def add_repo(
        self,
        repo_type: str,
        repo_id: str,
        files: Mapping[str, bytes],
        lfs: Iterable[str] | Callable[[str], bool] = frozenset(),
        **kwargs: str,
    ) -> str:
        """:func:`make_git_repo` into this server's mirrors dir."""
        return make_git_repo(self.mirrors_dir, repo_type, repo_id, files, lfs, **kwargs)
