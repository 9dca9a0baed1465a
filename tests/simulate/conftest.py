"""Shared fixtures for the simulator tests: small, fast parameter sets."""

from __future__ import annotations

import pytest

from conduit_simulate.params import SimulationParams


@pytest.fixture(scope="session")
def quiet_single_track() -> SimulationParams:
    """One 5 MeV proton at 60 deg, no noise of any kind, flat pedestals at 400 ADC."""
    return SimulationParams(
        preset="single-track", events=3, noise=0.0, fpn_noise=0.0, pedestal_sigma=0.0, noise_hits=0.0, noise_pads=0
    )
