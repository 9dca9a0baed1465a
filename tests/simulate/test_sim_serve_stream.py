"""The exact byte stream `conduit simulate serve` writes to each CoBo's clients.

Two independent checks of every served byte, over real loopback TCP:

* an oracle built from the documented rules (get_format.md 4 framing; serve.py:
  each frame of event n is due at n + U(0, disorder) drawn from the order
  generator, frames leave in due order; a pool event's frames carry the served
  event's id and timestamps, CoBo 10 its own clock), from frames encoded here
  independently, plus a decode of every frame header received;
* SHA-256 digests of the streams recorded with the serving code of main before
  the cheap serving path (2026-12-07, data/serve_streams.json): the same seed,
  pool, rate and disorder give the same bytes. The digests of the pool's frames
  are recorded too, so that a change of the simulator itself is told apart from
  a change of the serving.
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import trio
import trio.testing

from conduit.get.dataexporter import length_prefix
from conduit_simulate.generator import EventSequence, Simulator
from conduit_simulate.params import SimulationParams
from conduit_simulate.serve import patch_frame, serve_simulation
from conduit_simulate.writers import event_frames

RECORDED = Path(__file__).parent / "data" / "serve_streams.json"

#: name -> (simulation parameters, serve keywords); the recorded digests are keyed by name.
CASES: dict[str, tuple[dict, dict]] = {
    "pool3-disorder1.2": (
        dict(preset="single-track", noise_pads=30, events=11, pool=3, seed=51, first_event_id=7), dict(disorder=1.2)
    ),
    "pool2-disorder2.5-rate": (
        dict(preset="single-track", noise_pads=5, events=9, pool=2, seed=52), dict(disorder=2.5, rate=200.0)
    ),
    "pool1-in-order": (dict(preset="single-track", noise_pads=0, events=5, pool=1, seed=53), dict(disorder=0.0)),
    "fresh-disorder1.7": (dict(preset="single-track", noise_pads=10, events=4, pool=0, seed=54), dict(disorder=1.7)),
}


def expected_streams(sim: Simulator, disorder: float) -> dict[int, bytes]:
    """The stream each CoBo's client must receive, from the documented rules (module docstring)."""
    sequence = EventSequence(sim)
    pool = {k: event_frames(sim, sim.event(k)) for k in range(sequence.pool)}
    order_rng = np.random.default_rng([sim.params.seed, 0x5E57E])
    due = []
    for n in range(sim.params.events):
        if sequence.pool:
            ts, ts_other = sim.timestamps(n)
            event_id = sim.params.first_event_id + n
            frames = {
                key: patch_frame(f, event_id, ts_other if key[0] == 10 else ts)
                for key, f in pool[sequence.source_index(n)].items()
            }
        else:
            frames = event_frames(sim, sim.event(n))
        keys = n + order_rng.uniform(0.0, max(disorder, 0.0), len(frames))
        due += [(float(k), len(due) + i, cobo, f) for i, (k, ((cobo, _), f)) in enumerate(zip(keys, frames.items()))]
    streams: dict[int, list[bytes]] = {}
    for _, _, cobo, frame in sorted(due):
        streams.setdefault(cobo, []).extend((length_prefix(len(frame)), frame))
    return {cobo: b"".join(parts) for cobo, parts in streams.items()}


async def _read_to_eof(port: int, out: dict, key) -> None:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    chunks = []
    async with stream:
        while chunk := await stream.receive_some(1 << 16):
            chunks.append(chunk)
    out[key] = b"".join(chunks)


async def served_streams(sim: Simulator, clients: int = 1, **serve_kw) -> dict[tuple[int, int], bytes]:
    """{(cobo, client): every byte that client read until the server closed}, over real TCP."""
    got: dict[tuple[int, int], bytes] = {}
    async with trio.open_nursery() as nursery:
        ports = await nursery.start(
            lambda task_status: serve_simulation(sim, base_port=0, clients=clients, task_status=task_status, **serve_kw)
        )
        with trio.fail_after(120):
            async with trio.open_nursery() as readers:
                for cobo, port in ports.items():
                    for client in range(clients):
                        readers.start_soon(_read_to_eof, port, got, (cobo, client))
    return got


def _decode(stream: bytes) -> list[tuple[int, int, int, int, bytes]]:
    """(event id, timestamp, cobo, asad, frame) of every length-prefixed frame; the stream must end on a frame."""
    out, offset = [], 0
    while offset < len(stream):
        (length,) = struct.unpack_from("<Q", stream, offset)
        frame = stream[offset + 8 : offset + 8 + length]
        assert len(frame) == length, "the stream ends inside a frame"
        ts = int.from_bytes(frame[16:22], "big")
        out.append((struct.unpack_from(">I", frame, 22)[0], ts, frame[26], frame[27], frame))
        offset += 8 + length
    return out


