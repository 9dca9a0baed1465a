"""The ``[engine]`` table."""

from __future__ import annotations

from typing import Literal

from ..params import Params, param

__all__ = ["EngineParams"]


class EngineParams(Params):
    """How events flow: worker count, what to do when analysis falls behind, errors."""

    workers: int = param(-1, "transform worker processes; -1 = one per core, 0 = analyse in the main process", ge=-1)
    policy: Literal["auto", "skip", "wait"] = param(
        "auto",
        "when analysis falls behind: 'skip' the newest events (counted), 'wait' for it; 'auto' = skip for live sources",
    )
    max_in_flight: int = param(0, "events being analysed at once; 0 = four per worker (2 with workers = 0)", ge=0)
    backlog: int = param(
        32, "policy 'skip': events that find every analysis place taken wait for one in a queue of this many "
           "(oldest first) instead of being skipped at once; skipped when it is full or after backlog_ms; "
           "0 = skip at once", ge=0)
    backlog_ms: float = param(
        200.0, "longest an event waits in the backlog for an analysis place (ms of wall time); the sinks see it and "
             "every later event at most this much later", ge=0, le=2000)
    queue_size: int = param(256, "events buffered between the source and the engine", ge=1)
    sink_queue_size: int = param(512, "events buffered in front of each sink", ge=1)
    on_stage_error: Literal["continue", "stop"] = param(
        "continue", "a stage raising on one event: log and count it ('continue') or end the run ('stop': analysis "
                    "stops at once, events already queued are recorded unanalysed)"
    )
    fail_if_stage_always_fails: bool = param(
        False, "end with exit status 1 when a stage (or sink) failed on every event it ran on, "
               "even though the run went on ('continue')"
    )
    max_events: int = param(0, "stop after this many events from the source; 0 = no limit", ge=0)
    status_interval: float = param(5.0, "seconds between status log lines when not on a terminal", gt=0)
    timeline: str = param(
        "", "write what happened to the first 2,000 events (received, skipped, sent, answered, each sink's and "
            "worker's time) and every garbage collection to this JSON file (benchmarks); empty = off"
    )
    existing_outputs: Literal["keep", "refuse", "replace"] = param(
        "keep",
        "an output file that already exists: 'keep' it under a numbered name (run_0042.1.h5, logged), "
        "'refuse' to start, or 'replace' it (deleted, logged)",
    )
