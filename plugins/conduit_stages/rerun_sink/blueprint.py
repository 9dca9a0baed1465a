"""The default viewer layout: detector in 3-D, pad plane, traces, histograms, rates and the log."""

from __future__ import annotations

from typing import Any

__all__ = ["default_blueprint", "ENTITY"]

#: Entity paths used by the sink (and by the tests that read recordings back).
ENTITY = {
    "detector": "/detector",
    "event": "/event",
    "cloud": "/event/cloud",
    "clusters": "/event/clusters",
    "tracks": "/event/tracks",
    "vertices": "/event/vertices",
    "pads": "/pads",
    "pad_outline": "/pads/outline",
    "pad_hits": "/pads/hits",
    "traces": "/traces",
    "strongest": "/traces/strongest",
    "histograms": "/histograms",
    "metrics": "/metrics",
    "log": "/log",
}


def default_blueprint(histograms: list[tuple[str, int]], byte_streams: bool = True, prefix: str = "") -> Any:
    """The layout; ``histograms`` lists (name, dimensions) of the histograms to give a view each.

    ``prefix`` is prepended to every entity path (the sink's ``entity_prefix``).
    """
    import rerun.blueprint as rrb

    prefix = prefix.rstrip("/")
    e = {key: prefix + path for key, path in ENTITY.items()}

    detector = rrb.Spatial3DView(
        origin=prefix or "/", contents=[f"{e['detector']}/**", f"{e['event']}/**"], name="Detector (mm)"
    )
    pads = rrb.Spatial2DView(origin=e["pads"], name="Pad plane (amplitude)")
    traces = rrb.Spatial2DView(origin=e["traces"], name="Strongest traces (ADC vs time bucket)")
    hist_views = [
        rrb.BarChartView(origin=f"{e['histograms']}/{name}", name=name)
        if dims == 1 else rrb.TensorView(origin=f"{e['histograms']}/{name}", name=name)
        for name, dims in histograms
    ]
    rates = [
        rrb.TimeSeriesView(origin=f"{e['metrics']}/events_per_s", name="Events/s"),
        rrb.TimeSeriesView(origin=f"{e['metrics']}/complete_fraction", name="Complete events (share)"),
    ]
    if byte_streams:
        rates.append(rrb.TimeSeriesView(origin=f"{e['metrics']}/bytes_per_s", name="Bytes/s per CoBo"))
    log = rrb.TextLogView(origin=e["log"], name="Log")
    event_tabs = rrb.Tabs(pads, traces, name="Event")
    bottom = rrb.Tabs(*rates, log, name="Rates / log")
    rows: list[Any] = [event_tabs]
    if hist_views:
        rows.append(rrb.Grid(*hist_views, name="Histograms"))
    rows.append(bottom)
    shares = [3, 3, 2] if hist_views else [3, 2]
    return rrb.Blueprint(
        rrb.Horizontal(detector, rrb.Vertical(*rows, row_shares=shares), column_shares=[3, 2]),
        rrb.TimePanel(timeline="event"),
        collapse_panels=False,
    )
