"""Spyral 1.1.2 in a virtual environment of its own (never the project's), for the optional Spyral benchmarks.

Spyral is GPL-3.0: the benchmarks *call* it in that environment, they never
copy it. ``spyral-utils`` 2.1.0 (its dependency) is an sdist whose CMake build
needs Eigen3; the pip-only route installs ``eigenpip`` (Eigen's headers) and
points CMake at them with a three-line ``Eigen3Config.cmake``. Needs python3.11
(Spyral: >= 3.10, < 3.13), g++ and cmake; about 2-3 minutes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

DEFAULT_VENV = Path("/tmp/spyral-venv")
SPYRAL_VERSION = "1.1.2"

_SHIM = """set(EIGEN3_INCLUDE_DIR "{include}")
set(EIGEN3_INCLUDE_DIRS "{include}")
if(NOT TARGET Eigen3::Eigen)
  add_library(Eigen3::Eigen INTERFACE IMPORTED)
  set_target_properties(Eigen3::Eigen PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "{include}")
endif()
"""


def spyral_version(python: Path) -> str | None:
    """The attpc-spyral version importable by ``python``, or None."""
    if not Path(python).exists():
        return None
    res = subprocess.run([str(python), "-c", "import importlib.metadata as m, spyral; print(m.version('attpc-spyral'))"],
                         capture_output=True, text=True)  # fmt: skip
    return res.stdout.strip() if res.returncode == 0 else None


def ensure_spyral_python(venv: Path = DEFAULT_VENV, version: str = SPYRAL_VERSION) -> Path:
    """The python of a venv where ``attpc-spyral==version`` imports, created and installed if needed."""
    python = venv / "bin" / "python"
    if spyral_version(python) == version:
        return python
    base = shutil.which("python3.11") or sys.executable
    if not python.exists():
        print(f"creating {venv} ({base})", file=sys.stderr)
        subprocess.run([base, "-m", "venv", str(venv)], check=True)
    pip = [str(python), "-m", "pip", "install", "--quiet"]
    subprocess.run(pip + ["eigenpip"], check=True)
    include = subprocess.run([str(python), "-c", "import eigenpip; print(eigenpip.get_include())"],
                             capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    shim = venv / "eigen3-shim"
    shim.mkdir(exist_ok=True)
    (shim / "Eigen3Config.cmake").write_text(_SHIM.format(include=include))
    print(f"installing attpc-spyral=={version} into {venv} (builds spyral-utils with Eigen3: a few minutes)",
          file=sys.stderr)  # fmt: skip
    env = dict(os.environ, SKBUILD_CMAKE_DEFINE=f"Eigen3_DIR={shim}")
    subprocess.run(pip + [f"attpc-spyral=={version}"], check=True, env=env)
    found = spyral_version(python)
    if found != version:
        raise RuntimeError(f"{python}: attpc-spyral {version} still not importable (found {found})")
    return python
