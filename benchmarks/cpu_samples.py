"""Where a ``conduit run`` main process's CPU goes, from the samples of `benchmarks/cpu_sampler` (not a test).

    # sample the conduit of an online run (start sampling once it serves: touch /tmp/s.go; stop: /tmp/s.stop)
    CONDUIT_CPU_SAMPLES=/tmp/s PYTHONPATH=benchmarks/cpu_sampler \\
        .venv/bin/python benchmarks/end_to_end.py online --rates 200 --seconds 40 &
    .venv/bin/python benchmarks/cpu_samples.py /tmp/s.PID [--ms 3.3] [--lines 30]

Each stack is put in the first category one of its frames matches, from the innermost frame out; ``--ms``
(the process's CPU per event, e.g. from ``end_to_end.py``) turns the shares into ms per event; ``--lines``
lists the innermost lines that took most samples.
"""

from __future__ import annotations

import argparse
import collections

#: (category, substrings of a frame "function (file:line)"), tried in this order for each frame, innermost first.
CATEGORIES = [
    ("decode kernel (numba)", ["decode_into (decoder.py"]),
    ("readv / socket reads", ["_receive_into (exporter_client.py"]),
    ("split + check_frame", ["split_messages (", "check_frame (frames.py"]),
    ("builder: emit + ordered copy", ["_emit (builder.py", "traces (builder.py"]),
    ("builder: _file, sequencer, settle/expire", ["_file (builder.py", "add_checked (", "add_frame (builder.py",
                                                  "poll (builder.py"]),
    ("pace: hold, pause, backlog mark", ["_hold (exporter.py", "_pause (exporter.py", "_backlog_mark",
                                        "_lowest_backlog"]),
    ("rests (RestAlarm, its timer)", ["rest (exporter_client.py", "_rest (exporter.py", "run (exporter_client.py"]),
    ("frame handler (on_frames) own", ["on_frames (exporter.py"]),
    ("emit to the engine", ["emit (source.py", "_emit_all ("]),
    ("receive loop own (receive_frames)", ["receive_frames ("]),
    ("source watch task", ["_watch (exporter.py"]),
    ("worker job: pack", ["pack (messages.py"]),
    ("worker answer: unpack", ["unpack (messages.py"]),
    ("worker pipes: write, read", ["_write (workers.py", "_read (workers.py"]),
    ("worker call, other (trio, slots)", ["call (workers.py", "_call (pool.py", "analyse (pool.py",
                                         "holding (shared_traces"]),
    ("analysis results: accounting", ["_analyse (runner.py", "_analyser ("]),
    ("dispatcher", ["_dispatch (runner.py"]),
    ("histogram sink (in the event loop)", ["consume (sink.py", "fill (hset.py"]),
    ("sink tasks: batches, thread hand-offs", ["_sink_task (", "_consume (runner.py", "_call_sink (",
                                              "to_thread_run_sync", "_consume_all ("]),
    ("deliverer", ["_deliver_to_sinks (", "_deliver (runner", "_fan_out ("]),
    ("metrics, status line, control tick", ["_metrics_ticker", "snapshot (", "update (status.py", "on_tick ("]),
    ("epoll_wait: the kernel putting the thread to sleep and waking it, or other threads' CPU",
     ["get_events (_io_epoll.py"]),
    ("trio cancel scopes and timers (expiry, Cancelled)", [
        "_attempt_delivery_of_any_pending_cancel", "expire (_run.py", "_cancel (_run.py", "recalculate (_run.py",
        "__exit__ (_run.py", "__enter__ (_run.py", "move_on_", "sleep_until (", "sleep (_timeouts.py"]),
    ("trio scheduling, other", ["unrolled_run (_run.py"]),
]


def categorise(path: str) -> tuple[collections.Counter, collections.Counter, int]:
    counts: collections.Counter = collections.Counter()
    lines: collections.Counter = collections.Counter()
    total = 0
    with open(path) as f:
        for line in f:
            stack, _, n = line.rstrip("\n").rpartition(" ")
            frames = stack.split(";")
            total += int(n)
            lines[frames[-1]] += int(n)
            for frame in reversed(frames):
                hit = next((name for name, subs in CATEGORIES if any(s in frame for s in subs)), None)
                if hit is not None:
                    counts[hit] += int(n)
                    break
            else:
                counts["other"] += int(n)
    return counts, lines, total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("samples")
    ap.add_argument("--ms", type=float, default=None, help="the process's CPU ms per event (shares -> ms)")
    ap.add_argument("--lines", type=int, default=0, help="also the innermost lines with most samples")
    args = ap.parse_args()
    counts, lines, total = categorise(args.samples)
    print(f"{total} samples (2 ms of process CPU each)")
    print("| share | " + ("ms per event | " if args.ms else "") + "where |")
    print("|---|" + ("---|" if args.ms else "") + "---|")
    for name, n in counts.most_common():
        ms = f" {args.ms * n / total:.3f} |" if args.ms else ""
        print(f"| {100 * n / total:.1f} % |{ms} {name} |")
    for frame, n in lines.most_common(args.lines):
        print(f"{100 * n / total:5.1f} %  {frame}")


if __name__ == "__main__":
    main()
