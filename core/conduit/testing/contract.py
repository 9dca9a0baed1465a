"""``check_stage``: the contract test every stage plugin can run on itself.

It checks what the engine relies on and what a reader of the pipeline
expects: the class definition, the parameters (every one documented, the
defaults valid and TOML round-trippable), pickling (worker processes get the
stage class by reference and its parameters and context by pickle, and send
the artifacts back by pickle), the artifacts on realistic simulated events
(every one it provides is there; the standard ones have their declared
shapes, :mod:`conduit.artifacts`), and that results depend neither on
warm-up nor on earlier events (transform stages are spread over processes).
"""

from __future__ import annotations

import dataclasses
import math
import pickle
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..artifacts import Direction, artifact_problem
from ..detector import DetectorParams
from ..event import Event
from ..params import ParamError, Params
from ..stage import RunContext, SinkStage, TransformStage
from .events import StageSpec, _copy_event, _stage_class, make_events, run_stages

__all__ = ["check_stage", "StageCheck", "artifact_problems", "upstream_for", "same_artifact"]

#: Which registered stage makes a standard artifact when ``check_stage`` needs it and is not told.
PREFERRED_PROVIDERS = {"cloud": "pointcloud", "clusters": "cluster.hdbscan", "estimates": "estimate"}


@dataclasses.dataclass
class StageCheck:
    """What :func:`check_stage` found: problems (empty when the stage keeps the contract) and its events."""

    stage: str
    upstream: list[str]
    problems: list[str]
    #: The simulated events after the upstream stages and the checked stage ran.
    events: list[Event]

    @property
    def ok(self) -> bool:
        return not self.problems


def check_stage(stage: StageSpec, params: Mapping[str, Any] | Params | None = None, *,
                upstream: Sequence[StageSpec] | None = None, events: Sequence[Event] | None = None,
                preset: str = "default", seed: int = 1, n_events: int = 3,
                detector: DetectorParams | None = None, base_dir: Path | None = None,
                raise_on_problems: bool = True) -> StageCheck:
    """Check a stage class against the stage contract on simulated events; raise ``AssertionError`` listing
    every problem (or return them, with ``raise_on_problems=False``).

    ``params`` are the stage's parameters (default: its defaults). Artifacts
    it requires are made by ``upstream`` stages (default: registered stages
    that provide them, ``pointcloud`` for ``cloud``, ``cluster.hdbscan`` for
    ``clusters`` ...) on ``n_events`` events of the simulator's ``preset``
    (or on the given ``events``). Sinks write under ``base_dir`` (default: a
    temporary directory, removed when the check returns).
    """
    if base_dir is None:
        with tempfile.TemporaryDirectory(prefix="conduit-check-") as scratch:
            return check_stage(stage, params, upstream=upstream, events=events, preset=preset, seed=seed,
                               n_events=n_events, detector=detector, base_dir=Path(scratch),
                               raise_on_problems=raise_on_problems)
    cls = _stage_class(stage[0] if isinstance(stage, tuple) else stage)
    if isinstance(stage, tuple):
        params = stage[1]
    problems: list[str] = []
    try:
        cls.validate_definition()
    except Exception as err:  # the contract's own error types, and anything a broken class raises
        problems.append(f"definition: {err}")
    params = _parameter_problems(cls, params, problems)
    base = Path(base_dir)
    context = RunContext(detector=detector or DetectorParams(), base_dir=base)
    if params is None:
        return _finish(StageCheck(cls.name, [], problems, []), raise_on_problems)
    requires, provides = cls.artifacts(params)
    inputs = list(events) if events is not None else make_events(n_events, preset, seed, detector=context.detector)
    present = {name for name in requires if all(e.has(name) for e in inputs)}
    chain = list(upstream) if upstream is not None else upstream_for([r for r in requires if r not in present])
    names = [_describe(s) for s in chain]
    inputs = run_stages(chain, inputs, context=context) if chain else [_copy_event(e) for e in inputs]
    for event in inputs:
        missing = [r for r in requires if not event.has(r)]
        if missing:
            problems.append(f"event {event.id}: the upstream stages {names} did not provide {missing}")
            return _finish(StageCheck(cls.name, names, problems, inputs), raise_on_problems)
    if issubclass(cls, TransformStage):
        done = _check_transform(cls, params, context, provides, inputs, problems)
    else:
        done = _check_sink(cls, params, context, inputs, problems)
    return _finish(StageCheck(cls.name, names, problems, done), raise_on_problems)


