"""numba kernels: deposits → drift electrons on pads → shaped signals in ADC.

1. :func:`collect` turns each deposit (x, y, z mm, energy MeV) into drift
   electrons (mean ΔE/W, Fano-narrowed Gaussian), spreads them over a
   transverse-diffusion mesh (±3σ_T, Gaussian cell weights), maps each mesh
   point to a pad through a lookup grid, shares the electrons among the pads
   multinomially and amplifies each pad's share with Polya-distributed gain
   (a sum of n Polya(θ) avalanches is Gamma(n(1+θ), G/(1+θ))). It returns one
   row per (deposit, pad) contribution with the arrival time in time buckets
   and its longitudinal spread.
2. :func:`shape` builds each pad's arrival histogram (charge split between
   the two buckets around its fractional arrival time, the longitudinal
   spread sampled at five equal-probability nodes), and convolves it with
   the unit-peak GET response sampled at exactly one-bucket spacing.
   Charge arriving up to ``PRE`` buckets before bucket 0 still shows its tail;
   charge arriving after the last bucket is lost.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

__all__ = ["collect", "shape", "shaper_kernel", "mesh_weights", "PRE", "N_BUCKETS"]

N_BUCKETS = 512
#: Buckets kept before bucket 0, so that pulses arriving just before the window show their tail.
PRE = 64
#: Standard-normal nodes of equal probability (deciles 0.1, 0.3, 0.5, 0.7, 0.9), rescaled to unit variance.
_NODES = np.array([-1.2815516, -0.5244005, 0.0, 0.5244005, 1.2815516]) / math.sqrt(
    (2 * 1.2815516**2 + 2 * 0.5244005**2) / 5
)


def shaper_kernel(tau: float, n: int | None = None) -> np.ndarray:
    """GET response h(t) = exp(−3t/τ)(t/τ)³ sin(t/τ) at t = 0, 1, 2, ... buckets, scaled to a unit peak.

    ``tau`` in time buckets. The default length (12 τ) reaches where the
    response is below 10⁻⁸ of its peak.
    """
    if n is None:
        n = int(math.ceil(12.0 * tau)) + 1
    t = np.arange(n, dtype=np.float64) / tau
    h = np.exp(-3.0 * t) * t**3 * np.sin(t)
    # The continuous peak sits at t ≈ 1.166 τ; normalise by the analytic maximum, not by the sampled one.
    fine = np.linspace(0.9, 1.4, 20001)
    peak = float(np.max(np.exp(-3.0 * fine) * fine**3 * np.sin(fine)))
    return h / peak


def mesh_weights(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Offsets (in σ) and normalised Gaussian weights of an ``n``-point mesh over ±3σ."""
    from math import erf

    edges = np.linspace(-3.0, 3.0, n + 1)
    cdf = np.array([0.5 * (1.0 + erf(e / math.sqrt(2.0))) for e in edges])
    weights = np.diff(cdf)
    centres = 0.5 * (edges[1:] + edges[:-1])
    if n == 1:
        centres = np.zeros(1)
    return centres, weights / weights.sum()


