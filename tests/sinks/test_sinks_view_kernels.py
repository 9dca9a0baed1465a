"""The view's compiled drawing passes give exactly what the numpy rules they replace give.

A drawn event's panels are built by a few compiled kernels (pad markers with
their hover texts, the cloud's columns, the helices, the traces panel's rows,
range and polylines) and plain-float arithmetic (tick values, the colour
scale's percentile). Each is compared here, on inputs made to be awkward
(ties, NaNs, saturated rows, pads off the plane, amplitudes past the hover
table, tracks leaving the chamber or with no radius, both field signs), with
the numpy code it stands for: equal bit for bit, not approximately.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from conduit.event import SAMPLES
from conduit_physics.tracks.helix import helices
from conduit_stages.rerun_sink import arrow, kernels
from conduit_stages.rerun_sink.colors import (BACKGROUND, RAMP, SCALE_TOPS, ColorScale, count_colors, percentile_of,
                                             scale_top)
from conduit_stages.rerun_sink.eventview import N_CLASSES, class_ids
from conduit_stages.rerun_sink.geometry import CHAMBER_RADIUS, SATURATION_ADC, select_traces, strongest
from conduit_stages.rerun_sink.plot2d import Axis, Frame, nice_tick_values


def numpy_nice_ticks(low: float, high: float, target: int) -> list[float]:
    """The tick rule as numpy computed it before (arange, then round to whole steps)."""
    span = high - low
    if not math.isfinite(span) or span <= 0:
        return [low]
    raw = span / max(target, 1)
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1.0, 2.0, 2.5, 5.0, 10.0) if m * power >= raw * 0.999)
    first = math.ceil(low / step - 1e-9) * step
    return (np.round(np.arange(first, high + step * 1e-6, step) / step) * step).tolist()


def test_tick_values_are_numpy_s_bit_for_bit():
    rng = np.random.default_rng(2)
    cases = 0
    for k in range(20_000):
        scale = 10.0 ** int(rng.integers(-4, 7))
        low = float(rng.normal() * scale)
        high = low + float(abs(rng.normal()) * scale * rng.choice([0.01, 1.0, 10.0]))
        if k % 10 == 0:
            low, high = float(round(low)), float(round(high))
        for target in (4, 5):
            expected, got = numpy_nice_ticks(low, high, target), nice_tick_values(low, high, target)
            assert got == expected and [math.copysign(1, v) for v in got] == [math.copysign(1, v) for v in expected]
            cases += 1
    assert cases == 40_000
    assert nice_tick_values(3.0, 3.0) == [3.0] and nice_tick_values(0.0, float("nan")) == [0.0]


def _amplitude_sets(seed: int, count: int, awkward: bool = False):
    """``count`` arrays of 1 to 899 values on three scales, a third rounded, a seventh all equal (and with
    ``awkward`` a fifth with NaN or infinities in them)."""
    rng = np.random.default_rng(seed)
    for k in range(count):
        values = rng.random(int(rng.integers(1, 900))) * rng.choice([1.0, 100.0, 4000.0])
        if k % 3 == 0:
            values = np.round(values)
        if awkward and k % 5 == 0:
            values[rng.integers(0, len(values), 3)] = rng.choice([np.nan, np.inf, -np.inf])
        if k % 7 == 0:
            values[:] = values[0]
        yield values


def test_percentile_is_numpy_s_bit_for_bit():
    for values in _amplitude_sets(3, 3000):
        for q in (0.0, 1.0, 37.5, 50.0, 99.0, 100.0):
            assert percentile_of(values, q) == float(np.percentile(values, q))
    assert ColorScale.for_values(np.array([np.nan, 5.0, np.inf])).high == 5.0


def test_scale_top_is_the_first_round_number_at_or_above_the_value():
    rng = np.random.default_rng(9)
    values = np.concatenate([rng.uniform(0.5, 5000.0, 5000), 10.0 ** rng.uniform(-6, 9, 2000),
                             [t / 10 * 10.0 ** k for t in SCALE_TOPS for k in range(-3, 6)]])
    for value in values.tolist():
        top = scale_top(value)
        assert value <= top <= value * 4 / 3 * (1 + 1e-12), value
        decade = math.floor(math.log10(value))
        rounds = [t * 10.0 ** k / 10 for k in range(decade - 1, decade + 2) for t in SCALE_TOPS]
        assert min(abs(top / r - 1) for r in rounds) < 1e-12, value  # a round number
        assert not [r for r in rounds if value <= r < top * (1 - 1e-12)], value  # the first one
    assert [scale_top(v) for v in (1000.0, 1000.5, 1201.0, 3999.0, 4096.0)] == [1000.0, 1200.0, 1500.0, 4000.0, 5000.0]
    assert [scale_top(v) for v in (0.0, -3.0, math.nan, math.inf)] == [1.0] * 4


def test_finite_percentile_is_the_percentile_of_the_finite_values_bit_for_bit():
    for values in _amplitude_sets(5, 2000, awkward=True):
        finite = values[np.isfinite(values)]
        for q in (0.0, 1.0, 37.5, 50.0, 99.0, 100.0):
            got = kernels.finite_percentile(values, q)
            assert (np.isnan(got) and not finite.size) or got == percentile_of(finite, q)
    assert np.isnan(kernels.finite_percentile(np.array([np.nan, np.inf]), 99.0))
    assert np.isnan(kernels.finite_percentile(np.zeros(0), 99.0))


def test_top_rows_are_the_strongest_unsaturated_in_row_order_for_ties():
    rng = np.random.default_rng(5)
    for k in range(3000):
        n = int(rng.integers(0, 400))
        amplitude = np.round(rng.random(n) * rng.choice([3.0, 50.0, 4000.0]))
        if k % 5 == 0 and n:
            amplitude[:] = amplitude[0]  # all tied
        if k % 7 == 0 and n:
            amplitude[rng.integers(0, n, 3)] = np.nan
        maxima = rng.integers(100, SATURATION_ADC + 2, n)
        traces = np.zeros((n, 517), dtype=np.int16)
        traces[:, SAMPLES.start] = np.minimum(maxima, 32767)
        count = int(rng.integers(0, 12))
        rows, saturated = kernels.top_rows(amplitude, maxima, SATURATION_ADC, count)
        expected, what = select_traces(traces, amplitude, "strongest", count, maxima=maxima)
        assert rows.tolist() == expected.tolist(), k
        if count:
            assert what[1] == (f"{saturated} saturated not shown" if saturated else "")
        candidates = np.flatnonzero(maxima < SATURATION_ADC)
        assert strongest(candidates, amplitude, count).tolist() == \
            candidates[np.argsort(-amplitude[candidates], kind="stable")][:count].tolist()


def estimates_table(rng, n: int) -> np.ndarray:
    dtype = [(name, "<f8") for name in ("center_x", "center_y", "radius", "vertex_x", "vertex_y", "vertex_z",
                                        "polar")] + [("cluster_label", "<i4")]
    table = np.zeros(n, dtype=dtype)
    table["vertex_x"], table["vertex_y"] = rng.normal(0, 40, n), rng.normal(0, 40, n)
    table["vertex_z"] = rng.uniform(-20, 1050, n)  # some vertices outside the drift length
    table["radius"] = rng.uniform(5, 600, n)
    angle = rng.uniform(0, 2 * np.pi, n)
    table["center_x"] = table["vertex_x"] + table["radius"] * np.cos(angle)
    table["center_y"] = table["vertex_y"] + table["radius"] * np.sin(angle)
    table["polar"] = rng.uniform(0.05, np.pi - 0.05, n)
    table["polar"][::7] = np.pi / 2  # flat tracks
    table["radius"][3::11] = np.nan  # no helix: an empty strip
    table["radius"][5::13] = 0.0
    table["polar"][6::17] = np.inf
    table["cluster_label"] = rng.integers(-1, 200, n)
    return table


@pytest.mark.parametrize("field", [2.85, -2.85, 0.0])
def test_compiled_helices_are_the_numpy_helices(field):
    rng = np.random.default_rng(11)
    table = estimates_table(rng, 120)
    length, points = 1000.0, 200
    columns = [np.ascontiguousarray(table[name]) for name in ("center_x", "center_y", "radius", "vertex_x",
                                                                "vertex_y", "vertex_z", "polar")]
    xyz, offsets, ends, vertices, classes = kernels.helix_strips(
        *columns, table["cluster_label"].astype(np.int64), 1.0 if field >= 0 else -1.0, length, CHAMBER_RADIUS,
        points, N_CLASSES)
    expected = helices(table, field, length, points)
    assert offsets.tolist() == np.concatenate([[0], np.cumsum([len(s) for s in expected])]).tolist()
    assert sum(1 for s in expected if len(s) == 0) >= 10 and sum(1 for s in expected if 2 <= len(s) < points) >= 10
    np.testing.assert_array_equal(xyz, np.concatenate([s for s in expected if len(s)]).astype(np.float32))
    vertex = np.column_stack([table["vertex_x"], table["vertex_y"], table["vertex_z"]])
    np.testing.assert_array_equal(ends, np.array([s[-1] if len(s) else v for s, v in zip(expected, vertex)],
                                                 dtype=np.float32))
    np.testing.assert_array_equal(vertices, vertex.astype(np.float32))
    np.testing.assert_array_equal(classes, class_ids(table["cluster_label"]))


def test_pad_markers_are_the_numpy_markers_with_python_hover_texts():
    rng = np.random.default_rng(13)
    n_pads = 12_000  # pad numbers of 1 to 5 digits
    xy = rng.normal(0, 100, (n_pads, 2)).astype(np.float32)
    radii = rng.uniform(1, 3, n_pads).astype(np.float32)
    table = np.zeros((n_pads, 4), dtype=np.float32)
    table[:, :2], table[:, 2] = xy, radii
    ids = rng.integers(-3, n_pads + 3, 2000)  # some off the plane
    amplitude = rng.uniform(0.0, 4096.4, 2000)
    amplitude[:12] = [0.5, 1.5, 2.5, 4095.5, 0.0, 9.5, 99.5, 999.6, 10**6 + 0.5, 123456789012.5, 4096.0, 1e14 - 1]
    ids[:12] = [0, 9, 10, 99, 100, 999, 1000, 9999, 10000, 11999, 5, 7]  # every digit count, halves to even
    scale = ColorScale(0.0, 3000.0)
    positions, out_radii, colors, offsets, text, exact = kernels.pad_markers(ids, amplitude, table, scale.low,
                                                                              scale.high, RAMP)
    on = (ids >= 0) & (ids < n_pads)
    assert exact and 0 < on.sum() < len(ids)
    np.testing.assert_array_equal(positions, xy[ids[on]])
    np.testing.assert_array_equal(out_radii, radii[ids[on]])
    np.testing.assert_array_equal(colors, scale.rgba(amplitude[on]))
    assert arrow.utf8(offsets, text).to_pylist() == [f"pad {p}: {a:.0f} ADC" for p, a in
                                                      zip(ids[on].tolist(), amplitude[on].tolist())]
    # Below zero but rounding to zero: "0 ADC" (the hover table of earlier versions gave that too)
    *_, offsets, text, exact = kernels.pad_markers(np.array([3]), np.array([-0.3]), table, 0.0, 1.0, RAMP)
    assert exact and arrow.utf8(offsets, text).to_pylist() == ["pad 3: 0 ADC"]
    for bad in (-0.6, np.nan, np.inf, kernels.HOVER_LIMIT):  # the caller formats the texts itself
        amplitude[on.argmax()] = bad
        *_, exact = kernels.pad_markers(ids, amplitude, table, scale.low, scale.high, RAMP)
        assert not exact


def test_cloud_columns_are_the_numpy_columns():
    rng = np.random.default_rng(17)
    cloud = rng.normal(0, 100, (400, 8))
    cloud[:, 3] = rng.uniform(-10, 900, 400)
    cloud[7, 3] = np.nan
    labels = rng.integers(-1, 150, 400)
    scale = ColorScale(0.0, 700.0)
    noise_rgba = arrow.pack((120, 120, 130))[0]
    positions, colors, radii, classes = kernels.cloud_columns(cloud, 3, labels, scale.low, scale.high, RAMP,
                                                              noise_rgba, N_CLASSES)
    np.testing.assert_array_equal(positions, cloud[:, :3].astype(np.float32))
    expected = scale.rgba(cloud[:, 3])
    expected[labels < 0] = noise_rgba
    np.testing.assert_array_equal(colors, expected)
    np.testing.assert_array_equal(radii, np.where(labels < 0, -1.2, -2.0).astype(np.float32))
    np.testing.assert_array_equal(classes, class_ids(labels))
    _, colors, radii, classes = kernels.cloud_columns(cloud, 3, np.zeros(0, dtype=np.int64), scale.low,
                                                      scale.high, RAMP, noise_rgba, N_CLASSES)
    np.testing.assert_array_equal(colors, scale.rgba(cloud[:, 3]))
    assert len(radii) == len(classes) == 0


def test_trace_polylines_and_range_are_the_frame_s_mapping():
    rng = np.random.default_rng(19)
    traces = rng.integers(-50, 4096, (6, 517)).astype(np.int16)
    low, high = kernels.sample_range(traces)
    assert (low, high) == (traces[:, SAMPLES].min(), traces[:, SAMPLES].max())
    assert kernels.sample_range(traces[:0]) == (0, 1)
    frame = Frame(Axis(0.0, 512.0, ""), Axis(0.0, 3000.0, ""), width=780.0)  # clips the highest samples
    x = frame.vx(np.arange(512, dtype=np.float64))
    out = np.empty((6 * 512, 2), dtype=np.float32)
    kernels.trace_polylines(traces, frame.y.low, frame.y.high, frame.top, frame.height, x, out)
    expected = np.empty((6, 512, 2))
    expected[..., 0] = x
    expected[..., 1] = frame.vy(traces[:, SAMPLES].astype(np.float64))
    np.testing.assert_array_equal(out, expected.reshape(-1, 2).astype(np.float32))


def test_packed_scale_colours_equal_the_numpy_ramp_packed_on_log_and_linear_scales():
    """``ColorScale.rgba`` (one compiled pass, what the occupancy panel now logs) equals ``ColorScale.colors``
    packed, on hit counts (log scale: 0, 1, the top, past it) and on awkward values (NaN, infinities,
    negatives, ramp stop boundaries)."""
    rng = np.random.default_rng(17)
    counts = np.concatenate([np.zeros(50), np.ones(50), rng.integers(0, 5000, 10_000), [4999, 5000, 10**9]])
    awkward = np.concatenate([rng.normal(0, 2, 5000), [np.nan, np.inf, -np.inf, -1.0, 0.0, 0.2, 0.4, 0.6, 0.8,
                                                       1.0, 1e300]])
    checked = 0
    for scale, values in ((ColorScale(1.0, 5000.0, log=True), counts), (ColorScale(1.0, 2.0, log=True), counts),
                          (ColorScale(0.0, 1.0), awkward), (ColorScale(-3.0, 3.0), awkward)):
        np.testing.assert_array_equal(scale.rgba(values), arrow.pack(scale.colors(values)))
        checked += len(values)
    assert checked == 2 * 10_103 + 2 * 5011


def test_heat_map_colours_equal_the_numpy_ramp_with_empty_bins_in_the_background():
    """``count_colors`` (the ramp packed in one compiled pass, its bytes taken apart) gives every bin of a heat
    map the colour ``ColorScale.colors`` gives it, empty bins the background, on linear and log scales and on a
    flipped, transposed view (what ``add_heatmap`` passes)."""
    rng = np.random.default_rng(5)
    counts = rng.poisson(0.7, (120, 90)).astype(np.float64)
    counts[3, 4], counts[5, 6] = 10**6, 0.5  # past the top, between 0 and 1
    checked = 0
    for scale in (ColorScale(1.0, 40.0, log=True), ColorScale(0.0, 5.0), ColorScale(1.0, 2.0, log=True)):
        for grid in (counts, counts.T[::-1]):
            rgb = count_colors(grid, scale)
            expected = scale.colors(grid.reshape(-1)).reshape(*grid.shape, 3)
            expected[grid <= 0] = BACKGROUND
            assert rgb.shape == grid.shape + (3,) and rgb.dtype == np.uint8
            np.testing.assert_array_equal(rgb, expected)
            assert (rgb[grid <= 0] == BACKGROUND).all() and (grid <= 0).sum() > 1000
            checked += grid.size
    assert checked == 6 * 120 * 90


def test_event_columns_read_each_row_s_pad_and_key_with_its_peak():
    """The peak pass also returns each row's pad and (CoBo, AsAd) key, and the health counted from those keys
    is the health counted from the trace matrix (a CoBo past the compiled table included)."""
    from conduit.event import ASAD, COBO, PAD, Event
    from conduit_stages.rerun_sink.health import AsadHealth

    rng = np.random.default_rng(27)
    traces = np.zeros((300, 517), dtype=np.int16)
    traces[:, SAMPLES] = rng.integers(0, 4096, (300, 512))
    traces[:, COBO] = rng.integers(0, 11, 300)
    traces[:, ASAD] = rng.integers(0, 4, 300)
    traces[:, PAD] = rng.integers(-3, 10240, 300)
    traces[:5, COBO] = 300  # past the table of 256 CoBos
    traces[5, COBO] = -1  # a negative key is not counted
    heights, maxima, pads, keys = kernels.event_columns(traces)
    expected_heights, expected_maxima = kernels.peaks(traces)
    np.testing.assert_array_equal(heights, expected_heights)
    np.testing.assert_array_equal(maxima, expected_maxima)
    np.testing.assert_array_equal(pads, traces[:, PAD].astype(np.int64))
    np.testing.assert_array_equal(keys, traces[:, COBO].astype(np.int64) * 256 + traces[:, ASAD])
    assert pads.dtype == keys.dtype == np.int64 and pads.flags.c_contiguous and keys.flags.c_contiguous
    from_keys, from_traces = AsadHealth(), AsadHealth()
    for i in range(3):
        event = Event(id=i, traces=traces, complete=True, missing=())
        from_keys.add(event, kernels.event_columns(traces)[3])
        from_traces.add(event)
    assert from_keys.with_data == from_traces.with_data
    assert sum(n for (cobo, _), n in from_keys.with_data.items() if cobo == 300) > 0


@pytest.mark.parametrize("labels", [[], [""], ["run 1 · event 50 · t = 10.500622 s · 1 track"],
                                    ["#0", "", "θ (°)", "√(dE/dx)", "pad 1234: 230 ADC", "x" * 5000]])
def test_text_data_is_pyarrow_s_text_array(labels):
    """Text data made from the labels' bytes is the array ``pa.array(labels, type=Text)`` made."""
    import pyarrow as pa

    made, expected = arrow.texts(labels), pa.array(labels, type=arrow._type("Text"))
    assert made.type == expected.type and made.equals(expected) and made.null_count == 0
    assert made.to_pylist() == labels
