"""What a source is: the contract for everything that feeds events to the engine.

A source is selected by ``[source] kind = "..."``; the other keys of the table
are validated against its ``Params``. Its :meth:`Source.run` pushes built
events with :meth:`Source.emit` until the input ends or the task is
cancelled. Live sources never wait for the engine: when the engine's queue is
full the event is dropped and counted, so receivers keep reading sockets.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING, Any, ClassVar

from .params import Params
from .stage import NoParams, RunContext

if TYPE_CHECKING:
    import trio

    from .event import Event

__all__ = ["Source", "SourceError", "SourceDefinitionError"]


class SourceError(RuntimeError):
    """A source cannot start or continue (one line, naming the file or host)."""


class SourceDefinitionError(TypeError):
    """A source class that does not follow the contract."""


@dataclasses.dataclass
class _Queue:
    channel: Any = None
    dropped: int = 0


class Source:
    """Base of every source (``exporter``, ``graw``, ``hdf5``, ``simulate``, or a plugin's)."""

    #: Value of ``[source] kind``.
    kind: ClassVar[str]
    #: Live sources (a running DAQ) default to the ``skip`` policy and never block.
    live: ClassVar[bool] = False
    Params: ClassVar[type[Params]] = NoParams
    #: Artifacts besides ``traces`` that this source may attach (e.g. ``frib``).
    provides: ClassVar[tuple[str, ...]] = ()

    def __init__(self, params: Params, context: RunContext):
        self.params = params
        self.context = context
        self.log = logging.getLogger(f"conduit.source.{self.kind}")
        self._queue = _Queue()
        self.emitted = 0

    @classmethod
    def summary(cls) -> str:
        doc = (cls.__doc__ or "").strip()
        return doc.splitlines()[0] if doc else ""

    @classmethod
    def validate_definition(cls) -> None:
        kind = getattr(cls, "kind", None)
        if not isinstance(kind, str) or not kind.isidentifier():
            raise SourceDefinitionError(f"{cls.__qualname__}: kind must be an identifier, got {kind!r}")
        if not (isinstance(cls.Params, type) and issubclass(cls.Params, Params)):
            raise SourceDefinitionError(f"{kind}: Params must be a conduit.params.Params subclass")

    # -- what the engine asks -------------------------------------------------

    def run_number(self) -> int | None:
        """The run number, when known before the first event (used in output names)."""
        return None

    def total(self) -> int | None:
        """How many events the source holds, when known (drives the progress bar)."""
        return None

    def status(self) -> dict[str, str]:
        """Short state of each sub-stream (``cobo3: connected``) for the status line."""
        return {}

    def counters(self) -> dict[str, int]:
        """Running totals (frames, bytes, bad frames, incomplete events, ...) for the summary."""
        return {}

    def losses(self) -> dict[str, int]:
        """Frames (or items) lost so far, by reason (``late_frames``, ``quarantined_ahead`` ...), for the
        summary, the status line and the recording; the engine adds the events it dropped itself."""
        return {}

    def asad_counters(self) -> dict[tuple[int, int], dict[str, int]]:
        """Per (cobo, asad) stream: ``frames`` received and frames lost by reason (``late_frames`` ...), for
        health displays; empty when the source does not build events from frames."""
        return {}

    def byte_counts(self) -> dict[str, int]:
        """Bytes received per sub-stream (``cobo0`` ...), for rate plots."""
        return {}

    def warm_up(self) -> None:
        """Compile kernels and open inputs before data flows (called before :meth:`run`).

        An input that cannot be read should fail here: the run then stops before
        any output file is touched.
        """

    def check_environment(self) -> list[tuple[str, str]]:
        """Warnings for ``conduit check`` about what lies outside the pipeline (hosts, devices).

        ``(parameter name, message)`` pairs; the default has none.
        """
        return []

    async def run(self) -> None:
        """Produce events with :meth:`emit` until the input ends; return normally at the end."""
        raise NotImplementedError

    # -- helpers for implementations -------------------------------------------

    def attach(self, channel: trio.MemorySendChannel[Event]) -> None:
        """Called by the engine before :meth:`run` with the channel to emit into."""
        self._queue.channel = channel

    @property
    def dropped(self) -> int:
        """Events a live source had to drop because the engine queue was full."""
        return self._queue.dropped

    async def emit(self, event: Event) -> None:
        """Hand one built event to the engine (waits for room unless the source is live)."""
        import trio

        channel = self._queue.channel
        if channel is None:
            raise RuntimeError("source not attached to an engine channel")
        if self.context.run is not None and event.run is None:
            event.run = self.context.run
        self.emitted += 1
        if self.live:
            try:
                channel.send_nowait(event)
            except trio.WouldBlock:
                self._queue.dropped += 1
            return
        await channel.send(event)
