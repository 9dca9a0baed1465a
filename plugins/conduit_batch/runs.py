"""Run-number lists: ``1-250``, ``3,5,9-12``."""

from __future__ import annotations

__all__ = ["parse_runs"]


def parse_runs(text: str) -> list[int]:
    """Sorted unique run numbers from a comma-separated list of numbers and inclusive ranges."""
    runs: set[int] = set()
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        first, sep, last = part.partition("-")
        try:
            lo = int(first)
            hi = int(last) if sep else lo
        except ValueError:
            raise ValueError(f"bad run list {text!r}: {part!r} is not a number or a range like 1-250") from None
        if lo < 0 or hi < lo:
            raise ValueError(f"bad run list {text!r}: range {part!r} is empty or negative")
        runs.update(range(lo, hi + 1))
    if not runs:
        raise ValueError(f"bad run list {text!r}: no runs")
    return sorted(runs)
