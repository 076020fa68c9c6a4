"""Which paths a repo's root ``.gitattributes`` sends to Git LFS, without I/O.

gitattributes(5) patterns follow the gitignore(5) rules, which is what the Hub's default ``.gitattributes``
relies on (``*.bin filter=lfs ...``, ``*tfevents*``, ``saved_model/**/*``):

- a pattern without a ``/`` matches the file's basename at any depth;
- a pattern with a ``/`` (leading or inside) is anchored at the folder of the ``.gitattributes`` file;
- ``*`` and ``?`` never cross ``/``; ``**/`` at the start, ``/**/`` inside and ``/**`` at the end span
  folders; any other ``**`` is a plain ``*``;
- a pattern ending in ``/`` only matches folders, so it never makes a file LFS;
- each line sets, unsets (``-filter``) or un-specifies (``!filter``) attributes, and for a given attribute
  the last matching line wins.

Only the root ``.gitattributes`` is read (the Hub's LFS detection does the same for uploads); macro lines
(``[attr]name ...``) are skipped.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["lfs_matcher"]

_UNSET = "-"  # -filter
_UNSPECIFIED = "!"  # !filter


@dataclass(frozen=True)
class _FilterLine:
    regex: re.Pattern[str]
    filter: str  # "lfs", another driver, _UNSET or _UNSPECIFIED


def _split_pattern(line: str) -> tuple[str, str]:
    """Split ``pattern attrs...``; a pattern may be C-quoted to hold spaces (git's ``quote_path`` form)."""
    if not line.startswith('"'):
        pattern, *rest = re.split(r"[ \t]", line, maxsplit=1)
        return pattern, rest[0] if rest else ""
    out: list[str] = []
    i = 1
    while i < len(line) and line[i] != '"':
        if line[i] == "\\" and i + 1 < len(line):
            i += 1
            out.append({"t": "\t", "n": "\n"}.get(line[i], line[i]))
        else:
            out.append(line[i])
        i += 1
    return "".join(out), line[i + 1 :]


def _char_class(pattern: str, i: int) -> tuple[str, int]:
    """Translate ``[...]`` starting at ``pattern[i]``; returns (regex, index after the class)."""
    j = i + 1
    negate = j < len(pattern) and pattern[j] in "!^"
    if negate:
        j += 1
    start = j
    if j < len(pattern) and pattern[j] == "]":  # a leading ] is a literal member
        j += 1
    while j < len(pattern) and pattern[j] != "]":
        j += 1
    if j >= len(pattern):  # unterminated: a literal "["
        return re.escape("["), i + 1
    members = "".join("\\" + c if c in "\\^[" else c for c in pattern[start:j])
    # Character classes never match "/" (wildmatch with WM_PATHNAME).
    return (f"[^/{members}]" if negate else f"(?!/)[{members}]"), j + 1


def _translate(body: str) -> str:
    """Glob body (no leading ``/``) to a regex body, with git's ``**`` rules."""
    out: list[str] = []
    i = 0
    n = len(body)
    while i < n:
        if body.startswith("**", i):
            at_start = i == 0 or body[i - 1] == "/"
            j = i
            while j < n and body[j] == "*":
                j += 1
            if at_start and j < n and body[j] == "/":
                out.append("(?:[^/]*/)*")  # "**/" : zero or more folders
                i = j + 1
                continue
            if at_start and j == n and i > 0:
                out.append(".*")  # "/**" : everything inside
                i = j
                continue
            out.append("[^/]*")  # any other run of stars is a single "*"
            i = j
        elif body[i] == "*":
            out.append("[^/]*")
            i += 1
        elif body[i] == "?":
            out.append("[^/]")
            i += 1
        elif body[i] == "[":
            regex, i = _char_class(body, i)
            out.append(regex)
        elif body[i] == "\\" and i + 1 < n:
            out.append(re.escape(body[i + 1]))
            i += 2
        else:
            out.append(re.escape(body[i]))
            i += 1
    return "".join(out)


def _pattern_regex(pattern: str) -> re.Pattern[str] | None:
    if pattern.endswith("/"):
        return None  # folder-only patterns never match a file
    anchored = "/" in pattern
    body = _translate(pattern.lstrip("/") if anchored else pattern)
    prefix = "" if anchored else "(?:.*/)?"
    return re.compile(f"{prefix}{body}", re.DOTALL)


def _filter_value(attrs: list[str]) -> str | None:
    """The last word about ``filter`` on one line, if any."""
    value: str | None = None
    for attr in attrs:
        if attr == "-filter":
            value = _UNSET
        elif attr == "!filter":
            value = _UNSPECIFIED
        elif attr == "filter":
            value = "true"
        elif attr.startswith("filter="):
            value = attr.removeprefix("filter=")
    return value


def _filter_lines(text: str) -> list[_FilterLine]:
    lines: list[_FilterLine] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or line.startswith("[attr]"):
            continue
        pattern, rest = _split_pattern(line)
        value = _filter_value(rest.split())
        regex = _pattern_regex(pattern) if pattern else None
        if value is not None and regex is not None:
            lines.append(_FilterLine(regex, value))
    return lines


def lfs_matcher(text: str) -> Callable[[str], bool]:
    """A predicate telling whether a repo path (posix, relative to the root) has ``filter=lfs``.

    ``text`` is the content of the repo's root ``.gitattributes`` ("" when there is none).
    """
    lines = _filter_lines(text)
    lines.reverse()  # the last matching line wins

    def is_lfs(path: str) -> bool:
        for line in lines:
            if line.regex.fullmatch(path):
                return line.filter == "lfs"
        return False

    return is_lfs
