"""Load a pipeline TOML file into validated, typed configuration.

Every problem is collected before anything runs and reported together, each
as ``path.toml:LINE: key.path: message``::

    [source]
    kind = "simulate"

    [detector]
    magnetic_field = 3.0

    [engine]
    workers = 2

    [[stage]]
    use = "pointcloud"
    peak_threshold = 40.0

``--set section.key=value`` overrides (``source.hosts=...``,
``stage.2.min_points=4``, ``pointcloud.peak_threshold=30``) are applied to the
parsed tables before validation; ``conduit check`` shows where every value
came from.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import tomli

from ..detector import DetectorParams
from ..engine.alarms import AlarmParams
from ..engine.params import EngineParams
from ..params import ParamError, Params, Problem, did_you_mean, unknown_key_message
from ..plugins import Registry, get_registry
from ..service import Service
from ..source import Source
from ..stage import Stage
from .lines import KeyLines, scan_key_lines
from .preflight import detector_file_problems

__all__ = ["Pipeline", "PipelineError", "StageConfig", "SourceConfig", "ServiceConfig", "load_pipeline",
           "parse_override"]

TOP_LEVEL = ("source", "detector", "engine", "alarms", "stage")
DEFAULT_SOURCE_KIND = "simulate"


class PipelineError(Exception):
    """The pipeline file has problems; ``lines`` holds one rendered line per problem."""

    def __init__(self, lines: list[str]):
        self.lines = lines
        super().__init__("\n".join(lines))


@dataclasses.dataclass
class SourceConfig:
    kind: str
    cls: type[Source]
    params: Params
    origins: dict[str, str]


@dataclasses.dataclass
class ServiceConfig:
    """A top-level table that configures a service (``[panel]``)."""

    name: str
    cls: type[Service]
    params: Params
    origins: dict[str, str]


@dataclasses.dataclass
class StageConfig:
    """One ``[[stage]]`` entry, resolved."""

    position: int  # 1-based, as shown by `conduit check`
    use: str
    cls: type[Stage]
    params: Params
    origins: dict[str, str]
    line: int | None
    requires: tuple[str, ...]
    provides: tuple[str, ...]
    #: Artifacts an earlier stage provided that this one changes (also in requires and provides).
    modifies: tuple[str, ...] = ()

    @property
    def kind(self) -> str:
        return self.cls.kind


@dataclasses.dataclass
class Pipeline:
    """A validated pipeline: ready for :func:`conduit.engine.runner.run_pipeline`."""

    path: Path
    source: SourceConfig
    detector: DetectorParams
    detector_origins: dict[str, str]
    engine: EngineParams
    engine_origins: dict[str, str]
    stages: list[StageConfig]
    #: Where each key is written (for messages about the pipeline after loading).
    lines: KeyLines | None = None
    #: The ``[alarms]`` thresholds.
    alarms: AlarmParams = dataclasses.field(default_factory=AlarmParams)
    #: Services configured by their own tables (``[panel]``), by name; each table present or not.
    services: dict[str, ServiceConfig] = dataclasses.field(default_factory=dict)
    #: The file's text and the ``--set`` overrides as loaded: a running engine validates parameter changes
    #: against them (the file on disk may have changed since).
    text: str = ""
    overrides: tuple[str, ...] = ()
    #: Things worth a warning that do not stop the pipeline (a swapped stage's left-out parameters, a
    #: development plugin shadowed by an installed one); `conduit run` and `conduit check` print them.
    warnings: list[str] = dataclasses.field(default_factory=list)

    @property
    def transforms(self) -> list[StageConfig]:
        return [s for s in self.stages if s.kind == "transform"]

    @property
    def sinks(self) -> list[StageConfig]:
        return [s for s in self.stages if s.kind == "sink"]

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    def where(self, key_path: tuple, message: str) -> str:
        """``file.toml:LINE: key.path: message`` for a key of this pipeline."""
        return _render(self.path, self.lines, tuple(key_path), message)


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``a.b.c=value`` into (["a", "b", "c"], value); the value is read as TOML, else as a string."""
    if "=" not in text:
        raise ValueError(f"--set {text}: expected section.key=value")
    key, _, raw = text.partition("=")
    parts = [p for p in key.strip().split(".") if p]
    if len(parts) < 2:
        raise ValueError(f"--set {text}: expected section.key=value")
    try:
        value = tomli.loads(f"v = {raw.strip()}")["v"]
    except tomli.TOMLDecodeError:
        value = raw.strip()
    return parts, value


