"""Shared objects (typed services): how the stages of one run share objects, looked up by interface type.

An object is shared under an *interface class*: an abstract class declared in
a public module (for example :class:`conduit_physics.histograms.Histograms`).
Whoever needs it looks it up by that class, never by a string key, so a typo
is an ImportError and the contract is written down where the interface is
declared::

    # the histogram sink, in open()
    self.context.shared.publish(Histograms, self.histograms, by=self.name, single=True)

    # the rerun sink, whenever it draws (None: the pipeline has no histogram stage)
    histograms = self.context.shared.get(Histograms)

Sinks publish in :meth:`~conduit.stage.SinkStage.open`; any stage class may
also publish from :meth:`~conduit.stage.Stage.publish_shared`, which the
engine calls in the main process before the sinks open (how the transform
``kinematics`` stage offers its kinematic curves to the viewer). Shared
objects live in the main process and belong to one run: transform stages in
worker processes see an empty registry, and a new run (``conduit ctl
new-run``) starts with a fresh one. Sinks open in pipeline order, so look
objects up when you use them (or in ``begin()``), not in ``open()``.

Not to be confused with :class:`conduit.service.Service`: a task that runs
beside the pipeline (the control panel), configured by its own table.
"""

from __future__ import annotations

import threading
from typing import TypeVar

__all__ = ["Shared", "SharedError"]

T = TypeVar("T")


class SharedError(RuntimeError):
    """An object published twice where only one may exist, or one that does not implement its interface."""


class Shared:
    """The shared objects of one run: interface class -> (publisher name, object) in publishing order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_interface: dict[type, list[tuple[str, object]]] = {}

    def publish(self, interface: type[T], provider: T, *, by: str, single: bool = False) -> None:
        """Offer ``provider`` (an instance of ``interface``) to the run; ``by`` names the publishing stage.

        With ``single`` a second provider of the same interface is refused
        (:class:`SharedError` naming both publishers).
        """
        if not isinstance(provider, interface):
            raise SharedError(f"{by}: {type(provider).__name__} does not implement {interface.__name__}")
        with self._lock:
            providers = self._by_interface.setdefault(interface, [])
            if single and providers:
                raise SharedError(f"{by}: only one {interface.__name__} per run; {providers[0][0]} already "
                                  "publishes one")
            providers.append((by, provider))

    def get(self, interface: type[T]) -> T | None:
        """The first provider of ``interface``, or None when no stage published one."""
        with self._lock:
            providers = self._by_interface.get(interface)
            return providers[0][1] if providers else None  # type: ignore[return-value]

    def all(self, interface: type[T]) -> list[T]:
        """Every provider of ``interface``, in publishing order (empty when none)."""
        with self._lock:
            return [provider for _, provider in self._by_interface.get(interface, [])]  # type: ignore[misc]

    def publishers(self, interface: type) -> list[str]:
        """Names of the stages that published ``interface``."""
        with self._lock:
            return [name for name, _ in self._by_interface.get(interface, [])]
