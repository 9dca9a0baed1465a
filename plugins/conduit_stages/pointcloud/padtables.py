"""Per-pad tables of the pointcloud stage: time corrections and gains from CSV files.

The files follow Spyral's layout: one header line naming the column, then one
number per line, the row index (0-based, after the header) being the pad id.
Classic-Mac CR-only line endings (as in Spyral's pad_time_correction.csv),
LF and CRLF are all accepted.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["read_pad_column"]


def read_pad_column(path: Path, n_pads: int, *, names: tuple[str, ...], what: str) -> np.ndarray:
    """One float per pad from a one-column (or named-column) CSV.

    ``names`` are accepted column names (case-insensitive); a file with a
    single column may name it anything. Raises ValueError naming the file and
    line when the file is malformed or has a different number of pads.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: {what} file not found") from None
    text = raw.decode("utf-8-sig", errors="replace")
    lines = text.splitlines()  # splits on \r, \n and \r\n alike
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise ValueError(f"{path}: empty {what} file")
    header = [h.strip().lower() for h in lines[0].split(",")]
    if len(header) == 1:
        column = 0
    else:
        matches = [i for i, h in enumerate(header) if h in names]
        if not matches:
            raise ValueError(f"{path}:1: {what} file needs a column named {' or '.join(names)}, got {lines[0]!r}")
        column = matches[0]
    try:
        float(header[column])
    except ValueError:
        pass
    else:
        raise ValueError(f"{path}:1: the first line must be a header naming the column, got {lines[0]!r}")
    values = np.empty(len(lines) - 1, dtype=np.float64)
    for i, line in enumerate(lines[1:]):
        cells = line.split(",")
        try:
            values[i] = float(cells[column])
        except (ValueError, IndexError):
            raise ValueError(f"{path}:{i + 2}: expected a number, got {line!r}") from None
    if not np.all(np.isfinite(values)):
        bad = int(np.flatnonzero(~np.isfinite(values))[0])
        raise ValueError(f"{path}:{bad + 2}: {what} must be finite, got {lines[bad + 1]!r}")
    if len(values) != n_pads:
        raise ValueError(f"{path}: {what} file has {len(values)} pad rows, the pad plane has {n_pads}")
    return values
