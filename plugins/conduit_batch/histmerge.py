"""Sum the histograms of many runs into one file.

Each run's outputs may hold a ``histograms`` group (written by the
``histogram`` sink, directly or through the ``hdf5`` sink). Runs are summed
bin by bin: every ``counts`` dataset is added and the ``events``,
``entries`` and ``outside`` attributes are summed; bin edges and every other
attribute must agree, otherwise that run is reported and left out.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

__all__ = ["merge_run_histograms", "HistogramMismatch"]

log = logging.getLogger("conduit.batch")

SUMMED_ATTRS = ("events", "entries", "outside")
GROUP = "histograms"


class HistogramMismatch(ValueError):
    """Two runs' histograms cannot be added (different binning or names)."""


def _find_histogram_files(manifests, runs: list[int]) -> list[tuple[int, Path]]:
    found = []
    for run in runs:
        try:
            record = json.loads(manifests.path(run).read_text())
        except (OSError, ValueError):
            continue
        for output in record.get("outputs", []):
            path = Path(output)
            if path.suffix in (".h5", ".hdf5") and path.exists() and _has_group(path):
                found.append((run, path))
                break
    return found


def _has_group(path: Path) -> bool:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return GROUP in f
    except OSError:
        return False


def _add(target, source, where: str) -> None:
    """Add ``source`` (an h5py group) into ``target`` (same structure) in place."""
    import h5py
    import numpy as np

    if set(target.keys()) != set(source.keys()):
        raise HistogramMismatch(f"{where}: different contents {sorted(target)} vs {sorted(source)}")
    for key, value in source.attrs.items():
        if key in SUMMED_ATTRS:
            target.attrs[key] = target.attrs[key] + value
        elif not np.array_equal(np.asarray(target.attrs[key]), np.asarray(value)):
            raise HistogramMismatch(f"{where}: attribute {key} differs")
    for name, item in source.items():
        if isinstance(item, h5py.Group):
            _add(target[name], item, f"{where}/{name}")
        elif name == "counts":
            if target[name].shape != item.shape:
                raise HistogramMismatch(f"{where}/counts: shape {target[name].shape} vs {item.shape}")
            target[name][...] = target[name][...] + item[...]
        elif not np.array_equal(target[name][...], item[...]):
            raise HistogramMismatch(f"{where}/{name} differs (binning changed between runs?)")


def merge_run_histograms(manifests, runs: list[int], target: Path) -> int:
    """Sum the ``histograms`` groups of the runs' outputs into ``target``; return how many runs were added."""
    import h5py

    files = _find_histogram_files(manifests, runs)
    if not files:
        return 0
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp.h5")
    added = []
    with h5py.File(tmp, "w") as out:
        first_run, first = files[0]
        with h5py.File(first, "r") as f:
            f.copy(f[GROUP], out, name=GROUP)
        added.append(first_run)
        for run, path in files[1:]:
            with h5py.File(path, "r") as f:
                # Check on a scratch copy first so that a mismatching run leaves the sum untouched.
                scratch = out.create_group("_scratch")
                out.copy(out[GROUP], scratch, name=GROUP)
                try:
                    _add(scratch[GROUP], f[GROUP], f"run {run}")
                except HistogramMismatch as err:
                    log.error("histograms of run %d not merged: %s", run, err)
                    del out["_scratch"]
                    continue
                del out[GROUP]
                out.move(f"_scratch/{GROUP}", GROUP)
                del out["_scratch"]
                added.append(run)
        out.attrs["runs"] = added
    tmp.replace(target)
    return len(added)
