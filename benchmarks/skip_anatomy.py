"""Why each skipped event was skipped, from an ``[engine] timeline`` file (``end_to_end.py online --timeline``).

    .venv/bin/python benchmarks/skip_anatomy.py TIMELINE.json [--rate 200] [--places 8] [--events]

For every skip among the timeline's first events, grouped into bursts (skips less than 100 ms apart):

* ``lag``: how late the main process received the event against the DAQ's clock, in ms: its receive time minus
  (T0 + id / rate), T0 chosen so that the least late event of the run has lag 0 (the DAQ serves event k at
  k / rate on its grid; an event completes when its last CoBo's frames are read). A main process that fell
  behind shows a growing lag, then a burst of completions at once.
* ``full for``: how long every analysis place had been taken when the event was skipped (ms), from the
  dispatches ("sent") and the answers in the timeline.
* ``burst``: events received in the 20 ms before the skip (inclusive), and the longest gap between two
  receptions in the 500 ms before it (a main-process stall is a long gap followed by a burst).
* ``main CPU``: the main process's CPU in the 200 ms before the skip, as a fraction of one CPU.
* ``workers``: jobs answered in the 200 ms before the skip: median job CPU and wall ms per worker (pid), and the
  median time from dispatch to answer, split into dispatch to the job's start in the worker (the job waiting in
  the pipe behind others, or the worker waiting for a CPU) and the job's end to the answer read by the main
  process; a worker whose wall time is far above its CPU time was not on a CPU during the job.

Prints one row per burst of skips, then (``--events``) one row per skipped event.
"""

from __future__ import annotations

import argparse
import bisect
import json
import statistics
from pathlib import Path


def load(path: Path) -> dict:
    data = json.loads(path.read_text())
    steps: dict[str, dict[int, tuple]] = {}
    for event, step, when, cpu, faults, extra in data["steps"]:
        steps.setdefault(step, {})[event] = (when, cpu, faults, extra)
    return {"steps": steps, "gc": data.get("gc", [])}