class _Collector:
    def __init__(self, path: Path, lines: KeyLines):
        self.path = path
        self.lines = lines
        self.rendered: list[str] = []
        self.override_paths: dict[tuple, str] = {}

    def add(self, key_path: Sequence[str | int], message: str) -> None:
        key_path = tuple(key_path)
        for prefix_len in range(len(key_path), 0, -1):
            if key_path[:prefix_len] in self.override_paths:
                self.rendered.append(f"--set {self.override_paths[key_path[:prefix_len]]}: {message}")
                return
        self.rendered.append(_render(self.path, self.lines, key_path, message))

    def extend(self, problems: list[Problem], prefix: tuple = ()) -> None:
        for p in problems:
            self.add(prefix + tuple(p.path), p.message)


def _render(file: Path, lines: KeyLines | None, key_path: tuple, message: str) -> str:
    """``file.toml:LINE: key.path: message`` (no line when the key is not written in the file)."""
    dotted = ".".join(str(p) for p in _display_path(key_path))
    line = lines.line(key_path) if lines is not None else None
    where = f"{file}:{line}" if line else f"{file}"
    return f"{where}: {dotted}: {message}" if dotted else f"{where}: {message}"


def _display_path(path: tuple) -> tuple:
    # Show stage indices 1-based, as `conduit check` numbers them.
    if len(path) >= 2 and path[0] == "stage" and isinstance(path[1], int):
        return ("stage", path[1] + 1) + path[2:]
    return path


def load_pipeline(
    path: str | Path,
    overrides: Sequence[str] = (),
    *,
    registry: Registry | None = None,
    text: str | None = None,
) -> Pipeline:
    """Read, override and validate a pipeline; raise :class:`PipelineError` with every problem."""
    path = Path(path)
    if text is None:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise PipelineError([f"{path}: no such pipeline file"]) from None
        except (OSError, UnicodeDecodeError) as err:
            raise PipelineError([f"{path}: cannot read: {err}"]) from None
    try:
        raw = tomli.loads(text)
    except tomli.TOMLDecodeError as err:
        lineno = getattr(err, "lineno", None)
        msg = getattr(err, "msg", str(err))
        col = getattr(err, "colno", None)
        where = f"{path}:{lineno}" if lineno else str(path)
        colinfo = f" (column {col})" if col else ""
        raise PipelineError([f"{where}: TOML syntax error: {msg}{colinfo}"]) from None

    registry = registry if registry is not None else get_registry()
    problems = _Collector(path, scan_key_lines(text))
    origins: dict[tuple, str] = {}
    warnings = list(registry.warnings)
    _apply_overrides(raw, overrides, problems, origins, registry, warnings)

    tables = list(TOP_LEVEL) + sorted(registry.services)
    for key in raw:
        if key not in tables:
            problems.add((key,), unknown_key_message(key, tables))

    source = _load_source(raw.get("source", {}), registry, problems, origins)
    detector, detector_origins = _load_table(DetectorParams, raw.get("detector", {}), ("detector",), problems, origins)
    if detector is not None:
        problems.extend(detector_file_problems(detector, path.parent), ("detector",))
    engine, engine_origins = _load_table(EngineParams, raw.get("engine", {}), ("engine",), problems, origins)
    alarms, _ = _load_table(AlarmParams, raw.get("alarms", {}), ("alarms",), problems, origins)
    services = {}
    for name, cls in sorted(registry.services.items()):
        params, service_origins = _load_table(cls.Params, raw.get(name, {}), (name,), problems, origins)
        if params is not None:
            services[name] = ServiceConfig(name, cls, params, service_origins)
    unloaded: dict[int, tuple[str, ...]] = {}
    stages = _load_stages(raw.get("stage", []), registry, problems, origins, unloaded)
    _check_artifacts(source, stages, registry, problems, unloaded)
    _check_modifications(stages, problems)
    _check_references(stages, problems)

    if problems.rendered:
        raise PipelineError(problems.rendered)
    assert source is not None and detector is not None and engine is not None and alarms is not None
    return Pipeline(
        path=path,
        source=source,
        detector=detector,
        detector_origins=detector_origins,
        engine=engine,
        engine_origins=engine_origins,
        stages=stages,
        lines=problems.lines,
        alarms=alarms,
        services=services,
        text=text,
        overrides=tuple(overrides),
        warnings=warnings,
    )


