"""Cost of the artifact contract check the engine runs after every transform stage.

    .venv/bin/python benchmarks/contracts.py [--points 200 2900] [--write docs/performance.md]

``conduit.artifacts.check_outputs(stage, event)`` after each built-in
transform stage (``pointcloud``, ``cluster.hdbscan``, ``estimate``,
``kinematics``: the real stage objects with default parameters) on an event
whose artifacts have the standard forms, with a cloud of N points (200: the
reference mix's median, 2,900: the dense mix's largest), 3 clusters and 3
estimates. Per call: the median of 7 timing runs of many calls each, in
microseconds, in this one process.
"""

from __future__ import annotations

import argparse
import timeit

import numpy as np
from _common import machine, write_section

from conduit.artifacts import Clusters, check_outputs, empty_cloud, empty_estimates, empty_kinematics
from conduit.event import Event
from conduit.plugins import get_registry
from conduit.stage import RunContext

STAGES = ("pointcloud", "cluster.hdbscan", "estimate", "kinematics")
#: Required parameters (the rest default).
PARAMS = {"kinematics": {"beam": "10Be", "beam_energy": 93.0, "target": "d", "gas": "D2", "pressure": 600.0,
                          "ejectile": "p"}}


def _event(points: int) -> Event:
    event = Event(1)
    labels = np.repeat(np.arange(3, dtype=np.int32), points // 3 + 1)[:points]
    event.artifacts.update(cloud=empty_cloud(points), estimates=empty_estimates(3), kinematics=empty_kinematics(3),
                           clusters=Clusters(labels, np.arange(3, dtype=np.int32), np.zeros(3, dtype=np.int8)))
    return event


def measure(points: int) -> dict[str, float]:
    """Microseconds per check after each stage, for a cloud of ``points`` rows."""
    registry = get_registry()
    event = _event(points)
    out = {}
    for name in STAGES:
        cls = registry.stages[name]
        stage = cls(cls.Params.from_mapping(PARAMS.get(name, {})), RunContext())
        timer = timeit.Timer(lambda: check_outputs(stage, event))
        number, _ = timer.autorange()
        out[name] = sorted(timer.repeat(7, number))[3] / number * 1e6  # the median run
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, nargs="+", default=[200, 2900])
    parser.add_argument("--write", metavar="FILE", help="put the table into this markdown file")
    args = parser.parse_args()
    rows = {points: measure(points) for points in args.points}
    lines = ["## Artifact contracts (`benchmarks/contracts.py`)", "",
             f"Machine: {machine()}. `conduit.artifacts.check_outputs` after each built-in transform stage, "
             "median µs per call (type, shape, dtype and aligned lengths: no pass over the values, so the "
             "cost does not grow with the cloud). The chain itself costs milliseconds per event "
             "(`benchmarks/stages.py` above): the checks add well under 1 % to it.", "",
             "| cloud points | " + " | ".join(f"`{s}`" for s in STAGES) + " | chain total |",
             "|---|" + "---|" * (len(STAGES) + 1)]
    for points, times in rows.items():
        lines.append(f"| {points:,} | " + " | ".join(f"{times[s]:.2f}" for s in STAGES)
                     + f" | {sum(times.values()):.2f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        write_section(args.write, text, before="## Reproducing")


if __name__ == "__main__":
    main()