@njit(cache=True, nogil=True)
def collect(
    rng,
    dep_x,
    dep_y,
    dep_z,
    dep_de,
    dep_label,
    w_value,
    fano,
    length,
    t_micromegas,
    mm_per_bucket,
    coef_t,
    coef_l,
    mesh_off,
    mesh_w,
    grid,
    grid_x0,
    grid_y0,
    grid_cell,
    gain,
    polya_theta,
    pad_gain,
):
    """Drift, diffuse and amplify deposits; return per-deposit electrons and per-(deposit, pad) contributions.

    ``coef_t``/``coef_l``: σ (mm) = coef · √(drift mm). ``pad_gain``: relative
    gain per pad id. Returns (electrons per deposit, contribution deposit
    index, pad, primary electrons, amplified electrons, arrival time TB,
    longitudinal σ TB).
    """
    n_dep = dep_x.shape[0]
    m = mesh_off.shape[0]
    max_rows = n_dep * m * m
    electrons = np.zeros(n_dep, dtype=np.int64)
    c_dep = np.empty(max_rows, dtype=np.int64)
    c_pad = np.empty(max_rows, dtype=np.int64)
    c_prim = np.empty(max_rows, dtype=np.int64)
    c_charge = np.empty(max_rows, dtype=np.float64)
    c_time = np.empty(max_rows, dtype=np.float64)
    c_sigma = np.empty(max_rows, dtype=np.float64)
    local_pad = np.empty(m * m, dtype=np.int64)
    local_w = np.empty(m * m, dtype=np.float64)
    nx = grid.shape[0]
    ny = grid.shape[1]
    shape_k = 1.0 + polya_theta
    rows = 0
    for i in range(n_dep):
        mean = dep_de[i] / w_value
        if mean <= 0.0:
            continue
        ne = int(round(rng.normal(mean, math.sqrt(fano * mean)))) if fano > 0.0 else int(round(mean))
        if ne <= 0:
            continue
        electrons[i] = ne
        drift = length - dep_z[i]
        if drift < 0.0:
            drift = 0.0
        sig_t = coef_t * math.sqrt(drift)
        arrival = t_micromegas + drift / mm_per_bucket
        sig_l = coef_l * math.sqrt(drift) / mm_per_bucket
        # Pads under the diffusion mesh, with their summed Gaussian weights.
        n_local = 0
        for a in range(m):
            px = dep_x[i] + mesh_off[a] * sig_t
            gx = int(math.floor((px - grid_x0) / grid_cell))
            for b in range(m):
                py = dep_y[i] + mesh_off[b] * sig_t
                gy = int(math.floor((py - grid_y0) / grid_cell))
                if gx < 0 or gx >= nx or gy < 0 or gy >= ny:
                    continue
                pad = grid[gx, gy]
                if pad < 0:
                    continue
                w = mesh_w[a] * mesh_w[b]
                found = False
                for k in range(n_local):
                    if local_pad[k] == pad:
                        local_w[k] += w
                        found = True
                        break
                if not found:
                    local_pad[n_local] = pad
                    local_w[n_local] = w
                    n_local += 1
        # Electrons landing off the plane (outside every pad) are lost with the mesh weight they carry.
        remaining = ne
        left_w = 1.0
        for k in range(n_local):
            if remaining <= 0:
                break
            p = local_w[k] / left_w
            if p >= 1.0:
                share = remaining
            else:
                share = rng.binomial(remaining, p)
            left_w -= local_w[k]
            if left_w < 1e-12:
                left_w = 1e-12
            remaining -= share
            if share <= 0:
                continue
            g = gain * pad_gain[local_pad[k]]
            if polya_theta >= 0.0 and g > 0.0:
                charge = rng.gamma(share * shape_k, g / shape_k)
            else:
                charge = share * g
            c_dep[rows] = i
            c_pad[rows] = local_pad[k]
            c_prim[rows] = share
            c_charge[rows] = charge
            c_time[rows] = arrival
            c_sigma[rows] = sig_l
            rows += 1
    return (
        electrons,
        c_dep[:rows].copy(),
        c_pad[:rows].copy(),
        c_prim[:rows].copy(),
        c_charge[:rows].copy(),
        c_time[:rows].copy(),
        c_sigma[:rows].copy(),
    )


@njit(cache=True, nogil=True)
def shape(row, time, sigma, charge, n_rows, kernel, scale):
    """Shaped signals (n_rows, 512) float64: Σ charge · scale · unit-peak response at each arrival.

    ``row`` assigns each contribution to an output row; ``time`` and
    ``sigma`` are in buckets; ``scale`` converts charge to ADC counts.
    """
    width = N_BUCKETS + PRE
    hist = np.zeros((n_rows, width), dtype=np.float64)
    nodes = _NODES
    n_nodes = nodes.shape[0]
    for c in range(row.shape[0]):
        r = row[c]
        q = charge[c] * scale
        if sigma[c] > 0.05:
            q_node = q / n_nodes
            for k in range(n_nodes):
                t = time[c] + nodes[k] * sigma[c] + PRE
                b = int(math.floor(t))
                f = t - b
                if 0 <= b < width:
                    hist[r, b] += q_node * (1.0 - f)
                if 0 <= b + 1 < width:
                    hist[r, b + 1] += q_node * f
        else:
            t = time[c] + PRE
            b = int(math.floor(t))
            f = t - b
            if 0 <= b < width:
                hist[r, b] += q * (1.0 - f)
            if 0 <= b + 1 < width:
                hist[r, b + 1] += q * f
    out = np.zeros((n_rows, N_BUCKETS), dtype=np.float64)
    nk = kernel.shape[0]
    for r in range(n_rows):
        for b in range(width):
            v = hist[r, b]
            if v == 0.0:
                continue
            start = b - PRE
            for k in range(nk):
                j = start + k
                if j < 0:
                    continue
                if j >= N_BUCKETS:
                    break
                out[r, j] += v * kernel[k]
    return out


