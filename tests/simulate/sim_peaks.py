"""A small reference of the analysis' baseline removal and peak finding (from the prose of
spyral_algorithms.md §2.1-2.2), to judge simulated traces the way the point-cloud stage will."""

from __future__ import annotations

import numpy as np
from scipy.signal import find_peaks


def remove_baseline(samples: np.ndarray, window_scale: float = 20.0) -> np.ndarray:
    """Edge fix, mask samples > 1.5σ above the mean, FFT sinc low-pass of the rest, subtract."""
    tr = samples.astype(np.float64).copy()
    tr[:, 0] = tr[:, 1]
    tr[:, -1] = tr[:, -2]
    mean = tr.mean(axis=1, keepdims=True)
    sd = tr.std(axis=1, keepdims=True)
    masked = tr.copy()
    high = masked - mean > 1.5 * sd
    for i in np.flatnonzero(high.any(axis=1)):
        if (~high[i]).any():
            masked[i, high[i]] = masked[i, ~high[i]].mean()
    k = np.fft.ifftshift(np.arange(-256, 256))
    base = np.real(np.fft.ifft(np.fft.fft(masked, axis=1) * np.sinc(k / window_scale), axis=1))
    return tr - base


def find_trace_peaks(trace: np.ndarray, threshold: float = 40.0) -> np.ndarray:
    """Buckets of the peaks the analysis keeps (prominence 20, distance 50, width 1-50, amplitude > threshold)."""
    peaks, _ = find_peaks(trace, distance=50, prominence=20, width=(1, 50), rel_height=0.95)
    return peaks[trace[peaks] > threshold]


def count_points(traces: np.ndarray, beam_pads: set[int], threshold: float = 40.0) -> int:
    """Points the reference point cloud would make from an event's trace matrix."""
    signal = remove_baseline(traces[:, 5:])
    n = 0
    for i in range(len(traces)):
        if int(traces[i, 4]) in beam_pads:
            continue
        peaks, _ = find_peaks(signal[i], distance=50, prominence=20, width=(1, 50), rel_height=0.95)
        if len(peaks) == 0 or len(peaks) > 5:
            continue
        n += int(np.count_nonzero(signal[i][peaks] > threshold))
    return n
