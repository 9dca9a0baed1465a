"""Optional: compare the stages with Spyral 1.1.2 itself on the same simulated events.

Never part of the tests or CI. Spyral (GPL-3.0) is *called*, in its own
virtual environment, never copied. ``--setup`` creates it at /tmp/spyral-venv
when missing (``_spyral_env.py``: spyral-utils needs Eigen3; the pip-only route
uses eigenpip and a three-line CMake shim). From the repository root:

    NUMBA_CACHE_DIR=.numba-cache .venv/bin/python benchmarks/spyral_compare.py --setup
    NUMBA_CACHE_DIR=.numba-cache .venv/bin/python benchmarks/spyral_compare.py --setup --replay [--events 200]

``--replay`` measures speed only, for both event mixes (``default`` and
``dense``) in one run: the same simulated events written to a merged HDF5
file and replayed by ``conduit run`` (pointcloud, cluster.hdbscan, estimate,
histogram; every event analysed) with 0, 1 and 2 worker processes, and
Spyral's chain (GetEvent peaks and point cloud, clustering, estimation) on
the same traces in one process: events/s and the ratio. The conduit figure
includes reading the file and the histogram sink; Spyral's is its
computation only (no file reading or writing), so the ratio is conservative.

Without ``--replay``, the physics comparison:

1. (this venv) simulate events, build our point clouds, save traces and clouds;
2. (Spyral's venv) Spyral's GetEvent peaks for every trace, and Spyral's
   clustering (form, clean, continuity join, cleanup) and estimate_physics on
   *our* clouds, so both chains see the same points;
3. (this venv) compare peaks trace by trace, and both chains' estimates
   with the truth. Prints a markdown section (append it to docs/physics.md).
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


# ----------------------------------------------------------------------------- step 2, run by Spyral's python


def spyral_side(data_path: str, out_path: str) -> None:
    from spyral.core.cluster import Cluster  # noqa: F401  (imported for its side effects on numba types)
    from spyral.core.clusterize import clean_clusters, cleanup_clusters, form_clusters, join_clusters
    from spyral.core.config import (
        ClusterParameters,
        ContinuityJoinParameters,
        DetectorParameters,
        EstimateParameters,
        GetParameters,
        HdbscanParameters,
    )
    from spyral.core.estimator import estimate_physics
    from spyral.core.point_cloud import PointCloud
    from spyral.trace.get_event import GetEvent

    data = np.load(data_path)
    get = GetParameters(20.0, 50.0, 20.0, 50.0, 40.0)
    cluster_params = ClusterParameters(
        min_cloud_size=50,
        hdbscan_parameters=HdbscanParameters(3, 0.03, 10, 10.0),
        tripclust_parameters=None,
        overlap_join=None,
        continuity_join=ContinuityJoinParameters(0.4, 0.2),
        direction_threshold=0.5,
        outlier_scale_factor=0.1,
    )
    det = DetectorParameters(
        float(data["field"]), 45000.0, 1000.0, 25.0, float(data["mm_tb"]), float(data["window_tb"]), 6.25,
        "dummy", False,
    )  # fmt: skip
    est_params = EstimateParameters(30, 100.0)
    rng = np.random.default_rng(0)
    peaks = []  # event index, trace row, centroid, amplitude, integral
    estimates = []  # event index, spyral cluster index, label, polar, brho, vertex z, direction
    labels_out = []
    clouds_out = []
    failures = 0
    trace_offsets = data["trace_offsets"]
    pad_x, pad_y, pad_scale = data["pad_x"], data["pad_y"], data["pad_scale"]
    beam = np.hypot(pad_x, pad_y) < 19.8
    mm_tb, window_tb = float(data["mm_tb"]), float(data["window_tb"])
    import time

    seconds = np.zeros((len(trace_offsets) - 1, 3))  # point cloud, clustering, estimation
    for e in range(len(trace_offsets) - 1):
        traces = data["traces"][trace_offsets[e] : trace_offsets[e + 1]]
        t0 = time.perf_counter()
        event = GetEvent(traces, e, get, rng)
        rows = []
        for row, trace in enumerate(event.traces):
            found = trace.get_peaks()
            for peak in found:
                peaks.append((e, row, peak.centroid, peak.amplitude, peak.integral))
            pad = int(traces[row, 4])
            if not found or len(found) > 5 or pad < 0 or pad >= len(pad_x) or beam[pad]:
                continue
            for peak in found:  # Spyral's point rows, on this project's pad geometry, no time correction
                t = peak.centroid
                z = (window_tb - t) / (window_tb - mm_tb) * 1000.0
                rows.append((pad_x[pad], pad_y[pad], z, peak.amplitude, peak.integral, pad, t, pad_scale[pad]))
        cloud_data = np.array(rows, dtype=np.float64).reshape(-1, 8)
        cloud_data = cloud_data[cloud_data[:, 3] != 0.0]
        cloud_data = cloud_data[np.argsort(cloud_data[:, 2])]
        clouds_out.append(cloud_data)
        t1 = time.perf_counter()
        cloud = PointCloud(e, cloud_data.copy())
        labels = np.full(len(cloud.data), -1)
        try:
            clusters, labels = form_clusters(cloud, cluster_params)
            clusters, labels = clean_clusters(clusters, cluster_params, labels)
            clusters, labels = join_clusters(clusters, cluster_params, labels)
            cleaned, labels = cleanup_clusters(clusters, cluster_params, labels)
        except Exception as err:  # record and go on: Spyral's own failures are part of the comparison
            print(f"event {e}: spyral clustering failed: {type(err).__name__}: {err}", file=sys.stderr)
            failures += 1
            cleaned = []
        labels = np.asarray(labels) if len(labels) == len(cloud.data) else np.full(len(cloud.data), -1)
        labels_out.append(labels.astype(np.int64))
        t2 = time.perf_counter()
        for k, cluster in enumerate(cleaned):
            res = estimate_physics(k, cluster, -1.0, -1.0, -1.0, -1.0, 0, e, est_params, det)
            if res is not None:
                estimates.append(
                    (
                        e,
                        k,
                        cluster.label,
                        res.polar,
                        res.brho,
                        res.vertex_z,
                        int(getattr(res.direction, "value", res.direction)),
                    )
                )
        seconds[e] = (t1 - t0, t2 - t1, time.perf_counter() - t2)
    np.savez(
        out_path,
        peaks=np.array(peaks, dtype=np.float64).reshape(-1, 5),
        estimates=np.array(estimates, dtype=np.float64).reshape(-1, 7),
        labels=np.concatenate(labels_out) if labels_out else np.zeros(0, np.int64),
        clouds=np.concatenate(clouds_out) if clouds_out else np.zeros((0, 8)),
        cloud_offsets=np.cumsum([0] + [len(c) for c in clouds_out]),
        failures=failures,
        seconds=seconds,
    )


# ----------------------------------------------------------------------------- steps 1 and 3


def spyral_input(path: str, traces: list, detector) -> None:
    """What :func:`spyral_side` reads: the events' trace matrices, the pad geometry and the detector."""
    pads = physics_pads()
    np.savez(
        path,
        traces=np.concatenate(traces),
        trace_offsets=np.cumsum([0] + [len(t) for t in traces]),
        pad_x=pads.x,
        pad_y=pads.y,
        pad_scale=pads.scale,
        field=detector.magnetic_field,
        mm_tb=detector.micromegas_time_bucket,
        window_tb=detector.window_time_bucket,
    )


