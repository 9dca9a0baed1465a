"""Optional: Spyral 1.1.2 carries on from our files, phase by phase.

Never part of the tests. Spyral (GPL-3.0) is *called* in its own virtual
environment (``_spyral_env.py``; ``--setup`` creates it), never copied.

    NUMBA_CACHE_DIR=.numba-cache .venv/bin/python benchmarks/spyral_continue.py --setup [--write docs/formats.md]

1. (this venv) ``conduit run`` on simulated events (reference mix):
   pointcloud, cluster.hdbscan, estimate, and the hdf5 sink with
   ``layout = "spyral"``: the run file ``out/run_0001.h5`` (traces) and the
   workspace ``ws/`` (Pointcloud, Cluster, Estimation).
2. (Spyral's venv) each of Spyral's phases through Spyral's own ``Pipeline``,
   with every earlier phase inactive so that the phase reads *our* files:
   PointcloudPhase on our traces, ClusterPhase on our point clouds,
   EstimationPhase on our clusters, InterpSolverPhase on our estimates and
   clusters. Each phase works in a copy of the workspace without the file
   it writes, so what it leaves is its own.
3. Per phase: files read, events in and out, success (no exception logged,
   output written), Spyral's warnings. ``--write`` puts the section into a
   markdown file (docs/formats.md).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SECTION = "## Spyral continues from our files"
PHASES = ("Pointcloud", "Cluster", "Estimation", "InterpSolver")

PIPELINE = """
[source]
kind = "simulate"
preset = "default"
events = {events}
seed = {seed}
run = {run}

[engine]
workers = {workers}

[[stage]]
use = "pointcloud"
{pointcloud}

[[stage]]
use = "cluster.hdbscan"

[[stage]]
use = "estimate"

[[stage]]
use = "hdf5"
path = "{path}"
layout = "spyral"
workspace = "ws"
{hdf5}
"""


def pipeline_toml(events: int, seed: int, run: int, workers: int = 0, pointcloud: str = "", hdf5: str = "",
                  path: str = "out/run_{run:04d}.h5") -> str:  # fmt: skip
    """Simulated reference mix -> pointcloud, cluster.hdbscan, estimate -> hdf5 with layout "spyral" into ws/.

    ``pointcloud`` and ``hdf5`` are extra lines for those stages (also used by tests/sinks/test_sinks_spyral.py).
    """
    return PIPELINE.format(events=events, seed=seed, run=run, workers=workers, pointcloud=pointcloud, hdf5=hdf5,
                           path=path)  # fmt: skip


# ----------------------------------------------------------------------------- step 2, run by Spyral's python


class _Progress:
    """Stands in for the multiprocessing queue Spyral's phases report progress to."""

    def __init__(self) -> None:
        self.messages = 0

    def put(self, message) -> None:
        self.messages += 1


