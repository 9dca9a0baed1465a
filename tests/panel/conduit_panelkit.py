"""A test plugin for the control panel tests: a transform with a parameter, and a sink that records it.

``panelkit.mark`` stores its ``value`` parameter in every event it analyses
(artifact ``mark``); ``panelkit.record`` writes one JSON line per event (id,
analysed, mark, run), ``"reset"`` on a reset and ``{"change": ...}`` on a
parameter change, and ``"closed"`` at the end: the order of these lines is
the order the engine delivered them in.
"""

from __future__ import annotations

import json

from conduit.hookspecs import hookimpl
from conduit.params import Params, param
from conduit.stage import SinkStage, TransformStage


class MarkParams(Params):
    value: float = param(1.0, "stored in every analysed event", ge=0, le=100)
    label: str = param("a", "a text parameter")
    fail_ids: list[int] = param([], "event ids on which to raise (a failing stage)")


class Mark(TransformStage):
    """Stores its ``value`` parameter as artifact ``mark``."""

    name = "panelkit.mark"
    provides = ("mark",)
    Params = MarkParams

    def process(self, event) -> None:
        if event.id in self.params.fail_ids:
            raise ValueError(f"deliberate failure on event {event.id}")
        event.artifacts["mark"] = self.params.value


class RecordParams(Params):
    path: str = param("record_{run}.jsonl", "JSON-lines file (template with {run})")


class Record(SinkStage):
    """One JSON line per event; resets, parameter changes and the end as lines of their own."""

    name = "panelkit.record"
    Params = RecordParams
    lossless = True

    def open(self) -> None:
        self.path = self.context.format_path(self.params.path)
        self.file = open(self.path, "w")

    def consume(self, event) -> None:
        record = {"id": event.id, "sequence": event.sequence, "analysed": event.analysed,
                  "mark": event.artifacts.get("mark"), "run": event.run}
        self.file.write(json.dumps(record) + "\n")

    def on_reset(self) -> None:
        self.file.write('"reset"\n')

    def on_parameters(self, change) -> None:
        self.file.write(json.dumps({"change": change.to_dict()}) + "\n")

    def close(self) -> None:
        self.file.write('"closed"\n')
        self.file.close()

    def outputs(self) -> list[str]:
        return [str(self.path)]


@hookimpl
def conduit_register_stages(register):
    register(Mark)
    register(Record)
