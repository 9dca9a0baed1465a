"""What the view draws for one event: 3-D point cloud and tracks, pad plane, traces, and the track table.

Everything of one event lives under :data:`EVENT_ROOT`, so one recursive
``Clear`` there empties every per-event panel: an event that is not drawn (the
live display is throttled) is logged as that clear plus a header saying so,
and a panel never shows an older event as if it were the current one.

Orientation: the 3-D view's default camera looks from the -y side, above the
pad plane (z = detector length), with z up; on screen x runs to the right and
+y away from the viewer. The pad-plane panels draw the plane as seen from +z:
x to the right, y **up**. Rerun's 2-D views draw y downwards, so pad-plane
positions are logged with y negated (:meth:`EventView.pad_xy`); hover labels
give the true coordinates.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from conduit.artifacts import AMPLITUDE, Direction

from . import arrow, geometry
from .colors import RAMP, ColorScale, label_colors, scale_top
from .plot2d import (ABOVE, AXIS_COLOR, HALF_LINE, TEXT_COLOR, Axis, Figure, Frame, Texts, add_axes, add_colorbar,
                     format_ticks, nice_tick_values)
from .draw import compact, figure_archetypes

__all__ = ["EventView", "EVENT_ROOT", "CAPTION_3D", "COLORBAR_3D", "PADS_FRAME", "TRACES_PLOT", "N_CLASSES", "class_ids", "GET_CLOCK_HZ", "PLANE_HALF_WIDTH"]

EVENT_ROOT = "/event"
#: The 3-D views' words (Points3D): the caption above the chamber, then each track's number ("#k") at its helix's
#: end in its cluster's colour. One entity, so one log call and one array per component for both.
CAPTION_3D = f"{EVENT_ROOT}/caption"
#: The bar of the 3-D colour bar, logged once (static; its tick labels come with each event).
COLORBAR_3D = "/colorbar3d"
#: The pad plane's colour bar (box and ticks: LineStrips2D), its numbers, title and the panel's caption (Points2D).
PADS_FRAME = f"{EVENT_ROOT}/pads/frame"
#: The traces panel: axes and traces (LineStrips2D), axis labels, legend and caption (Points2D).
TRACES_PLOT = f"{EVENT_ROOT}/traces/plot"
GET_CLOCK_HZ = 100e6  # GET timestamps count 100 MHz ticks
N_CLASSES = 64  # annotation classes: 0 = noise, k + 1 = cluster label k (mod 63)
#: Half width of the square the pad-plane panels show (mm).
PLANE_HALF_WIDTH = 280.0
NOISE_COLOR = (120, 120, 130)
#: Colour of the captions saying which event a panel shows.
CAPTION_COLOR = np.array([(230, 230, 230)], dtype=np.uint8)
_NOISE_RGBA = arrow.pack(NOISE_COLOR)[0]
_DIRECTIONS = {Direction.FORWARD: "forward", Direction.BACKWARD: "backward", Direction.NONE: "-"}


def class_ids(labels: np.ndarray) -> np.ndarray:
    """Annotation class of each cluster label: 0 for noise (-1), else label mod 63, plus one."""
    labels = np.asarray(labels, dtype=np.int64)
    return np.where(labels >= 0, labels % (N_CLASSES - 1) + 1, 0).astype(np.uint16)


@dataclasses.dataclass(frozen=True, eq=False)
class _Drawn:
    """A compacted figure's merged lines and texts (:func:`.draw.compact`) as arrays, ready to be joined
    with what an event adds to them."""

    points: np.ndarray  # every strip's points, strip after strip (float64, (N, 2))
    sizes: np.ndarray  # points per strip
    line_colors: np.ndarray  # (strips, 3) uint8
    widths: np.ndarray  # float32 per strip (UI points)
    line_order: float
    text_positions: np.ndarray  # (texts, 2)
    labels: list[str]
    text_colors: np.ndarray  # (texts, 3) uint8
    text_radius: float
    text_order: float
    #: What the rows joining this figure to an event's strips and texts keep once made (see :meth:`lines`).
    made: dict = dataclasses.field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def of(cls, figure: Figure) -> _Drawn:
        merged = compact(figure).parts
        lines, texts = merged["lines"], merged["texts"]
        return cls(np.concatenate([np.asarray(s, dtype=np.float64).reshape(-1, 2) for s in lines.strips]),
                   np.array([len(s) for s in lines.strips], dtype=np.int64), np.asarray(lines.color, np.uint8),
                   np.asarray(lines.width, dtype=np.float32), float(lines.draw_order),
                   np.asarray(texts.positions, dtype=np.float64), list(texts.labels),
                   np.asarray(texts.color, np.uint8), float(texts.radius), float(texts.draw_order))

    def line_buffer(self, n_points: int) -> np.ndarray:
        """float32 (figure points + ``n_points``, 2): the figure's points, then room for an event's strips."""
        fixed = self.made.get("points")
        if fixed is None:
            fixed = self.made["points"] = self.points.astype(np.float32)
        out = np.empty((len(fixed) + n_points, 2), dtype=np.float32)
        out[:len(fixed)] = fixed
        return out

    def lines(self, points: np.ndarray, sizes: tuple[int, ...], colors: Callable[[Any], np.ndarray], width: float,
              order: float, key: Any) -> dict[Any, Any]:
        """The LineStrips2D row of the figure's strips followed by an event's (``points`` from
        :meth:`line_buffer`, ``sizes`` points each, in ``colors(key)``, one ``width`` and draw ``order``): what
        :func:`.draw.figure_archetypes` makes of the compacted whole. Everything but the points is made once
        per ``key`` and strip sizes, so that the viewer is sent it once."""
        made = self.made.get((key, sizes, width, order))
        if made is None:
            n = len(sizes)
            offsets = np.zeros(len(self.sizes) + n + 1, dtype=np.int32)
            np.cumsum(np.concatenate([self.sizes, np.asarray(sizes, dtype=np.int64)]), out=offsets[1:])
            widths = np.concatenate([self.widths, np.full(n, width, dtype=np.float32)])
            made = self.made[(key, sizes, width, order)] = (offsets, arrow.row(
                "LineStrips2D", radii=_interned(arrow.floats(-0.5 * widths)), colors=_interned(arrow.colors(
                    np.concatenate([self.line_colors, colors(key)]))), show_labels=arrow.flag(False),
                draw_order=arrow.floats(max(self.line_order, order) if n else self.line_order, "DrawOrder")))
        offsets, fixed = made
        return {arrow.field("LineStrips2D", "strips"): arrow.offset_strips(points, offsets)} | fixed

    def texts(self, positions: np.ndarray | Callable[[Any], np.ndarray], labels: list[str] | tuple[str, ...],
              colors: Callable[[Any], np.ndarray], key: Any, caption: _Caption) -> dict[Any, Any]:
        """The Points2D row of the figure's texts followed by an event's (``positions``, ``labels`` and their
        colours ``colors(key)``, made once per ``key``; positions given as a function, ``positions(key)``, are
        made once per ``key`` too), then the panel's ``caption`` (its text and anchor): one entity, so one
        log call, for all the words of a panel."""
        made = self.made.get(("texts", key, caption.anchor))
        if made is None:
            made = self.made[("texts", key, caption.anchor)] = arrow.row(
                "Points2D", radii=arrow.floats(-self.text_radius), colors=_interned(arrow.colors(np.concatenate(
                    [self.text_colors, colors(key), CAPTION_COLOR]))), show_labels=arrow.flag(True),
                draw_order=arrow.floats(self.text_order, "DrawOrder"))
            if callable(positions):
                made[arrow.field("Points2D", "positions")] = self._positions(positions(key), caption.anchor)
        if not callable(positions):
            made = {arrow.field("Points2D", "positions"): self._positions(positions, caption.anchor)} | made
        return {arrow.field("Points2D", "labels"): arrow.texts(self.all_labels(labels) + [caption.text])} | made

    def all_labels(self, labels: list[str] | tuple[str, ...]) -> list[str]:
        """The figure's labels followed by an event's (what :meth:`texts` shows before the caption)."""
        return self.labels + list(labels)

    def _positions(self, positions: np.ndarray, anchor: tuple[float, float]) -> Any:
        """Position2D data of the figure's texts followed by ``positions`` and the caption's ``anchor``."""
        return arrow.positions(np.concatenate([self.text_positions, np.reshape(positions, (-1, 2)), [anchor]]), 2)


@dataclasses.dataclass(frozen=True, eq=False)
class _ColourBars:
    """What the 3-D and pad-plane colour bars show of one scale (:meth:`EventView._colour_bars`): the 3-D bar's
    numbers as (entity, row) pairs, and the pad plane's parts (:meth:`EventView._pad_colorbar_parts`)."""

    colorbar3d: list[tuple[str, Any]]
    pads: tuple[Any, ...] | None