def spyral_side(config_path: str, out_path: str) -> None:
    import logging
    import os

    import h5py
    import numpy as np
    import polars as pl
    from numpy.random import SeedSequence
    from spyral.core.config import (
        DEFAULT_MAP,
        ClusterParameters,
        ContinuityJoinParameters,
        DetectorParameters,
        EstimateParameters,
        FribParameters,
        GetParameters,
        HdbscanParameters,
        PadParameters,
        SolverParameters,
    )
    from spyral.core.pipeline import Pipeline
    from spyral.core.spy_log import ROOT_LOGGER, init_spyral_logger_parent
    from spyral.phases.cluster_phase import ClusterPhase
    from spyral.phases.estimation_phase import EstimationPhase
    from spyral.phases.interp_solver_phase import InterpSolverPhase
    from spyral.phases.pointcloud_phase import PointcloudPhase

    cfg = json.loads(Path(config_path).read_text())
    d = cfg["detector"]
    det = DetectorParameters(
        magnetic_field=d["magnetic_field"], electric_field=d["electric_field"],
        detector_length=d["detector_length"], beam_region_radius=d["beam_region_radius"],
        micromegas_time_bucket=d["micromegas_time_bucket"], window_time_bucket=d["window_time_bucket"],
        get_frequency=d["get_frequency"], garfield_file_path=Path("dummy"), do_garfield_correction=False,
    )  # fmt: skip
    scratch = Path(cfg["scratch"])
    ours = Path(cfg["workspace"])
    trace_dir = Path(cfg["trace_dir"])
    run = int(cfg["run"])
    stem = f"run_{run:04d}"
    # the solver's inputs: a gas target, a particle-ID cut over everything (dE/dx, B-rho), a small mesh
    (scratch / "target.json").write_text(json.dumps({"compound": [[1, 2, 2]], "pressure(Torr)": 600.0}))
    (scratch / "pid.json").write_text(json.dumps(
        {"name": "everything", "vertices": [[-1.0, -1.0], [1e9, -1.0], [1e9, 100.0], [-1.0, 100.0]], "Z": 1, "A": 2}
    ))  # fmt: skip
    solver = SolverParameters(
        gas_data_path=scratch / "target.json", particle_id_filename=scratch / "pid.json",
        ic_min_val=-2.0, ic_max_val=1e9,  # simulated events have no ion chamber: ic_amplitude is -1
        n_time_steps=300, interp_ke_min=0.1, interp_ke_max=40.0, interp_ke_bins=40,
        interp_polar_min=2.0, interp_polar_max=178.0, interp_polar_bins=45,
        fit_vertex_rho=True, fit_vertex_phi=True, fit_azimuthal=True, fit_method="lbfgsb",
    )  # fmt: skip

    def make_phases() -> list:
        return [
            PointcloudPhase(
                GetParameters(baseline_window_scale=20.0, peak_separation=50.0, peak_prominence=20.0,
                              peak_max_width=50.0, peak_threshold=40.0),
                FribParameters(baseline_window_scale=100.0, peak_separation=50.0, peak_prominence=20.0,
                               peak_max_width=500.0, peak_threshold=100.0, ic_delay_time_bucket=1100,
                               ic_multiplicity=1),
                det,
                PadParameters(pad_geometry_path=DEFAULT_MAP, pad_time_path=DEFAULT_MAP, pad_scale_path=DEFAULT_MAP),
            ),
            ClusterPhase(
                ClusterParameters(
                    min_cloud_size=50, hdbscan_parameters=HdbscanParameters(3, 0.03, 10, 10.0),
                    tripclust_parameters=None, overlap_join=None,
                    continuity_join=ContinuityJoinParameters(0.4, 0.2), direction_threshold=0.5,
                    outlier_scale_factor=0.1,
                ),
                det,
            ),
            EstimationPhase(EstimateParameters(30, 100.0), det),
            InterpSolverPhase(solver, det),
        ]  # fmt: skip

    class Collect(logging.Handler):
        def __init__(self) -> None:
            super().__init__(logging.WARNING)
            self.lines: list[str] = []

        def emit(self, record) -> None:
            text = record.getMessage().splitlines()[0][:300].strip()
            if record.exc_info and record.exc_info[0] is not None:
                text = f"{record.exc_info[0].__name__}: {text}"
            self.lines.append(f"{record.levelname}: {text}")

    def run_phase(index: int, name: str, patch=None, source: Path = ours, traces: Path = trace_dir) -> dict:
        ws = scratch / name
        if index == 0:
            ws.mkdir(parents=True)
        else:
            shutil.copytree(source, ws)
        phases = make_phases()[: index + 1]
        active = [False] * index + [True]
        pipeline = Pipeline(phases, active, ws, traces)
        pipeline.create_workspace()
        written = phases[index].get_artifact_path(ws)
        for old in written.glob(f"{stem}*"):  # what this phase writes must come from it
            old.unlink() if old.is_file() else shutil.rmtree(old)
        logger = logging.getLogger(ROOT_LOGGER)
        before = list(logger.handlers)
        init_spyral_logger_parent(ws)  # Spyral's log file, WORKSPACE/log/
        collect = Collect()
        logger.addHandler(collect)
        handles: dict = {}
        t0 = t1 = time.perf_counter()
        assets, valid = False, None
        try:
            assets = pipeline.create_assets()
            pipeline.create_shared_data(handles)
            valid = pipeline.validate()
            t1 = time.perf_counter()
            if patch is not None:
                patch(True)
            pipeline.run([run], _Progress(), SeedSequence(int(cfg["seed"])))  # logs and swallows exceptions
        except Exception as err:  # set-up failed: recorded like Spyral's own errors
            collect.lines.append(f"ERROR: {type(err).__name__}: {str(err).splitlines()[0][:300]}")
        finally:
            if patch is not None:
                patch(False)
            for handle in handles.values():
                handle.close()
                handle.unlink()
            for handler in [h for h in logger.handlers if h not in before]:
                logger.removeHandler(handler)
                handler.close()
        return {
            "phase": name, "workspace": str(ws), "assets": bool(assets),
            "valid": valid is not None and all(valid.values()),
            "setup_s": t1 - t0, "run_s": time.perf_counter() - t1, "log": collect.lines,
            "outputs": sorted(str(p.relative_to(ws)) for p in written.glob(f"{stem}*")),
        }  # fmt: skip

    results = []
    # --- PointcloudPhase on our traces
    r = run_phase(0, "Pointcloud")
    r["reads"] = [f"out/{stem}.h5"]
    with h5py.File(trace_dir / f"{stem}.h5", "r") as f:
        r["in"] = f"{len(f['events'])} events (traces)"
        last = int(f["events"].attrs["max_event"])
    out = scratch / "Pointcloud" / "Pointcloud" / f"{stem}.h5"
    if out.exists():
        with h5py.File(out, "r") as f, h5py.File(ours / "Pointcloud" / f"{stem}.h5", "r") as g:
            theirs = {k: f["cloud"][k].shape[0] for k in f["cloud"]}
            mine = {k: g["cloud"][k].shape[0] for k in g["cloud"]}
        r["out"] = f"{len(theirs)} clouds ({sum(theirs.values())} points)"
        common = sorted(set(theirs) & set(mine))
        r["notes"] = [f"points in the {len(common)} clouds both made: Spyral {sum(theirs[k] for k in common)}, "
                      f"conduit {sum(mine[k] for k in common)}"]  # fmt: skip
        if f"cloud_{last}" in mine and f"cloud_{last}" not in theirs:
            r["notes"].append(f"Spyral's merger-1.0 reader stops before max_event (event {last} unread: its "
                              "range defect, spyral_algorithms.md §9.4)")  # fmt: skip
    results.append(r)

    # --- ClusterPhase on our point clouds
    r = run_phase(1, "Cluster")
    r["reads"] = [f"ws/Pointcloud/{stem}.h5"]
    with h5py.File(ours / "Pointcloud" / f"{stem}.h5", "r") as f:
        g = f["cloud"]
        ids = [i for i in range(int(g.attrs["min_event"]), int(g.attrs["max_event"]) + 1) if f"cloud_{i}" in g]
        r["in"] = f"{len(ids)} clouds"
    out = scratch / "Cluster" / "Cluster" / f"{stem}.h5"
    if out.exists():
        with h5py.File(out, "r") as f:
            events = list(f["cluster"].values())
            clusters = sum(int(e.attrs["nclusters"]) for e in events)
        r["out"] = f"{len(events)} events, {clusters} clusters"
    results.append(r)
    # the same on clouds written without the tie jitter: what the issue reported
    tied = Path(cfg["tied"])
    r = run_phase(1, "Cluster-tied", source=tied / "ws", traces=tied / "out")
    r["phase"] = "Cluster, our clouds with `tie_jitter = 0`"
    r["reads"] = [f"tied/ws/Pointcloud/{stem}.h5"]
    with h5py.File(tied / "ws" / "Pointcloud" / f"{stem}.h5", "r") as f:
        n_tied = sum(bool(np.any(np.diff(ds[:, 2]) == 0)) for ds in f["cloud"].values())
        r["in"] = f"{len(f['cloud'])} clouds, {n_tied} with equal z values"
    out = scratch / "Cluster-tied" / "Cluster" / f"{stem}.h5"
    if out.exists():
        with h5py.File(out, "r") as f:
            r["out"] = f"{len(f['cluster'])} events (the run ended at the first exception)"
    results.append(r)

    # --- EstimationPhase on our clusters: as shipped, then with its parquet defect worked around
    def our_clusters() -> str:
        with h5py.File(ours / "Cluster" / f"{stem}.h5", "r") as f:
            events = list(f["cluster"].values())
            return f"{len(events)} events, {sum(int(e.attrs['nclusters']) for e in events)} clusters"

    def estimation_out(ws_name: str) -> str | None:
        path = scratch / ws_name / "Estimation" / f"{stem}.parquet"
        if not path.exists():
            return None
        df = pl.read_parquet(path)
        return f"{df.height} estimates ({df['event'].n_unique()} events)"

    fixed_label = "Estimation, enum defect worked around"
    for label, ws_name, patch in (("Estimation", "Estimation", None),
                                  (fixed_label, "Estimation-fixed", _direction_values())):  # fmt: skip
        r = run_phase(2, ws_name, patch)
        r["phase"] = label
        r["reads"] = [f"ws/Cluster/{stem}.h5"]
        r["in"] = our_clusters()
        r["out"] = estimation_out(ws_name)
        results.append(r)
        if patch is None and r["out"] is None:  # the same phase on Spyral's own clusters: whose defect is it?
            own = run_phase(2, "Estimation-own", source=scratch / "Cluster")
            own_out = estimation_out("Estimation-own")
            r["notes"] = [f"as shipped it also fails on Spyral's own clusters (its ClusterPhase output above): "
                          f"{'; '.join(sorted(set(own['log']))) or 'no error'}, {own_out or 'nothing written'}; "
                          "Spyral 1.1.2 puts its Direction enum into the rows, which polars cannot write "
                          "(spyral_algorithms.md §9.1). Worked around in the next row by giving its rows the "
                          "enum's value (the benchmark wraps Spyral's estimator; Spyral's files are untouched)"]  # fmt: skip
    # Spyral's estimates of our clusters next to ours (same units and conventions?)
    fixed = scratch / "Estimation-fixed" / "Estimation" / f"{stem}.parquet"
    if fixed.exists():
        theirs = pl.read_parquet(fixed)
        mine = pl.read_parquet(ours / "Estimation" / f"{stem}.parquet")
        both = mine.join(theirs, on=["event", "cluster_index"], suffix="_spyral")

        def median_abs(name: str, relative: bool = False) -> float:
            a, b = both[name].to_numpy(), both[f"{name}_spyral"].to_numpy()
            return float(np.median(np.abs(b / a - 1.0) if relative else np.abs(b - a))) if len(a) else float("nan")

        ours_schema = [(k, str(t)) for k, t in mine.schema.items()]
        spyral_schema = [(k, str(t)) for k, t in theirs.schema.items()]
        results[-1]["compare"] = {
            "ours": mine.height, "spyral": theirs.height, "matched": both.height,
            "brho_rel_median": median_abs("brho", relative=True),
            "polar_deg_median": float(np.degrees(median_abs("polar"))),
            "vertex_z_mm_median": median_abs("vertex_z"),
            "same_schema": ours_schema == spyral_schema,
            "schema_differences": [f"{a} / {b}" for a, b in zip(ours_schema, spyral_schema) if a != b]
            + ([f"{len(ours_schema)} / {len(spyral_schema)} columns"] if len(ours_schema) != len(spyral_schema) else []),
            "columns": len(ours_schema),
        }  # fmt: skip

    # --- InterpSolverPhase on our estimates (and clusters)
    r = run_phase(3, "InterpSolver")
    r["reads"] = [f"ws/Estimation/{stem}.parquet", f"ws/Cluster/{stem}.h5"]
    mine = pl.read_parquet(ours / "Estimation" / f"{stem}.parquet")
    r["in"] = f"{mine.height} estimates ({mine['event'].n_unique()} events)"
    solved = list((scratch / "InterpSolver" / "InterpSolver").glob(f"{stem}_*.parquet"))
    if solved:
        df = pl.read_parquet(solved[0])
        r["out"] = f"{df.height} fits ({df['event'].n_unique()} events)"
    results.append(r)
    Path(out_path).write_text(json.dumps({"results": results, "versions": _versions(), "cpus": os.cpu_count()}))