def _finish(check: StageCheck, raise_on_problems: bool) -> StageCheck:
    if check.problems and raise_on_problems:
        lines = "\n".join(f"  - {p}" for p in check.problems)
        raise AssertionError(f"{check.stage} breaks the stage contract ({len(check.problems)} problems):\n{lines}")
    return check


def _describe(spec: StageSpec) -> str:
    spec = spec[0] if isinstance(spec, tuple) else spec
    return spec if isinstance(spec, str) else getattr(spec, "name", repr(spec))


def upstream_for(requires: Sequence[str]) -> list[str]:
    """Registered stages, in pipeline order, that make ``requires`` from a source's ``traces``."""
    from ..plugins import get_registry

    stages = get_registry().stages
    chain: list[str] = []
    have = {"traces"}

    def need(artifact: str, depth: int = 0) -> None:
        if artifact in have:
            return
        if depth > 10:
            raise LookupError(f"no chain of registered stages makes {artifact!r}")
        candidates = sorted(n for n, c in stages.items() if c.kind == "transform" and artifact in c.provides)
        preferred = PREFERRED_PROVIDERS.get(artifact)
        if preferred in candidates:
            candidates.insert(0, preferred)
        if not candidates:
            raise LookupError(f"no registered stage provides {artifact!r}; pass upstream=[...] to check_stage")
        name = candidates[0]
        for r in stages[name].requires:
            need(r, depth + 1)
        chain.append(name)
        have.update(stages[name].provides)

    for artifact in requires:
        need(artifact)
    return chain


def _parameter_problems(cls: type, given: Mapping[str, Any] | Params | None, problems: list[str]) -> Params | None:
    """The stage's parameters (or None when they cannot be built), noting every problem with its model."""
    model = cls.Params
    for spec in model.specs():
        if not spec.doc.strip():
            problems.append(f"parameter {spec.name!r} has no one-line doc (param(default, \"what it is (unit)\"))")
    required = [s.name for s in model.specs() if s.required]
    if not required:
        try:
            defaults = model()
            problems += [f"defaults: {p.dotted()}: {p.message}" for p in defaults.check()]
            if model.from_mapping(defaults.to_dict()) != defaults:
                problems.append("defaults: the parameters read back from their TOML form differ from the defaults")
        except ParamError as err:
            problems += [f"defaults: {p.dotted()}: {p.message}" for p in err.problems]
        except Exception as err:
            problems.append(f"defaults: {type(err).__name__}: {err}")
    if isinstance(given, Params):
        return given
    if given is None and required:
        problems.append(f"parameters {required} have no default: pass params={{...}} to check_stage")
        return None
    try:
        return model.from_mapping(dict(given or {}))
    except Exception as err:
        problems.append(f"parameters: {type(err).__name__}: {err}")
        return None


def _check_transform(cls: type, params: Params, context: RunContext, provides: Sequence[str],
                     inputs: list[Event], problems: list[str]) -> list[Event]:
    try:
        cls_, params_, context_ = pickle.loads(pickle.dumps((cls, params, context)))
    except Exception as err:
        problems.append(f"pickling: worker processes get the stage class by reference and its params and context "
                        f"by pickle: {type(err).__name__}: {err} (define the class and its Params at module level)")
        cls_, params_, context_ = cls, params, context
    warmed = cls_(params_, context_)
    try:
        warmed.warm_up()
    except Exception as err:
        problems.append(f"warm_up: {type(err).__name__}: {err}")
    if warmed.params != params_:
        problems.append("warm_up: it left the stage with other parameters than it was given")
    done = _process_all(warmed, inputs, problems)
    for event in done:
        for name in provides:
            if not event.has(name):
                problems.append(f"event {event.id}: {name!r} is in provides but process() did not set it")
                continue
            problems += [f"event {event.id}: {p}" for p in artifact_problems(name, event.get(name), event)]
            try:
                pickle.loads(pickle.dumps(event.get(name)))
            except Exception as err:
                problems.append(f"event {event.id}: artifact {name!r} does not pickle (workers send it back): "
                                f"{type(err).__name__}: {err}")
    # A fresh instance, not warmed, on the events in reverse order: the same results (no state across events).
    cold = _process_all(cls(params, context), list(reversed(inputs)), [])
    for event, other in zip(done, reversed(cold)):
        for name in provides:
            if event.has(name) and other.has(name) and not same_artifact(event.get(name), other.get(name)):
                problems.append(f"event {event.id}: {name!r} differs between two instances given the events in "
                                "another order, one warmed up: results must depend on the event alone")
    return done


