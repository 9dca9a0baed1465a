"""The shipped kinematics pipeline, run as a user runs it: simulated 10Be(d,p), worker processes, HDF5 and .rrd."""

from __future__ import annotations

import os
import sys

import h5py
import numpy as np
import pytest

from conduit.artifacts import KINEMATICS_STATUS
from conduit_test_support import REPO, run_cli_until_done

sys.path.insert(0, str(REPO / "tests" / "sinks"))
from rrd_read import blueprints, read_rrd  # noqa: E402

pytestmark = pytest.mark.slow


def test_kinematics_pipeline_records_a_row_per_track_and_draws_the_curves(tmp_path):
    h5, rrd, truth = tmp_path / "k.h5", tmp_path / "k.rrd", tmp_path / "truth.h5"
    env = {"NUMBA_CACHE_DIR": os.environ.get("NUMBA_CACHE_DIR", str(REPO / ".numba-cache"))}
    # Until it ends, not for a set time: on a fresh clone the numba cache is cold and each of the 2 workers
    # compiles the whole chain (2 min of CPU in all; 7 min of wall time at load 14 on 2 CPUs).
    result = run_cli_until_done("run", str(REPO / "pipelines" / "kinematics-dp.toml"), "--set", "source.events=16",
                                "--set", "engine.workers=2", "--set", f"hdf5.path='{h5}'",
                                "--set", f"rerun.path='{rrd}'", "--set", f"source.truth='{truth}'", env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "kinematics" in result.stderr  # its row in the summary's stage table
    with h5py.File(h5, "r") as f:
        estimates = f["estimates"][...]
        rows = f["kinematics"][...]
        ex_hist = f["histograms/excitation"]
        entries, outside = int(ex_hist.attrs["entries"]), int(ex_hist.attrs["outside"])
    # one kinematics row per estimate row, same events and clusters, in the same order
    assert len(rows) == len(estimates) > 10
    np.testing.assert_array_equal(rows["event"], estimates["event"])
    np.testing.assert_array_equal(rows["cluster_index"], estimates["cluster_index"])
    status = [KINEMATICS_STATUS[s] for s in rows["status"]]
    assert set(status) <= {"ok", "no_hypothesis"}
    ok = rows["status"] == 0
    assert ok.sum() >= 8
    assert np.all(rows["ejectile_A"][ok] == 1) and np.all(rows["hypothesis"][ok] == 0)
    assert np.all(np.isnan(rows["excitation"][~ok]))
    assert entries + outside == len(rows)  # every row counted in the excitation histogram, inside or outside
    assert entries == int(np.sum(ok & (rows["excitation"] >= -2.0) & (rows["excitation"] < 4.0)))
    # the tracks outside the proton gate are the heavy 11Be residuals: high sqrt(dE/dx) for their B-rho
    heavy = ~ok
    if heavy.any():
        assert np.all(estimates["sqrt_dEdx"][heavy] * estimates["brho"][heavy] > 16.0)
    # the viewer: the excitation histograms, and the two 11Be states' curves drawn inside the kinematics
    # figure's frame (x = polar angle, y = B-rho), labelled, at the place of their data
    recorded = read_rrd(rrd)
    for name in ("excitation", "excitation_vs_theta_cm", "kinematics"):
        assert any(k.startswith(f"/histograms/{name}/") for k in recorded), name
    labels = {}
    for entity, entries_ in recorded.items():
        if entity.startswith("/histograms/kinematics/curves/") and not entity.endswith("_label"):
            labels[entries_[-1]["LineStrips2D:labels"][0]] = np.array(entries_[-1]["LineStrips2D:strips"][0])
    assert sorted(labels) == ["11Be(0 MeV) p", "11Be(0.32 MeV) p"]
    box = np.array(recorded["/histograms/kinematics/axes/box"][-1]["LineStrips2D:strips"][0])
    (left, top), (right, bottom) = box.min(axis=0), box.max(axis=0)
    for strip in labels.values():
        assert len(strip) > 20
        assert np.all((strip[:, 0] >= left) & (strip[:, 0] <= right) & (strip[:, 1] >= top) & (strip[:, 1] <= bottom))
    # the ground state reaches a higher B-rho (a smaller view y) than the excited state
    assert labels["11Be(0 MeV) p"][:, 1].min() < labels["11Be(0.32 MeV) p"][:, 1].min()
    assert blueprints(rrd)