@pytest.mark.parametrize("case", sorted(CASES))
async def test_served_bytes_equal_the_oracle_and_every_header_decodes(case):
    params, serve_kw = CASES[case]
    sim = Simulator(SimulationParams(**params))
    got = await served_streams(sim, **serve_kw)
    expected = expected_streams(sim, serve_kw["disorder"])
    assert sorted(c for c, _ in got) == sorted(expected) == sorted({c for c, _ in sim.asads})
    for (cobo, _), stream in got.items():
        assert stream == expected[cobo], f"CoBo {cobo}: {len(stream)} bytes received, {len(expected[cobo])} expected"
        frames = _decode(stream)
        asads = sorted(a for c, a in sim.asads if c == cobo)
        assert len(frames) == params["events"] * len(asads)
        first = params.get("first_event_id", 0)
        for event_id, ts, f_cobo, asad, _ in frames:
            n = event_id - first
            assert 0 <= n < params["events"] and f_cobo == cobo and asad in asads
            assert ts == sim.timestamps(n)[1 if cobo == 10 else 0]
        for n in range(params["events"]):
            assert sorted(a for i, _, _, a, _ in frames if i == first + n) == asads


async def test_two_clients_per_port_receive_the_same_bytes():
    params, serve_kw = CASES["pool3-disorder1.2"]
    sim = Simulator(SimulationParams(**params))
    got = await served_streams(sim, clients=2, **serve_kw)
    expected = expected_streams(sim, serve_kw["disorder"])
    assert len(got) == 2 * len(expected)
    for (cobo, _), stream in got.items():
        assert stream == expected[cobo]


def _digests(sim: Simulator, got: dict[tuple[int, int], bytes]) -> dict:
    sequence = EventSequence(sim)
    inputs = hashlib.sha256()
    for k in range(sequence.pool or sim.params.events):
        for key, frame in sorted(event_frames(sim, sim.event(k)).items()):
            inputs.update(bytes(key) + frame)
    return {
        "frames": inputs.hexdigest(),
        "streams": {str(cobo): hashlib.sha256(stream).hexdigest() for (cobo, _), stream in sorted(got.items())},
    }


@pytest.mark.parametrize("case", sorted(CASES))
async def test_served_bytes_equal_those_recorded_before_the_cheap_serving_path(case):
    params, serve_kw = CASES[case]
    sim = Simulator(SimulationParams(**params))
    now = _digests(sim, await served_streams(sim, **serve_kw))
    recorded = json.loads(RECORDED.read_text())[case]
    assert now["frames"] == recorded["frames"], "the simulator's frames changed: the recorded streams no longer apply"
    assert now["streams"] == recorded["streams"]


