"""Every simulator output reads back through the ingestion code and matches the in-memory events."""

from __future__ import annotations

import math

import h5py
import numpy as np
import pytest
import trio

from conduit.get.frames import decode_frame, scan_frames
from conduit_simulate.generator import Simulator
from conduit_simulate.params import SimulationParams
from conduit_simulate.truth import read_truth
from conduit_simulate.writers import MERGER_VERSION, write_graw_run, write_hdf5
from conduit.stage import StageContext


def _sorted_rows(traces: np.ndarray) -> np.ndarray:
    order = np.lexsort((traces[:, 3], traces[:, 2], traces[:, 1], traces[:, 0]))
    return traces[order]


async def _collect(source) -> list:
    send, recv = trio.open_memory_channel(math.inf)
    source.attach(send)
    await trio.to_thread.run_sync(source.warm_up)
    await source.run()
    send.close()
    return [event async for event in recv]


@pytest.fixture(scope="module")
def small_run():
    params = SimulationParams(events=6, seed=21, first_event_id=100)
    sim = Simulator(params)
    return sim, [sim.event(i) for i in range(params.events)]


def _truth_writer(tmp_path, sim, name="truth.h5", **kw):
    from conduit_simulate.truth import TruthWriter

    return TruthWriter(tmp_path / name, sim.params, sim.detector, **kw)


async def test_hdf5_output_reads_back_identically(tmp_path, small_run):
    from conduit.sources.hdf5 import Hdf5Params, Hdf5Source

    sim, events = small_run
    path = tmp_path / "run_0005.h5"
    with _truth_writer(tmp_path, sim) as truth:
        assert write_hdf5(sim, path, truth) == 6
    with h5py.File(path, "r") as f:
        assert f["events"].attrs["version"] == MERGER_VERSION
        assert f["events"].attrs["min_event"] == 0 and f["events"].attrs["max_event"] == 5
        ds = f["events/event_0/get_traces"]
        assert ds.dtype == np.int16 and ds.shape[1] == 517
        assert ds.attrs["id"] == 100 and ds.attrs["timestamp"] == events[0].event.timestamp
        assert ds.attrs["timestamp_other"] == events[0].event.timestamp_other
    source = Hdf5Source(Hdf5Params(path=path), StageContext(base_dir=tmp_path))
    assert source.run_number() == 5 and source.total() == 6
    got = await _collect(source)
    assert [e.id for e in got] == [e.event.id for e in events]
    for read, made in zip(got, events):
        assert np.array_equal(read.traces, made.event.traces)
        assert (read.timestamp, read.timestamp_other) == (made.event.timestamp, made.event.timestamp_other)


async def test_graw_output_builds_the_same_events_with_fpn_channels_and_splits(tmp_path, small_run):
    from conduit.sources.graw import GrawParams, GrawSource

    sim, events = small_run
    run_dir = tmp_path / "run_0009"
    with _truth_writer(tmp_path, sim) as truth:
        files = write_graw_run(sim, run_dir, truth, split_bytes=200_000, stamp="2025-03-04T05_06_07.089")
    names = sorted(p.relative_to(run_dir).as_posix() for p in files)
    assert "mm0/CoBo0_AsAd0_2025-03-04T05_06_07.089_0000.graw" in names
    assert any(n.endswith("_0001.graw") for n in names)  # split at 200 kB
    assert {p.parent.name for p in files} == {f"mm{c}" for c in range(11)}
    assert len({(p.parent.name, p.name.split("_")[1]) for p in files}) == 40  # one stream per AsAd of the map
    # Every frame carries the four FPN channels of its four AGETs, with the pedestal-level samples.
    first = sorted(run_dir.glob("mm4/CoBo4_AsAd1_*_0000.graw"))[0].read_bytes()
    info = next(scan_frames(first, source="test"))
    frame = decode_frame(first, info.offset)
    chans = {tuple(c) for c in frame.channels.tolist()}
    assert {(a, c) for a in range(4) for c in (11, 22, 45, 56)} <= chans
    assert frame.header.event_id == 100 and frame.header.cobo == 4 and frame.header.asad == 1
    fpn = events[0].fpn
    want = fpn[(fpn[:, 0] == 4) & (fpn[:, 1] == 1) & (fpn[:, 2] == 2) & (fpn[:, 3] == 45)][0, 5:]
    row = [i for i, c in enumerate(frame.channels.tolist()) if tuple(c) == (2, 45)][0]
    assert np.array_equal(frame.traces[row], want)

    source = GrawSource(GrawParams(path=run_dir), StageContext(base_dir=tmp_path))
    got = await _collect(source)
    assert [e.id for e in got] == [e.event.id for e in events]
    for read, made in zip(got, events):
        assert read.complete
        assert np.array_equal(_sorted_rows(read.traces), _sorted_rows(made.event.traces))
        assert (read.timestamp, read.timestamp_other) == (made.event.timestamp, made.event.timestamp_other)


