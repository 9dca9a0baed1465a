"""`conduit new-stage`: the skeleton installs with pip, is discovered, and its own tests pass."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conduit.commands.new_stage import class_name, write_skeleton
from conduit_test_support import run_cli


def pip_install_target(package_dir, site) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(site), str(package_dir)],
        check=True, capture_output=True, text=True,
    )


@pytest.mark.parametrize("kind", ["transform", "sink"])
def test_new_stage_skeleton_installs_lists_and_passes_its_tests(tmp_path, kind):
    name = f"myexp.hit_count_{kind}"
    result = run_cli("new-stage", name, "--kind", kind, "--dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    root = tmp_path / f"conduit-myexp-hit-count-{kind}"
    assert (root / "pyproject.toml").exists() and (root / "src" / f"conduit_myexp_hit_count_{kind}" / "stage.py").exists()

    site = tmp_path / "site"
    pip_install_target(root, site)
    env = {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    listing = run_cli("stages", env=env)
    assert f"{name}  [{kind}]  from plugin 'myexp_hit_count_{kind}'" in listing.stdout, listing.stdout
    if kind == "transform":
        assert "threshold: float = 100.0 (> 0)" in listing.stdout

    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(root / "tests")],
                           cwd=root, env={**os.environ, **env}, capture_output=True, text=True)
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert " passed" in tests.stdout


def test_new_stage_refuses_bad_names_and_existing_directories(tmp_path):
    bad = run_cli("new-stage", "My Stage", "--dir", str(tmp_path))
    assert bad.returncode == 2 and "dotted lower-case" in bad.stderr
    write_skeleton("a.b", "transform", tmp_path)
    again = run_cli("new-stage", "a.b", "--dir", str(tmp_path))
    assert again.returncode == 2 and "already exists" in again.stderr
    assert class_name("myexp.hit_count") == "MyexpHitCount"
