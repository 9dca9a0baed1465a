"""What a service is: a task that runs beside a pipeline, in the engine's nursery, with the control API.

A service is configured by a top-level table of the pipeline file named after
it (``[panel]`` for the control panel) and registered through the
``conduit_register_services`` hook, exactly like a stage::

    class Panel(Service):
        '''The shift crew's web page.'''
        name = "panel"
        Params = PanelParams

        @classmethod
        def enabled(cls, params):
            return params.enabled

        async def run(self, task_status=trio.TASK_STATUS_IGNORED):
            ...                     # self.control: conduit.engine.control.EngineControl
            task_status.started()   # the engine goes on starting up from here

The engine starts every enabled service before it opens the sinks (so a page
can show the start-up) and cancels it after the last output is closed. A
service must never block the event path: it reads the control API's snapshot
and calls its methods from the engine's trio thread; blocking work goes to a
thread (``trio.to_thread.run_sync``).
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any, ClassVar

from .params import Params
from .stage import NoParams

if TYPE_CHECKING:
    from .engine.control import EngineControl

__all__ = ["Service", "ServiceDefinitionError"]

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class ServiceDefinitionError(TypeError):
    """A service class that does not follow the contract."""


class Service:
    """Base of every service (the control panel, or a plugin's)."""

    #: The pipeline table that configures it (``[panel]``): a lower-case identifier.
    name: ClassVar[str]
    Params: ClassVar[type[Params]] = NoParams

    def __init__(self, params: Params, control: EngineControl):
        self.params = params
        self.control = control
        self.log = logging.getLogger(f"conduit.service.{self.name}")

    @classmethod
    def enabled(cls, params: Params) -> bool:
        """Whether the engine starts it with these parameters (a table may just configure a service that is off)."""
        return True

    @classmethod
    def validate_definition(cls) -> None:
        name = getattr(cls, "name", None)
        if not isinstance(name, str) or not _NAME.match(name):
            raise ServiceDefinitionError(f"{cls.__qualname__}: name must be a lower-case identifier, got {name!r}")
        if name in ("source", "detector", "engine", "alarms", "stage"):
            raise ServiceDefinitionError(f"{name}: the name of a core table cannot name a service")
        if not (isinstance(cls.Params, type) and issubclass(cls.Params, Params)):
            raise ServiceDefinitionError(f"{name}: Params must be a conduit.params.Params subclass")

    async def run(self, task_status: Any = None) -> None:
        """Serve until cancelled; call ``task_status.started()`` once ready (the engine waits for it)."""
        raise NotImplementedError
