"""Per-second trace of an online run: what every process and the machine did in each second.

    .venv/bin/python benchmarks/trace_seconds.py --run PID --daq PID --port BASE --rate 200 --out trace.jsonl
    .venv/bin/python benchmarks/trace_seconds.py --show trace.jsonl [--recording run_0001.h5]

Started by ``end_to_end.py online --trace-seconds`` (or by hand, given the pids of `conduit run` and of
`conduit simulate serve`); it samples /proc once a second until `conduit run` ends and writes one JSON line
per second:

* per process kind (main, hdf5 writer, workers summed, DAQ): user and system CPU (ms, /proc/PID/stat), the
  time its threads waited on a run queue for a CPU (ms, /proc/PID/task/*/schedstat), voluntary and involuntary
  context switches (/proc/PID/task/*/status), minor and major page faults;
* the machine (/proc/stat): user, nice, system, iowait, irq, softirq, steal, idle (ms over all CPUs), and the
  busy time of every process that is not ours ("others" = busy - ours);
* the kernel's Dirty and Writeback pages (MB, /proc/meminfo): the hdf5 writer's data on its way to disk;
* the loopback: the bytes queued unread in the conduit's sockets (rx_queue of the sockets to the DAQ's ports,
  MB) and unsent in the DAQ's (tx_queue), from /proc/net/tcp;
* the main process's bytes read (rchar, MB): events received that second = MB / the event's size;
* the lag: events due by the DAQ's clock (seconds * rate) minus events read by the conduit.

``--show`` prints the trace as a table, one row a second; with ``--recording`` (the kept run_0001.h5 of
``end_to_end.py online --keep DIR``) also the events skipped whose due second that was (an event recorded
without /cloud/cloud_N was skipped; event n is due n / rate seconds after serving began).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from _common import children

TICK = os.sysconf("SC_CLK_TCK")
KINDS = ("main", "hdf5 writer", "workers", "DAQ")


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def process_counters(pid: int) -> dict[str, float] | None:
    """Cumulative counters of one process (all its threads): CPU s, run-queue wait s, switches, faults."""
    stat = _read(f"/proc/{pid}/stat")
    if not stat:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    out = {"user": int(fields[11]) / TICK, "sys": int(fields[12]) / TICK,
           "minflt": int(fields[7]), "majflt": int(fields[9]),
           "runq": 0.0, "vcsw": 0, "ivcsw": 0}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        sched = _read(f"/proc/{pid}/task/{tid}/schedstat").split()
        if len(sched) >= 2:
            out["runq"] += int(sched[1]) / 1e9
        for line in _read(f"/proc/{pid}/task/{tid}/status").splitlines():
            if line.startswith("voluntary_ctxt_switches"):
                out["vcsw"] += int(line.split()[1])
            elif line.startswith("nonvoluntary_ctxt_switches"):
                out["ivcsw"] += int(line.split()[1])
    return out


def thread_counters(pid: int) -> dict[str, tuple[str, int, float]]:
    """Per thread of a process: tid -> (name, voluntary context switches, CPU ms): which thread switches."""
    out = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        stat = _read(f"/proc/{pid}/task/{tid}/stat")
        if not stat:
            continue
        name, _, rest = stat.partition("(")[2].rpartition(")")
        fields = rest.split()
        vcs = next((int(line.split()[1]) for line in _read(f"/proc/{pid}/task/{tid}/status").splitlines()
                    if line.startswith("voluntary_ctxt_switches")), 0)
        out[tid] = (name, vcs, (int(fields[11]) + int(fields[12])) * 1e3 / TICK)
    return out


def rchar(pid: int) -> int:
    """Bytes the process read through read-family calls (its sockets' readv included)."""
    for line in _read(f"/proc/{pid}/io").splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    return 0


def machine_ms() -> dict[str, float]:
    """Cumulative CPU time of the machine by state (ms over all CPUs), /proc/stat's first line."""
    values = [int(v) for v in _read("/proc/stat").splitlines()[0].split()[1:9]]
    names = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
    return {name: v * 1e3 / TICK for name, v in zip(names, values)}


def meminfo_mb() -> dict[str, float]:
    out = {}
    for line in _read("/proc/meminfo").splitlines():
        key, _, rest = line.partition(":")
        if key in ("Dirty", "Writeback", "MemFree", "Cached"):
            out[key] = int(rest.split()[0]) / 1024
    return out


#: /proc/vmstat counters of page reclaim: pages scanned and taken by kswapd and by allocating processes
#: themselves (direct reclaim, charged to them as system time), and how often an allocation stalled for it.
VMSTAT = ("pgscan_kswapd", "pgscan_direct", "pgsteal_kswapd", "pgsteal_direct", "allocstall_normal",
          "allocstall_movable", "pgmajfault", "pgpgout")


def vmstat() -> dict[str, int]:
    out = dict.fromkeys(VMSTAT, 0)
    for line in _read("/proc/vmstat").splitlines():
        key, _, value = line.partition(" ")
        if key in out:
            out[key] = int(value)
    return out


def loopback_queues(base_port: int, count: int = 11) -> tuple[float, float]:
    """(MB unread in the conduit's sockets to the DAQ, MB unsent in the DAQ's sockets), /proc/net/tcp."""
    ports = {f"{p:04X}" for p in range(base_port, base_port + count)}
    unread = unsent = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in _read(table).splitlines()[1:]:
            fields = line.split()
            if fields[3] != "01":
                continue
            tx, rx = (int(v, 16) for v in fields[4].split(":"))
            if fields[1].rsplit(":", 1)[1] in ports:
                unsent += tx
            elif fields[2].rsplit(":", 1)[1] in ports:
                unread += rx
    return unread / 1e6, unsent / 1e6


#: Kernel threads whose CPU is shown apart from the other processes' (by the start of their name): writeback
#: (kworker flush work, jbd2), network softirq overflow (ksoftirqd), page reclaim (kswapd, kdamond).
KTHREADS = ("kworker", "ksoftirqd", "kswapd", "jbd2", "kdamond")


def kernel_threads_ms() -> dict[int, tuple[str, float]]:
    """Cumulative CPU (ms) of every kernel thread (a child of kthreadd, pid 2): pid -> (name prefix or "other", ms)."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        stat = _read(f"/proc/{entry}/stat")
        if not stat:
            continue
        name, _, rest = stat.partition("(")[2].rpartition(")")
        fields = rest.split()
        if fields[1] != "2":
            continue
        prefix = next((k for k in KTHREADS if name.startswith(k)), "other")
        out[int(entry)] = (prefix, (int(fields[11]) + int(fields[12])) * 1e3 / TICK)
    return out


def _kthreads_delta(before: dict, now: dict) -> dict[str, float]:
    """CPU ms of the kernel threads between two snapshots by name prefix (a thread that started in between counts
    whole, one that ended in between is lost)."""
    out = dict.fromkeys(KTHREADS + ("other",), 0.0)
    for pid, (prefix, ms) in now.items():
        out[prefix] += ms - before.get(pid, (prefix, 0.0))[1]
    return out


def _kind(pid: int) -> str:
    cmdline = _read(f"/proc/{pid}/cmdline")
    if "resource_tracker" in cmdline:
        return "tracker"
    return "hdf5 writer" if "hdf5_sink.writer" in cmdline else "workers"


def snapshot(run_pid: int, daq_pid: int, base_port: int) -> dict:
    """Every cumulative counter now; a process gone keeps nothing (its last second is then not counted)."""
    procs: dict[str, dict[str, float]] = {}

    def add(kind: str, counters: dict[str, float] | None) -> None:
        if counters is None:
            return
        into = procs.setdefault(kind, dict.fromkeys(counters, 0.0))
        for key, value in counters.items():
            into[key] += value

    add("main", process_counters(run_pid))
    add("DAQ", process_counters(daq_pid))
    pids = {}
    for pid in children(run_pid):
        kind = _kind(pid)
        if kind != "tracker":
            pids[pid] = kind
            add(kind, process_counters(pid))
    unread, unsent = loopback_queues(base_port)
    return {"t": time.monotonic(), "procs": procs, "pids": pids, "machine": machine_ms(), "mem": meminfo_mb(),
            "vm": vmstat(), "kthreads": kernel_threads_ms(), "self": process_counters(os.getpid()),
            "main_threads": thread_counters(run_pid),
            "unread_mb": unread, "unsent_mb": unsent, "rchar": rchar(run_pid)}


def second(before: dict, now: dict, t0: float, rate: float, event_mb: float, read_mb: float) -> dict:
    """One line of the trace: what changed between two snapshots, per process kind and for the machine."""
    dt = now["t"] - before["t"]
    row: dict = {"t": round(now["t"] - t0, 2), "dt": round(dt, 3)}
    ours = 0.0
    for kind in KINDS:
        a, b = before["procs"].get(kind), now["procs"].get(kind)
        # a worker that started or ended in this second changes the sum: count only when the same pids are there
        same = kind in ("main", "DAQ") or {p for p, k in before["pids"].items() if k == kind} == {
            p for p, k in now["pids"].items() if k == kind}
        if a is None or b is None or not same:
            row[kind] = None
            continue
        d = {key: b[key] - a[key] for key in b}
        if min(d.values()) < 0:  # a thread ended between the samples: its counters left the sum
            row[kind] = None
            continue
        ours += (d["user"] + d["sys"]) * 1e3
        row[kind] = {"user": round(d["user"] * 1e3), "sys": round(d["sys"] * 1e3), "runq": round(d["runq"] * 1e3),
                     "vcsw": int(d["vcsw"]), "ivcsw": int(d["ivcsw"]), "minflt": int(d["minflt"]),
                     "majflt": int(d["majflt"])}
    m = {key: now["machine"][key] - before["machine"][key] for key in now["machine"]}
    busy = sum(v for key, v in m.items() if key not in ("idle", "iowait", "steal"))
    row["machine"] = {key: round(v) for key, v in m.items()}
    row["kthreads"] = {key: round(v) for key, v in _kthreads_delta(before["kthreads"], now["kthreads"]).items()}
    tracer = (now["self"]["user"] + now["self"]["sys"] - before["self"]["user"] - before["self"]["sys"]) * 1e3
    row["tracer"] = round(tracer)
    row["others"] = round(busy - ours - sum(row["kthreads"].values()) - tracer)
    row["dirty_mb"] = round(now["mem"].get("Dirty", 0.0), 1)
    row["writeback_mb"] = round(now["mem"].get("Writeback", 0.0), 1)
    row["free_mb"] = round(now["mem"].get("MemFree", 0.0))
    row["cached_mb"] = round(now["mem"].get("Cached", 0.0))
    row["vm"] = {key: now["vm"][key] - before["vm"][key] for key in VMSTAT}
    row["unread_mb"] = round(now["unread_mb"], 1)
    row["unsent_mb"] = round(now["unsent_mb"], 1)
    threads = []
    for tid, (name, vcs, ms) in now["main_threads"].items():
        was = before["main_threads"].get(tid)
        if was is not None:
            threads.append((vcs - was[1], name, round(ms - was[2])))
    # the main process's threads that switched most: [name, voluntary switches, CPU ms]
    row["main_threads"] = [[name, vcs, ms] for vcs, name, ms in sorted(threads, reverse=True)[:3]]
    got = (now["rchar"] - before["rchar"]) / 1e6
    row["read_events"] = round(got / event_mb, 1)
    row["lag_events"] = round(rate * (now["t"] - t0) - (read_mb + got) / event_mb)
    return row


def _running(pid: int) -> bool:
    """The process exists and has not exited (a zombie not yet reaped by its parent has ended)."""
    stat = _read(f"/proc/{pid}/stat")
    return bool(stat) and stat.rsplit(")", 1)[1].split()[0] != "Z"


def trace(run_pid: int, daq_pid: int, base_port: int, rate: float, out: Path, event_mb: float,
          every: float = 1.0) -> None:
    """Sample every ``every`` s until `conduit run` ends; one JSON line per interval into ``out``."""
    first = before = snapshot(run_pid, daq_pid, base_port)
    t0, read_mb = first["t"], 0.0
    with open(out, "w") as f:
        next_at = t0 + every
        while _running(run_pid):
            time.sleep(max(0.0, next_at - time.monotonic()))
            next_at += every
            now = snapshot(run_pid, daq_pid, base_port)
            if "main" not in now["procs"]:
                break
            row = second(before, now, t0, rate, event_mb, read_mb)
            read_mb += (now["rchar"] - before["rchar"]) / 1e6
            f.write(json.dumps(row) + "\n")
            f.flush()
            before = now


def skipped_events(recording: Path) -> list[bool]:
    """For every recorded event in event-id order (= the DAQ's serving order): was it skipped (no cloud)?"""
    import h5py

    with h5py.File(recording, "r") as f:
        ids = sorted(int(name.split("_")[1]) for name in f["events"].keys())
        clouds = set(f["cloud"].keys()) if "cloud" in f else set()
    return [f"cloud_{event_id}" not in clouds for event_id in ids]


def skipped_by_second(rows: list[dict], skipped: list[bool]) -> list[int]:
    """Skipped events per trace row, each event put in the second in which the conduit read it (the k-th
    event in the second in which the main process's reads passed k events)."""
    out, k = [], 0.0
    for row in rows:
        upto = min(len(skipped), int(round(k + row["read_events"])))
        out.append(sum(skipped[int(round(k)):upto]))
        k += row["read_events"]
    return out


def _cpu(p: dict | None) -> float | None:
    return None if p is None else p["user"] + p["sys"]


#: Columns of the table: (heading, value of one row). None where a process was missing or restarted.
COLUMNS = (
    ("read", lambda r: r["read_events"]),
    ("lag", lambda r: r["lag_events"]),
    ("unread MB", lambda r: r["unread_mb"]),
    ("unsent MB", lambda r: r["unsent_mb"]),
    ("main u+s", lambda r: _cpu(r["main"])),
    ("main sys", lambda r: r["main"] and r["main"]["sys"]),
    ("main runq", lambda r: r["main"] and r["main"]["runq"]),
    ("main vcs", lambda r: r["main"] and r["main"]["vcsw"]),
    ("main ivcs", lambda r: r["main"] and r["main"]["ivcsw"]),
    ("writer u+s", lambda r: _cpu(r["hdf5 writer"])),
    ("workers u+s", lambda r: _cpu(r["workers"])),
    ("workers runq", lambda r: r["workers"] and r["workers"]["runq"]),
    ("DAQ u+s", lambda r: _cpu(r["DAQ"])),
    ("DAQ sys", lambda r: r["DAQ"] and r["DAQ"]["sys"]),
    ("DAQ runq", lambda r: r["DAQ"] and r["DAQ"]["runq"]),
    ("DAQ vcs", lambda r: r["DAQ"] and r["DAQ"]["vcsw"]),
    ("others", lambda r: r["others"]),
    ("kworker", lambda r: r["kthreads"]["kworker"]),
    ("ksoftirqd", lambda r: r["kthreads"]["ksoftirqd"]),
    ("kswapd+kdamond", lambda r: r["kthreads"]["kswapd"] + r["kthreads"]["kdamond"]),
    ("steal", lambda r: r["machine"]["steal"]),
    ("iowait", lambda r: r["machine"]["iowait"]),
    ("softirq", lambda r: r["machine"]["softirq"]),
    ("idle", lambda r: r["machine"]["idle"]),
    ("dirty MB", lambda r: r["dirty_mb"]),
    ("wb MB", lambda r: r["writeback_mb"]),
    ("free MB", lambda r: r["free_mb"]),
    ("reclaim scans", lambda r: r["vm"]["pgscan_kswapd"] + r["vm"]["pgscan_direct"]),
    ("main faults", lambda r: r["main"] and r["main"]["minflt"]),
    ("main threads switching most (vcs, ms)", lambda r: " ".join(f"{n}:{v},{ms}" for n, v, ms in r["main_threads"])
     if "main_threads" in r else None),
)


def _pearson(xs: list[float], ys: list[float]) -> float | None:
    pairs = [(x, y) for x, y in zip(xs, ys) if x is not None and y is not None]
    if len(pairs) < 3:
        return None
    n = len(pairs)
    mx, my = sum(p[0] for p in pairs) / n, sum(p[1] for p in pairs) / n
    sxx = sum((p[0] - mx) ** 2 for p in pairs)
    syy = sum((p[1] - my) ** 2 for p in pairs)
    if not sxx or not syy:
        return None
    return sum((p[0] - mx) * (p[1] - my) for p in pairs) / (sxx * syy) ** 0.5


def _line(ys: list[float | None], xs: list[float]) -> tuple[float, float, float] | None:
    """Least-squares line y = a + b x over the pairs where y is known: (a, b, Pearson r)."""
    pairs = [(x, y) for x, y in zip(xs, ys) if y is not None]
    if len(pairs) < 3:
        return None
    n = len(pairs)
    mx, my = sum(p[0] for p in pairs) / n, sum(p[1] for p in pairs) / n
    sxx = sum((p[0] - mx) ** 2 for p in pairs)
    if not sxx:
        return None
    b = sum((p[0] - mx) * (p[1] - my) for p in pairs) / sxx
    r = _pearson([p[0] for p in pairs], [p[1] for p in pairs])
    return my - b * mx, b, r or 0.0


def show(path: Path, recording: Path | None) -> None:
    """The trace as a table, one row a second, then each column's correlation with the skips (and the read)."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    skips = skipped_by_second(rows, skipped_events(recording)) if recording else [None] * len(rows)
    print("| t s | skipped | " + " | ".join(name for name, _ in COLUMNS) + " |")
    print("|---|---|" + "---|" * len(COLUMNS))
    table = [[value(r) for _, value in COLUMNS] for r in rows]
    for r, skip, values in zip(rows, skips, table):
        cells = ["-" if v is None else v if isinstance(v, str) else f"{v:g}" for v in values]
        print(f"| {r['t']:.0f} | {'-' if skip is None else skip} | " + " | ".join(cells) + " |")
    print("(per second: CPU in ms (u+s user + system; runq: ms its threads waited for a CPU; vcs/ivcs: voluntary/"
          "involuntary context switches); read: events the conduit read; lag: events due by the DAQ's clock minus "
          "read; unread/unsent: MB queued in the conduit's / the DAQ's sockets; others: busy ms of processes not "
          "ours; kworker ... kdamond: the kernel's threads; steal, iowait, softirq, idle: ms over all CPUs; dirty, "
          "wb: the kernel's dirty and writeback pages; skipped: events read that second and skipped)")
    serving = [i for i, r in enumerate(rows) if r["read_events"] > 0]
    if not serving:
        return
    keep = range(serving[0], serving[-1] + 1)
    means = []
    for j, (name, _) in enumerate(COLUMNS):
        xs = [table[i][j] for i in keep if table[i][j] is not None and not isinstance(table[i][j], str)]
        if xs:
            means.append(f"{name} {sum(xs) / len(xs):.4g}")
    print(f"\nmean per second over the {len(keep)} seconds of serving: " + "; ".join(means))
    print(f"\nCPU per second against events read per second, least squares over the serving seconds (runs served at "
          "different speeds by a shared machine compare by the slope): ms/s = fixed + slope x events/s")
    print("| process | fixed ms/s | slope ms/event | r |")
    print("|---|---|---|---|")
    reads = [rows[i]["read_events"] for i in keep]
    for name in ("main u+s", "main sys", "writer u+s", "workers u+s", "DAQ u+s", "DAQ sys", "main vcs", "DAQ vcs"):
        j = [n for n, _ in COLUMNS].index(name)
        fit = _line([table[i][j] for i in keep], reads)
        if fit is not None:
            print(f"| {name} | {fit[0]:.1f} | {fit[1]:.3f} | {fit[2]:+.2f} |")
    print(f"\ncorrelation over the {len(keep)} seconds of serving (Pearson r; per-second values):")
    targets = [("skipped", [skips[i] for i in keep])] if recording else []
    targets.append(("read", [rows[i]["read_events"] for i in keep]))
    print("| column | " + " | ".join(f"r with {name}" for name, _ in targets) + " |")
    print("|---|" + "---|" * len(targets))
    for j, (name, _) in enumerate(COLUMNS):
        xs = [table[i][j] for i in keep]
        if any(isinstance(x, str) for x in xs):
            continue
        rs = [_pearson(xs, ys) for _, ys in targets]
        print(f"| {name} | " + " | ".join("-" if r is None else f"{r:+.2f}" for r in rs) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=int, help="pid of `conduit run`")
    parser.add_argument("--daq", type=int, help="pid of `conduit simulate serve`")
    parser.add_argument("--port", type=int, help="the DAQ's first port (11 in all)")
    parser.add_argument("--rate", type=float, default=200.0, help="events/s the DAQ serves")
    parser.add_argument("--event-mb", type=float, default=2.78, help="MB of frames per event (default mix)")
    parser.add_argument("--out", type=Path, help="where the JSON lines go")
    parser.add_argument("--show", type=Path, help="print a trace as a table")
    parser.add_argument("--recording", type=Path, help="with --show: the run's run_0001.h5 (skips per second)")
    args = parser.parse_args()
    if args.show:
        show(args.show, args.recording)
    elif args.run and args.daq and args.port and args.out:
        trace(args.run, args.daq, args.port, args.rate, args.out, args.event_mb)
    else:
        sys.exit("trace_seconds.py: give --run, --daq, --port and --out, or --show FILE")


if __name__ == "__main__":
    main()