@dataclasses.dataclass(frozen=True)
class _Caption:
    """A 2-D panel's caption: its text (which event the panel shows) and its anchor (view units)."""

    text: str
    anchor: tuple[float, float]


_INTERNED: dict[tuple, Any] = {}


def _interned(array: Any) -> Any:
    """One array object per content: the traces panel's axes differ with its y range, their colours and widths
    do not, and an entity is not sent an array it holds (:func:`.arrow.log_row` compares objects)."""
    key = (array.type, array.buffers()[-1].to_pybytes())
    if len(_INTERNED) > 4096:
        _INTERNED.clear()
    return _INTERNED.setdefault(key, array)


class _Ticks:
    """The numbered ticks of a linear colour scale (nice values, their labels and ramp positions), made once
    per colour scale for both colour bars (:meth:`EventView._colour_bars`; a few values: plain floats, numpy's
    per-call cost would be most of it)."""

    def __init__(self, scale: ColorScale):
        self.scale = scale
        self.values = tuple(nice_tick_values(scale.low, scale.high, 4))
        self.labels = _tick_labels(self.values)
        low, span = scale.low, scale.high - scale.low
        # = scale.position(values): the values are finite
        self.position = [min(max((v - low) / span, 0.0), 1.0) for v in self.values]

    def inside(self, frame: Frame) -> tuple[list[float], tuple[str, ...]]:
        """View y and labels of the ticks within the scale's range on a colour bar beside ``frame``
        (as :func:`.plot2d.colorbar_ticks`)."""
        low, high = self.scale.low - 1e-9, self.scale.high + 1e-9
        keep = [low <= v <= high for v in self.values]
        labels = self.labels if all(keep) else _tick_labels(tuple(v for v, k in zip(self.values, keep) if k))
        return [frame.top + (1.0 - p) * frame.height for p, k in zip(self.position, keep) if k], labels


@functools.lru_cache(maxsize=512)
def _tick_labels(values: tuple[float, ...]) -> tuple[str, ...]:
    """:func:`.plot2d.format_ticks` of a colour bar's tick values (the same few recur from event to event)."""
    return tuple(format_ticks(values))


