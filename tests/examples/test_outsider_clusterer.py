"""The decisive test of the clustering API: a clusterer written from docs/writing-a-plugin.md alone.

The package below was written from the guide only (sections 2, 5 and 8): a
mutual k-nearest-neighbour graph clusterer, an algorithm none of the built-in
clusterers uses. The test writes it to a temporary directory, pip-installs it
(as an experiment would), swaps it into a pipeline from the command line
(``--set stage.2.use=outsider.knn``), runs it on simulated events with a truth
file, and scores its tracks against the truth: cluster purity and efficiency
per particle, and the estimated polar angle and B-rho of the tracks.

Thresholds: the same events through ``cluster.hdbscan`` are the reference; the
outsider's clusterer must do about as well. Measured on these 30 events (seed
17): 29 ejectiles leave at least 30 cloud points; both clusterers reconstruct
all 29 well; the outsider's medians are purity 1.00, efficiency 1.00, polar
error -0.08 deg, B-rho error -1.4 %, vertex z error -0.9 mm. The thresholds
below leave room for changes of the simulator or the post-processing, and fail
on a clusterer that merges tracks or loses their directions.
"""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from conduit_test_support import pip_install, run_cli

pytestmark = pytest.mark.slow

EVENTS, SEED = 30, 17

PYPROJECT = """\
[build-system]
requires = ["setuptools>=69"]
build-backend = "setuptools.build_meta"

[project]
name = "outsider-knn"
version = "0.1.0"
requires-python = ">=3.11"
dependencies = ["attpc-conduit", "numpy", "scipy"]

[project.entry-points.conduit]
outsider_knn = "outsider_knn.plugin"

[tool.setuptools.packages.find]
where = ["src"]
"""

PLUGIN = '''\
from conduit import hookimpl


@hookimpl
def conduit_register_stages(register):
    from .stage import MutualKnnClusterer

    register(MutualKnnClusterer)
'''

STAGE = '''\
"""Mutual k-nearest-neighbour graph clustering.

Two points are linked when each is among the other's k nearest neighbours and
they are closer than max_link (in x, y, z * z_scale); clusters are the connected
groups of linked points. A point on a track has its nearest neighbours along the
track, so tracks stay apart where they only pass near each other.
"""

import numpy as np
from conduit import param
from conduit_physics.clustering import Clusterer, ClusterParams, scaled_features


class MutualKnnParams(ClusterParams):
    k: int = param(6, "neighbours each point considers (points)", ge=1)
    max_link: float = param(15.0, "longest link (mm, in x, y, z * z_scale)", gt=0)
    min_size: int = param(12, "smaller groups are noise (points)", ge=2)


class MutualKnnClusterer(Clusterer):
    """Connected groups of the mutual k-nearest-neighbour graph."""

    name = "outsider.knn"
    Params = MutualKnnParams

    def labels(self, cloud):
        from scipy.sparse import csr_matrix
        from scipy.sparse.csgraph import connected_components
        from scipy.spatial import cKDTree

        points = scaled_features(cloud, self.params.z_scale)
        n = len(points)
        k = min(self.params.k, n - 1)
        dist, near = cKDTree(points).query(points, k=k + 1)
        dist, near = dist[:, 1:], near[:, 1:]            # drop each point itself
        rows = np.repeat(np.arange(n), k)
        cols = near.ravel()
        close = dist.ravel() < self.params.max_link
        knn = csr_matrix((close.astype(np.int8), (rows, cols)), shape=(n, n))
        mutual = knn.multiply(knn.T)                      # both directions present
        _, group = connected_components(mutual, directed=False)
        size = np.bincount(group)[group]
        return np.where(size >= self.params.min_size, group, -1)
'''

PIPELINE = """\
[source]
kind = "simulate"
events = {events}
seed = {seed}
truth = "truth.h5"

[[stage]]
use = "pointcloud"

[[stage]]
use = "cluster.hdbscan"

[[stage]]
use = "estimate"

[[stage]]
use = "hdf5"
path = "run_{{run:04d}}.h5"
"""


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    """The outsider's package, written and pip-installed into its own site directory."""
    root = tmp_path_factory.mktemp("outsider-knn")
    files = {"pyproject.toml": PYPROJECT, "src/outsider_knn/__init__.py": "",
             "src/outsider_knn/plugin.py": PLUGIN, "src/outsider_knn/stage.py": STAGE}
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return pip_install(root, tmp_path_factory.mktemp("site"))