def _direction_values():
    """Spyral 1.1.2's EstimationPhase puts the Direction enum into its rows and polars cannot write it
    (spyral_algorithms.md §9.1); wrap its estimator so the rows hold the enum's value, as its schema says."""
    import spyral.phases.estimation_phase as phase

    original = phase.estimate_physics

    def with_value(*args, **kwargs):
        res = original(*args, **kwargs)
        if res is not None:
            res.direction = getattr(res.direction, "value", res.direction)
        return res

    def patch(on: bool) -> None:
        phase.estimate_physics = with_value if on else original

    return patch


def _versions() -> dict:
    import importlib.metadata as m

    return {p: m.version(p) for p in ("attpc-spyral", "spyral-utils", "polars", "numpy", "scipy", "h5py", "scikit-learn")}


# ----------------------------------------------------------------------------- steps 1 and 3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spyral-python", type=Path, help="python of a venv with attpc-spyral 1.1.2 "
                        "(default: /tmp/spyral-venv/bin/python, created by --setup)")  # fmt: skip
    parser.add_argument("--setup", action="store_true", help="create Spyral's venv when missing")
    parser.add_argument("--events", type=int, default=60)
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--run", type=int, default=1)
    parser.add_argument("--workers", type=int, default=0, help="[engine] workers of our run (0: in process)")
    parser.add_argument("--keep", type=Path, help="work in this directory and keep it (default: a temporary one)")
    parser.add_argument("--write", type=Path, help="put the section into this markdown file (e.g. docs/formats.md)")
    parser.add_argument("--spyral-side", nargs=2, metavar=("CONFIG", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.spyral_side:
        spyral_side(*args.spyral_side)
        return
    sys.path.insert(0, str(HERE))
    from _common import machine, write_section
    from _spyral_env import DEFAULT_VENV, ensure_spyral_python, spyral_version

    python = args.spyral_python or DEFAULT_VENV / "bin" / "python"
    if args.setup and args.spyral_python is None:
        python = ensure_spyral_python(DEFAULT_VENV)
    if spyral_version(python) is None:
        sys.exit(f"error: {python}: attpc-spyral is not importable; run with --setup or give --spyral-python")

    work = args.keep or Path(tempfile.mkdtemp(prefix="spyral-continue-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        ours = write_our_outputs(work, args)
        scratch = work / "spyral"
        if scratch.exists():
            shutil.rmtree(scratch)
        scratch.mkdir()
        from conduit.detector import DetectorParams

        det = DetectorParams()
        config = {
            "workspace": str(work / "ws"), "trace_dir": str(work / "out"), "run": args.run, "seed": args.seed,
            "scratch": str(scratch), "tied": str(work / "tied"),
            "detector": {k: getattr(det, k) for k in ("magnetic_field", "electric_field", "detector_length",
                                                      "beam_region_radius", "micromegas_time_bucket",
                                                      "window_time_bucket", "get_frequency")},
        }  # fmt: skip
        (work / "spyral-config.json").write_text(json.dumps(config))
        with open(work / "spyral-side.log", "w") as log:  # Spyral's progress output
            done = subprocess.run([str(python), __file__, "--spyral-side", str(work / "spyral-config.json"),
                                   str(work / "spyral-result.json")], stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
        if done.returncode != 0:
            sys.exit("error: the Spyral side failed:\n" + (work / "spyral-side.log").read_text()[-3000:])
        result = json.loads((work / "spyral-result.json").read_text())
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    text = report(args, ours, result, machine())
    if args.write:
        write_section(args.write, text)
        print(f"wrote the section into {args.write}", file=sys.stderr)
    print(text)


def write_our_outputs(work: Path, args) -> dict:
    """Run the conduit on simulated events into work/out and work/ws (and work/tied/, without the tie jitter)."""
    import h5py
    import pyarrow.parquet as pq

    for directory, pointcloud in ((work, ""), (work / "tied", "tie_jitter = 0.0")):
        directory.mkdir(exist_ok=True)
        pipe = directory / "pipeline.toml"
        pipe.write_text(pipeline_toml(args.events, args.seed, args.run, args.workers, pointcloud))
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "conduit", "run", str(pipe)], check=True)
        seconds = seconds if pointcloud else time.perf_counter() - t0
    stem = f"run_{args.run:04d}"
    with h5py.File(work / "out" / f"{stem}.h5", "r") as f:
        events = len(f["events"])
    with h5py.File(work / "ws" / "Pointcloud" / f"{stem}.h5", "r") as f:
        clouds = len(f["cloud"])
        points = sum(ds.shape[0] for ds in f["cloud"].values())
    with h5py.File(work / "ws" / "Cluster" / f"{stem}.h5", "r") as f:
        clusters = sum(int(e.attrs["nclusters"]) for e in f["cluster"].values())
    estimates = pq.read_table(work / "ws" / "Estimation" / f"{stem}.parquet").num_rows
    return {"events": events, "clouds": clouds, "points": points, "clusters": clusters, "estimates": estimates,
            "seconds": seconds}


def report(args, ours: dict, result: dict, machine: str) -> str:
    v = result["versions"]
    lines = [SECTION, ""]
    add = lines.append
    add(f"`benchmarks/spyral_continue.py --events {args.events} --seed {args.seed}` ({time.strftime('%Y-%m-%d')}, "
        f"{machine}): attpc-spyral {v['attpc-spyral']} (spyral-utils {v['spyral-utils']}, polars {v['polars']}, "
        f"numpy {v['numpy']}) in its own environment, called, never copied.")  # fmt: skip
    add("")
    add(f"Our side: `conduit run` on {args.events} simulated events of the reference mix (pointcloud with the default "
        f"`tie_jitter`, cluster.hdbscan, estimate, hdf5 with `layout = \"spyral\"`) wrote `out/run_{args.run:04d}.h5` "
        f"({ours['events']} events of traces) and the workspace: {ours['clouds']} clouds ({ours['points']} points), "
        f"{ours['clusters']} clusters, {ours['estimates']} estimates ({ours['seconds']:.0f} s including start-up).")  # fmt: skip
    add("")
    add("Then each Spyral phase runs through Spyral's own `Pipeline(phases, active, workspace, trace_path)` with the "
        "earlier phases inactive, so it reads our files, in a copy of the workspace without the file it writes:")  # fmt: skip
    add("")
    add("| Spyral phase | reads (ours) | in | out (Spyral's) | success | Spyral's warnings and errors |")
    add("|---|---|---|---|---|---|")
    notes = []
    for r in result["results"]:
        errors = [line for line in r["log"] if line.startswith(("ERROR", "CRITICAL"))]
        ok = bool(r.get("out")) and r["valid"] and r["assets"] and not errors
        log = "; ".join(sorted(set(r["log"])))[:400] or "none"
        add(f"| {r['phase']} | {', '.join(f'`{p}`' for p in r['reads'])} | {r.get('in', '')} | "
            f"{r.get('out') or 'nothing written'} | {'yes' if ok else '**no**'} ({r['run_s']:.1f} s) | "
            f"{log.replace('|', '/')} |")  # fmt: skip
        notes += [f"* {r['phase']}: {note}." for note in r.get("notes", [])]
    add("")
    lines.extend(notes + ([""] if notes else []))
    comp = next((r["compare"] for r in result["results"] if "compare" in r), None)
    if comp:
        add(f"Spyral's estimates of our clusters next to ours: {comp['spyral']} from Spyral, {comp['ours']} from "
            f"conduit, {comp['matched']} for the same (event, cluster_index); median differences B-rho "
            f"{100 * comp['brho_rel_median']:.1f} %, polar angle {comp['polar_deg_median']:.2f} deg, vertex z "
            f"{comp['vertex_z_mm_median']:.1f} mm (Spyral measures the polar angle on the chord, conduit on the arc: "
            f"see analysis.md).")  # fmt: skip
        add("")
        if comp["same_schema"]:
            add(f"Our Estimation parquet and the one Spyral's phase writes (worked around) have the same {comp['columns']} "
                "columns in the same order with the same types.")  # fmt: skip
        else:
            add("Our Estimation parquet differs from the one Spyral's phase writes (worked around): "
                + "; ".join(comp["schema_differences"]) + ".")  # fmt: skip
        add("")
    return "\n".join(lines).rstrip("\n") + "\n"


if __name__ == "__main__":
    main()
