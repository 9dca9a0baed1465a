"""GET ingestion benchmark: parse + event building of partial-readout frames, on one core.

Generates a realistic run in memory: every event has ``--channels`` signal
channels (default 700) spread over the 40 AsAds of the default map, plus the 16
FPN channels of every AsAd (real DAQs read them every event), all with 512
buckets; one frame per AsAd per event (about 2.75 MB per event). Then, after
JIT warm-up, measures several repetitions of

* ``decode``: the numba frame decoder alone (frame -> mapped rows);
* ``build``:  ``EventBuilder.add_frame`` for every frame, interleaved event by event
  as the k-way merge or the network delivers them (validation, grouping,
  decoding, event assembly): the figure the 1 GB/s target is about;

and optionally (``--graw``) the ``graw`` source end to end from a run folder in a
temporary directory (file reads, k-way merge, builder, engine), and (``--tcp``)
the ``exporter`` source receiving the same frames from 11 DataExporter servers on
127.0.0.1 through the engine.

    python benchmarks/ingest.py                 # in-memory figures
    python benchmarks/ingest.py --graw --tcp    # plus the two sources end to end

The process pins itself to one CPU (``--cpu``, default the last one) unless ``--cpu -1``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("NUMBA_CACHE_DIR", str(Path(__file__).resolve().parents[1] / ".numba-cache"))

from conduit.get.builder import EventBuilder  # noqa: E402
from conduit.get.decoder import FrameDecoder  # noqa: E402
from conduit.get.frames import check_frame, encode_event_frames  # noqa: E402
from conduit.get.maps import load_electronics_map  # noqa: E402
from _common import machine  # noqa: E402




def make_events(n_unique: int, n_channels: int, seed: int = 0):
    """``n_unique`` distinct events: a list of {(cobo, asad): frame bytes} (event ids 0..n-1)."""
    emap = load_electronics_map()
    rng = np.random.default_rng(seed)
    fpn = 300 + rng.integers(-8, 8, (4, 4, 512))
    events = []
    for evt in range(n_unique):
        pads = rng.choice(emap.n_pads, n_channels, replace=False)
        traces = np.zeros((n_channels, 517), np.int16)
        traces[:, :4] = emap.hardware_of(pads)
        traces[:, 4] = pads
        baseline = 300 + rng.normal(0, 6, (n_channels, 512))
        peak = rng.integers(50, 450, n_channels)[:, None]
        pulse = rng.uniform(100, 3000, n_channels)[:, None] * np.exp(-0.5 * ((np.arange(512) - peak) / 4.0) ** 2)
        traces[:, 5:] = np.clip(baseline + pulse, 0, 4095).astype(np.int16)
        events.append(encode_event_frames(traces, evt, timestamp=1000 * evt, timestamp_other=1000 * evt + 1,
                                          fpn=fpn, asads=emap.asads))
    return emap, events


def with_id(frame: bytes, event_id: int) -> bytes:
    return frame[:22] + event_id.to_bytes(4, "big") + frame[26:]


def stream(events, n_events: int) -> list[bytes]:
    """Frames of ``n_events`` events (cycling the unique ones, fresh ids), in arrival order."""
    out = []
    for evt in range(n_events):
        frames = events[evt % len(events)]
        out.extend(with_id(f, evt) if evt >= len(events) else f for f in frames.values())
    return out


def bench_decode(emap, frames: list[bytes], reps: int):
    dec = FrameDecoder(emap)
    dec.warm_up()
    arrays = [np.frombuffer(f, np.uint8) for f in frames]
    infos = [check_frame(a) for a in arrays]
    times = []
    for _ in range(reps):
        t0, c0 = time.perf_counter(), time.process_time()
        for a, i in zip(arrays, infos):
            dec.decode(a, i)
        times.append((time.perf_counter() - t0, time.process_time() - c0))
    return times


def bench_build(emap, frames: list[bytes], reps: int, n_events: int):
    times = []
    for _ in range(reps):
        builder = EventBuilder(emap, timeout=None)
        builder.warm_up()
        emitted = 0
        t0, c0 = time.perf_counter(), time.process_time()
        for f in frames:
            emitted += len(builder.add_frame(f))
        emitted += len(builder.flush())
        times.append((time.perf_counter() - t0, time.process_time() - c0))
        assert emitted == n_events and builder.counters.complete_events == n_events, builder.counter_dict()
    return times


def bench_graw(frames_by_event, n_events: int, reps: int):
    from conduit.config.pipeline import load_pipeline
    from conduit.engine.runner import run_pipeline
    from conduit.get.grawfiles import RunWriter

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "run_0001"
        with RunWriter(folder) as writer:
            for evt in range(n_events):
                frames = frames_by_event[evt % len(frames_by_event)]
                for (cobo, asad), f in frames.items():
                    writer.write(cobo, asad, with_id(f, evt) if evt >= len(frames_by_event) else f)
        size = sum(p.stat().st_size for p in folder.rglob("*.graw"))
        text = f'[source]\nkind = "graw"\npath = "{folder}"\n[engine]\nworkers = 0\n'
        times = []
        for _ in range(reps):
            pipeline = load_pipeline(Path(tmp) / "p.toml", text=text)
            t0, c0 = time.perf_counter(), time.process_time()
            with open(os.devnull, "w") as devnull:
                summary = run_pipeline(pipeline, handle_signals=False, status_stream=devnull)
            times.append((time.perf_counter() - t0, time.process_time() - c0))
            assert summary.complete == n_events, summary
    return times, size


def _serve_frames(conn, n_events: int, n_unique: int, n_channels: int, cpu: int, rate: float = 0.0) -> None:
    """11 DataExporter servers sending the benchmark run once the receiver is connected: as fast as they can, or
    (``rate`` > 0) paced at ``rate`` events/s on a 10 ms grid, as the simulated DAQ serves. Each server sends the
    frames of one tick's events in one call (one ``sendmsg`` per client, as the simulated DAQ does). Runs in a child
    process (``cpu``: pinned there, -1 not) or in a thread of the receiving process (``cpu`` None)."""
    import trio

    from conduit.get.dataexporter import DataExporterServer, length_prefix

    if cpu is not None and cpu >= 0 and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})
    _, unique = make_events(n_unique, n_channels)

    def buffers(evt: int) -> dict[int, list[bytes]]:
        """Event ``evt``'s length-prefixed frames, per CoBo."""
        out: dict[int, list[bytes]] = {}
        for (cobo, _), f in unique[evt % len(unique)].items():
            frame = with_id(f, evt) if evt >= len(unique) else f
            out.setdefault(cobo, []).extend((length_prefix(len(frame)), frame))
        return out

    async def serve() -> None:
        servers = [DataExporterServer(queue_frames=1 << 16) for _ in range(11)]
        async with trio.open_nursery() as nursery:
            for s in servers:
                await nursery.start(s.serve)
            conn.send([s.port for s in servers])
            while True:
                command = await trio.to_thread.run_sync(conn.recv)
                if command == "stop":
                    break
                for s in servers:
                    await s.wait_clients(1)
                start = trio.current_time()
                evt = 0
                while evt < n_events:
                    tick: dict[int, list[bytes]] = {}
                    if rate > 0:  # the events due by the next 10 ms tick go out together
                        due = int(evt / rate / 0.01)
                        await trio.sleep_until(start + 0.01 * due)
                        while evt < n_events and int(evt / rate / 0.01) == due:
                            for cobo, bufs in buffers(evt).items():
                                tick.setdefault(cobo, []).extend(bufs)
                            evt += 1
                    else:
                        tick, evt = buffers(evt), evt + 1
                    for cobo, bufs in tick.items():
                        await servers[cobo].send_buffers(bufs, frames=len(bufs) // 2)
                for s in servers:
                    await s.drain()
                conn.send("sent")
            nursery.cancel_scope.cancel()

    trio.run(serve)


def bench_tcp(frames_by_event, n_events: int, reps: int, args):
    """The exporter source receiving from 11 servers in a child process (on the other CPU)."""
    import io
    import multiprocessing

    import trio

    from conduit.config.pipeline import load_pipeline
    from conduit.engine.runner import Engine

    total = sum(len(f) + 8 for evt in range(n_events) for f in frames_by_event[evt % len(frames_by_event)].values())
    import threading

    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    other_cpu = 0 if args.cpu != 0 else 1
    if args.server_thread:  # the servers' CPU is not counted: the figure is the receiving thread's CPU time
        proc = threading.Thread(target=_serve_frames, args=(child, n_events, args.unique, args.channels, None,
                                                             args.rate), daemon=True)
        clock = time.thread_time
    else:
        proc = ctx.Process(target=_serve_frames, args=(child, n_events, args.unique, args.channels,
                                                       other_cpu if args.cpu >= 0 else -1, args.rate), daemon=True)
        clock = time.process_time
    proc.start()
    ports = parent.recv()

    incomplete: list[tuple[int, int]] = []

    async def one_rep() -> tuple[float, float]:
        async with trio.open_nursery() as nursery:
            hosts = ", ".join(f'"127.0.0.1:{p}"' for p in ports)
            pause = "" if args.read_pause is None else f"read_pause = {args.read_pause}\n"
            text = (f'[source]\nkind = "exporter"\nhosts = [{hosts}]\ntimeout = {args.timeout}\n'
                    f"silent_after = {max(10.0, args.timeout)}\n{pause}"
                    f"[engine]\nworkers = 0\nqueue_size = {n_events + 10}\n")
            pipeline = load_pipeline(Path("tcp.toml"), text=text)
            done = trio.Event()
            count = [0]

            def on_event(ev):
                count[0] += 1
                if count[0] == n_events:
                    done.set()

            engine = Engine(pipeline, handle_signals=False, on_event=on_event, status_stream=io.StringIO())
            nursery.start_soon(engine.run)
            await engine.source.wait_connected()
            t0, c0 = trio.current_time(), clock()
            parent.send("go")
            await done.wait()
            elapsed = (trio.current_time() - t0, clock() - c0)
            await trio.to_thread.run_sync(parent.recv)
            counts = engine.source.counters()
            if args.rate > 0:  # paced: a starved server process may leave some incomplete; reported, not fatal
                incomplete.append((counts["incomplete_events"], counts["late_frames"]))
            else:
                assert counts["complete_events"] == n_events, {k: v for k, v in counts.items() if "_" not in k or "events" in k or "frames" in k and "cobo" not in k}
            engine.request_stop()
            nursery.cancel_scope.cancel()
        return elapsed

    try:
        times = [trio.run(one_rep) for _ in range(reps)]
    finally:
        parent.send("stop")
        proc.join(30)
    if incomplete:
        print("exporter source, per repetition (incomplete events, late frames): "
              + ", ".join(f"({i}, {late})" for i, late in incomplete))
    return times, total


def bench_replay(frames_by_event, n_events: int, reps: int, args):
    """The exporter source's whole receive path (11 connections, readv, frame handler, builder, engine dispatch) fed
    deterministically: 11 DataExporter servers in the same trio loop send each 10 ms tick's events (``--rate``
    events per second: 2 at 200/s; one message per CoBo, as the simulated DAQ) and wait until the receivers have
    read and built everything; ``read_pause = 0``, so each connection reads its tick's frames in one read, as online
    at 200/s on a quiet machine. No wall-clock timing is involved; the figure is the thread's CPU per event, the
    servers' sends included (the same for any receiver). A first, untimed repetition prints a SHA-256 of every built
    event (id, time stamps, completeness, trace bytes), to compare two versions of the code."""
    import hashlib
    import io

    import trio
    import trio.testing

    from conduit.config.pipeline import load_pipeline
    from conduit.engine.runner import Engine
    from conduit.get.dataexporter import DataExporterServer, length_prefix

    per_tick = max(1, round(args.rate / 100)) if args.rate > 0 else 2
    # One bytearray per unique event and CoBo (length-prefixed frames back to back), event ids patched in place.
    blobs: list[dict[int, bytearray]] = []
    id_offsets: list[dict[int, list[int]]] = []
    for frames in frames_by_event:
        blob: dict[int, bytearray] = {}
        where: dict[int, list[int]] = {}
        for (cobo, _), f in frames.items():
            b = blob.setdefault(cobo, bytearray())
            b += length_prefix(len(f))
            where.setdefault(cobo, []).append(len(b) + 22)
            b += f
        blobs.append(blob)
        id_offsets.append(where)
    digests: list[str] = []

    async def one_rep(hashed: bool) -> tuple[float, float]:
        servers = [DataExporterServer(queue_frames=1 << 16) for _ in range(11)]
        digest = hashlib.sha256()
        count = [0]

        def on_event(ev) -> None:
            count[0] += 1
            if hashed:
                digest.update(np.array([ev.id, ev.timestamp, ev.timestamp_other, ev.complete], np.int64).tobytes())
                digest.update(np.ascontiguousarray(ev.traces).tobytes())

        async with trio.open_nursery() as nursery:
            for srv in servers:
                await nursery.start(srv.serve)
            hosts = ", ".join(f'"{srv.address}"' for srv in servers)
            text = (f'[source]\nkind = "exporter"\nhosts = [{hosts}]\nread_pause = 0\ntimeout = 600\n'
                    f"silent_after = 600\n[engine]\nworkers = 0\nqueue_size = {n_events + 10}\n")
            engine = Engine(load_pipeline(Path("replay.toml"), text=text), handle_signals=False, on_event=on_event,
                            status_stream=io.StringIO())
            nursery.start_soon(engine.run)
            for srv in servers:
                await srv.wait_clients(1)
            await engine.source.wait_connected()
            await trio.testing.wait_all_tasks_blocked()
            t0, c0 = time.perf_counter(), time.thread_time()
            for first in range(0, n_events, per_tick):
                tick: dict[int, list] = {}
                for evt in range(first, min(first + per_tick, n_events)):
                    u = evt % len(blobs)
                    for cobo, blob in blobs[u].items():
                        for at in id_offsets[u][cobo]:
                            blob[at:at + 4] = evt.to_bytes(4, "big")
                        tick.setdefault(cobo, []).append(blob)
                for cobo, bufs in tick.items():
                    await servers[cobo].send_buffers(bufs)
                await trio.testing.wait_all_tasks_blocked()
            elapsed = (time.perf_counter() - t0, time.thread_time() - c0)
            counts = engine.source.counters()
            assert count[0] == counts["complete_events"] == n_events, counts
            engine.request_stop()
            nursery.cancel_scope.cancel()
        if hashed:
            digests.append(digest.hexdigest())
        return elapsed

    # The first repetition (also a warm-up) hashes the events; the others, timed, do not.
    trio.run(one_rep, True)
    times = [trio.run(one_rep, False) for _ in range(reps)]
    print(f"replay: SHA-256 of the {n_events} built events: {digests[0]}")
    total = sum(len(f) + 8 for evt in range(n_events) for f in frames_by_event[evt % len(frames_by_event)].values())
    return times, total


def row(name: str, times: list[tuple[float, float]], nbytes: int, n_events: int) -> str:
    """Median and best over repetitions, by wall-clock time and by CPU time of this process."""
    wall = statistics.median(t for t, _ in times)
    cpu = statistics.median(c for _, c in times)
    best_cpu = min(c for _, c in times)
    return (f"| {name:<34} | {nbytes / wall / 1e6:9.0f} | {nbytes / cpu / 1e6:8.0f} | {nbytes / best_cpu / 1e6:8.0f} | "
            f"{n_events / wall:9.0f} | {n_events / cpu:8.0f} | {len(times):4d} |")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=150, help="events per repetition")
    ap.add_argument("--unique", type=int, default=30, help="distinct events generated (cycled)")
    ap.add_argument("--channels", type=int, default=700, help="signal channels per event")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--cpu", type=int, default=(os.cpu_count() or 1) - 1, help="pin to this CPU; -1: do not pin")
    ap.add_argument("--graw", action="store_true", help="also the graw source end to end from a temporary folder")
    ap.add_argument("--tcp", action="store_true", help="also the exporter source from 11 loopback DataExporters")
    ap.add_argument("--rate", type=float, default=0.0,
                    help="--tcp: the DataExporters serve at this many events/s (10 ms grid, as online) instead of "
                         "as fast as they can; the figure is then the receiving process's CPU per event at that "
                         "rate, idle wake-ups included")
    ap.add_argument("--server-thread", action="store_true",
                    help="--tcp: run the 11 DataExporters in a thread of the receiving process (not a child process) "
                         "and count the receiving (trio) thread's CPU time only")
    ap.add_argument("--timeout", type=float, default=2.0,
                    help="--tcp: the receiving exporter source's timeout (s; its default 2): raise it when the "
                         "process runs slowed down (valgrind) so that no event comes out incomplete on time")
    ap.add_argument("--read-pause", type=float, default=None,
                    help="the exporter source's read_pause for --tcp (s; default: the source's default)")
    ap.add_argument("--replay", action="store_true",
                    help="the exporter source's receive path fed tick by tick from 11 DataExporters in the same "
                         "loop, no wall-clock timing (deterministic; --rate sets the events per 10 ms tick, default "
                         "2); prints a hash of the built events")
    ap.add_argument("--tcp-only", action="store_true", help="skip the in-memory measurements")
    args = ap.parse_args(argv)
    if args.cpu >= 0 and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})

    t0 = time.perf_counter()
    emap, unique = make_events(args.unique, args.channels)
    frames = stream(unique, args.events if not args.tcp_only else 1)
    nbytes = sum(len(f) for evt in range(args.events) for f in unique[evt % len(unique)].values())
    print(f"machine: {machine()}; pinned to CPU {args.cpu}" if args.cpu >= 0 else f"machine: {machine()}")
    print(f"run: {args.events} events x {len(unique[0])} frames, {args.channels} signal + "
          f"{16 * len(unique[0])} FPN channels per event, {nbytes / args.events / 1e6:.2f} MB/event, "
          f"{nbytes / 1e6:.0f} MB per repetition (generated in {time.perf_counter() - t0:.1f} s)\n")
    print("MB/s and events/s: median over repetitions, by wall-clock time and by CPU time of the process")
    print("(the CPU figures are what one core sustains when it is not shared with other work).\n")
    print("| measurement                        | MB/s wall | MB/s CPU | best CPU | ev/s wall | ev/s CPU | reps |")
    print("|------------------------------------|-----------|----------|----------|-----------|----------|------|")
    if not args.tcp_only:
        print(row("decode (numba kernel only)", bench_decode(emap, frames, args.reps), nbytes, args.events))
        print(row("parse + build (EventBuilder)", bench_build(emap, frames, args.reps, args.events), nbytes,
                  args.events), flush=True)
    if args.graw:
        times, size = bench_graw(unique, args.events, max(2, args.reps // 2))
        print(row("graw source, end to end (engine)", times, size, args.events), flush=True)
    if args.replay:
        times, size = bench_replay(unique, args.events, args.reps, args)
        print(row("exporter source, replayed tick by tick", times, size, args.events), flush=True)
        cpu_ms = sorted(1e3 * c / args.events for _, c in times)
        print("\nreplay: CPU ms per event (receive path + the servers' sends), per repetition: "
              + ", ".join(f"{c:.3f}" for c in cpu_ms) + f" (median {statistics.median(cpu_ms):.3f})")
    if args.tcp:
        times, size = bench_tcp(unique, args.events, max(2, args.reps // 2), args)
        name = "exporter source, 11x TCP loopback" + (f" at {args.rate:g}/s" if args.rate > 0 else "")
        print(row(name, times, size, args.events), flush=True)
        cpu_ms = sorted(1e3 * c / args.events for _, c in times)
        who = "receiving thread" if args.server_thread else "receiving process"
        print(f"\nexporter source: CPU ms per event of the {who}, per repetition: "
              + ", ".join(f"{c:.2f}" for c in cpu_ms) + f" (median {statistics.median(cpu_ms):.2f})")
        print("\n(exporter: the 11 DataExporter servers run in a child process on the other CPU; wall time "
              "runs from 'go' to the last event delivered)")


if __name__ == "__main__":
    sys.exit(main())