_AXIS_COLORS = np.array([AXIS_COLOR] * 2, dtype=np.uint8)
_ADC_TITLE = ("amplitude (ADC)",)
_NO_LABELS = np.zeros(0, dtype=np.int64)
#: Estimate columns of the track table, in :meth:`EventView.header`'s order.
_TABLE_COLUMNS = ("cluster_label", "polar", "brho", "sqrt_dEdx", "dEdx", "vertex_x", "vertex_y", "vertex_z",
                  "direction", "n_points")
#: Estimate columns the helices are drawn from, in :func:`.kernels.helix_strips`'s order.
_HELIX_COLUMNS = ("center_x", "center_y", "radius", "vertex_x", "vertex_y", "vertex_z", "polar")

#: View x of the 512 time buckets in the traces panel (its x axis is fixed: 0 to 512 TB over 780 units).
_TRACE_X = Frame(Axis(0.0, 512.0, ""), Axis(0.0, 1.0, ""), width=780.0).vx(np.arange(512, dtype=np.float64))

#: A figure with nothing in it (what an event draws is all its content).
_NOTHING = _Drawn(np.zeros((0, 2)), np.zeros(0, dtype=np.int64), np.zeros((0, 3), dtype=np.uint8),
                  np.zeros(0, dtype=np.float32), -math.inf, np.zeros((0, 2)), [], np.zeros((0, 3), dtype=np.uint8),
                  Texts.radius, Texts.draw_order)


@functools.lru_cache(maxsize=64)
def _trace_axes(low: float, high: float) -> tuple[Frame, _Drawn]:
    """The traces panel's frame and axes for one y range in ADC (the range moves in whole tick steps: few
    distinct ones)."""
    frame = Frame(Axis(0.0, 512.0, "time bucket (TB)", ticks=(0, 100, 200, 300, 400, 500)),
                  Axis(low, high, "ADC (raw samples)"), width=780.0)
    fig = Figure()
    add_axes(fig, frame)
    return frame, _Drawn.of(fig)


def pad_frame() -> Frame:
    """The frame of the pad-plane panels: mm on both axes, y up."""
    w = PLANE_HALF_WIDTH
    return Frame(Axis(-w, w, "x (mm)", ticks=(-200, -100, 0, 100, 200)),
                 Axis(-w, w, "y (mm)", ticks=(-200, -100, 0, 100, 200)), left=-w, top=-w, width=2 * w, height=2 * w)


