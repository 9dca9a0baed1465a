"""What the run lost, recorded with the run: ``lost_<reason>`` attributes on the output file's root.

The counts come from the engine's metrics (:attr:`conduit.engine.metrics.MetricsSnapshot.losses`:
the source's frame losses by reason, events the engine or a sink dropped); they are
rewritten at every flush and once more, final, when the recording closes. Reasons
are explained in docs/ingestion.md ("What is lost and why").
"""

from __future__ import annotations

import numpy as np

__all__ = ["LOSS_PREFIX", "write_loss_attributes", "read_loss_attributes"]

LOSS_PREFIX = "lost_"


def write_loss_attributes(root, losses: dict[str, int]) -> None:
    """Set ``lost_<reason>`` (int64) on ``root`` (an h5py File or Group) for every reason in ``losses``."""
    for reason, count in losses.items():
        root.attrs[LOSS_PREFIX + reason] = np.int64(count)


def read_loss_attributes(root) -> dict[str, int]:
    """The ``lost_<reason>`` attributes of ``root`` as {reason: count}."""
    return {k[len(LOSS_PREFIX):]: int(v) for k, v in root.attrs.items() if k.startswith(LOSS_PREFIX)}
