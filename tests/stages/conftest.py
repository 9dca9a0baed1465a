"""Fixtures for the analysis-stage tests (pointcloud, cluster.*, estimate).

``stages_synth`` (next to this file) builds small synthetic traces, clouds
and helical tracks with known answers; it is put on sys.path here.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))


@pytest.fixture
def rng():
    return np.random.default_rng(20260511)


@pytest.fixture(scope="session")
def pads():
    from conduit.padplane import load_pad_plane

    return load_pad_plane(None)


@pytest.fixture
def stable_argsort(monkeypatch):
    """Make numpy's argsort stable while scipy runs.

    scipy.signal.find_peaks orders peaks of equal height for its ``distance``
    rule with numpy's default (unstable, SIMD) argsort, so its choice between
    two equally high peaks depends on the CPU. Our kernel uses the stable
    order (the later of two equal peaks wins); pinning numpy's order makes
    scipy a deterministic reference for traces with such ties.
    """
    original = np.argsort

    def stable(a, axis=-1, kind=None, order=None, **kwargs):
        return original(a, axis=axis, kind="stable", order=order, **kwargs)

    monkeypatch.setattr(np, "argsort", stable)
    yield
