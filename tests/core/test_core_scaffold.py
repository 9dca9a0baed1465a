"""`conduit new-stage`: the skeleton installs with pip, is discovered, and its own tests (on conduit.testing) pass;
`--kind clusterer` gives a clusterer on the public API; `--into` adds a stage to an existing package."""

from __future__ import annotations

import shutil

import pytest

from conduit.commands.new_stage import class_name, write_skeleton
from conduit_test_support import REPO, pip_install, run_cli, run_pytest


def run_package_tests(root, env):
    tests = run_pytest(root / "tests", root, env)
    assert tests.returncode == 0, tests.stdout + tests.stderr
    return tests.stdout


@pytest.mark.parametrize("kind", ["transform", "sink", "clusterer"])
def test_new_stage_skeleton_installs_lists_and_passes_its_tests(tmp_path, kind):
    name = f"myexp.hit_count_{kind}"
    result = run_cli("new-stage", name, "--kind", kind, "--dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    root = tmp_path / f"conduit-myexp-hit-count-{kind}"
    assert (root / "pyproject.toml").exists() and (root / "src" / f"conduit_myexp_hit_count_{kind}" / "stage.py").exists()

    env = pip_install(root, tmp_path / "site")
    listing = run_cli("stages", env=env)
    shown = "transform" if kind == "clusterer" else kind
    assert f"{name}  [{shown}]  from plugin 'myexp_hit_count_{kind}'" in listing.stdout, listing.stdout
    if kind == "transform":
        assert "threshold: float = 100.0 (> 0)" in listing.stdout
    if kind == "clusterer":
        assert "requires: cloud    provides: clusters" in listing.stdout
        assert "link_distance: float = 8.0 (> 0)" in listing.stdout and "outlier_scale_factor" in listing.stdout
        text = (root / "src" / f"conduit_myexp_hit_count_{kind}" / "stage.py").read_text()
        assert "(Clusterer)" in text and "def labels(self, cloud" in text and "def process" not in text

    out = run_package_tests(root, env)
    assert f"{ {'transform': 3, 'sink': 2, 'clusterer': 2}[kind] } passed" in out, out
    if kind == "clusterer":  # its example pipeline runs with the clusterer in place of cluster.hdbscan
        run = run_cli("run", str(root / "pipeline.toml"), "--set", "source.events=4", env=env, timeout=300)
        assert run.returncode == 0, run.stderr[-2000:]
        assert name in run.stdout


def test_into_adds_a_stage_to_an_existing_package(tmp_path):
    root = write_skeleton("myexp.first", "transform", tmp_path)
    result = run_cli("new-stage", "myexp.chain", "--kind", "clusterer", "--into", str(root))
    assert result.returncode == 0, result.stderr
    package = root / "src" / "conduit_myexp_first"
    assert (package / "chain.py").exists() and (root / "tests" / "test_myexp_chain.py").exists()
    plugin = (package / "plugin.py").read_text()
    assert "    from .chain import MyexpChain\n    register(MyexpChain)\n" in plugin
    assert plugin.index("register(MyexpFirst)") < plugin.index("register(MyexpChain)")
    again = run_cli("new-stage", "myexp.chain", "--into", str(root))
    assert again.returncode == 2 and "chain.py already exists" in again.stderr

    env = pip_install(root, tmp_path / "site")
    listing = run_cli("stages", env=env)
    assert "myexp.first  [transform]  from plugin 'myexp_first'" in listing.stdout
    assert "myexp.chain  [transform]  from plugin 'myexp_first'" in listing.stdout
    assert "5 passed" in run_package_tests(root, env)  # the first stage's 3 tests and the clusterer's 2


def test_into_a_hand_written_package_and_into_something_else(tmp_path):
    copy = tmp_path / "e20009"
    shutil.copytree(REPO / "examples" / "conduit-e20009", copy, ignore=shutil.ignore_patterns("*.egg-info", "build"))
    result = run_cli("new-stage", "e20009.silicon", "--into", str(copy))
    assert result.returncode == 0, result.stderr
    plugin = (copy / "src" / "conduit_e20009" / "plugin.py").read_text()
    assert plugin.rstrip().endswith("    from .silicon import E20009Silicon\n    register(E20009Silicon)")
    env = pip_install(copy, tmp_path / "site")
    assert "e20009.silicon  [transform]  from plugin 'e20009'" in run_cli("stages", env=env).stdout

    for target, message in ((tmp_path / "nowhere", "pyproject.toml: no such file"),
                            (REPO / "benchmarks", "pyproject.toml: no such file")):
        bad = run_cli("new-stage", "x.y", "--into", str(target))
        assert bad.returncode == 2 and message in bad.stderr, bad.stderr
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "pyproject.toml").write_text('[project]\nname = "plain"\n')
    bad = run_cli("new-stage", "x.y", "--into", str(tmp_path / "plain"))
    assert bad.returncode == 2 and "no [project.entry-points.conduit] table" in bad.stderr


def test_new_stage_refuses_bad_names_and_existing_directories(tmp_path):
    bad = run_cli("new-stage", "My Stage", "--dir", str(tmp_path))
    assert bad.returncode == 2 and "dotted lower-case" in bad.stderr
    write_skeleton("a.b", "transform", tmp_path)
    again = run_cli("new-stage", "a.b", "--dir", str(tmp_path))
    assert again.returncode == 2 and "already exists" in again.stderr
    assert class_name("myexp.hit_count") == "MyexpHitCount"
