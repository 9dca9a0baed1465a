"""The ``[detector]`` table: fields, drift geometry and the maps a pipeline uses."""

from __future__ import annotations

from pathlib import Path

from .params import Params, Problem, param

__all__ = ["DetectorParams"]


class DetectorParams(Params):
    """AT-TPC settings shared by every stage (Spyral's DetectorParameters plus the maps).

    Frame: x, y in the pad plane (the pad geometry's frame), z along the drift
    from the entrance window (z = 0) to the pad plane (z = detector_length);
    the beam travels towards +z. Field sign convention: with a positive
    ``magnetic_field`` a positively charged particle moving towards +z turns
    counter-clockwise as z increases (azimuth around its circle increasing),
    which is how tracks turn in real AT-TPC data (Spyral's "forward" rule).
    Physically the field then points along -z in this frame.
    """

    magnetic_field: float = param(
        2.85,
        "solenoid field (T); positive = the AT-TPC orientation, in which a positive particle moving "
        "towards the pad plane (+z) turns counter-clockwise in the pad-plane x-y frame",
    )
    electric_field: float = param(45000.0, "drift field (V/m)", gt=0)
    detector_length: float = param(1000.0, "drift length from the entrance window (z=0) to the pad plane (mm)", gt=0)
    beam_region_radius: float = param(25.0, "radius around the beam axis where a vertex is accepted (mm)", ge=0)
    micromegas_time_bucket: float = param(10.0, "time bucket where pulses of charge from the pad plane (z = detector_length) peak (TB)")
    window_time_bucket: float = param(560.0, "time bucket where pulses of charge from the entrance window (z = 0) peak (TB)")
    get_frequency: float = param(6.25, "GET sampling frequency (MHz)", gt=0)
    electronics_map: Path | None = param(
        None, "electronics map CSV (cobo,asad,aget,channel[,keyword],pad); default: attpc_merger's map"
    )
    pad_geometry: Path | None = param(None, "pad centre CSV with header x,y (mm), row = pad id; default: generated plane")

    def check(self) -> list[Problem]:
        if self.window_time_bucket == self.micromegas_time_bucket:
            return [Problem(("window_time_bucket",), "must differ from micromegas_time_bucket")]
        return []

    @property
    def drift_mm_per_bucket(self) -> float:
        """Drift distance covered in one time bucket (mm/TB)."""
        return self.detector_length / (self.window_time_bucket - self.micromegas_time_bucket)

    def z_from_bucket(self, t):
        """z (mm) of charge arriving at time bucket ``t``: 0 at the window, L at the pad plane."""
        return (self.window_time_bucket - t) / (self.window_time_bucket - self.micromegas_time_bucket) * self.detector_length

    def bucket_from_z(self, z):
        """Inverse of :meth:`z_from_bucket` (TB)."""
        return self.window_time_bucket - z / self.detector_length * (self.window_time_bucket - self.micromegas_time_bucket)
