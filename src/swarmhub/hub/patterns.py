"""Include/exclude filtering with huggingface_hub's allow_patterns/ignore_patterns semantics.

huggingface_hub (``utils/_paths.py: filter_repo_objects``) matches with ``fnmatch.fnmatchcase`` on the whole
path, so ``*`` crosses ``/`` and matching is case-sensitive; backslashes count as ``/``; a pattern ending in
``/`` means everything under that folder (``foo/`` -> ``foo/*``). A path is kept when it matches any include
pattern (when includes are given at all) and no exclude pattern.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from fnmatch import fnmatchcase

__all__ = ["filter_paths", "path_selected"]


def _normalise(pattern: str) -> str:
    pattern = pattern.replace("\\", "/")
    return pattern + "*" if pattern.endswith("/") else pattern


def path_selected(path: str, include: Sequence[str] | None = None, exclude: Sequence[str] | None = None) -> bool:
    path = path.replace("\\", "/")
    if include is not None and not any(fnmatchcase(path, _normalise(p)) for p in include):
        return False
    return not (exclude is not None and any(fnmatchcase(path, _normalise(p)) for p in exclude))


def filter_paths(
    paths: Iterable[str], include: Sequence[str] | None = None, exclude: Sequence[str] | None = None
) -> list[str]:
    return [p for p in paths if path_selected(p, include, exclude)]
