"""Run every benchmark in turn (`make bench`); copy the tables into docs/performance.md with the machine."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
COMMANDS = [
    ["ingest.py"],
    ["stages.py", "--compare"],  # both event mixes
    ["contracts.py", "--write", "../docs/performance.md"],
    ["kinematics.py", "--events", "300"],
    ["end_to_end.py", "startup"],
    ["end_to_end.py", "scaling"],  # both event mixes
    ["spyral_compare.py", "--setup", "--replay", "--events", "300"],  # Spyral in /tmp/spyral-venv (built once)
    ["end_to_end.py", "online", "--rates", "200", "400", "--seconds", "60"],
    ["end_to_end.py", "memory", "--rate", "200", "--minutes", "10"],
    ["batch.py"],
    ["simulate.py"],
    ["sinks_hdf5_throughput.py"],
    ["view.py"],
]


def main() -> int:
    env = {**os.environ, "NUMBA_CACHE_DIR": str(HERE.parent / ".numba-cache")}
    status = 0
    for command in COMMANDS:
        print(f"\n=== {' '.join(command)}", flush=True)
        status |= subprocess.run([sys.executable, *command], cwd=HERE, env=env).returncode
    return status


if __name__ == "__main__":
    sys.exit(main())
