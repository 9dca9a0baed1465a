"""The engine's control API: how signals, the control panel and scripts steer a running pipeline.

One :class:`EngineControl` per run (``engine.control``). Every method is called
from the engine's trio thread (a signal watcher, a service task such as the
panel's web server); none waits for an event to be analysed:

* :meth:`pause` / :meth:`resume` analysis; events are still received, counted
  and recorded (``paused`` counts those not analysed);
* :meth:`stop`: the same drain as Ctrl-C (events in flight finish, every output
  is closed);
* :meth:`reset`: what SIGUSR1 does (every sink's ``on_reset``: histograms zeroed);
* :meth:`new_run`: at the next event boundary every sink is closed (an HDF5
  recording consolidated, an .rrd finished: both complete) and opened again for
  the next run number, without stopping the source or the workers;
* :meth:`set_parameters` (``pointcloud.peak_threshold=60``), :meth:`set_gate`,
  :meth:`remove_gate`: validated exactly as ``--set`` is, by loading the
  pipeline again from the text it was started with (nothing is applied when
  any value is wrong). Transform stages run in worker processes, so the
  workers get a new chain spec from a known event on (``sequence``); each
  change is logged with the time and that event, and given to the sinks
  between events (the hdf5 sink writes it to the run file's attributes);
* :meth:`status`: a JSON-able snapshot of everything the panel shows.

Errors are :class:`ControlError` with one line per problem and an HTTP-like
status (400 bad request, 409 not possible in this phase of the run).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .alarms import AlarmWatch, Reading

if TYPE_CHECKING:
    from .metrics import MetricsSnapshot
    from .runner import Engine

__all__ = ["EngineControl", "ControlError", "ParameterChange", "RunSwitch"]

log = logging.getLogger("conduit.control")

#: Tables whose values cannot change while a run goes on (the source is connected, the workers built).
_FIXED = ("source", "detector", "engine", "alarms")


class ControlError(Exception):
    """A control request refused: ``lines`` says why (one line each); ``status`` is 400 or 409."""

    def __init__(self, lines: Sequence[str], status: int = 400):
        self.lines = list(lines)
        self.status = status
        super().__init__("; ".join(self.lines))


@dataclasses.dataclass
class ParameterChange:
    """Parameters changed while running, and from which event on they apply."""

    unix_time: float
    #: Engine sequence number (0, 1, ... in order of arrival) of the first event analysed with the new values.
    sequence: int
    assignments: tuple[str, ...]
    #: ``"pointcloud.peak_threshold"`` -> (old, new), as plain (TOML/JSON) values.
    changes: dict[str, tuple[Any, Any]]
    #: GET event id of that first event, once it has arrived (None until then, or when none came).
    event: int | None = None
    run: int | None = None

    def describe(self) -> str:
        return ", ".join(f"{key} {_short(old)} -> {_short(new)}" for key, (old, new) in self.changes.items())

    def to_dict(self) -> dict[str, Any]:
        return {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(self.unix_time)),
            "unix_time": self.unix_time,
            "sequence": self.sequence,
            "event": self.event,
            "run": self.run,
            "assignments": list(self.assignments),
            "changes": {key: {"old": old, "new": new} for key, (old, new) in self.changes.items()},
        }


@dataclasses.dataclass
class RunSwitch:
    """A new-run request: done when the old run's outputs are closed and the new run's opened."""

    run: int
    sequence: int
    done: Any = None  # trio.Event
    closed: list[str] = dataclasses.field(default_factory=list)
    error: str | None = None


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def toml_value(value: Any) -> str:
    """A TOML inline value for plain data (what ``--set`` reads back)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # JSON string escapes are TOML basic-string escapes
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {toml_value(v)}" for k, v in value.items() if v is not None) \
            + "}"
    raise ControlError([f"cannot express {value!r} ({type(value).__name__}) as a parameter value"])


