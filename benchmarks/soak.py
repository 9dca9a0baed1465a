"""Soak: the live conduit for a long time at a steady trigger rate with one CoBo connected but silent; RSS sampled.

    .venv/bin/python benchmarks/soak.py [--minutes 10] [--rate 100] [--silent-cobo 3] [--pool 40]
                                        [--pipeline online|ingest] [--interval 10]

A separate, niced DAQ process (this script with ``--daq``) serves eleven DataExporters
on 127.0.0.1: a pool of simulated events (the simulator's default reaction, partial
readout with FPN) served cyclically with fresh event ids at ``--rate`` Hz; CoBo
``--silent-cobo`` accepts its connection and never sends a frame. ``conduit run``
receives with the ``exporter`` source and runs

* ``online``: the shipped online pipeline (pointcloud, cluster.hdbscan, estimate,
  histogram, hdf5 of clouds and estimates, policy skip) without the Rerun viewer;
* ``ingest``: the source alone (event building only).

Every ``--interval`` seconds the conduit's resident memory (``VmRSS`` of the main
process, and of its worker processes) is sampled together with the events received so
far (from its status lines). Reported: the peak, the RSS floor of the third and of the last
quarter of the run (the floors leave out the memory of events in flight), the growth
between them per hour and per event received, and the run summary's losses.
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
import time
from pathlib import Path

from _common import ANALYSIS_STAGES, children, machine, rss_kib

BIN = Path(sys.executable).parent
CONDUIT = str(BIN / "conduit")

ONLINE_STAGES = """
[engine]
policy = "skip"
status_interval = 2.0
""" + ANALYSIS_STAGES + """
[[stage]]
use = "hdf5"
path = "out/soak_run_{run:04d}.h5"
traces = false
cloud = true
clusters = false
estimates = true
histograms = true
lossless = false
"""

INGEST_STAGES = """
[engine]
policy = "skip"
status_interval = 2.0
"""


# -- the DAQ (child process) ----------------------------------------------------------------------------------


def daq_main(args) -> None:
    """Serve the pool at ``rate`` Hz until killed; print {cobo: port} as one JSON line once listening."""
    import trio

    from conduit.get.dataexporter import DataExporterServer, length_prefix
    from conduit_simulate.generator import Simulator
    from conduit_simulate.params import SimulationParams
    from conduit_simulate.serve import patch_frame
    from conduit_simulate.writers import event_frames

    sim = Simulator(SimulationParams.from_mapping({"events": args.pool, "pool": args.pool, "seed": 7}))
    pool = [event_frames(sim, sim.event(i)) for i in range(args.pool)]

    async def serve() -> None:
        cobos = sorted({c for c, _ in sim.asads})
        servers = {c: DataExporterServer("127.0.0.1", 0) for c in cobos}
        async with trio.open_nursery() as nursery:
            ports = {c: await nursery.start(s.serve) for c, s in servers.items()}
            print(json.dumps(ports), flush=True)
            for s in servers.values():
                await s.wait_clients(1)
            start = trio.current_time()
            n = 0
            while True:
                frames = pool[n % len(pool)]
                stamp = 10 * n
                for cobo in cobos:
                    if cobo == args.silent_cobo:
                        continue  # connected, never a frame
                    message = b"".join(length_prefix(len(f)) + patch_frame(f, n, stamp + (cobo == 10))
                                       for (c, _), f in frames.items() if c == cobo)
                    await servers[cobo].send_raw(message)
                n += 1
                if n % 4 == 0:
                    for s in servers.values():
                        await s.drain()
                await trio.sleep_until(start + n / args.rate)

    try:
        trio.run(serve)
    except (Exception, BaseExceptionGroup):  # noqa: BLE001 - the conduit went away at the end of the soak
        pass


# -- the conduit and the measurement ------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=100.0, help="trigger rate (Hz)")
    parser.add_argument("--silent-cobo", type=int, default=3)
    parser.add_argument("--pool", type=int, default=40, help="distinct simulated events served cyclically")
    parser.add_argument("--pipeline", choices=("online", "ingest"), default="online")
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between RSS samples")
    parser.add_argument("--daq", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.daq:
        daq_main(args)
        return

    tmp = Path(tempfile.mkdtemp(prefix="conduit-soak-"))
    daq = subprocess.Popen([sys.executable, __file__, "--daq", "--rate", str(args.rate), "--pool", str(args.pool),
                            "--silent-cobo", str(args.silent_cobo)], stdout=subprocess.PIPE, text=True,
                           preexec_fn=lambda: os.nice(5))
    ports = {int(c): p for c, p in json.loads(daq.stdout.readline()).items()}
    hosts = ", ".join(f'"127.0.0.1:{ports[c]}"' for c in sorted(ports))
    stages = ONLINE_STAGES if args.pipeline == "online" else INGEST_STAGES
    pipeline = tmp / "soak.toml"
    pipeline.write_text(f'[source]\nkind = "exporter"\nhosts = [{hosts}]\ncobos = {sorted(ports)}\nrun = 1\n'
                        f'{stages}')
    log = open(tmp / "conduit.log", "w")  # noqa: SIM115 - closed below
    conduit = subprocess.Popen([CONDUIT, "run", str(pipeline)], stdout=log, stderr=subprocess.STDOUT, cwd=tmp)
    samples: list[tuple[float, int, int, int]] = []  # (s, main RSS KiB, workers RSS KiB, events received)
    start = time.monotonic()
    try:
        while time.monotonic() - start < args.minutes * 60:
            time.sleep(args.interval)
            text = (tmp / "conduit.log").read_text(errors="replace")
            received = [int(m) for m in re.findall(r"\] (\d+) events", text)]
            samples.append((time.monotonic() - start, rss_kib(conduit.pid),
                            sum(rss_kib(p) for p in children(conduit.pid)), received[-1] if received else 0))
            t, main_kib, workers_kib, events = samples[-1]
            print(f"{t:7.0f} s  RSS {main_kib / 1024:7.1f} MiB (workers {workers_kib / 1024:7.1f} MiB)  "
                  f"{events} events", flush=True)
    finally:
        conduit.send_signal(signal.SIGINT)
        conduit.wait(timeout=300)
        daq.kill()
        log.close()
    report(args, samples, (tmp / "conduit.log").read_text(errors="replace"), tmp)


def steady_growth(samples) -> tuple[float, float, int, float]:
    """(RSS floor in the third quarter of the run, in the last quarter (KiB), events between, hours between).

    RSS rises and falls with the events in flight (a full engine queue holds hundreds of
    events, and the allocator keeps that high-water mark); the floors of two late quarters
    compare like with like, so what remains is growth per event.
    """
    end = samples[-1][0]
    third = [s for s in samples if 0.5 * end <= s[0] < 0.75 * end]
    last = [s for s in samples if s[0] >= 0.75 * end]
    a, b = min(third, key=lambda s: s[1]), min(last, key=lambda s: s[1])
    return a[1], b[1], b[3] - a[3], (b[0] - a[0]) / 3600


def report(args, samples, text: str, tmp: Path) -> None:
    with open(tmp / "rss.csv", "w") as f:
        f.write("seconds,main_rss_kib,workers_rss_kib,events_received\n")
        f.writelines(",".join(map(str, s)) + "\n" for s in samples)
    floor3, floor4, events, hours = steady_growth(samples)
    growth = (floor4 - floor3) * 1024
    print()
    print(f"machine: {machine()}")
    print(f"soak: {args.minutes:g} min at {args.rate:g} Hz, CoBo {args.silent_cobo} silent, pipeline {args.pipeline}")
    print(f"main process RSS: peak {max(s[1] for s in samples) / 1024:.1f} MiB; floor {floor3 / 1024:.1f} MiB in the "
          f"third quarter, {floor4 / 1024:.1f} MiB in the last: {growth / 2**20 / hours if hours else 0:+.1f} MiB/h, "
          f"{growth / events if events else 0:+.1f} B per event received ({events} events between)")
    print(f"worker processes RSS: {samples[0][2] / 1024:.1f} MiB -> {samples[-1][2] / 1024:.1f} MiB")
    summary = text[text.find("run summary"):] if "run summary" in text else text[-3000:]
    print(summary)
    print(f"(files in {tmp}; RSS samples in rss.csv)")


if __name__ == "__main__":
    main()
