"""`conduit batch` on a real Dask LocalCluster over simulated runs."""

from __future__ import annotations

import textwrap

import h5py
import numpy as np
import pytest

from conduit_test_support import run_cli

pytest.importorskip("distributed")

PIPELINE = """
[source]
kind = "hdf5"
path = "data/run_{run:04d}.h5"

[[stage]]
use = "pointcloud"

[[stage]]
use = "histogram"
defaults = false
[[stage.histograms]]
name = "traces"
x = "n_traces"
x_bins = 50
x_range = [0.0, 2000.0]

[[stage]]
use = "hdf5"
path = "out/analysed_{run:04d}.h5"
traces = false
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("batch")
    data = root / "data"
    data.mkdir()
    for run in (1, 2, 3):
        result = run_cli("simulate", "hdf5", "--out", str(data / f"run_{run:04d}.h5"), "--events", "3",
                         "--seed", str(run), "-q")
        assert result.returncode == 0, result.stderr
    (data / "run_0004.h5").write_bytes(b"this is not an HDF5 file\n" * 100)  # a corrupt run
    (root / "batch.toml").write_text(textwrap.dedent(PIPELINE))
    return root


def datasets(path):
    out = {}
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                out[name] = obj[...]
        f.visititems(visit)
    return out


def test_batch_processes_runs_reports_the_corrupt_one_and_resumes(runs):
    first = run_cli("batch", str(runs / "batch.toml"), "--runs", "1-5", "--local-workers", "2", timeout=600)
    out = first.stdout
    assert first.returncode == 1, first.stdout + first.stderr
    assert "run 0005: no input at" in out
    for run in (1, 2, 3):
        assert f"run {run:04d}: 3 events in" in out
        assert (runs / "out" / f"analysed_{run:04d}.h5").exists()
    assert "run 0004 FAILED (after one retry)" in out and "run_0004.h5" in out
    assert "done: 3 runs processed, 0 already complete, 1 failed, 1 missing" in out

    merged = runs / ".conduit-batch" / "batch" / "histograms_merged.h5"
    assert "histograms of 3 runs summed" in out
    with h5py.File(merged, "r") as f:
        total = f["histograms/traces/counts"][...].sum() + f["histograms/traces"].attrs["outside"]
        assert total == 9  # 3 events in each of 3 runs

    # A second invocation skips the finished runs and only retries the failed one.
    second = run_cli("batch", str(runs / "batch.toml"), "--runs", "1-4", "--local-workers", "1", timeout=600)
    for run in (1, 2, 3):
        assert f"run {run:04d}: already complete" in second.stdout
    assert "done: 0 runs processed, 3 already complete, 1 failed" in second.stdout


def test_batch_result_equals_a_plain_run_of_the_same_run(runs, tmp_path):
    batch = run_cli("batch", str(runs / "batch.toml"), "--runs", "2", "--local-workers", "1", "--force",
                    "--state", str(tmp_path / "state"), timeout=600)
    assert batch.returncode == 0, batch.stdout + batch.stderr
    alone = run_cli("run", str(runs / "batch.toml"), "--set", 'source.path="data/run_0002.h5"',
                    "--set", 'hdf5.path="alone/analysed_{run:04d}.h5"', cwd=runs)
    assert alone.returncode == 0, alone.stderr
    # --set paths are relative to the current directory (runs/), the hdf5 sink's to the pipeline file (runs/)
    a = datasets(runs / "out" / "analysed_0002.h5")
    b = datasets(runs / "alone" / "analysed_0002.h5")
    assert a.keys() == b.keys() and any(k.startswith("cloud/") for k in a)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
