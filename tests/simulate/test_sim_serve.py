"""Served events: eleven DataExporters on loopback, received over real TCP by the exporter source."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest
import trio

from conduit_simulate.generator import Simulator
from conduit_simulate.params import SimulationParams
from conduit_simulate.serve import ServeError, patch_frame, serve_simulation
from conduit.stage import StageContext


def _sorted_rows(traces: np.ndarray) -> np.ndarray:
    return traces[np.lexsort((traces[:, 3], traces[:, 2], traces[:, 1], traces[:, 0]))]


async def _serve_and_receive(sim: Simulator, n_events: int, **serve_kw) -> tuple[list, object]:
    """Serve on ephemeral ports; receive with the exporter source until n_events are built."""
    from conduit.sources.exporter import ExporterParams, ExporterSource

    send, recv = trio.open_memory_channel(math.inf)
    got, stats = [], {}
    async with trio.open_nursery() as nursery:
        served = trio.Event()

        async def serve(task_status=trio.TASK_STATUS_IGNORED):
            stats["serve"] = await serve_simulation(sim, base_port=0, task_status=task_status, **serve_kw)
            served.set()

        ports = await nursery.start(serve)
        params = ExporterParams.from_mapping(
            {"hosts": [f"127.0.0.1:{ports[c]}" for c in sorted(ports)], "cobos": sorted(ports), "timeout": 5.0}
        )
        source = ExporterSource(params, StageContext())
        source.attach(send)
        source.warm_up()
        nursery.start_soon(source.run)
        with trio.fail_after(60):
            while len(got) < n_events:
                got.append(await recv.receive())
            await served.wait()  # every frame written, connections closed
        nursery.cancel_scope.cancel()
    return got, stats.get("serve")


async def test_served_frames_build_into_the_same_complete_events():
    sim = Simulator(SimulationParams(events=5, seed=31, first_event_id=40))
    made = [sim.event(i) for i in range(5)]
    got, _ = await _serve_and_receive(sim, 5)
    got.sort(key=lambda e: e.id)
    assert [e.id for e in got] == [40, 41, 42, 43, 44]
    for read, ev in zip(got, made):
        assert read.complete and not read.missing
        assert np.array_equal(_sorted_rows(read.traces), _sorted_rows(ev.event.traces))
        assert (read.timestamp, read.timestamp_other) == (ev.event.timestamp, ev.event.timestamp_other)


async def test_pool_serving_repeats_events_with_fresh_ids_and_timestamps(tmp_path):
    from conduit_simulate.truth import TruthWriter

    sim = Simulator(SimulationParams(events=7, seed=32, preset="single-track", noise_pads=30, pool=3))
    pool = [sim.event(i) for i in range(3)]
    with TruthWriter(tmp_path / "t.h5", sim.params, sim.detector, pool_size=3) as truth:
        got, stats = await _serve_and_receive(sim, 7, truth=truth)
    got.sort(key=lambda e: e.id)
    assert [e.id for e in got] == list(range(7))
    for n, read in enumerate(got):
        assert read.complete
        assert np.array_equal(_sorted_rows(read.traces), _sorted_rows(pool[n % 3].event.traces))
        assert (read.timestamp, read.timestamp_other) == sim.timestamps(n)
    assert len({e.timestamp for e in got}) == 7
    assert stats.events == 7 and stats.frames == 7 * 40
    import h5py

    with h5py.File(tmp_path / "t.h5", "r") as f:
        assert f.attrs["pool_size"] == 3 and f.attrs["events"] == 3
        assert f["served"][()].tolist() == [[n, n % 3] for n in range(7)]


async def _raw_client(port: int, out: list, done: trio.Event) -> None:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    buf = bytearray()
    async with stream:
        while True:
            chunk = await stream.receive_some(1 << 16)
            if not chunk:
                break  # EOF: the server closed cleanly
            buf += chunk
    offset = 0
    while offset < len(buf):
        (length,) = struct.unpack_from("<Q", buf, offset)
        frame = bytes(buf[offset + 8 : offset + 8 + length])
        assert len(frame) == length
        out.append((struct.unpack_from(">I", frame, 22)[0], frame[26], frame[27]))
        offset += 8 + length
    done.set()


async def test_frames_arrive_interleaved_slightly_out_of_order_then_eof():
    sim = Simulator(SimulationParams(events=12, seed=33, preset="single-track", noise_pads=0, pool=2))
    received: dict[int, list] = {}
    async with trio.open_nursery() as nursery:
        ports = await nursery.start(lambda task_status: serve_simulation(sim, base_port=0, task_status=task_status))
        dones = []
        for cobo, port in ports.items():
            received[cobo] = []
            dones.append(trio.Event())
            nursery.start_soon(_raw_client, port, received[cobo], dones[-1])
        with trio.fail_after(60):
            for d in dones:
                await d.wait()
    asads = {c: sorted(a for cc, a in sim.asads if cc == c) for c in received}
    inversions = 0
    for cobo, frames in received.items():
        assert len(frames) == 12 * len(asads[cobo])  # everything, then EOF
        assert {f[1] for f in frames} == {cobo}
        ids = [f[0] for f in frames]
        for n in range(12):
            assert sorted(f[2] for f in frames if f[0] == n) == asads[cobo]
        inversions += sum(1 for a, b in zip(ids, ids[1:]) if b < a)
        # "Slightly": a frame is never more than one event away from its place.
        assert all(abs(i - int(pos // len(asads[cobo]))) <= 1 for pos, i in enumerate(ids))
    assert inversions > 0


async def test_serve_gives_up_when_no_client_connects():
    sim = Simulator(SimulationParams(events=2, preset="single-track"))
    with pytest.raises(ServeError, match=r"timed out after 0.3 s waiting for 1 client\(s\) on every port"):
        await serve_simulation(sim, base_port=0, connect_timeout=0.3)


async def test_serve_reports_a_port_in_use():
    sim = Simulator(SimulationParams(events=2, preset="single-track"))
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    try:
        with pytest.raises(ServeError, match=f"cannot listen on 127.0.0.1:{port} for CoBo 0"):
            await serve_simulation(sim, base_port=port, connect_timeout=0.3)
    finally:
        for listener in listeners:
            await listener.aclose()


def test_patch_frame_rewrites_only_event_id_and_time():
    frame = bytes(range(256)) * 2
    patched = patch_frame(frame, 0x01020304, 0x0A0B0C0D0E0F)
    assert patched[16:22] == bytes([0x0A, 0x0B, 0x0C, 0x0D, 0x0E, 0x0F])
    assert patched[22:26] == bytes([1, 2, 3, 4])
    assert patched[:16] == frame[:16] and patched[26:] == frame[26:]


async def test_rate_spaces_the_events():
    sim = Simulator(SimulationParams(events=4, preset="single-track", noise_pads=0, pool=1))
    got, stats = await _serve_and_receive(sim, 4, rate=10.0)
    assert len(got) == 4
    assert stats.elapsed >= 0.3  # events at 0, 0.1, 0.2, 0.3 s at least
