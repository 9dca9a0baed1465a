"""Benchmark of `conduit simulate`: events generated per second on one core, and MB/s served over loopback.

    NUMBA_CACHE_DIR=.numba-cache .venv/bin/python benchmarks/simulate.py [--events 300] [--serve-events 3000]
    NUMBA_CACHE_DIR=.numba-cache .venv/bin/python benchmarks/simulate.py --serve-cpu [--rates 200 400]
        [--serve-events 4000] [--pool 50] [--conduit]

1. generation: Simulator.event() for the default preset (the reference event mix),
   after warm-up, in this process, one thread; also the GRAW frame encoding of each
   event (what `simulate graw` and fresh serving add), and the merged-HDF5 size.
2. serving: `conduit simulate serve --pool 50` in a subprocess (11 DataExporters on
   127.0.0.1), drained by 11 plain TCP readers in this process (one trio task each),
   then received by the `exporter` source (event building) instead of plain readers.

--serve-cpu: the CPU time the serving process spends per served event, split
into user (Python) and system (kernel: loopback TCP) time from /proc/PID/stat,
for `conduit simulate serve --rate R` (niced, as in benchmarks/end_to_end.py)
drained by a cheap reader (11 plain sockets whose bytes the kernel discards:
recv with MSG_TRUNC, no copy; in this process), and with --conduit also by `conduit run` with the pipeline
of `end_to_end.py online`. Only the serving counts: the CPU the server spent
before the first byte reached the reader (start-up, filling the pool) is
subtracted; with --conduit that start-up cost is the one measured in the
cheap reader's run at the same rate. Last, the kernel's floor: the same bytes
per event sent to the same reader by a plain blocking sendmsg loop (no event
loop, no Python per frame), niced too: loopback TCP's system time per event
that no server can cut.

Prints a table; results go to docs/simulator.md (and the CPU figures to
docs/performance.md) by hand, with the machine.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from _common import machine  # noqa: E402

from conduit.get.dataexporter import length_prefix

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
    # Below the ephemeral range (32768-60999 here): the readers' own connections never take these ports.
    for base in range(random.randrange(20000, 32000, 16), 32700, 16):
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


async def _connect_when_listening(port: int, tries: int, proc: subprocess.Popen | None = None):
    """A trio stream to 127.0.0.1:port once the server listens (every 50 ms, ``tries`` times; a dead server ends it)."""
    import trio

    for _ in range(tries):
        try:
            return await trio.open_tcp_stream("127.0.0.1", port)
        except OSError:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"server exited: {proc.stdout.read()}") from None
            await trio.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


def bench_serving_raw(events: int, pool: int) -> list[tuple[str, str]]:
    import trio

    base = _free_port_block()
    proc = _start_server(events, pool, base)
    totals = {"bytes": 0}

    async def reader(port: int) -> None:
        async with await _connect_when_listening(port, 600) as stream:
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


def _cpu_ticks(pid: int) -> tuple[int, int]:
    """(utime, stime) of a process in clock ticks (/proc/PID/stat fields 14 and 15)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]), int(fields[12])


