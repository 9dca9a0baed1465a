"""The live status line (on a terminal) or periodic log lines (otherwise)."""

from __future__ import annotations

import time
from typing import TextIO

from .metrics import MetricsSnapshot

__all__ = ["StatusReporter", "format_status", "format_losses", "format_stage_counts", "format_counts"]


def format_status(snap: MetricsSnapshot) -> str:
    """One line: rates, totals, queue depth, per-source state, progress."""
    parts = []
    if snap.total:
        frac = min(snap.received / snap.total, 1.0)
        width = 20
        filled = int(frac * width)
        eta = ""
        if snap.received and frac < 1:
            remaining = snap.elapsed / snap.received * (snap.total - snap.received)
            eta = f" eta {remaining:4.0f}s"
        parts.append(f"[{'#' * filled}{'.' * (width - filled)}] {snap.received}/{snap.total}{eta}")
    else:
        parts.append(f"{snap.received} events")
    parts.append(f"{snap.received_rate:6.1f} ev/s")
    parts.append(f"analysed {snap.analysed}")
    if snap.skipped:
        waited = snap.skipped_by.get("waited", 0)
        parts.append(f"skipped {snap.skipped}" + (f" ({waited} waited too long)" if waited else ""))
    if snap.failed:
        parts.append(f"failed {snap.failed}")
    if snap.incomplete:
        parts.append(f"incomplete {snap.incomplete}")
    lost = format_losses(snap.losses)
    if lost:
        parts.append(lost)
    elif snap.dropped:
        parts.append(f"dropped {snap.dropped}")
    counted = format_stage_counts(snap.stages)
    if counted:
        parts.append(counted)
    parts.append(f"queue {snap.queue_depth}")
    states = _summarise_states(snap.source_status)
    if states:
        parts.append(states)
    return " | ".join(parts)


#: Short names of the loss reasons for the status line (others are shown as they are).
_SHORT = {"late_frames": "late", "duplicate_frames": "dup", "quarantined_ahead": "ahead",
          "quarantined_behind": "behind", "restart_frames": "restart", "wrong_cobo_frames": "wrong-cobo",
          "bad_frames": "bad", "items_dropped": "items", "protocol_errors": "proto",
          "queue_full_events": "queue-full"}


def format_losses(losses: dict[str, int], *, most: int = 3) -> str:
    """'lost 17 (late 12, ahead 5)': the total and the largest reasons, or '' when nothing was lost."""
    shown = sorted(((v, k) for k, v in losses.items() if v), reverse=True)
    if not shown:
        return ""
    names = [f"{_SHORT.get(k, k.removeprefix('sink_').replace('_dropped', ' sink'))} {v}" for v, k in shown[:most]]
    more = ", ..." if len(shown) > most else ""
    return f"lost {sum(v for v, _ in shown)} ({', '.join(names)}{more})"


def format_counts(counts: dict[str, int], *, most: int | None = None) -> str:
    """'direction_none 12, too_few_points 3': reasons by count, largest first ('...' past ``most``)."""
    shown = sorted(((n, reason) for reason, n in counts.items() if n), key=lambda kv: (-kv[0], kv[1]))
    cut = shown if most is None else shown[:most]
    text = ", ".join(f"{reason} {n}" for n, reason in cut)
    return text + (", ..." if len(cut) < len(shown) else "")


def format_stage_counts(stages: dict[str, dict], *, most: int = 2) -> str:
    """'estimate: direction_none 12, too_few_points 3 | kinematics: no_hypothesis 2': what each stage
    counted (dropped or left without a result), its largest reasons; '' when nothing was counted."""
    parts = []
    for name, report in stages.items():
        counts = report.get("counts") or {}
        if any(counts.values()):
            parts.append(f"{name}: {format_counts(counts, most=most)}")
    return " | ".join(parts)


def _summarise_states(status: dict[str, str]) -> str:
    if not status:
        return ""
    if len(status) <= 3:
        return " ".join(f"{k}:{v}" for k, v in status.items())
    counts: dict[str, list[str]] = {}
    for name, state in status.items():
        counts.setdefault(state, []).append(name)
    bits = []
    for state, names in sorted(counts.items(), key=lambda kv: -len(kv[1])):
        bits.append(f"{len(names)} {state}" if len(names) > 2 else f"{','.join(names)} {state}")
    return " ".join(bits)


class StatusReporter:
    """Refresh one line in place on a TTY; print a line every ``interval`` seconds otherwise."""

    def __init__(self, stream: TextIO, *, interval: float = 5.0):
        self.stream = stream
        self.interval = interval
        self.is_tty = bool(getattr(stream, "isatty", lambda: False)())
        self._last_print = 0.0
        self._shown = False

    def start(self, total: int | None) -> None:
        self._last_print = time.monotonic()

    def update(self, snap: MetricsSnapshot) -> None:
        line = format_status(snap)
        if self.is_tty:
            self.stream.write("\r\x1b[2K" + line)
            self.stream.flush()
            self._shown = True
        elif time.monotonic() - self._last_print >= self.interval:
            self._last_print = time.monotonic()
            self.stream.write(f"[{snap.elapsed:7.1f}s] {line}\n")
            self.stream.flush()

    def clear(self) -> None:
        if self.is_tty and self._shown:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()
            self._shown = False
