"""Plots drawn as 2-D primitives: numbered axes with titles and units, colour bars, heat maps, step histograms.

Rerun 0.41 has no plot view with a free x axis, titled axes or a colour bar:
the tensor view has no axes at all, the bar chart and time-series views have
numbered but untitled axes (and the time series' x is always the selected
timeline). So every histogram and rate plot is built here from plain
primitives (line strips, text labels, one image) that a Spatial2DView shows:
this module computes them with numpy only (testable without rerun), and
:mod:`.draw` turns them into Rerun archetypes.

Coordinates: a plot lives in "view units" with y pointing **down** (as Rerun's
2-D views draw it); :class:`Frame` maps data values to view units with data y
pointing **up**. Every plot uses the same canvas (:data:`CANVAS`) so that one
set of visual bounds in the blueprint frames them all.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence

import numpy as np

from .colors import ColorScale, count_colors, ramp

__all__ = [
    "Axis",
    "Frame",
    "Lines",
    "Texts",
    "Picture",
    "Figure",
    "CANVAS",
    "nice_ticks",
    "nice_tick_values",
    "nice_upper",
    "log_ticks",
    "format_ticks",
    "add_axes",
    "add_colorbar",
    "colorbar_ticks",
    "comb",
    "add_heatmap",
    "add_steps",
    "add_series",
    "add_legend",
    "add_polygon",
    "stacked_frames",
]

AXIS_COLOR = (190, 190, 200)
# Rerun draws a label's text box *below* its anchor point, in screen pixels: a line of text is ~16 px,
# i.e. ~75 view units in the smallest grid cell of the default layout. Offsets (view units per 1000
# units of frame width) that keep labels clear of the frame there and near it when maximized:
TEXT_GAP = 12.0  # frame edge -> first line of text below it
SECOND_LINE = 95.0  # frame edge -> second line of text below it (axis title)
ABOVE = 88.0  # anchor of a line of text above the frame
HALF_LINE = 10.0  # raise a label by this to bring it near the middle of its tick
TEXT_COLOR = (225, 225, 230)
GRID_COLOR = (55, 55, 64)


@dataclasses.dataclass(frozen=True)
class Canvas:
    """Where a plot's frame sits in view units, and the bounds that show it with its margins."""

    width: float = 1000.0
    height: float = 520.0
    left_margin: float = 175.0
    right_margin: float = 195.0
    top_margin: float = 95.0
    bottom_margin: float = 175.0

    def bounds(self, right_margin: float | None = None) -> tuple[tuple[float, float], tuple[float, float]]:
        """((x_min, x_max), (y_min, y_max)) of the visible region (``right_margin`` narrower without colour bar)."""
        right = self.right_margin if right_margin is None else right_margin
        return ((-self.left_margin, self.width + right), (-self.top_margin, self.height + self.bottom_margin))


#: The canvas every plot is drawn on.
CANVAS = Canvas()


@dataclasses.dataclass(frozen=True)
class Axis:
    """One plot axis: data range [low, high], title with unit."""

    low: float
    high: float
    title: str
    ticks: tuple[float, ...] | None = None  # None: nice ticks over the range

    def __post_init__(self) -> None:
        if not self.high > self.low:
            object.__setattr__(self, "high", self.low + 1.0)

    def tick_values(self, target: int = 5) -> np.ndarray:
        return np.asarray(self.ticks, dtype=np.float64) if self.ticks is not None else nice_ticks(
            self.low, self.high, target)


@dataclasses.dataclass(frozen=True)
class Frame:
    """A plot rectangle (view units, top-left at (left, top)) and the data axes it maps."""

    x: Axis
    y: Axis
    left: float = 0.0
    top: float = 0.0
    width: float = CANVAS.width
    height: float = CANVAS.height

    def vx(self, values) -> np.ndarray:
        """View x of data x values (clipped to the frame)."""
        t = (np.asarray(values, dtype=np.float64) - self.x.low) / (self.x.high - self.x.low)
        return self.left + np.clip(t, 0.0, 1.0) * self.width

    def vy(self, values) -> np.ndarray:
        """View y of data y values: high values at the top (clipped to the frame)."""
        t = (np.asarray(values, dtype=np.float64) - self.y.low) / (self.y.high - self.y.low)
        return self.top + (1.0 - np.clip(t, 0.0, 1.0)) * self.height

    def points(self, x, y) -> np.ndarray:
        """(N, 2) view positions of data points."""
        return np.column_stack([self.vx(x), self.vy(y)])

    @property
    def right(self) -> float:
        return self.left + self.width

    @property
    def bottom(self) -> float:
        return self.top + self.height


