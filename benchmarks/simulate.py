"""Benchmark of `conduit simulate`: events generated per second on one core, and MB/s served over loopback.

    NUMBA_CACHE_DIR=.numba-cache .venv/bin/python benchmarks/simulate.py [--events 300] [--serve-events 3000]

1. generation: Simulator.event() for the default preset (the reference event mix),
   after warm-up, in this process, one thread; also the GRAW frame encoding of each
   event (what `simulate graw` and fresh serving add), and the merged-HDF5 size.
2. serving: `conduit simulate serve --pool 50` in a subprocess (11 DataExporters on
   127.0.0.1), drained by 11 plain TCP readers in this process (one trio task each),
   then received by the `exporter` source (event building) instead of plain readers.

Prints a table; results go to docs/simulator.md by hand, with the machine.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from _common import machine  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CONDUIT = ROOT / ".venv" / "bin" / "conduit"




def bench_generation(n: int) -> list[tuple[str, str]]:
    from conduit_simulate.generator import Simulator
    from conduit_simulate.params import SimulationParams
    from conduit_simulate.writers import event_frames

    t0 = time.perf_counter()
    sim = Simulator(SimulationParams(events=n, seed=1))
    setup = time.perf_counter() - t0
    t0 = time.perf_counter()
    sim.warm_up()
    warm = time.perf_counter() - t0
    events = []
    t0 = time.perf_counter()
    for i in range(n):
        events.append(sim.event(i))
    gen = time.perf_counter() - t0
    t0 = time.perf_counter()
    frame_bytes = 0
    for ev in events[: min(n, 100)]:
        frame_bytes += sum(len(f) for f in event_frames(sim, ev).values())
    enc = (time.perf_counter() - t0) / min(n, 100)
    traces = np.array([e.event.n_traces for e in events])
    return [
        ("setup (pad grid, tables)", f"{setup:.2f} s"),
        ("warm-up (numba cache load or compile)", f"{warm:.2f} s"),
        ("generation, default preset", f"{n / gen:.1f} events/s ({gen / n * 1e3:.1f} ms/event)"),
        ("traces per event (pads, FPN excluded)", f"{traces.mean():.0f} ± {traces.std():.0f}"),
        ("GRAW encoding (encode_event_frames)", f"{enc * 1e3:.1f} ms/event"),
        ("GRAW bytes per event (FPN included)", f"{frame_bytes / min(n, 100) / 1e6:.2f} MB"),
        ("merged HDF5 bytes per event", f"{traces.mean() * 517 * 2 / 1e6:.2f} MB"),
    ]


def _free_port_block(n: int = 11) -> int:
    for base in range(47100, 60000, 16):
        socks = []
        try:
            for c in range(n):
                s = socket.socket()
                s.bind(("127.0.0.1", base + c))
                socks.append(s)
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free block of 11 ports")


def _start_server(events: int, pool: int, base: int) -> subprocess.Popen:
    env = dict(os.environ, NUMBA_CACHE_DIR=str(ROOT / ".numba-cache"))
    return subprocess.Popen(
        [
            str(CONDUIT),
            "simulate",
            "serve",
            "--base-port",
            str(base),
            "--events",
            str(events),
            "--pool",
            str(pool),
            "--truth",
            str(Path(os.environ.get("TMPDIR", "/tmp")) / f"conduit_sim_bench_truth_{base}.h5"),
            "--connect-timeout",
            "120",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def bench_serving_raw(events: int, pool: int) -> list[tuple[str, str]]:
    import trio

    base = _free_port_block()
    proc = _start_server(events, pool, base)
    totals = {"bytes": 0}

    async def reader(port: int) -> None:
        for _ in range(600):
            try:
                stream = await trio.open_tcp_stream("127.0.0.1", port)
                break
            except OSError:
                await trio.sleep(0.05)
        async with stream:
            while True:
                chunk = await stream.receive_some(1 << 20)
                if not chunk:
                    return
                totals["bytes"] += len(chunk)

    async def main() -> float:
        t0 = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for c in range(11):
                nursery.start_soon(reader, base + c)
        return time.perf_counter() - t0

    elapsed = trio.run(main)
    out, err = proc.communicate(timeout=600)
    served = re.search(
        r"served (\d+) events, (\d+) frames, ([\d.]+) MB per client in ([\d.]+) s \((\d+) events/s, "
        r"(\d+) MB/s\)",
        out,
    )
    if proc.returncode != 0 or served is None:
        raise RuntimeError(f"server failed ({proc.returncode}): {out}\n{err}")
    return [
        (
            f"served to plain readers (pool {pool}, {events} events)",
            f"{served.group(5)} events/s, {served.group(6)} MB/s (server clock)",
        ),
        (
            "   client side",
            f"{totals['bytes'] / 1e6 / elapsed:.0f} MB/s incl. connect ({totals['bytes'] / 1e6:.0f} MB)",
        ),
    ]


def bench_serving_built(events: int, pool: int) -> list[tuple[str, str]]:
    import trio

    from conduit.sources.exporter import ExporterParams, ExporterSource
    from conduit.stage import StageContext

    base = _free_port_block()
    proc = _start_server(events, pool, base)
    params = ExporterParams.from_mapping(
        {"hosts": f"127.0.0.1:{base}-{base + 10}", "reconnect_min": 0.05, "reconnect_max": 0.2}
    )
    source = ExporterSource(params, StageContext())
    source.warm_up()
    counts = {"events": 0, "complete": 0}

    async def main() -> float:
        send, recv = trio.open_memory_channel(math.inf)
        source.attach(send)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(source.run)
            await source.wait_connected()
            t0 = time.perf_counter()
            while counts["events"] < events:
                ev = await recv.receive()
                counts["events"] += 1
                counts["complete"] += ev.complete
            elapsed = time.perf_counter() - t0
            nursery.cancel_scope.cancel()
        return elapsed

    elapsed = trio.run(main)
    proc.communicate(timeout=600)
    return [
        (
            f"served and built by the exporter source (pool {pool})",
            f"{events / elapsed:.0f} events/s, {counts['complete']}/{events} complete, dropped {source.dropped}",
        )
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=300, help="events generated for the generation figure")
    parser.add_argument("--serve-events", type=int, default=3000, help="events served for the serving figures")
    parser.add_argument("--pool", type=int, default=50)
    args = parser.parse_args()
    rows = [("machine", machine())]
    rows += bench_generation(args.events)
    rows += bench_serving_raw(args.serve_events, args.pool)
    rows += bench_serving_built(args.serve_events, args.pool)
    width = max(len(k) for k, _ in rows)
    print(f"{'measure':<{width}}  result")
    print(f"{'-' * width}  {'-' * 40}")
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
