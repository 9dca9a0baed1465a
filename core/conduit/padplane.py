"""The AT-TPC pad plane: 10,240 triangular pads generated from first principles.

Geometry (all lengths in mm, origin at the centre of the plane): the upper
half (y > 0) is 32 rows of height ``H``; each row is a line of triangular
slots of side ``a_l`` whose centres sit at ``k * a_l / 2`` and whose
orientation alternates (up when ``j + k`` is odd). Slots inside a central
hexagon are split into four small pads, the others are one big pad. The lower
half mirrors the upper one, pad ``p + 5120`` being the mirror of ``p``.

Pad centres follow the convention Spyral's analysis uses (x = apex x, y = the
middle of the pad's row strip), so point clouds built here line up with
Spyral's. The construction is restated from the AT-TPC pad-plane design
(see docs/formats.md); no third-party code or data is used.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from pathlib import Path

import numpy as np

__all__ = ["PadPlane", "generate_pad_plane", "load_pad_plane", "N_PADS", "BEAM_PAD_RADIUS"]

MIL = 0.0254  # mm
GAP = 2 * MIL
SMALL_SIDE = 184 * MIL
PLANE_RADIUS = 275.0
DX = 2 * GAP / math.sqrt(3)
DY = math.sqrt(3) * DX
A_SMALL = SMALL_SIDE + 4 * DX  # small cell side
A_LARGE = 2 * A_SMALL  # big cell side
ROW_HEIGHT = A_LARGE * math.sqrt(3) / 2
BIG_SIDE = A_LARGE - 4 * DX
N_ROWS = 32
HEX_ROWS = 16
N_HALF = 5120
N_PADS = 2 * N_HALF
#: Pads with centres closer than this to the beam axis are the 122 "beam pads" (mm).
BEAM_PAD_RADIUS = 19.8


def _row_half_slots(j: int) -> int:
    half_chord = math.sqrt(PLANE_RADIUS**2 - ((j + 0.5) * ROW_HEIGHT) ** 2)
    return int(round(2 * half_chord / A_LARGE)) - 1


def _is_small(j: int, k: int) -> bool:
    return j < HEX_ROWS and abs(k) <= 2 * HEX_ROWS - 1 - j


@dataclasses.dataclass(frozen=True)
class PadPlane:
    """Pad centres, sizes and (for the generated plane) triangle vertices, indexed by pad id."""

    x: np.ndarray  # (N,) mm
    y: np.ndarray  # (N,) mm
    scale: np.ndarray  # (N,) 0.5 small, 1.0 big
    vertices: np.ndarray | None  # (N, 3, 2) mm, or None for a user geometry
    generated: bool

    @property
    def n_pads(self) -> int:
        return int(self.x.shape[0])

    @functools.cached_property
    def radius(self) -> np.ndarray:
        """Distance of each pad centre from the beam axis (mm)."""
        return np.hypot(self.x, self.y)

    def beam_pads(self, radius: float = BEAM_PAD_RADIUS) -> np.ndarray:
        """Ids of the pads whose centre lies within ``radius`` mm of the beam axis."""
        return np.flatnonzero(self.radius < radius)

    def pad_at(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Pad id under each (x, y) point in mm, -1 outside the plane (vectorised)."""
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        if self.generated:
            return _lookup_generated(x, y)
        return self._nearest(x, y)

    def _nearest(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        from scipy.spatial import cKDTree

        tree = self.__dict__.get("_tree")
        if tree is None:
            tree = cKDTree(np.column_stack([self.x, self.y]))
            object.__setattr__(self, "_tree", tree)
        dist, idx = tree.query(np.column_stack([x.ravel(), y.ravel()]))
        idx = np.where(dist < 10.0, idx, -1)
        return idx.reshape(x.shape).astype(np.int64)


@functools.lru_cache(maxsize=1)
def _slot_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per (row, slot) first pad id (-1 absent), small flag, and per-row half-slot count."""
    max_half = _row_half_slots(0)
    first = np.full((N_ROWS, 2 * max_half + 1), -1, dtype=np.int64)
    small = np.zeros_like(first, dtype=bool)
    half = np.zeros(N_ROWS, dtype=np.int64)
    pad = 0
    for j in range(N_ROWS):
        m = _row_half_slots(j)
        half[j] = m
        for k in range(-m, m + 1):
            first[j, k + max_half] = pad
            small[j, k + max_half] = _is_small(j, k)
            pad += 4 if small[j, k + max_half] else 1
    assert pad == N_HALF, pad
    return first, small, half


def generate_pad_plane() -> PadPlane:
    """The default AT-TPC plane: 10,240 pads (6,144 small, 4,096 big)."""
    xs, ys, scales, verts = [], [], [], []
    h = ROW_HEIGHT
    for j in range(N_ROWS):
        m = _row_half_slots(j)
        y_low, y_up, y_mid = j * h, (j + 1) * h, j * h + h / 2
        for k in range(-m, m + 1):
            centre = k * A_LARGE / 2
            up = (j + k) % 2 == 1
            if not _is_small(j, k):
                xs.append(centre)
                ys.append((j + 0.5) * h)
                scales.append(1.0)
                base, apex = (y_low + DY, y_up - DY) if up else (y_up - DY, y_low + DY)
                left = centre - BIG_SIDE / 2
                verts.append(((left, base), (centre, apex), (left + BIG_SIDE, base)))
                continue
            lower, upper = j * h + h / 4, j * h + 3 * h / 4
            s = SMALL_SIDE
            # q0 left corner, q1 central inverted, q2 apex corner, q3 right corner
            corner_left = centre - A_SMALL + 2 * DX
            corner_right = centre + 2 * DX
            mid_left = centre - s / 2
            if up:
                quads = [
                    (centre - A_SMALL / 2, lower, corner_left, y_low + DY, y_mid - DY),
                    (centre, lower, mid_left, y_mid - DY, y_low + DY),
                    (centre, upper, mid_left, y_mid + DY, y_up - DY),
                    (centre + A_SMALL / 2, lower, corner_right, y_low + DY, y_mid - DY),
                ]
            else:
                quads = [
                    (centre - A_SMALL / 2, upper, corner_left, y_up - DY, y_mid + DY),
                    (centre, upper, mid_left, y_mid + DY, y_up - DY),
                    (centre, lower, mid_left, y_mid - DY, y_low + DY),
                    (centre + A_SMALL / 2, upper, corner_right, y_up - DY, y_mid + DY),
                ]
            for cx, cy, left, base, apex in quads:
                xs.append(cx)
                ys.append(cy)
                scales.append(0.5)
                verts.append(((left, base), (left + s / 2, apex), (left + s, base)))
    x = np.array(xs)
    y = np.array(ys)
    v = np.array(verts)
    mirrored = v.copy()
    mirrored[..., 1] *= -1
    return PadPlane(
        x=np.concatenate([x, x]),
        y=np.concatenate([y, -y]),
        scale=np.concatenate([scales, scales]).astype(np.float64),
        vertices=np.concatenate([v, mirrored]),
        generated=True,
    )


def _lookup_generated(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    first, small, half = _slot_tables()
    max_half = (first.shape[1] - 1) // 2
    ay = np.abs(y)
    row = np.floor(ay / ROW_HEIGHT).astype(np.int64)
    v = ay / ROW_HEIGHT - row  # height within the row, 0..1
    u = x / (A_LARGE / 2)  # position in half-slot units; slot k is centred at u = k
    ka = np.floor(u).astype(np.int64)
    kb = ka + 1
    row_c = np.clip(row, 0, N_ROWS - 1)
    up_a = (row_c + ka) % 2 == 1
    k_up = np.where(up_a, ka, kb)
    k_down = np.where(up_a, kb, ka)
    in_up = np.abs(u - k_up) <= 1 - v
    k = np.where(in_up, k_up, k_down)
    slot_up = in_up
    valid = (row >= 0) & (row < N_ROWS) & (np.abs(k) <= half[row_c])
    kc = np.clip(k + max_half, 0, first.shape[1] - 1)
    pad = first[row_c, kc]
    is_small = small[row_c, kc]

    # Quartet sub-pads: work in small-cell half-width units around the slot centre.
    du = (u - k) * 2  # offset from the slot centre in units of a_s / 2 ... a small cell's half-base
    lower_half = v < 0.5
    vv = np.where(lower_half, v * 2, v * 2 - 1)  # height within the sub-row, 0..1
    # In the sub-row holding three small triangles, corners sit at du = -1 and +1, the inverted one at 0.
    three_row = np.where(slot_up, lower_half, ~lower_half)
    corners_up = slot_up  # corner triangles point the same way as the slot
    corner_halfwidth = np.where(corners_up, 1 - vv, vv)
    left_corner = np.abs(du + 1) <= corner_halfwidth
    right_corner = np.abs(du - 1) <= corner_halfwidth
    q_three = np.where(left_corner, 0, np.where(right_corner, 3, 1))
    q = np.where(three_row, q_three, 2)
    pad = np.where(is_small, pad + q, pad)
    pad = np.where(valid & (pad >= 0), pad, -1)
    pad = np.where((y < 0) & (pad >= 0), pad + N_HALF, pad)
    return pad


def _read_geometry_csv(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    text = path.read_text(encoding="utf-8").replace("\r\n", "\n").replace("\r", "\n")
    lines = [ln for ln in text.split("\n") if ln.strip()]
    if not lines:
        raise ValueError(f"{path}: empty pad geometry file")
    header = [h.strip().lower() for h in lines[0].split(",")]
    if "x" not in header or "y" not in header:
        raise ValueError(f"{path}:1: pad geometry header must name columns x and y, got {lines[0]!r}")
    ix, iy = header.index("x"), header.index("y")
    iscale = header.index("scale") if "scale" in header else None
    rows = []
    for n, line in enumerate(lines[1:], start=2):
        cells = line.split(",")
        try:
            rows.append([float(cells[ix]), float(cells[iy])] + ([float(cells[iscale])] if iscale is not None else []))
        except (ValueError, IndexError):
            raise ValueError(f"{path}:{n}: expected numbers in columns x,y, got {line!r}") from None
    data = np.array(rows, dtype=np.float64)
    return data[:, 0], data[:, 1], (data[:, 2] if iscale is not None else None)


@functools.lru_cache(maxsize=4)
def load_pad_plane(path: Path | None = None) -> PadPlane:
    """The generated plane, or a user geometry CSV (header ``x,y[,scale]``, row index = pad id)."""
    generated = generate_pad_plane()
    if path is None:
        return generated
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: pad geometry file not found")
    x, y, scale = _read_geometry_csv(path)
    if scale is None:
        scale = generated.scale[: len(x)] if len(x) <= N_PADS else np.ones(len(x))
    return PadPlane(x=x, y=y, scale=scale, vertices=None, generated=False)
