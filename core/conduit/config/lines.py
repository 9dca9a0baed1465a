"""Map TOML key paths to the line they are written on.

TOML parsers do not keep positions for values, so validation errors would
only have key paths. This small scanner follows ``[table]``,
``[[array.of.tables]]``, dotted keys and multi-line strings/arrays well enough
to answer "which line holds ``stage.2.peak_threshold``".
"""

from __future__ import annotations

import re

__all__ = ["KeyLines", "scan_key_lines"]

KeyPath = tuple[str | int, ...]

_BARE = re.compile(r"[A-Za-z0-9_-]+")


def _parse_key(text: str, pos: int) -> tuple[list[str], int] | None:
    """Parse a (dotted) key starting at ``pos``; return (parts, end) or None."""
    parts: list[str] = []
    n = len(text)
    while True:
        while pos < n and text[pos] in " \t":
            pos += 1
        if pos >= n:
            return None
        ch = text[pos]
        if ch in "\"'":
            end = text.find(ch, pos + 1)
            if end < 0:
                return None
            parts.append(text[pos + 1 : end])
            pos = end + 1
        else:
            m = _BARE.match(text, pos)
            if not m:
                return None
            parts.append(m.group(0))
            pos = m.end()
        while pos < n and text[pos] in " \t":
            pos += 1
        if pos < n and text[pos] == ".":
            pos += 1
            continue
        return parts, pos


class KeyLines:
    """Key path -> 1-based line number, with longest-prefix lookup."""

    def __init__(self, lines: dict[KeyPath, int]):
        self._lines = lines

    def line(self, path: KeyPath) -> int | None:
        """Line of ``path`` or of its closest written ancestor (None when nothing matches)."""
        path = tuple(path)
        while path:
            if path in self._lines:
                return self._lines[path]
            path = path[:-1]
        return None

    def __contains__(self, path: KeyPath) -> bool:
        return tuple(path) in self._lines


def scan_key_lines(text: str) -> KeyLines:
    """Scan TOML source text and record the line of every table header and key."""
    lines: dict[KeyPath, int] = {}
    array_counts: dict[KeyPath, int] = {}
    current: KeyPath = ()
    in_multiline: str | None = None  # the closing delimiter of a multi-line string
    bracket_depth = 0  # open brackets of a multi-line array value

    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw
        if in_multiline:
            if in_multiline in line:
                in_multiline = None
            continue
        if bracket_depth > 0:
            bracket_depth += _bracket_delta(line)
            continue
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("[["):
            parsed = _parse_key(stripped, 2)
            if parsed:
                parent = _resolve(tuple(parsed[0][:-1]), array_counts)
                base = parent + (parsed[0][-1],)
                index = array_counts.get(base, -1) + 1
                array_counts[base] = index
                current = base + (index,)
                lines.setdefault(base, lineno)
                lines[current] = lineno
            continue
        if stripped.startswith("["):
            parsed = _parse_key(stripped, 1)
            if parsed:
                current = _resolve(tuple(parsed[0]), array_counts)
                lines[current] = lineno
            continue
        parsed = _parse_key(line, 0)
        if not parsed:
            continue
        parts, end = parsed
        if end >= len(line) or line[end] != "=":
            continue
        path = current + tuple(parts)
        lines[path] = lineno
        value = line[end + 1 :].strip()
        for delim in ('"""', "'''"):
            if value.startswith(delim) and value.count(delim) == 1:
                in_multiline = delim
        if in_multiline is None and value.startswith("["):
            bracket_depth = _bracket_delta(value)
    return KeyLines(lines)


def _resolve(parts: KeyPath, array_counts: dict[KeyPath, int]) -> KeyPath:
    """Insert the current index after every component that is an array of tables."""
    out: KeyPath = ()
    for part in parts:
        out = out + (part,)
        if out in array_counts:
            out = out + (array_counts[out],)
    return out


def _bracket_delta(text: str) -> int:
    depth = 0
    quote: str | None = None
    for ch in text:
        if quote:
            if ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch == "#":
            break
        elif ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
    return depth
