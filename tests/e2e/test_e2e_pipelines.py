"""The shipped pipelines stay valid as the stages evolve."""

from __future__ import annotations

import pytest

from conduit.config.pipeline import load_pipeline
from conduit_test_support import REPO

PIPELINES = sorted((REPO / "pipelines").glob("*.toml"))


def test_every_documented_pipeline_is_shipped():
    assert {p.name for p in PIPELINES} >= {"online.toml", "demo.toml", "replay-graw.toml", "replay-hdf5.toml"}


@pytest.mark.parametrize("path", PIPELINES, ids=lambda p: p.name)
def test_shipped_pipeline_is_valid_and_documented_at_its_top(path):
    pipeline = load_pipeline(path)
    assert path.read_text().startswith("#"), "each pipeline explains itself in its first lines"
    uses = [s.use for s in pipeline.stages]
    assert uses[:3] == ["pointcloud", "cluster.hdbscan", "estimate"]
    assert "hdf5" in uses


def test_online_pipeline_is_the_live_detector():
    pipeline = load_pipeline(REPO / "pipelines" / "online.toml")
    assert pipeline.source.kind == "exporter" and pipeline.source.cls.live
    assert pipeline.source.params.targets() == [(f"192.168.41.{60 + c}", 46491) for c in range(11)]
    assert pipeline.engine.policy == "skip"
    rerun = next(s for s in pipeline.stages if s.use == "rerun")
    assert rerun.params.mode == "connect"