def _apply_overrides(raw: dict, overrides: Sequence[str], problems: _Collector, origins: dict[tuple, str],
                     registry: Registry, warnings: list[str]) -> None:
    parsed = []
    for text in overrides:
        try:
            parsed.append((text, *parse_override(text)))
        except ValueError as err:
            problems.rendered.append(str(err))
    # Swaps (stage.N.use=...) first: the other overrides then find the stage by its new name and set its parameters.
    parsed.sort(key=lambda item: not (item[1][0] == "stage" and item[1][-1] == "use"))
    for text, parts, value in parsed:
        section = parts[0]
        if section in ("source", "detector", "engine", "alarms") or section in registry.services:
            table = raw.setdefault(section, {})
            if not isinstance(table, dict):
                problems.rendered.append(f"--set {text}: [{section}] is not a table")
                continue
            _set_nested(table, parts[1:], value)
            key_path = (section, *parts[1:])
        else:
            located = _locate_stage(raw.get("stage", []), parts, registry)
            if isinstance(located, str):
                problems.rendered.append(f"--set {text}: {located}")
                continue
            index, keys = located
            if keys == ["use"]:
                warnings += _swap_stage(raw["stage"][index], index, value, text, registry, problems.lines)
            _set_nested(raw["stage"][index], keys, value)
            key_path = ("stage", index, *keys)
        origins[key_path] = "--set"
        problems.override_paths[key_path] = text


def _swap_stage(table: Any, index: int, use: Any, text: str, registry: Registry, lines: KeyLines) -> list[str]:
    """``--set stage.N.use=NAME``: leave out the file's parameters the new stage does not have; notes saying so."""
    cls = registry.stages.get(use) if isinstance(use, str) else None
    if cls is None or not isinstance(table, dict):
        return []  # an unknown name is reported where the stage is loaded
    known = {spec.name for spec in cls.Params.specs()}
    dropped = [key for key in table if key != "use" and key not in known]
    for key in dropped:
        del table[key]
    if not dropped:
        return []
    written = ", ".join(f"{key} (line {lines.line(('stage', index, key))})" for key in dropped)
    return [f"--set {text}: left out the file's parameters of stage {index + 1} that '{use}' does not have: "
            f"{written}"]


def _locate_stage(stages: Any, parts: list[str], registry: Registry) -> tuple[int, list[str]] | str:
    if not isinstance(stages, list):
        return "the pipeline has no [[stage]] entries"
    if parts[0] == "stage":
        if len(parts) < 3 or not parts[1].isdigit():
            return "expected stage.N.key=value with N the stage number shown by `conduit check`"
        n = int(parts[1])
        if not 1 <= n <= len(stages):
            return f"stage {n} does not exist (the pipeline has {len(stages)} stages)"
        return n - 1, parts[2:]
    uses = [s.get("use") if isinstance(s, dict) else None for s in stages]
    # Stage names are dotted: try the longest prefix that names a stage.
    for split in range(len(parts) - 1, 0, -1):
        name = ".".join(parts[:split])
        matches = [i for i, u in enumerate(uses) if u == name]
        if len(matches) == 1:
            return matches[0], parts[split:]
        if len(matches) > 1:
            return f"{len(matches)} stages use '{name}'; use stage.N.key instead"
    in_pipeline = [u for u in uses if isinstance(u, str)]
    for split in range(len(parts) - 1, 0, -1):  # a stage conduit knows, but not in this pipeline
        name = ".".join(parts[:split])
        if name in registry.stages:
            return (f"the pipeline has no stage '{name}' (its stages: {', '.join(in_pipeline) or 'none'}); "
                    f"to swap one for it: --set stage.N.use={name}")
    name = ".".join(parts[:-1])  # the whole dotted name, not only its first word
    hint = did_you_mean(name, in_pipeline + list(TOP_LEVEL) + sorted(registry.services))
    return f"no section or stage named '{name}'{hint}"


