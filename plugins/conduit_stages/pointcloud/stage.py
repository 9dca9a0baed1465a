"""The ``pointcloud`` stage: traces -> cloud (Spyral's point-cloud method, compiled).

Per event (one numba call, :func:`.kernels.event_points`): edge fix, signal-
masked FFT low-pass baseline, scipy.signal.find_peaks-equivalent peak search
(distance, prominence, width at ``peak_rel_height``), amplitude cut, traces
with no peak or more than ``max_peaks`` dropped, beam pads excluded; then z
from the corrected time through the [detector] drift map and rows sorted by z.

Peak times are whole time buckets, so many points share a z. Spyral's later
phases fit smoothing splines over z and fail on equal abscissae ("x should
be an ascending array"); like Spyral, the stage adds a tiny seeded jitter,
``tie_jitter`` x U[0, 1) time buckets, to every point's time (and so its z),
which makes z strictly increasing within each cloud. The jitter of an event
depends only on ``jitter_seed`` and the event id (reproducible, whatever the
worker or order).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from conduit.artifacts import TIME, Z, empty_cloud
from conduit.event import N_COLUMNS, PAD
from conduit.params import Params, Problem, param
from conduit.stage import TransformStage

__all__ = ["PointcloudKernel", "PointcloudParams", "PointcloudStage"]


class PointcloudParams(Params):
    """Spyral's GetParameters (same defaults) plus the pad tables and options."""

    baseline_window_scale: float = param(
        20.0, "baseline low-pass H(k) = sinc(k/a); a boxcar of about 512/a time buckets", gt=0
    )
    peak_separation: float = param(50.0, "find_peaks distance: smallest spacing of peaks in one trace (TB)", ge=1)
    peak_prominence: float = param(20.0, "find_peaks prominence: smallest peak prominence (ADC)", ge=0)
    peak_min_width: float = param(1.0, "find_peaks width lower bound, measured at peak_rel_height (TB)", ge=0)
    peak_max_width: float = param(50.0, "find_peaks width upper bound, measured at peak_rel_height (TB)", gt=0)
    peak_rel_height: float = param(
        0.95, "find_peaks rel_height: fraction of the prominence where width is measured", ge=0
    )
    peak_threshold: float = param(40.0, "a peak is kept when its baseline-subtracted amplitude is above this (ADC)")
    max_peaks: int = param(5, "traces with more peaks than this are dropped (noise, sparks)", ge=1)
    beam_pad_radius: float = param(
        19.8,
        "pads whose centre is closer than this to the beam axis are ignored (mm; 19.8 = Spyral's 122 beam pads)",
        ge=0,
    )
    excluded_pads: list[int] = param([], "further pad ids to ignore (e.g. noisy pads)")
    centroid: Literal["index", "parabolic"] = param(
        "index", "peak time: find_peaks' sample index (Spyral) or a 3-point parabolic refinement"
    )
    integer_samples: bool = param(
        False, "truncate baseline-subtracted samples towards zero before peak finding, as Spyral's int32 traces"
    )
    integer_fill: bool = param(
        False, "masked samples take the mean of the others truncated to an integer, as Spyral's int16 arithmetic does"
    )
    time_correction: Path | None = param(
        None, "per-pad time offsets CSV (header 'tcorr', row = pad id), added to the peak time (TB)"
    )
    gain: Path | None = param(
        None, "per-pad gain CSV (header 'gain' or 'sizegain', row = pad id), multiplies amplitude and integral"
    )
    tie_jitter: float = param(
        0.001,
        "add tie_jitter x U[0,1) to each point's time so z is strictly increasing in the cloud, as Spyral's "
        "later phases need (TB; Spyral: 0.001; 0 = keep whole buckets, z ties remain)",
        ge=0,
        le=1,
    )
    jitter_seed: int = param(0, "seed of the tie jitter; an event's jitter depends only on it and the event id", ge=0)

    def check(self) -> list[Problem]:
        problems = []
        if self.peak_max_width < self.peak_min_width:
            problems.append(Problem(("peak_max_width",), "must be >= peak_min_width"))
        bad = [p for p in self.excluded_pads if p < 0]
        if bad:
            problems.append(Problem(("excluded_pads",), f"pad ids must be >= 0, got {bad[0]}"))
        return problems


