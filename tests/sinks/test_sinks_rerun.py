"""The rerun sink: recordings read back with rerun's own reader; throttling, run panels, log, modes."""

from __future__ import annotations

import logging
import math
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conduit.config.pipeline import load_pipeline
from conduit.engine.metrics import MetricsSnapshot
from conduit.engine.runner import run_pipeline
from conduit.stage import StageContext
from conduit_stages.histogram.sink import HistogramSink
from conduit_stages.histogram.spec import HistogramParams
from conduit_stages.rerun_sink import geometry
from conduit_stages.rerun_sink.colors import BACKGROUND, RAMP
from conduit_stages.rerun_sink.params import RerunParams
from conduit_stages.rerun_sink.server import rerun_executable
from conduit_stages.rerun_sink.sink import RerunSink, viewer_listening

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import conduit_sinkkit as kit  # noqa: E402
from rrd_read import blueprints, event_rows, image_of, latest_state, read_rrd, texts  # noqa: E402

VENV_BIN = Path(sys.executable).parent


class FakeClock:
    """Stands in for the sink module's ``time`` so that throttling is deterministic."""

    def __init__(self):
        self.now = 1000.0

    def monotonic(self):
        return self.now


@pytest.fixture
def clock(monkeypatch):
    import conduit_stages.rerun_sink.sink as sink_module

    fake = FakeClock()
    monkeypatch.setattr(sink_module, "time", fake)
    return fake


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_sinks(tmp_path, live=True, hist=None, **params):
    ctx = StageContext(run=3, base_dir=tmp_path, live=live)
    histograms = HistogramSink(hist or HistogramParams(save=False), ctx)
    histograms.open()
    sink = RerunSink(RerunParams.from_mapping({"mode": "save", **params}), ctx)
    sink.open()
    histograms.begin()
    sink.begin()
    return histograms, sink


def feed(hist, sink, clock, ids, dt=1 / 64, analysed=True):
    for i in ids:
        ev = kit.make_event(i, analysed=analysed)
        hist.consume(ev)
        sink.consume(ev)
        clock.now += dt


def snapshot(**fields) -> MetricsSnapshot:
    values = dict(elapsed=12.5, received=100, analysed=90, skipped=10, failed=0, delivered=100, complete=90,
                  incomplete=10, dropped=0, in_flight=1, queue_depth=0, received_rate=123.0, analysed_rate=110.0,
                  skipped_rate=13.0, byte_rates={"cobo0": 1.5e6, "cobo3": 2.0e6}, source_status={}, total=None)
    values.update(fields)
    return MetricsSnapshot(**values)