def _set_nested(table: dict, keys: list[str], value: Any) -> None:
    for key in keys[:-1]:
        table = table.setdefault(key, {})
    table[keys[-1]] = value


def _origins_for(params: Params, raw: Mapping, prefix: tuple, origins: dict[tuple, str]) -> dict[str, str]:
    out = {}
    for spec in params.specs():
        if (*prefix, spec.name) in origins:
            out[spec.name] = "--set"
        elif spec.name in raw:
            out[spec.name] = "file"
        else:
            out[spec.name] = "default"
    return out


def _load_table(cls: type[Params], raw: Any, prefix: tuple, problems: _Collector, origins, ignore=frozenset()):
    if not isinstance(raw, Mapping):
        problems.add(prefix, f"expected a table, got {type(raw).__name__}")
        return None, {}
    try:
        params = cls.from_mapping(raw, ignore=ignore)
    except ParamError as err:
        problems.extend(err.problems, prefix)
        return None, {}
    table_origins = _origins_for(params, raw, prefix, origins)
    return _paths_from_cwd(params, table_origins), table_origins


def _paths_from_cwd(params: Params, origins: dict[str, str]) -> Params:
    """Relative paths given on the command line mean the current directory, not the pipeline's."""
    changes = {}
    for name, origin in origins.items():
        value = getattr(params, name)
        if origin == "--set" and isinstance(value, Path) and not value.is_absolute():
            changes[name] = value.resolve()
    return params.replace(**changes) if changes else params


def _load_source(raw: Any, registry: Registry, problems: _Collector, origins) -> SourceConfig | None:
    if not isinstance(raw, Mapping):
        problems.add(("source",), "expected a table")
        return None
    kind = raw.get("kind", DEFAULT_SOURCE_KIND)
    cls = registry.sources.get(kind) if isinstance(kind, str) else None
    if cls is None:
        known = sorted(registry.sources)
        hint = did_you_mean(kind, known)
        problems.add(("source", "kind"), f"unknown source kind {kind!r}{hint}; known: {', '.join(known) or 'none'}")
        return None
    params, source_origins = _load_table(cls.Params, raw, ("source",), problems, origins, ignore=frozenset({"kind"}))
    if params is None:
        return None
    return SourceConfig(kind=kind, cls=cls, params=params, origins=source_origins)


def _load_stages(raw: Any, registry: Registry, problems: _Collector, origins,
                 unloaded: dict[int, tuple[str, ...]]) -> list[StageConfig]:
    """The stages that load; ``unloaded`` gets, by position, what each stage with a bad parameter would
    provide, so that no follow-on "requires" problem is reported after it (its parameter is the problem)."""
    if not isinstance(raw, list):
        problems.add(("stage",), "expected [[stage]] entries (an array of tables)")
        return []
    stages: list[StageConfig] = []
    for index, table in enumerate(raw):
        prefix = ("stage", index)
        if not isinstance(table, Mapping):
            problems.add(prefix, "expected a table")
            continue
        use = table.get("use")
        if not isinstance(use, str):
            problems.add(prefix + ("use",), "every [[stage]] needs use = \"stage.name\"")
            continue
        cls = registry.stages.get(use)
        if cls is None:
            problems.add(prefix + ("use",), _unknown_stage_message(use, registry))
            continue
        params, stage_origins = _load_table(cls.Params, table, prefix, problems, origins, ignore=frozenset({"use"}))
        if params is None:  # a bad parameter: reported; the stage is there all the same
            unloaded[index + 1] = cls.provides + cls.modifies
            continue
        requires, provides = cls.artifacts(params)
        if (*prefix, "use") in origins:
            stage_origins["use"] = "--set"  # swapped from the command line
        stages.append(
            StageConfig(
                position=index + 1,
                use=use,
                cls=cls,
                params=params,
                origins=stage_origins,
                line=problems.lines.line(prefix + ("use",)),
                requires=tuple(requires),
                provides=tuple(provides),
                modifies=tuple(cls.modifies),
            )
        )
    return stages


