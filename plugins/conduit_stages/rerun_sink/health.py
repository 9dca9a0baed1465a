"""CoBo / AsAd health: frames, missing AsAds, link errors and data rates, as a table for the viewer.

Per AsAd: the frames it sent and the frames of it that were lost (late,
duplicate, quarantined, ...; ``MetricsSnapshot.asad_counters`` from the
event builder), and, from the events themselves, how many were emitted
without it (``Event.missing``). Per CoBo, from the
source's counters (``cobo3_frames``, ``cobo3_errors``, ...) and byte rates when
the source has them (the exporter and graw sources do). Run totals: complete
and incomplete events and every non-zero source counter (bad, late, duplicate
frames, ...).
"""

from __future__ import annotations

import re

import numpy as np

from conduit.event import ASAD, COBO

__all__ = ["AsadHealth"]

_PER_STREAM = re.compile(r"^cobo(\d+)_(\w+)$")
_SHOWN_TOTALS = ("bad_frames", "late_frames", "duplicate_frames", "unexpected_frames", "clamped_frames",
                 "items_dropped", "unmapped_channels", "protocol_errors", "reconnects", "connect_failures",
                 "restarts", "skipped_frames")


class AsadHealth:
    """Counts per (CoBo, AsAd) of events with data and events missing that AsAd."""

    #: (CoBo, AsAd) keys (cobo * 256 + asad) counted by the compiled pass: CoBo 0..255 (others in Python).
    _TABLE = 256 * 256

    def __init__(self, expected: tuple[tuple[int, int], ...] = ()):
        self.expected = tuple(expected)
        self._with_data = np.zeros(self._TABLE, dtype=np.int64)  # events with data, by key
        self._stamp = np.full(self._TABLE, -1, dtype=np.int64)  # last event that counted each key
        self._outside: dict[tuple[int, int], int] = {}  # keys past the table (a CoBo number above 255)
        self.missing: dict[tuple[int, int], int] = {}
        self.events = 0
        self.incomplete = 0

    @property
    def with_data(self) -> dict[tuple[int, int], int]:
        """Events with data per (CoBo, AsAd)."""
        keys = np.flatnonzero(self._with_data)
        counted = {(int(k) // 256, int(k) % 256): int(self._with_data[k]) for k in keys}
        for pair, n in self._outside.items():
            counted[pair] = counted.get(pair, 0) + n
        return counted

    def add(self, event, keys: np.ndarray | None = None) -> None:
        """Count one event (any event the sink receives); ``keys``: its rows' CoBo * 256 + AsAd (int64,
        contiguous) when already read (:func:`.kernels.event_columns`), else read here from its traces."""
        from .kernels import count_keys, count_pairs

        traces = event.traces
        if keys is not None:
            outside = count_keys(keys, self._with_data, self._stamp, self.events) if len(keys) else 0
        else:
            outside = traces.shape[0] and count_pairs(np.ascontiguousarray(traces), self._with_data, self._stamp,
                                                      self.events)
        if outside:
            # rows of CoBo numbers past the table (never in AT-TPC's 11 CoBos): counted the slow way
            keys = traces[:, COBO].astype(np.int64) * 256 + traces[:, ASAD].astype(np.int64)
            for key in np.unique(keys[keys >= self._TABLE]).tolist():
                pair = (key // 256, key % 256)
                self._outside[pair] = self._outside.get(pair, 0) + 1
        self.events += 1
        if not event.complete:
            self.incomplete += 1
        for cobo, asad in event.missing:
            key = (int(cobo), int(asad))
            self.missing[key] = self.missing.get(key, 0) + 1

    def reset(self) -> None:
        self._with_data[:] = 0
        self._stamp[:] = -1
        self._outside.clear()
        self.missing.clear()
        self.events = 0
        self.incomplete = 0

    def markdown(self, snapshot=None) -> str:
        """The health table (Markdown) with the totals of ``snapshot`` (a MetricsSnapshot) when given."""
        counters = dict(getattr(snapshot, "source_counters", {}) or {})
        rates = dict(getattr(snapshot, "byte_rates", {}) or {})
        per_cobo: dict[int, dict[str, int]] = {}
        for name, value in counters.items():
            match = _PER_STREAM.match(name)
            if match:
                per_cobo.setdefault(int(match.group(1)), {})[match.group(2)] = int(value)
        with_data = self.with_data
        pairs = set(self.expected) | set(with_data) | set(self.missing)
        cobos = sorted({c for c, _ in pairs} | set(per_cobo) | {int(k[4:]) for k in rates if k[4:].isdigit()})
        complete = self.events - self.incomplete
        share = f"{complete / self.events:.1%}" if self.events else "-"
        lines = [f"**{self.events} events seen: {complete} complete ({share}), {self.incomplete} incomplete**", ""]
        problems = [f"{name.replace('_', ' ')} {counters[name]}" for name in _SHOWN_TOTALS if counters.get(name)]
        if getattr(snapshot, "dropped", 0):
            problems.append(f"events dropped (engine queue full) {snapshot.dropped}")
        lines.append("Source problems: " + (", ".join(problems) if problems else "none") + "")
        lines.append("")
        per_asad = dict(getattr(snapshot, "asad_counters", {}) or {})
        lines.append("AsAd cells: frames received (events with data when the source has no frames) · "
                     "events missing it (⚠) · frames lost (✗: late, duplicate, quarantined ...)")
        lines.append("")
        lines.append("| CoBo | MB/s | frames | link errors | reconnects | AsAd 0 | AsAd 1 | AsAd 2 | AsAd 3 |")
        lines.append("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for cobo in cobos:
            c = per_cobo.get(cobo, {})
            rate = rates.get(f"cobo{cobo}")
            cells = [str(cobo), "-" if rate is None else f"{rate / 1e6:.2f}", _value(c, "frames"),
                     _value(c, "errors"), _value(c, "reconnects")]
            for asad in range(4):
                key = (cobo, asad)
                counts = per_asad.get(key)
                if key not in pairs and counts is None:
                    cells.append("")
                    continue
                frames = counts.get("frames", 0) if counts else with_data.get(key, 0)
                dropped = sum(v for k, v in counts.items() if k != "frames") if counts else 0
                missing = self.missing.get(key, 0)
                cells.append(" · ".join([str(frames)] + ([f"⚠ {missing}"] if missing else [])
                                        + ([f"✗ {dropped}"] if dropped else [])))
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)


def _value(values: dict[str, int], key: str) -> str:
    return str(values[key]) if key in values else "-"
