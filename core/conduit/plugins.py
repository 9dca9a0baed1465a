"""The plugin manager: finds stages and sources through the ``conduit`` entry points.

Entry points are loaded one at a time so that a plugin that fails to import
is reported by name and the others still load (pluggy's own
``load_setuptools_entrypoints`` would raise on the first failure).

Environment:

* ``CONDUIT_BLOCK_PLUGINS=a,b`` skips the named entry points;
* ``CONDUIT_PLUGINS=pkg.module,...`` also registers these modules (handy for
  a plugin under development that is not installed yet).
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import traceback
from importlib.metadata import entry_points

import pluggy

from . import hookspecs
from .service import Service
from .source import Source
from .stage import Stage

__all__ = ["Registry", "PluginFailure", "get_registry", "plugin_manager", "ENTRY_POINT_GROUP"]

ENTRY_POINT_GROUP = "conduit"


@dataclasses.dataclass(frozen=True)
class PluginFailure:
    """A plugin that could not be loaded, or a class it registered that was refused."""

    plugin: str
    target: str
    error: str

    def line(self) -> str:
        return f"{self.plugin} ({self.target}): {self.error}"


@dataclasses.dataclass
class Registry:
    """Everything discovered: stage classes by name, source classes by kind, failures."""

    stages: dict[str, type[Stage]] = dataclasses.field(default_factory=dict)
    sources: dict[str, type[Source]] = dataclasses.field(default_factory=dict)
    #: Services (the control panel ...) by the name of their pipeline table.
    services: dict[str, type[Service]] = dataclasses.field(default_factory=dict)
    #: Which plugin registered each stage / source.
    origin: dict[str, str] = dataclasses.field(default_factory=dict)
    failures: list[PluginFailure] = dataclasses.field(default_factory=list)
    #: Loaded plugin name -> "distribution version" (or the module name).
    plugins: dict[str, str] = dataclasses.field(default_factory=dict)


class _Manager:
    """The one piece of process-wide state: the pluggy manager and what it found."""

    def __init__(self) -> None:
        self.pm: pluggy.PluginManager | None = None
        self.registry: Registry | None = None


_MANAGER = _Manager()


def plugin_manager() -> pluggy.PluginManager:
    """The process's plugin manager, with every plugin loaded (once)."""
    get_registry()
    assert _MANAGER.pm is not None
    return _MANAGER.pm


def get_registry(*, refresh: bool = False) -> Registry:
    """Load plugins (first call only, unless ``refresh``) and return what they registered."""
    if _MANAGER.registry is not None and not refresh:
        return _MANAGER.registry
    pm = pluggy.PluginManager("conduit")
    pm.add_hookspecs(hookspecs)
    registry = Registry()
    blocked = {n.strip() for n in os.environ.get("CONDUIT_BLOCK_PLUGINS", "").split(",") if n.strip()}

    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        if ep.name in blocked or pm.get_plugin(ep.name) is not None:
            continue
        dist = getattr(ep, "dist", None)
        label = f"{dist.name} {dist.version}" if dist is not None else ep.value
        _register_module(pm, registry, ep.name, ep.value, ep.load, label)

    for module_name in os.environ.get("CONDUIT_PLUGINS", "").split(","):
        module_name = module_name.strip()
        if module_name and pm.get_plugin(module_name) is None:
            _register_module(
                pm, registry, module_name, module_name, lambda m=module_name: importlib.import_module(m), module_name
            )

    _collect(pm, registry)
    _MANAGER.pm, _MANAGER.registry = pm, registry
    return registry


def register_plugin(obj: object, name: str) -> Registry:
    """Register a plugin object in this process (tests, notebooks) and re-collect stages."""
    registry = get_registry()
    pm = plugin_manager()
    if pm.get_plugin(name) is None:
        pm.register(obj, name=name)
        registry.plugins[name] = name
    fresh = Registry(failures=[f for f in registry.failures if f.plugin != name], plugins=registry.plugins)
    _collect(pm, fresh)
    _MANAGER.registry = fresh
    return fresh