def run(tmp_path, env, *swap):
    (tmp_path / "pipeline.toml").write_text(PIPELINE.format(events=EVENTS, seed=SEED))
    result = run_cli("run", str(tmp_path / "pipeline.toml"), *swap, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def owners(cloud, contributions):
    """Truth particle of every cloud point: the one that put most charge on its pad (-1: none)."""
    best: dict[int, tuple[float, int]] = {}
    for row in contributions:
        if row["particle"] >= 0 and row["charge"] > best.get(int(row["pad"]), (0.0, -1))[0]:
            best[int(row["pad"])] = (float(row["charge"]), int(row["particle"]))
    return np.array([best.get(int(pad), (0.0, -1))[1] for pad in cloud[:, 5]], dtype=np.int64)


def score(directory):
    """Per truth ejectile with >= 30 cloud points: (purity, efficiency of its best cluster, its estimate or None)."""
    out = []
    with h5py.File(directory / "run_0000.h5", "r") as f, h5py.File(directory / "truth.h5", "r") as truth:
        estimates = f["estimates"][()]
        assert len(f["cloud"]) == EVENTS
        for name in f["cloud"]:
            cloud = f["cloud"][name][()]
            event = int(f["cloud"][name].attrs["orig_event"])
            t = truth["events"][f"event_{event}"]
            owner = owners(cloud, t["contributions"][()])
            labels = np.full(len(cloud), -1)
            group = f["cluster"].get(f"event_{event}")
            for k in range(int(group.attrs["nclusters"]) if group is not None else 0):
                z = group[f"cluster_{k}"]["cloud"][:, 2]
                rows = np.searchsorted(cloud[:, 2], z)
                assert np.array_equal(cloud[rows, 2], z)  # z is strictly increasing: rows are found exactly
                labels[rows] = k
            particles = t["particles"][()]
            for index, particle in enumerate(particles):
                mine = owner == index
                if particle["role"] != b"ejectile" or mine.sum() < 30:
                    continue
                ks, counts = np.unique(labels[mine & (labels >= 0)], return_counts=True)
                if len(ks) == 0:
                    out.append((0.0, 0.0, None, particle))
                    continue
                k = int(ks[np.argmax(counts)])
                purity = float(np.mean(owner[labels == k] == index))
                efficiency = float(counts.max() / mine.sum())
                rows = estimates[(estimates["event"] == event) & (estimates["cluster_index"] == k)]
                out.append((purity, efficiency, rows[0] if len(rows) else None, particle))
    return out


def well_reconstructed(results):
    return [(est, part) for purity, eff, est, part in results if est is not None and purity >= 0.9 and eff >= 0.5]


def test_a_clusterer_written_from_the_guide_gives_tracks_that_score_against_truth(package, tmp_path):
    listing = run_cli("stages", env=package)
    assert "outsider.knn  [transform]  from plugin 'outsider_knn'" in listing.stdout, listing.stdout

    mine_dir, reference_dir = tmp_path / "knn", tmp_path / "hdbscan"
    mine_dir.mkdir()
    reference_dir.mkdir()
    swapped = run(mine_dir, package, "--set", "stage.2.use=outsider.knn")
    assert "outsider.knn" in swapped.stdout
    run(reference_dir, package)

    mine, reference = score(mine_dir), score(reference_dir)
    good, good_reference = well_reconstructed(mine), well_reconstructed(reference)
    print(f"ejectiles with >= 30 points: {len(mine)}; well reconstructed: outsider.knn {len(good)}, "
          f"cluster.hdbscan {len(good_reference)}")
    assert len(mine) == len(reference) >= 20  # the same particles: the truth does not depend on the clusterer
    # The clusters: most visible ejectiles get a pure cluster holding most of their points.
    assert np.median([p for p, _, _, _ in mine]) >= 0.95
    assert np.median([e for _, e, _, _ in mine]) >= 0.85
    # The tracks: at least 80 % of the visible ejectiles well reconstructed, and within 10 % of hdbscan.
    assert len(good) >= 0.8 * len(mine)
    assert len(good) >= 0.9 * len(good_reference)
    polar = np.degrees([est["polar"] - part["polar"] for est, part in good])
    brho = np.array([100.0 * (est["brho"] / part["brho"] - 1.0) for est, part in good])
    vertex_z = np.array([est["vertex_z"] - part["z"] for est, part in good])
    assert abs(np.median(polar)) < 2.0  # degrees
    assert abs(np.median(brho)) < 5.0  # percent
    assert abs(np.median(vertex_z)) < 10.0  # mm
