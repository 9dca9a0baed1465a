"""``conduit new-stage``: write a ready-to-install stage plugin package, or add a stage to one.

``conduit new-stage myexp.hitcount`` writes ``conduit-myexp-hitcount/`` with a
pyproject declaring the ``conduit`` entry point, the stage class with a
parameter model, tests (using :mod:`conduit.testing`) and an example
pipeline; ``--kind clusterer`` writes a clusterer on the public
:class:`conduit_physics.clustering.Clusterer`. ``--into PACKAGE_DIR`` adds the
stage as a new module of an existing package and registers it in that
package's ``conduit_register_stages`` hook. The files are in
:mod:`.stage_templates`.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
import tomllib
from pathlib import Path
from string import Template

from . import stage_templates as T

DESCRIPTION = """Write a stage plugin package skeleton, or add a stage to an existing package.

    conduit new-stage myexp.hitcount                   # a transform stage
    conduit new-stage myexp.logger --kind sink         # a sink stage
    conduit new-stage myexp.chain --kind clusterer     # a clusterer: implement labels(cloud)
    pip install -e conduit-myexp-hitcount              # then: conduit stages
    conduit new-stage myexp.silicon --into conduit-myexp-hitcount   # one more stage in that package

The package holds pyproject.toml (with the entry point), the stage class with a
typed parameter model, pytest tests using conduit.testing and an example pipeline.
With --into, the stage becomes a new module of the package (next to its plugin
module), is registered in its conduit_register_stages hook, and gets a test file."""

NAME = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$")
KINDS = ("transform", "sink", "clusterer")

#: kind -> (stage module template, test template)
SOURCES = {
    "transform": (T.TRANSFORM, T.TEST_TRANSFORM),
    "sink": (T.SINK, T.TEST_SINK),
    "clusterer": (T.CLUSTERER, T.TEST_CLUSTERER),
}


class ScaffoldError(ValueError):
    """A one-line reason why the files cannot be written."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="dotted stage name, e.g. myexp.hitcount (lower case, digits, underscores)")
    parser.add_argument("--kind", choices=KINDS, default="transform",
                        help="stage kind: transform, sink, or clusterer (a transform providing 'clusters')")
    parser.add_argument("--dir", type=Path, default=Path("."), help="where to create the package directory")
    parser.add_argument("--into", type=Path, metavar="PACKAGE_DIR",
                        help="add the stage to this existing package (the directory with its pyproject.toml)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing directory or module")


def class_name(stage_name: str) -> str:
    """``myexp.hit_count`` -> ``MyexpHitCount``."""
    return "".join(part.capitalize() for part in re.split(r"[._]", stage_name) if part)


def _values(name: str, kind: str, package: str, module: str) -> dict[str, str]:
    slug = name.replace(".", "_")
    deps = '["attpc-conduit", "numpy", "scipy"]' if kind == "clusterer" else '["attpc-conduit", "numpy"]'
    return dict(name=name, dist="conduit-" + name.replace(".", "-").replace("_", "-"), package=package,
                module=module, entry=slug, cls=class_name(name), artifact=slug, dependencies=deps)


def _check_name(name: str) -> None:
    if not NAME.match(name):
        raise ScaffoldError(f"stage name must be dotted lower-case words like 'myexp.hitcount', got {name!r}")


def write_skeleton(name: str, kind: str, directory: Path, force: bool = False) -> Path:
    """Create the package; return its directory."""
    _check_name(name)
    slug = name.replace(".", "_")
    values = _values(name, kind, "conduit_" + slug, "stage")
    root = directory / values["dist"]
    if root.exists() and not force:
        raise ScaffoldError(f"{root} already exists (use --force to overwrite)")
    package = values["package"]
    stage, test = SOURCES[kind]
    files = {
        root / "pyproject.toml": T.PYPROJECT,
        root / "README.md": T.README,
        root / "pipeline.toml": T.PIPELINE_CLUSTERER if kind == "clusterer" else T.PIPELINE,
        root / "src" / package / "__init__.py": Template('"""The $name stage for attpc-conduit."""\n'),
        root / "src" / package / "plugin.py": T.PLUGIN,
        root / "src" / package / "stage.py": stage,
        root / "tests" / f"test_{slug}.py": test,
    }
    for path, template in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(template.substitute(values))
    return root


