"""Spyral's workspace: where its phases look for our outputs, and its Estimation parquet.

With ``layout = "spyral"`` the ``hdf5`` sink writes a workspace that Spyral
(``attpc-spyral`` 1.1.2) opens as is. What each Spyral phase reads (learnt
from its source, GPL-3.0, nothing copied; run ``benchmarks/spyral_continue.py``
to check against Spyral itself):

* ``Pipeline(phases, active, workspace, trace_path)`` processes run N only
  when ``trace_path/run_NNNN.h5`` exists and is not empty, *even when only
  later phases are active*: point ``trace_path`` at the run file's directory
  (the sink's ``path`` must then be named ``run_{run:04d}.h5``). A phase that
  is not active contributes ``WORKSPACE/<Phase>/run_NNNN.<ext>``.
* ``ClusterPhase`` reads ``WORKSPACE/Pointcloud/run_NNNN.h5``: group
  ``cloud`` (attrs ``min_event``, ``max_event``); ``cloud_{id}`` for every id
  from min to max inclusive that exists, float64 (N, 8) [x, y, z, amplitude,
  integral, pad, time, scale]; it skips a cloud whose z decreases, and its
  smoothing splines raise (ending the whole run) when two points share a z;
  it copies the attrs ``orig_run``, ``orig_event``, ``ic_amplitude``,
  ``ic_centroid``, ``ic_integral``, ``ic_multiplicity`` to its clusters.
* ``EstimationPhase`` reads ``WORKSPACE/Cluster/run_NNNN.h5``: group
  ``cluster`` (attrs ``min_event``, ``max_event``); ``event_{id}`` with attrs
  ``nclusters``, ``orig_run``, ``orig_event``, ``ic_*``; ``cluster_{i}``
  (i < nclusters) with attrs ``label`` and ``direction`` (-1 none, 0 forward,
  1 backward) and dataset ``cloud`` float64 (M, 5) [x, y, z, integral, scale].
* ``InterpSolverPhase`` reads ``WORKSPACE/Estimation/run_NNNN.parquet``
  (:data:`ESTIMATION_COLUMNS`), keeps the rows inside its particle-ID cut
  (``dEdx``, ``brho`` by default) with ``ic_min_val < ic_amplitude <
  ic_max_val``, and fits ``Cluster/run_NNNN.h5`` ``event_{event}/cluster_{cluster_index}``.

The parquet is written at the end of a run from the run file's
``/estimates`` table; after a crash write it from the run file with
``python -m conduit_stages.hdf5_sink.spyral RUN_FILE WORKSPACE``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

__all__ = [
    "POINTCLOUD",
    "CLUSTER",
    "ESTIMATION",
    "ESTIMATION_COLUMNS",
    "run_stem",
    "workspace_file",
    "trace_file_problem",
    "strictly_increasing_z",
    "estimation_table",
    "write_estimation_parquet",
]

#: Spyral's phase (= directory) names.
POINTCLOUD, CLUSTER, ESTIMATION = "Pointcloud", "Cluster", "Estimation"

_INT, _FLOAT = np.dtype(np.int64), np.dtype(np.float64)

#: Spyral's Estimation columns in its order: (parquet column, field of the run file's /estimates, dtype).
#: Units: vertex/center mm, polar/azimuthal rad, brho T·m, dE ADC·TB, arclength mm, dEdx ADC·TB/mm.
ESTIMATION_COLUMNS: tuple[tuple[str, str, np.dtype], ...] = (
    ("event", "event", _INT),
    ("cluster_index", "cluster_index", _INT),
    ("cluster_label", "cluster_label", _INT),
    ("orig_run", "run", _INT),
    ("orig_event", "event", _INT),
    ("ic_amplitude", "ic_amplitude", _FLOAT),
    ("ic_centroid", "ic_centroid", _FLOAT),
    ("ic_integral", "ic_integral", _FLOAT),
    ("ic_multiplicity", "ic_multiplicity", _FLOAT),
    ("vertex_x", "vertex_x", _FLOAT),
    ("vertex_y", "vertex_y", _FLOAT),
    ("vertex_z", "vertex_z", _FLOAT),
    ("center_x", "center_x", _FLOAT),
    ("center_y", "center_y", _FLOAT),
    ("center_z", "center_z", _FLOAT),
    ("polar", "polar", _FLOAT),
    ("azimuthal", "azimuthal", _FLOAT),
    ("brho", "brho", _FLOAT),
    ("dEdx", "dEdx", _FLOAT),
    ("sqrt_dEdx", "sqrt_dEdx", _FLOAT),
    ("dE", "dE", _FLOAT),
    ("arclength", "arclength", _FLOAT),
    ("direction", "direction", _INT),
)


def run_stem(run: int | None) -> str:
    """``run_NNNN``, Spyral's name for run ``run`` (0 when unknown)."""
    return f"run_{run if run is not None and run >= 0 else 0:04d}"


