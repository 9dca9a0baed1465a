"""The rerun sink: recordings read back with rerun's own reader; throttling, histograms, rates, log, modes."""

from __future__ import annotations

import logging
import math
import socket
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
from conduit_stages.rerun_sink.params import RerunParams
from conduit_stages.rerun_sink.sink import RerunSink, viewer_listening

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import conduit_sinkkit as kit  # noqa: E402
from rrd_read import blueprints, read_rrd  # noqa: E402

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


def make_sinks(tmp_path, **params):
    ctx = StageContext(run=3, base_dir=tmp_path)
    hist = HistogramSink(HistogramParams(save=False), ctx)
    hist.open()
    sink = RerunSink(RerunParams.from_mapping({"mode": "save", **params}), ctx)
    sink.open()
    hist.begin()
    sink.begin()
    return hist, sink


def feed(hist, sink, clock, ids, dt=1 / 64, analysed=True):
    for i in ids:
        ev = kit.make_event(i, analysed=analysed)
        hist.consume(ev)
        sink.consume(ev)
        clock.now += dt


def test_recording_has_every_view_throttled_displays_and_histogram_values(tmp_path, clock):
    hist, sink = make_sinks(tmp_path, max_display_rate=4.0, histogram_interval=0.5)
    feed(hist, sink, clock, range(100))  # 64 events/s (exact binary fractions), at most 4 displays/s
    sink.close()
    rows = read_rrd(tmp_path / "out" / "run_0003.rrd")

    # Expected entities, static geometry included.
    for entity in ("/detector/chamber", "/event", "/event/cloud", "/event/clusters", "/event/tracks",
                   "/event/vertices", "/pads/outline", "/pads/hits", "/traces/strongest", "/histograms/pid",
                   "/histograms/kinematics", "/histograms/polar", "/histograms/vertex_z",
                   "/histograms/cluster_multiplicity"):
        assert entity in rows, entity
    assert rows["/pads/outline"][0]["_static"] and len(rows["/pads/outline"][0]["LineStrips2D:strips"]) == 10240

    # One point cloud per displayed event, exactly the throttled ones: every 0.25 s = 16 events.
    clouds = rows["/event/cloud"]
    assert [r["event"] for r in clouds] == [0, 16, 32, 48, 64, 80, 96] and sink.displayed == 7
    for r in clouds:
        ev = kit.make_event(r["event"])
        np.testing.assert_allclose(np.array(r["Points3D:positions"]), ev.artifacts["cloud"][:, :3], rtol=1e-6)
        assert r["daq_time"] == round(ev.timestamp / 100e6 * 1e9)  # ns on the daq_time timeline
    # Clusters coloured through the annotation context: class 0 = noise, k + 1 = cluster k.
    annotation = [r for r in rows["/event"] if r["_static"]][0]["AnnotationContext:context"]
    assert annotation[0][0]["class_description"]["info"]["label"] == "noise"
    for r in rows["/event/clusters"]:
        labels = kit.make_event(r["event"]).artifacts["clusters"].labels
        assert r["Points3D:class_ids"] == [0 if lab < 0 else lab + 1 for lab in labels]
    # One helix per estimate, starting at its vertex; one vertex marker per track.
    for r in rows["/event/tracks"]:
        est = kit.make_event(r["event"]).artifacts["estimates"]
        strips = r["LineStrips3D:strips"]
        assert len(strips) == len(est) and r["LineStrips3D:class_ids"] == [int(c) + 1 for c in est["cluster_label"]]
        for strip, row in zip(strips, est):
            np.testing.assert_allclose(strip[0], [row["vertex_x"], row["vertex_y"], row["vertex_z"]], atol=1e-3)
        assert "Bρ" in r["LineStrips3D:labels"][0]
    # Hit pads and the strongest traces (make_traces: the pulse grows with the row, so the last rows win).
    for r in rows["/traces/strongest"]:
        traces = kit.make_traces(r["event"])
        assert r["LineStrips2D:labels"] == [f"pad {p}" for p in traces[::-1][:8, 4]]
    hits = [r for r in rows["/pads/hits"] if "Points2D:positions" in r]
    assert [len(r["Points2D:positions"]) for r in hits] == [kit.make_traces(i).shape[0] for i in range(0, 100, 16)]

    # The histograms count every event, displayed or not: the last row equals the final state.
    hset = hist.hset
    polar = rows["/histograms/polar"][-1]
    assert polar["BarChart:values"] is not None
    values = polar["BarChart:values"][0]
    np.testing.assert_array_equal(np.array(values["buffer"]), hset["polar"].counts)
    assert sum(values["buffer"]) == sum(1 + i % 3 for i in range(100))
    pid = rows["/histograms/pid"][-1]["Tensor:data"][0]
    assert pid["shape"] == [hset["pid"].y.bins, hset["pid"].x.bins]
    np.testing.assert_array_equal(np.array(pid["buffer"]).reshape(pid["shape"]), hset["pid"].counts.T[::-1])
    assert pid["names"] == ["sqrt_dEdx (√(ADC·TB/mm))", "brho (T·m)"]
    # Refreshed every 0.5 s (events 0, 32, 64, 96) and once more at close.
    assert len(rows["/histograms/polar"]) == 5
    assert blueprints(tmp_path / "out" / "run_0003.rrd")  # the default layout travels with the recording


