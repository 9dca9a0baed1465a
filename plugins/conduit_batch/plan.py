"""Expand a pipeline's file source over run numbers."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

from conduit.config import Pipeline

__all__ = ["RunTask", "BatchPlanError", "plan_runs", "pipeline_fingerprint"]


class BatchPlanError(ValueError):
    """The pipeline cannot be expanded over runs (one line)."""


@dataclasses.dataclass(frozen=True)
class RunTask:
    """One run to process: where its input is and how big it is (for ordering)."""

    run: int
    input_path: Path
    size_bytes: int
    overrides: tuple[str, ...]


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def plan_runs(pipeline: Pipeline, runs: list[int], overrides: list[str]) -> tuple[list[RunTask], list[tuple[int, Path]]]:
    """(tasks largest first, missing runs) for the source's ``path`` template filled with each run."""
    template = getattr(pipeline.source.params, "path", None)
    if template is None or "{run" not in str(template):
        raise BatchPlanError(
            f"{pipeline.path}: batch needs a file source (kind = \"graw\" or \"hdf5\") whose path contains "
            f"{{run}}, e.g. path = \"/data/run_{{run:04d}}.h5\" (source kind is {pipeline.source.kind!r})"
        )
    tasks, missing = [], []
    for run in runs:
        try:
            filled = str(template).format(run=run)
        except (KeyError, IndexError, ValueError) as err:
            raise BatchPlanError(f"{pipeline.path}: source.path {str(template)!r}: {err}") from None
        path = Path(filled).expanduser()
        if not path.is_absolute():
            path = (pipeline.base_dir / path).resolve()
        if not path.exists():
            missing.append((run, path))
            continue
        extra = (f"source.path={_toml_string(str(path))}",)
        tasks.append(RunTask(run=run, input_path=path, size_bytes=_size(path), overrides=tuple(overrides) + extra))
    # Largest first: long runs start early, short ones fill the gaps at the end.
    tasks.sort(key=lambda t: (-t.size_bytes, t.run))
    return tasks, missing


def _toml_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def pipeline_fingerprint(pipeline_path: Path, overrides: list[str]) -> str:
    """Hash of the pipeline text and overrides: a changed pipeline re-runs everything."""
    digest = hashlib.sha256(Path(pipeline_path).read_bytes())
    for item in overrides:
        digest.update(b"\0" + item.encode())
    return digest.hexdigest()[:16]
