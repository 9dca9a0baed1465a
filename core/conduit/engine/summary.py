"""The end-of-run summary table."""

from __future__ import annotations

import math

from .runner import RunSummary

__all__ = ["format_summary"]


def _ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:9.3f}"


def format_summary(summary: RunSummary) -> str:
    """A plain-text table: counts, per-stage timing and failures, source counters, outputs."""
    rate = summary.received / summary.wall_seconds if summary.wall_seconds > 0 else 0.0
    lines = ["", "run summary" + (" (interrupted)" if summary.interrupted else ""), "-" * 60]
    rows = [
        ("events received", summary.received),
        ("  complete", summary.complete),
        ("  incomplete", summary.incomplete),
        ("events analysed", summary.analysed),
        ("events skipped (analysis behind)", summary.skipped),
        ("events delivered to sinks", summary.delivered),
    ]
    if summary.dropped:
        rows.append(("events dropped (engine queue full)", summary.dropped))
    for name, value in rows:
        lines.append(f"{name:<40} {value:>12}")
    lines.append(f"{'wall time (s)':<40} {summary.wall_seconds:>12.2f}")
    lines.append(f"{'mean rate (events/s)':<40} {rate:>12.1f}")
    if summary.stage_ms:
        lines.append("")
        lines.append(f"{'stage':<28} {'calls':>8} {'failed':>7} {'mean ms':>9} {'p99 ms':>9}")
        for name, (calls, mean, p99) in summary.stage_ms.items():
            failed = summary.failed.get(name, 0)
            lines.append(f"{name:<28} {calls:>8} {failed:>7} {_ms(mean)} {_ms(p99)}")
    for name, dropped in summary.sink_dropped.items():
        lines.append(f"sink {name}: {dropped} events not written (sink behind or stopped)")
    if summary.source_counters:
        lines.append("")
        lines.append("source")
        for name, value in summary.source_counters.items():
            lines.append(f"  {name:<38} {value:>12}")
    if summary.outputs:
        lines.append("")
        lines.append("outputs")
        lines.extend(f"  {o}" for o in summary.outputs)
    if summary.error:
        lines.append("")
        lines.append(f"error: {summary.error}")
    return "\n".join(lines)
