"""What a stage is: the contract every built-in and third-party stage follows.

A stage is a class with a dotted ``name``, a ``kind``, the artifacts it
``requires`` and ``provides``, a :class:`~conduit.params.Params` model and a
per-event method::

    class Threshold(TransformStage):
        '''Drop points below a charge threshold.'''
        name = "mygroup.threshold"
        modifies = ("cloud",)        # required, then replaced

        class Params(Params):
            minimum: float = param(50.0, "smallest amplitude kept (ADC)")

        def process(self, event):
            cloud = event.artifacts["cloud"]
            event.artifacts["cloud"] = cloud[cloud[:, 3] >= self.params.minimum]

Transform stages are per-event and stateless across events: the engine runs
them in worker processes, constructing one instance per worker. Sink stages
run in the main process, one task each; they own files, streams and totals.

Every stage and source gets a :class:`RunContext`: the detector, the run
number, paths, the pipeline, and (sinks only, in the main process) the
typed objects sinks share (:class:`~conduit.shared.Shared`). A stage or sink
that cannot go on raises :class:`StopRun`.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from .detector import DetectorParams
from .params import Params, Problem

if TYPE_CHECKING:
    from .event import Event
    from .outputs import OutputClaim
    from .shared import Shared

__all__ = ["Stage", "TransformStage", "SinkStage", "RunContext", "StageContext", "StopRun",
           "StageDefinitionError", "NoParams", "RunNumberMissing"]

STAGE_NAME = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$")


class NoParams(Params):
    """A stage without parameters."""


class StageDefinitionError(TypeError):
    """A stage class that does not follow the contract."""


class RunNumberMissing(ValueError):
    """An output name needs ``{run}`` and the (live) run has no run number."""


class StopRun(Exception):
    """Raised by a stage, sink or source that cannot go on (disk full, ...): the run stops cleanly.

    Events already received are still delivered to the other sinks; the run
    ends with exit status 1 and the message as its error.
    """


@dataclasses.dataclass
class RunContext:
    """What a stage or source may know about the run it is part of.

    Built once per run in the main process and sent to every worker; cheap to
    pickle (geometry is loaded lazily, shared objects stay in the main process).
    """

    detector: DetectorParams = dataclasses.field(default_factory=DetectorParams)
    run: int | None = None
    #: Directory of the pipeline file, against which relative paths resolve.
    base_dir: Path = dataclasses.field(default_factory=Path.cwd)
    #: Typed objects sinks share within the main process (the histograms ...): :mod:`conduit.shared`.
    shared: Shared = dataclasses.field(default_factory=lambda: _fresh_shared(), compare=False, repr=False)
    #: ``(use, params)`` of every ``[[stage]]`` of the pipeline, in order: read through public helpers
    #: (``conduit_physics.gates.pipeline_gates`` finds the gates the histogram stage declares).
    pipeline: tuple[tuple[str, Params], ...] = ()

    #: What :meth:`claim_output` does with a file already at an output path: keep (rename aside), refuse, replace.
    existing_outputs: str = "keep"
    #: Output names with ``{run}`` need a known run number (live sources: never a silent 0000).
    require_run: bool = False
    #: True when the source is live (a running DAQ): sinks may then sample what they draw.
    live: bool = False

    def resolve(self, path: Path | str) -> Path:
        """A user path relative to the pipeline file's directory."""
        p = Path(path).expanduser()
        return p if p.is_absolute() else Path(os.path.normpath(self.base_dir / p))

    def format_path(self, template: str | Path) -> Path:
        """Fill ``{run}`` in an output path template (``out/run_{run:04d}.h5``).

        Without a run number ``{run}`` is 0, except when :attr:`require_run` is
        set (a live source): then :class:`RunNumberMissing` names the template.
        """
        text = str(template)
        if self.run is None and self.require_run and "{run" in text:
            raise RunNumberMissing(f"{text}: the output name uses {{run}} but this live run has no run number; "
                                   "give it with `conduit run --run N` (or source.run = N)")
        run = self.run if self.run is not None else 0
        return self.resolve(text.format(run=run))

    def claim_output(self, path: Path) -> OutputClaim:
        """Lock an output file for this run (see :mod:`conduit.outputs`); raises ``OutputError`` (one line).

        Call it in ``open()``; call ``make_room()`` on the claim in ``begin()``,
        just before creating the file, and ``release()`` in ``close()``.
        """
        from .outputs import claim_output

        return claim_output(path, self.existing_outputs, logging.getLogger("conduit.outputs"))

    @functools.cached_property
    def pads(self):
        """The pad plane (:class:`conduit.padplane.PadPlane`) for this detector."""
        from .padplane import load_pad_plane

        geometry = self.resolve(self.detector.pad_geometry) if self.detector.pad_geometry else None
        return load_pad_plane(geometry)

    @functools.cached_property
    def electronics_map(self):
        """The electronics map (:class:`conduit.get.maps.ElectronicsMap`)."""
        from .get.maps import load_electronics_map

        path = self.resolve(self.detector.electronics_map) if self.detector.electronics_map else None
        return load_electronics_map(path)

    def __getstate__(self) -> dict[str, Any]:
        # Geometry is rebuilt in the receiving process; shared objects belong to the main process's sinks.
        return {"detector": self.detector, "run": self.run, "base_dir": self.base_dir, "pipeline": self.pipeline,
                "existing_outputs": self.existing_outputs, "require_run": self.require_run, "live": self.live}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.shared = _fresh_shared()


