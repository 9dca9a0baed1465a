"""Arguments and loading shared by the commands that take a pipeline file."""

from __future__ import annotations

import argparse
import sys

__all__ = ["add_pipeline_arguments", "load_or_report"]


def add_pipeline_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pipeline", help="pipeline TOML file, e.g. pipelines/online.toml")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one value: source.hosts=..., engine.workers=2, stage.2.min_points=4, "
        "pointcloud.peak_threshold=30 (value read as TOML, else as a string; repeatable)",
    )


def load_or_report(args: argparse.Namespace):
    """The validated pipeline, or None after printing every problem to stderr."""
    from ..config.pipeline import PipelineError, load_pipeline

    try:
        return load_pipeline(args.pipeline, args.overrides)
    except PipelineError as err:
        for line in err.lines:
            print(line, file=sys.stderr)
        n = len(err.lines)
        print(f"{n} problem{'s' if n != 1 else ''} found; nothing was run", file=sys.stderr)
        return None
