"""Per-run manifests, so that a second ``conduit batch`` skips finished runs."""

from __future__ import annotations

import json
import os
from pathlib import Path

__all__ = ["Manifests"]


class Manifests:
    """One JSON file per finished run in ``directory``."""

    def __init__(self, directory: Path, fingerprint: str):
        self.directory = directory
        self.fingerprint = fingerprint

    def path(self, run: int) -> Path:
        return self.directory / f"run_{run:04d}.json"

    def is_complete(self, run: int) -> bool:
        """True when the run finished with this pipeline and its outputs still exist."""
        try:
            record = json.loads(self.path(run).read_text())
        except (OSError, ValueError):
            return False
        if record.get("fingerprint") != self.fingerprint:
            return False
        return all(Path(o).exists() for o in record.get("outputs", []) if "://" not in o)

    def record(self, result: dict) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        target = self.path(result["run"])
        tmp = target.with_suffix(".tmp")
        tmp.write_text(json.dumps({**result, "fingerprint": self.fingerprint}, indent=1))
        os.replace(tmp, target)  # never a half-written manifest
