"""The files ``conduit new-stage`` writes: string templates filled with the stage's names.

Placeholders: ``$name`` (dotted stage name), ``$dist`` (distribution), ``$package`` (import package),
``$module`` (the stage's module in it), ``$entry`` (entry-point name), ``$cls`` (class name),
``$artifact`` (what a transform provides), ``$dependencies`` (the pyproject list).
"""

from __future__ import annotations

from string import Template

PYPROJECT = Template('''\
[build-system]
requires = ["setuptools>=69"]
build-backend = "setuptools.build_meta"

[project]
name = "$dist"
version = "0.1.0"
description = "The $name stage for attpc-conduit"
requires-python = ">=3.11"
dependencies = $dependencies

[project.optional-dependencies]
test = ["pytest"]

# This line is what makes `conduit` find the stage: group "conduit", any unique name.
[project.entry-points.conduit]
$entry = "$package.plugin"

[tool.setuptools.packages.find]
where = ["src"]
''')

PLUGIN = Template('''\
"""Registers the stages of this package with attpc-conduit (keep this module light: `conduit --help` loads it)."""

from conduit import hookimpl


@hookimpl
def conduit_register_stages(register):
    from .$module import $cls

    register($cls)
''')

TRANSFORM = Template('''\
"""The $name stage."""

from __future__ import annotations

import numpy as np

from conduit import Params, TransformStage, param
from conduit.event import SAMPLES


class ${cls}Params(Params):
    """Parameters of $name (validated from its [[stage]] table)."""

    threshold: float = param(100.0, "pulse height above the trace median that counts as a hit (ADC)", gt=0)


class $cls(TransformStage):
    """Counts the pads whose pulse height exceeds a threshold (replace with your analysis)."""

    name = "$name"
    requires = ("traces",)
    provides = ("$artifact",)
    Params = ${cls}Params

    def process(self, event) -> None:
        samples = event.traces[:, SAMPLES].astype(np.float32)
        height = samples.max(axis=1) - np.median(samples, axis=1)
        hit = height > self.params.threshold
        event.artifacts["$artifact"] = {
            "hit_pads": int(hit.sum()),
            "max_height": float(height.max()) if len(height) else 0.0,
        }
''')

SINK = Template('''\
"""The $name stage."""

from __future__ import annotations

from conduit import Params, SinkStage, param


class ${cls}Params(Params):
    """Parameters of $name (validated from its [[stage]] table)."""

    path: str = param("out/${artifact}_{run:04d}.csv", "output file (template with {run})")


class $cls(SinkStage):
    """Writes one line per event: id, number of traces, analysed flag (replace with your output)."""

    name = "$name"
    Params = ${cls}Params

    def open(self) -> None:
        self.path = self.context.format_path(self.params.path)
        self.claim = self.context.claim_output(self.path)  # one run per file; nothing is written yet
        self.file = None

    def begin(self) -> None:
        self.claim.make_room()  # a file already there is kept under a numbered name
        self.file = open(self.path, "w")
        self.file.write("event,n_traces,analysed\\n")

    def consume(self, event) -> None:
        self.file.write(f"{event.id},{event.n_traces},{int(event.analysed)}\\n")

    def close(self) -> None:
        if self.file is not None:  # None when the run never began: leave the path as it was
            self.file.close()
        self.claim.release()

    def outputs(self) -> list[str]:
        return [str(self.path)] if self.file is not None else []
''')

TEST_TRANSFORM = Template('''\
import numpy as np

from conduit import Event, RunContext
from conduit.testing import check_stage
from $package.$module import $cls


def make_event():
    traces = np.zeros((3, 517), dtype=np.int16)
    traces[:, 5:] = 400                # pedestal
    traces[0, 5 + 200] = 400 + 500     # one clear pulse
    traces[1, 5 + 100] = 400 + 50      # below threshold
    return Event(id=1, traces=traces)


def test_counts_pads_above_threshold():
    stage = $cls($cls.Params(threshold=100.0), RunContext())
    event = make_event()
    stage.process(event)
    assert event.artifacts["$artifact"] == {"hit_pads": 1, "max_height": 500.0}


def test_parameters_are_validated():
    import pytest
    from conduit import ParamError

    with pytest.raises(ParamError):
        $cls.Params.from_mapping({"threshold": -1})


def test_keeps_the_stage_contract():
    # conduit.testing: parameters, pickling for worker processes, artifacts on simulated events, warm-up
    check_stage($cls)
''')

