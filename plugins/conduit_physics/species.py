"""Nuclear species the simulator knows: charge, mass number and mass.

Masses are nuclear (bare-nucleus) rest energies in MeV, computed from public
atomic mass excesses (AME2020, Wang et al., Chinese Phys. C 45 (2021) 030003)
as ``A·u + Δ − Z·m_e``; electron binding energies (< 0.1 keV for these light
atoms) are neglected. The light-particle masses are the CODATA 2018 values.
"""

from __future__ import annotations

import dataclasses

__all__ = [
    "Species",
    "SPECIES",
    "species",
    "residual_of",
    "ATOMIC_MASS_UNIT",
    "ELECTRON_MASS",
    "BRHO_CONSTANT",
]

#: Atomic mass unit (MeV), CODATA 2018.
ATOMIC_MASS_UNIT = 931.49410242
#: Electron mass (MeV), CODATA 2018.
ELECTRON_MASS = 0.51099895000
#: Bρ [T·m] = p [MeV/c] / (BRHO_CONSTANT · Z): c in units of 10⁶ m/s.
BRHO_CONSTANT = 299.792458


@dataclasses.dataclass(frozen=True)
class Species:
    """A nucleus: ``name`` (``p``, ``d``, ``alpha``, ``10Be``), charge ``Z``, mass number ``A`` and ``mass`` (MeV)."""

    name: str
    Z: int
    A: int
    mass: float

    def momentum(self, kinetic_energy: float) -> float:
        """Momentum (MeV/c) at the given kinetic energy (MeV)."""
        return (kinetic_energy * (kinetic_energy + 2.0 * self.mass)) ** 0.5

    def brho(self, kinetic_energy: float) -> float:
        """Magnetic rigidity Bρ (T·m) of the fully stripped ion at the given kinetic energy (MeV)."""
        return self.momentum(kinetic_energy) / (BRHO_CONSTANT * self.Z)

    def energy_from_brho(self, brho: float) -> float:
        """Kinetic energy (MeV) of the fully stripped ion with magnetic rigidity ``brho`` (T·m)."""
        p = brho * BRHO_CONSTANT * self.Z
        return (p * p + self.mass * self.mass) ** 0.5 - self.mass


def _from_excess(name: str, Z: int, A: int, excess_kev: float) -> Species:
    return Species(name, Z, A, A * ATOMIC_MASS_UNIT + excess_kev * 1e-3 - Z * ELECTRON_MASS)


# Light particles: CODATA 2018 nuclear masses (MeV).
_LIGHT = [
    Species("p", 1, 1, 938.27208816),
    Species("d", 1, 2, 1875.61294257),
    Species("t", 1, 3, 2808.92113298),
    Species("3He", 2, 3, 2808.39160743),
    Species("alpha", 2, 4, 3727.3794066),
]

# (name, Z, A, AME2020 mass excess in keV)
_EXCESS = [
    ("6Li", 3, 6, 14086.8804),
    ("7Li", 3, 7, 14907.1047),
    ("9Be", 4, 9, 11348.4528),
    ("10Be", 4, 10, 12607.4898),
    ("11Be", 4, 11, 20177.17),
    ("10B", 5, 10, 12050.611),
    ("11B", 5, 11, 8667.708),
    ("12C", 6, 12, 0.0),
    ("13C", 6, 13, 3125.00875),
    ("14C", 6, 14, 3019.89305),
    ("16C", 6, 16, 13694.1),
    ("14N", 7, 14, 2863.41670),
    ("15N", 7, 15, 101.43870),
    ("16O", 8, 16, -4737.00135),
    ("17O", 8, 17, -808.76360),
    ("18O", 8, 18, -782.8156),
]

SPECIES: dict[str, Species] = {s.name: s for s in _LIGHT}
SPECIES.update({name: _from_excess(name, Z, A, dm) for name, Z, A, dm in _EXCESS})
_ALIASES = {
    "1H": "p",
    "proton": "p",
    "2H": "d",
    "deuteron": "d",
    "3H": "t",
    "triton": "t",
    "4He": "alpha",
    "a": "alpha",
}


def species(name: str) -> Species:
    """Look up a species by name (``p``, ``d``, ``t``, ``3He``, ``alpha``/``4He``, ``10Be``, ...)."""
    key = _ALIASES.get(name, name)
    try:
        return SPECIES[key]
    except KeyError:
        from conduit.params import did_you_mean

        hint = did_you_mean(name, list(SPECIES) + list(_ALIASES))
        raise ValueError(f"unknown species {name!r}{hint}; known: {', '.join(SPECIES)}") from None


def residual_of(beam: Species, target: Species, ejectile: Species) -> Species:
    """The residual d of target(beam, ejectile)d: the nucleus that keeps charge and mass number.

    Raises ValueError when its mass is not in :data:`SPECIES`.
    """
    z = beam.Z + target.Z - ejectile.Z
    a = beam.A + target.A - ejectile.A
    for sp in SPECIES.values():
        if sp.Z == z and sp.A == a:
            return sp
    raise ValueError(
        f"no mass for the residual (Z={z}, A={a}) of {target.name}({beam.name},{ejectile.name}); "
        "add it to conduit_physics/species.py"
    )
