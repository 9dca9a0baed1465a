"""``conduit status [HOST:PORT]``: what a running conduit is doing, read from its control panel."""

from __future__ import annotations

import argparse
import json
import sys

DESCRIPTION = """Show a running conduit's status: run, phase, events and rates, CoBo links,
stages, outputs and alarms. The run must serve its control panel
(`conduit run PIPELINE --panel`, or [panel] enabled = true).

Exit status: 0 when the run answers and no alarm is up, 1 when an alarm is up,
2 when nothing answers."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("address", nargs="?", default=None, metavar="HOST:PORT",
                        help="the panel's address (default 127.0.0.1:8765)")
    parser.add_argument("--json", action="store_true", help="print the whole status snapshot as JSON")


def main(args: argparse.Namespace) -> int:
    from ..client import PanelClient, PanelError

    try:
        status = PanelClient(args.address).status()
    except PanelError as err:
        print(f"conduit status: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(status, indent=2))
    else:
        print(format_status(status))
    return 1 if status.get("alarms") else 0


def format_status(s: dict) -> str:
    """A terminal page: one block per part of the panel."""
    e, q = s["events"], s["queue"]
    phase = "paused" if s["paused"] and s["phase"] == "running" else s["phase"]
    lines = [f"run {s['run']}  {phase.upper()}  {s['pipeline']}  (source {s['source']}, up {s['uptime_s']:.0f} s)"]
    for alarm in s["alarms"]:
        lines.append(f"  {'ERROR' if alarm['level'] == 'error' else 'WARNING'}: {alarm['message']}")
    r = e["rates"]
    lines.append(f"events   received {e['received']} ({r['received']:.1f}/s), complete {e['complete']}, incomplete "
                 f"{e['incomplete']}, analysed {e['analysed']} ({r['analysed']:.1f}/s), skipped {e['skipped']}, "
                 f"paused {e['paused']}, delivered {e['delivered']}, failures {e['failed']}")
    lines.append(f"queue    {q['depth']}/{q['size']}, analysing {q['in_flight']}/{q['max_in_flight']} "
                 f"(policy {q['policy']})")
    for c in s["streams"]:
        age = "never" if c["age_s"] is None else f"{c['age_s']:.1f} s ago"
        lines.append(f"{c['name']:<8} {c['state'] or 'connected':<11} {c['frames_per_s']:7.1f} frames/s "
                     f"{c['mb_per_s']:7.2f} MB/s  errors {c['errors']}  last data {age}")
    for t in s["stages"]:
        mean = "-" if t["mean_ms"] is None else f"{t['mean_ms']:.2f}"
        lines.append(f"stage    {t['name']:<20} {t['calls']:>8} calls  {mean:>8} ms  failures {t['failures']}"
                     f"  not run {t.get('skipped', 0)}  gave nothing {t.get('empty', 0)}")
        if t.get("counts"):
            counted = sorted(t["counts"].items(), key=lambda kv: -kv[1])
            lines.append(f"         {'':<20} counted: " + ", ".join(f"{k} {v}" for k, v in counted))
    for sink in s["sinks"]:
        for o in sink["outputs"]:
            size = "" if o["bytes"] is None else f"  {o['bytes'] / 1e6:.1f} MB"
            lines.append(f"output   {sink['name']}: {o['path']}{size}")
    for d in s["disks"]:
        lines.append(f"disk     {d['path']}: {d['free_bytes'] / 1e9:.1f} GB free")
    if s["losses"]:
        lines.append("lost     " + ", ".join(f"{k} {v}" for k, v in s["losses"].items()))
    for c in s["changes"]:
        lines.append(f"changed  {c['time']} from event {c['event']} (#{c['sequence']}): "
                     + ", ".join(f"{k} {v['old']} -> {v['new']}" for k, v in c["changes"].items()))
    return "\n".join(lines)
