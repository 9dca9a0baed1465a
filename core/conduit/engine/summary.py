"""The end-of-run summary table."""

from __future__ import annotations

import math
import os
import re

from .backlog import FULL, WAITED
from .runner import RunSummary
from .status import format_counts

_PER_STREAM = re.compile(r"^([a-z]+)(\d+)_(\w+)$")

__all__ = ["format_summary"]


def _ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:9.3f}"


def format_summary(summary: RunSummary) -> str:
    """A plain-text table: counts, per-stage timing and failures, source counters, outputs."""
    rate = summary.received / summary.wall_seconds if summary.wall_seconds > 0 else 0.0
    if not summary.started:
        return _not_started(summary)
    lines = ["", "run summary" + (" (interrupted)" if summary.interrupted else ""), "-" * 60]
    rows = [
        ("events received", summary.received),
        ("  complete", summary.complete),
        ("  incomplete", summary.incomplete),
        ("events analysed", summary.analysed),
        ("events skipped (analysis behind)", summary.skipped),
        *_skip_rows(summary),
        ("events delivered to sinks", summary.delivered),
    ]
    if summary.paused:
        rows.insert(-1, ("events not analysed (paused)", summary.paused))
    if summary.halted:
        rows.insert(-1, ("events not analysed (stopped by an error)", summary.halted))
    for name, value in rows:
        lines.append(f"{name:<40} {value:>12}")
    lost = {k: v for k, v in summary.losses.items() if v}
    if lost:
        lines.append(f"{'lost, by reason (docs/ingestion.md)':<40} {sum(lost.values()):>12}")
        for name, value in sorted(lost.items(), key=lambda kv: -kv[1]):
            lines.append(f"  {name:<38} {value:>12}")
    elif summary.losses:
        lines.append(f"{'lost':<40} {0:>12}")
    lines.append(f"{'start-up (s)':<40} {summary.startup_seconds:>12.2f}")
    lines.append(f"{'wall time (s)':<40} {summary.wall_seconds:>12.2f}")
    lines.append(f"{'mean rate (events/s)':<40} {rate:>12.1f}")
    if summary.stage_ms or summary.stages:
        lines.append("")
        lines.extend(_stage_lines(summary))
    for name in dict.fromkeys([*summary.sink_dropped, *summary.sink_lost]):
        dropped, lost = summary.sink_dropped.get(name, 0), summary.sink_lost.get(name, 0)
        why = ([f"{lost} lost in a failed write"] if lost else []) + \
              ([f"{dropped} not passed to it: sink behind or stopped"] if dropped else [])
        lines.append(f"sink {name}: {dropped + lost} events not written ({'; '.join(why)})")
    if summary.source_counters:
        lines.append("")
        lines.append("source")
        lines.extend(_source_lines(summary.source_counters))
    if summary.outputs:
        lines.append("")
        lines.append("outputs")
        for output in summary.outputs:
            shown = _short_path(output)
            hint = f"    (open it: rerun {shown})" if output.endswith(".rrd") else ""
            lines.append(f"  {shown}{hint}")
    if summary.error:
        lines.append("")
        lines.append(f"error: {summary.error}")
    return "\n".join(lines)


#: Why events were skipped, as the summary says it (``RunSummary.skipped_by``).
_SKIP_WHY = {FULL: "  every analysis place taken, backlog full", WAITED: "  waited backlog_ms, no place free"}


def _skip_rows(summary: RunSummary) -> list[tuple[str, int]]:
    """The skipped events by reason, and the events analysed after waiting in the backlog (when it was used)."""
    rows = [(_SKIP_WHY.get(reason, f"  {reason}"), n) for reason, n in summary.skipped_by.items() if n]
    if summary.backlogged:
        rows.append((f"events analysed after waiting (most {summary.backlog_peak})", summary.backlogged))
    return rows


def _stage_lines(summary: RunSummary) -> list[str]:
    """Per stage: calls, failed, not run (an input missing), gave nothing, timing; then what stages counted."""
    lines = [f"{'stage':<28} {'calls':>8} {'failed':>7} {'not run':>8} {'nothing':>8} {'mean ms':>9} {'p99 ms':>9}"]
    counted = []
    never_run = {name: (0, math.nan, math.nan) for name, r in summary.stages.items()
                 if name not in summary.stage_ms and r.get("skipped")}
    for name, (calls, mean, p99) in {**summary.stage_ms, **never_run}.items():
        report = summary.stages.get(name, {})
        failed = summary.failed.get(name, 0)
        lines.append(f"{name:<28} {calls:>8} {failed:>7} {report.get('skipped', 0):>8} {report.get('empty', 0):>8} "
                     f"{_ms(mean)} {_ms(p99)}")
        if counts := {k: v for k, v in report.get("counts", {}).items() if v}:
            counted.append(f"  {name}: {sum(counts.values())} ({format_counts(counts)})")
    lines.append("(ms: transform stages, wall time in a worker process; sinks, CPU time of the sink's own thread, "
                 "without waits for the GIL)")
    if counted:
        lines.append("counted by stages: dropped or without a result, by reason")
        lines.extend(counted)
    return lines


def _not_started(summary: RunSummary) -> str:
    """A run that ended before its first event: say so, and whether any output was created."""
    head = f"\nerror: {summary.error}\nnothing was run" if summary.error else \
        "\ninterrupted during start-up: nothing was run"
    if not summary.outputs:
        return head + "; existing outputs were left as they were"
    return "\n".join([head, "", "outputs (created before the error; earlier files kept under numbered names)"]
                      + [f"  {_short_path(o)}" for o in summary.outputs])


def _short_path(output: str) -> str:
    """A path under the current directory as a relative path; anything else unchanged."""
    if not os.path.isabs(output):
        return output
    relative = os.path.relpath(output)
    return output if relative.startswith("..") else relative


def _source_lines(counters: dict[str, int]) -> list[str]:
    """Totals first, then per-stream counters (``cobo3_bytes`` ...) as one row per stream."""
    lines, streams, fields = [], {}, []
    for name, value in counters.items():
        match = _PER_STREAM.match(name)
        if match:
            stream = match.group(1) + match.group(2)
            streams.setdefault(stream, {})[match.group(3)] = value
            if match.group(3) not in fields:
                fields.append(match.group(3))
        elif value or name in ("frames", "bytes", "generated", "events"):
            lines.append(f"  {name:<38} {value:>12}")
    zero = [n for n, v in counters.items() if not v and not _PER_STREAM.match(n)
            and n not in ("frames", "bytes", "generated", "events")]
    if zero:
        lines.append(f"  zero: {', '.join(zero)}")
    if streams:
        lines.append("  " + f"{'':<8}" + "".join(f"{f:>14}" for f in fields))
        for stream, values in streams.items():
            lines.append(f"  {stream:<8}" + "".join(f"{values.get(f, 0):>14}" for f in fields))
    return lines