TEST_SINK = Template('''\
import numpy as np

from conduit import Event, RunContext
from conduit.testing import check_stage
from $package.$module import $cls


def test_writes_one_line_per_event(tmp_path):
    stage = $cls($cls.Params(path=str(tmp_path / "out_{run}.csv")), RunContext(run=3))
    stage.open()
    stage.begin()
    stage.consume(Event(id=5, traces=np.zeros((2, 517), dtype=np.int16)))
    stage.close()
    assert (tmp_path / "out_3.csv").read_text().splitlines() == ["event,n_traces,analysed", "5,2,0"]


def test_keeps_the_stage_contract(tmp_path):
    # conduit.testing: parameters, then open/begin/consume/close on simulated events
    check_stage($cls, base_dir=tmp_path)
''')

PIPELINE = Template('''\
# Example pipeline using $name: `conduit run pipeline.toml`
[source]
kind = "simulate"
events = 20

[[stage]]
use = "$name"
''')

PIPELINE_CLUSTERER = Template('''\
# Example pipeline using $name in place of cluster.hdbscan: `conduit run pipeline.toml`
# (in any pipeline: `conduit run other.toml --set stage.2.use=$name`)
[source]
kind = "simulate"
events = 20

[[stage]]
use = "pointcloud"

[[stage]]
use = "$name"

[[stage]]
use = "estimate"
''')

README = Template('''\
# $dist

The `$name` stage for [attpc-conduit](https://github.com/).

    pip install -e .            # conduit finds the stage through its entry point
    conduit stages              # lists $name with its parameters
    conduit run pipeline.toml   # try it on simulated events
    pytest                      # the stage's tests

Edit `src/$package/$module.py`: the class attributes say what the stage needs
(`requires`), what it adds to the event (`provides`) and its parameters
(`Params`); `process(event)` does the work for one event. See the plugin
author guide in attpc-conduit's docs/writing-a-plugin.md.
''')

CLUSTERER = Template('''\
"""The $name clusterer: give each cloud point a label; conduit_physics.clustering.Clusterer does the rest."""

from __future__ import annotations

import numpy as np
from conduit import param
from conduit_physics.clustering import Clusterer, ClusterParams, scaled_features


class ${cls}Params(ClusterParams):
    """Parameters of $name: its own, then (inherited) the size cut, LOF cleaning, direction and joining."""

    link_distance: float = param(8.0, "points closer than this are linked (mm, in x, y, z * z_scale)", gt=0)
    min_cluster_size: int = param(15, "smaller groups of linked points are noise (points)", ge=2)


class $cls(Clusterer):
    """Groups of points linked by neighbours closer than link_distance (replace with your algorithm)."""

    name = "$name"
    Params = ${cls}Params

    def labels(self, cloud: np.ndarray) -> np.ndarray:
        """One integer per cloud row, -1 for noise (cloud: (N, 8), x y z in mm, rows sorted by z)."""
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components
        from scipy.spatial import cKDTree

        features = scaled_features(cloud, self.params.z_scale)   # x, y, z * z_scale (mm)
        n = len(features)
        pairs = cKDTree(features).query_pairs(self.params.link_distance, output_type="ndarray")
        graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
        _, group = connected_components(graph, directed=False)
        size = np.bincount(group)[group]
        return np.where(size >= self.params.min_cluster_size, group, -1)
''')

TEST_CLUSTERER = Template('''\
from conduit.testing import check_stage, make_events, run_stages
from $package.$module import $cls


def test_keeps_the_stage_contract():
    # conduit.testing: parameters, pickling for worker processes, the clusters artifact on simulated
    # events (one label per cloud point), warm-up
    check_stage($cls)


def test_gives_tracks_between_pointcloud_and_estimate():
    events = make_events(5, "default", seed=1)   # realistic simulated events (4 with a cloud to cluster)
    done = run_stages(["pointcloud", $cls, "estimate"], events)
    # cluster.hdbscan finds 6 clusters and 4 tracks in these events
    assert sum(e.artifacts["clusters"].count for e in done) >= 4
    assert sum(len(e.artifacts["estimates"]) for e in done) >= 3
''')
