"""The default viewer layout, sized for one 1920x1080 screen with the side panels collapsed.

::

    +---------------------------+------------------------+------------------------+
    | 3-D event: by amplitude | | pad plane: event |     | traces (event)         |
    |            by cluster     |            occupancy   |                        |
    +---------------------------+------------------+-----+-----------+------------+
    | event & tracks | rates |  | pid              | kinematics      | vertex z   |
    | CoBo/AsAd health | log    | beam spot        | polar           | clusters   |
    +---------------------------+------------------+-----------------+------------+

Every plot is a Spatial2DView framed by :func:`plot_bounds` (see
:mod:`.plot2d` for why plots are drawn as 2-D primitives).
"""

from __future__ import annotations

from typing import Any

from .eventview import CAPTION_3D, COLORBAR_3D, EVENT_ROOT, PLANE_HALF_WIDTH
from .plot2d import CANVAS
from .rates import FIGURE_HEIGHT

__all__ = ["default_blueprint", "ENTITY", "CAMERA", "view_names"]

#: Entity paths used by the sink (and by the tests that read recordings back).
ENTITY = {
    "detector": "/detector",
    "event": EVENT_ROOT,
    "colorbar3d": COLORBAR_3D,
    "summary": f"{EVENT_ROOT}/summary",
    "caption": CAPTION_3D,  # the 3-D views' caption and track numbers
    "cloud": f"{EVENT_ROOT}/cloud",
    "clusters": f"{EVENT_ROOT}/clusters",
    "tracks": f"{EVENT_ROOT}/tracks",
    "pad_hits": f"{EVENT_ROOT}/pads/hits",
    "traces": f"{EVENT_ROOT}/traces",
    "padplane": "/padplane",
    "pad_outline": "/padplane/outline",
    "occupancy": "/occupancy",
    "histograms": "/histograms",
    "rates": "/rates",
    "health": "/health",
    "log": "/log",
}

#: Default 3-D camera: from the -y side and above the pad plane, z up (x to the right, +y away from the viewer).
CAMERA = {"position": (0.0, -1150.0, 1200.0), "look_target": (0.0, 0.0, 500.0), "eye_up": (0.0, 0.0, 1.0)}

#: The order histograms take in the grid (others follow in their declared order).
PREFERRED = ("pid", "kinematics", "vertex_z", "beam_spot", "polar", "cluster_multiplicity")


def view_names(histograms: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """(name, dimensions) of the histograms in the order the grid shows them."""
    dims = dict(histograms)
    order = [n for n in PREFERRED if n in dims] + [n for n, _ in histograms if n not in PREFERRED]
    return [(n, dims[n]) for n in order]


def _bounds(x: tuple[float, float], y: tuple[float, float]):
    import rerun.blueprint as rrb

    return rrb.VisualBounds2D(x_range=list(x), y_range=list(y))


def default_blueprint(histograms: list[tuple[str, int]], prefix: str = "", titles: dict[str, str] | None = None,
                      pad_plane: bool = True) -> Any:
    """The layout; ``histograms`` lists (name, dimensions); ``titles`` names their views.

    ``prefix`` is prepended to every entity path (the sink's ``entity_prefix``).
    """
    import rerun.blueprint as rrb

    p = prefix.rstrip("/")
    e = {key: p + path for key, path in ENTITY.items()}
    titles = titles or {}
    plot = _bounds(*CANVAS.bounds())
    plot_1d = _bounds(*CANVAS.bounds(right_margin=60.0))
    w = PLANE_HALF_WIDTH
    plane = _bounds((-w - 100.0, w + 140.0), (-w - 50.0, w + 75.0))
    eye = rrb.EyeControls3D(position=CAMERA["position"], look_target=CAMERA["look_target"], eye_up=CAMERA["eye_up"])
    # the detector, the caption with the track numbers, the helices and vertices
    shown_3d = [f"{e['detector']}/**", e["caption"], f"{e['event']}/tracks"]
    by_charge = rrb.Spatial3DView(origin=p or "/", name="Event 3-D · colour = amplitude (ADC)", eye_controls=eye,
                                  contents=shown_3d + [e["cloud"], f"{e['event']}/colorbar/**", e["colorbar3d"]])
    by_cluster = rrb.Spatial3DView(origin=p or "/", name="Event 3-D · colour = cluster", eye_controls=eye,
                                   contents=shown_3d + [e["clusters"]])
    summary = rrb.TextDocumentView(origin=e["summary"], name="Event & tracks")
    (x_range, (y_low, _)), bottom_margin = CANVAS.bounds(), CANVAS.bottom_margin
    rates = rrb.Spatial2DView(origin=e["rates"], name="Rates vs wall-clock time",
                              visual_bounds=_bounds(x_range, (y_low, FIGURE_HEIGHT + bottom_margin)))
    health = rrb.TextDocumentView(origin=e["health"], name="CoBo / AsAd health")
    log = rrb.TextLogView(origin=e["log"], name="Log")
    traces = rrb.Spatial2DView(origin=e["traces"], name="Traces · event", visual_bounds=plot)
    top: list[Any] = [rrb.Tabs(by_charge, by_cluster, name="3-D")]
    if pad_plane:
        pads = rrb.Spatial2DView(origin=e["padplane"], contents=[f"{e['padplane']}/**", f"{e['event']}/pads/**"],
                                 name="Pad plane · event (seen from +z, as in 3-D)", visual_bounds=plane)
        occupancy = rrb.Spatial2DView(origin=e["padplane"], contents=[f"{e['padplane']}/**", f"{e['occupancy']}/**"],
                                      name="Pad occupancy · run (seen from +z)", visual_bounds=plane)
        top.append(rrb.Tabs(pads, occupancy, name="Pad plane"))
    top.append(traces)
    bottom: list[Any] = [rrb.Tabs(summary, rates, health, log, name="Event, rates, health, log")]
    hist_views = [rrb.Spatial2DView(origin=f"{e['histograms']}/{name}", name=titles.get(name, name),
                                    visual_bounds=plot if dims == 2 else plot_1d)
                  for name, dims in view_names(histograms)]
    if hist_views:
        bottom.append(rrb.Grid(*hist_views, grid_columns=3 if len(hist_views) > 4 else 2, name="Histograms (run)"))
    root = rrb.Vertical(
        rrb.Horizontal(*top, column_shares=[36.0, 32.0, 32.0] if len(top) == 3 else [55.0, 45.0]),
        rrb.Horizontal(*bottom, column_shares=[36.0, 64.0] if len(bottom) == 2 else [100.0]),
        row_shares=[56.0, 44.0],
    )
    return rrb.Blueprint(
        root,
        rrb.BlueprintPanel(state="collapsed"),
        rrb.SelectionPanel(state="collapsed"),
        rrb.TimePanel(timeline="event", state="collapsed"),
    )
