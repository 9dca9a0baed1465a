"""``rerun-importer-attpc``: lets ``rerun run_0001.h5`` (and the viewer's Open dialog) show merged AT-TPC files.

Rerun runs every executable on ``PATH`` whose name starts with
``rerun-importer-`` with the opened file as its first argument, plus flags of
its own (``--application-id``, ``--recording-id``, ``--entity-path-prefix``,
``--time_sequence`` ...), and reads a Rerun stream from its standard output.
An importer that does not handle the file exits with code 66 so that Rerun
tries the next one.

This importer accepts HDF5 files in an attpc_merger layout (legacy, 1.0 or
2.0; also files recorded by conduit's ``hdf5`` sink with traces) and replays
them through a pipeline whose ``rerun`` stage writes to standard output:

* by default: the ``hdf5`` source on the file, then the ``pointcloud``,
  ``cluster.hdbscan``, ``estimate`` and ``histogram`` stages (those
  installed), and ``rerun``;
* or the pipeline named by ``--pipeline FILE`` or ``$CONDUIT_IMPORTER_PIPELINE``,
  whose ``[source]`` is replaced by the file and whose ``rerun`` stages are
  switched to standard output (one is added if it has none).

Every event is drawn (no display throttling) unless ``--max-display-rate`` says
otherwise. Diagnostics go to standard error; standard output carries only the
recording.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

__all__ = ["main", "handles", "EXIT_INCOMPATIBLE", "DEFAULT_STAGES"]

#: rr.EXTERNAL_IMPORTER_INCOMPATIBLE_EXIT_CODE (kept here so that refusing a file needs no rerun import).
EXIT_INCOMPATIBLE = 66
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
SUFFIXES = (".h5", ".hdf5", ".hdf", ".he5")
PIPELINE_ENV = "CONDUIT_IMPORTER_PIPELINE"
#: Analysis stages of the default pipeline, in order, used when installed.
DEFAULT_STAGES = ("pointcloud", "cluster.hdbscan", "estimate")

_SOURCE_HEADER = re.compile(r"^\s*\[\s*source\s*\]\s*(#.*)?$")
_TABLE_HEADER = re.compile(r"^\s*\[")


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    """Our options plus Rerun's; unknown flags (Rerun adds new ones) are ignored."""
    parser = argparse.ArgumentParser(prog="rerun-importer-attpc", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path", help="file to import (a merged AT-TPC HDF5 file)")
    parser.add_argument("--application-id", default=None)
    parser.add_argument("--opened-application-id", default=None)
    parser.add_argument("--recording-id", default=None)
    parser.add_argument("--opened-recording-id", default=None)
    parser.add_argument("--entity-path-prefix", default="")
    parser.add_argument("--pipeline", type=Path, default=os.environ.get(PIPELINE_ENV) or None,
                        help=f"pipeline TOML to replay the file through (default: ${PIPELINE_ENV}, else built in)")
    parser.add_argument("--max-events", type=int, default=None, help="stop after this many events")
    parser.add_argument("--max-display-rate", type=float, default=None,
                        help="draw at most this many events per second (default: every event)")
    args, _unknown = parser.parse_known_args(argv)
    return args


def handles(path: Path) -> str | None:
    """None when this importer handles ``path``, else why not (one line)."""
    if not path.is_file():
        return f"{path}: not a file"
    if path.suffix.lower() not in SUFFIXES:
        return f"{path}: not an HDF5 file name ({', '.join(SUFFIXES)})"
    try:
        with open(path, "rb") as fh:
            if fh.read(8) != HDF5_SIGNATURE:
                return f"{path}: no HDF5 signature"
    except OSError as err:
        return f"{path}: {err.strerror or err}"
    from conduit.get.merged import MergedFileError, open_merged

    try:
        with open_merged(path):
            return None
    except MergedFileError as err:
        return str(err)


def default_pipeline_text(path: Path, stages: list[str]) -> str:
    """The built-in pipeline: the hdf5 source on ``path``, the installed analysis stages, histograms, rerun."""
    lines = ["[source]", 'kind = "hdf5"', f"path = {json.dumps(str(path))}", ""]
    for use in stages:
        lines += ["[[stage]]", f'use = "{use}"', ""]
    if all(s in stages for s in DEFAULT_STAGES):
        lines += ["[[stage]]", 'use = "histogram"', "save = false", ""]
    lines += ["[[stage]]", 'use = "rerun"', 'mode = "stdout"', ""]
    return "\n".join(lines)


def replace_source(text: str, path: Path) -> str:
    """``text`` with its ``[source]`` table replaced by the hdf5 source on ``path`` (line numbers kept)."""
    lines = text.splitlines()
    start = next((i for i, ln in enumerate(lines) if _SOURCE_HEADER.match(ln)), None)
    if start is not None:
        end = next((i for i in range(start + 1, len(lines)) if _TABLE_HEADER.match(lines[i])), len(lines))
        lines[start:end] = [""] * (end - start)
    lines += ["", "[source]", 'kind = "hdf5"', f"path = {json.dumps(str(path))}", ""]
    return "\n".join(lines)


def build_pipeline(args: argparse.Namespace, path: Path):
    """The pipeline to replay ``path`` with, its rerun stages writing to stdout."""
    from conduit.config import StageConfig, load_pipeline
    from conduit.plugins import get_registry

    registry = get_registry()
    if args.pipeline is not None:
        pipeline_path = Path(args.pipeline).expanduser()
        try:
            text = pipeline_path.read_text(encoding="utf-8")
        except OSError as err:
            raise SystemExit(f"rerun-importer-attpc: cannot read pipeline {pipeline_path}: {err.strerror or err}")
        pipeline = load_pipeline(pipeline_path, text=replace_source(text, path))
    else:
        stages = [s for s in DEFAULT_STAGES if s in registry.stages]
        missing = [s for s in DEFAULT_STAGES if s not in registry.stages]
        if missing:
            print(f"rerun-importer-attpc: stages not installed, showing raw data only: {', '.join(missing)}",
                  file=sys.stderr)
        pipeline = load_pipeline(path.parent / "rerun-importer-attpc.toml", text=default_pipeline_text(path, stages))

    changes = {"mode": "stdout", "entity_prefix": args.entity_path_prefix or "",
               "draw_every_event": args.max_display_rate is None}
    if args.max_display_rate is not None:
        changes["max_display_rate"] = args.max_display_rate
    application_id = args.application_id or args.opened_application_id
    recording_id = args.recording_id or args.opened_recording_id
    if application_id:
        changes["application_id"] = application_id
    if recording_id:
        changes["recording_id"] = recording_id
    reruns = [s for s in pipeline.stages if s.use == "rerun"]
    if not reruns:
        cls = registry.stages["rerun"]
        params = cls.Params()
        pipeline.stages.append(StageConfig(position=len(pipeline.stages) + 1, use="rerun", cls=cls, params=params,
                                           origins={}, line=None, requires=(), provides=()))
        reruns = pipeline.stages[-1:]
    for stage in reruns:
        stage.params = stage.params.replace(**changes)
    return pipeline


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``rerun-importer-attpc`` console script."""
    args = parse_arguments(list(sys.argv[1:] if argv is None else argv))
    path = Path(args.path).expanduser().resolve()
    reason = handles(path)
    if reason is not None:
        print(f"rerun-importer-attpc: not handled: {reason}", file=sys.stderr)
        return EXIT_INCOMPATIBLE

    from conduit.config import PipelineError
    from conduit.logsetup import configure_logging

    configure_logging(0)
    try:
        pipeline = build_pipeline(args, path)
    except PipelineError as err:
        for line in err.lines:
            print(line, file=sys.stderr)
        return 2
    # Standard output is the recording: anything printed by Python code goes to stderr instead.
    real_stdout, sys.stdout = sys.stdout, sys.stderr
    try:
        from conduit.engine import run_pipeline
        from conduit.engine import format_summary

        summary = run_pipeline(pipeline, max_events=args.max_events)
        print(format_summary(summary), file=sys.stderr)
    finally:
        sys.stdout = real_stdout
    return summary.exit_code


if __name__ == "__main__":
    sys.exit(main())