class PointcloudKernel:
    """The compiled point-cloud builder for one parameter set and pad plane.

    Usable without the engine: ``PointcloudKernel(params, pads, detector)(traces, event_id)``
    returns the (N, 8) cloud sorted by z (strictly increasing when ``tie_jitter`` > 0).
    """

    def __init__(self, params: PointcloudParams, pads, detector, *, base_dir: Path | None = None):
        from . import kernels

        self._k = kernels
        self.params = params
        self.detector = detector
        self.tables = kernels.FilterTables(params.baseline_window_scale)
        n_pads = pads.n_pads
        ok = np.ones(n_pads, dtype=np.bool_)
        ok[pads.beam_pads(params.beam_pad_radius)] = False
        excluded = np.asarray([p for p in params.excluded_pads if p < n_pads], dtype=np.int64)
        ok[excluded] = False
        self.pad_ok = ok
        self.pad_x = np.ascontiguousarray(pads.x, dtype=np.float64)
        self.pad_y = np.ascontiguousarray(pads.y, dtype=np.float64)
        self.pad_scale = np.ascontiguousarray(pads.scale, dtype=np.float64)
        self.pad_tcorr = np.zeros(n_pads, dtype=np.float64)
        self.pad_gain = np.ones(n_pads, dtype=np.float64)
        from .padtables import read_pad_column

        def resolve(p: Path) -> Path:
            return p if p.is_absolute() or base_dir is None else base_dir / p

        if params.time_correction is not None:
            self.pad_tcorr = read_pad_column(
                resolve(params.time_correction), n_pads, names=("tcorr",), what="time correction"
            )
        if params.gain is not None:
            self.pad_gain = read_pad_column(resolve(params.gain), n_pads, names=("gain", "sizegain"), what="gain")
        self.last_filtered = 0

        # Every argument of the kernels after the trace matrix, fixed for this parameter set (made once, not
        # per event).
        t = self.tables
        self._points_args = (
            self.pad_ok, self.pad_x, self.pad_y, self.pad_scale, self.pad_tcorr, self.pad_gain,
            t.h_bitrev, t.tw_re, t.tw_im, t.positive_sum, t.negative_sum,
            float(params.peak_threshold), float(params.peak_separation), float(params.peak_prominence),
            float(params.peak_min_width), float(params.peak_max_width), float(params.peak_rel_height),
            int(params.max_peaks), bool(params.integer_samples), bool(params.integer_fill),
            0 if params.centroid == "index" else 1,
        )
        # z = (window - time) / (window - micromegas) * length: detector.z_from_bucket's operations, in the kernel
        window, micromegas = detector.window_time_bucket, detector.micromegas_time_bucket
        self._cloud_args = (TIME, Z, float(params.tie_jitter), int(params.jitter_seed))
        self._z_args = (float(window), float(window - micromegas), float(detector.detector_length))

    def unsorted(self, traces: np.ndarray) -> np.ndarray:
        """Points in trace order, z not yet filled (kernel output)."""
        cloud, n_filtered = self._k.event_points(_as_trace_matrix(traces), *self._points_args)
        self.last_filtered = int(n_filtered)
        return cloud

    def __call__(self, traces: np.ndarray, event_id: int = 0) -> np.ndarray:
        """The event's cloud, rows sorted by z; ``event_id`` keys the tie jitter."""
        if traces.shape[0] == 0:
            return empty_cloud()
        cloud, n_filtered = self._k.event_cloud(_as_trace_matrix(traces), self._points_args, *self._cloud_args,
                                                int(event_id), *self._z_args)
        self.last_filtered = int(n_filtered)
        return cloud

    def baseline_corrected(self, traces: np.ndarray) -> np.ndarray:
        """(n, 512) baseline-subtracted samples of every row (no pad filtering, no skipping)."""
        t = self.tables
        return self._k.baseline_corrected(
            _as_trace_matrix(traces),
            t.h_bitrev,
            t.tw_re,
            t.tw_im,
            bool(self.params.integer_samples),
            bool(self.params.integer_fill),
        )

    def warm_up(self) -> None:
        """Compile (or load from numba's cache) every kernel signature used per event."""
        traces = np.zeros((3, N_COLUMNS), dtype=np.int16)
        allowed = np.flatnonzero(self.pad_ok)
        traces[:, PAD] = allowed[:3] if len(allowed) >= 3 else 0
        rng = np.random.default_rng(0)
        traces[:, 5:] = 400 + rng.integers(-3, 4, size=(3, 512))
        pulse = np.array([100, 300, 600, 500, 250, 80], dtype=np.int16)
        # two points, so that the tie breaking after the sort (make_strictly_increasing) runs too
        traces[0, 5 + 200 : 5 + 206] += pulse
        traces[1, 5 + 300 : 5 + 306] += pulse
        self(traces)


def _as_trace_matrix(traces: np.ndarray) -> np.ndarray:
    traces = np.asarray(traces)
    if traces.ndim != 2 or traces.shape[1] != N_COLUMNS:
        raise ValueError(f"trace matrix must have shape (n, {N_COLUMNS}), got {traces.shape}")
    if traces.dtype != np.int16 or not traces.flags.c_contiguous:
        traces = np.ascontiguousarray(traces, dtype=np.int16)
    return traces


class PointcloudStage(TransformStage):
    """Traces to a point cloud: baseline removal, peak finding, pad geometry (Spyral's method)."""

    name = "pointcloud"
    requires = ("traces",)
    provides = ("cloud",)
    Params = PointcloudParams

    def __init__(self, params: PointcloudParams, context):
        super().__init__(params, context)
        self._kernel: PointcloudKernel | None = None

    @property
    def kernel(self) -> PointcloudKernel:
        if self._kernel is None:
            self._kernel = PointcloudKernel(
                self.params, self.context.pads, self.context.detector, base_dir=self.context.base_dir
            )
        return self._kernel

    def warm_up(self) -> None:
        self.kernel.warm_up()

    def process(self, event) -> None:
        event.artifacts["cloud"] = self.kernel(event.traces, event.id)
