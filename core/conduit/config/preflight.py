"""Checks of what a pipeline refers to outside its own file: detector maps, DAQ hosts, run numbers.

:func:`detector_file_problems` runs whenever a pipeline is loaded (``conduit
check`` and ``conduit run``): a missing or malformed electronics map or pad
geometry, or a geometry that does not place every pad of the map, is an error
before anything runs. :func:`environment_warnings` runs in ``conduit check``
only: things that may be fine on the DAQ machine but deserve a look (a host
name this machine cannot resolve, a live run without a run number).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..params import Problem

if TYPE_CHECKING:
    from ..detector import DetectorParams
    from .pipeline import Pipeline

__all__ = ["detector_file_problems", "environment_warnings"]


def _resolve(base_dir: Path, path: Path) -> Path:
    path = Path(path).expanduser()
    return path if path.is_absolute() else base_dir / path


def detector_file_problems(detector: DetectorParams, base_dir: Path) -> list[Problem]:
    """Load the electronics map and the pad geometry the pipeline names; check the geometry covers the map.

    Nothing is loaded when both are the defaults (bundled map, generated plane: known to match).
    """
    if detector.electronics_map is None and detector.pad_geometry is None:
        return []
    from ..get.maps import MapError, load_electronics_map
    from ..padplane import load_pad_plane

    problems = []
    emap = plane = None
    try:
        emap = load_electronics_map(_resolve(base_dir, detector.electronics_map)
                                    if detector.electronics_map is not None else None)
    except MapError as err:
        problems.append(Problem(("electronics_map",), str(err)))
    try:
        plane = load_pad_plane(_resolve(base_dir, detector.pad_geometry)
                               if detector.pad_geometry is not None else None)
    except (OSError, ValueError) as err:
        problems.append(Problem(("pad_geometry",), str(err)))
    if emap is not None and plane is not None:
        pads = emap.pads[emap.pads >= 0]
        uncovered = int(np.count_nonzero(pads >= plane.n_pads))
        if uncovered:
            key = "pad_geometry" if detector.pad_geometry is not None else "electronics_map"
            geometry = detector.pad_geometry if detector.pad_geometry is not None else "the generated pad plane"
            problems.append(Problem((key,), (
                f"{geometry} places {plane.n_pads} pads (ids 0..{plane.n_pads - 1}) but the electronics map "
                f"{emap.source} uses pad ids up to {int(pads.max())}: {uncovered} of its {len(pads)} pads have no "
                "position, so their charge would never reach a point cloud")))
    return problems


def environment_warnings(pipeline: Pipeline) -> list[str]:
    """One line per thing worth a look before a shift (``file.toml:LINE: key: message``)."""
    from ..stage import RunContext

    warnings = []
    source_cfg = pipeline.source
    context = RunContext(detector=pipeline.detector, base_dir=pipeline.base_dir.resolve())
    try:
        source = source_cfg.cls(source_cfg.params, context)
    except Exception as err:  # a source that cannot even be built fails `conduit run` with its own message
        return [pipeline.where(("source",), f"cannot set up the {source_cfg.kind} source: {err}")]
    for key, message in source.check_environment():
        warnings.append(pipeline.where(("source", key), message))
    run = source.run_number()
    if run is None:
        run = getattr(source_cfg.params, "run", None)
    if source.live and run is None:
        templates = [f"stage {stage.position} {stage.use}.{spec.name}" for stage in pipeline.sinks
                     for spec in stage.params.specs()
                     if isinstance(value := getattr(stage.params, spec.name), str) and "{run" in value]
        if templates:
            warnings.append(pipeline.where(("source", "kind"), (
                f"a live source without a run number, and output names with {{run}} ({'; '.join(templates)}): "
                "`conduit run` refuses to start a stage that writes one without --run N (or source.run = N), "
                "rather than write run 0000")))
    return warnings
