"""``conduit check``: validate a pipeline and show every resolved value and where it came from."""

from __future__ import annotations

import argparse
import sys

from .common import add_pipeline_arguments, load_or_report

DESCRIPTION = """Validate a pipeline without running anything.

Prints the source, detector and engine settings and every stage in order with
each parameter's value and its origin (default, file or --set). Exit status 2
and one line per problem (file.toml:LINE: ...) when something is wrong,
including an electronics map or pad geometry that is missing, malformed
(its own file:line) or that do not match (pads the geometry cannot place).
Warnings (exit 0): DataExporter hosts this machine cannot resolve, a live
source without a run number while outputs use {run}, a CONDUIT_PLUGINS
development copy that an installed plugin shadows, parameters left out of a
stage swapped with --set stage.N.use=NAME."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_pipeline_arguments(parser)


def _table(title: str, params, origins: dict[str, str]) -> list[str]:
    lines = [title]
    specs = params.specs()
    width = max((len(s.name) for s in specs), default=0)
    for spec in specs:
        value = params.to_dict()[spec.name]
        lines.append(f"    {spec.name:<{width}} = {value!r:<28} ({origins.get(spec.name, 'default')})")
    return lines


def format_pipeline(pipeline) -> str:
    out = [f"pipeline {pipeline.path}", ""]
    source = pipeline.source
    out += _table(f"[source] kind = {source.kind!r}{' (live)' if source.cls.live else ''}", source.params,
                  source.origins)
    out.append("")
    out += _table("[detector]", pipeline.detector, pipeline.detector_origins)
    out.append("")
    out += _table("[engine]", pipeline.engine, pipeline.engine_origins)
    out.append("")
    out += _table("[alarms]", pipeline.alarms, {})
    for service in pipeline.services.values():
        out.append("")
        out += _table(f"[{service.name}] (service)", service.params, service.origins)
    for stage in pipeline.stages:
        out.append("")
        io = []
        if stage.requires:
            io.append("requires " + ", ".join(stage.requires))
        if stage.provides:
            io.append("provides " + ", ".join(stage.provides))
        if stage.modifies:
            io.append("modifies " + ", ".join(stage.modifies))
        swapped = " [use from --set]" if stage.origins.get("use") == "--set" else ""
        head = f"stage {stage.position}: {stage.use}{swapped} ({stage.kind}{'; ' + '; '.join(io) if io else ''})"
        out += _table(head, stage.params, stage.origins)
    return "\n".join(out)


def main(args: argparse.Namespace) -> int:
    pipeline = load_or_report(args, warn=False)
    if pipeline is None:
        return 2
    from ..config.preflight import environment_warnings

    print(format_pipeline(pipeline))
    warnings = pipeline.warnings + environment_warnings(pipeline)
    for line in warnings:
        print(f"warning: {line}", file=sys.stderr)
    noted = f" ({len(warnings)} warning{'s' if len(warnings) > 1 else ''} above)" if warnings else ""
    print(f"\nok: the pipeline is valid{noted}")
    return 0
