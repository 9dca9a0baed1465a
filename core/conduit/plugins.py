"""The plugin manager: finds stages, sources, services and commands through the ``conduit`` entry points.

Entry points are loaded one at a time so that a plugin that fails to import
is reported by name and the others still load (pluggy's own
``load_setuptools_entrypoints`` would raise on the first failure). The
registration hooks are then called through pluggy (so hook ordering,
wrappers and tracing apply), once per plugin with
``PluginManager.subset_hook_caller``: a plugin whose hook raises is reported
by name, and the classes each plugin registers are attributed to it.

Discovery is lazy and split: the CLI asks only for commands
(:func:`get_commands`, which calls no stage hook and so imports no stage
module); pipelines ask for stages and sources (:func:`get_registry`).

Environment:

* ``CONDUIT_BLOCK_PLUGINS=a,b`` skips the named entry points;
* ``CONDUIT_PLUGINS=pkg.module,...`` also registers these modules (handy for
  a plugin under development that is not installed yet); when an installed
  plugin shadows one (the module is imported from an installed distribution,
  or a stage of the same name is already registered), a warning says so
  (``Registry.warnings``: ``conduit run``, ``check`` and ``stages`` print it);
* ``CONDUIT_TRACE_PLUGINS=1`` (or ``conduit --trace-plugins ...``) prints
  every plugin loaded and every hook call, with its arguments and results,
  to stderr.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import re
import sys
import traceback
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pluggy

from . import hookspecs

__all__ = ["Registry", "PluginFailure", "Command", "get_registry", "get_commands", "ENTRY_POINT_GROUP",
           "TRACE_ENV"]

ENTRY_POINT_GROUP = "conduit"
TRACE_ENV = "CONDUIT_TRACE_PLUGINS"
COMMAND_NAME = re.compile(r"^[a-z][a-z0-9-]*$")


@dataclasses.dataclass(frozen=True)
class PluginFailure:
    """A plugin that could not be loaded, or a class or command it registered that was refused."""

    plugin: str
    target: str
    error: str

    def line(self) -> str:
        return f"{self.plugin} ({self.target}): {self.error}"


@dataclasses.dataclass(frozen=True)
class Command:
    """A ``conduit`` sub-command registered by a plugin (see ``conduit_register_commands``)."""

    name: str
    target: Any  # dotted module name, or an object with add_arguments() and main()
    help: str
    plugin: str

    def load(self) -> Any:
        """The module (imported now) or object that implements the command."""
        return importlib.import_module(self.target) if isinstance(self.target, str) else self.target


@dataclasses.dataclass
class Registry:
    """Everything discovered: stage classes by name, source classes by kind, service classes by name, failures."""

    stages: dict[str, type] = dataclasses.field(default_factory=dict)
    sources: dict[str, type] = dataclasses.field(default_factory=dict)
    #: Services (the control panel ...) by the name of their pipeline table.
    services: dict[str, type] = dataclasses.field(default_factory=dict)
    #: Which plugin registered each stage (by name), source (``source:KIND``), service (``service:NAME``).
    origin: dict[str, str] = dataclasses.field(default_factory=dict)
    failures: list[PluginFailure] = dataclasses.field(default_factory=list)
    #: Loaded plugin name -> "distribution version" (or the module name).
    plugins: dict[str, str] = dataclasses.field(default_factory=dict)
    #: Things that load but deserve a word (a ``CONDUIT_PLUGINS`` development copy shadowed by an installed one).
    warnings: list[str] = dataclasses.field(default_factory=list)
    #: Plugins registered through ``CONDUIT_PLUGINS`` (development copies), by module name.
    development: frozenset[str] = frozenset()


@dataclasses.dataclass
class _Loaded:
    """The plugin manager with every entry point registered, and what failed to import."""

    pm: pluggy.PluginManager
    failures: list[PluginFailure]
    plugins: dict[str, str]
    tracing: bool = False
    warnings: list[str] = dataclasses.field(default_factory=list)
    development: set[str] = dataclasses.field(default_factory=set)
    dists: dict[str, Any] = dataclasses.field(default_factory=dict)  #: entry-point name -> its distribution


class _Manager:
    """The one piece of process-wide state: the loaded plugins and what their hooks registered."""

    def __init__(self) -> None:
        self.loaded: _Loaded | None = None
        self.registry: Registry | None = None
        self.commands: tuple[dict[str, Command], list[PluginFailure]] | None = None


_MANAGER = _Manager()


def get_registry(*, refresh: bool = False) -> Registry:
    """Load plugins (first call only, unless ``refresh``) and return the stages and sources they registered."""
    if _MANAGER.registry is not None and not refresh:
        return _MANAGER.registry
    loaded = _load(refresh)
    registry = Registry(failures=list(loaded.failures), plugins=dict(loaded.plugins),
                        warnings=list(loaded.warnings), development=frozenset(loaded.development))
    for kind in _CLASS_KINDS:
        def make_register(plugin: str, kind=kind) -> Callable[[type], None]:
            return lambda cls: _add_class(registry, plugin, cls, kind)

        registry.failures += _call_each_plugin(loaded, kind.hook, make_register)
    _MANAGER.registry = registry
    return registry


def get_commands(*, refresh: bool = False) -> tuple[dict[str, Command], list[PluginFailure]]:
    """(commands by name, plugins that failed to load or to register a command); imports no stage module."""
    if _MANAGER.commands is not None and not refresh:
        return _MANAGER.commands
    loaded = _load(refresh)
    commands: dict[str, Command] = {}
    failures = list(loaded.failures)

    def make_register(plugin: str) -> Callable[..., None]:
        def register(name: str, target: Any, help: str = "") -> None:
            problem = _command_problem(name, target, commands)
            if problem:
                failures.append(PluginFailure(plugin, f"command {name!r}", problem))
            else:
                commands[name] = Command(name, target, help, plugin)

        return register

    failures += _call_each_plugin(loaded, "conduit_register_commands", make_register)
    _MANAGER.commands = (commands, failures)
    return _MANAGER.commands


# -- loading ---------------------------------------------------------------------------------------


def _load(refresh: bool) -> _Loaded:
    if _MANAGER.loaded is not None and not refresh:
        return _MANAGER.loaded
    _MANAGER.registry = _MANAGER.commands = None
    pm = pluggy.PluginManager("conduit")
    pm.add_hookspecs(hookspecs)
    tracing = os.environ.get(TRACE_ENV, "").strip() not in ("", "0")
    if tracing:
        pm.trace.root.setwriter(_trace)
        pm.enable_tracing()
    loaded = _Loaded(pm, [], {}, tracing)
    blocked = {n.strip() for n in os.environ.get("CONDUIT_BLOCK_PLUGINS", "").split(",") if n.strip()}
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        if ep.name in blocked or pm.get_plugin(ep.name) is not None:
            continue
        dist = getattr(ep, "dist", None)
        label = f"{dist.name} {dist.version}" if dist is not None else ep.value
        loaded.dists[ep.name] = dist
        _register(loaded, ep.name, ep.value, ep.load, label)
    for module_name in os.environ.get("CONDUIT_PLUGINS", "").split(","):
        module_name = module_name.strip()
        if module_name and pm.get_plugin(module_name) is None:
            _register_development(loaded, module_name)
    _MANAGER.loaded = loaded
    return loaded


def _register_development(loaded: _Loaded, module_name: str) -> None:
    """Register a ``CONDUIT_PLUGINS`` module, unless an entry point registered that very module already."""
    try:
        module = importlib.import_module(module_name)
    except Exception as err:  # a broken plugin must not hide the others
        loaded.failures.append(PluginFailure(module_name, module_name, _one_line(err)))
        return
    installed = loaded.pm.get_name(module)
    if installed is None:
        _register(loaded, module_name, module_name, lambda: module, module_name)
        loaded.development.add(module_name)
        return
    dist = loaded.dists.get(installed)
    where = Path(getattr(module, "__file__", "") or ".").resolve()
    if dist is not None and where.is_relative_to(Path(dist.locate_file("")).resolve()):
        # Imported from the installed distribution's own files (not an editable install): the copy being
        # developed, wherever it is, is not what runs.
        loaded.warnings.append(
            f"CONDUIT_PLUGINS={module_name}: the development copy is not used: the module is imported from the "
            f"installed distribution {loaded.plugins.get(installed, dist.name)} ({where}); uninstall it "
            f"(pip uninstall {dist.name}) or install your copy with pip install -e, or put it first on PYTHONPATH")


def _register(loaded: _Loaded, name: str, target: str, load: Callable[[], object], label: str) -> None:
    if loaded.tracing:
        _trace(f"loading plugin {name} = {target} ({label})\n")
    try:
        loaded.pm.register(load(), name=name)
    except Exception as err:  # a broken plugin must not hide the others
        loaded.failures.append(PluginFailure(name, target, _one_line(err)))
        return
    loaded.plugins[name] = label


def _call_each_plugin(loaded: _Loaded, hook_name: str,
                      make_register: Callable[[str], Callable[..., None]]) -> list[PluginFailure]:
    """Call ``hook_name`` through pluggy once per implementing plugin, in pluggy's order.

    Every other plugin's plain implementation is left out of each call (hook
    wrappers stay in), so ``register`` knows which plugin is registering and
    an exception is the failure of that plugin alone.
    """
    pm = loaded.pm
    failures = []
    plain = [impl for impl in getattr(pm.hook, hook_name).get_hookimpls() if not (impl.wrapper or impl.hookwrapper)]
    for impl in reversed(plain):  # pluggy calls the last registered first (tryfirst / trylast honoured)
        others = [other.plugin for other in plain if other.plugin is not impl.plugin]
        caller = pm.subset_hook_caller(hook_name, remove_plugins=others)
        if loaded.tracing:
            _trace(f"{hook_name} of plugin {impl.plugin_name}:\n")
        try:
            caller(register=make_register(impl.plugin_name))
        except Exception as err:
            failures.append(PluginFailure(impl.plugin_name, hook_name, _one_line(err)))
    return failures


# -- what plugins register ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _ClassKind:
    """One kind of class plugins register: its hook, contract, registry table and key."""

    hook: str
    base: str  #: "module:Class" of the contract (imported when classes are registered)
    table: str  #: attribute of Registry
    key: str  #: class attribute naming it
    what: str  #: for messages
    origin: str  #: prefix of its key in Registry.origin

    def base_class(self) -> type:
        module, _, name = self.base.partition(":")
        return getattr(importlib.import_module(module), name)


_CLASS_KINDS = (
    _ClassKind("conduit_register_stages", "conduit.stage:Stage", "stages", "name", "stage", ""),
    _ClassKind("conduit_register_sources", "conduit.source:Source", "sources", "kind", "source kind", "source:"),
    _ClassKind("conduit_register_services", "conduit.service:Service", "services", "name", "service", "service:"),
)


def _add_class(registry: Registry, plugin: str, cls: object, kind: _ClassKind) -> None:
    """Check ``cls`` against its contract and file it under its key, unless the key is taken."""
    target = getattr(cls, "__qualname__", repr(cls))
    base = kind.base_class()
    try:
        if not (isinstance(cls, type) and issubclass(cls, base)):
            raise TypeError(f"{target} is not a {base.__module__}.{base.__qualname__} subclass")
        cls.validate_definition()  # type: ignore[attr-defined]
    except Exception as err:
        registry.failures.append(PluginFailure(plugin, target, _one_line(err)))
        return
    key = getattr(cls, kind.key)
    table = getattr(registry, kind.table)
    owner = registry.origin.get(kind.origin + key)
    if key in table and table[key] is not cls and (plugin in registry.development) != (owner in registry.development):
        # A development copy (CONDUIT_PLUGINS) and an installed plugin offer the same name: say which one runs.
        dev, installed = (plugin, owner) if plugin in registry.development else (owner, plugin)
        outcome = ("is not used: the installed plugin '{0}' ({1}) registers one of that name first; uninstall it "
                   "to use the development copy" if dev == plugin else
                   "is used instead of the one the installed plugin '{0}' ({1}) registers")
        registry.warnings.append(f"CONDUIT_PLUGINS={dev}: its {kind.what} '{key}' "
                                 + outcome.format(installed, registry.plugins.get(installed, installed)))
        return
    if key in table and table[key] is not cls:
        registry.failures.append(PluginFailure(
            plugin, target, f"{kind.what} '{key}' already registered by {registry.origin[kind.origin + key]}"))
        return
    table[key] = cls
    registry.origin[kind.origin + key] = plugin


def _command_problem(name: object, target: object, commands: dict[str, Command]) -> str | None:
    if not isinstance(name, str) or not COMMAND_NAME.match(name):
        return f"a command name is lower-case words joined by '-', got {name!r}"
    if name in commands:
        return f"command '{name}' already registered by {commands[name].plugin}"
    if not isinstance(target, str) and not (hasattr(target, "add_arguments") and hasattr(target, "main")):
        return "the target is a module name, or an object with add_arguments(parser) and main(args)"
    return None


def _trace(text: str) -> None:
    sys.stderr.write(f"[conduit plugins] {text}")


def _one_line(err: BaseException) -> str:
    text = f"{type(err).__name__}: {err}".strip()
    first = text.splitlines()[0] if text else type(err).__name__
    # Point at the plugin's own frame, not at importlib's.
    frames = [f for f in traceback.extract_tb(err.__traceback__) if not f.filename.startswith("<frozen")]
    if frames:
        frame = frames[-1]
        first += f" [{os.path.basename(frame.filename)}:{frame.lineno}]"
    return first
