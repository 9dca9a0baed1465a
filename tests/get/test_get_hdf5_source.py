"""The ``hdf5`` source on files of the three attpc_merger layouts, written here from get_format.md 3."""

from __future__ import annotations

import logging

import h5py
import numpy as np
import pytest

from conduit.config.pipeline import load_pipeline
from conduit.engine.runner import run_pipeline

N_EVENTS = 6
STR = h5py.string_dtype("utf-8")


def make_events(seed=0):
    rng = np.random.default_rng(seed)
    events = []
    for n in range(N_EVENTS):
        k = int(rng.integers(0, 30))
        traces = np.zeros((k, 517), np.int16)
        traces[:, :5] = rng.integers(0, 60, (k, 5))
        traces[:, 5:] = rng.integers(0, 4096, (k, 512))
        frib = {"977": np.array([n + 1], np.uint16), "1903": rng.integers(0, 4000, (64, 8)).astype(np.uint16)}
        # 48-bit timestamps, exact even in the legacy float64 header
        events.append(dict(n=n, id=1000 + 3 * n, traces=traces, ts=(1 << 47) + 17 * n, ts_other=(1 << 46) + n,
                           frib=frib))
    return events


def write_legacy(path, events):
    with h5py.File(path, "w") as f:
        get = f.create_group("get")
        for e in events:
            get.create_dataset(f"evt{e['n']}_data", data=e["traces"])
            get.create_dataset(f"evt{e['n']}_header", data=np.array([e["id"], e["ts"], e["ts_other"]], np.float64))
        frib = f.create_group("frib")
        frib.create_dataset("runinfo", data=np.array([42, 1, 2, 1], np.uint32))
        evt = frib.create_group("evt")
        for e in events:
            evt.create_dataset(f"evt{e['n']}_header", data=np.array([e["n"], 99], np.uint32))
            evt.create_dataset(f"evt{e['n']}_977", data=e["frib"]["977"])
            evt.create_dataset(f"evt{e['n']}_1903", data=e["frib"]["1903"])
        meta = f.create_group("meta")
        meta.create_dataset("meta", data=np.array([events[0]["n"], events[0]["ts"], events[-1]["n"], events[-1]["ts"]],
                                                  np.uint64))
        meta.create_dataset("cobo0asad0_files", data=["a.graw"], dtype=h5py.string_dtype("ascii"))


def _events_group(f, events, version):
    g = f.create_group("events")
    g.attrs["min_event"] = np.uint64(events[0]["n"])
    g.attrs["max_event"] = np.uint64(events[-1]["n"])
    g.attrs["min_get_ts"] = np.uint64(events[0]["ts"])
    g.attrs["max_get_ts"] = np.uint64(events[-1]["ts"])
    for key in ("frib_run", "frib_start", "frib_stop", "frib_time"):
        g.attrs[key] = np.uint32(1)
    g.attrs.create("version", version, dtype=STR)
    s = f.create_group("scalers")
    s.attrs["min_event"], s.attrs["max_event"] = np.uint32(0), np.uint32(0)
    s.attrs.create("version", version, dtype=STR)
    return g


def _frib(group, e):
    fp = group.create_group("frib_physics")
    fp.attrs["id"], fp.attrs["timestamp"] = np.uint32(e["n"]), np.uint32(5)
    for k, v in e["frib"].items():
        fp.create_dataset(k, data=v)


def write_v1(path, events, skip=()):
    with h5py.File(path, "w") as f:
        g = _events_group(f, events, "libattpc_merger:1.0")
        for e in events:
            if e["n"] in skip:
                continue
            ev = g.create_group(f"event_{e['n']}")
            d = ev.create_dataset("get_traces", data=e["traces"])
            d.attrs["id"] = np.uint32(e["id"])
            d.attrs["timestamp"] = np.uint64(e["ts"])
            d.attrs["timestamp_other"] = np.uint64(e["ts_other"])
            _frib(ev, e)


def write_v2(path, events):
    with h5py.File(path, "w") as f:
        g = _events_group(f, events, "libattpc_merger:2.0")
        for e in events:
            ev = g.create_group(f"event_{e['n']}")
            get = ev.create_group("get")
            get.attrs["id"] = np.uint32(e["id"])
            get.attrs["timestamp"] = np.uint64(e["ts"])
            get.attrs["timestamp_other"] = np.uint64(e["ts_other"])
            get.create_dataset("pads", data=e["traces"])
            for name in ("si_upstream_front", "si_upstream_back", "si_downstream_front", "si_downstream_back"):
                rows = np.zeros((1 if name == "si_upstream_front" else 0, 517), np.int16)
                rows[:, 5:] = e["n"]
                get.create_dataset(name, data=rows)
            if e["n"] % 2 == 0:  # FRIB data only on some events
                _frib(ev, e)


WRITERS = {"legacy": write_legacy, "1.0": write_v1, "2.0": write_v2}


def run(tmp_path, file, extra=""):
    text = f'[source]\nkind = "hdf5"\npath = "{file}"\n{extra}\n[engine]\nworkers = 0\n'
    pipeline = load_pipeline(tmp_path / "replay.toml", text=text)
    seen = []
    summary = run_pipeline(pipeline, handle_signals=False, on_event=seen.append)
    return summary, seen