@dataclasses.dataclass
class Lines:
    """Line strips in view units; ``width`` in UI points (constant on screen); ``color`` one RGB or one per strip."""

    strips: list[np.ndarray]
    color: tuple[int, int, int] | np.ndarray = AXIS_COLOR
    width: float | np.ndarray = 1.0  # one width, or one per strip
    labels: list[str] | None = None
    draw_order: float = 20.0


@dataclasses.dataclass
class Texts:
    """Text labels centred on ``positions`` (view units); ``hover_only`` keeps them for the tooltip."""

    positions: np.ndarray
    labels: list[str]
    color: tuple[int, int, int] | np.ndarray = TEXT_COLOR
    hover_only: bool = False
    radius: float = 0.5  # UI points: the anchor dot, nearly invisible
    draw_order: float = 30.0


@dataclasses.dataclass
class Picture:
    """An RGB image (rows top to bottom) stretched over the rectangle (left, top, width, height)."""

    rgb: np.ndarray
    left: float
    top: float
    width: float
    height: float
    draw_order: float = 0.0


@dataclasses.dataclass
class Figure:
    """Named primitives; each is logged to ``<figure path>/<name>``."""

    parts: dict[str, Lines | Texts | Picture] = dataclasses.field(default_factory=dict)

    def add(self, name: str, part: Lines | Texts | Picture) -> None:
        self.parts[name] = part


# -- ticks ------------------------------------------------------------------------------------


def nice_ticks(low: float, high: float, target: int = 5) -> np.ndarray:
    """Round tick values (steps of 1, 2, 2.5 or 5 times a power of ten) inside [low, high]."""
    return np.array(nice_tick_values(low, high, target), dtype=np.float64)


def nice_tick_values(low: float, high: float, target: int = 5) -> list[float]:
    """:func:`nice_ticks` as plain floats (a few values: numpy's per-call cost would be most of the time).

    The values are ``np.round(np.arange(first, high + step * 1e-6, step) / step) * step``, bit for bit:
    ``arange`` fills item ``i >= 2`` as ``first + i * ((first + step) - first)``, and rounds half to even.
    """
    span = high - low
    if not math.isfinite(span) or span <= 0:
        return [float(low)]
    raw = span / max(target, 1)
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1.0, 2.0, 2.5, 5.0, 10.0) if m * power >= raw * 0.999)
    first = math.ceil(low / step - 1e-9) * step
    count = math.ceil((high + step * 1e-6 - first) / step)
    second = first + step
    delta = second - first
    values = [first, second][:count] + [first + i * delta for i in range(2, count)]
    return [_rounded(v / step) * step for v in values]


def _rounded(x: float) -> float:
    """``np.round(x)`` of a float: half to even, keeping the sign of a zero."""
    r = float(round(x))
    return r if r or math.copysign(1.0, x) > 0 else -0.0


def nice_upper(value: float, margin: float = 1.08) -> float:
    """A round axis maximum a little above ``value`` (1 when ``value`` is not a positive number)."""
    value = float(value) * margin if np.isfinite(value) and value > 0 else 1.0
    ticks = nice_ticks(0.0, value, 4)
    step = ticks[1] - ticks[0] if len(ticks) > 1 else value
    return float(math.ceil(value / step - 1e-9) * step)


def log_ticks(low: float, high: float) -> np.ndarray:
    """Ticks of a logarithmic axis over [low, high] (low >= 1): decades, with 2 and 5 when they are few."""
    decades = range(int(math.floor(math.log10(low))), int(math.ceil(math.log10(high))) + 1)
    mantissas = (1, 2, 5) if len(decades) <= 3 else (1,)
    values = [m * 10.0**d for d in decades for m in mantissas]
    return np.array([v for v in values if low * (1 - 1e-9) <= v <= high * (1 + 1e-9)])


def format_ticks(values: Sequence[float]) -> list[str]:
    """Short labels for tick values: as few decimals as the spacing needs, 1e6 style for large numbers."""
    # A few values: plain floats (numpy's per-call cost would be most of the time here).
    values = np.asarray(values, dtype=np.float64).reshape(-1).tolist()
    if not values:
        return []
    biggest = max(abs(v) for v in values)
    if biggest >= 1e5:
        return [_compact(v) for v in values]
    ordered = sorted(values)
    steps = [b - a for a, b in zip(ordered, ordered[1:]) if b - a > 0]
    step = min(steps) if steps else max(biggest, 1.0)
    decimals = 0
    while decimals < 6 and abs(round(step, decimals) - step) > step * 1e-6:
        decimals += 1
    return [f"{v:.{decimals}f}" for v in values]