#: The name this context had before sources shared it (kept for existing plugins).
StageContext = RunContext


def _fresh_shared() -> Shared:
    from .shared import Shared

    return Shared()


class Stage:
    """Base of every stage. Subclass :class:`TransformStage` or :class:`SinkStage`."""

    #: Dotted name used in ``[[stage]] use = "..."``.
    name: ClassVar[str]
    kind: ClassVar[Literal["transform", "sink"]]
    #: Artifacts that must be present (``traces`` is provided by every source).
    requires: ClassVar[tuple[str, ...]] = ()
    #: Artifacts this stage adds to the event.
    provides: ClassVar[tuple[str, ...]] = ()
    #: Artifacts an earlier stage provided that this stage changes or replaces (a cloud filter: ``("cloud",)``).
    #: They count as required and provided; ``conduit check`` refuses the stage after one that derived
    #: something from them (a cloud filter after the clusterer: the labels would no longer line up).
    modifies: ClassVar[tuple[str, ...]] = ()
    #: The parameter model; ``[[stage]]`` keys other than ``use`` are validated against it.
    Params: ClassVar[type[Params]] = NoParams

    def __init__(self, params: Params, context: RunContext):
        self.params = params
        self.context = context
        self.log = logging.getLogger(f"conduit.stage.{self.name}")

    @classmethod
    def artifacts(cls, params: Params) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(requires, provides) for these parameters, both with :attr:`modifies`; override when they depend
        on them (and keep the modified artifacts in both)."""
        return (cls.requires + tuple(m for m in cls.modifies if m not in cls.requires),
                cls.provides + tuple(m for m in cls.modifies if m not in cls.provides))

    @classmethod
    def check_pipeline(cls, params: Params, pipeline: Sequence[tuple[str, Params]]) -> list[Problem]:
        """Problems with this stage's references to other stages, found when the pipeline is loaded.

        ``pipeline`` lists ``(use, params)`` of every stage; key paths of the
        problems are relative to this stage's table (reported at its TOML line).
        Override when a parameter names something another stage declares.
        """
        return []

    @classmethod
    def publish_shared(cls, params: Params, context: RunContext) -> None:
        """Publish objects other stages use (``context.shared.publish(...)``), in the main process.

        Called by the engine for every stage of the pipeline, transform or
        sink, before any sink opens. Override when the stage offers something
        sinks use (the ``kinematics`` stage offers the viewer its kinematic
        curves); a sink may also publish from :meth:`SinkStage.open`.
        """

    @classmethod
    def summary(cls) -> str:
        """First line of the class docstring."""
        doc = (cls.__doc__ or "").strip()
        return doc.splitlines()[0] if doc else ""

    @classmethod
    def validate_definition(cls) -> None:
        """Raise :class:`StageDefinitionError` when the class breaks the contract."""
        name = getattr(cls, "name", None)
        if not isinstance(name, str) or not STAGE_NAME.match(name):
            raise StageDefinitionError(
                f"{cls.__qualname__}: name must be dotted lower-case words like 'cluster.hdbscan', got {name!r}"
            )
        if getattr(cls, "kind", None) not in ("transform", "sink"):
            raise StageDefinitionError(f"{name}: kind must be 'transform' or 'sink'")
        if not (isinstance(cls.Params, type) and issubclass(cls.Params, Params)):
            raise StageDefinitionError(f"{name}: Params must be a conduit.params.Params subclass")
        for attr in ("requires", "provides", "modifies"):
            value = getattr(cls, attr)
            if not isinstance(value, tuple) or not all(isinstance(v, str) for v in value):
                raise StageDefinitionError(f"{name}: {attr} must be a tuple of artifact names")
        if cls.kind == "sink" and cls.modifies:  # every sink gets the same event: a change would reach the others
            raise StageDefinitionError(f"{name}: a sink cannot modify artifacts; do it in a transform stage")


class TransformStage(Stage):
    """A per-event computation run in the worker pool.

    ``process`` reads artifacts from the event and stores new ones in
    ``event.artifacts``. It must not keep state that changes results from one
    event to the next: events are spread over several processes.
    """

    kind = "transform"

    def warm_up(self) -> None:
        """Compile or load caches before the first event (called once per worker)."""

    def process(self, event: Event) -> None:
        raise NotImplementedError

    def count(self, event: Event, reason: str, n: int = 1) -> None:
        """Count ``n`` things this stage dropped (or left without a result) on ``event``, under ``reason``.

        ``self.count(event, "too_few_points", 3)``: the engine sums every
        event's counts per stage and reason and shows them in the run summary,
        the status line, the control panel and the HDF5 run file; nothing a
        stage drops should go uncounted.
        """
        event.count(self.name, reason, n)


class SinkStage(Stage):
    """A consumer of finished events, run in the main process in one task.

    ``consume`` sees every event in source order, including events whose
    analysis was skipped (``event.analysed`` is False) so that a recorder can
    be lossless. Calls to one sink never overlap, but may come from a worker
    thread (or, for an :attr:`inline` sink, the engine's event loop): do not
    rely on thread-local state across calls.
    """

    kind = "sink"
    #: When True the engine never drops events for this sink, even if that slows a live run.
    lossless: ClassVar[bool] = False
    #: When True the engine calls this sink in its event loop instead of in a thread: for a sink whose
    #: ``consume`` (and ``on_reset``, ``update_params``, ``on_metrics``) takes well under 0.1 ms and never
    #: waits (no file, socket or lock), such as filling histograms. It saves a thread hand-off (~0.1 ms of the
    #: main process's CPU) per batch of events; a slow inline sink would delay everything else.
    inline: ClassVar[bool] = False
    #: Parameters that may change while the run goes on (``conduit ctl set``, the control panel); the engine
    #: then calls :meth:`update_params` between two events. Any other change to a sink's parameters is refused.
    live_params: ClassVar[tuple[str, ...]] = ()

    def open(self) -> None:
        """Acquire files, sockets, viewers. Errors here stop the run before it starts.

        Do not touch existing output files here: claim them
        (``self.context.claim_output(path)``) and prepare; replace or create them
        in :meth:`begin`.
        """

    def begin(self) -> None:
        """Called once every sink has opened and the source and workers are ready, before the first event.

        The moment to move existing outputs aside (``claim.make_room()``) and
        create the files. Not called when start-up fails or is interrupted:
        :meth:`close` then must leave every existing file as it was.
        """

    def consume(self, event: Event) -> None:
        raise NotImplementedError

    def on_metrics(self, metrics: Any) -> None:
        """Periodic engine metrics (:class:`conduit.engine.metrics.MetricsSnapshot`), about once a second.

        Called once more just before :meth:`close` with the run's final totals (``metrics.final`` True).
        """

    def on_reset(self) -> None:
        """Reset running totals (histograms, counters); sent on SIGUSR1 (``kill -USR1 <pid>``) and by the
        control API (``conduit ctl HOST:PORT reset``, the panel's button)."""

    def update_params(self, params: Params) -> None:
        """Take new parameters (validated; only :attr:`live_params` differ) from the next event on."""
        self.params = params

    def on_parameters(self, change: Any) -> None:
        """The pipeline's parameters changed while running (:class:`conduit.engine.control.ParameterChange`).

        Called between events, before the first event the new values apply to
        (``change.sequence``; ``change.event`` is its id once that event has
        arrived). A recorder notes it so that the record says which parameters
        produced which events.
        """

    def close(self) -> None:
        """Flush and release everything; called once, also after errors."""

    def outputs(self) -> list[str]:
        """Human-readable list of what this sink wrote (paths, URLs), for the summary."""
        return []

    def live_outputs(self) -> list[str]:
        """What this sink is writing or serving now (the control panel's list); default: :meth:`outputs`."""
        return self.outputs()

    def unwritten(self) -> int:
        """Events this sink consumed but could not keep (lost in a failed write), for the summary.

        Asked after :meth:`close`. Events the engine never passed to the sink
        (it was behind or had stopped) are counted by the engine itself.
        """
        return 0

    def is_lossless(self) -> bool:
        return self.lossless
