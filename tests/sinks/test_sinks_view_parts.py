"""The view's parts on their own: plot axes and ticks, display binning, occupancy, CoBo/AsAd health, log limits."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import pytest

from conduit.event import Event
from conduit_stages.rerun_sink.display import KEEP_BELOW, MIN_BINS, for_display, merge_factor
from conduit_stages.rerun_sink.colors import BACKGROUND, ColorScale, count_colors, ramp
from conduit_stages.rerun_sink.health import AsadHealth
from conduit_stages.rerun_sink.logbridge import QueueHandler
from conduit_stages.rerun_sink.occupancy import Occupancy
from conduit_stages.rerun_sink.plot2d import Axis, Figure, Frame, add_axes, format_ticks, log_ticks, nice_ticks, \
    nice_upper
from conduit_stages.rerun_sink.rates import RateHistory

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import conduit_sinkkit as kit  # noqa: E402


# -- plots -------------------------------------------------------------------------------------------


def test_nice_ticks_and_labels():
    assert nice_ticks(0.0, 3.0).tolist() == [0.0, 1.0, 2.0, 3.0]
    assert nice_ticks(0.0, 150.0).tolist() == [0.0, 50.0, 100.0, 150.0]
    assert nice_ticks(-30.0, 30.0, 4).tolist() == [-30.0, -15.0, 0.0, 15.0, 30.0] or \
        nice_ticks(-30.0, 30.0, 4).tolist() == [-20.0, 0.0, 20.0]
    assert nice_ticks(0.0, 1.0, 4).tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert format_ticks([0.0, 0.25, 0.5]) == ["0.00", "0.25", "0.50"]
    assert format_ticks([0.0, 500.0, 1000.0]) == ["0", "500", "1000"]
    assert format_ticks([0.0, 2e6, 4e6]) == ["0", "2e6", "4e6"]
    assert log_ticks(1.0, 37.0).tolist() == [1.0, 2.0, 5.0, 10.0, 20.0]
    assert log_ticks(1.0, 5e4).tolist() == [1.0, 10.0, 100.0, 1000.0, 10000.0]
    assert nice_upper(37.0) == 40.0 and nice_upper(0.0) == 1.0 and nice_upper(0.93) == 1.5


def test_frame_maps_data_with_y_up_and_axes_carry_titles_and_numbers():
    frame = Frame(Axis(0.0, 3.0, "Bρ (T·m)"), Axis(0.0, 150.0, "√(dE/dx) (√(ADC·TB/mm))"))
    assert frame.vx([0.0, 3.0]).tolist() == [0.0, 1000.0]
    assert frame.vy([0.0, 150.0]).tolist() == [frame.height, 0.0]  # high values at the top of the view
    assert frame.vx([-1.0, 9.0]).tolist() == [0.0, 1000.0]  # clipped to the frame
    fig = Figure()
    add_axes(fig, frame)
    labels = fig.parts["axes/tick_labels"].labels
    assert labels == ["0", "1", "2", "3", "0", "50", "100", "150"]
    assert fig.parts["axes/titles"].labels == ["Bρ (T·m)", "√(dE/dx) (√(ADC·TB/mm))"]
    ticks = fig.parts["axes/ticks"].strips
    assert len(ticks) == 2  # one comb per axis: few strips, cheap to log


def test_colour_scale_is_monotonic_and_keeps_one_count_visible():
    scale = ColorScale(1.0, 1000.0, log=True)
    positions = scale.position(np.array([1, 10, 100, 1000]))
    np.testing.assert_allclose(positions, [0.0, 1 / 3, 2 / 3, 1.0])
    rgb = count_colors(np.array([[0, 1], [10, 1000]]), scale)
    assert tuple(rgb[0, 0]) == BACKGROUND and tuple(rgb[0, 1]) == tuple(ramp(np.array([0.0]))[0])
    assert int(rgb[0, 1].astype(int).sum()) > 3 * 60  # one count is a clear colour, not near-black
    assert len({tuple(c) for c in ramp(np.linspace(0, 1, 50))}) == 50


# -- display binning ------------------------------------------------------------------------------------


def test_display_binning_suits_the_number_of_entries():
    assert merge_factor(300, 300, 2) == 15  # 20 x 20 shown bins for a few hundred tracks
    assert merge_factor(300, 300_000, 2) == 1  # the full binning for a few hundred thousand
    assert merge_factor(250, 300, 1) == 10 and merge_factor(250, 100_000, 1) == 1
    assert merge_factor(16, 10, 1) == 1  # small integer axes are never merged
    for bins in (250, 300, 180, 211):
        for entries in (1, 50, 500, 5000, 50_000):
            f = merge_factor(bins, entries, 2)
            assert bins % f == 0 and (f == 1 or bins // f >= MIN_BINS)
    assert merge_factor(KEEP_BELOW, 1, 1) == 1
    rng = np.random.default_rng(3)
    counts = rng.integers(0, 5, size=(300, 300))
    shown = for_display(counts, np.linspace(0, 3, 301), np.linspace(0, 150, 301), 300)
    assert shown.counts.shape == (20, 20) and shown.counts.sum() == counts.sum() and shown.factors == (15, 15)
    np.testing.assert_allclose(shown.x_edges, np.linspace(0, 3, 21))
    assert shown.counts[0, 0] == counts[:15, :15].sum()


# -- occupancy and health --------------------------------------------------------------------------------


def test_occupancy_counts_hit_pads_and_finds_dead_and_hot_ones():
    occupancy = Occupancy(100, threshold=30.0, min_events=10, hot_fraction=0.5)
    radius = np.full(100, 100.0)
    radius[0] = 5.0  # a beam pad: hit in every event, never called hot
    for i in range(20):
        ids = np.array([0, 1, 2 + i % 3, 50, 50])  # pad 50 twice in one event: counted once
        amplitude = np.array([200.0, 200.0, 100.0, 300.0, 10.0])
        if i % 2:
            amplitude[1] = 5.0  # below threshold: pad 1 hit in half the events
        occupancy.add(ids, amplitude)
    assert occupancy.events == 20
    assert occupancy.hits[[0, 1, 2, 3, 4, 50]].tolist() == [20, 10, 7, 7, 6, 20]
    dead = occupancy.dead()
    assert 5 in dead and 0 not in dead and len(dead) == 100 - 6
    assert occupancy.hot(radius).tolist() == [50]
    occupancy.reset()
    assert occupancy.events == 0 and occupancy.dead().size == 0


def test_health_counts_missing_asads_per_cobo_and_shows_link_counters():
    health = AsadHealth(expected=((0, 0), (0, 1), (3, 2)))
    for i in range(10):
        traces = kit.make_traces(i)
        traces[:, 0], traces[:, 1] = 0, i % 2  # data from CoBo 0, AsAd 0 or 1
        missing = ((3, 2),) if i < 4 else ()
        health.add(Event(id=i, traces=traces, complete=not missing, missing=missing))
    snap = type("Snap", (), {"source_counters": {"cobo0_frames": 20, "cobo0_errors": 1, "cobo3_frames": 6,
                                                 "bad_frames": 2}, "byte_rates": {"cobo0": 2.5e6},
                             "dropped": 0})()
    text = health.markdown(snap)
    assert text.startswith("**10 events seen: 6 complete (60.0%), 4 incomplete**")
    assert "bad frames 2" in text
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in text.splitlines() if line.startswith("| ") and line[2].isdigit()}
    assert rows["0"] == ["2.50", "20", "1", "-", "5", "5", "", ""]
    assert rows["3"] == ["-", "6", "-", "-", "", "", "0 · ⚠ 4", ""]
    # with the builder's per-AsAd counters: frames per AsAd and the frames of it that were lost
    snap.asad_counters = {(0, 0): {"frames": 12}, (0, 1): {"frames": 8, "late_frames": 2, "quarantined_ahead": 1},
                          (3, 2): {"frames": 6}}
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in health.markdown(snap).splitlines() if line.startswith("| ") and line[2].isdigit()}
    assert rows["0"][4:] == ["12", "8 · ✗ 3", "", ""]
    assert rows["3"][4:] == ["", "", "6 · ⚠ 4", ""]


def test_rates_keep_wall_clock_time_and_fractions_per_interval():
    history = RateHistory()
    for k, (complete, incomplete) in enumerate([(10, 0), (18, 2), (18, 2), (40, 4)]):
        snap = type("Snap", (), dict(elapsed=float(k), received_rate=10.0, analysed_rate=9.0, skipped_rate=1.0,
                                     complete=complete, incomplete=incomplete, byte_rates={"cobo0": 2e6}))()
        history.add(snap)
    table = history.table()
    assert table[:, 0].tolist() == [0.0, 1.0, 2.0, 3.0]
    assert table[:, 4][[0, 1, 3]].tolist() == [1.0, 0.8, 22 / 24] and np.isnan(table[2, 4])
    assert table[:, 5].tolist() == [2.0] * 4  # MB/s
    for k in range(4, 1000):
        history.add(type("Snap", (), dict(elapsed=float(k), received_rate=float(k), analysed_rate=0.0,
                                          skipped_rate=0.0, complete=0, incomplete=0, byte_rates={}))())
    assert history.table(300).shape == (300, 6)  # drawn with a bounded number of points


# -- log -----------------------------------------------------------------------------------------


def test_log_bridge_limits_each_message_and_reports_what_it_held_back():
    now = [0.0]
    handler = QueueHandler(logging.INFO, burst=3, window=60.0, clock=lambda: now[0])
    log = logging.getLogger("conduit.test.bridge")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        for i in range(10):
            log.warning("frame %d from cobo3: bad size", i)
        log.error("disk full")
        first = handler.drain()
        assert [t for _, t in first] == [f"conduit.test.bridge: frame {i} from cobo3: bad size" for i in range(3)] + [
            "conduit.test.bridge: disk full"]
        now[0] = 61.0
        log.warning("frame %d from cobo3: bad size", 99)
        second = handler.drain()
        assert second[0] == ("WARNING", 'conduit.test.bridge: ... and 7 more like "frame %d from cobo3: bad size" in '
                                        "the last 61 s")
        assert second[1] == ("WARNING", "conduit.test.bridge: frame 99 from cobo3: bad size")
        for i in range(5):
            log.warning("frame %d from cobo3: bad size", i)
        assert handler.drain(final=True)[-1][1].endswith('... and 3 more like "frame %d from cobo3: bad size" '
                                                         "in the last 0 s")
    finally:
        log.removeHandler(handler)
        log.setLevel(logging.NOTSET)


@pytest.mark.parametrize("bins", [1, 7, 40])
def test_display_of_tiny_axes_is_the_filled_binning(bins):
    counts = np.arange(bins)
    shown = for_display(counts, np.linspace(0, 1, bins + 1), None, 10**6)
    assert shown.counts.tolist() == counts.tolist()


def test_compiled_peak_heights_and_hit_counts_equal_the_numpy_rules():
    """Every event is counted drawn or not, so this runs per event: compiled, same numbers as numpy's."""
    from conduit.event import PAD, SAMPLES
    from conduit_stages.rerun_sink.kernels import peak_heights

    rng = np.random.default_rng(9)
    traces = np.zeros((300, 517), dtype=np.int16)
    traces[:, SAMPLES] = rng.integers(0, 4096, (300, 512))
    traces[:, PAD] = rng.integers(-3, 120, 300)  # some ids off the plane, some pads twice
    samples = traces[:, SAMPLES]
    expected = samples.max(axis=1) - np.median(samples[:, ::32], axis=1)
    heights = peak_heights(traces)
    np.testing.assert_array_equal(heights, expected)
    occupancy = Occupancy(100, threshold=2000.0)
    for _ in range(3):
        occupancy.add(traces[:, PAD], peak_heights(traces))
    ids = traces[:, PAD].astype(np.int64)
    hit = (expected >= 2000.0) & (ids >= 0) & (ids < 100)
    assert 0 < hit.sum() < 300
    np.testing.assert_array_equal(occupancy.hits, 3 * np.bincount(np.unique(ids[hit]), minlength=100))
