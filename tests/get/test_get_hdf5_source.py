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


# -- inputs that lie about themselves ------------------------------------------------------------------


def _set_range(file, layout, first, last):
    with h5py.File(file, "a") as f:
        if layout == "legacy":
            meta = f["meta/meta"][...]
            meta[0], meta[2] = first, last
            f["meta/meta"][...] = meta
        else:
            f["events"].attrs["min_event"], f["events"].attrs["max_event"] = np.uint64(first), np.uint64(last)


@pytest.mark.parametrize("layout", ["legacy", "1.0", "2.0"])
def test_a_corrupt_max_event_reads_the_events_present_and_warns(tmp_path, layout, caplog):
    """max_event = 10^9 with 6 events: the 6 are read (no 10^9 lookups) and one warning says so."""
    events = make_events(5)
    file = tmp_path / "run_0004.h5"
    WRITERS[layout](file, events)
    _set_range(file, layout, 0, 10**9)
    from conduit.sources.hdf5 import Hdf5Params, Hdf5Source
    from conduit.stage import StageContext

    assert Hdf5Source(Hdf5Params(path=file), StageContext()).total() == N_EVENTS
    with caplog.at_level(logging.WARNING):
        summary, seen = run(tmp_path, file)
    assert summary.exit_code == 0 and [e.id for e in seen] == [e["id"] for e in events]
    assert summary.source_counters["events"] == N_EVENTS and summary.source_counters["missing_events"] == 0
    where = "/meta/meta" if layout == "legacy" else "/events min_event/max_event"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [f"{file}: {where} say events 0..1000000000 but the file holds 6 events, 0..5; reading the "
                        "events it holds"]


def test_events_outside_the_attribute_range_are_read_too(tmp_path, caplog):
    events = make_events(6)
    file = tmp_path / "run_0005.h5"
    write_v1(file, events)
    _set_range(file, "1.0", 2, 3)
    with caplog.at_level(logging.WARNING):
        summary, seen = run(tmp_path, file)
    assert [e.id for e in seen] == [e["id"] for e in events]
    assert f"{file}: /events min_event/max_event say events 2..3 but the file holds 6 events, 0..5" in caplog.text
    summary, seen = run(tmp_path, file, "first_event = 1\nlast_event = 4\n")  # the selection cuts what is present
    assert [e.id for e in seen] == [e["id"] for e in events[1:5]]


@pytest.mark.parametrize("layout", ["legacy", "1.0"])
def test_min_event_above_max_event_is_an_error(tmp_path, layout):
    events = make_events(7)
    file = tmp_path / "run_0006.h5"
    WRITERS[layout](file, events)
    _set_range(file, layout, 5, 2)
    summary, seen = run(tmp_path, file)
    assert summary.exit_code == 1 and seen == [] and not summary.started
    what = "/meta/meta first event 5 > last event 2" if layout == "legacy" else \
        "/events attributes min_event 5 > max_event 2"
    assert summary.error == f"source 'hdf5': {file}: {what}"


def _retype(file, n, values):
    with h5py.File(file, "a") as f:
        del f[f"events/event_{n}/get_traces"]
        d = f[f"events/event_{n}"].create_dataset("get_traces", data=values)
        d.attrs["id"] = np.uint32(n)


def test_trace_dtypes_are_converted_only_when_lossless(tmp_path, caplog):
    events = make_events(8)
    file = tmp_path / "run_0007.h5"
    write_v1(file, events)
    fits = events[0]["traces"].astype(np.int32)
    _retype(file, 0, fits)  # int32 that fits int16: converted
    wraps = events[1]["traces"].astype(np.int32)
    wraps[0, 7] = 70000  # would wrap to 4464
    _retype(file, 1, wraps)
    _retype(file, 2, events[2]["traces"].astype(np.float64))  # integral floats: converted
    fractional = events[3]["traces"].astype(np.float32)
    fractional[0, 9] = 100.5
    _retype(file, 3, fractional)
    big = events[4]["traces"].astype(np.uint16)
    big[0, 6] = 40000
    _retype(file, 4, big)
    with caplog.at_level(logging.ERROR):
        summary, seen = run(tmp_path, file)
    assert summary.exit_code == 0
    assert [e.id for e in seen] == [0, 2, events[5]["id"]]
    assert all(ev.traces.dtype == np.int16 for ev in seen)
    np.testing.assert_array_equal(seen[0].traces, events[0]["traces"])
    np.testing.assert_array_equal(seen[1].traces, events[2]["traces"])
    assert summary.source_counters["bad_events"] == 3
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == [
        f"{file}: event 1: traces are int32 with values 0..70000, outside int16 (-32768..32767); not converted",
        f"{file}: event 3: traces are float32 with fractional values, expected int16; not converted",
        f"{file}: event 4: traces are uint16 with values 0..40000, outside int16 (-32768..32767); not converted",
    ]


def test_unreadable_events_are_logged_ten_times_then_counted(tmp_path, caplog):
    rng = np.random.default_rng(3)
    file = tmp_path / "run_0008.h5"
    with h5py.File(file, "w") as f:
        g = f.create_group("events")
        g.attrs["min_event"], g.attrs["max_event"] = np.uint64(0), np.uint64(24)
        g.attrs.create("version", "libattpc_merger:1.0", dtype=STR)
        for n in range(25):
            bad = n % 5 != 0  # 20 bad, 5 good
            data = np.full((2, 517), 1 << 20, np.int64) if bad else rng.integers(0, 4096, (2, 517)).astype(np.int16)
            g.create_group(f"event_{n}").create_dataset("get_traces", data=data).attrs["id"] = np.uint32(n)
    with caplog.at_level(logging.ERROR):
        summary, seen = run(tmp_path, file)
    assert [e.id for e in seen] == [0, 5, 10, 15, 20]
    assert summary.source_counters["bad_events"] == 20
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 11 and all("outside int16" in e for e in errors[:10])
    assert errors[10] == f"{file}: further unreadable events are counted (bad_events in the summary), not logged"