#: White-noise bank: 8,192 rows of 512 standard-normal samples (16 MB), drawn once per simulator.
BANK_ROWS = 8192


def noise_bank(seed: int) -> np.ndarray:
    """The simulator's bank of standard-normal samples, float32 (BANK_ROWS · 512,)."""
    return np.random.default_rng([seed, 0x6E015E]).standard_normal(BANK_ROWS * N_BUCKETS, dtype=np.float32)


def draw_noise_rows(rng, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct bank rows, circular shifts and signs for ``n`` noise waveforms (n ≤ BANK_ROWS)."""
    slots = rng.permutation(BANK_ROWS)[:n].astype(np.int64)
    shifts = rng.integers(0, N_BUCKETS, n).astype(np.int64)
    signs = np.where(rng.random(n) < 0.5, -1.0, 1.0)
    return slots, shifts, signs


@njit(cache=True, nogil=True)
def correlated_noise(bank, slots, shifts, signs, width, sigma):
    """Per row, a moving average of ``width`` white-noise samples from the bank, scaled to σ per sample."""
    n = slots.shape[0]
    out = np.empty((n, N_BUCKETS), dtype=np.float64)
    scale = sigma / math.sqrt(width)
    for r in range(n):
        base = slots[r] * N_BUCKETS
        sh = shifts[r]
        sg = signs[r] * scale
        acc = 0.0
        for j in range(width):
            acc += bank[base + (j + sh) % N_BUCKETS]
        out[r, 0] = acc * sg
        for j in range(1, N_BUCKETS):
            acc += bank[base + (j + width - 1 + sh) % N_BUCKETS] - bank[base + (j - 1 + sh) % N_BUCKETS]
            out[r, j] = acc * sg
    return out


@njit(cache=True, nogil=True)
def digitise(bank, slots, shifts, signs, noise_sigma, correlated, quarter, pedestal, signal, signal_row):
    """ADC samples: pedestal + σ·white + correlated[quarter] + signal, rounded and clipped to 0..4095.

    Row r's white noise is bank row ``slots[r]``, circularly shifted by
    ``shifts[r]`` and multiplied by ``signs[r]``. Returns the int16 (n, 512)
    samples and each row's largest excursion above its pedestal (for zero
    suppression).
    """
    n = slots.shape[0]
    values = np.empty((n, N_BUCKETS), dtype=np.float64)
    for r in range(n):
        q = quarter[r]
        p = pedestal[r]
        base = slots[r] * N_BUCKETS
        sh = shifts[r]
        sg = signs[r] * noise_sigma
        for j in range(N_BUCKETS):
            values[r, j] = p + sg * bank[base + (j + sh) % N_BUCKETS] + correlated[q, j]
    for s in range(signal_row.shape[0]):
        r = signal_row[s]
        for j in range(N_BUCKETS):
            values[r, j] += signal[s, j]
    out = np.empty((n, N_BUCKETS), dtype=np.int16)
    height = np.empty(n, dtype=np.float64)
    for r in range(n):
        top = 0
        for j in range(N_BUCKETS):
            v = math.floor(values[r, j] + 0.5)
            if v < 0.0:
                v = 0.0
            elif v > 4095.0:
                v = 4095.0
            iv = int(v)
            out[r, j] = iv
            if iv > top:
                top = iv
        height[r] = top - pedestal[r]
    return out, height