class EventView:
    """Builds the (entity path, row) pairs of one event's panels (rows: :func:`.arrow.row`, or archetypes for
    the rare markers): a drawn event's arrays come from a few compiled passes (:mod:`.kernels`) and parts
    that do not change are made once, so that the viewer is sent them once."""

    def __init__(self, rr: Any, context, params, prefix: str = ""):
        self.rr = rr
        self.context = context
        self.params = params
        self.length = float(context.detector.detector_length)
        self.field = float(context.detector.magnetic_field)
        self.frame = pad_frame()
        self.pads = context.pads if params.pad_plane else None
        from . import kernels  # numba: loaded when a run starts, not when stages are listed

        self.kernels = kernels
        self._captions: tuple[np.ndarray, Any, dict[Any, Any]] | None = None  # the 3-D caption's constants
        self._hover: tuple[Any, ...] | None = None
        self._colorbar_fixed: list[Any] | None = None
        #: Per colour-scale top: the scale and its colour bars (:meth:`_colour_bars`).
        self._bars: dict[float, tuple[ColorScale, _ColourBars]] = {}
        self._clear: list[Any] | None = None  # a drawn event's recursive clear and its summary's media type
        #: Entities under EVENT_ROOT logged since its last recursive clear: the viewer shows them (latest-at).
        self._shown: set[str] = set()
        self._markdown: list[Any] = []
        #: Per 2-D panel (its Points2D entity): the labels it shows before its caption; for :data:`CAPTION_3D`,
        #: the track numbers it shows after it (see :meth:`relabel`).
        self._labels: dict[str, list[str]] = {}
        if self.pads is not None:
            self._pad_tables()  # when the run opens, not at its first event

    # -- helpers ---------------------------------------------------------------------------

    def pad_xy(self, ids: np.ndarray) -> np.ndarray:
        """(N, 2) positions of pads in the pad-plane panels (x, -y: y up on screen)."""
        return self.frame.points(self.pads.x[ids], self.pads.y[ids])

    def statics(self) -> list[tuple[str, Any]]:
        """The chamber, the axes of both frames, the cluster classes and the pad outline (logged once)."""
        rr = self.rr
        out: list[tuple[str, Any]] = [
            ("/", rr.ViewCoordinates.RIGHT_HAND_Z_UP),  # z along the beam, towards the pad plane
            ("/detector/chamber", rr.LineStrips3D(geometry.chamber_outline(self.length), radii=-0.6,
                                                  colors=(110, 110, 125))),
            ("/detector/axes", rr.Arrows3D(origins=[[0, 0, 0]] * 3, vectors=[[150, 0, 0], [0, 150, 0], [0, 0, 150]],
                                           colors=[(230, 80, 80), (80, 210, 80), (90, 140, 255)],
                                           labels=["x", "y", "z (beam)"], radii=-1.0)),
        ]
        colors = label_colors(N_CLASSES - 1)
        infos = [rr.AnnotationInfo(id=0, label="noise", color=NOISE_COLOR)]
        infos += [rr.AnnotationInfo(id=k + 1, label=f"cluster {k}", color=tuple(int(c) for c in colors[k]))
                  for k in range(N_CLASSES - 1)]
        out.append((EVENT_ROOT, rr.AnnotationContext(infos)))
        out.append(self._colorbar3d_static())
        if self.pads is not None:
            if self.pads.vertices is not None:
                v = self.pads.vertices
                flat = self.frame.points(v[..., 0].reshape(-1), v[..., 1].reshape(-1)).reshape(v.shape)
                outline = rr.LineStrips2D(geometry.pad_outlines(flat), radii=-0.3, colors=(48, 48, 58),
                                          draw_order=1.0)
            else:
                outline = rr.Points2D(self.pad_xy(np.arange(self.pads.n_pads)), radii=-1.0, colors=(48, 48, 58),
                                      draw_order=1.0)
            out.append(("/padplane/outline", outline))
            axes = Figure()
            add_axes(axes, self.frame, grid=False)
            add_colorbar(axes, self.frame, ColorScale(0.0, 1.0), "")
            axes.parts = {k: v for k, v in axes.parts.items() if not k.startswith("colorbar/") or k.endswith("image")}
            out += figure_archetypes(rr, "/padplane", axes)  # the colour bar's gradient; its numbers come per view
        return out

    # -- one event ---------------------------------------------------------------------------

    def header(self, event, run: int, note: str = "") -> str:
        """Markdown: run, event, GET time, completeness, tracks, and the track table."""
        estimates = event.get("estimates")
        n_tracks = 0 if estimates is None else len(estimates)
        cloud = event.get("cloud")
        state = "complete" if event.complete else f"incomplete: {len(event.missing)} AsAd(s) missing"
        parts = [f"**Run {run} · event {event.id}**", f"GET time {event.timestamp / GET_CLOCK_HZ:.6f} s", state,
                 f"{event.n_traces} traces"]
        if cloud is not None:
            parts.append(f"{len(cloud)} points")
        parts.append(f"{n_tracks} track{'s' if n_tracks != 1 else ''}" if estimates is not None else "not analysed")
        lines = [" · ".join(parts)]
        if note:
            lines += ["", note]
        if estimates is not None and n_tracks:
            lines += ["", "| track | cluster | θ (°) | Bρ (T·m) | √(dE/dx) | dE/dx (ADC·TB/mm) | vertex x, y, z (mm) "
                          "| direction | points |", "|---|---:|---:|---:|---:|---:|---:|---|---:|"]
            # the table's columns as Python numbers at once (a field of a numpy row at a time is slow)
            for k, (label, polar, brho, sqrt_dedx, dedx, x, y, z, direction, points) in enumerate(
                    estimates[list(_TABLE_COLUMNS)].tolist()):
                lines.append(
                    f"| #{k} | {int(label)} | {math.degrees(float(polar)):.1f} | {float(brho):.3f} "
                    f"| {float(sqrt_dedx):.1f} | {float(dedx):.0f} | {float(x):.1f}, {float(y):.1f}, {float(z):.1f} "
                    f"| {_DIRECTIONS.get(int(direction), str(int(direction)))} | {int(points)} |")
        return "\n".join(lines)

    def captions(self, text: str, ends: np.ndarray | None = None, classes: tuple[int, ...] = ()
                 ) -> list[tuple[str, Any]]:
        """The one-line caption every per-event panel carries: which event the panel shows. The 3-D views'
        is one entity with the track numbers (:data:`CAPTION_3D`: the caption above the chamber, then "#k" at
        each helix's end, ``ends`` (float32, (tracks, 3)), in the colour of its annotation class ``classes``);
        the 2-D panels' come with their texts (:meth:`relabel`).

        Only the text and the ends change: the other components are built once (:mod:`.arrow`) and logged
        with them.
        """
        if self._captions is None:
            anchor = np.array([[0.0, 0.0, self.length + 80.0]], dtype=np.float32)
            self._captions = (anchor, arrow.positions(anchor, 3), arrow.row(
                "Points3D", radii=arrow.floats(-0.5), show_labels=arrow.flag(True)))
        anchor, alone, fixed = self._captions
        n = 0 if ends is None else len(ends)
        numbers = _TRACK_NUMBERS[:n] if n <= len(_TRACK_NUMBERS) else [f"#{k}" for k in range(n)]
        self._labels[CAPTION_3D] = numbers
        positions = arrow.positions(np.concatenate([anchor, ends]), 3) if n else alone
        return [(CAPTION_3D, {arrow.field("Points3D", "positions"): positions,
                              arrow.field("Points3D", "labels"): arrow.texts([text, *numbers]),
                              arrow.field("Points3D", "colors"): _caption_colors(classes)} | fixed)]

    def _caption(self, path: str, text: str) -> _Caption:
        """The caption of the 2-D panel whose texts are ``path``: above the pad plane, or above the traces."""
        if path == PADS_FRAME:
            return _Caption(text, (0.0, self.frame.top - 0.6 * 88.0 * self.frame.width / 1000.0))
        return _Caption(text, (700.0, -88.0))

    def _panels_2d(self) -> tuple[str, ...]:
        """The 2-D panels with a caption (their Points2D entity): the pad plane's when drawn, the traces'."""
        return (PADS_FRAME, TRACES_PLOT) if self.pads is not None else (TRACES_PLOT,)

    def _caption_only(self, path: str, text: str) -> tuple[str, Any]:
        """The row of a 2-D panel that shows nothing of this event but its caption (no lines left over)."""
        caption = self._caption(path, text)
        self._labels[path] = []
        return path, {arrow.field("LineStrips2D", "strips"): _no_strips()} | _NOTHING.texts(
            np.zeros((0, 2)), (), _no_colors, "caption only", caption)

    def relabel(self, text: str, shown: int | None) -> list[tuple[str, Any]]:
        """The 3-D caption and the 2-D panels' texts with the caption ``text`` (an event not drawn or not
        received): a panel that shows the drawn event ``shown`` gets only its labels again (its positions
        hold, latest-at), one that shows nothing its caption alone."""
        numbers = self._labels.get(CAPTION_3D) if shown is not None else None
        if numbers is None:
            out = self.captions(text)
        else:  # the numbers' positions and colours hold (latest-at)
            out = [(CAPTION_3D, {arrow.field("Points3D", "labels"): arrow.texts([text, *numbers])})]
        for path in self._panels_2d():
            labels = self._labels.get(path) if shown is not None else None
            if labels is None:
                out.append(self._caption_only(path, text))
            else:
                out.append((path, {arrow.field("Points2D", "labels"): arrow.texts(labels + [text])}))
        return out

    def not_drawn(self, event, run: int, reason: str, shown: int | None) -> list[tuple[str, Any]]:
        """Logged at the first event of a stretch that is not drawn; it holds until the next drawn event.

        The panels keep the last drawn event (``shown``) and every caption says so.
        """
        rr = self.rr
        where = f"the panels show event {shown}" if shown is not None else "no event drawn yet"
        text = (f"**Run {run} · events from {event.id} on**\n\n*Not drawn: {reason}; {where}. The next drawn "
                f"event replaces this note.*")
        out: list[tuple[str, Any]] = [] if shown is not None else [(EVENT_ROOT, rr.Clear(recursive=True))]
        out.append((f"{EVENT_ROOT}/summary", rr.TextDocument(text, media_type="text/markdown")))
        caption = f"events from {event.id} not drawn" + (f" · showing event {shown}" if shown is not None else "")
        return self._track(out + self.relabel(caption, shown))

    def not_received(self, first: int, last: int, run: int, shown: int | None) -> list[tuple[str, Any]]:
        """Logged at event ``first`` when events ``first``..``last`` never reached the view (captions say so)."""
        rr = self.rr
        span = f"event {first}" if first == last else f"events {first} to {last}"
        text = (f"**Run {run} · {span}**\n\n*Not received by the view: dropped before the view (live source "
                f"or view behind; see the summary) or absent from the source"
                + (f"; the panels show event {shown}.*" if shown is not None else ".*"))
        out: list[tuple[str, Any]] = [] if shown is not None else [(EVENT_ROOT, rr.Clear(recursive=True))]
        out.append((f"{EVENT_ROOT}/summary", rr.TextDocument(text, media_type="text/markdown")))
        return self._track(out + self.relabel(f"{span} not received"
                                              + (f" · showing event {shown}" if shown is not None else ""), shown))

    def draw(self, event, run: int, charges: tuple[np.ndarray, np.ndarray] | None = None,
             maxima: np.ndarray | None = None, picked: tuple[np.ndarray, list[str]] | None = None
             ) -> list[tuple[str, Any]]:
        """Everything drawn for one event (after a recursive clear of the previous one when it drew an entity
        this one does not), as (entity, row) pairs (:func:`.arrow.row`).

        ``charges`` is (pad ids, amplitude) of the event's traces when already computed (the sink
        passes :func:`.kernels.peak_heights`, also counted for the occupancy), else
        :func:`.geometry.pad_charges`; ``maxima`` the largest sample of each trace, when known
        (:func:`.kernels.peaks`); ``picked`` the traces panel's rows and note when already chosen
        (:meth:`pick_traces`: then ``event`` needs no trace matrix, only ``n_traces``, as in the draw process).
        """
        rr = self.rr
        if self._clear is None:
            self._clear = arrow.fixed(rr.Clear(recursive=True))
            self._markdown = arrow.fixed(rr.TextDocument.from_fields(media_type="text/markdown"))
        out: list[tuple[str, Any]] = []
        ids, amplitude = charges if charges is not None else geometry.pad_charges(event.traces)
        cloud = event.get("cloud")
        clusters = event.get("clusters")
        estimates = event.get("estimates")
        # The 99th percentile of the amplitudes (ColorScale.for_values, one compiled pass), rounded up to a
        # round number: the colour bars of a scale are then made once and sent only when the scale changes.
        scale, bars = self._colour_bars(scale_top(float(self.kernels.finite_percentile(
            np.ascontiguousarray(amplitude, dtype=np.float64), 99.0))))
        labels = None
        if cloud is not None and clusters is not None and len(clusters.labels) == len(cloud):
            labels = np.asarray(clusters.labels)
        n_tracks = 0 if estimates is None else len(estimates)
        out.append((f"{EVENT_ROOT}/summary", {arrow.field("TextDocument", "text"): arrow.texts([
            self.header(event, run)])} | self._markdown))
        caption = (f"run {run} · event {event.id} · t = {event.timestamp / GET_CLOCK_HZ:.6f} s · "
                   f"{n_tracks} track{'s' if n_tracks != 1 else ''}")
        ends, classes = None, ()
        if estimates is not None and n_tracks:
            tracks, ends, classes = self._tracks(estimates)
            out.append(tracks)
        out += self.captions(caption, ends, classes)
        if cloud is not None and len(cloud):
            out += self._cloud(cloud, labels, scale)
        out += bars.colorbar3d
        if self.pads is not None and event.n_traces:
            out += self._pad_hits(ids, amplitude, scale, bars, caption)
        if self.params.traces and event.n_traces:
            if picked is None:
                picked = self.pick_traces(event.traces, amplitude, cloud, labels, maxima)
            out += self._traces(*picked, caption)
        drawn = {path for path, _ in out}
        out += [self._caption_only(path, caption) for path in self._panels_2d() if path not in drawn]
        if not self._shown <= {path for path, _ in out}:
            # An entity of an earlier event that this one does not draw (its tracks, its clusters ...) would
            # still show: clear them all first. Otherwise every shown entity is replaced and a clear (one
            # more log call per drawn event) changes nothing.
            out.insert(0, (EVENT_ROOT, self._clear))
        return self._track(out)

    def drawn_elsewhere(self) -> None:
        """Per-event entities this view did not log may show (the draw process drew them): the next drawn event
        clears them first."""
        self._shown = self._shown | {f"{EVENT_ROOT}/(drawn elsewhere)"}

    def _track(self, out: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
        """Remember which per-event entities the viewer shows once ``out`` is logged; returns ``out``."""
        paths = {path for path, _ in out}
        self._shown = paths - {EVENT_ROOT} if EVENT_ROOT in paths else self._shown | paths
        return out

    def _cloud(self, cloud: np.ndarray, labels: np.ndarray | None, scale: ColorScale) -> list[tuple[str, Any]]:
        """Cloud points coloured by charge (noise grey and small) and, when clustered, their classes: one
        compiled pass (:func:`.kernels.cloud_columns`)."""
        given = np.asarray(labels, dtype=np.int64) if labels is not None else _NO_LABELS
        xyz, colors, radii, classes = self.kernels.cloud_columns(
            np.ascontiguousarray(cloud, dtype=np.float64), AMPLITUDE, given, scale.low, scale.high, RAMP, _NOISE_RGBA,
            N_CLASSES)
        xyz = arrow.positions(xyz, 3)  # one array for both entities
        if labels is None:
            return [(f"{EVENT_ROOT}/cloud", arrow.row("Points3D", positions=xyz, radii=arrow.floats(-2.0),
                                                      colors=arrow.rgba(colors)))]
        return [(f"{EVENT_ROOT}/cloud", arrow.row("Points3D", positions=xyz, radii=arrow.floats(radii),
                                                  colors=arrow.rgba(colors))),
                (f"{EVENT_ROOT}/clusters", arrow.row("Points3D", positions=xyz, radii=arrow.floats(-2.0),
                                                     class_ids=arrow.class_ids(classes)))]

    def _tracks(self, estimates: np.ndarray) -> tuple[tuple[str, Any], np.ndarray, tuple[int, ...]]:
        """Each track's helix (:func:`.kernels.helix_strips`: :func:`.geometry.helices` compiled) and its vertex;
        with the helices' ends and the tracks' annotation classes (where :meth:`captions` puts their numbers)."""
        columns = [np.ascontiguousarray(estimates[name], dtype=np.float64) for name in _HELIX_COLUMNS]
        points, offsets, ends, vertices, classes = self.kernels.helix_strips(
            *columns, np.ascontiguousarray(estimates["cluster_label"], dtype=np.int64),
            geometry.turning_sense(self.field), self.length, geometry.CHAMBER_RADIUS, self.params.helix_points,
            N_CLASSES)
        ids = tuple(classes.tolist())
        classes = _classes(ids)  # the same few from event to event: sent once while so
        hidden = arrow.flag(False)
        # helices and vertices in one entity (LineStrips3D and Points3D components side by side): one log call
        return ((f"{EVENT_ROOT}/tracks", arrow.row("LineStrips3D", strips=arrow.offset_strips(points, offsets, 3),
                                                   radii=arrow.floats(-1.5), class_ids=classes, show_labels=hidden)
                 | arrow.row("Points3D", positions=arrow.positions(vertices, 3), radii=arrow.floats(-4.0),
                             class_ids=classes, show_labels=hidden)), ends, ids)

    def _colour_bars(self, high: float) -> tuple[ColorScale, _ColourBars]:
        """The linear scale 0..``high`` and what both colour bars show of it, made once per ``high`` (a round
        number: :func:`.colors.scale_top`), so that an entity showing it already is not sent it again."""
        made = self._bars.get(high)
        if made is None:
            if len(self._bars) > 512:
                self._bars.clear()
            scale = ColorScale(0.0, high)
            ticks = _Ticks(scale)  # both colour bars number the same scale
            made = self._bars[high] = (scale, _ColourBars(
                self._colorbar3d(ticks), self._pad_colorbar_parts(ticks) if self.pads is not None else None))
        return made

    def _colorbar3d(self, ticks: _Ticks) -> list[tuple[str, Any]]:
        """The ADC tick labels of the vertical colour bar beside the chamber (the bar itself is static:
        the ramp runs bottom to top whatever the event's range)."""
        if self._colorbar_fixed is None:
            self._colorbar_fixed = arrow.fixed(self.rr.Points3D.from_fields(radii=-0.5, colors=(220, 220, 220),
                                                                           show_labels=True))
        x = geometry.CHAMBER_RADIUS + 70.0 + 40.0
        positions = [(x, 0.0, p * self.length) for p in ticks.position] + [(x, 0.0, self.length + 40.0)]
        return [(f"{EVENT_ROOT}/colorbar/labels", self._colorbar_fixed | arrow.row(
            "Points3D", positions=arrow.positions(np.array(positions), 3), labels=_texts(ticks.labels + _ADC_TITLE)))]

    def _colorbar3d_static(self) -> tuple[str, Any]:
        """The bar of :meth:`_colorbar3d`: 100 points coloured along the ramp, x = radius + 70 mm, along z."""
        x = geometry.CHAMBER_RADIUS + 70.0
        z = (np.arange(100) + 0.5) * (self.length / 100)
        bar = np.column_stack([np.full(100, x), np.zeros(100), z])
        return COLORBAR_3D, self.rr.Points3D(bar, radii=-5.0, colors=ColorScale(0.0, 1.0).colors(
            (z / self.length)))

    def _pad_hits(self, ids: np.ndarray, amplitude: np.ndarray, scale: ColorScale, bars: _ColourBars | None = None,
                  caption: str = "") -> list[tuple[str, Any]]:
        """A marker per trace on the plane at its pad, coloured by amplitude, with the hover text "pad P: A ADC"
        (A rounded half to even, as ``f"{a:.0f}"``): one compiled pass (:func:`.kernels.pad_markers`)."""
        table, fixed = self._pad_tables()
        positions, sizes, colors, offsets, text, exact = self.kernels.pad_markers(
            np.ascontiguousarray(ids, dtype=np.int64), np.ascontiguousarray(amplitude, dtype=np.float64), table,
            scale.low, scale.high, RAMP)
        if not len(sizes):
            return []
        if exact:
            labels = arrow.utf8(offsets, text)
        else:  # a negative or huge amplitude (never with 12-bit ADCs)
            ok = (ids >= 0) & (ids < self.pads.n_pads)
            labels = arrow.texts([f"pad {p}: {a:.0f} ADC" for p, a in zip(ids[ok].tolist(), amplitude[ok].tolist())])
        out: list[tuple[str, Any]] = [(f"{EVENT_ROOT}/pads/hits", fixed | arrow.row(
            "Points2D", positions=arrow.positions(positions, 2), radii=arrow.floats(sizes),
            colors=arrow.rgba(colors), labels=labels))]
        return out + self._pad_colorbar(bars or self._colour_bars(scale.high)[1], caption)

    def _pad_colorbar(self, bars: _ColourBars, caption: str = "") -> list[tuple[str, Any]]:
        """The pad plane's colour bar (:meth:`_pad_colorbar_parts`) with the panel's caption, in one entity."""
        lines, positions, texts, key = bars.pads
        self._labels[PADS_FRAME] = _NOTHING.all_labels(texts)
        return [(PADS_FRAME, lines | _NOTHING.texts(positions, texts, _colorbar_text_colors, key,
                                                    self._caption(PADS_FRAME, caption)))]

    def _pad_colorbar_parts(self, ticks: _Ticks) -> tuple[dict[Any, Any], Callable[[Any], np.ndarray],
                                                           tuple[str, ...], tuple[int, float]]:
        """The pad plane's colour-bar box, ticks and numbers for a scale (the gradient is static): what
        ``add_colorbar(..., gradient=False)`` draws, compacted, without building the figure. Returns the
        LineStrips2D row, the numbers' positions (as :meth:`_Drawn.texts` takes them, made once per key),
        their texts and that key."""
        frame = self.frame
        u = frame.width / 1000.0
        left, width = frame.right + 35.0 * u, 35.0 * u
        right = left + width
        top, bottom = frame.top, frame.bottom
        ys, labels = ticks.inside(frame)
        # the box, then comb(ys, right, 15 u, bottom, top, vertical=True): one strip with a tick at each y
        tick = right + 15.0 * u
        points = [(left, top), (right, top), (right, bottom), (left, bottom), (left, top), (right, bottom)]
        for y in ys:
            points += [(right, y), (tick, y), (right, y)]
        points.append((right, top))
        n = len(ys)
        text_x, raise_by = right + 80.0 * u, HALF_LINE * u
        positions = [(text_x, y - raise_by) for y in ys] + [(left + 0.5 * width, top - ABOVE * u)]
        xy = np.array(positions)
        return (_NOTHING.lines(np.array(points, dtype=np.float32), (5, 3 * n + 2), _axis_colors, 1.0, 20.0,
                               "pad colour bar"), lambda key: xy, labels + _ADC_TITLE, (n, ticks.scale.high))

    def _pad_tables(self) -> tuple[Any, ...]:
        """Per pad, built once: panel position and marker radius as one float32 row (x, y, radius, spare: one
        cache line per pad for :func:`.kernels.pad_markers`), and the hit markers' fixed components."""
        if self._hover is None:
            pads = self.pads
            table = np.zeros((pads.n_pads, 4), dtype=np.float32)
            table[:, :2] = self.pad_xy(np.arange(pads.n_pads))
            table[:, 2] = 2.6 * pads.scale
            fixed = arrow.fixed(self.rr.Points2D.from_fields(show_labels=False, draw_order=2.0))
            self._hover = (table, fixed)
        return self._hover

    def pick_traces(self, traces: np.ndarray, amplitude: np.ndarray, cloud, labels, maxima=None
                    ) -> tuple[np.ndarray, list[str]]:
        """The rows of ``traces`` the traces panel draws (a copy: contiguous and writable) and the lines saying
        what they are (:func:`.geometry.select_traces`)."""
        if self.params.traces == "strongest" and maxima is not None and self.params.trace_count > 0:
            # = geometry.select_traces(...) in one compiled pass
            rows, saturated = self.kernels.top_rows(np.ascontiguousarray(amplitude, dtype=np.float64),
                                                    np.ascontiguousarray(maxima, dtype=np.int64),
                                                    geometry.SATURATION_ADC, self.params.trace_count)
            what = geometry.strongest_note(saturated)
        else:
            rows, what = geometry.select_traces(traces, amplitude, self.params.traces, self.params.trace_count,
                                                cloud, labels, maxima)
        return traces[rows], what

    def _traces(self, picked: np.ndarray, what: list[str], caption: str = "") -> list[tuple[str, Any]]:
        """The traces panel: axes for the picked traces' range, their polylines, legend and caption."""
        kernels = self.kernels
        n = len(picked)
        low, high = kernels.sample_range(picked)
        low, high = float(low), float(high)
        ticks = nice_tick_values(low, high, 4)
        step = ticks[1] - ticks[0] if len(ticks) > 1 else 100.0
        low, high = math.floor(low / step) * step, math.ceil(high / step) * step
        if high <= low:
            high = low + step
        frame, axes = _trace_axes(low, min(high, 4100.0) if high > 4000 else high)
        # Every trace's polyline at once into the strips' buffer (raw samples are integers: never NaN).
        points = axes.line_buffer(n * 512)
        kernels.trace_polylines(picked, frame.y.low, frame.y.high, frame.top, frame.height, _TRACE_X,
                                     points[len(points) - n * 512:])
        legend_text = [f"pad {p}  ({c}/{a}/{g}/{ch})" for c, a, g, ch, p in picked[:, :5].tolist()]
        legend_text += ["(CoBo/AsAd/AGET/ch)"] + [line for line in what if line]
        notes = len(legend_text) - n
        # The axes (built once per y range) then the traces, as the compacted figure of both would be.
        self._labels[TRACES_PLOT] = axes.all_labels(legend_text)
        return [(TRACES_PLOT, axes.lines(points, (512,) * n, _trace_colors, 1.6, 25.0, n)
                 | axes.texts(_legend_xy, legend_text, _legend_colors, (n, notes), self._caption(TRACES_PLOT, caption)))]


def _legend_xy(key: tuple[int, int]) -> np.ndarray:
    """Positions of the traces panel's legend of ``n`` traces and ``notes`` lines below (right of the plot, one
    under the other)."""
    n = sum(key)
    return np.column_stack([np.full(n, 920.0), 62.0 * np.arange(n)])


def _trace_colors(n: int) -> np.ndarray:
    """Colours of ``n`` traces."""
    return label_colors(max(n, 1))[:n]


def _legend_colors(key: tuple[int, int]) -> np.ndarray:
    """Colours of the legend of ``n`` traces and ``notes`` lines below: one per trace (its line's), then grey."""
    n, notes = key
    note_colors = np.full((notes, 3), 170, dtype=np.uint8)
    note_colors[:, 2] = 180
    return np.vstack([_trace_colors(n), note_colors])


@functools.cache
def _no_strips() -> Any:
    """LineStrips2D data of no strip (a panel's lines emptied; made on first use: Rerun loads with the run)."""
    return arrow.offset_strips(np.zeros((0, 2), dtype=np.float32), np.zeros(1, dtype=np.int32))


def _no_colors(key: Any) -> np.ndarray:
    """No colours (a panel showing only its caption)."""
    return _NO_COLORS


_NO_COLORS = np.zeros((0, 3), dtype=np.uint8)


def _axis_colors(key: Any) -> np.ndarray:
    """The pad colour bar's two strips (box, ticks) in the axes' colour."""
    return _AXIS_COLORS


def _colorbar_text_colors(key: tuple[int, float]) -> np.ndarray:
    """The pad colour bar's ``n`` numbers (``key`` = (n, scale top)), then its title in white."""
    return np.array([TEXT_COLOR] * key[0] + [(255, 255, 255)], dtype=np.uint8)


@functools.lru_cache(maxsize=256)
def _classes(ids: tuple[int, ...]) -> Any:
    """ClassId data of an event's tracks (one array per distinct list: an entity holding it is not sent it
    again)."""
    return arrow.class_ids(np.array(ids, dtype=np.uint16))


#: The track numbers "#0" .. "#63" (more tracks are numbered on the fly).
_TRACK_NUMBERS = [f"#{k}" for k in range(64)]


@functools.cache
def _class_rgba() -> np.ndarray:
    """Packed colour of each annotation class (the AnnotationContext of :meth:`EventView.statics`): 0 noise,
    k + 1 cluster k."""
    return arrow.pack(np.vstack([np.array([NOISE_COLOR], dtype=np.uint8), label_colors(N_CLASSES - 1)]))


@functools.lru_cache(maxsize=256)
def _caption_colors(classes: tuple[int, ...]) -> Any:
    """Colour data of :data:`CAPTION_3D`: the caption's, then each track number's, its class colour (as the
    track numbers had when they took their colour from their class id). One array per distinct list: the
    entity is not sent it again while the list stays."""
    return arrow.rgba(np.concatenate([arrow.pack(CAPTION_COLOR), _class_rgba()[np.asarray(classes, dtype=np.int64)]]))


@functools.lru_cache(maxsize=256)
def _texts(labels: tuple[str, ...]) -> Any:
    """Text data of a few labels that recur (the colour bars' tick numbers)."""
    return arrow.texts(list(labels))