def test_live_view_draws_at_most_the_display_rate_and_marks_every_other_event(tmp_path, clock):
    hist, sink = make_sinks(tmp_path, max_display_rate=4.0, histogram_interval=0.5)
    feed(hist, sink, clock, range(100))  # 64 events/s (exact binary fractions), at most 4 drawn per second
    sink.close()
    rows = read_rrd(tmp_path / "out" / "run_0003.rrd")

    # One point cloud per drawn event, exactly the throttled ones: every 0.25 s = 16 events.
    clouds = rows["/event/cloud"]
    assert [r["event"] for r in clouds] == [0, 16, 32, 48, 64, 80, 96] and sink.displayed == 7
    for r in clouds:
        ev = kit.make_event(r["event"])
        np.testing.assert_allclose(np.array(r["Points3D:positions"]), ev.artifacts["cloud"][:, :3], rtol=1e-6)
        noise = ev.artifacts["clusters"].labels < 0  # noise points grey and smaller, the others by amplitude
        colors = np.array(r["Points3D:colors"], dtype=np.uint64)
        assert np.all(colors[noise] == colors[noise][0]) and len(set(colors[~noise].tolist())) > 3
        assert np.all(np.array(r["Points3D:radii"])[noise] > np.array(r["Points3D:radii"])[~noise][0])
        assert r["daq_time"] == round(ev.timestamp / 100e6 * 1e9)  # ns on the daq_time timeline
    # A drawn event has its header and track table; the first event not drawn after it leaves one marker that
    # holds (latest-at) until the next drawn event: every per-event panel's caption says which event it shows,
    # so stepping to event 5 shows event 0 *labelled* as event 0, never as if it were event 5.
    headers = {r["event"]: r["TextDocument:text"][0] for r in event_rows(rows, "/event/summary")}
    assert sorted(headers) == sorted([0, 16, 32, 48, 64, 80, 96] + [1, 17, 33, 49, 65, 81, 97])
    for i in (0, 16, 96):
        assert headers[i].startswith(f"**Run 3 · event {i}**") and "| #0 |" in headers[i]
    for i in (1, 17, 97):
        assert headers[i].startswith(f"**Run 3 · events from {i} on**")
        assert f"Not drawn: drawing is limited to 4 events/s on a live view; the panels show event {i - 1}." \
            in headers[i]
    # The 3-D caption is the first label of its entity (the track numbers follow); a 2-D panel's caption is the
    # last label of its texts' entity.
    for entity in ("/event/caption", "/event/pads/frame", "/event/traces/plot"):
        at = 0 if entity == "/event/caption" else -1
        captions = {r["event"]: (r.get("Points3D:labels") or r.get("Points2D:labels"))[at]
                    for r in event_rows(rows, entity)}
        assert sorted(captions) == sorted(headers), entity
        for i in captions:
            state = latest_state(rows, entity, i)
            kind = "Points3D" if entity == "/event/caption" else "Points2D"
            assert len(state[f"{kind}:labels"]) == len(state[f"{kind}:positions"]), (entity, i)
            if i % 16:  # not drawn: the panel shows event i - 1 as it was, only its caption changed
                before = latest_state(rows, entity, i - 1)
                others = slice(1, None) if at == 0 else slice(None, -1)
                assert state[f"{kind}:labels"][others] == before[f"{kind}:labels"][others], (entity, i)
                assert {k: v for k, v in state.items() if not k.endswith("labels") and k != "event"} == \
                    {k: v for k, v in before.items() if not k.endswith("labels") and k != "event"}, (entity, i)
        for i, text in captions.items():
            tracks = 1 + i % 3
            seconds = (1_000_000 + 12_345 * i) / 100e6  # sinkkit's GET timestamp, 100 MHz ticks
            expected = (f"run 3 · event {i} · t = {seconds:.6f} s · {tracks} track{'s' if tracks != 1 else ''}"
                        if i % 16 == 0
                        else f"events from {i} not drawn · showing event {i - 1}")
            assert text == expected, (entity, i, text)
    clears = sorted(r["event"] for r in event_rows(rows, "/event") if r.get("Clear:is_recursive") == [True])
    # A drawn event replaces every entity the previous one drew (each of these events has a cloud, clusters and
    # tracks): no clear is needed (test_sinks_view_cost checks the events that need one).
    assert clears == []
    # Clusters coloured through the annotation context: class 0 = noise, k + 1 = cluster k.
    annotation = [r for r in rows["/event"] if r["_static"]][0]["AnnotationContext:context"]
    assert annotation[0][0]["class_description"]["info"]["label"] == "noise"
    for r in rows["/event/clusters"]:
        labels = kit.make_event(r["event"]).artifacts["clusters"].labels
        assert r["Points3D:class_ids"] == [0 if lab < 0 else lab + 1 for lab in labels]
    # One helix per estimate starting at its vertex; vertex markers without labels (in the same entity as the
    # helices, Points3D beside LineStrips3D); "#k" at each helix end.
    for r in rows["/event/tracks"]:
        est = kit.make_event(r["event"]).artifacts["estimates"]
        strips = r["LineStrips3D:strips"]
        assert len(strips) == len(est) and r["LineStrips3D:class_ids"] == [int(c) + 1 for c in est["cluster_label"]]
        for strip, row in zip(strips, est):
            np.testing.assert_allclose(strip[0], [row["vertex_x"], row["vertex_y"], row["vertex_z"]], atol=1e-3)
        shown = latest_state(rows, "/event/tracks", r["event"])
        np.testing.assert_allclose(np.array(r["Points3D:positions"]),
                                   np.column_stack([est["vertex_x"], est["vertex_y"], est["vertex_z"]]), atol=1e-3)
        assert shown["Points3D:class_ids"] == shown["LineStrips3D:class_ids"] == r["LineStrips3D:class_ids"]
        assert shown["Points3D:radii"] == [-4.0] and shown["Points3D:show_labels"] == [False]
        assert shown["LineStrips3D:radii"] == [-1.5] and "Points3D:labels" not in shown
    # The track numbers follow the 3-D caption in its entity, at the helices' ends, in their clusters' colours
    # (the annotation context's: what their class ids gave them when they were an entity of their own).
    infos = {entry["class_description"]["info"]["id"]: entry["class_description"]["info"]["color"]
             for entry in annotation[0]}
    for r in event_rows(rows, "/event/caption"):
        if r["event"] % 16:
            continue
        est = kit.make_event(r["event"]).artifacts["estimates"]
        assert r["Points3D:labels"][1:] == [f"#{k}" for k in range(len(est))]
        tracks = [t for t in rows["/event/tracks"] if t["event"] == r["event"]][0]
        ends = [strip[-1] for strip in tracks["LineStrips3D:strips"]]
        np.testing.assert_allclose(np.array(r["Points3D:positions"])[1:], ends, atol=1e-4)
        shown = latest_state(rows, "/event/caption", r["event"])
        assert shown["Points3D:colors"][1:] == [infos[int(c) + 1] for c in est["cluster_label"]]
        assert shown["Points3D:colors"][0] == 0xE6E6E6FF and shown["Points3D:radii"] == [-0.5]
    # Hit pads: one marker per trace row, in the pad-plane panel's frame (y up: drawn at -y).
    pads = sink.context.pads
    for r in rows["/event/pads/hits"]:
        traces = kit.make_traces(r["event"])
        np.testing.assert_allclose(np.array(r["Points2D:positions"]),
                                   np.column_stack([pads.x[traces[:, 4]], -pads.y[traces[:, 4]]]), atol=1e-4)
    assert rows["/padplane/outline"][0]["_static"] and len(rows["/padplane/outline"][0]["LineStrips2D:strips"]) == 10240
    assert blueprints(tmp_path / "out" / "run_0003.rrd")  # the default layout travels with the recording


