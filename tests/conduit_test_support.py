"""Helpers shared by the test suite (importable as `conduit_test_support`)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
TESTKIT = REPO / "tests" / "core" / "testkit"


def pip_install(package_dir: Path, site: Path) -> dict[str, str]:
    """pip-install a package directory into its own ``site`` directory (not the project's venv); return the
    environment (``PYTHONPATH``) under which ``conduit`` and ``pytest`` subprocesses see it."""
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(site), str(package_dir)], check=True, capture_output=True, text=True)
    return {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}


def run_pytest(tests: Path, cwd: Path, env: dict | None = None, timeout: float = 600):
    """Run pytest on ``tests`` in a subprocess (a plugin package's own tests); return the CompletedProcess."""
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tests)],
                          cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=timeout)


def install_plugin_dist(site: Path, dist_name: str, module_file: Path, entry_points: dict[str, str]) -> None:
    """Install a one-module distribution into ``site`` the way pip would lay it out.

    A ``.dist-info`` directory with METADATA and entry_points.txt makes
    importlib.metadata (and so conduit's discovery) see a real installed
    distribution once ``site`` is on sys.path.
    """
    site.mkdir(parents=True, exist_ok=True)
    shutil.copy(module_file, site / module_file.name)
    info = site / f"{dist_name.replace('-', '_')}-0.1.0.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist_name}\nVersion: 0.1.0\n")
    lines = ["[conduit]"] + [f"{name} = {target}" for name, target in entry_points.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    (info / "RECORD").write_text("")


@contextlib.contextmanager
def installed_testkit(site: Path, dist_name: str, module: str, plugin: str):
    """The testkit module ``module`` installed into ``site`` as the distribution ``dist_name`` (plugin name
    ``plugin``) while the block runs: the registry sees it, and the module is forgotten afterwards."""
    from conduit.plugins import get_registry

    install_plugin_dist(site, dist_name, TESTKIT / f"{module}.py", {plugin: module})
    get_registry(refresh=True)
    try:
        yield site
    finally:
        sys.modules.pop(module, None)


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 120):
    """Run the installed ``conduit`` console script; return the CompletedProcess."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run(
        [str(VENV_BIN / "conduit"), *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def read_collected(path: str | Path) -> tuple[list[dict], bool]:
    """(records, closed) from the testkit collect sink's JSON-lines file (reset markers skipped)."""
    records, closed = [], False
    for line in Path(path).read_text().splitlines():
        value = json.loads(line)
        if value == "closed":
            closed = True
        elif isinstance(value, dict):
            records.append(value)
    return records, closed


def pipeline_from_tables(tmp_path: Path, source: str, stages: str, engine: str = "workers = 0"):
    """A pipeline file ``pipe.toml`` in ``tmp_path`` from [source] and [engine] lines and [[stage]] tables, loaded."""
    import textwrap

    from conduit.config.pipeline import load_pipeline

    text = f"[source]\n{source}\n\n[engine]\n{engine}\n\n{textwrap.dedent(stages)}"
    path = tmp_path / "pipe.toml"
    path.write_text(text)
    return load_pipeline(path)