def _process_all(stage: TransformStage, inputs: list[Event], problems: list[str]) -> list[Event]:
    done = []
    for event in inputs:
        event = _copy_event(event)
        try:
            stage.process(event)
        except Exception as err:
            problems.append(f"event {event.id}: process raised {type(err).__name__}: {err}")
        done.append(event)
    return done


def _check_sink(cls: type, params: Params, context: RunContext, inputs: list[Event],
                problems: list[str]) -> list[Event]:
    sink = cls(params, context)
    step = "open"
    try:
        sink.open()
        step = "begin"
        sink.begin()
        step = "consume"
        for event in inputs:
            sink.consume(event)
    except Exception as err:
        problems.append(f"{step}: {type(err).__name__}: {err}")
    finally:
        try:
            sink.close()
        except Exception as err:
            problems.append(f"close: {type(err).__name__}: {err}")
    if not isinstance(sink.outputs(), list):
        problems.append("outputs() must return a list of strings")
    return inputs


def artifact_problems(name: str, value: Any, event: Event | None = None) -> list[str]:
    """What is wrong with a standard artifact (``cloud``, ``clusters``, ``estimates``, ``kinematics``).

    Its form (type, shape, dtype) as the engine checks it after every stage
    (:func:`conduit.artifacts.artifact_problem`), then what the engine does not
    look at, the values: the cloud's z order, cluster labels that are one per
    cloud row and match ``cluster_labels``, direction codes, one kinematics row
    per estimate.
    """
    form = artifact_problem(name, value)
    if form:
        return [form]
    out: list[str] = []
    if name == "cloud":
        if len(value) > 1 and np.any(np.diff(value[:, 2]) < 0):
            out.append("cloud rows must be sorted by z (column 2)")
    elif name == "clusters":
        cloud = event.get("cloud") if event is not None else None
        if cloud is not None and len(value.labels) != len(cloud):
            out.append(f"clusters.labels has {len(value.labels)} entries for a cloud of {len(cloud)} points")
        if len(np.unique(value.cluster_labels)) != len(value.cluster_labels) or np.any(value.cluster_labels < 0):
            out.append("clusters.cluster_labels must be distinct labels >= 0")
        used = set(np.unique(value.labels).tolist()) - {-1}
        if used != set(value.cluster_labels.tolist()):
            out.append("clusters.labels must use exactly the cluster_labels (and -1 for noise)")
        if not set(value.directions.tolist()) <= {Direction.NONE, Direction.FORWARD, Direction.BACKWARD}:
            out.append("clusters.directions must be Direction codes (-1, 0, 1)")
    elif name == "kinematics" and event is not None and event.has("estimates"):
        if len(value) != len(event.get("estimates")):
            out.append("kinematics must have one row per estimates row")
    return out


def same_artifact(a: Any, b: Any) -> bool:
    """Equal values (arrays element for element, NaN equal to NaN; dataclasses, dicts, sequences by member)."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape or a.dtype != b.dtype:
            return False
        if a.dtype.names:
            return all(same_artifact(a[f], b[f]) for f in a.dtype.names)
        if a.dtype.kind in "fc":
            return bool(np.array_equal(a, b, equal_nan=True))
        return bool(np.array_equal(a, b))
    if dataclasses.is_dataclass(a) and type(a) is type(b):
        return all(same_artifact(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a))
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(same_artifact(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same_artifact(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return bool(a == b)
