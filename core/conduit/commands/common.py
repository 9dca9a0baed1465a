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
        "cluster.hdbscan.min_points=4 (a stage by its whole name), stage.2.use=cluster.dbscan (swap a stage) "
        "(value read as TOML, else as a string; repeatable)",
    )


def load_or_report(args: argparse.Namespace, *, warn: bool = True):
    """The validated pipeline, or None after printing every problem to stderr.

    ``warn``: also print the pipeline's warnings (a shadowed development plugin, parameters a stage swapped
    with ``--set stage.N.use=...`` does not have) to stderr, one ``warning: ...`` line each.
    """
    from ..config.pipeline import PipelineError, load_pipeline

    try:
        pipeline = load_pipeline(args.pipeline, args.overrides)
    except PipelineError as err:
        for line in err.lines:
            print(line, file=sys.stderr)
        n = len(err.lines)
        print(f"{n} problem{'s' if n != 1 else ''} found; nothing was run", file=sys.stderr)
        return None
    for line in pipeline.warnings if warn else ():
        print(f"warning: {line}", file=sys.stderr)
    return pipeline