def test_unanalysed_events_are_drawn_only_when_no_analysed_event_comes(tmp_path, clock):
    hist, sink = make_sinks(tmp_path, max_display_rate=4.0)
    feed(hist, sink, clock, range(100), analysed=False)
    sink.close()
    rows = read_rrd(tmp_path / "out" / "run_0003.rrd")
    assert "/event/cloud" not in rows
    displayed = sorted({r["event"] for r in rows["/traces/strongest"]})
    assert displayed == [0, 32, 64, 96]  # every 2 periods
    assert hist.hset["pid"].entries == 0  # skipped events never reach the physics histograms


def test_rates_and_log_as_time_series(tmp_path, clock):
    logging.getLogger("conduit").setLevel(logging.INFO)
    try:
        _, sink = make_sinks(tmp_path)
        snap = MetricsSnapshot(elapsed=12.5, received=100, analysed=90, skipped=10, failed=0, delivered=100,
                               complete=90, incomplete=10, dropped=0, in_flight=1, queue_depth=0,
                               received_rate=123.0, analysed_rate=110.0, skipped_rate=13.0,
                               byte_rates={"cobo0": 1.5e6, "cobo3": 2.0e6}, source_status={}, total=None)
        sink.on_metrics(snap)
        logging.getLogger("conduit.stage.test").warning("beam off at %d", 42)
        sink.on_metrics(snap)
        sink.close()
    finally:
        logging.getLogger("conduit").setLevel(logging.NOTSET)
    rows = read_rrd(tmp_path / "out" / "run_0003.rrd")
    values = {e: [r["Scalars:scalars"] for r in rows[e] if not r["_static"]] for e in rows if e.startswith("/metrics/")}
    assert values["/metrics/events_per_s/received"] == [[123.0], [123.0]]
    assert values["/metrics/events_per_s/analysed"][0] == [110.0]
    assert values["/metrics/events_per_s/skipped"][0] == [13.0]
    assert values["/metrics/complete_fraction"][0] == [0.9]
    assert values["/metrics/bytes_per_s/cobo3"][0] == [2.0e6]
    assert [r["run_time"] for r in rows["/metrics/events_per_s/received"] if not r["_static"]] == [12_500_000_000] * 2
    logs = [(r["TextLog:level"], r["TextLog:text"]) for r in rows["/log"]]
    assert (["WARN"], ["conduit.stage.test: beam off at 42"]) in logs