def analyse(path: Path, rate: float, places: int, per_event: bool = False) -> list[str]:
    d = load(path)
    steps = d["steps"]
    received = steps.get("received", {})
    skipped = steps.get("skipped", {})
    sent = steps.get("sent", {})
    answered = steps.get("answered", {})
    if not received:
        return ["no events in the timeline"]
    t0 = min(when - event / rate for event, (when, *_) in received.items())
    start = min(when for when, *_ in received.values())
    recv_times = sorted(when for when, *_ in received.values())
    cpu_series = sorted((when, cpu) for when, cpu, *_ in received.values())
    # places taken: +1 when an event took one (at its dispatch, or when it left the backlog: "placed"), -1 at
    # its answer (the place is given back right after)
    placed = steps.get("placed", {})
    took = [placed[e][0] if e in placed else received[e][0] for e in sent if e in received]
    changes = sorted([(when, +1) for when in took] + [(when, -1) for when, *_ in answered.values()])
    level_times, levels, level = [], [], 0
    for when, step in changes:
        level += step
        level_times.append(when)
        levels.append(level)
    jobs = sorted((when, extra, sent[event][0] if event in sent else None)
                  for event, (when, _, _, extra) in answered.items() if extra)

    def lag(event: int) -> float:
        return 1e3 * (received[event][0] - t0 - event / rate)

    def full_since(when: float) -> float:
        """ms since the in-flight count was last below ``places`` (up to ``when``)."""
        i = bisect.bisect_right(level_times, when) - 1
        while i >= 0 and levels[i] >= places:
            i -= 1
        if i < 0:
            return float("nan")
        return 1e3 * (when - level_times[i + 1]) if i + 1 < len(level_times) else 0.0

    def burst(when: float) -> tuple[int, float]:
        lo = bisect.bisect_left(recv_times, when - 0.020)
        hi = bisect.bisect_right(recv_times, when)
        window = recv_times[bisect.bisect_left(recv_times, when - 0.5):hi]
        gap = max((b - a for a, b in zip(window, window[1:])), default=0.0)
        return hi - lo, 1e3 * gap

    def main_cpu(when: float) -> float:
        i = bisect.bisect_right(cpu_series, (when, float("inf"))) - 1
        j = bisect.bisect_left(cpu_series, (when - 0.2, float("-inf")))
        if i <= j:
            return float("nan")
        (ta, ca), (tb, cb) = cpu_series[j], cpu_series[i]
        return (cb - ca) / (tb - ta) if tb > ta else float("nan")

    def workers(when: float) -> str:
        recent = [(extra, sent_at, at) for at, extra, sent_at in jobs if when - 0.2 <= at <= when]
        if not recent:
            return "none answered"
        by_pid: dict[int, list] = {}
        for extra, _, _ in recent:
            by_pid.setdefault(extra[3] if len(extra) > 3 else 0, []).append(extra)
        parts = [f"{pid}: {len(j)} jobs CPU {1e3 * statistics.median(x[1] for x in j):.1f} wall "
                 f"{1e3 * statistics.median(x[0] for x in j):.1f}" for pid, j in sorted(by_pid.items())]
        waits = [1e3 * (at - s) for _, s, at in recent if s is not None]
        text = "; ".join(parts) + (f"; dispatch->answer {statistics.median(waits):.1f}" if waits else "")
        split = [(1e3 * (x[4] - s), 1e3 * (at - x[4] - x[0])) for x, s, at in recent if s is not None and len(x) > 4]
        if split:  # sent -> the worker began the job; the job's end -> the main process read the answer
            text += (f" (to job start {statistics.median(a for a, _ in split):.1f}, job end to answer read "
                     f"{statistics.median(b for _, b in split):.1f})")
        return text

    rows = []
    for event in sorted(skipped, key=lambda e: skipped[e][0]):
        when = skipped[event][0]
        n, gap = burst(when)
        rows.append({"event": event, "t": when - start, "lag": lag(event), "full": full_since(when), "burst": n,
                     "gap": gap, "main": main_cpu(when), "workers": workers(when)})
    groups: list[list[dict]] = []
    for row in rows:
        if groups and row["t"] - groups[-1][-1]["t"] < 0.1:
            groups[-1].append(row)
        else:
            groups.append([row])
    lines = [f"{len(received)} events in the timeline, {len(skipped)} skipped, {len(groups)} bursts of skips; "
             f"lag of all events: median {statistics.median(lag(e) for e in received):.0f} ms, "
             f"p99 {sorted(lag(e) for e in received)[int(0.99 * (len(received) - 1))]:.0f} ms",
             "| t s | skipped (ids) | lag ms first-last | places full for ms (first skip) | received in 20 ms | "
             "longest gap in 500 ms before | main CPU / s | workers, 200 ms before the first skip |",
             "|---|---|---|---|---|---|---|---|"]
    for g in groups:
        a, b = g[0], g[-1]
        lines.append(f"| {a['t']:.2f} | {len(g)} ({a['event']}-{b['event']}) | {a['lag']:.0f}-{b['lag']:.0f} | "
                     f"{a['full']:.0f} | {max(r['burst'] for r in g)} | {a['gap']:.0f} | {a['main']:.2f} | "
                     f"{a['workers']} |")
    if per_event:
        lines.append("| event | t s | lag ms | full for ms | received in 20 ms | longest gap ms | main CPU / s |")
        lines.append("|---|---|---|---|---|---|---|")
        for r in rows:
            lines.append(f"| {r['event']} | {r['t']:.3f} | {r['lag']:.0f} | {r['full']:.0f} | {r['burst']} | "
                         f"{r['gap']:.0f} | {r['main']:.2f} |")
    # every analysed event: where the time from taking a place to the answer went
    split = []
    for event, (at, _, _, extra) in answered.items():
        if extra and len(extra) > 4 and event in received:
            took_at = placed[event][0] if event in placed else received[event][0]
            split.append((1e3 * (extra[4] - took_at), 1e3 * extra[0], 1e3 * (at - extra[4] - extra[0])))
    if split:
        def q(values, f):
            values = sorted(values)
            return values[min(int(f * len(values)), len(values) - 1)]
        names = ("place taken -> job start", "job (wall)", "job end -> answer read")
        lines.append("every analysed event, ms (median / p90 / max): " + "; ".join(
            f"{name} {q(col, 0.5):.1f} / {q(col, 0.9):.1f} / {max(col):.1f}"
            for name, col in zip(names, zip(*split))))
    waiting = steps.get("waiting", {})
    if waiting:
        waits = sorted(1e3 * placed[e][3] for e in placed if placed[e][3] is not None)
        lines.append(f"backlog: {len(waiting)} events waited, {len(placed)} got a place "
                     f"(waited median {statistics.median(waits) if waits else 0:.1f} ms, max "
                     f"{max(waits, default=0):.1f}), {sum(1 for e in skipped if skipped[e][3] == 'waited')} "
                     f"skipped after waiting")
    # the lag over the first seconds: where the main process fell behind
    lines.append("lag per 100 ms of the first 3 s (median ms, by event id // (rate / 10)):")
    per = max(int(rate / 10), 1)
    buckets: dict[int, list[float]] = {}
    for e in received:
        if e // per < 30:
            buckets.setdefault(e // per, []).append(lag(e))
    lines.append(" ".join(f"{statistics.median(v):.0f}" for _, v in sorted(buckets.items())))
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("timeline", type=Path)
    p.add_argument("--rate", type=float, default=200.0)
    p.add_argument("--places", type=int, default=8, help="analysis places (max_in_flight)")
    p.add_argument("--events", action="store_true", help="one row per skipped event too")
    args = p.parse_args()
    print("\n".join(analyse(args.timeline, args.rate, args.places, args.events)))


if __name__ == "__main__":
    main()