class EngineControl:
    """The control API of one running :class:`~conduit.engine.runner.Engine`."""

    def __init__(self, engine: Engine):
        self._engine = engine
        self.changes: list[ParameterChange] = []
        #: ``--set`` assignments applied while running, in order (validated on top of the pipeline's own).
        self.applied: list[str] = []
        self.alarms = AlarmWatch(engine.pipeline.alarms)
        self.started_at = time.time()
        self._tick: dict[str, Any] = {"streams": {}, "outputs": {}, "disks": {}}
        self._stream_seen: dict[str, tuple[int, float]] = {}  # stream -> (bytes, monotonic time they last grew)
        self._last_frames: tuple[float, dict[str, int]] | None = None
        #: Sequence numbers of the first event not analysed (paused) and analysed again (resumed).
        self.paused_from: int | None = None
        self.resumed_from: int | None = None

    # -- state ----------------------------------------------------------------------------

    @property
    def phase(self) -> str:
        """starting | running | closing | ended."""
        return self._engine.phase

    @property
    def paused(self) -> bool:
        return self._engine.paused

    @property
    def run(self) -> int | None:
        return self._engine.context.run

    def _require_running(self, what: str) -> None:
        if self._engine.phase != "running" or self._engine.stopping:
            state = "stopping" if self._engine.stopping and self._engine.phase == "running" else self._engine.phase
            raise ControlError([f"cannot {what}: the run is {state}"], status=409)

    # -- controls -------------------------------------------------------------------------------

    def pause(self, who: str = "control") -> bool:
        """Stop analysing new events (they are still recorded); False when already paused."""
        self._require_running("pause")
        if self._engine.paused:
            return False
        self._engine.paused = True
        self.paused_from = self._engine.metrics.received
        log.info("%s: analysis paused from event #%d on (events are still received and recorded)", who,
                 self._engine.metrics.received)
        return True

    def resume(self, who: str = "control") -> bool:
        """Analyse again; False when not paused."""
        self._require_running("resume")
        if not self._engine.paused:
            return False
        self._engine.paused = False
        self.resumed_from = self._engine.metrics.received
        log.info("%s: analysis resumed from event #%d on (%d events were not analysed while paused)", who,
                 self._engine.metrics.received, self._engine.metrics.paused)
        return True

    def stop(self, who: str = "control") -> None:
        """End the run as Ctrl-C does: finish events in flight, close every output."""
        if self._engine.phase in ("closing", "ended"):
            raise ControlError([f"cannot stop: the run is already {self._engine.phase}"], status=409)
        self._engine.interrupt(who)

    def reset(self, who: str = "control") -> int:
        """Reset every sink's running totals (histograms), as SIGUSR1 does, between the same two events.

        Returns the sequence number of the first event counted after the reset.
        """
        if self._engine.phase in ("closing", "ended"):
            raise ControlError([f"cannot reset: the run is {self._engine.phase}"], status=409)
        return self._engine.request_reset(who)

    async def new_run(self, run: int | None = None, who: str = "control") -> RunSwitch:
        """Close every output at the next event boundary and open the next run's (``run``, default current + 1).

        Returns once the switch is done (``switch.closed``: the files of the run
        that ended). Events arriving meanwhile wait in the engine's queues.
        """
        import trio

        self._require_running("start a new run")
        current = self._engine.context.run
        if run is None:
            run = (current if current is not None else 0) + 1
        if isinstance(run, bool) or not isinstance(run, int) or run < 0:
            raise ControlError([f"run number must be an integer ≥ 0, got {run!r}"])
        if run == current:
            raise ControlError([f"run {run} is the current run: give another number"])
        if self._engine.switch is not None:
            raise ControlError([f"a switch to run {self._engine.switch.run} is already under way"], status=409)
        switch = RunSwitch(run=run, sequence=self._engine.metrics.received, done=trio.Event())
        self._engine.switch = switch
        log.info("%s: new run %d requested (run %s ends after event #%d)", who, run, current, switch.sequence - 1)
        await switch.done.wait()
        if switch.error:
            raise ControlError([switch.error], status=500)
        return switch

    async def set_parameters(self, assignments: Sequence[str], who: str = "control") -> ParameterChange | None:
        """Change stage parameters from the next event on; validated as ``--set`` (all or nothing).

        Returns the change, or None when every value was already in force.
        """
        import trio

        from ..config.pipeline import PipelineError, load_pipeline, parse_override

        self._require_running("change parameters")
        assignments = [a.strip() for a in assignments if isinstance(a, str) and a.strip()]
        if not assignments:
            raise ControlError(["give at least one KEY=VALUE (e.g. pointcloud.peak_threshold=60)"])
        problems = []
        for text in assignments:
            try:
                parts, _ = parse_override(text)
            except ValueError as err:
                problems.append(str(err))
                continue
            if parts[0] in _FIXED or parts[0] in self._engine.pipeline.services:
                problems.append(f"{text}: [{parts[0]}] cannot change while the run goes on; restart the run with "
                                f"--set {text}")
            elif parts[-1] == "use":
                problems.append(f"{text}: a stage cannot be swapped while the run goes on; restart the run with "
                                f"--set {text}")
        if problems:
            raise ControlError(problems)
        current = self._engine.pipeline
        applied = len(self.applied)
        overrides = [*current.overrides, *self.applied, *assignments]
        try:
            fresh = await trio.to_thread.run_sync(
                lambda: load_pipeline(current.path, overrides, text=current.text))
        except PipelineError as err:
            raise ControlError(err.lines) from None
        self._require_running("change parameters")  # the run may have ended while the file was read
        if len(self.applied) != applied:
            raise ControlError(["another change was applied meanwhile: try again"], status=409)
        changed, refused = self._differences(current, fresh)
        if refused:
            raise ControlError(refused)
        if not changed:
            return None
        change = ParameterChange(
            unix_time=time.time(), sequence=self._engine.metrics.received, assignments=tuple(assignments),
            changes={key: values for _, diffs in changed for key, values in diffs.items()},
            run=self._engine.context.run)
        self.applied.extend(assignments)
        self.changes.append(change)
        self._engine.apply_parameters(fresh, [index for index, _ in changed], change)
        log.info("%s: parameters change from event #%d on: %s", who, change.sequence, change.describe())
        return change

    def _differences(self, current, fresh) -> tuple[list[tuple[int, dict]], list[str]]:
        """Changed stages as (index, {key: (old, new)}), and why a change is refused (sinks' fixed values)."""
        changed, refused = [], []
        uses = [s.use for s in current.stages]
        for index, (old, new) in enumerate(zip(current.stages, fresh.stages)):
            if old.params == new.params:
                continue
            label = old.use if uses.count(old.use) == 1 else f"stage.{old.position}"
            before, after = old.params.to_dict(), new.params.to_dict()
            diffs = {f"{label}.{k}": (before[k], after[k]) for k in before if before[k] != after[k]}
            if old.kind == "sink":
                fixed = [k for k in before if before[k] != after[k] and k not in old.cls.live_params]
                if fixed:
                    allowed = ", ".join(old.cls.live_params) or "none"
                    refused.append(f"{label}.{fixed[0]}: the {old.use} stage's parameters cannot change while the "
                                   f"run goes on (it takes: {allowed}); restart the run with --set")
                    continue
            changed.append((index, diffs))
        return changed, refused

    async def set_gate(self, gate: Mapping[str, Any], who: str = "control") -> ParameterChange | None:
        """Add a gate, or replace the one of the same name (``{"name", "histogram", "polygon" | ...}``)."""
        if not isinstance(gate, Mapping) or not isinstance(gate.get("name"), str) or not gate.get("name"):
            raise ControlError(["a gate needs a non-empty 'name'"])
        index, gates = self._gate_stage()
        name = gate["name"]
        updated = [g for g in gates if g.get("name") != name]
        position = next((i for i, g in enumerate(gates) if g.get("name") == name), len(updated))
        updated.insert(position, {k: v for k, v in gate.items() if v is not None})
        return await self._set_gates(index, updated, f"gate {name!r}", who)

    async def remove_gate(self, name: str, who: str = "control") -> ParameterChange | None:
        """Remove a gate (refused while a histogram or another gate uses it)."""
        index, gates = self._gate_stage()
        if not any(g.get("name") == name for g in gates):
            raise ControlError([f"no gate named {name!r}; gates: {', '.join(g['name'] for g in gates) or 'none'}"])
        return await self._set_gates(index, [g for g in gates if g.get("name") != name], f"gate {name!r}", who)

    def _gate_stage(self) -> tuple[int, list[dict]]:
        stages = [s for s in self._engine.pipeline.stages if "gates" in getattr(s.cls, "live_params", ())]
        if len(stages) != 1:
            raise ControlError([f"gates need exactly one stage that takes them live (a histogram stage); "
                                f"this pipeline has {len(stages)}"])
        return stages[0].position, list(stages[0].params.to_dict()["gates"])

    async def _set_gates(self, position: int, gates: list[dict], label: str, who: str) -> ParameterChange | None:
        assignment = f"stage.{position}.gates={toml_value(gates)}"
        try:
            return await self.set_parameters([assignment], who)
        except ControlError as err:
            raise ControlError([line.replace(f"--set {assignment}", label) for line in err.lines], err.status) \
                from None

    # -- status -------------------------------------------------------------------------------

    def on_tick(self, snap: MetricsSnapshot) -> None:
        """Called by the engine's metrics ticker (about once a second): stream ages and rates, disks, alarms."""
        e = self._engine
        now = time.monotonic()
        counters = snap.source_counters
        frames = {name: counters.get(f"{name}_frames", 0) for name in snap.source_status}
        previous = self._last_frames
        dt = now - previous[0] if previous else 0.0
        streams = {}
        for name, state in snap.source_status.items():
            total = counters.get(f"{name}_bytes")
            age = None
            if total is not None:
                seen = self._stream_seen.get(name)
                if seen is None or total != seen[0]:
                    seen = (total, now if total else math.nan)
                    self._stream_seen[name] = seen
                age = None if math.isnan(seen[1]) else now - seen[1]
            rate = (frames[name] - previous[1].get(name, 0)) / dt if previous and dt > 0 else 0.0
            streams[name] = {
                "name": name, "state": state, "frames": frames[name], "bytes": total,
                "frames_per_s": rate, "mb_per_s": snap.byte_rates.get(name, 0.0) / 1e6,
                "errors": counters.get(f"{name}_errors", 0), "age_s": age,
            }
        self._last_frames = (now, frames)
        outputs = {sink.name: [_output_info(o) for o in _live_outputs(sink)] for sink in list(e.sinks)}
        disks, devices = {}, set()
        for directory in sorted({str(Path(o["path"]).parent) for infos in outputs.values() for o in infos
                                 if o["local"]}):
            try:
                device = os.stat(directory).st_dev
                usage = shutil.disk_usage(directory)
            except OSError:
                continue
            if device not in devices:  # one line per file system
                devices.add(device)
                disks[directory] = {"path": directory, "free_bytes": usage.free, "total_bytes": usage.total}
        self._tick = {"streams": streams, "outputs": outputs, "disks": disks}
        self.alarms.update(Reading(
            now=now, received=snap.received, incomplete=snap.incomplete, skipped=snap.skipped,
            queue_depth=snap.queue_depth, queue_size=e.engine_params.queue_size,
            failures={name: t.failures for name, t in e.metrics.stage_times.items()},
            streams={n: (s["state"], s["age_s"]) for n, s in streams.items() if s["bytes"] is not None},
            disks={d: (v["free_bytes"], v["total_bytes"]) for d, v in disks.items()},
            live=e.live))

    def status(self) -> dict[str, Any]:
        """Everything the panel shows, as plain JSON-able data (cheap: built from counters and the last tick)."""
        from .. import __version__

        e = self._engine
        m = e.metrics
        snap = e._last_snapshot
        running = e.phase == "running" and e.started
        elapsed = m.elapsed() if running or e.phase in ("closing", "ended") else 0.0
        rates = {"received": snap.received_rate, "analysed": snap.analysed_rate, "skipped": snap.skipped_rate} \
            if snap is not None else {"received": 0.0, "analysed": 0.0, "skipped": 0.0}
        stages = [{"name": name, "calls": t.count, "mean_ms": _finite(t.mean_ms()), "p99_ms": _finite(t.p99_ms()),
                   "failures": t.failures, "skipped": t.skipped, "empty": t.empty, "counts": dict(t.counts)}
                  for name, t in list(m.stage_times.items())]
        return {
            "conduit": __version__,
            "pid": os.getpid(),
            "time": time.time(),
            "run": e.context.run,
            "pipeline": str(e.pipeline.path),
            "source": e.pipeline.source.kind,
            "live": e.live,
            "phase": "stopping" if e.stopping and e.phase == "running" else e.phase,
            "paused": e.paused,
            "uptime_s": time.time() - self.started_at,
            "elapsed_s": elapsed,
            "startup_s": e.startup_seconds,
            "events": {
                "received": m.received, "complete": m.complete, "incomplete": m.incomplete,
                "analysed": m.analysed, "skipped": m.skipped, "paused": m.paused, "failed": m.failed,
                "halted": m.halted, "skipped_by": dict(m.skipped_by), "backlogged": m.backlogged,
                "delivered": m.delivered, "dropped": e.source.dropped, "in_flight": m.in_flight,
                "total": e._total, "rates": rates,
            },
            "queue": {"depth": e._queue_stats(), "size": e.engine_params.queue_size,
                      "in_flight": m.in_flight, "max_in_flight": e.max_in_flight, "policy": e.policy,
                      "backlog": len(e._backlog), "backlog_size": e._backlog.size,
                      "backlog_ms": 1e3 * e._backlog.max_wait},
            "streams": list(self._tick["streams"].values()),
            "stages": stages,
            "sinks": [{"name": name, "outputs": outputs} for name, outputs in self._tick["outputs"].items()],
            "disks": list(self._tick["disks"].values()),
            "losses": {k: v for k, v in e.losses().items() if v} if e.started else {},
            "alarms": [a.to_dict() for a in self.alarms.alarms()],
            "parameters": self._parameters(),
            "gates": self._gates(),
            "changes": [c.to_dict() for c in self.changes],
            "runs": list(e.closed_runs),
            "viewer": _viewer_links(self._tick["outputs"]),
            "error": e.error,
        }

    def _parameters(self) -> list[dict[str, Any]]:
        """Every parameter that may change while running: transform stages' and sinks' live ones."""
        from ..params import describe_type

        out = []
        stages = self._engine.pipeline.stages
        uses = [s.use for s in stages]
        for stage in stages:
            label = stage.use if uses.count(stage.use) == 1 else f"stage.{stage.position}"
            values = stage.params.to_dict()
            for spec in stage.params.specs():
                if stage.kind == "sink" and spec.name not in stage.cls.live_params:
                    continue
                out.append({"key": f"{label}.{spec.name}", "stage": label, "name": spec.name,
                            "value": values[spec.name], "type": describe_type(spec.type), "doc": spec.doc,
                            "range": spec.range_text(), "kind": stage.kind})
        return out

    def _gates(self) -> dict[str, Any]:
        stages = [s for s in self._engine.pipeline.stages if "gates" in getattr(s.cls, "live_params", ())]
        if len(stages) != 1:
            return {"editable": False, "gates": [], "histograms": []}
        params = stages[0].params
        histograms = [{"name": h.name, "x": h.x, "y": h.y} for h in params.all_histograms()] \
            if hasattr(params, "all_histograms") else []
        return {"editable": True, "gates": params.to_dict()["gates"], "histograms": histograms}