def add_to_package(name: str, kind: str, package_dir: Path, force: bool = False) -> list[Path]:
    """Add the stage as a module of the package at ``package_dir`` and register it; return the files written."""
    _check_name(name)
    plugin_file, package = _plugin_module(package_dir)
    module = name.split(".")[-1]
    if module in ("plugin", "__init__") or not module.isidentifier():
        module = name.replace(".", "_")
    values = _values(name, kind, package, module)
    stage_file = plugin_file.parent / f"{module}.py"
    tests = package_dir / "tests"
    test_file = tests / f"test_{name.replace('.', '_')}.py"
    for path in (stage_file, test_file):
        if path.exists() and not force:
            raise ScaffoldError(f"{path} already exists (use --force to overwrite)")
    stage, test = SOURCES[kind]
    plugin_text = _register(plugin_file.read_text(encoding="utf-8"), module, values["cls"], plugin_file)
    stage_file.write_text(stage.substitute(values))
    tests.mkdir(exist_ok=True)
    test_file.write_text(test.substitute(values))
    plugin_file.write_text(plugin_text, encoding="utf-8")
    return [stage_file, test_file, plugin_file]


def _plugin_module(package_dir: Path) -> tuple[Path, str]:
    """The file of the package's ``conduit`` entry-point module and the import package it is in."""
    pyproject = package_dir / "pyproject.toml"
    try:
        data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ScaffoldError(f"{pyproject}: no such file (--into takes the package directory)") from None
    except tomllib.TOMLDecodeError as err:
        raise ScaffoldError(f"{pyproject}: {err}") from None
    entries = data.get("project", {}).get("entry-points", {}).get("conduit", {})
    if not entries:
        raise ScaffoldError(f"{pyproject}: no [project.entry-points.conduit] table: not a conduit plugin package")
    candidates = []
    for target in entries.values():
        module = str(target).partition(":")[0]
        for base in (package_dir / "src", package_dir):
            path = base.joinpath(*module.split(".")).with_suffix(".py")
            if path.exists():
                candidates.append((path, module.rpartition(".")[0]))
    if not candidates:
        raise ScaffoldError(f"{pyproject}: the entry-point modules {sorted(entries.values())} are not under "
                            f"{package_dir} or {package_dir / 'src'}")
    with_hook = [c for c in candidates if "conduit_register_stages" in c[0].read_text(encoding="utf-8")]
    path, package = (with_hook or candidates)[0]
    if not package:
        raise ScaffoldError(f"{path}: the entry-point module must be inside a package to add a module next to it")
    return path, package


def _register(text: str, module: str, cls: str, path: Path) -> str:
    """``text`` of a plugin module with ``register(cls)`` added to its ``conduit_register_stages`` hook."""
    try:
        tree = ast.parse(text)
    except SyntaxError as err:
        raise ScaffoldError(f"{path}:{err.lineno}: cannot be parsed: {err.msg}") from None
    hooks = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "conduit_register_stages"]
    if not hooks:
        has_hookimpl = re.search(r"^from conduit(\.hookspecs)? import .*\bhookimpl\b", text, re.M)
        return (text.rstrip("\n") + "\n\n" + ("" if has_hookimpl else "from conduit import hookimpl\n") +
                f"\n\n@hookimpl\ndef conduit_register_stages(register):\n    from .{module} import {cls}\n\n"
                f"    register({cls})\n")
    hook = hooks[0]
    lines = text.splitlines()
    register = hook.args.args[0].arg if hook.args.args else "register"
    indent = re.match(r"\s*", lines[hook.body[0].lineno - 1]).group(0)
    new = [f"{indent}from .{module} import {cls}", f"{indent}{register}({cls})"]
    return "\n".join(lines[: hook.end_lineno] + new + lines[hook.end_lineno :]) + "\n"


def main(args: argparse.Namespace) -> int:
    try:
        if args.into is not None:
            written = add_to_package(args.name, args.kind, args.into, args.force)
        else:
            root = write_skeleton(args.name, args.kind, args.dir, args.force)
    except (ScaffoldError, OSError) as err:
        print(f"conduit new-stage: {err}", file=sys.stderr)
        return 2
    if args.into is not None:
        for path in written:
            print(f"wrote {path}")
        print(f"next:  pip install -e {args.into}   (again if it was not installed editable)   then   conduit stages")
        return 0
    print(f"wrote {root}/")
    print(f"next:  pip install -e {root}   then   conduit stages   (lists {args.name})   and   pytest {root}")
    return 0