def test_traces_are_the_strongest_unsaturated_pads_with_axes(tmp_path, clock):
    hist, sink = make_sinks(tmp_path, max_display_rate=1000.0, trace_count=3)
    event = kit.make_event(7)
    event.traces[-1, 5 + 100] = geometry.SATURATION_ADC  # the strongest row is now saturated
    sink.consume(event)
    sink.close()
    rows = read_rrd(tmp_path / "out" / "run_0003.rrd")
    legend = texts(rows, "/event/traces")
    pads = event.traces[:, 4]
    # make_traces: the pulse grows with the row; the last row is saturated, so rows -2, -3, -4 are drawn.
    for pad in pads[-4:-1]:
        assert any(t.startswith(f"pad {pad} ") for t in legend), (pad, legend)
    assert not any(t.startswith(f"pad {pads[-1]} ") for t in legend)
    assert "1 saturated not shown" in legend and "time bucket (TB)" in legend and "ADC (raw samples)" in legend
    lines = [r for r in rows["/event/traces/plot"] if r.get("LineStrips2D:strips")]
    widest = max(lines, key=lambda r: max(len(s) for s in r["LineStrips2D:strips"]))
    strips = [np.array(s) for s in widest["LineStrips2D:strips"] if len(s) == 512]
    assert len(strips) == 3  # one 512-sample line per drawn trace
    for strip in strips:  # y up: the pulse peak is the smallest view y of the line
        assert np.argmin(strip[:, 1]) == np.argmax(np.abs(strip[:, 1] - np.median(strip[:, 1])))


def test_traces_of_a_pad_list_and_of_the_largest_cluster():
    event = kit.make_event(4)
    traces = event.traces
    _, amplitude = geometry.pad_charges(traces)
    rows, note = geometry.select_traces(traces, amplitude, [int(traces[2, 4]), 99999, int(traces[0, 4])], 8)
    assert rows.tolist() == [2, 0] and note[1] == "no trace: 99999"
    cloud, labels = event.artifacts["cloud"], event.artifacts["clusters"].labels
    cloud = cloud.copy()
    cloud[labels == 1, 5] = traces[:5, 4][np.arange((labels == 1).sum()) % 5]  # cluster 1 sits on rows 0-4
    labels = labels.copy()
    labels[labels == 0] = 1  # and is the largest
    rows, note = geometry.select_traces(traces, amplitude, "cluster", 3, cloud, labels)
    assert set(rows.tolist()) <= {0, 1, 2, 3, 4} and len(rows) == 3 and note[0] == "largest cluster (1)"
    assert rows.tolist() == sorted(rows.tolist(), key=lambda r: -amplitude[r])


def test_unanalysed_events_are_drawn_only_when_no_analysed_event_comes(tmp_path, clock):
    hist, sink = make_sinks(tmp_path, max_display_rate=4.0)
    feed(hist, sink, clock, range(100), analysed=False)
    sink.close()
    rows = read_rrd(tmp_path / "out" / "run_0003.rrd")
    assert "/event/cloud" not in rows
    drawn = sorted({r["event"] for r in event_rows(rows, "/event/summary")
                    if "Not drawn" not in r["TextDocument:text"][0]})
    assert drawn == [0, 32, 64, 96] and sink.displayed == 4  # every 2 periods
    assert hist.hset["pid"].entries == 0  # skipped events never reach the physics histograms


def test_a_recorded_file_source_draws_every_event_and_refreshes_by_event_count(tmp_path, clock):
    hist, sink = make_sinks(tmp_path, live=False, max_display_rate=4.0, refresh_events=25)
    feed(hist, sink, clock, range(60), dt=0.001)
    sink.close()
    rows = read_rrd(tmp_path / "out" / "run_0003.rrd")
    assert sorted(r["event"] for r in rows["/event/cloud"]) == list(range(60)) and sink.displayed == 60
    steps = sorted({r["event"] for r in event_rows(rows, "/histograms/polar/steps")})
    assert steps == [0, 1, 4, 9, 19, 24, 49, 59]  # events 1, 2, 5, 10, 20, 25, 50 and the end, on any machine


