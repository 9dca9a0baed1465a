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

    @property
    def builder(self) -> EventBuilder:
        """The event builder, made on first use with ``[detector]``'s electronics map (live: time limits apply)."""
        if self._builder is None:
            self._builder = self.params.make_builder(  # type: ignore[attr-defined]
                self.context.electronics_map, live=self.live, logger=self.log)
        return self._builder

    def asad_counters(self) -> dict[tuple[int, int], dict[str, int]]:
        return self._builder.asad_counters() if self._builder is not None else {}