def _finite(value: float) -> float | None:
    return None if value is None or math.isnan(value) else value


def _live_outputs(sink) -> list[str]:
    try:
        return list(sink.live_outputs())
    except Exception as err:  # a sink that cannot say must not break the status
        log.debug("sink %s: live_outputs() failed: %s", sink.name, err)
        return []


def _output_info(output: str) -> dict[str, Any]:
    """{path, local, bytes}: the size of a local file (with its .parts directory, where it has one)."""
    if "://" in output or output == "stdout" or " " in output:
        return {"path": output, "local": False, "bytes": None}
    path = Path(output)
    size = None
    try:
        size = path.stat().st_size
        parts = path.with_name(path.name + ".parts")
        if parts.is_dir():
            size += sum(p.stat().st_size for p in parts.iterdir())
    except OSError:
        pass
    return {"path": output, "local": True, "bytes": size}


def _viewer_links(outputs: dict[str, list[dict]]) -> dict[str, list[str]]:
    """Web viewer pages (http...) and gRPC addresses (rerun+http...) the sinks serve."""
    found: dict[str, list[str]] = {"web": [], "grpc": []}
    for infos in outputs.values():
        for o in infos:
            if o["path"].startswith(("http://", "https://")):
                found["web"].append(o["path"])
            elif o["path"].startswith("rerun+"):
                found["grpc"].append(o["path"])
    return found