def record() -> None:
    """Write data/serve_streams.json from the serving code checked out (run with main's code only)."""

    async def all_cases() -> dict:
        out = {}
        for case, (params, serve_kw) in sorted(CASES.items()):
            sim = Simulator(SimulationParams(**params))
            out[case] = _digests(sim, await served_streams(sim, **serve_kw))
        return out

    RECORDED.parent.mkdir(exist_ok=True)
    RECORDED.write_text(json.dumps(trio.run(all_cases), indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    record()


async def test_a_reader_that_stops_reading_holds_the_sender_back_and_nothing_is_lost():
    """CoBo 0's client stops reading: the serve stalls (the others get only part of the run), then completes."""
    params, serve_kw = CASES["pool3-disorder1.2"]
    sim = Simulator(SimulationParams(**{**params, "preset": "default", "events": 400}))
    resume = trio.Event()
    got: dict[tuple[int, int], bytes] = {}
    progress: dict[int, int] = {}

    async def reader(cobo: int, port: int) -> None:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        chunks = []
        async with stream:
            if cobo == 0:
                await resume.wait()
            while chunk := await stream.receive_some(1 << 16):
                chunks.append(chunk)
                progress[cobo] = progress.get(cobo, 0) + len(chunk)
        got[(cobo, 0)] = b"".join(chunks)

    stats = {}
    async with trio.open_nursery() as nursery:

        async def serve(task_status=trio.TASK_STATUS_IGNORED):
            stats["serve"] = await serve_simulation(sim, base_port=0, task_status=task_status, **serve_kw)

        ports = await nursery.start(serve)
        for cobo, port in ports.items():
            nursery.start_soon(reader, cobo, port)
        with trio.fail_after(120):
            while len(progress) < 10:  # the pool is made (in a thread), serving has begun
                await trio.sleep(0.01)
            await trio.testing.wait_all_tasks_blocked(cushion=0.5)  # the sender waits for CoBo 0's reader
            held = dict(progress)
            resume.set()
    expected = expected_streams(sim, serve_kw["disorder"])
    assert 0 not in held and sorted(held) == list(range(1, 11))
    assert all(held[c] < len(expected[c]) for c in held)  # nobody got the whole run while CoBo 0 was stuck
    assert stats["serve"].events == 400 and stats["serve"].frames == sum(len(_decode(s)) for s in expected.values())
    assert stats["serve"].waited >= 0.5  # the cushion during which every task, the sender too, was blocked
    for (cobo, _), stream in got.items():
        assert stream == expected[cobo]


async def test_a_client_that_leaves_is_dropped_and_the_others_get_everything():
    params, serve_kw = CASES["pool3-disorder1.2"]
    sim = Simulator(SimulationParams(**{**params, "events": 60}))
    got: dict[tuple[int, int], bytes] = {}

    async def leaver(port: int) -> None:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.receive_some(100)
        await stream.aclose()  # leaves in the middle of the run

    async with trio.open_nursery() as nursery:
        ports = await nursery.start(
            lambda task_status: serve_simulation(sim, base_port=0, clients=2, task_status=task_status, **serve_kw)
        )
        with trio.fail_after(120):
            async with trio.open_nursery() as readers:
                for cobo, port in ports.items():
                    readers.start_soon(_read_to_eof, port, got, (cobo, 0))
                    if cobo == 3:
                        readers.start_soon(leaver, port)
                    else:
                        readers.start_soon(_read_to_eof, port, got, (cobo, 1))
    expected = expected_streams(sim, serve_kw["disorder"])
    assert len(got) == 2 * len(expected) - 1
    for (cobo, _), stream in got.items():
        assert stream == expected[cobo]


def _count_writes(monkeypatch) -> dict[int, int]:
    """{server port: send_buffers calls}: every call still goes to the real server (one sendmsg per client)."""
    from conduit.get.dataexporter import DataExporterServer

    calls: dict[int, int] = {}
    real = DataExporterServer.send_buffers

    async def counted(self, buffers, *, frames=0):
        calls[self.port] = calls.get(self.port, 0) + 1
        return await real(self, buffers, frames=frames)

    monkeypatch.setattr(DataExporterServer, "send_buffers", counted)
    return calls


@pytest.mark.parametrize("rate", [0.0, 1e6])
async def test_a_sender_behind_schedule_sends_every_due_event_in_one_write_per_cobo(monkeypatch, rate):
    """Unpaced, or paced far faster than it can go (every event due at once: a late wake-up): the pool events
    due go MAX_LAG_EVENTS at a time, one write per CoBo per pass, and the bytes are those of one event per pass."""
    from conduit_simulate.serve import MAX_LAG_EVENTS

    params, serve_kw = CASES["pool3-disorder1.2"]
    sim = Simulator(SimulationParams(**{**params, "events": 22}))
    calls = _count_writes(monkeypatch)
    got = await served_streams(sim, **{**serve_kw, "rate": rate})
    expected = expected_streams(sim, serve_kw["disorder"])
    for (cobo, _), stream in got.items():
        assert stream == expected[cobo]
    passes = -(-22 // MAX_LAG_EVENTS)  # 6: events 0-3, 4-7, ..., 20-21
    assert len(calls) == 11
    # One write per pass at most, plus the frames still due after the last event (disorder > 1).
    assert all(n <= passes + 1 for n in calls.values()), calls
    assert sum(calls.values()) < 11 * 22 // 2  # one write per CoBo per event would be 242


async def test_on_serving_is_called_once_after_every_client_connected_and_before_the_first_byte():
    params, serve_kw = CASES["pool1-in-order"]
    sim = Simulator(SimulationParams(**params))
    got: dict[tuple[int, int], bytes] = {}
    seen: list[int] = []

    def on_serving() -> None:
        seen.append(sum(len(s) for s in got.values()))

    async with trio.open_nursery() as nursery:
        ports = await nursery.start(
            lambda task_status: serve_simulation(sim, base_port=0, on_serving=on_serving, task_status=task_status,
                                                 **serve_kw)
        )
        assert seen == []  # listening, clients not there yet
        with trio.fail_after(120):
            async with trio.open_nursery() as readers:
                for cobo, port in ports.items():
                    readers.start_soon(_read_to_eof, port, got, (cobo, 0))
    assert seen == [0]
    expected = expected_streams(sim, serve_kw["disorder"])
    assert {cobo: stream for (cobo, _), stream in got.items()} == expected