def test_events_that_never_reached_the_view_leave_a_marker(tmp_path, clock):
    hist, sink = make_sinks(tmp_path, live=False)
    for i in (10, 11, 15, 16):
        sink.consume(kit.make_event(i))
    sink.close()
    live_hist, live = make_sinks(tmp_path / "live", max_display_rate=1.0)
    for i in (20, 21, 25, 26):  # drawn, not drawn (a marker), a gap (already covered: no second marker), ...
        live.consume(kit.make_event(i))
        clock.now += 0.1
    live.close()
    live_rows = read_rrd(tmp_path / "live" / "out" / "run_0003.rrd")
    assert sorted(r["event"] for r in event_rows(live_rows, "/event/summary")) == [20, 21]
    rows = read_rrd(tmp_path / "out" / "run_0003.rrd")
    headers = {r["event"]: r["TextDocument:text"][0] for r in event_rows(rows, "/event/summary")}
    assert sorted(headers) == [10, 11, 12, 15, 16]
    assert headers[12].startswith("**Run 3 · events 12 to 14**") and "Not received by the view" in headers[12]
    assert "the panels show event 11." in headers[12]
    caption = [r for r in event_rows(rows, "/event/caption") if r["event"] == 12][0]["Points3D:labels"]
    assert caption == ["events 12 to 14 not received · showing event 11"] + [f"#{k}" for k in range(1 + 11 % 3)]


def test_histograms_are_titled_plots_with_colour_scales_and_gates(tmp_path, clock):
    params = HistogramParams.from_mapping({
        "save": False,
        "gates": [{"name": "protons", "histogram": "pid", "polygon": [[0.1, 2.0], [1.0, 2.0], [1.0, 12.0]]}],
    })
    hist, sink = make_sinks(tmp_path, hist=params, max_display_rate=4.0, histogram_interval=0.5)
    feed(hist, sink, clock, range(200))
    sink.close()
    rows = read_rrd(tmp_path / "out" / "run_0003.rrd")
    hset = hist.hset
    for name, h in hset.histograms.items():
        labels = texts(rows, f"/histograms/{name}")
        assert h.x.label in labels, (name, labels)
        if h.y is None:
            assert any(t.startswith(("tracks / ", "events / ")) for t in labels)
            steps = np.array(rows[f"/histograms/{name}/steps"][-1]["LineStrips2D:strips"][0])
            assert len(steps) == 2 * len(h.x.edges[::1]) or len(steps) > 2
        else:
            assert h.y.label in labels and "tracks/bin" in labels
            image = image_of(rows, f"/histograms/{name}/heatmap")
            assert image.ndim == 3 and image.shape[2] == 3
    # The gate is drawn on the histogram it was defined on, labelled.
    assert "protons" in texts(rows, "/histograms/pid")
    gate = np.array(rows["/histograms/pid/gate/0"][-1]["LineStrips2D:strips"][0])
    assert len(gate) == 4 and np.allclose(gate[0], gate[-1])
    assert "protons" not in texts(rows, "/histograms/kinematics")


def test_every_2d_histogram_has_a_non_degenerate_colour_mapping(tmp_path, clock):
    """The images read back: empty bins are background, filled bins are on the ramp, in count order."""
    from conduit_stages.rerun_sink.display import for_display
    from conduit_stages.rerun_sink.colors import ColorScale

    hist, sink = make_sinks(tmp_path, max_display_rate=4.0)
    rng = np.random.default_rng(13)
    for i in range(400):  # peaked distributions: counts from 1 to tens per bin
        ev = kit.make_event(i)
        est = ev.artifacts["estimates"]
        n = len(est)
        est["brho"] = rng.normal(0.6, 0.1, n)
        est["sqrt_dEdx"] = rng.normal(40.0, 8.0, n)
        est["polar"] = np.radians(rng.normal(60.0, 15.0, n))
        est["vertex_x"], est["vertex_y"] = rng.normal(0.0, 3.0, n), rng.normal(0.0, 3.0, n)
        hist.consume(ev)
        sink.consume(ev)
        clock.now += 1 / 64
    sink.close()
    rows = read_rrd(tmp_path / "out" / "run_0003.rrd")
    checked = 0
    for name, h in hist.hset.histograms.items():
        if h.y is None:
            continue
        image = image_of(rows, f"/histograms/{name}/heatmap").reshape(-1, 3)
        shown = for_display(h.counts, h.x.edges, h.y.edges, h.entries)
        counts = shown.counts.T[::-1].reshape(-1)  # rows = y from high to low, as drawn
        assert image.shape[0] == counts.size
        empty = counts == 0
        assert np.all(image[empty] == BACKGROUND) and not np.any(np.all(image[~empty] == BACKGROUND, axis=1))
        distinct_counts = np.unique(counts[~empty])
        assert len(distinct_counts) >= 3, name  # the test data fill several levels
        colours = {tuple(image[counts == c][0]) for c in distinct_counts}
        assert len(colours) == len(distinct_counts), name  # different counts, different colours
        scale = ColorScale(1.0, max(float(counts.max()), 2.0), log=True)
        np.testing.assert_array_equal(image[~empty], scale.colors(counts[~empty]))
        # The colour bar covers 1 .. the largest count, its lowest colour is the ramp's clear blue.
        bar = image_of(rows, f"/histograms/{name}/colorbar/image").reshape(-1, 3)
        assert tuple(bar[-1]) == tuple(np.round(RAMP[0]).astype(int)) and tuple(bar[0]) == tuple(RAMP[-1].astype(int))
        ticks = rows[f"/histograms/{name}/colorbar/labels"][-1]["Points2D:labels"]
        assert ticks[0] == "1" and 2 <= len(ticks) and float(ticks[-1]) <= counts.max()
        assert texts(rows, f"/histograms/{name}/colorbar/title") == ["tracks/bin"]
        checked += 1
    assert checked == 3  # pid, kinematics, beam_spot


