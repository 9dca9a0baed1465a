"""The example experiment package: pip-installed on its own, discovered, and its pipeline run end to end.

The core is not touched: the package brings an ion-chamber stage that reads
the FRIB SIS3300 traces merged files carry, and a different clusterer.
"""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from conduit_test_support import REPO, pip_install, run_cli, run_pytest

EXAMPLE = REPO / "examples" / "conduit-e20009"


def ic_trace(n=2048, peak=1300, height=1500.0, pedestal=300.0):
    t = np.arange(n)
    data = np.zeros((n, 8), dtype=np.uint16)
    data[:, 0] = np.round(pedestal + height * np.exp(-0.5 * ((t - peak) / 6.0) ** 2)).astype(np.uint16)
    return data


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The example installed with pip into its own site directory (not the project's)."""
    return pip_install(EXAMPLE, tmp_path_factory.mktemp("site"))


@pytest.fixture(scope="module")
def merged_file_with_frib(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    path = root / "run_0001.h5"
    result = run_cli("simulate", "hdf5", "--out", str(path), "--events", "6", "--seed", "3", "-q")
    assert result.returncode == 0, result.stderr
    heights = {}
    with h5py.File(path, "a") as f:
        for n, name in enumerate(sorted(f["events"], key=lambda s: int(s.split("_")[1]))):
            physics = f["events"][name].create_group("frib_physics")
            height = 600.0 + 200.0 * n  # event 0..5: 600..1600 ADC
            physics.create_dataset("1903", data=ic_trace(height=height))
            physics.create_dataset("977", data=np.array([1], dtype=np.uint16))
            heights[int(f["events"][name]["get_traces"].attrs["id"])] = height
    return path, heights


def test_example_stages_are_discovered_once_installed(installed):
    listing = run_cli("stages", env=installed)
    assert "e20009.ion_chamber  [transform]  from plugin 'e20009'" in listing.stdout
    assert "cluster.linkage  [transform]  from plugin 'e20009'" in listing.stdout
    assert "requires: frib    provides: ion_chamber" in listing.stdout
    without = run_cli("stages")
    assert "e20009.ion_chamber" not in without.stdout  # only where the package is installed


def test_example_unit_tests_pass(installed):
    result = run_pytest(EXAMPLE / "tests", EXAMPLE, installed)
    assert result.returncode == 0, result.stdout + result.stderr


def test_example_pipeline_runs_with_the_experiment_stages(installed, merged_file_with_frib, tmp_path):
    path, heights = merged_file_with_frib
    result = run_cli("run", str(EXAMPLE / "pipelines" / "e20009.toml"), "--set", f"source.path={path}",
                     "--set", f'hdf5.path="{tmp_path}/e20009_{{run:04d}}.h5"', env=installed, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "e20009.ion_chamber" in result.stdout and "cluster.linkage" in result.stdout
    with h5py.File(tmp_path / "e20009_0001.h5", "r") as f:
        clouds = f["cloud"]
        assert len(clouds) == 6
        for name in clouds:
            attrs = clouds[name].attrs
            event_id = int(attrs["orig_event"])
            # The IC amplitude the experiment's stage found, recorded where Spyral keeps it.
            assert attrs["ic_amplitude"] == pytest.approx(heights[event_id], abs=3.0)
            assert attrs["ic_centroid"] == 1300.0 and attrs["ic_multiplicity"] == 1
        # The linkage clusterer's clusters went on to the estimator.
        assert sum(f["cluster"][e].attrs["nclusters"] for e in f["cluster"]) >= 6
        assert len(f["estimates"]) >= 3


def test_swapping_the_clusterer_is_one_line(installed, merged_file_with_frib, tmp_path):
    path, _ = merged_file_with_frib
    text = (EXAMPLE / "pipelines" / "e20009.toml").read_text()
    assert text.count('use = "cluster.linkage"') == 1
    swapped = tmp_path / "swapped.toml"
    swapped.write_text(text.replace('use = "cluster.linkage"', 'use = "cluster.hdbscan"'))
    result = run_cli("check", str(swapped), "--set", f"source.path={path}", env=installed)
    assert result.returncode == 0 and "cluster.hdbscan" in result.stdout