def test_connect_sends_nothing_until_a_viewer_listens_then_connects(tmp_path, clock):
    port = free_port()
    url = f"rerun+http://127.0.0.1:{port}/proxy"
    ctx = StageContext(run=3, base_dir=tmp_path)
    sink = RerunSink(RerunParams(mode="connect", url=url, reconnect_interval=1.0, max_display_rate=50.0), ctx)
    sink.open()
    sink.begin()
    assert sink.streams == [] and not sink.grpc_connected  # nothing is buffered for an absent viewer
    for i in range(10):
        sink.consume(kit.make_event(i))
        clock.now += 0.05
    assert sink.streams == []
    saved = tmp_path / "viewer.rrd"
    viewer = subprocess.Popen([str(VENV_BIN / "rerun"), "--serve-grpc", "--bind", "127.0.0.1", "--port", str(port),
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
        for _ in range(100):  # the viewer writes as it receives
            if saved.exists() and "/event/cloud" in read_rrd(saved) and len(read_rrd(saved)["/event/cloud"]) >= 10:
                break
            time.sleep(0.1)
    finally:
        viewer.terminate()
        viewer.wait(timeout=20)
    rows = read_rrd(saved)
    assert [r["event"] for r in rows["/event/cloud"]] == list(range(10, 20))
    assert rows["/detector/chamber"][0]["_static"]  # static content replayed on connection


def test_serve_mode_binds_loopback_and_a_late_viewer_gets_the_events(tmp_path, clock):
    port = free_port()
    ctx = StageContext(run=3, base_dir=tmp_path)
    sink = RerunSink(RerunParams(mode="serve", port=port, max_display_rate=50.0), ctx)
    sink.open()
    sink.begin()
    url = f"rerun+http://127.0.0.1:{port}/proxy"
    assert sink.outputs() == [url]
    listening = subprocess.run(["ss", "-ltn"], capture_output=True, text=True).stdout
    assert f"127.0.0.1:{port} " in listening and f"0.0.0.0:{port} " not in listening
    for i in range(6):
        sink.consume(kit.make_event(i))
        clock.now += 0.05
    saved = tmp_path / "late.rrd"
    viewer = subprocess.Popen([str(VENV_BIN / "rerun"), "--connect", url, "--save", str(saved)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        for _ in range(200):
            if saved.exists() and len(read_rrd(saved).get("/event/cloud", [])) >= 6:
                break
            time.sleep(0.1)
    finally:
        sink.close()
        viewer.terminate()
        viewer.wait(timeout=20)
    assert [r["event"] for r in read_rrd(saved)["/event/cloud"]] == list(range(6))


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
        max_display_rate = 1000
        """)
    summary = run_pipeline(load_pipeline(path), handle_signals=False)
    assert summary.exit_code == 0, summary.error
    assert summary.outputs == [str(tmp_path / "view_3.rrd")]
    rows = read_rrd(tmp_path / "view_3.rrd")
    drawn = [r["event"] for r in rows["/event/cloud"]]
    assert f"rerun: {len(drawn)} events drawn of 40 received" in caplog.text
    assert drawn == sorted(set(drawn)) and drawn[0] == 0
    final = rows["/histograms/cluster_multiplicity"][-1]["BarChart:values"][0]["buffer"]
    assert final[1:4] == [14, 13, 13]  # 40 events with 1 + i % 3 clusters


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
    assert errors == [f"error: sink rerun: {rrd}: recording incomplete: rerun could not finish writing it: "
                      "File-writer thread shut down prematurely; what was written may still open in the viewer"]
    assert "outputs" not in res.stdout.splitlines()  # nothing to list: the only output is incomplete
    assert rrd.stat().st_size == 1_000_000  # kept (never delete data), cut at the limit
    assert rrd.read_bytes()[-16:].find(b"RRF2FOOT") < 0


def test_a_complete_recording_ends_with_the_footer_and_a_cut_one_does_not(tmp_path):
    from conduit_stages.rerun_sink.rrdfile import RrdFile

    ctx = StageContext(run=3, base_dir=tmp_path)
    sink = RerunSink(RerunParams(mode="save", max_display_rate=1000.0), ctx)
    sink.open()
    sink.begin()
    for i in range(20):
        sink.consume(kit.make_event(i))
    sink.close()
    good = tmp_path / "out" / "run_0003.rrd"
    assert sink.outputs() == [str(good)] and good.read_bytes()[-12:-4] == b"RRF2FOOT"
    assert RrdFile(good, None, None)._check() is None
    cut = tmp_path / "cut.rrd"
    cut.write_bytes(good.read_bytes()[:-100])
    assert RrdFile(cut, None, None)._check() == (f"{cut}: recording incomplete: {cut.stat().st_size} bytes without "
                                                 "the end-of-recording footer; what was written may still open in "
                                                 "the viewer")


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


def test_helix_follows_its_circle_and_slope():
    theta = math.radians(60.0)
    pts = geometry.helix((50.0, 0.0), 50.0, (0.0, 0.0, 100.0), theta, 2.85, length=1000.0, points=400)
    np.testing.assert_allclose(pts[0], [0.0, 0.0, 100.0], atol=1e-9)
    np.testing.assert_allclose(np.hypot(pts[:, 0] - 50.0, pts[:, 1]), 50.0)
    turned = np.unwrap(np.arctan2(pts[:, 1], pts[:, 0] - 50.0))
    turned = turned - turned[0]
    np.testing.assert_allclose(pts[:, 2] - 100.0, -turned * 50.0 / math.tan(theta), atol=1e-9)
    assert turned[-1] < 0  # B along +z: a positive track turns clockwise seen from +z
    flipped = geometry.helix((50.0, 0.0), 50.0, (0.0, 0.0, 100.0), theta, -2.85, length=1000.0)
    assert flipped[5, 1] < 0 < pts[5, 1]
    backward = geometry.helix((50.0, 0.0), 50.0, (0.0, 0.0, 100.0), math.radians(150), 2.85, length=1000.0)
    assert backward[-1, 2] >= 0.0 and np.all(np.diff(backward[:, 2]) < 0)  # stops at the window, z = 0


def test_colormap_traces_and_outline():
    rgb = geometry.colormap(np.array([0.0, 50.0, 100.0]), low=0.0, high=100.0)
    assert rgb[0].tolist() == [68, 1, 84] and rgb[-1].tolist() == [253, 231, 37]
    traces = kit.make_traces(3)
    pads, amp = geometry.pad_charges(traces)
    samples = traces[:, 5:].astype(float)
    np.testing.assert_allclose(amp, samples.max(1) - np.median(samples[:, ::8], 1))
    assert pads.tolist() == traces[:, 4].tolist()
    top, _ = geometry.strongest_traces(traces, 3)
    assert top.tolist() == pads[np.argsort(-amp)[:3]].tolist()
    strips = geometry.chamber_outline(1000.0)
    assert len(strips) == 11 and np.allclose(np.hypot(strips[0][:, 0], strips[0][:, 1]), 275.0)
