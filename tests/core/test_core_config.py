"""Pipeline files: every problem reported at once, each with the right line."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from conduit.config.lines import scan_key_lines
from conduit.config.pipeline import PipelineError, load_pipeline, parse_override

from conduit_test_support import run_cli


def write(tmp_path, text: str):
    path = tmp_path / "pipe.toml"
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


GOOD = """
[source]
kind = "counting"
events = 20

[engine]
workers = 0

[[stage]]
use = "testkit.double"

[[stage]]
use = "testkit.fail"
fail_ids = [3]

[[stage]]
use = "testkit.collect"
path = "out_{run}.jsonl"
"""


def test_key_lines_follow_tables_arrays_and_dotted_keys():
    text = textwrap.dedent(
        """
        # comment
        [source]
        kind = "graw"
        a.b = 1
        [[stage]]
        use = "x"
        note = '''
        use = "not a key"
        '''
        [[stage]]
        use = "y"
        list = [
          1,
          2,
        ]
        [[stage.hist]]
        name = "h"
        after = 3
        """
    )
    lines = scan_key_lines(text)
    assert lines.line(("source", "kind")) == 4
    assert lines.line(("source", "a", "b")) == 5
    assert lines.line(("stage", 0, "use")) == 7
    assert lines.line(("stage", 1, "use")) == 12
    assert lines.line(("stage", 1, "list", 1)) == 13
    assert lines.line(("stage", 1, "hist", 0, "name")) == 18
    assert lines.line(("stage", 1, "after")) == 13 or lines.line(("stage", 1, "hist", 0, "after")) == 19
    assert lines.line(("stage", 1, "hist", 0, "after")) == 19
    assert lines.line(("stage", 0, "missing")) == 6  # falls back to the [[stage]] header


def test_valid_pipeline_resolves_with_origins(plugin_site, tmp_path):
    path = write(tmp_path, GOOD)
    pipeline = load_pipeline(path, ["engine.max_in_flight=3", "testkit.fail.fail_ids=[1, 2]"])
    assert [s.use for s in pipeline.stages] == ["testkit.double", "testkit.fail", "testkit.collect"]
    assert pipeline.source.kind == "counting" and pipeline.source.params.events == 20
    assert pipeline.source.origins["events"] == "file" and pipeline.source.origins["traces"] == "default"
    assert pipeline.engine.max_in_flight == 3 and pipeline.engine_origins["max_in_flight"] == "--set"
    assert pipeline.stages[1].params.fail_ids == [1, 2] and pipeline.stages[1].origins["fail_ids"] == "--set"
    assert pipeline.detector.magnetic_field == 2.85 and pipeline.detector_origins["magnetic_field"] == "default"


def test_every_problem_is_reported_with_its_line(plugin_site, tmp_path):
    path = write(
        tmp_path,
        """
        [source]
        kind = "counting"
        events = "many"
        evnets = 3

        [detector]
        magnetic_feld = 3.0
        detector_length = -1.0

        [engine]
        policy = "skp"

        [colour]
        x = 1

        [[stage]]
        use = "testkit.fail"

        [[stage]]
        use = "testkit.doubel"

        [[stage]]
        use = "testkit.slow"
        seconds = "fast"
        """,
    )
    with pytest.raises(PipelineError) as info:
        load_pipeline(path)
    lines = info.value.lines
    text = "\n".join(lines)
    expected = [
        (":3: source.events: expected an integer", None),
        (":4: source.evnets: unknown key 'evnets'", "did you mean 'events'?"),
        (":7: detector.magnetic_feld: unknown key", "did you mean 'magnetic_field'?"),
        (":8: detector.detector_length: must be > 0", None),
        (":11: engine.policy: must be one of", "did you mean 'skip'?"),
        (":13: colour: unknown key 'colour'", None),
        (":17: stage.1.use: stage 'testkit.fail' requires artifact 'doubled'", "testkit.double"),
        (":20: stage.2.use: unknown stage 'testkit.doubel'", "did you mean 'testkit.double'"),
        (":24: stage.3.seconds: expected a number", None),
    ]
    for where, hint in expected:
        match = [line for line in lines if where in line]
        assert match, f"no problem reported at {where!r} in:\n{text}"
        if hint:
            assert hint in match[0], match[0]
        assert match[0].startswith(str(path))
    assert len(lines) == len(expected), text


def test_toml_syntax_error_has_line_and_column(tmp_path):
    path = write(tmp_path, '[source]\nkind = "graw"\npath = "unterminated\n')
    with pytest.raises(PipelineError) as info:
        load_pipeline(path)
    assert len(info.value.lines) == 1
    assert info.value.lines[0].startswith(f"{path}:3: TOML syntax error")


def test_override_errors_name_the_override(plugin_site, tmp_path):
    path = write(tmp_path, GOOD)
    with pytest.raises(PipelineError) as info:
        load_pipeline(path, ["engine.workers=lots", "stage.9.x=1", "nosuch.x=1", "testkit.collect.bogus=1"])
    text = "\n".join(info.value.lines)
    assert "--set engine.workers=lots: expected an integer" in text
    assert "--set stage.9.x=1: stage 9 does not exist" in text
    assert "--set nosuch.x=1: no section or stage named 'nosuch'" in text
    assert "--set testkit.collect.bogus=1: unknown key 'bogus'" in text


def test_parse_override_reads_toml_values():
    assert parse_override("engine.workers=2") == (["engine", "workers"], 2)
    assert parse_override("source.hosts=127.0.0.1:5000") == (["source", "hosts"], "127.0.0.1:5000")
    assert parse_override('source.hosts=["a", "b"]') == (["source", "hosts"], ["a", "b"])
    with pytest.raises(ValueError):
        parse_override("noequals")


def test_cli_check_prints_resolved_pipeline_and_cli_reports_problems(plugin_site, tmp_path):
    path = write(tmp_path, GOOD)
    ok = run_cli("check", str(path), "--set", "engine.queue_size=9")
    assert ok.returncode == 0, ok.stderr
    assert "stage 2: testkit.fail (transform; requires doubled; provides checked)" in ok.stdout
    assert "queue_size" in ok.stdout and "= 9" in ok.stdout and "(--set)" in ok.stdout
    assert "fail_ids" in ok.stdout and "(file)" in ok.stdout
    bad = write(tmp_path, GOOD.replace('use = "testkit.double"', 'use = "testkit.dubble"'))
    result = run_cli("check", str(bad))
    assert result.returncode == 2
    assert f"{bad}:9: stage.1.use: unknown stage 'testkit.dubble'" in result.stderr
    assert "requires artifact 'doubled'" in result.stderr  # reported together with the unknown stage
    assert "2 problems found; nothing was run" in result.stderr
    missing = run_cli("run", str(tmp_path / "nope.toml"))
    assert missing.returncode == 2 and "no such pipeline file" in missing.stderr


def test_relative_paths_mean_the_pipeline_dir_in_files_and_the_cwd_on_the_command_line(tmp_path, monkeypatch):
    sub = tmp_path / "pipelines"
    sub.mkdir()
    path = sub / "p.toml"
    path.write_text('[source]\nkind = "hdf5"\npath = "data/run_0001.h5"\n')
    from_file = load_pipeline(path)
    assert from_file.source.params.path == Path("data/run_0001.h5")  # sources resolve it against pipelines/
    monkeypatch.chdir(tmp_path)
    from_cli = load_pipeline(path, ["source.path=elsewhere/run_0002.h5"])
    assert from_cli.source.params.path == tmp_path / "elsewhere" / "run_0002.h5"
