"""Shared fixtures for the GET ingestion tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("NUMBA_CACHE_DIR", str(Path(__file__).resolve().parents[2] / ".numba-cache"))

DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.fixture(scope="session")
def real_frame() -> bytes:
    """The real 2017 AT-TPC frame (CoBo 4, AsAd 0, event 8; get_format.md 1.9)."""
    return (DATA / "partial_readout_frame.graw").read_bytes()


@pytest.fixture(scope="session")
def emap():
    from conduit.get.maps import load_electronics_map

    return load_electronics_map()