def _compact(value: float) -> str:
    if value == 0:
        return "0"
    exponent = int(math.floor(math.log10(abs(value))))
    mantissa = value / 10.0**exponent
    return f"{mantissa:.2g}e{exponent}"


# -- building blocks --------------------------------------------------------------------------


def add_axes(fig: Figure, frame: Frame, *, grid: bool = True, prefix: str = "axes", x_labels: bool = True,
             x_target: int = 5, y_target: int = 4) -> None:
    """Frame box, ticks, tick labels and both titles (x below the frame, y above its top-left corner).

    Offsets scale with the frame's width, so a frame of any size in its own
    visual bounds looks the same.
    """
    l, t, r, b = frame.left, frame.top, frame.right, frame.bottom
    u = frame.width / 1000.0
    fig.add(f"{prefix}/box", Lines([np.array([[l, t], [r, t], [r, b], [l, b], [l, t]])], width=1.2))
    xs, ys = frame.x.tick_values(x_target), frame.y.tick_values(y_target)
    xs = xs[(xs >= frame.x.low) & (xs <= frame.x.high)]
    ys = ys[(ys >= frame.y.low) & (ys <= frame.y.high)]
    vx, vy = frame.vx(xs), frame.vy(ys)
    tick = 18.0 * u
    fig.add(f"{prefix}/ticks", Lines([comb(vx, b, tick, l, r), comb(vy, l, -tick, b, t, vertical=True)],
                                     width=1.2))
    if grid:
        fig.add(f"{prefix}/grid", Lines([_serpentine(vx, t, b), _serpentine(vy, l, r, vertical=True)],
                                        color=GRID_COLOR, width=0.6, draw_order=5.0))
    labels_x = format_ticks(xs) if x_labels else []
    positions = [[x, b + TEXT_GAP * u] for x in vx][: len(labels_x)]
    positions += [[l - 90.0 * u, y - HALF_LINE * u] for y in vy]
    fig.add(f"{prefix}/tick_labels", Texts(np.array(positions).reshape(-1, 2), labels_x + format_ticks(ys)))
    titles, where = [], []
    if x_labels:
        titles.append(frame.x.title)
        where.append([l + 0.5 * frame.width, b + SECOND_LINE * u])
    titles.append(frame.y.title)
    where.append([l + 0.2 * frame.width, t - ABOVE * u])
    fig.add(f"{prefix}/titles", Texts(np.array(where), titles, color=(255, 255, 255)))


def comb(at: np.ndarray, base: float, length: float, start: float, end: float, vertical: bool = False
          ) -> np.ndarray:
    """One strip along an axis (``base``) from ``start`` to ``end`` with a tick of ``length`` at each of ``at``.

    A single strip instead of one per tick: every strip costs a conversion in the Rerun SDK.
    """
    points = [[start, base]]
    for a in at:
        points += [[a, base], [a, base + length], [a, base]]
    points.append([end, base])
    out = np.array(points, dtype=np.float64)
    return out[:, ::-1].copy() if vertical else out


def _serpentine(at: np.ndarray, low: float, high: float, vertical: bool = False) -> np.ndarray:
    """Grid lines at ``at`` from ``low`` to ``high`` as one strip, joined along the frame's edges."""
    points = []
    for k, a in enumerate(at):
        ends = (low, high) if k % 2 == 0 else (high, low)
        points += [[a, ends[0]], [a, ends[1]]]
    out = np.array(points, dtype=np.float64).reshape(-1, 2)
    return out[:, ::-1].copy() if vertical else out


def add_colorbar(fig: Figure, frame: Frame, scale: ColorScale, title: str, prefix: str = "colorbar",
                 gradient: bool = True) -> None:
    """A vertical colour bar right of ``frame`` with numbered ticks and a title (what the colours mean).

    ``gradient=False`` leaves out the bar's image (logged once, static, where the scale changes per event).
    """
    u = frame.width / 1000.0
    left = frame.right + 35.0 * u
    width = 35.0 * u
    steps = 128
    if gradient:
        fig.add(f"{prefix}/image", Picture(_gradient(steps), left, frame.top, width, frame.height))
    ticks, ys = colorbar_ticks(frame, scale)
    right = left + width
    box = np.array([[left, frame.top], [right, frame.top], [right, frame.bottom], [left, frame.bottom],
                    [left, frame.top]])
    fig.add(f"{prefix}/ticks", Lines([box, comb(ys, right, 15.0 * u, frame.bottom, frame.top, vertical=True)],
                                     width=1.0))
    positions = np.column_stack([np.full(len(ys), right + 80.0 * u), ys - HALF_LINE * u])
    fig.add(f"{prefix}/labels", Texts(positions, format_ticks(ticks)))
    fig.add(f"{prefix}/title", Texts(np.array([[left + 0.5 * width, frame.top - ABOVE * u]]), [title],
                                     color=(255, 255, 255)))


