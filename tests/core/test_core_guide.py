"""docs/writing-a-plugin.md says what the code does: artifact fields and units, the clusterer's parameters,
what {run} becomes, and the command-line swap of a stage (each checked against the code)."""

from __future__ import annotations

import re

import pytest
from conduit.artifacts import CLOUD_COLUMNS, ESTIMATE_DTYPE, KINEMATICS_DTYPE, KINEMATICS_STATUS, FIT_STATUS
from conduit.stage import RunContext, RunNumberMissing
from conduit_physics.clustering import ClusterParams

from conduit_test_support import REPO

GUIDE = (REPO / "docs" / "writing-a-plugin.md").read_text()


def section(title: str) -> str:
    start = GUIDE.index(title)
    end = GUIDE.find("\n## ", start + 1)
    return GUIDE[start:end if end > 0 else None]


def table_rows(text: str) -> list[list[str]]:
    # Cells split at "|" but not at "\|" (a pipe inside a cell, as in 'a' \| 'b').
    return [[c.strip() for c in re.split(r"(?<!\\)\|", line.strip()[1:-1])] for line in text.splitlines()
            if line.startswith("| ") and not line.startswith("|---")]


def test_every_cloud_column_has_its_index_and_unit():
    rows = {r[1].strip("`"): r for r in table_rows(section("**`cloud`**")) if r[0].isdigit()}
    assert list(rows) == list(CLOUD_COLUMNS)
    assert [int(r[0]) for r in rows.values()] == list(range(len(CLOUD_COLUMNS)))
    assert all(r[2] for r in rows.values())  # a unit (or "1", "pad id") for every column


def test_every_estimate_field_is_documented_with_a_unit_where_it_has_one():
    documented = {}
    for row in table_rows(section("**`estimates`**").split("**`kinematics`**")[0]):
        for name in re.findall(r"`(\w+)`", row[0]):
            documented[name] = row[1]
    assert set(documented) == set(ESTIMATE_DTYPE.names)
    for name in ("vertex_x", "vertex_z", "radius", "arclength", "fit_rms"):
        assert documented[name] == "mm"
    assert documented["polar"] == documented["azimuthal"] == "rad" and documented["brho"] == "T·m"


def test_every_kinematics_field_and_code_is_named():
    text = section("**`kinematics`**").split("### Where relative paths point")[0]
    missing = [n for n in KINEMATICS_DTYPE.names if f"`{n}`" not in text]
    assert missing == []
    assert all(code in text for code in KINEMATICS_STATUS + FIT_STATUS)


def test_the_clusterer_parameter_table_is_the_code():
    rows = {r[0].strip("`"): r for r in table_rows(section("## 5. Write your own clusterer"))
            if r[0].startswith("`") and len(r) == 4}
    assert list(rows) == [s.name for s in ClusterParams.specs()]
    for spec in ClusterParams.specs():
        doc = spec.doc + (f" ({spec.range_text()})" if spec.range_text() else "")
        assert rows[spec.name][2] == f"`{spec.default!r}`" and rows[spec.name][3] == doc, spec.name


def test_run_without_a_number_is_as_the_guide_says(tmp_path):
    text = " ".join(section("### What `{run}` becomes").split())
    assert "`{run}` is **0**" in text and "`run_0000.h5`" in text
    assert RunContext(base_dir=tmp_path).format_path("run_{run:04d}.h5") == tmp_path / "run_0000.h5"
    with pytest.raises(RunNumberMissing) as err:
        RunContext(base_dir=tmp_path, require_run=True).format_path("out/run_{run:04d}.h5")
    quoted = re.search(r"\(`\.\.\.: (the output name uses \{run\} but this live run has no run number); give it",
                       text)
    assert quoted and quoted.group(1) in str(err.value)


def test_relative_paths_are_resolved_as_the_guide_says(tmp_path):
    assert "relative to the **directory of the pipeline file**" in section("### Where relative paths point")
    assert RunContext(base_dir=tmp_path).resolve("data/gain.csv") == tmp_path / "data" / "gain.csv"


def test_the_command_line_swap_of_a_stage_works_as_written(tmp_path):
    from conduit.config import load_pipeline

    assert "--set stage.2.use=myexp.chain" in GUIDE
    pipeline = tmp_path / "p.toml"
    pipeline.write_text('[source]\nkind = "simulate"\n\n[[stage]]\nuse = "pointcloud"\n\n'
                        '[[stage]]\nuse = "cluster.hdbscan"\n\n[[stage]]\nuse = "estimate"\n')
    loaded = load_pipeline(pipeline, ["stage.2.use=cluster.dbscan"])
    assert [s.use for s in loaded.stages] == ["pointcloud", "cluster.dbscan", "estimate"]
