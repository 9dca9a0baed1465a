"""What the run lost, recorded with the run: ``lost_<reason>`` attributes on the output file's root.

Also what each stage did (``stage_outcomes``: a JSON text attribute, per stage the events it ran on, failed
on, was not run on and produced nothing on, and what it counted by reason: the clusters ``estimate``
rejected ...; :attr:`conduit.engine.metrics.MetricsSnapshot.stages`).

The counts come from the engine's metrics (:attr:`conduit.engine.metrics.MetricsSnapshot.losses`:
the source's frame losses by reason, events the engine or a sink dropped); they are
rewritten at every flush and once more, final, when the recording closes. Reasons
are explained in docs/ingestion.md ("What is lost and why").
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

__all__ = ["LOSS_PREFIX", "write_loss_attributes", "read_loss_attributes", "write_parameter_attributes",
           "read_parameter_attributes", "write_stage_attributes", "read_stage_attributes"]

LOSS_PREFIX = "lost_"


def write_loss_attributes(root, losses: dict[str, int]) -> None:
    """Set ``lost_<reason>`` (int64) on ``root`` (an h5py File or Group) for every reason in ``losses``."""
    for reason, count in losses.items():
        root.attrs[LOSS_PREFIX + reason] = np.int64(count)


def write_stage_attributes(root, stages: dict[str, dict[str, Any]]) -> None:
    """Set ``stage_outcomes`` on ``root``: ``{stage: {"events", "failed", "skipped", "empty", "counts"}}`` as JSON."""
    if stages:
        root.attrs["stage_outcomes"] = json.dumps(stages, sort_keys=True)


def read_stage_attributes(root) -> dict[str, dict[str, Any]]:
    """The ``stage_outcomes`` attribute of ``root`` ({} when absent)."""
    return json.loads(root.attrs["stage_outcomes"]) if "stage_outcomes" in root.attrs else {}


def read_loss_attributes(root) -> dict[str, int]:
    """The ``lost_<reason>`` attributes of ``root`` as {reason: count}."""
    return {k[len(LOSS_PREFIX):]: int(v) for k, v in root.attrs.items() if k.startswith(LOSS_PREFIX)}


def write_parameter_attributes(root, pipeline: Any = None, changes: list | None = None) -> None:
    """Record which parameters produced which events, as JSON text attributes on ``root``.

    ``pipeline_parameters``: ``[{"use", "params"}, ...]`` of every stage when the file was opened (``pipeline``:
    ``(use, params)`` pairs); ``parameter_changes``: the changes made while running
    (:meth:`conduit.engine.control.ParameterChange.to_dict`, or that dict: time, first event, old and new values).
    """
    if pipeline is not None:
        root.attrs["pipeline_parameters"] = json.dumps(
            [{"use": use, "params": params.to_dict()} for use, params in pipeline], default=str)
    if changes is not None:
        root.attrs["parameter_changes"] = json.dumps([c if isinstance(c, dict) else c.to_dict() for c in changes],
                                                     default=str)


def read_parameter_attributes(root) -> tuple[list, list]:
    """(pipeline_parameters, parameter_changes) as written by :func:`write_parameter_attributes`."""
    def load(key: str) -> list:
        return json.loads(root.attrs[key]) if key in root.attrs else []

    return load("pipeline_parameters"), load("parameter_changes")
