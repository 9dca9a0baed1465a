"""Helpers of the control panel tests."""

from __future__ import annotations

import json
from pathlib import Path


def read_record(path: Path) -> list:
    """The panelkit.record lines: dicts (events, {"change": ...}) and strings ("reset", "closed")."""
    return [json.loads(line) for line in path.read_text().splitlines()]
