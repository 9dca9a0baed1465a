"""The simulation parameter model shared by ``conduit simulate`` and the ``simulate`` source.

Detector geometry and fields are not here: they come from the ``[detector]``
table (:class:`conduit.detector.DetectorParams`). Fields left at ``None`` take
the value of the chosen preset (:mod:`conduit_simulate.presets`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from conduit.params import Params, Problem, param
from .presets import COMMON_DEFAULTS, PRESET_NAMES, PRESETS

__all__ = ["SimulationParams", "GAS_NAMES", "Resolved"]

GAS_NAMES = ("D2", "H2", "He", "He-CO2", "isobutane", "P10", "air")
PresetName = Literal["default", "dense", "elastic", "dp", "alpha-elastic", "protons", "alphas", "single-track"]
GasName = Literal["D2", "H2", "He", "He-CO2", "isobutane", "P10", "air"]


class SimulationParams(Params):
    """Everything that shapes a simulated event, from the reaction to the readout."""

    # -- run ---------------------------------------------------------------------
    seed: int = param(1, "seed of every random draw: one seed gives identical output")
    events: int = param(100, "number of events to generate", ge=1)
    first_event_id: int = param(0, "GET event id of the first event", ge=0)
    trigger_rate: float = param(100.0, "mean trigger rate, sets the 100 MHz event timestamps (Hz)", gt=0)
    pool: int = param(
        0,
        "generate only this many distinct events and repeat them cyclically with fresh ids and timestamps "
        "(fast serving and benchmarks); 0: every event distinct",
        ge=0,
    )
    # -- reaction ----------------------------------------------------------------
    preset: PresetName = param(
        "default", "reaction or particle gun: " + ", ".join(PRESET_NAMES) + " (see docs/simulator.md)"
    )
    beam: str | None = param(None, "beam species, e.g. 10Be, 16C, 12C (default: the preset's, 10Be)")
    beam_energy: float | None = param(None, "beam kinetic energy at the entrance window (MeV; preset: 93)", gt=0)
    target: str | None = param(None, "reaction partner in the gas: d, p, alpha (preset: d)")
    gas: GasName | None = param(None, "gas: " + ", ".join(GAS_NAMES) + " (preset: D2)")
    pressure: float | None = param(None, "gas pressure (Torr; preset: 600)", gt=0)
    temperature: float = param(293.15, "gas temperature (K)", gt=0)
    gun_particle: str | None = param(None, "particle-gun presets: species fired from the vertex (preset: p)")
    gun_energy: tuple[float, float] | None = param(
        None, "particle-gun kinetic energy range, uniform (MeV; preset: 1 10)"
    )
    gun_polar: tuple[float, float] | None = param(
        None, "particle-gun polar angle range, uniform in cos (deg; preset: 20 160)"
    )
    gun_multiplicity: tuple[int, int] | None = param(None, "particle-gun particles per event, uniform (preset: 1 2)")
    vertex_z: tuple[float, float] | None = param(
        None, "vertex z range, uniform (mm); default: the drift volume the 512 buckets see (z ≈ 89 mm to L)"
    )
    beam_spot: float = param(2.0, "Gaussian σ of the beam spot in x and y at the vertex (mm)", ge=0)
    beam_track: bool | None = param(None, "simulate the beam ion from the window to the vertex (preset: true)")
    noise_hits: float | None = param(
        None, "mean number of random isolated charge deposits per event, Poisson (preset: 2)", ge=0
    )
    # -- tracking and ionisation ---------------------------------------------------
    step: float = param(1.0, "longest tracking step, also the spacing of deposit points (mm)", gt=0)
    chamber_radius: float = param(292.0, "tracks stop beyond this distance from the beam axis (mm)", gt=0)
    w_value: float = param(34.0, "mean energy per ionisation electron (eV)", gt=0)
    fano: float = param(0.2, "Fano factor of the ionisation electron count", ge=0)
    # -- drift, diffusion, gain --------------------------------------------------------
    transverse_diffusion: float = param(0.277, "transverse diffusion parameter D: σ_T = √(2 D d / E) (V)", ge=0)
    longitudinal_diffusion: float = param(0.277, "longitudinal diffusion parameter: σ_L = √(2 D d / E) (V)", ge=0)
    diffusion_mesh: int = param(7, "points per axis of the transverse diffusion mesh (±3σ)", ge=1, le=25)
    gain: float = param(1000.0, "effective gas gain: amplified electrons per drift electron", gt=0)
    polya_theta: float = param(1.0, "Polya θ of the avalanche gain fluctuations (0: exponential)", ge=0)
    beam_pad_gain: float = param(1.0, "relative gain on the beam pads (r < 19.8 mm)", ge=0)
    # -- electronics ------------------------------------------------------------------
    dynamic_range: float = param(120.0, "AGET dynamic range: the charge that spans 4096 ADC counts (fC)", gt=0)
    shaping_time: float = param(1000.0, "AGET peaking-time setting; τ = shaping_time · get_frequency (ns)", gt=0)
    pedestal_mean: float = param(400.0, "mean of the per-channel pedestals (ADC)")
    pedestal_sigma: float = param(30.0, "spread of the per-channel pedestals (ADC)", ge=0)
    noise: float = param(4.0, "white noise σ per sample (ADC)", ge=0)
    fpn_noise: float = param(2.0, "σ of the correlated noise shared by an AGET quarter and its FPN channel (ADC)", ge=0)
    readout: Literal["partial", "full"] = param("partial", "partial: zero suppression per channel; full: every channel")
    threshold: float = param(
        20.0, "zero suppression: a channel is read when its signal exceeds this above pedestal (ADC)", ge=0
    )
    noise_pads: int | None = param(None, "pads read with noise only per event in partial readout (preset: 400)", ge=0)

    def check(self) -> list[Problem]:
        problems = []
        for name in ("gun_energy", "gun_polar", "gun_multiplicity", "vertex_z"):
            value = getattr(self, name)
            if value is not None and value[0] > value[1]:
                problems.append(Problem((name,), f"range must be (low, high), got {list(value)}"))
        if self.gun_polar is not None and not (0.0 <= self.gun_polar[0] and self.gun_polar[1] <= 180.0):
            problems.append(Problem(("gun_polar",), "angles must lie within 0..180 deg"))
        if self.gun_multiplicity is not None and self.gun_multiplicity[0] < 0:
            problems.append(Problem(("gun_multiplicity",), "must be ≥ 0"))
        for name in ("beam", "target", "gun_particle"):
            value = getattr(self, name)
            if value is not None:
                from conduit_physics.species import species

                try:
                    species(value)
                except ValueError as err:
                    problems.append(Problem((name,), str(err)))
        return problems

    def resolved(self) -> Resolved:
        """Every ``None`` replaced by the preset's value (or the common default)."""
        preset = PRESETS[self.preset]
        values: dict[str, Any] = {}
        for name, default in COMMON_DEFAULTS.items():
            value = getattr(self, name)
            if value is None:
                value = preset.defaults.get(name, default)
            values[name] = value
        return Resolved(params=self, preset=preset, **values)


@dataclasses.dataclass(frozen=True)
class Resolved:
    """Parameters with the preset applied; attribute access falls back to the params."""

    params: SimulationParams
    preset: Any
    beam: str
    beam_energy: float
    target: str
    gas: str
    pressure: float
    beam_track: bool
    noise_pads: int
    noise_hits: float
    gun_particle: str
    gun_energy: tuple[float, float]
    gun_polar: tuple[float, float]
    gun_multiplicity: tuple[int, int]

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name == "params":  # pickling and copy probe dunders first
            raise AttributeError(name)
        return getattr(self.params, name)
