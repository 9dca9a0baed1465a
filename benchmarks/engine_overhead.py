"""The engine's cost in the main process, without the receive path: CPU per event at a live rate.

    .venv/bin/python benchmarks/engine_overhead.py [--rate 200] [--events 3000] [--workers 2]
        [--rerun] [--no-record] [--code DIR ...] [--repeat 2]

`conduit run` with a source of prebuilt events (`_engine_feed.py`: a pool of
simulator events, default mix, emitted at --rate as a live source does,
policy skip), the analysis chain (pointcloud, cluster.hdbscan, estimate,
histogram; --no-analysis: none of them) and a lossless hdf5
recording of the traces (not with --no-record; --rerun adds the rerun sink,
saving a .rrd). Reports per run:
received, analysed, skipped, dropped, and the CPU time per received event
(user + system) of the main process (from the first event emitted to the
engine queue empty + 2 s: the engine's dispatch, result collection,
delivery, the sinks' threads, the copies of the trace matrix), of the hdf5
writer process and of the workers.

--code DIR runs the code of another checkout (its ``core`` and ``plugins``
put first on PYTHONPATH: e.g. ``git archive main | tar -x -C /tmp/base``),
alternating with this one --repeat times: an A/B in the same minutes on a
shared machine. Nothing here is a test.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from _common import ANALYSIS_STAGES, children, cpu_times, machine
from end_to_end import _cmdline, _kind, _losses, _number

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def make_pool(path: Path, size: int) -> None:
    """``size`` simulator events (default mix, pads only, as the builder emits them) into an .npz."""
    import numpy as np

    from conduit_simulate.generator import Simulator
    from conduit_simulate.params import SimulationParams

    sim = Simulator(SimulationParams())
    np.savez(path, *[sim.event(i).event.traces for i in range(size)])


def pipeline_text(pool: Path, events: int, rate: float, workers: int, cpu_file: Path, record: bool,
                  rerun: bool, analysis: bool = True) -> str:
    text = textwrap.dedent(f"""
        [source]
        kind = "prebuilt"
        pool = "{pool}"
        events = {events}
        rate = {rate}
        cpu_file = "{cpu_file}"

        [engine]
        workers = {workers}
        policy = "skip"
        """) + (ANALYSIS_STAGES if analysis else "")
    if record:
        text += textwrap.dedent("""
            [[stage]]
            use = "hdf5"
            path = "run_{run:04d}.h5"
            clusters = false
            lossless = true
            """)
    if rerun:
        text += textwrap.dedent("""
            [[stage]]
            use = "rerun"
            mode = "save"
            path = "run_{run:04d}.rrd"
            """)
    return text


def run_once(code: Path, pool: Path, args) -> dict:
    with tempfile.TemporaryDirectory(prefix="engine-overhead-") as tmp:
        tmp = Path(tmp)
        cpu_file = tmp / "cpu.json"
        pipeline = tmp / "pipeline.toml"
        pipeline.write_text(pipeline_text(pool, args.events, args.rate, args.workers, cpu_file,
                                          not args.no_record, args.rerun, not args.no_analysis))
        env = dict(os.environ, CONDUIT_PLUGINS="_engine_feed",
                   PYTHONPATH=os.pathsep.join([str(code / "core"), str(code / "plugins"), str(HERE)]))
        load_before = os.getloadavg()[0]
        run = subprocess.Popen([sys.executable, "-m", "conduit", "run", str(pipeline), "-q"], cwd=tmp, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # Descendants' CPU (workers, hdf5 writer), sampled while they live; counted from the first event on.
        base: dict[int, tuple[float, float]] = {}
        last: dict[int, tuple[str, tuple[float, float]]] = {}
        started = False
        while run.poll() is None and not cpu_file.exists():  # sampled every 0.25 s (start within 0.25 s)
            for pid in children(run.pid):
                cpu = cpu_times(pid)
                if cpu is None:
                    continue
                # Asked again each time: a process just started still has its parent's command line.
                kind = _kind(_cmdline(pid))
                last[pid] = (kind, cpu)
                if not started:
                    base[pid] = cpu
            if not started and Path(f"{cpu_file}.start").exists():
                started = True
                base = {pid: cpu for pid, (_, cpu) in last.items()}
            time.sleep(0.25)
        run.send_signal(signal.SIGINT)
        out, err = run.communicate(timeout=600)
        if not cpu_file.exists():
            raise SystemExit(f"conduit run ended before the feed did: {err[-3000:]}")
        cpu = json.loads(cpu_file.read_text())
    received = _number(r"events received\s+(\d+)", out)
    per = 1e3 / max(received, 1)

    def of(kind: str) -> tuple[float, float]:
        times = [(c[0] - base.get(p, (0, 0))[0], c[1] - base.get(p, (0, 0))[1])
                 for p, (k, c) in last.items() if k == kind]
        return per * sum(t[0] for t in times), per * sum(t[1] for t in times)

    return {
        "code": str(code),
        "received": received,
        "analysed": _number(r"events analysed\s+(\d+)", out),
        "skipped": _number(r"events skipped \(analysis behind\)\s+(\d+)", out),
        "losses": _losses(out),
        "seconds": cpu["seconds"],
        "main": (per * (cpu["end"][0] - cpu["start"][0]), per * (cpu["end"][1] - cpu["start"][1])),
        "writer": of("hdf5 writer"),
        "workers": of("worker"),
        "load": (load_before, os.getloadavg()[0]),
        "chain_ms": sum(_stage_mean_ms(out, name) for name in ("pointcloud", "cluster.hdbscan", "estimate")),
        "summary": out,
    }


def _stage_mean_ms(summary: str, stage: str) -> float:
    """A transform stage's mean wall time in a worker (ms), from the run summary's stage table."""
    match = re.search(rf"^{re.escape(stage)}\s+\d+\s+\d+\s+\d+\s+\d+\s+([\d.]+)", summary, re.M)
    return float(match.group(1)) if match else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--pool", type=int, default=32, help="distinct events in the pool")
    parser.add_argument("--rerun", action="store_true", help="add the rerun sink (save)")
    parser.add_argument("--no-record", action="store_true", help="no hdf5 sink")
    parser.add_argument("--no-analysis", action="store_true",
                        help="no analysis stage, no histogram sink: the per-event cost of delivery and recording")
    parser.add_argument("--code", type=Path, action="append", default=[],
                        help="another checkout to compare with (its core/ and plugins/)")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--summary", action="store_true", help="print each run's summary")
    args = parser.parse_args()
    codes = [REPO] + [c.resolve() for c in args.code]
    with tempfile.TemporaryDirectory(prefix="engine-pool-") as tmp:
        pool = Path(tmp) / "pool.npz"
        make_pool(pool, args.pool)
        rows = [run_once(code, pool, args) for _ in range(args.repeat) for code in codes]
    print(f"machine: {machine()}")
    print(f"{args.events} prebuilt events (simulator default mix, pool of {args.pool}) at {args.rate:g}/s, "
          f"{args.workers} workers, policy skip; " + ("no analysis; sinks: " if args.no_analysis else "sinks: histogram, ")
          + ("" if args.no_record else "hdf5 (lossless traces)") + (", rerun (save)" if args.rerun else ""))
    print("| code | received | analysed | skipped | lost | main ms user+sys | hdf5 writer ms | workers ms | chain ms | load |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        lost = ", ".join(f"{k} {v}" for k, v in r["losses"].items()) or "none"
        print(f"| {Path(r['code']).name} | {r['received']} | {r['analysed']} | {r['skipped']} | {lost} | "
              f"{r['main'][0]:.2f}+{r['main'][1]:.2f} | {r['writer'][0]:.2f}+{r['writer'][1]:.2f} | "
              f"{r['workers'][0]:.2f}+{r['workers'][1]:.2f} | {r['chain_ms']:.1f} | {r['load'][0]:.1f}-{r['load'][1]:.1f} |")
    print("(CPU time per received event, user + system: the main process from its first event emitted to its "
          "queue empty + 2 s (os.times in the process); the others from /proc/PID/stat over the same span; chain ms: "
          "mean wall time of the three transform stages per analysed event, in a worker)")
    if args.summary:
        for r in rows:
            print(f"\n{r['code']}:{r['summary']}")


if __name__ == "__main__":
    main()