@functools.lru_cache(maxsize=8)
def _gradient(steps: int) -> np.ndarray:
    """The colour bar's image: the ramp from top (high) to bottom, one pixel wide (made once, read-only)."""
    image = ramp(np.linspace(1.0, 0.0, steps))[:, None, :]
    image.flags.writeable = False
    return image


def colorbar_ticks(frame: Frame, scale: ColorScale) -> tuple[np.ndarray, np.ndarray]:
    """The tick values of a colour bar beside ``frame`` and their view y (see :func:`add_colorbar`)."""
    ticks = log_ticks(scale.low, scale.high) if scale.log else nice_ticks(scale.low, scale.high, 4)
    if scale.log and len(ticks) < 2:
        ticks = np.unique(np.array([scale.low, scale.high]))
    ticks = ticks[(ticks >= scale.low - 1e-9) & (ticks <= scale.high + 1e-9)]
    return ticks, frame.top + (1.0 - scale.position(ticks)) * frame.height


def add_heatmap(fig: Figure, frame: Frame, counts: np.ndarray, scale: ColorScale, name: str = "heatmap") -> None:
    """``counts[ix, iy]`` over the whole frame: empty bins in the background colour, others on the ramp."""
    image = np.ascontiguousarray(count_colors(np.asarray(counts).T[::-1], scale))
    fig.add(name, Picture(image, frame.left, frame.top, frame.width, frame.height))


def add_steps(fig: Figure, frame: Frame, edges: np.ndarray, counts: np.ndarray, *,
              color=(90, 170, 255), name: str = "steps", hover: list[str] | None = None) -> None:
    """A step outline of a 1-D histogram (``len(edges) == len(counts) + 1``), closed down to zero at both ends.

    ``hover`` gives one text per bin, shown in the tooltip of a marker at the bin's top.
    """
    counts = np.asarray(counts, dtype=np.float64)
    x = np.repeat(edges, 2)
    y = np.concatenate([[0.0], np.repeat(counts, 2), [0.0]])
    fig.add(name, Lines([frame.points(x, y)], color=color, width=1.6, draw_order=25.0))
    if hover is not None:
        filled = np.flatnonzero(counts > 0)
        centres = 0.5 * (edges[1:] + edges[:-1])
        fig.add(f"{name}_values", Texts(frame.points(centres[filled], counts[filled]), [hover[i] for i in filled],
                                        color=color, hover_only=True, radius=2.0))


def add_series(fig: Figure, frame: Frame, x: np.ndarray, y: np.ndarray, color, name: str) -> None:
    """A polyline of data points (NaN values break nothing: they are left out)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    strips = [frame.points(x[ok], y[ok])] if ok.sum() >= 2 else []
    fig.add(name, Lines(strips, color=color, width=1.6, draw_order=25.0))


def add_legend(fig: Figure, frame: Frame, entries: list[tuple[str, tuple[int, int, int]]], name: str = "legend"
               ) -> None:
    """Coloured entry names stacked right of the frame, from its top."""
    if not entries:
        return
    step = 60.0 * frame.width / 1000.0
    positions = np.array([[frame.right + 100.0 * frame.width / 1000.0, frame.top + step * k]
                          for k in range(len(entries))])
    fig.add(name, Texts(positions, [e[0] for e in entries], color=np.array([e[1] for e in entries], dtype=np.uint8)))


def add_polygon(fig: Figure, frame: Frame, polygon: np.ndarray, label: str, color, name: str) -> None:
    """A closed polygon in data coordinates (a gate), labelled at its first vertex."""
    polygon = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
    closed = np.vstack([polygon, polygon[:1]])
    fig.add(name, Lines([frame.points(closed[:, 0], closed[:, 1])], color=color, width=2.0, draw_order=26.0))
    anchor = frame.points(polygon[:, 0], polygon[:, 1])
    top = anchor[np.argmin(anchor[:, 1])]  # label the polygon at its highest vertex, just above it
    fig.add(f"{name}_label", Texts(np.array([[top[0], top[1] - 0.5 * ABOVE * frame.width / 1000.0]]), [label],
                                   color=color))


def stacked_frames(axes: list[tuple[Axis, Axis]], height: float, gap: float = 110.0) -> list[Frame]:
    """Frames of ``height`` stacked top to bottom, as wide as the canvas, ``gap`` view units apart."""
    return [Frame(x, y, top=k * (height + gap), height=height) for k, (x, y) in enumerate(axes)]