def unregister_plugin(name: str) -> None:
    """Undo :func:`register_plugin`."""
    pm = plugin_manager()
    if pm.get_plugin(name) is not None:
        pm.unregister(name=name)
    assert _MANAGER.registry is not None
    fresh = Registry(failures=list(_MANAGER.registry.failures), plugins=dict(_MANAGER.registry.plugins))
    fresh.plugins.pop(name, None)
    _collect(pm, fresh)
    _MANAGER.registry = fresh


def _register_module(pm, registry: Registry, name: str, target: str, load, label: str) -> None:
    try:
        plugin = load()
        pm.register(plugin, name=name)
    except Exception as err:  # a broken plugin must not hide the others
        registry.failures.append(PluginFailure(name, target, _one_line(err)))
        return
    registry.plugins[name] = label


def _collect(pm: pluggy.PluginManager, registry: Registry) -> None:
    for impl in pm.hook.conduit_register_stages.get_hookimpls():
        _call_register(impl, "conduit_register_stages", registry, _add_stage)
    for impl in pm.hook.conduit_register_sources.get_hookimpls():
        _call_register(impl, "conduit_register_sources", registry, _add_source)
    for impl in pm.hook.conduit_register_services.get_hookimpls():
        _call_register(impl, "conduit_register_services", registry, _add_service)


def _call_register(impl, hook_name: str, registry: Registry, add) -> None:
    plugin_name = impl.plugin_name

    def register(cls: type) -> None:
        add(registry, plugin_name, cls)

    try:
        impl.function(register=register)
    except Exception as err:
        registry.failures.append(PluginFailure(plugin_name, hook_name, _one_line(err)))


def _add_stage(registry: Registry, plugin_name: str, cls: type) -> None:
    target = getattr(cls, "__qualname__", repr(cls))
    try:
        if not (isinstance(cls, type) and issubclass(cls, Stage)):
            raise TypeError(f"{target} is not a conduit.stage.Stage subclass")
        cls.validate_definition()
    except Exception as err:
        registry.failures.append(PluginFailure(plugin_name, target, _one_line(err)))
        return
    if cls.name in registry.stages and registry.stages[cls.name] is not cls:
        registry.failures.append(
            PluginFailure(plugin_name, target, f"stage '{cls.name}' already registered by {registry.origin[cls.name]}")
        )
        return
    registry.stages[cls.name] = cls
    registry.origin[cls.name] = plugin_name


def _add_source(registry: Registry, plugin_name: str, cls: type) -> None:
    _add_keyed(registry, plugin_name, cls, Source, "kind", "source kind", registry.sources)


def _add_service(registry: Registry, plugin_name: str, cls: type) -> None:
    _add_keyed(registry, plugin_name, cls, Service, "name", "service", registry.services)


def _add_keyed(registry: Registry, plugin_name: str, cls: type, base: type, attr: str, what: str,
               table: dict[str, type]) -> None:
    """Register a source (by ``kind``) or a service (by ``name``) unless it is invalid or its key is taken."""
    target = getattr(cls, "__qualname__", repr(cls))
    try:
        if not (isinstance(cls, type) and issubclass(cls, base)):
            raise TypeError(f"{target} is not a {base.__module__}.{base.__qualname__} subclass")
        cls.validate_definition()
    except Exception as err:
        registry.failures.append(PluginFailure(plugin_name, target, _one_line(err)))
        return
    key = getattr(cls, attr)
    origin = f"{what.split()[0]}:{key}"
    if key in table and table[key] is not cls:
        registry.failures.append(
            PluginFailure(plugin_name, target, f"{what} '{key}' already registered by {registry.origin[origin]}")
        )
        return
    table[key] = cls
    registry.origin[origin] = plugin_name


def _one_line(err: BaseException) -> str:
    text = f"{type(err).__name__}: {err}".strip()
    first = text.splitlines()[0] if text else type(err).__name__
    # Point at the plugin's own frame, not at importlib's.
    frames = [f for f in traceback.extract_tb(err.__traceback__) if not f.filename.startswith("<frozen")]
    if frames:
        frame = frames[-1]
        first += f" [{os.path.basename(frame.filename)}:{frame.lineno}]"
    return first
