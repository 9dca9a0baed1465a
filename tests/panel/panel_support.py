"""Helpers of the control panel tests."""

from __future__ import annotations

import json
from pathlib import Path


#: Recording sinks to add to the test pipeline (conftest.PIPELINE's ``extra``).
RECORDERS = """
[[stage]]
use = "hdf5"
path = "out/run_{run:04d}.h5"
histograms = false
flush_interval = 0.3

[[stage]]
use = "rerun"
mode = "save"
path = "out/run_{run:04d}.rrd"
"""


def read_record(path: Path) -> list:
    """The panelkit.record lines: dicts (events, {"change": ...}) and strings ("reset", "closed")."""
    return [json.loads(line) for line in path.read_text().splitlines()]