@pytest.mark.parametrize("layout", ["legacy", "1.0", "2.0"])
def test_every_layout_every_event(tmp_path, layout):
    events = make_events()
    file = tmp_path / "run_0017.h5"
    WRITERS[layout](file, events)
    summary, seen = run(tmp_path, file)
    assert summary.error is None
    assert len(seen) == N_EVENTS  # max_event included
    for ev, e in zip(seen, events):
        assert ev.id == e["id"] and ev.run == 17
        assert (ev.timestamp, ev.timestamp_other) == (e["ts"], e["ts_other"])
        assert ev.traces.dtype == np.int16 and np.array_equal(ev.traces, e["traces"])
        if layout != "2.0" or e["n"] % 2 == 0:
            assert ev.artifacts["frib"]["977"].tolist() == [e["n"] + 1]
            assert np.array_equal(ev.artifacts["frib"]["1903"], e["frib"]["1903"])
        else:
            assert "frib" not in ev.artifacts
        if layout == "2.0":
            si = ev.artifacts["silicon"]
            assert set(si) == {"si_upstream_front", "si_upstream_back", "si_downstream_front", "si_downstream_back"}
            assert si["si_upstream_front"].shape == (1, 517) and (si["si_upstream_front"][0, 5:] == e["n"]).all()
            assert si["si_downstream_back"].shape == (0, 517)
        else:
            assert "silicon" not in ev.artifacts
    assert summary.source_counters["events"] == N_EVENTS


@pytest.mark.parametrize("layout", ["legacy", "1.0", "2.0"])
def test_event_range_and_total(tmp_path, layout):
    from conduit.sources.hdf5 import Hdf5Params, Hdf5Source
    from conduit.stage import StageContext

    events = make_events(1)
    file = tmp_path / "run_0003.h5"
    WRITERS[layout](file, events)
    src = Hdf5Source(Hdf5Params(path=file), StageContext())
    assert src.total() == N_EVENTS and src.run_number() == 3
    src = Hdf5Source(Hdf5Params(path=file, first_event=2, last_event=50), StageContext())
    assert src.total() == N_EVENTS - 2
    summary, seen = run(tmp_path, file, "first_event = 2\nlast_event = 4\n")
    assert [ev.id for ev in seen] == [e["id"] for e in events[2:5]]


def test_gaps_are_counted(tmp_path):
    events = make_events(2)
    file = tmp_path / "run_0001.h5"
    write_v1(file, events, skip={1, 3})
    summary, seen = run(tmp_path, file)
    assert [e.id for e in seen] == [events[i]["id"] for i in (0, 2, 4, 5)]
    assert summary.source_counters["missing_events"] == 2


def test_version_string_of_merger_0_2_0_and_probe(tmp_path):
    events = make_events(3)
    file = tmp_path / "old.h5"
    write_v1(file, events)
    with h5py.File(file, "a") as f:
        f["events"].attrs.create("version", "libattpc_merger:0.2.0", dtype=STR)
    _, seen = run(tmp_path, file)
    assert len(seen) == N_EVENTS
    with h5py.File(file, "a") as f:
        f["events"].attrs.create("version", "something-else", dtype=STR)
    _, seen = run(tmp_path, file)  # detected from the first event's structure
    assert len(seen) == N_EVENTS


def test_unknown_layout_and_corrupt_files(tmp_path, caplog):
    unknown = tmp_path / "unknown.h5"
    with h5py.File(unknown, "w") as f:
        f.create_group("stuff")
    summary, seen = run(tmp_path, unknown)
    assert seen == [] and f"{unknown}: unknown HDF5 layout" in summary.error and "\n" not in summary.error

    corrupt = tmp_path / "corrupt.h5"
    corrupt.write_bytes(b"fake test data, not HDF5" * 10)
    summary, _ = run(tmp_path, corrupt)
    assert f"{corrupt}: cannot open as HDF5" in summary.error and "\n" not in summary.error

    summary, _ = run(tmp_path, tmp_path / "absent.h5")
    assert f"{tmp_path / 'absent.h5'}: no such file" in summary.error

    bad_shape = tmp_path / "bad_shape.h5"
    events = make_events(4)
    write_v1(bad_shape, events)
    with h5py.File(bad_shape, "a") as f:
        del f["events/event_3/get_traces"]
        f["events/event_3"].create_dataset("get_traces", data=np.zeros((2, 10), np.int16))
    with caplog.at_level(logging.ERROR):
        summary, seen = run(tmp_path, bad_shape)
    assert [e.id for e in seen] == [events[i]["id"] for i in (0, 1, 2, 4, 5)]  # the others are delivered
    assert summary.error is None and summary.source_counters["bad_events"] == 1
    assert f"{bad_shape}: event 3: traces have shape (2, 10), expected (n, 517)" in caplog.text


def test_bad_range_parameters(tmp_path):
    with pytest.raises(Exception, match="last_event: must be ≥ first_event"):
        load_pipeline(tmp_path / "p.toml", text='[source]\nkind = "hdf5"\npath = "x.h5"\nfirst_event = 5\nlast_event = 2\n')