def _unknown_stage_message(use: str, registry: Registry) -> str:
    """Unknown stage: the close names, and every plugin that failed to load (it may be the one), likeliest first."""
    known = sorted(registry.stages)
    hint = did_you_mean(use, known, n=2, cutoff=0.5)
    msg = f"unknown stage '{use}'{hint}"
    head = use.split(".")[0]
    failed = {f.plugin: f for f in registry.failures}  # one line per plugin
    likely = sorted(failed, key=lambda name: not (name == head or name.startswith(head) or head in name))
    if likely:
        first = failed[likely[0]]
        msg += f"; plugin '{first.plugin}' failed to load: {first.error}"
        if len(likely) > 1:
            msg += f" (also failed: {', '.join(likely[1:])}; see `conduit stages`)"
    elif not hint:
        msg += f"; known stages: {', '.join(known) or 'none'} (see `conduit stages`)"
    return msg


def _check_references(stages: list[StageConfig], problems: _Collector) -> None:
    """Let each stage check what it names in other stages (a gate of the histogram stage, ...)."""
    pipeline = [(s.use, s.params) for s in stages]
    for stage in stages:
        problems.extend(stage.cls.check_pipeline(stage.params, pipeline), ("stage", stage.position - 1))


def _check_artifacts(source: SourceConfig | None, stages: list[StageConfig], registry: Registry, problems,
                     unloaded: dict[int, tuple[str, ...]]) -> None:
    available = {"traces"}
    if source is not None:
        available |= set(source.cls.provides)
    for stage in stages:
        available |= {a for position, provides in unloaded.items() if position < stage.position for a in provides}
        for artifact in stage.requires:
            if artifact not in available:
                providers = sorted(n for n, c in registry.stages.items() if artifact in c.provides)
                hint = f"; add an earlier stage that provides it: {', '.join(providers)}" if providers else ""
                problems.add(
                    ("stage", stage.position - 1, "use"),
                    f"stage '{stage.use}' requires artifact '{artifact}', which no earlier stage provides{hint}",
                )
        available |= set(stage.provides)


def _check_modifications(stages: list[StageConfig], problems: _Collector) -> None:
    """Refuse a stage that changes an artifact after a stage derived something from it.

    A cloud filter after the clusterer leaves the cluster labels out of line
    with the cloud; the estimates would be silently wrong. A stage changes an
    artifact when it declares ``modifies`` or provides one already there.
    """
    available: set[str] = set()
    derived: dict[str, tuple[StageConfig, str]] = {}  # artifact -> (first stage deriving from it, what it made)
    for stage in stages:
        changed = set(stage.modifies) | (set(stage.provides) & available)
        for artifact in sorted(changed):
            if artifact in derived:
                earlier, made = derived[artifact]
                where = f"{problems.path}:{earlier.line}" if earlier.line else str(problems.path)
                problems.add(("stage", stage.position - 1, "use"), (
                    f"stage '{stage.use}' modifies '{artifact}' after stage {earlier.position} '{earlier.use}' "
                    f"({where}) derived '{made}' from it: they would no longer line up; "
                    f"place '{stage.use}' before stage {earlier.position}"))
        for required in stage.requires:
            for made in stage.provides:
                if made != required and required not in derived:
                    derived[required] = (stage, made)
        available |= set(stage.provides)