def replay(args) -> None:
    """Events/s of conduit replays (0, 1, 2 workers) and of Spyral's chain on the same events, both mixes."""
    import os

    import h5py
    from _common import machine
    from conduit.detector import DetectorParams
    from end_to_end import CONDUIT, replay_rates

    detector = DetectorParams()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for mix in args.mix:
            data = tmp / f"{mix}.h5"
            subprocess.run([CONDUIT, "simulate", "hdf5", "--out", str(data), "--events", str(args.events),
                            "--preset", mix, "--seed", str(args.seed), "-q"], check=True, capture_output=True)
            with h5py.File(data, "r") as f:
                group = f["events"]
                traces = [group[name]["get_traces"][()] for name in sorted(group, key=lambda n: int(n.split("_")[1]))]
            load = os.getloadavg()[0]
            ours = replay_rates(data, tmp)
            spyral_input(str(tmp / "events.npz"), traces, detector)
            subprocess.run([args.spyral_python, __file__, "--spyral-side", str(tmp / "events.npz"),
                            str(tmp / "spyral.npz")], check=True, capture_output=True)
            seconds = np.load(tmp / "spyral.npz")["seconds"][1:]  # the first event pays Spyral's compilation
            spyral_rate = len(seconds) / seconds.sum()
            rows.append((mix, len(traces), ours, spyral_rate, load, os.getloadavg()[0]))
    print(f"machine: {machine()}")
    print(f"replay of {args.events} simulated events per mix (seed {args.seed}), events/s; Spyral 1.1.2: its "
          "chain in one process, after its first (compiling) event")
    print()
    print("| mix | conduit, 0 workers (thread) | 1 worker | 2 workers | Spyral 1.1.2 | conduit best / Spyral | load |")
    print("|---|---|---|---|---|---|---|")
    for mix, n, ours, spyral_rate, load0, load1 in rows:
        best = max(ours.values())
        print(f"| {mix} | {ours[0]:.1f} | {ours[1]:.1f} | {ours[2]:.1f} | {spyral_rate:.2f} | "
              f"x{best / spyral_rate:.0f} | {load0:.1f}-{load1:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spyral-python", default="/tmp/spyral-venv/bin/python")
    parser.add_argument("--setup", action="store_true", help="create /tmp/spyral-venv with Spyral when missing")
    parser.add_argument("--events", type=int, default=100)
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--write", type=Path, help="put the section into this markdown file (e.g. docs/physics.md)")
    parser.add_argument("--replay", action="store_true", help="speed only: replay events/s against Spyral's chain")
    parser.add_argument("--mix", nargs="+", choices=("default", "dense"), default=["default", "dense"],
                        help="event mixes for --replay")
    parser.add_argument("--spyral-side", nargs=2, metavar=("DATA", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.spyral_side:
        spyral_side(*args.spyral_side)
        return

    sys.path.insert(0, str(HERE))
    if args.setup:
        from _spyral_env import DEFAULT_VENV, ensure_spyral_python

        args.spyral_python = str(ensure_spyral_python(DEFAULT_VENV))
    if args.replay:
        replay(args)
        return
    import physics
    from conduit_stages.pointcloud import kernels
    from conduit_stages.pointcloud.stage import PointcloudKernel, PointcloudParams

    params, detector, sims = physics.simulate("default", args.events, args.seed)
    cdet = detector
    reco = physics.reconstruct(sims, cdet, "cluster.hdbscan")
    traces = [s.event.traces for s in sims]
    with tempfile.TemporaryDirectory() as tmp:
        data_path, out_path = f"{tmp}/events.npz", f"{tmp}/spyral.npz"
        spyral_input(data_path, traces, cdet)
        subprocess.run([args.spyral_python, __file__, "--spyral-side", data_path, out_path], check=True)
        spy = dict(np.load(out_path))

    # --- peaks, trace by trace
    lines = ["## Comparison with Spyral 1.1.2", ""]
    lines.append(
        f"`benchmarks/spyral_compare.py --events {args.events} --seed {args.seed}`: the same simulated events "
        "(default preset) through Spyral 1.1.2 (installed in a separate environment, called, not copied)."
    )
    lines.append("")
    for integer in (True, False):
        pk = PointcloudKernel(PointcloudParams(integer_samples=integer, integer_fill=integer), physics_pads(), cdet)
        t = pk.tables
        ours = {}
        for e, tr in enumerate(traces):
            corrected = kernels.baseline_corrected(
                np.ascontiguousarray(tr), t.h_bitrev, t.tw_re, t.tw_im, integer, integer
            )
            for row, c in enumerate(corrected):
                pos, _, _, _, integ = kernels.trace_peaks(c, 40.0, 50.0, 20.0, 1.0, 50.0, 0.95)
                ours[(e, row)] = [(int(p), float(c[p]), float(v)) for p, v in zip(pos, integ)]
        theirs: dict[tuple[int, int], list] = {}
        for e, row, centroid, amp, integral in spy["peaks"]:
            theirs.setdefault((int(e), int(row)), []).append((int(math.floor(centroid)), amp, integral))
        keys = set(ours) | set(theirs)
        same_pos = same_all = 0
        amp_diff = []
        for key in keys:
            a, b = ours.get(key, []), theirs.get(key, [])
            if [p for p, _, _ in a] == [p for p, _, _ in b]:
                same_pos += 1
                amp_diff.extend(abs(x[1] - y[1]) for x, y in zip(a, b))
                if all(abs(x[1] - y[1]) < 1e-9 and abs(x[2] - y[2]) < 1e-6 * max(1.0, abs(y[2])) for x, y in zip(a, b)):
                    same_all += 1
        n_peaks_ours = sum(len(v) for v in ours.values())
        n_peaks_theirs = sum(len(v) for v in theirs.values())
        label = (
            "`integer_samples = true, integer_fill = true` (Spyral's integer arithmetic)"
            if integer
            else "defaults (float samples, exact fill value)"
        )
        lines.append(
            f"* Peaks, {label}: {len(keys)} traces; identical peak positions (or no peak in both) on "
            f"{same_pos} ({100 * same_pos / max(len(keys), 1):.2f} %), identical positions, amplitudes and "
            f"integrals on {same_all}; {n_peaks_ours} peaks here, {n_peaks_theirs} in Spyral; largest amplitude "
            f"difference where positions agree {max(amp_diff) if amp_diff else 0:.3g} ADC."
        )
    lines.append("")

    # --- estimates of both chains on the same clouds, against truth
    lines.append("Whole chains, ejectiles only, well-reconstructed tracks as above. Spyral runs its own GetEvent peaks")
    lines.append("(with its centroid jitter) placed on this project's pad geometry without time corrections, its")
    lines.append("HDBSCAN/LOF/continuity-join clustering and `estimate_physics`, at the defaults of this page; its")
    lines.append("clusters are matched to the truth the same way:")
    lines.append("")
    lines.append(
        "| chain | tracks | polar bias | polar res. | vertex z bias (mm) | vertex z res. | B-rho bias (%) | B-rho res. (%) |"
    )
    lines.append("|---|---|---|---|---|---|---|---|")
    ours_res = [r for rec in reco for r in physics.analyse("default", rec) if r.role == "ejectile"]
    good = physics.well_reconstructed(ours_res)
    lines.append(_row("conduit (polar_from = arc)", good))
    reco_chord = physics.reconstruct(sims, cdet, "cluster.hdbscan", polar_from="chord")
    good_chord = physics.well_reconstructed(
        [r for rec in reco_chord for r in physics.analyse("default", rec) if r.role == "ejectile"]
    )
    lines.append(_row("conduit (polar_from = chord)", good_chord))
    spy_good = spyral_results(spy, reco)
    lines.append(_row("Spyral 1.1.2", spy_good))
    lines.append("")
    n_visible = sum(
        1 for rec in reco for r in physics.analyse("default", rec) if r.role == "ejectile" and r.n_points >= 30
    )
    spy_ms = 1e3 * np.median(spy["seconds"][1:], axis=0)  # the first event pays Spyral's JIT compilation
    ours_ms = [1e3 * np.median([r.seconds[k] for r in reco]) for k in ("pointcloud", "cluster", "estimate")]
    lines.append(
        f"Median time per event on this machine (Spyral after its first, compiling, event): point cloud "
        f"{spy_ms[0]:.1f} ms (conduit {ours_ms[0]:.2f} ms), clustering {spy_ms[1]:.1f} ms ({ours_ms[1]:.2f} ms), "
        f"estimation {spy_ms[2]:.1f} ms ({ours_ms[2]:.2f} ms)."
    )
    lines.append("")
    lines.append(
        f"Ejectiles with at least 30 points: {n_visible}; well reconstructed by conduit {len(good)}, by Spyral "
        f"{len(spy_good)}. Spyral's clustering raised an exception on {int(spy['failures'])} of {len(reco)} events."
    )
    lines.append("")
    lines.append(
        "Peak positions differ only where two maxima of exactly equal height lie closer than `peak_separation`"
        " (saturated flat tops with integer samples): scipy orders them with numpy's unstable argsort, whose"
        " tie order is not reproducible (it changes with the array size and the CPU's SIMD sort), while the"
        " kernel keeps the later one. Spyral's polar angles come out low because it measures the chord, not"
        " the arc (see analysis.md)."
    )
    lines.append("")
    text = "\n".join(lines)
    if args.write:
        from _common import write_section

        write_section(args.write, text, before="## Loss reasons")
    else:
        print(text)


def physics_pads():
    from conduit.padplane import load_pad_plane

    return load_pad_plane(None)


def _row(name, results) -> str:
    import physics

    e = physics.errors(results)
    p, vz, b = (physics.robust(e[k]) for k in ("polar", "vertex_z", "brho"))
    return f"| {name} | {p[2]} | {p[0]:+.2f} | {p[1]:.2f} | {vz[0]:+.1f} | {vz[1]:.1f} | {b[0]:+.2f} | {b[1]:.2f} |"


def spyral_results(spy, reco):
    """Spyral's estimates as physics.ParticleResult rows (ejectiles, well reconstructed)."""
    import physics

    offsets = spy["cloud_offsets"]
    out = []
    est = spy["estimates"]
    for e, rec in enumerate(reco):
        labels = spy["labels"][offsets[e] : offsets[e + 1]]
        cloud = spy["clouds"][offsets[e] : offsets[e + 1]]
        owner = physics.point_particles(cloud, rec.sim.truth)
        parts = rec.sim.truth.particles
        for row in est[est[:, 0] == e]:
            members = labels == int(row[2])
            if not members.any():
                continue
            values, counts = np.unique(owner[members], return_counts=True)
            main = int(values[np.argmax(counts)])
            if main < 0:
                continue
            part = parts[main]
            role = part["role"].decode() if isinstance(part["role"], bytes) else str(part["role"])
            if role != "ejectile":
                continue
            mine = owner == main
            r = physics.ParticleResult(
                "default", e, main, role, "", math.degrees(part["polar"]), float(part["brho"]), float(part["z"]),
                int(mine.sum()), 0, float(np.sum(members & mine) / mine.sum()), float(counts.max() / members.sum()), "ok",
            )  # fmt: skip
            r.polar = math.degrees(row[3])
            r.brho = float(row[4])
            r.vertex_z = float(row[5])
            out.append(r)
    return physics.well_reconstructed(out)


if __name__ == "__main__":
    main()