def workspace_file(workspace: Path, phase: str, run: int | None) -> Path:
    """``WORKSPACE/<phase>/run_NNNN.h5`` (``.parquet`` for Estimation), where Spyral's ``phase`` keeps a run."""
    suffix = ".parquet" if phase == ESTIMATION else ".h5"
    return Path(workspace) / phase / (run_stem(run) + suffix)


def trace_file_problem(run_path: Path, run: int | None) -> str | None:
    """Why Spyral's Pipeline would not find the run file as its trace file, or None."""
    expected = run_stem(run) + ".h5"
    if Path(run_path).name == expected:
        return None
    return (f"{run_path}: Spyral's Pipeline only processes a run when its trace_path holds {expected} "
            f"(even to run later phases): name the hdf5 sink's path '.../run_{{run:04d}}.h5'")


def strictly_increasing_z(cloud: np.ndarray) -> bool:
    """True when the cloud's z column (2) strictly increases, as Spyral's splines need."""
    z = np.asarray(cloud)[:, 2]
    return bool(len(z) < 2 or (z[1:] > z[:-1]).all())  # the method: np.all's dispatch cost 7 µs per cloud


def estimation_table(rows: np.ndarray):
    """A pyarrow Table with Spyral's Estimation columns from rows of the sink's /estimates table."""
    import pyarrow as pa

    return pa.table({name: np.asarray(rows[field], dtype=dtype) for name, field, dtype in ESTIMATION_COLUMNS})


def write_estimation_parquet(run_file: Path, path: Path) -> int:
    """Write the run file's /estimates as Spyral's Estimation parquet at ``path`` (atomically); rows written."""
    import h5py
    import pyarrow.parquet as pq

    from .layout import ESTIMATES

    with h5py.File(run_file, "r") as f:
        if ESTIMATES not in f:
            raise ValueError(f"{run_file}: no /{ESTIMATES} table (was the hdf5 sink's 'estimates' off?)")
        rows = f[ESTIMATES][...]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(estimation_table(rows), tmp)
    tmp.replace(path)
    return len(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m conduit_stages.hdf5_sink.spyral",
        description="Write Spyral's Estimation/run_NNNN.parquet from a run file's /estimates table.",
    )
    parser.add_argument("run_file", type=Path, help="the hdf5 sink's run file (e.g. out/run_0001.h5)")
    parser.add_argument("workspace", type=Path, help="the Spyral workspace directory")
    parser.add_argument("--run", type=int, help="run number (default: the run file's 'run' attribute)")
    args = parser.parse_args(argv)
    run = args.run
    try:
        if run is None:
            import h5py

            with h5py.File(args.run_file, "r") as f:
                run = int(f.attrs.get("run", -1))
        path = workspace_file(args.workspace, ESTIMATION, run)
        n = write_estimation_parquet(args.run_file, path)
    except (OSError, ValueError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {path} ({n} estimates)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
