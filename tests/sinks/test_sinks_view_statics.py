"""The view's cheap drawing path keeps everything: statics logged once, every drawn event complete in the .rrd.

The rerun sink builds its components as Arrow arrays of Rerun's own types and
leaves out what it already sent (constants built once, run-panel parts that did
not change). These tests read the recording back with Rerun's reader and fail
if a static element stops being logged, if a drawn event misses its points,
pad markers, hover texts or captions, or if a run panel no longer shows its
latest content.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from conduit.event import PAD
from conduit.stage import StageContext
from conduit_physics.histograms import Histograms
from conduit_stages.histogram.sink import HistogramSink
from conduit_stages.histogram.spec import HistogramParams
from conduit_stages.rerun_sink import arrow
from conduit_stages.rerun_sink.colors import SCALE_TOPS, ColorScale, percentile_of, scale_top
from conduit_stages.rerun_sink.draw import figure_archetypes
from conduit_stages.rerun_sink.histview import histogram_figure
from conduit_stages.rerun_sink.kernels import peak_heights
from conduit_stages.rerun_sink.params import RerunParams
from conduit_stages.rerun_sink.plot2d import format_ticks, nice_tick_values
from conduit_stages.rerun_sink.sink import RerunSink

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import conduit_sinkkit as kit  # noqa: E402
from rrd_read import event_rows, latest_state, read_rrd  # noqa: E402

#: Logged once (static) at the start of every recording, with the components that draw them.
STATICS = {
    "/": {"ViewCoordinates:xyz"},
    "/detector/chamber": {"LineStrips3D:strips", "LineStrips3D:colors", "LineStrips3D:radii"},
    "/detector/axes": {"Arrows3D:origins", "Arrows3D:vectors", "Arrows3D:labels", "Arrows3D:colors"},
    "/event": {"AnnotationContext:context"},
    "/colorbar3d": {"Points3D:positions", "Points3D:colors", "Points3D:radii"},
    "/padplane/outline": {"LineStrips2D:strips", "LineStrips2D:colors"},
    "/padplane/axes/box": {"LineStrips2D:strips"},
    "/padplane/axes/ticks": {"LineStrips2D:strips"},
    "/padplane/axes/tick_labels": {"Points2D:positions", "Points2D:labels"},
    "/padplane/axes/titles": {"Points2D:positions", "Points2D:labels"},
    "/padplane/colorbar/image": {"Image:buffer", "Transform3D:translation", "Transform3D:scale"},
    "/occupancy/pads": {"Points2D:positions", "Points2D:radii"},
}
N_EVENTS = 30


@pytest.fixture(scope="module")
def replay(tmp_path_factory):
    """A file replay of N_EVENTS sinkkit events (every event drawn), read back; and the sink that wrote it."""
    tmp = tmp_path_factory.mktemp("statics")
    ctx = StageContext(run=3, base_dir=tmp, live=False)
    hist = HistogramSink(HistogramParams(save=False), ctx)
    hist.open()
    sink = RerunSink(RerunParams.from_mapping({"mode": "save", "refresh_events": 10}), ctx)
    sink.open()
    hist.begin()
    sink.begin()
    for i in range(N_EVENTS):
        event = kit.make_event(i)
        hist.consume(event)
        sink.consume(event)
    sink.close()
    return read_rrd(tmp / "out" / "run_0003.rrd"), sink


def test_every_static_element_is_logged_once_with_its_components(replay):
    rows, sink = replay
    for entity, components in STATICS.items():
        static = [r for r in rows.get(entity, []) if r["_static"]]
        assert len(static) == 1, entity
        missing = {c for c in components if not static[0].get(c)}
        assert not missing, (entity, missing)
    outline = [r for r in rows["/padplane/outline"] if r["_static"]][0]
    assert len(outline["LineStrips2D:strips"]) == sink.context.pads.n_pads
    assert len([r for r in rows["/occupancy/pads"] if r["_static"]][0]["Points2D:positions"]) == \
        sink.context.pads.n_pads
    assert len([r for r in rows["/colorbar3d"] if r["_static"]][0]["Points3D:positions"]) == 100
    assert len([r for r in rows["/event"] if r["_static"]][0]["AnnotationContext:context"][0]) == 64


def test_every_drawn_event_has_its_points_markers_hover_texts_and_captions(replay):
    rows, sink = replay
    pads = sink.context.pads
    clouds = {r["event"]: r for r in event_rows(rows, "/event/cloud")}
    assert sorted(clouds) == list(range(N_EVENTS))
    hits = {r["event"]: r for r in event_rows(rows, "/event/pads/hits")}
    assert sorted(hits) == list(range(N_EVENTS))
    for i in range(N_EVENTS):
        event = kit.make_event(i)
        cloud = event.artifacts["cloud"]
        np.testing.assert_array_equal(np.array(clouds[i]["Points3D:positions"], dtype=np.float32),
                                      cloud[:, :3].astype(np.float32))
        assert len(clouds[i]["Points3D:colors"]) == len(cloud) == len(clouds[i]["Points3D:radii"])
        # One marker per trace row at its pad, its hover text exactly as formatted in Python.
        ids = event.traces[:, PAD].astype(np.int64)
        heights = peak_heights(event.traces)
        row = latest_state(rows, "/event/pads/hits", i)  # constants (flags, draw order) are logged once
        assert set(hits[i]) >= {"Points2D:positions", "Points2D:radii", "Points2D:colors", "Points2D:labels"}
        np.testing.assert_allclose(np.array(row["Points2D:positions"]),
                                   np.column_stack([pads.x[ids], -pads.y[ids]]), atol=1e-4)
        assert row["Points2D:labels"] == [f"pad {p}: {a:.0f} ADC" for p, a in zip(ids.tolist(), heights.tolist())]
        assert row["Points2D:radii"] == pytest.approx((2.6 * pads.scale[ids]).tolist(), rel=1e-6)
        assert row["Points2D:show_labels"] == [False] and row["Points2D:draw_order"] == [2.0]
        assert len(row["Points2D:colors"]) == len(ids)
    # Every caption row carries its whole anchor (built once, logged with each event's text): the 3-D one the
    # first point of its entity (the track numbers follow), a 2-D panel's the last point of its texts (after the
    # colour bar's numbers, the legend).
    for entity, kind in (("/event/caption", "Points3D"), ("/event/pads/frame", "Points2D"),
                         ("/event/traces/plot", "Points2D")):
        captions = event_rows(rows, entity)
        assert sorted(r["event"] for r in captions) == list(range(N_EVENTS)), entity
        for r in captions:
            state = latest_state(rows, entity, r["event"])
            assert len(state[f"{kind}:positions"]) == len(state[f"{kind}:labels"]), entity
            assert state[f"{kind}:show_labels"] == [True], entity
            assert r[f"{kind}:labels"][0 if kind == "Points3D" else -1].startswith(f"run 3 · event {r['event']} · "), \
                entity
        if kind == "Points2D":  # and the panel's lines with it: the colour bar's box and ticks, axes and traces
            assert all(latest_state(rows, entity, r["event"])["LineStrips2D:strips"] for r in captions), entity
    anchors = {entity: latest_state(rows, entity, 0)["Points2D:positions"][-1]
               for entity in ("/event/pads/frame", "/event/traces/plot")}
    assert anchors["/event/traces/plot"] == pytest.approx([700.0, -88.0])
    assert anchors["/event/pads/frame"][0] == pytest.approx(0.0) and anchors["/event/pads/frame"][1] < -280.0
    # Both colour bars number the event's scale: 0 to its amplitudes' 99th percentile rounded up to a round
    # number; its pad markers take their colours on that scale. A scale equal to the previous event's is not
    # sent again (the viewer shows it, latest-at): the 3-D bar's numbers are logged when the scale changes.
    length = float(sink.context.detector.detector_length)
    tops, logged = [], {r["event"] for r in event_rows(rows, "/event/colorbar/labels")}
    for i in range(N_EVENTS):
        heights = peak_heights(kit.make_event(i).traces)
        top = scale_top(percentile_of(heights[np.isfinite(heights)], 99.0))
        assert top >= np.percentile(heights, 99) and (top * 10 / 10 ** np.floor(np.log10(top))) in SCALE_TOPS
        tops.append(top)
        values = nice_tick_values(0.0, top, 4)
        numbers = format_ticks(values) + ["amplitude (ADC)"]
        state = latest_state(rows, "/event/colorbar/labels", i)
        assert state["Points3D:labels"] == numbers and state["Points3D:show_labels"] == [True]
        np.testing.assert_allclose(np.array(state["Points3D:positions"])[:-1, 2], np.array(values) / top * length,
                                   rtol=1e-6)
        frame = latest_state(rows, "/event/pads/frame", i)
        assert frame["Points2D:labels"][:-1] == numbers
        markers = latest_state(rows, "/event/pads/hits", i)
        assert markers["Points2D:colors"] == ColorScale(0.0, top).rgba(heights).tolist()
    assert logged == {i for i in range(N_EVENTS) if i == 0 or tops[i] != tops[i - 1]}
    assert len(set(tops)) > 1 and len(logged) < N_EVENTS  # the scale changes, and repeats, in these events


def test_a_run_panel_part_is_sent_again_only_when_it_changes(replay):
    rows, sink = replay
    views = {v.name: v for v in sink.context.shared.get(Histograms).snapshot()}
    name = next(n for n, v in views.items() if v.dimensions == 1)
    axes = [r for r in rows[f"/histograms/{name}/axes/titles"]]
    steps = event_rows(rows, f"/histograms/{name}/steps")
    assert len(axes) == 1  # the titles never change: logged at the first refresh only
    assert len(steps) > 1  # the counts do
    # What the panel shows at the end (latest row of every part) is the figure of the final histogram.
    final = figure_archetypes(sink.rr, f"/histograms/{name}", histogram_figure(views[name], sink.context.shared.get(
        Histograms).gates(), sink.curves))
    for entity, archetypes in final:
        shown = latest_state(rows, entity)
        for archetype in archetypes:  # an archetype, or its component batches made ready by the sink
            for batch in archetype if isinstance(archetype, list) else archetype.as_component_batches():
                column = batch.component_descriptor().component
                assert shown[column] == batch.as_arrow_array().to_pylist(), (entity, column)


def test_component_arrays_have_rerun_own_types_and_joined_texts_are_exact():
    import rerun as rr

    assert arrow.positions(np.zeros((2, 3)), 3).type == rr.components.Position3DBatch._ARROW_DATATYPE
    assert arrow.positions(np.zeros((2, 2)), 2).type == rr.components.Position2DBatch._ARROW_DATATYPE
    assert arrow.strips([np.zeros((3, 2)), np.ones((1, 2))]).type == rr.components.LineStrip2DBatch._ARROW_DATATYPE
    assert arrow.strips([np.zeros((3, 3))], 3).type == rr.components.LineStrip3DBatch._ARROW_DATATYPE
    assert arrow.colors((1, 2, 3)).type == rr.components.ColorBatch._ARROW_DATATYPE
    assert arrow.texts(["a"]).type == rr.components.TextBatch._ARROW_DATATYPE
    # The very arrays Rerun makes from numpy itself.
    rgb = np.array([[1, 2, 3], [250, 128, 0]], dtype=np.uint8)
    assert arrow.colors(rgb).to_pylist() == rr.components.ColorBatch(rgb).as_arrow_array().to_pylist()
    assert arrow.colors(np.array([[1, 2, 3, 4]], dtype=np.uint8)).to_pylist() == [0x01020304]
    strips = [np.array([[0.0, 1.0], [2.5, -3.0]]), np.zeros((0, 2)), np.array([[7.0, 8.0]])]
    assert arrow.strips(strips).to_pylist() == rr.components.LineStrip2DBatch(strips).as_arrow_array().to_pylist()
    first = arrow.TextTable(["pad 0: ", "θ ", ""])
    second = arrow.TextTable(["1 ADC", "", "é"])
    joined = arrow.joined_texts(first, np.array([1, 0, 2, 1]), second, np.array([2, 0, 1, 1]))
    assert isinstance(joined, pa.Array) and joined.to_pylist() == ["θ é", "pad 0: 1 ADC", "", "θ "]
    assert arrow.joined_texts(first, np.array([], dtype=np.int64), second, np.array([], dtype=np.int64)
                              ).to_pylist() == []


def test_one_pass_gives_the_peak_heights_and_the_largest_sample_of_every_row():
    from conduit.event import SAMPLES
    from conduit_stages.rerun_sink.geometry import SATURATION_ADC, select_traces
    from conduit_stages.rerun_sink.kernels import peaks

    traces = kit.make_traces(7).copy()
    traces[3, SAMPLES.start + 100] = SATURATION_ADC  # one saturated row: never among the drawn traces
    heights, maxima = peaks(traces)
    np.testing.assert_array_equal(maxima, traces[:, SAMPLES].max(axis=1))
    np.testing.assert_array_equal(heights, peak_heights(traces))
    with_maxima = select_traces(traces, heights, "strongest", 8, maxima=maxima)
    assert 3 not in with_maxima[0].tolist()
    np.testing.assert_array_equal(with_maxima[0], select_traces(traces, heights, "strongest", 8)[0])
    assert with_maxima[1] == select_traces(traces, heights, "strongest", 8)[1] == [
        "strongest unsaturated", "1 saturated not shown"]
