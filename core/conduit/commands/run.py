"""``conduit run``: run a pipeline until its input ends or Ctrl-C."""

from __future__ import annotations

import argparse
import sys

from .common import add_pipeline_arguments, load_or_report

DESCRIPTION = """Run a pipeline: read events from its [source], run its [[stage]]s, write its outputs.

Ctrl-C (or SIGTERM) finishes the events in flight, closes every output and
prints a summary; a second Ctrl-C exits at once. --panel serves the control
panel (pause, stop, reset, new run, parameters, gates: docs/panel.md); then
`conduit status` and `conduit ctl` steer the run from a terminal. An output file that already
exists is kept under a numbered name (run_0042.1.h5; [engine] existing_outputs).
A live pipeline whose output names use {run} needs --run N (or source.run).

Exit status: 0 on success or interruption, 1 when the run stopped on an error,
2 for pipeline problems, 130 when interrupted during start-up (nothing run)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_pipeline_arguments(parser)
    parser.add_argument("--max-events", type=int, default=None, metavar="N", help="stop after N events")
    parser.add_argument("--run", type=int, default=None, metavar="N",
                        help="run number for the events and for {run} in output names (required for a live "
                             "source whose outputs use {run}; overrides the source's)")
    parser.add_argument("--panel", nargs="?", const="", default=None, metavar="HOST:PORT",
                        help="serve the control panel (a web page and JSON API, docs/panel.md) on HOST:PORT "
                             "(default: the [panel] table's listen, 127.0.0.1:8765)")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for tracebacks)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and the summary")


def main(args: argparse.Namespace) -> int:
    from ..logsetup import configure_logging

    configure_logging(-1 if args.quiet else args.verbose)
    if args.panel is not None:  # the same as [panel] enabled = true (and listen = "HOST:PORT")
        args.overrides = [*args.overrides, "panel.enabled=true"] + \
            ([f'panel.listen="{args.panel}"'] if args.panel else [])
    pipeline = load_or_report(args)
    if pipeline is None:
        return 2
    from ..engine.runner import run_pipeline
    from ..engine.summary import format_summary

    if args.run is not None and args.run < 0:
        print(f"conduit run: --run {args.run}: a run number is ≥ 0", file=sys.stderr)
        return 2
    summary = run_pipeline(pipeline, max_events=args.max_events, run=args.run)
    print(format_summary(summary), flush=True)
    return summary.exit_code
