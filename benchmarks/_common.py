"""Helpers shared by the benchmark scripts."""

from __future__ import annotations

import os
import platform


def machine() -> str:
    """CPU model, visible CPUs and Python version: every recorded figure names its machine."""
    model = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} CPUs visible, Python {platform.python_version()}"


def rss_kib(pid: int) -> int:
    """Resident memory of a process (VmRSS, KiB); 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def children(pid: int) -> list[int]:
    """Every descendant of a process (the conduit's workers, however started), children before grandchildren.

    ``/proc/PID/task/PID/children`` lists only the children of the main *thread*: trio-parallel
    starts its workers from a worker thread, so they are found by parent pid over /proc instead.
    """
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        parents.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        kids = parents.get(todo.pop(0), [])
        out += kids
        todo += kids
    return out


def cpu_times(pid: int) -> tuple[float, float] | None:
    """(user, system) CPU time of a process (s); None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process (s); None once it is gone."""
    times = cpu_times(pid)
    return None if times is None else sum(times)


def write_section(path, text: str, before: str | None = None) -> None:
    """Put a markdown section (``text``, starting with its ``## title`` line) into the file at ``path``.

    An existing section of that title is replaced up to the next ``## ``; otherwise the section goes
    before the heading ``before`` when the file has it, else at the end.
    """
    from pathlib import Path

    path = Path(path)
    title = text.split("\n", 1)[0]
    text = text.rstrip("\n") + "\n"
    doc = path.read_text() if path.exists() else ""
    start = doc.find(title + "\n")
    if start >= 0:
        end = doc.find("\n## ", start + len(title))
        doc = doc[:start] + text + (doc[end:] if end >= 0 else "")
    else:
        anchor = doc.find(before) if before else -1
        if anchor >= 0:
            doc = doc[:anchor] + text + "\n" + doc[anchor:]
        else:
            doc = doc.rstrip("\n") + ("\n\n" if doc else "") + text
    path.write_text(doc)


#: The reference analysis chain, as [[stage]] tables for the pipeline-running benchmarks.
ANALYSIS_STAGES = """
[[stage]]
use = "pointcloud"

[[stage]]
use = "cluster.hdbscan"

[[stage]]
use = "estimate"

[[stage]]
use = "histogram"
"""
