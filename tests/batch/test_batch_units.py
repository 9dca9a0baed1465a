"""Batch building blocks: run lists, the plan over a path template, manifests, histogram sums."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from conduit_batch.histmerge import merge_run_histograms
from conduit_batch.runs import parse_runs
from conduit_batch.state import Manifests


def test_parse_runs():
    assert parse_runs("1-3,7, 5-5,2") == [1, 2, 3, 5, 7]
    for bad in ("", "a-3", "5-2", "-3"):
        with pytest.raises(ValueError):
            parse_runs(bad)


def write_hist_file(path, counts_2d, counts_1d, events, edges=np.linspace(0, 1, 4)):
    with h5py.File(path, "w") as f:
        g = f.create_group("histograms")
        g.attrs["events"] = events
        g.attrs["format"] = "conduit-histograms:1"
        h = g.create_group("pid")
        h.attrs["entries"] = int(counts_2d.sum())
        h.attrs["outside"] = 1
        h.attrs["x"] = "brho"
        h.create_dataset("counts", data=counts_2d)
        h.create_dataset("x_edges", data=edges)
        h.create_dataset("y_edges", data=edges)
        k = g.create_group("polar")
        k.attrs["entries"] = int(counts_1d.sum())
        k.attrs["outside"] = 0
        k.attrs["x"] = "polar"
        k.create_dataset("counts", data=counts_1d)
        k.create_dataset("x_edges", data=edges)
        g.create_group("gates")


def test_histograms_of_runs_are_summed_and_mismatches_left_out(tmp_path):
    manifests = Manifests(tmp_path / "state", "fp")
    rng = np.random.default_rng(1)
    expected_2d = np.zeros((3, 3), np.int64)
    expected_1d = np.zeros(3, np.int64)
    for run in (1, 2, 3):
        c2 = rng.integers(0, 10, (3, 3))
        c1 = rng.integers(0, 10, 3)
        expected_2d += c2
        expected_1d += c1
        write_hist_file(tmp_path / f"run_{run}.h5", c2, c1, events=10 * run)
        manifests.record({"run": run, "outputs": [str(tmp_path / f"run_{run}.h5")], "received": 1})
    # run 4 has a different binning: reported and not added
    write_hist_file(tmp_path / "run_4.h5", np.ones((3, 3), np.int64), np.ones(3, np.int64), 5,
                    edges=np.linspace(0, 2, 4))
    manifests.record({"run": 4, "outputs": [str(tmp_path / "run_4.h5")], "received": 1})
    target = tmp_path / "merged.h5"
    assert merge_run_histograms(manifests, [1, 2, 3, 4], target) == 3
    with h5py.File(target, "r") as f:
        assert list(f.attrs["runs"]) == [1, 2, 3]
        assert f["histograms"].attrs["events"] == 60
        np.testing.assert_array_equal(f["histograms/pid/counts"][...], expected_2d)
        np.testing.assert_array_equal(f["histograms/polar/counts"][...], expected_1d)
        assert f["histograms/pid"].attrs["entries"] == expected_2d.sum()
        assert f["histograms/pid"].attrs["outside"] == 3


def test_manifest_marks_complete_only_with_same_pipeline_and_existing_outputs(tmp_path):
    out = tmp_path / "run_0001.h5"
    out.write_bytes(b"x")
    m = Manifests(tmp_path / "state", "abc")
    assert not m.is_complete(1)
    m.record({"run": 1, "outputs": [str(out)], "received": 3})
    assert m.is_complete(1)
    assert json.loads(m.path(1).read_text())["fingerprint"] == "abc"
    assert not Manifests(tmp_path / "state", "changed").is_complete(1)
    out.unlink()
    assert not m.is_complete(1)