def test_truth_file_records_particles_deposits_and_contributions(tmp_path, small_run):
    sim, events = small_run
    with _truth_writer(tmp_path, sim) as truth:
        for ev in events:
            truth.write(ev)
    with h5py.File(tmp_path / "truth.h5", "r") as f:
        assert f.attrs["format"] == "conduit-simulate-truth:1"
        assert f.attrs["seed"] == 21 and f.attrs["events"] == 6
        table = f["particles"][()]
    assert len(table) == sum(len(e.truth.particles) for e in events)
    t = read_truth(tmp_path / "truth.h5", 103)
    made = events[3].truth
    assert np.array_equal(t["particles"], made.particles)
    assert np.array_equal(t["deposits"], made.deposits)
    assert np.array_equal(t["contributions"], made.contributions)
    assert t["attrs"]["reaction"] == made.reaction
    # Bρ = p / (299.792458 Z), p from the kinetic energy and mass recorded next to it.
    p = np.sqrt(table["energy"] * (table["energy"] + 2 * table["mass"]))
    assert np.allclose(table["brho"], p / (299.792458 * table["Z"]), rtol=1e-12)
    # Deposits add up to what each particle deposited; read contributions are the traces' pads.
    for ev in events:
        dep = ev.truth.deposits
        for part in ev.truth.particles:
            assert dep["energy"][dep["particle"] == part["index"]].sum() == pytest.approx(part["deposited"], rel=1e-5)
        c = ev.truth.contributions
        assert set(c["pad"][c["read"]].tolist()) <= set(ev.event.traces[:, 4].tolist())


def test_truth_tracks_fit_their_brho(small_run):
    """A circle fitted to a particle's first deposit points has radius Bρ·sin(θ)/B (i.e. Bρ = B·R/sin θ).

    Fitted over the first 30 points (≤ 30 mm); tolerance 2 %. Slow particles lose
    energy along that arc, so the expectation uses the momentum halfway along it
    (equal to the truth Bρ for the fast ones).
    """
    sim, events = small_run
    from conduit_physics.species import species

    checked = 0
    for ev in events:
        for part in ev.truth.particles:
            if part["role"] not in (b"ejectile", b"residual"):
                continue
            d = ev.truth.deposits[ev.truth.deposits["particle"] == part["index"]][:30]
            if len(d) < 20:
                continue
            x, y = d["x"].astype(float), d["y"].astype(float)
            a = np.column_stack([x, y, np.ones_like(x)])
            c = np.linalg.lstsq(a, x**2 + y**2, rcond=None)[0]
            radius = math.sqrt(c[2] + c[0] ** 2 / 4 + c[1] ** 2 / 4)
            sp = species(part["name"].decode())
            assert sp.brho(float(part["energy"])) == pytest.approx(part["brho"], rel=1e-3)  # excitation aside
            energy_mid = float(part["energy"]) - float(d["energy"][: len(d) // 2].sum())
            brho_mid = part["brho"] * sp.brho(energy_mid) / sp.brho(float(part["energy"]))
            b = sim.detector.magnetic_field
            assert radius == pytest.approx(brho_mid * math.sin(part["polar"]) / b * 1000.0, rel=0.02)
            if energy_mid > 0.99 * part["energy"]:
                assert radius == pytest.approx(part["brho"] * math.sin(part["polar"]) / b * 1000.0, rel=0.02)
            checked += 1
    assert checked >= 6


async def test_pool_repeats_events_in_files_with_fresh_ids(tmp_path):
    """pool = K: the files hold K generated events repeated with their own ids and timestamps; truth maps them."""
    from conduit_simulate.generator import EventSequence
    from conduit.sources.hdf5 import Hdf5Params, Hdf5Source

    sim = Simulator(SimulationParams(events=5, pool=2, seed=23, preset="single-track"))
    with _truth_writer(tmp_path, sim, pool_size=2) as truth:
        write_hdf5(sim, tmp_path / "run_0001.h5", truth)
    got = await _collect(Hdf5Source(Hdf5Params(path=tmp_path / "run_0001.h5"), StageContext(base_dir=tmp_path)))
    assert [e.id for e in got] == [0, 1, 2, 3, 4]
    base = [sim.event(0), sim.event(1)]
    for n, ev in enumerate(got):
        assert np.array_equal(ev.traces, base[n % 2].event.traces)
        assert (ev.timestamp, ev.timestamp_other) == sim.timestamps(n)
    with h5py.File(tmp_path / "truth.h5", "r") as f:
        assert f.attrs["events"] == 2 and f.attrs["pool_size"] == 2
        assert f["served"][()].tolist() == [[n, n % 2] for n in range(5)]
    sequence = EventSequence(sim)
    assert [sequence.get(n)[1] for n in range(5)] == [True, True, False, False, False]
