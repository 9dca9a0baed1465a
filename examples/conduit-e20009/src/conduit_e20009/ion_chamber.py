"""Ion-chamber analysis from the FRIB SIS3300 digitiser carried by merged files.

The ion chamber (IC) upstream of the AT-TPC identifies the beam. Its signal is
delayed with respect to the GET trigger, so the peak that triggered the event
is the first one after ``delay`` samples; how many peaks come after the delay
(the multiplicity) tells pile-up. Samples are 12.5 MHz (80 ns).
"""

from __future__ import annotations

import numpy as np

from conduit.params import Params, param
from conduit.stage import TransformStage

SIS3300 = "1903"


class IonChamberParams(Params):
    """Peak finding on the IC trace, and the window that makes ``ic_gate`` true."""

    module: str = param(SIS3300, "FRIB digitiser dataset holding the IC trace (SIS3300 = '1903')")
    channel: int = param(0, "digitiser column of the ion chamber", ge=0, le=7)
    baseline_samples: int = param(200, "samples at the start of the trace used for the baseline", ge=10)
    threshold: float = param(100.0, "smallest IC peak amplitude above baseline (ADC)", gt=0)
    min_separation: int = param(50, "smallest distance between two IC peaks (samples)", ge=1)
    delay: int = param(1100, "IC delay: only peaks after this sample count (samples)", ge=0)
    max_multiplicity: int = param(1, "events with more IC peaks after the delay fail the gate", ge=1)
    gate: list[float] = param([0.0, 4096.0], "IC amplitude window [low, high] (ADC) for ic_gate")

    def check(self):
        from conduit.params import Problem

        if len(self.gate) != 2 or self.gate[0] >= self.gate[1]:
            return [Problem(("gate",), "must be [low, high] with low < high")]
        return []


class IonChamberStage(TransformStage):
    """IC amplitude, integral, centroid and multiplicity from the FRIB SIS3300 trace."""

    name = "e20009.ion_chamber"
    requires = ("frib",)
    provides = ("ion_chamber",)
    Params = IonChamberParams

    def process(self, event) -> None:
        frib = event.artifacts["frib"]
        trace = frib.get(self.params.module)
        result = {"amplitude": -1.0, "integral": -1.0, "centroid": -1.0, "multiplicity": 0, "gate": False}
        if trace is not None and trace.ndim == 2 and trace.shape[1] > self.params.channel:
            result.update(analyse_ic(trace[:, self.params.channel], self.params))
        event.artifacts["ion_chamber"] = result


def analyse_ic(samples: np.ndarray, params: IonChamberParams) -> dict:
    """Peaks of one IC trace: the triggering peak's amplitude/integral/centroid, multiplicity and gate."""
    from scipy.signal import find_peaks

    signal = samples.astype(np.float64)
    signal -= np.median(signal[: params.baseline_samples])
    peaks, props = find_peaks(signal, height=params.threshold, distance=params.min_separation,
                              prominence=params.threshold / 2, width=(0, None), rel_height=0.85)
    after = peaks > params.delay
    multiplicity = int(after.sum())
    if multiplicity == 0:
        return {"multiplicity": 0, "gate": False}
    first = int(np.flatnonzero(after)[0])
    peak = int(peaks[first])
    left = int(np.floor(props["left_ips"][first]))
    right = int(np.ceil(props["right_ips"][first]))
    amplitude = float(signal[peak])
    low, high = params.gate
    return {
        "amplitude": amplitude,
        "integral": float(np.abs(signal[left:right]).sum()),
        "centroid": float(peak),
        "multiplicity": multiplicity,
        "gate": bool(low <= amplitude <= high and multiplicity <= params.max_multiplicity),
    }