def _start_paced_server(events: int, pool: int, rate: float, base: int, truth: Path) -> subprocess.Popen:
    env = dict(os.environ, NUMBA_CACHE_DIR=str(ROOT / ".numba-cache"))
    return subprocess.Popen(
        [str(CONDUIT), "simulate", "serve", "--base-port", str(base), "--events", str(events), "--pool", str(pool),
         "--rate", str(rate), "--truth", str(truth), "--connect-timeout", "120", "--existing", "replace"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, preexec_fn=lambda: os.nice(10))


def _discard_reader(proc: subprocess.Popen, base: int) -> dict:
    """Read every port of ``proc`` until EOF, discarding; server CPU ticks at the first byte and at the last EOF."""
    import resource
    import selectors

    socks = []
    for c in range(11):
        for _ in range(1200):
            try:
                socks.append(socket.create_connection(("127.0.0.1", base + c)))
                break
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError(f"server exited: {proc.stdout.read()}") from None
                time.sleep(0.05)
    sel = selectors.DefaultSelector()
    for s in socks:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
    buf = bytearray(1 << 20)
    total, first, open_socks = 0, None, len(socks)
    while open_socks:
        for key, _ in sel.select():
            try:
                # MSG_TRUNC: TCP discards the bytes in the kernel, no copy to user space; the reader keeps up
                # on a loaded machine, so the server's own cost and pace are measured, not the reader's.
                n = key.fileobj.recv_into(buf, len(buf), socket.MSG_TRUNC)
            except BlockingIOError:
                continue
            if first is None and n:
                first = (_cpu_ticks(proc.pid), resource.getrusage(resource.RUSAGE_SELF), time.perf_counter())
            if n == 0:
                sel.unregister(key.fileobj)
                key.fileobj.close()
                open_socks -= 1
            total += n
    last = (_cpu_ticks(proc.pid), resource.getrusage(resource.RUSAGE_SELF), time.perf_counter())
    return {"first": first, "last": last, "bytes": total}


def floor_sender(base: int, events: int, rate: float, event_bytes: int = 2_780_000, frames: int = 4) -> None:
    """The kernel's floor: ``events`` x ``event_bytes`` to 11 readers by a plain blocking sendmsg loop, paced."""
    listeners = [socket.create_server(("127.0.0.1", base + c)) for c in range(11)]
    conns = [lst.accept()[0] for lst in listeners]
    frame = os.urandom(event_bytes // 11 // frames)
    parts = [length_prefix(len(frame)), memoryview(frame)] * frames
    t0 = time.perf_counter()
    for n in range(events):
        for conn in conns:
            conn.sendmsg(parts)  # blocking: returns when the kernel took everything
        delay = t0 + (n + 1) / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
    for conn in conns:
        conn.close()


def kernel_floor(events: int, rate: float) -> tuple[str, str]:
    """CPU per event of :func:`floor_sender` in a niced subprocess, read by the same cheap reader."""
    base = _free_port_block()
    load = os.getloadavg()[0]
    proc = subprocess.Popen([sys.executable, __file__, "--floor-sender", str(base), str(events), str(rate)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: os.nice(10))
    got = _discard_reader(proc, base)
    _finish(proc)
    tick_ms = 1e3 / os.sysconf("SC_CLK_TCK")
    (u0, s0), _, _ = got["first"]
    (u1, s1), _, _ = got["last"]
    return (
        f"kernel floor at {rate:g}/s: same bytes by a blocking sendmsg loop",
        f"user {(u1 - u0) * tick_ms / events:.2f} + system {(s1 - s0) * tick_ms / events:.2f} ms/event; "
        f"load {load:.1f}-{os.getloadavg()[0]:.1f}",
    )


def _finish(proc: subprocess.Popen) -> str:
    out, _ = proc.communicate(timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"server failed ({proc.returncode}): {out}")
    return out


def serve_cpu(events: int, pool: int, rate: float, conduit: bool) -> list[tuple[str, str]]:
    """CPU ms per served event (user, system) of `conduit simulate serve` at ``rate``, see the module docstring."""
    import tempfile

    tick_ms = 1e3 / os.sysconf("SC_CLK_TCK")
    rows = []
    with tempfile.TemporaryDirectory(prefix="conduit_sim_cpu_") as tmp:
        tmp = Path(tmp)
        base = _free_port_block()
        load = os.getloadavg()[0]
        proc = _start_paced_server(events, pool, rate, base, tmp / "truth.h5")
        got = _discard_reader(proc, base)
        pacing = re.search(r"^pacing: (.*)$", _finish(proc), re.M)
        (u0, s0), ru0, t0 = got["first"]
        (u1, s1), ru1, t1 = got["last"]
        reader_ms = ((ru1.ru_utime - ru0.ru_utime) * 1e3 / events, (ru1.ru_stime - ru0.ru_stime) * 1e3 / events)
        rows.append((
            f"serve --rate {rate:g} -> cheap reader ({events} events, pool {pool})",
            f"user {(u1 - u0) * tick_ms / events:.2f} + system {(s1 - s0) * tick_ms / events:.2f} ms/event; "
            f"{events / (t1 - t0):.0f} events/s, {got['bytes'] / events / 1e6:.2f} MB/event; reader user "
            f"{reader_ms[0]:.2f} + system {reader_ms[1]:.2f} ms/event; start-up (imports, pool) "
            f"{(u0 + s0) * tick_ms / 1e3:.1f} s CPU; load {load:.1f}-{os.getloadavg()[0]:.1f}"
            + (f"; the server's pacing: {pacing[1]}" if pacing else ""),
        ))
        if conduit:
            rows.append(_serve_cpu_conduit(tmp, events, pool, rate, (u0, s0), tick_ms))
    return rows


def _serve_cpu_conduit(tmp: Path, events: int, pool: int, rate: float, startup: tuple[int, int], tick_ms: float):
    """The same serve drained by `conduit run` (end_to_end.py's online pipeline); server CPU less ``startup``."""
    import signal

    from end_to_end import _online_pipeline

    base = _free_port_block()
    load = os.getloadavg()[0]
    proc = _start_paced_server(events, pool, rate, base, tmp / "truth2.h5")
    time.sleep(1.0)
    run = subprocess.Popen([str(CONDUIT), "run", str(_online_pipeline(tmp, base, 2)), "-q"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp)
    while True:  # reap the server ourselves: its rusage is its exact CPU time to the end
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            break
        time.sleep(0.2)
    _finish(proc)
    time.sleep(3.0)
    run.send_signal(signal.SIGINT)
    out, err = run.communicate(timeout=600)
    received = re.search(r"events received\s+(\d+)", out)
    failed = f"; conduit run FAILED ({run.returncode}): {err.strip().splitlines()[-1]}" if run.returncode else ""
    # The start-up share (pool filling) is taken from the cheap reader's run; the split applies to the rest.
    user, system = usage.ru_utime * 1e3 - startup[0] * tick_ms, usage.ru_stime * 1e3 - startup[1] * tick_ms
    return (
        f"serve --rate {rate:g} -> conduit run (end_to_end pipeline)",
        f"user {user / events:.2f} + system {system / events:.2f} ms/event (start-up from the "
        f"cheap reader's run subtracted); "
        f"received {received.group(1) if received else '?'} of {events}; load {load:.1f}-{os.getloadavg()[0]:.1f}{failed}",
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=300, help="events generated for the generation figure")
    parser.add_argument("--serve-events", type=int, default=3000, help="events served for the serving figures")
    parser.add_argument("--pool", type=int, default=50)
    parser.add_argument("--serve-cpu", action="store_true", help="only the serving CPU per event (see above)")
    parser.add_argument("--rates", type=float, nargs="+", default=[200.0], help="--serve-cpu rates (events/s)")
    parser.add_argument("--conduit", action="store_true", help="--serve-cpu: also drained by `conduit run`")
    parser.add_argument("--floor-sender", nargs=3, metavar=("BASE", "EVENTS", "RATE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.floor_sender:
        floor_sender(int(args.floor_sender[0]), int(args.floor_sender[1]), float(args.floor_sender[2]))
        return 0
    rows = [("machine", machine())]
    if args.serve_cpu:
        for rate in args.rates:
            rows += serve_cpu(args.serve_events, args.pool, rate, args.conduit)
            rows.append(kernel_floor(args.serve_events, rate))
        _print(rows)
        return 0
    rows += bench_generation(args.events)
    rows += bench_serving_raw(args.serve_events, args.pool)
    rows += bench_serving_built(args.serve_events, args.pool)
    _print(rows)
    return 0


def _print(rows: list[tuple[str, str]]) -> None:
    width = max(len(k) for k, _ in rows)
    print(f"{'measure':<{width}}  result")
    print(f"{'-' * width}  {'-' * 40}")
    for key, value in rows:
        print(f"{key:<{width}}  {value}")


if __name__ == "__main__":
    sys.exit(main())