def test_rates_against_wall_clock_time_log_and_end_of_run_summary(tmp_path, clock):
    logging.getLogger("conduit").setLevel(logging.INFO)
    try:
        _, sink = make_sinks(tmp_path)
        sink.consume(kit.make_event(0))
        for k in range(1, 4):
            sink.on_metrics(snapshot(elapsed=float(k), received=10 * k, complete=9 * k, incomplete=k,
                                     received_rate=10.0 * k))
            clock.now += 1.0
        for i in range(20):  # a flood of one warning: 5 pass, the rest are counted
            logging.getLogger("conduit.stage.test").warning("event %d: beam off", i)
        logging.getLogger("conduit.stage.test").error("disk full on %s", "/data")
        sink.on_metrics(snapshot(elapsed=4.0, received=40, complete=36, incomplete=4, final=True,
                                 source_counters={"frames": 160, "bad_frames": 2},
                                 stages={"estimate": {"counts": {"too_few_points": 3, "direction_none": 5}}}))
        sink.close()
    finally:
        logging.getLogger("conduit").setLevel(logging.NOTSET)
    rows = read_rrd(tmp_path / "out" / "run_0003.rrd")
    labels = texts(rows, "/rates")
    assert {"events/s", "complete events (fraction)", "data received (MB/s)", "received", "analysed",
            "skipped"} <= set(labels)
    assert any(t.startswith("wall-clock time since start (s)") for t in labels)
    final = rows["/rates/events/received"][-1]["LineStrips2D:strips"][0]
    assert len(final) == 4  # one point per snapshot, against time
    fraction = rows["/rates/complete/line"][-1]["LineStrips2D:strips"][0]
    assert len(fraction) == 4 and all(p[1] >= rows_top(rows) for p in fraction)
    logs = [(r["TextLog:level"][0], r["TextLog:text"][0]) for r in rows["/log"]]
    warnings = [t for level, t in logs if level == "WARN"]
    assert warnings[:5] == [f"conduit.stage.test: event {i}: beam off" for i in range(5)]
    assert any("15 more like \"event %d: beam off\"" in t for t in warnings)
    assert ("ERROR", "conduit.stage.test: disk full on /data") in logs
    summary = [t for _, t in logs if "end of run 3" in t]
    assert summary and "40 events received (36 complete, 4 incomplete)" in summary[0] and "bad frames 2" in summary[0]
    assert summary[0].endswith("; counted by stages: estimate: direction_none 5, too_few_points 3")


def rows_top(rows) -> float:
    """View y of the top edge of the complete-fraction frame (fraction 1.0)."""
    box = np.array(rows["/rates/axes1/box"][-1]["LineStrips2D:strips"][0])
    return float(box[:, 1].min()) - 1e-3


