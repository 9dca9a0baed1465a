"""Named simulation presets: which reaction or particle gun, and the defaults that go with it.

A preset fills every :class:`~conduit_simulate.params.SimulationParams` field
left at ``None``; anything given explicitly wins. ``default`` is the reference
event mix the benchmarks use.
"""

from __future__ import annotations

import dataclasses
from typing import Any

__all__ = ["Channel", "Preset", "PRESETS", "PRESET_NAMES", "COMMON_DEFAULTS"]


@dataclasses.dataclass(frozen=True)
class Channel:
    """One two-body reaction channel a(b, c)d on the gas nucleus b.

    ``ejectile`` is the light product c; the residual d is whatever keeps Z
    and A. ``cm_angle`` is the range of c's centre-of-mass polar angle (deg),
    sampled uniformly in cos θ*. ``excitations`` lists the residual's states
    (MeV), chosen with equal probability.
    """

    ejectile: str
    cm_angle: tuple[float, float]
    excitations: tuple[float, ...] = (0.0,)
    weight: float = 1.0
    label: str = ""


@dataclasses.dataclass(frozen=True)
class Preset:
    """A reaction (``channels``) or a particle gun (no channels), plus parameter defaults."""

    name: str
    doc: str
    channels: tuple[Channel, ...] = ()
    defaults: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def is_gun(self) -> bool:
        return not self.channels


#: Values of the preset-dependent parameters when a preset does not set them.
COMMON_DEFAULTS: dict[str, Any] = {
    "beam": "10Be",
    "beam_energy": 93.0,
    "target": "d",
    "gas": "D2",
    "pressure": 600.0,
    "beam_track": True,
    "noise_pads": 400,
    "noise_hits": 2.0,
    "gun_particle": "p",
    "gun_energy": (1.0, 10.0),
    "gun_polar": (20.0, 160.0),
    "gun_multiplicity": (1, 2),
}

# Centre-of-mass angle ranges of the light ejectile for 10Be at 9.3 MeV/u on d.
# At 93 MeV the (in)elastic deuterons leave at 46-75 deg in the lab with
# 3-21 MeV; (d,p) protons either forward (35-72 deg, 11-28 MeV) or backward
# (123-163 deg, 1.1-2.1 MeV). Protons of 3-8 MeV near 90 deg, which curl up
# for metres and light a thousand pads, are left out of the reference mix
# (the ``dp`` and ``protons`` presets have them).
_ELASTIC = Channel("d", (100.0, 150.0), (0.0,), 0.35, "d(10Be,d)10Be")
_INELASTIC = Channel("d", (100.0, 150.0), (3.368,), 0.15, "d(10Be,d')10Be*(3.37)")
_TRANSFER_FORWARD = Channel("p", (60.0, 115.0), (0.0, 0.320), 0.35, "d(10Be,p)11Be")
_TRANSFER_BACKWARD = Channel("p", (160.0, 175.0), (0.0, 0.320), 0.15, "d(10Be,p)11Be")

_CURLING = Channel("p", (115.0, 155.0), (0.0, 0.320), 0.15, "d(10Be,p)11Be")

PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            "default",
            "10Be at 93 MeV in 600 Torr D2: elastic and inelastic d(10Be,d) and d(10Be,p)11Be, beam track, "
            "400 noise-only pads: the reference event mix (about 700 traces, 200 points per event)",
            (_ELASTIC, _INELASTIC, _TRANSFER_FORWARD, _TRANSFER_BACKWARD),
        ),
        Preset(
            "dense",
            "the default mix plus d(10Be,p)11Be protons near 90 deg in the lab (CM 115-160 deg, 3-8 MeV) that curl "
            "up for metres: dense clouds (median about 200 points, 90 % below about 800, up to about 2,500) for "
            "benchmarking the analysis on the worst events",
            (_ELASTIC, _INELASTIC, _TRANSFER_FORWARD, _TRANSFER_BACKWARD, _CURLING),
        ),
        Preset(
            "elastic",
            "d(10Be,d)10Be elastic scattering only, otherwise as default",
            (dataclasses.replace(_ELASTIC, weight=1.0),),
        ),
        Preset(
            "dp",
            "d(10Be,p)11Be transfer only, protons over the whole CM range 5-175 deg (including long spirals)",
            (Channel("p", (5.0, 175.0), (0.0, 0.320), 1.0, "d(10Be,p)11Be"),),
        ),
        Preset(
            "alpha-elastic",
            "4He(a,a)4He elastic scattering: 4He at 20 MeV in 600 Torr He, CM angles 40-140 deg (both alphas "
            "20-70 deg in the lab, 2-18 MeV), beam track",
            (Channel("alpha", (40.0, 140.0), (0.0,), 1.0, "4He(a,a)4He"),),
            defaults={"beam": "alpha", "beam_energy": 20.0, "target": "alpha", "gas": "He"},
        ),
        Preset(
            "protons",
            "particle gun: 1-2 protons per event, 1-10 MeV, polar 20-160 deg, no beam track",
            defaults={"gun_particle": "p", "beam_track": False},
        ),
        Preset(
            "alphas",
            "particle gun: 1-2 alphas per event, 2-20 MeV, polar 20-160 deg, no beam track",
            defaults={"gun_particle": "alpha", "gun_energy": (2.0, 20.0), "beam_track": False},
        ),
        Preset(
            "single-track",
            "one 5 MeV proton at polar 60 deg per event, no beam track, no noise pads or noise hits (for tests)",
            defaults={
                "gun_particle": "p",
                "gun_energy": (5.0, 5.0),
                "gun_polar": (60.0, 60.0),
                "gun_multiplicity": (1, 1),
                "beam_track": False,
                "noise_pads": 0,
                "noise_hits": 0.0,
            },
        ),
    )
}

PRESET_NAMES = tuple(PRESETS)
