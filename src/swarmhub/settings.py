"""Settings: every environment variable swarmhub reads, declared once, resolved once.

``SETTINGS`` is the table (name, environment variables in priority order, default, help); the CLI's
``--help`` epilog and the README's table come from it. ``Settings.from_env()`` is called when a command
starts, never at import time, so tests can set variables freely.

Hugging Face's own variables are respected as huggingface_hub reads them: ``HF_ENDPOINT``, ``HF_TOKEN``
(then the token file at ``HF_TOKEN_PATH`` or ``$HF_HOME/token``), ``HF_HUB_CACHE`` (then ``$HF_HOME/hub``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from swarmhub.errors import ConfigError

__all__ = ["DEFAULT_ENDPOINT", "SETTINGS", "Setting", "Settings", "check_endpoint", "describe_settings"]

DEFAULT_ENDPOINT = "https://huggingface.co"


@dataclass(frozen=True)
class Setting:
    name: str
    env: tuple[str, ...]
    default: str
    help: str


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "endpoint",
        ("SWARMHUB_UPSTREAM", "HF_ENDPOINT"),
        DEFAULT_ENDPOINT,
        "Hub-compatible origin that files are fetched from",
    ),
    Setting(
        "token",
        ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"),
        "",
        "bearer token for gated/private repos (else the file at HF_TOKEN_PATH or $HF_HOME/token)",
    ),
    Setting("hf_home", ("HF_HOME",), "~/.cache/huggingface", "Hugging Face home folder"),
    Setting("hub_cache", ("HF_HUB_CACHE",), "$HF_HOME/hub", "Hugging Face cache that releases land in"),
    Setting(
        "state_dir",
        ("SWARMHUB_HOME",),
        "<cache>/../swarmhub",
        "swarmhub's own files next to the cache: the torrents of pulled releases, part files",
    ),
    Setting(
        "connections",
        ("SWARMHUB_CONNECTIONS",),
        "8",
        "parallel HTTP connections to the origin when streaming",
    ),
    Setting("retries", ("SWARMHUB_RETRIES",), "8", "attempts per origin request before giving up"),
    Setting(
        "access_ttl",
        ("SWARMHUB_ACCESS_TTL",),
        "600",
        "seconds the node believes the Hub's yes to a credential for a gated/private repo (and a repo's being public)",
    ),
    Setting(
        "refusal_ttl",
        ("SWARMHUB_REFUSAL_TTL",),
        "30",
        "seconds the node believes the Hub's no (401/403) to a credential",
    ),
    Setting(
        "branch_ttl",
        ("SWARMHUB_BRANCH_TTL",),
        "30",
        "seconds a branch's commit is believed before the Hub (or the coordinator) is asked again",
    ),
    Setting(
        "libtorrent",
        ("SWARMHUB_LIBTORRENT",),
        "",
        'JSON object of libtorrent settings to override, e.g. {"connections_limit": 500}; "disk_io": "posix" '
        'or "pread" (default: pread, posix for a pull of 10,000 files or more)',
    ),
)


def describe_settings() -> str:
    """The settings table as text, for ``--help``."""
    lines = ["environment:"]
    for s in SETTINGS:
        lines.append(f"  {' / '.join(s.env):34} {s.help} (default: {s.default or 'unset'})")
    return "\n".join(lines)


def check_endpoint(url: str, what: str) -> str:
    """An origin URL without its trailing slash; anything but http(s) is a one-line error."""
    url = url.rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ConfigError(
            f"{what} {url!r} is not an http(s) URL",
            hint="set --endpoint (or HF_ENDPOINT) to a URL such as https://huggingface.co",
        )
    return url


def _first(env: Mapping[str, str], names: tuple[str, ...]) -> str | None:
    for name in names:
        value = env.get(name)
        if value:
            return value
    return None


def _positive_int(env: Mapping[str, str], setting: Setting) -> int:
    raw = _first(env, setting.env) or setting.default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError(
            f"{setting.env[0]}={raw!r} is not a positive integer",
            hint=f"unset {setting.env[0]} or give it a number such as {setting.default}",
        )
    return value


def _state_dir(env: Mapping[str, str], hub_cache: Path) -> Path:
    explicit = env.get("SWARMHUB_HOME")
    return (Path(os.path.expanduser(explicit)) if explicit else hub_cache.parent / "swarmhub").absolute()


def _setting(name: str) -> Setting:
    return next(s for s in SETTINGS if s.name == name)


@dataclass(frozen=True)
class Settings:
    endpoint: str
    token: str | None
    hf_home: Path
    hub_cache: Path
    state_dir: Path
    connections: int
    retries: int
    access_ttl: int = 600
    refusal_ttl: int = 30
    branch_ttl: int = 30

    def with_cache(self, cache_dir: Path | None, env: Mapping[str, str] | None = None) -> Settings:
        """These settings with ``--cache-dir`` applied (the state folder follows the cache)."""
        if cache_dir is None:
            return self
        cache_dir = cache_dir.expanduser().absolute()
        return replace(self, hub_cache=cache_dir, state_dir=_state_dir(os.environ if env is None else env, cache_dir))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        hf_home = Path(os.path.expanduser(env.get("HF_HOME") or "~/.cache/huggingface"))
        hub_cache = Path(os.path.expanduser(env.get("HF_HUB_CACHE") or str(hf_home / "hub")))
        endpoint = check_endpoint(_first(env, _setting("endpoint").env) or DEFAULT_ENDPOINT, "endpoint")
        token = _first(env, _setting("token").env)
        if token is None:
            token_path = Path(os.path.expanduser(env.get("HF_TOKEN_PATH") or str(hf_home / "token")))
            try:
                token = token_path.read_text().strip() or None
            except OSError:
                token = None
        return cls(
            endpoint=endpoint,
            token=token,
            hf_home=hf_home,
            hub_cache=hub_cache,
            state_dir=_state_dir(env, hub_cache),
            connections=_positive_int(env, _setting("connections")),
            retries=_positive_int(env, _setting("retries")),
            access_ttl=_positive_int(env, _setting("access_ttl")),
            refusal_ttl=_positive_int(env, _setting("refusal_ttl")),
            branch_ttl=_positive_int(env, _setting("branch_ttl")),
        )
