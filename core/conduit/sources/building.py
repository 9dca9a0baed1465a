"""What the sources that build events from GET frames share (``graw``, ``exporter``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from conduit.source import Source

if TYPE_CHECKING:
    from conduit.get.builder import EventBuilder

__all__ = ["FrameSource"]


class FrameSource(Source):
    """A source whose ``Params`` include the event-builder options (:class:`conduit.get.options.BuilderParams`)."""

    _builder: EventBuilder | None = None
    _trace_memory = None  # given to the builder when it is made (EventBuilder.trace_memory)

    @property
    def builder(self) -> EventBuilder:
        """The event builder, made on first use with ``[detector]``'s electronics map (live: time limits apply)."""
        if self._builder is None:
            self._builder = self.params.make_builder(  # type: ignore[attr-defined]
                self.context.electronics_map, live=self.live, logger=self.log)
            self._builder.trace_memory = self._trace_memory
        return self._builder

    def share_trace_memory(self, memory) -> None:
        """Build emitted events' trace matrices with ``memory`` (``EventBuilder.trace_memory``): the engine gives
        its worker pool's shared-memory slots, so an analysed event's traces reach a worker without a copy."""
        self._trace_memory = memory
        if self._builder is not None:
            self._builder.trace_memory = memory

    def asad_counters(self) -> dict[tuple[int, int], dict[str, int]]:
        return self._builder.asad_counters() if self._builder is not None else {}
