"""The house rules of docs/architecture.md, checked on every module's imports (its AST, so lazy imports too).

* the core (``core/conduit``) imports no plugin package;
* a plugin imports only the core's public modules, the public library
  ``conduit_physics``, its own package and third-party libraries, never another
  plugin's modules (each ``conduit_stages.X`` sub-package is a plugin of its own);
* ``conduit_physics`` imports only the core's public modules and itself.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CORE = REPO / "core"
PLUGINS = REPO / "plugins"

#: The core's public modules (docs/architecture.md, "What a plugin may import"). A name ending in ".*"
#: allows the package and everything in it; the others allow exactly that module.
PUBLIC_CORE = (
    "conduit", "conduit.stage", "conduit.source", "conduit.params", "conduit.event", "conduit.artifacts",
    "conduit.hookspecs", "conduit.shared", "conduit.service", "conduit.engine.control", "conduit.detector",
    "conduit.padplane", "conduit.outputs", "conduit.lazy", "conduit.exits", "conduit.dtype_names",
    "conduit.ratelog", "conduit.logsetup", "conduit.plugins", "conduit.config", "conduit.engine",
    "conduit.commands.common", "conduit.testing", "conduit.get.*", "conduit.sources.*",
)
#: Public libraries any plugin may use.
LIBRARIES = ("conduit_physics",)


def plugin_packages() -> set[str]:
    return {p.name for p in PLUGINS.iterdir() if (p / "__init__.py").exists()}


def module_name(path: Path) -> str:
    root = CORE if path.is_relative_to(CORE) else PLUGINS
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(source: str, module: str, is_package: bool) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in ``source`` (``from a import b`` gives a and a.b)."""
    package = module if is_package else module.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            out.append((node.lineno, target))
            out += [(node.lineno, f"{target}.{alias.name}") for alias in node.names if alias.name != "*"]
    return out


def plugin_unit(module: str) -> str:
    """The plugin a module belongs to: ``conduit_stages.cluster`` for ``conduit_stages.cluster.dbscan_stage``,
    the top-level package for the others."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "conduit_stages" and len(parts) > 1 else parts[0]


def is_public_core(target: str, modules: set[str]) -> bool:
    for rule in PUBLIC_CORE:
        if rule.endswith(".*") and (target == rule[:-2] or target.startswith(rule[:-1])):
            return True
        if target == rule:
            return True
    # ``from conduit.engine import run_pipeline`` also lists "conduit.engine.run_pipeline": a name, not a module.
    parent = target.rpartition(".")[0]
    return target not in modules and parent in PUBLIC_CORE


def violations(module: str, source: str, is_package: bool, modules: set[str], plugins: set[str]) -> list[str]:
    """Why each import of ``module`` breaks the rules (empty: it keeps them)."""
    top = module.split(".")[0]
    out = []
    for line, target in imported_modules(source, module, is_package):
        target_top = target.split(".")[0]
        if top == "conduit":
            if target_top in plugins:
                out.append(f"{module}:{line}: the core imports the plugin module {target}")
            continue
        if target_top == "conduit":
            if not is_public_core(target, modules):
                out.append(f"{module}:{line}: {target} is not a public module of the core")
        elif target_top in plugins:
            if top in LIBRARIES and target_top != top:
                out.append(f"{module}:{line}: the library {top} imports the plugin module {target}")
            elif top not in LIBRARIES and target_top not in LIBRARIES and plugin_unit(target) != plugin_unit(module):
                if target != "conduit_stages":  # the namespace package's docstring, no code
                    out.append(f"{module}:{line}: plugin {plugin_unit(module)} imports {target}, "
                               f"a module of plugin {plugin_unit(target)}")
    return out


def all_modules() -> list[tuple[str, Path]]:
    files = sorted(CORE.rglob("*.py")) + sorted(PLUGINS.rglob("*.py"))
    return [(module_name(f), f) for f in files if "__pycache__" not in f.parts]


def test_the_house_keeps_its_rules():
    modules = {name for name, _ in all_modules()}
    plugins = plugin_packages()
    assert {"conduit_stages", "conduit_physics", "conduit_simulate", "conduit_batch", "conduit_panel"} <= plugins
    found = []
    for name, path in all_modules():
        found += violations(name, path.read_text(encoding="utf-8"), path.name == "__init__.py", modules, plugins)
    assert found == [], "imports that break docs/architecture.md:\n" + "\n".join(found)


@pytest.mark.parametrize(
    "module, source, expected",
    [
        ("conduit.engine.runner", "def f():\n    from conduit_stages.histogram.sink import X\n",
         "the core imports the plugin module conduit_stages.histogram.sink"),
        ("conduit.cli", "import conduit_simulate\n", "the core imports the plugin module conduit_simulate"),
        ("conduit_stages.rerun_sink.sink", "from conduit_stages.histogram import hset\n",
         "plugin conduit_stages.rerun_sink imports conduit_stages.histogram"),
        ("conduit_stages.cluster.dbscan_stage", "from ..estimate.trackfit import circle_fit\n",
         "plugin conduit_stages.cluster imports conduit_stages.estimate.trackfit"),
        ("conduit_batch.task", "from conduit.engine.runner import run_pipeline\n",
         "conduit.engine.runner is not a public module of the core"),
        ("conduit_simulate.source", "from conduit_batch import plan\n",
         "plugin conduit_simulate imports conduit_batch"),
        ("conduit_physics.tracks.fit", "import conduit_stages.estimate\n",
         "the library conduit_physics imports the plugin module conduit_stages.estimate"),
    ],
)
def test_the_rule_check_sees_each_kind_of_breach(module, source, expected):
    modules = {name for name, _ in all_modules()} | {"conduit_stages.estimate.trackfit"}
    found = violations(module, source, False, modules, plugin_packages())
    assert any(expected in line for line in found), found


@pytest.mark.parametrize(
    "module, source",
    [
        ("conduit_stages.rerun_sink.sink", "from conduit_physics.histograms import Histograms\n"),
        ("conduit_stages.rerun_sink.sink", "from .display import for_display\nfrom . import geometry\n"),
        ("conduit_batch.task", "from conduit.engine import run_pipeline\nfrom conduit.config import load_pipeline\n"),
        ("conduit_simulate.writers", "from conduit.get.grawfiles import RunWriter\nimport numpy as np\n"),
        ("conduit_stages.kinematics.stage", "from conduit import TransformStage, StopRun\n"),
    ],
)
def test_allowed_imports_pass(module, source):
    modules = {name for name, _ in all_modules()}
    assert violations(module, source, False, modules, plugin_packages()) == []
