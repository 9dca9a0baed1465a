"""What each stage did with the events it got: counted, and said out loud when it adds up to nothing.

Per stage the engine keeps (in :class:`~conduit.engine.metrics.StageTimes`) the
events it ran on, failed on, was not run on (an input missing: a failed stage
before it) and produced nothing on, and what it counted by reason
(``TransformStage.count``: the clusters ``estimate`` rejected ...).
:class:`StageOutcomes` adds each analysed event's marks to those totals and
warns when a stage produced nothing on every event it ran on (a clusterer
whose clusters ``estimate`` rejects, all of them): once as soon as it is
clear (:data:`WARN_AFTER_EVENTS`, or the end of a shorter run), then at most
every :data:`REPEAT_SECONDS` with the new totals while it lasts.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from .metrics import Metrics, StageTimes
from .pool import ChainResult
from .status import format_counts

__all__ = ["StageOutcomes", "WARN_AFTER_EVENTS", "REPEAT_SECONDS"]

log = logging.getLogger("conduit.engine")

#: A stage that produced nothing on this many events in a row (all it ran on) is warned about.
WARN_AFTER_EVENTS = 20
#: Seconds between repeats of that warning while it still holds.
REPEAT_SECONDS = 300.0


class StageOutcomes:
    """Sums the stages' marks of every analysed event and warns about stages that produce nothing."""

    def __init__(self, metrics: Metrics, stages: Sequence[tuple[str, tuple[str, ...], tuple[str, ...]]],
                 clock: Callable[[], float] = time.monotonic):
        """``stages``: (name, requires, provides) of each transform stage, in pipeline order."""
        self.metrics = metrics
        self.stages = list(stages)
        self._clock = clock
        self._warned_at: dict[str, float] = {}  # stage -> when it was last warned about

    def account(self, result: ChainResult) -> None:
        """Add one analysed event's skips, empty outputs and counts to the stages' totals."""
        for stage in result.skipped:
            self.metrics.times(stage).skipped += 1
        for stage in result.empty:
            self.metrics.times(stage).empty += 1
        for stage, counts in result.counts.items():
            self.metrics.times(stage).add_counts(counts)

    def always_failing(self) -> list[str]:
        """Stages (and sinks) that failed on every event they ran on (at least one)."""
        return [name for name, t in list(self.metrics.stage_times.items()) if t.count and t.failures == t.count]

    def check(self, *, final: bool = False) -> None:
        """Warn about every stage that has produced nothing on every event it ran on (so far).

        Checked about once a second and at the end of the run (``final``: also
        with fewer than :data:`WARN_AFTER_EVENTS` events).
        """
        earlier_empty = False
        for name, requires, _ in self.stages:
            t = self.metrics.stage_times.get(name)
            ran = (t.count - t.failures) if t is not None else 0
            nothing = t is not None and ran > 0 and t.empty == ran and (final or ran >= WARN_AFTER_EVENTS)
            # A stage after one that gave nothing gives nothing too: only the first is news, unless it
            # dropped what it got (estimate rejecting every cluster of a clusterer that does give clusters).
            if nothing and (t.counts or not earlier_empty) and self._due(name, final):
                self._warn(name, requires, ran, t)
            earlier_empty = earlier_empty or nothing

    def _due(self, name: str, final: bool) -> bool:
        """The first time at once; then every REPEAT_SECONDS while running (not again at the end)."""
        last = self._warned_at.get(name)
        return last is None or (not final and self._clock() - last >= REPEAT_SECONDS)

    def _warn(self, name: str, requires: tuple[str, ...], ran: int, t: StageTimes) -> None:
        what = f"; it counted {sum(t.counts.values())}: {format_counts(t.counts)}" if t.counts else ""
        log.warning("stage %s produced nothing on any of the %d events it ran on%s%s "
                    "(docs/writing-a-plugin.md, 'Counting what you drop')",
                    name, ran, what, self._inputs(name, requires))
        self._warned_at[name] = self._clock()

    def _inputs(self, name: str, requires: tuple[str, ...]) -> str:
        """' (its input: clusters from cluster.mine)': which earlier stage made each input."""
        made_by: dict[str, str] = {}
        for stage, _, provides in self.stages:
            if stage == name:
                break
            made_by.update(dict.fromkeys(provides, stage))
        known = [f"{artifact} from {made_by[artifact]}" for artifact in requires if artifact in made_by]
        return f" (its input: {', '.join(known)})" if known else ""
