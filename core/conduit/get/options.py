"""Event-builder parameters shared by the sources that build events from frames (``graw``, ``exporter``).

Declared once here and inherited by each source's ``Params`` so that the keys,
defaults and docs are identical everywhere. Light to import (no numpy, no numba).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..params import Params, Problem, param

if TYPE_CHECKING:
    from .builder import EventBuilder
    from .maps import ElectronicsMap

__all__ = ["BuilderParams"]


class BuilderParams(Params):
    """How frames become events (see docs/ingestion.md, "The event builder")."""

    expected_asads: list[tuple[int, int]] | None = param(
        None, "[cobo, asad] pairs an event needs to be complete, e.g. [[0, 0], [0, 1]]; "
              "default: every AsAd that carries pads in the electronics map")
    max_depth: int = param(10, "an event more than this many event ids behind the newest is emitted incomplete",
                           ge=0)
    timeout: float = param(2.0, "an event waiting longer than this is emitted incomplete (s; live sources only)",
                           gt=0)
    outlier_gap: int = param(100, "a frame whose event id is more than this many ids ahead of the other CoBos' "
                                  "consensus is quarantined (counted, never built)", ge=1)
    silent_after: float = param(10.0, "a CoBo connected but silent this long is reported (log, status line, "
                                      "summary); once the others also moved on it is no longer waited for nor part "
                                      "of the consensus (s; live sources)", gt=0)
    fpn_subtraction: bool = param(False, "subtract each AGET's mean FPN waveform (channels 11, 22, 45, 56) "
                                         "from its signal channels")

    def check(self) -> list[Problem]:
        problems = super().check()
        for i, pair in enumerate(self.expected_asads or ()):
            cobo, asad = pair
            if not (0 <= cobo <= 10 and 0 <= asad <= 3):
                problems.append(Problem(("expected_asads", i), f"[{cobo}, {asad}] is not a (cobo 0..10, asad 0..3) pair"))
        return problems

    def make_builder(self, emap: ElectronicsMap, *, live: bool, logger: logging.Logger | None = None) -> EventBuilder:
        """An :class:`~conduit.get.builder.EventBuilder` with these options (file sources: no time limit)."""
        from .builder import EventBuilder

        return EventBuilder(
            emap,
            expected=None if self.expected_asads is None else [tuple(p) for p in self.expected_asads],
            max_depth=self.max_depth,
            timeout=self.timeout if live else None,
            fpn_subtraction=self.fpn_subtraction,
            outlier_gap=self.outlier_gap,
            silent_after=self.silent_after,
            logger=logger,
        )