def test_connect_sends_nothing_until_a_viewer_listens_then_connects(tmp_path, clock):
    port = free_port()
    url = f"rerun+http://127.0.0.1:{port}/proxy"
    ctx = StageContext(run=3, base_dir=tmp_path, live=True)
    sink = RerunSink(RerunParams(mode="connect", url=url, reconnect_interval=1.0, max_display_rate=50.0), ctx)
    sink.open()
    sink.begin()
    assert sink.streams == [] and not sink.grpc_connected  # nothing is buffered for an absent viewer
    for i in range(10):
        sink.consume(kit.make_event(i))
        clock.now += 0.05
    assert sink.streams == []
    saved = tmp_path / "viewer.rrd"
    viewer = subprocess.Popen([rerun_executable(), "--serve-grpc", "--bind", "127.0.0.1", "--port", str(port),
                               "--save", str(saved)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        for _ in range(200):
            if viewer_listening(url):
                break
            time.sleep(0.05)
        assert viewer_listening(url), "rerun --serve-grpc did not start"
        clock.now += 1.0  # the next check for a viewer is due
        for i in range(10, 20):
            sink.consume(kit.make_event(i))
            clock.now += 0.05
        assert sink.grpc_connected
        sink.close()
        for _ in range(300):  # the viewer writes as it receives (slowly on a loaded machine)
            if saved.exists() and len(_rows_so_far(saved).get("/event/cloud", [])) >= 10:
                break
            time.sleep(0.1)
    finally:
        viewer.terminate()
        viewer.wait(timeout=20)
    rows = read_rrd(saved)
    assert [r["event"] for r in rows["/event/cloud"]] == list(range(10, 20))
    assert rows["/detector/chamber"][0]["_static"]  # static content replayed on connection


def _rows_so_far(path):
    """The rows of an .rrd another process is still writing: its last message may be cut short (then: none yet)."""
    try:
        return read_rrd(path)
    except Exception:  # rerun's reader: "Failed to decode frame ... exceeds file size" on a half-written message
        return {}


def test_spawn_refuses_without_a_display(tmp_path, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    sink = RerunSink(RerunParams(mode="spawn"), StageContext(run=1, base_dir=tmp_path))
    with pytest.raises(ValueError, match="needs a display"):
        sink.open()


def test_pipeline_run_in_save_mode(sinkkit, write_pipeline, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="conduit")
    path = write_pipeline("""
        [source]
        kind = "sinkkit"
        events = 40

        [engine]
        workers = 0

        [[stage]]
        use = "sinkkit.analyse"

        [[stage]]
        use = "histogram"
        save = false

        [[stage]]
        use = "rerun"
        mode = "save"
        path = "view_{run}.rrd"
        """)
    summary = run_pipeline(load_pipeline(path), handle_signals=False)
    assert summary.exit_code == 0, summary.error
    assert summary.outputs == [str(tmp_path / "view_3.rrd")]
    rows = read_rrd(tmp_path / "view_3.rrd")
    drawn = [r["event"] for r in rows["/event/cloud"]]
    assert drawn == list(range(40))  # a file source saved to .rrd: every event, whatever the display rate
    assert "rerun: 40 events drawn of 40 received" in caplog.text
    hover = rows["/histograms/cluster_multiplicity/steps_values"][-1]["Points2D:labels"]
    assert hover == ["clusters per event 0.5 to 1.5: 14 events", "clusters per event 1.5 to 2.5: 13 events",
                     "clusters per event 2.5 to 3.5: 13 events"]  # 40 events with 1 + i % 3 clusters
    # The engine's final totals reach the log view as the end-of-run summary.
    assert any("end of run 3: 40 events received (40 complete, 0 incomplete), 40 analysed"
               in r["TextLog:text"][0] for r in rows["/log"])


SHORT = """
[source]
kind = "sinkkit"
events = 300

[engine]
workers = 0

[[stage]]
use = "sinkkit.analyse"

[[stage]]
use = "rerun"
mode = "save"
path = "rrd/run_{run:04d}.rrd"
max_display_rate = 100000
"""


def test_a_recording_cut_short_fails_the_run_and_is_not_listed(sinkkit, write_pipeline, tmp_path):
    """RLIMIT_FSIZE (1 MB, SIGXFSZ ignored) on `conduit run`: rerun's writes fail with EFBIG, like a full disk."""
    import resource
    import signal

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1_000_000, 1_000_000))

    path = write_pipeline(SHORT)
    res = subprocess.run([str(VENV_BIN / "conduit"), "run", str(path)], capture_output=True, text=True,
                         preexec_fn=limit, timeout=120)
    rrd = tmp_path / "rrd" / "run_0003.rrd"
    assert res.returncode == 1, res.stdout
    errors = [line for line in res.stdout.splitlines() if line.startswith("error:")]
    # The first write past the limit fails: the main process's file writer, or appending the draw process's part
    # (kept beside the recording then).
    assert errors in ([f"error: sink rerun: {rrd}: recording incomplete: rerun could not finish writing it: "
                       "File-writer thread shut down prematurely; what was written may still open in the viewer"],
                      [f"error: sink rerun: {rrd}: recording incomplete: could not append the events drawn apart "
                       "(run_0003.rrd.events.rrd, kept beside it): File too large; what was written may still open "
                       "in the viewer"]), errors
    if "drawn apart" in errors[0]:
        assert (tmp_path / "rrd" / "run_0003.rrd.events.rrd").stat().st_size > 0
    assert "outputs" not in res.stdout.splitlines()  # nothing to list: the only output is incomplete
    assert rrd.stat().st_size == 1_000_000  # kept (never delete data), cut at the limit
    assert rrd.read_bytes()[-16:].find(b"RRF2FOOT") < 0


def test_a_recording_keeps_no_index_of_its_chunks_and_is_read_back_whole(sinkkit, write_pipeline, tmp_path):
    """Rerun's footer is one index row per chunk written (in every timeline x component column), held in
    memory until the file closes: a live run grew by ~0.5 MB/s. The sink writes the file without one: after
    300 events every message of the file is a whole chunk or store message, there is no end message and no
    footer, and every event reads back."""
    from rerun_bindings import check_for_rrd_footer

    from conduit_stages.rerun_sink.rrdfile import ARROW_MSG, END, frames

    summary = run_pipeline(load_pipeline(write_pipeline(SHORT)), handle_signals=False)
    rrd = tmp_path / "rrd" / "run_0003.rrd"
    assert summary.exit_code == 0, summary.error
    assert summary.outputs == [str(rrd)]
    kinds, problem = frames(rrd)
    assert problem is None
    assert END not in kinds and not check_for_rrd_footer(str(rrd))  # nothing was kept per chunk for a footer
    assert kinds.count(ARROW_MSG) > 100  # hundreds of chunks (rerun batches rows): each a row of such an index
    assert [r["event"] for r in read_rrd(rrd)["/event/cloud"]] == list(range(300))


def test_a_whole_recording_is_complete_and_a_cut_or_foreign_one_is_not(tmp_path):
    """Files made from the framing rules (stream header, then 16-byte message headers and payloads), not
    only by rerun: cut in a payload, in a message header, in a footer; not a recording; an unknown kind."""
    import rerun as rr

    from conduit_stages.rerun_sink.rrdfile import RrdFile, frames

    ctx = StageContext(run=3, base_dir=tmp_path)
    sink = RerunSink(RerunParams(mode="save", max_display_rate=1000.0), ctx)
    sink.open()
    sink.begin()
    for i in range(20):
        sink.consume(kit.make_event(i))
    sink.close()
    good = tmp_path / "out" / "run_0003.rrd"
    assert sink.outputs() == [str(good)]
    data = good.read_bytes()
    kinds, problem = frames(good)
    assert problem is None and kinds[0] == 1 and END_KIND not in kinds

    def check(name: str, content: bytes) -> str | None:
        path = tmp_path / name
        path.write_bytes(content)
        return RrdFile(path, None, None)._check()

    def incomplete(name: str, why: str) -> str:
        return f"{tmp_path / name}: recording incomplete: {why}; what was written may still open in the viewer"

    assert check("whole.rrd", data) is None
    n = len(data) - 100
    assert check("cut.rrd", data[:n]) == incomplete("cut.rrd", f"{n} bytes, the last message cut short")
    last = _message_starts(data)[-1]  # a cut 5 bytes into the last message's 16-byte header
    assert check("header.rrd", data[:last + 5]) == incomplete("header.rrd", f"{last + 5} bytes, the last message "
                                                                            "cut short")
    assert check("text.rrd", b"not a recording at all") == incomplete("text.rrd", "22 bytes without a Rerun "
                                                                                  "stream header")
    odd = data + struct.pack("<QQ", 7, 4) + b"abcd"
    assert check("odd.rrd", odd) == incomplete("odd.rrd", f"{len(odd)} bytes, no Rerun message at byte "
                                                          f"{len(data)} (kind 7)")
    # A file rerun finished with its footer (its default) is whole; cut inside the footer, it is not.
    stream = rr.RecordingStream("footer-test", make_default=False)
    stream.save(str(tmp_path / "footer.rrd"))
    stream.log("points", rr.Points2D([[0.0, 1.0]]))
    stream.flush(timeout_sec=5.0)
    stream.disconnect()
    footed = (tmp_path / "footer.rrd").read_bytes()
    kinds, problem = frames(tmp_path / "footer.rrd")
    assert footed[-12:-4] == b"RRF2FOOT" and problem is None and kinds[-2:] == [2, END_KIND]
    assert check("footed.rrd", footed) is None
    assert check("footcut.rrd", footed[:-3]) == incomplete("footcut.rrd", f"{len(footed) - 3} bytes, the footer "
                                                                          "cut short")


END_KIND = 0  # rerun's end-of-stream message kind, written only before a footer


def _message_starts(data: bytes) -> list[int]:
    """Offsets of the message headers of an .rrd held in memory (12-byte stream header, then kind, length)."""
    starts, at = [], 12
    while at < len(data):
        starts.append(at)
        at += 16 + struct.unpack_from("<QQ", data, at)[1]
    return starts


def test_an_existing_recording_is_kept_and_nothing_is_written_before_begin(tmp_path, caplog):
    ctx = StageContext(run=3, base_dir=tmp_path)
    old = tmp_path / "out" / "run_0003.rrd"
    old.parent.mkdir()
    old.write_bytes(b"an earlier recording")
    never = RerunSink(RerunParams(mode="save"), ctx)
    never.open()
    never.close()  # start-up failed before begin(): the old file is untouched, no new one
    assert sorted(p.name for p in old.parent.iterdir()) == ["run_0003.rrd"] and never.outputs() == []
    caplog.set_level(logging.INFO, logger="conduit")
    sink = RerunSink(RerunParams(mode="save"), ctx)
    sink.open()
    sink.begin()
    sink.close()
    assert sorted(p.name for p in old.parent.iterdir()) == ["run_0003.1.rrd", "run_0003.rrd"]
    assert (old.parent / "run_0003.1.rrd").read_bytes() == b"an earlier recording"
    assert f"{old} already existed: kept it as run_0003.1.rrd" in caplog.text


# -- geometry ------------------------------------------------------------------------------


def test_helix_turns_with_the_field_convention_and_follows_its_slope():
    theta = math.radians(60.0)
    pts = geometry.helix((50.0, 0.0), 50.0, (0.0, 0.0, 100.0), theta, 2.85, length=1000.0, points=400)
    np.testing.assert_allclose(pts[0], [0.0, 0.0, 100.0], atol=1e-9)
    np.testing.assert_allclose(np.hypot(pts[:, 0] - 50.0, pts[:, 1]), 50.0)
    turned = np.unwrap(np.arctan2(pts[:, 1], pts[:, 0] - 50.0))
    turned = turned - turned[0]
    assert turned[-1] > 0  # positive field: counter-clockwise in the pad-plane frame (DetectorParams doc)
    np.testing.assert_allclose(pts[:, 2] - 100.0, turned * 50.0 / math.tan(theta), atol=1e-9)
    flipped = geometry.helix((50.0, 0.0), 50.0, (0.0, 0.0, 100.0), theta, -2.85, length=1000.0)
    assert flipped[5, 1] > 0 > pts[5, 1]
    backward = geometry.helix((50.0, 0.0), 50.0, (0.0, 0.0, 100.0), math.radians(150), 2.85, length=1000.0)
    assert backward[-1, 2] >= 0.0 and np.all(np.diff(backward[:, 2]) < 0)  # stops at the window, z = 0


def test_helices_lie_on_the_points_of_their_tracks():
    """sinkkit's tracks turn counter-clockwise as they go (positive field): each helix runs along its points."""
    for i in range(6):
        event = kit.make_event(i)
        est, cloud = event.artifacts["estimates"], event.artifacts["cloud"]
        labels = event.artifacts["clusters"].labels
        for k, strip in enumerate(geometry.helices(est, 2.85, 1000.0, points=2000)):
            points = cloud[labels == k, :3]
            distance = np.linalg.norm(points[:, None, :] - strip[None, :, :], axis=2).min(axis=1)
            assert np.median(distance) < 1.0, (i, k)


def test_colour_ramp_and_chamber_outline():
    rgb = geometry.colormap(np.array([0.0, 50.0, 100.0]), low=0.0, high=100.0)
    assert rgb[0].tolist() == RAMP[0].tolist() and rgb[-1].tolist() == RAMP[-1].tolist()
    assert min(RAMP[0]) >= 60 or RAMP[0][2] >= 200  # the lowest colour stays visible on a dark background
    traces = kit.make_traces(3)
    pads, amp = geometry.pad_charges(traces)
    samples = traces[:, 5:].astype(float)
    np.testing.assert_allclose(amp, samples.max(1) - np.median(samples[:, ::8], 1))
    assert pads.tolist() == traces[:, 4].tolist()
    strips = geometry.chamber_outline(1000.0)
    assert len(strips) == 11 and np.allclose(np.hypot(strips[0][:, 0], strips[0][:, 1]), 275.0)


def test_run_panels_read_back_the_same_as_through_the_sdks_archetypes(tmp_path, clock, monkeypatch):
    """Heat maps logged as their own pixels and axes made once per range leave every run-panel entity in the
    state that ``rr.Image`` / ``rr.Transform3D`` and axes rebuilt at every refresh leave: equal at every event,
    read back with rerun's reader."""
    import rerun as rr

    from conduit_stages.rerun_sink import draw, histview
    from conduit_stages.rerun_sink.plot2d import Figure, Picture, add_axes

    def sdk_parts(rr_, part):
        if not isinstance(part, Picture):
            return original(rr_, part)
        h, w = part.rgb.shape[:2]
        return [rr.Image(part.rgb, draw_order=part.draw_order),
                rr.Transform3D(translation=[part.left, part.top, 0.0], scale=[part.width / w, part.height / h, 1.0])]

    def fresh_axes(frame, grid):
        fig = Figure()
        add_axes(fig, frame, grid=grid)
        return fig.parts

    original = draw._archetypes
    recordings = {}
    for way in ("arrow", "sdk"):
        if way == "sdk":
            monkeypatch.setattr(draw, "_archetypes", sdk_parts)
            monkeypatch.setattr(histview, "_axes", fresh_axes)
        hist, sink = make_sinks(tmp_path / way, max_display_rate=4.0, histogram_interval=0.25)
        clock.now = 1000.0
        feed(hist, sink, clock, range(120))
        sink.close()
        recordings[way] = read_rrd(tmp_path / way / "out" / "run_0003.rrd")
    mine, sdk = recordings["arrow"], recordings["sdk"]
    panels = sorted(e for e in sdk if e.startswith(("/histograms/", "/occupancy")))
    assert set(e for e in mine if e.startswith(("/histograms/", "/occupancy"))) == set(panels)
    assert sum(e.endswith("/heatmap") for e in panels) == 3 and len(panels) >= 60
    refreshes = sorted({r["event"] for e in panels for r in event_rows(sdk, e)})
    assert len(refreshes) >= 6
    for entity in panels:
        for event in refreshes:
            assert latest_state(mine, entity, event) == latest_state(sdk, entity, event), (entity, event)
    # and the heat maps' format and placement went out once each, their pixels at every change
    for entity in (e for e in panels if e.endswith("/heatmap")):
        rows = event_rows(mine, entity)
        assert len(rows) >= 2 and sum(r.get("Image:format") is not None for r in rows) == 1, entity
