"""Error paths: rate-limited per-event errors, stages named in set-up failures, exception types kept,
precise pipeline problems (no follow-on ones, failed plugins, Params.check raising, whole dotted names in
--set, --set stage.N.use swaps), `conduit stages --strict`, shadowed CONDUIT_PLUGINS copies."""

from __future__ import annotations

import logging
import os
import textwrap

import pytest
import trio

from conduit.config.pipeline import PipelineError, load_pipeline
from conduit.engine.runner import Engine, run_pipeline
from conduit.ratelog import RateLimitedLog
from conduit_test_support import install_plugin_dist, pipeline_from_tables, run_cli


SOURCE = 'kind = "counting"\nevents = 100'


# -- per-event errors: the first few, then a count per interval ------------------------------------------


def test_rate_limited_log_keeps_the_first_few_then_counts(caplog):
    now = [0.0]
    rl = RateLimitedLog(logging.getLogger("conduit.test"), interval=10.0, first=3, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="conduit.test"):
        for i in range(50):
            rl("stage x", logging.ERROR, "event %d failed", i)
        now[0] = 10.0
        rl("stage x", logging.ERROR, "event %d failed", 50)
        rl("stage x", logging.ERROR, "event %d failed", 51)
    assert [r.getMessage() for r in caplog.records] == [
        "event 0 failed", "event 1 failed", "event 2 failed (similar messages: at most one per 10 s)",
        "event 50 failed (and 47 more like it in the last 10 s)"]
    assert rl.held_back("stage x") == 1
    now[0] = 12.0
    with caplog.at_level(logging.INFO, logger="conduit.test"):
        rl.flush()
    assert caplog.records[-1].getMessage() == "stage x: 1 more like it not logged (in the 2 s after the last one)"
    assert caplog.records[-1].levelno == logging.ERROR and rl.held_back("stage x") == 0


@pytest.mark.parametrize("rate", [0, 50], ids=["fast", "longer-than-an-engine-tick"])
def test_a_stage_failing_on_every_event_logs_three_lines_not_a_hundred(plugin_site, tmp_path, caplog, rate):
    stages = """
    [[stage]]
    use = "testkit.double"

    [[stage]]
    use = "testkit.fail"
    fail_ids = [%s]
    """ % ", ".join(str(i) for i in range(100))
    source = SOURCE + f"\nrate = {rate}"  # 50/s: 2 s, as a loaded machine makes it; the alarms tick in between
    engine = Engine(pipeline_from_tables(tmp_path, source, stages), handle_signals=False)
    engine.error_log._clock = lambda: 0.0  # one interval: what a fast stream of failures looks like
    with caplog.at_level(logging.ERROR, logger="conduit.engine"):
        summary = trio.run(engine.run)
    assert summary.failed == {"testkit.fail": 100}  # every failure counted ...
    # The engine's own log only: a run longer than one engine tick (1 s: a loaded machine) also raises the
    # alarm "stage testkit.fail failed N times in the last 1 s" (logger conduit.alarms), rightly.
    records = [r for r in caplog.records if r.name == "conduit.engine"]
    lines = [r.getMessage() for r in records if "testkit.fail failed" in r.getMessage()]
    assert lines == [  # ... three logged
        "event 0: stage testkit.fail failed: ValueError: deliberate failure on 0",
        "event 1: stage testkit.fail failed: ValueError: deliberate failure on 1",
        "event 2: stage testkit.fail failed: ValueError: deliberate failure on 2 "
        "(similar messages: at most one per 10 s)"]
    assert records[-1].getMessage() == (  # and the count of the others, once the run ends
        "stage testkit.fail: 97 more like it not logged (in the 0 s after the last one)")


# -- set-up and sink errors ---------------------------------------------------------------------------


@pytest.mark.parametrize("workers", [0, 1])
def test_a_warm_up_failure_names_the_stage(contract_site, tmp_path, workers):
    stages = '[[stage]]\nuse = "contractkit.cold"\nmessage = "no table at /calib/pads.csv"\n'
    summary = run_pipeline(pipeline_from_tables(tmp_path, SOURCE, stages, f"workers = {workers}"),
                           handle_signals=False)
    assert summary.error == ("stage contractkit.cold failed to warm up: FileNotFoundError: "
                             "no table at /calib/pads.csv")
    assert summary.exit_code == 1 and summary.received == 0


def test_sink_errors_keep_the_exception_type(contract_site, tmp_path, caplog):
    stages = '[[stage]]\nuse = "contractkit.badsink"\n'
    with caplog.at_level(logging.ERROR, logger="conduit.engine"):
        summary = run_pipeline(pipeline_from_tables(tmp_path, 'kind = "counting"\nevents = 5', stages),
                               handle_signals=False)
    assert summary.failed == {"contractkit.badsink": 5}
    assert caplog.records[0].getMessage() == "event 0: sink contractkit.badsink failed: KeyError: 'cloud'"
    opening = run_pipeline(pipeline_from_tables(tmp_path, SOURCE, stages + "fail_open = true\n"),
                           handle_signals=False)
    assert opening.error == "sink contractkit.badsink: cannot open: KeyError: 'path'"


# -- pipeline problems ----------------------------------------------------------------------------------


def _problems(tmp_path, stages: str, overrides=(), source: str = SOURCE) -> list[str]:
    path = tmp_path / "pipe.toml"
    path.write_text(f"[source]\n{source}\n\n{textwrap.dedent(stages)}")
    with pytest.raises(PipelineError) as err:
        load_pipeline(path, overrides)
    return [line.replace(f"{path}:", "pipe.toml:") for line in err.value.lines]


CHAIN = """
[[stage]]
use = "contractkit.cloud"

[[stage]]
use = "contractkit.labels"
short = "yes"

[[stage]]
use = "contractkit.count"
"""


def test_a_bad_parameter_of_the_providing_stage_is_the_only_problem(contract_site, tmp_path):
    assert _problems(tmp_path, CHAIN) == ["pipe.toml:11: stage.2.short: expected true or false, got 'yes' (str)"]


def test_params_check_may_raise_value_error(contract_site, tmp_path):
    stages = '[[stage]]\nuse = "contractkit.range"\nlow = 2.0\nhigh = 1.0\n'
    assert _problems(tmp_path, stages) == ["pipe.toml:5: stage.1: high (1) must be above low (2)"]


def test_a_failed_plugin_is_named_even_when_a_stage_name_is_close(plugin_site, tmp_path):
    (line,) = _problems(tmp_path, '[[stage]]\nuse = "testkit.dubble"\n')
    assert line.startswith("pipe.toml:6: stage.1.use: unknown stage 'testkit.dubble' (did you mean "
                           "'testkit.double' or 'testkit.slow'?); plugin '")
    failed = ("broken", "badstage", "badhook")  # none is called 'testkit': each is named once
    assert all(line.count(f"'{name}'") + line.count(f" {name}") == 1 for name in failed), line
    assert "failed to load: " in line and line.endswith("; see `conduit stages`)")


def test_a_failed_plugin_of_the_same_name_comes_first(plugin_site, tmp_path):
    (line,) = _problems(tmp_path, '[[stage]]\nuse = "broken.stage"\n')
    assert "unknown stage 'broken.stage'" in line
    assert "; plugin 'broken' failed to load: ImportError: conduit_broken needs a library" in line
    assert line.endswith("(also failed: badstage, badhook; see `conduit stages`)")


# -- --set ------------------------------------------------------------------------------------------------


SIMULATE = 'kind = "simulate"\nevents = 1'
BUILT_IN = """
[engine]
workers = 0

[[stage]]
use = "pointcloud"

[[stage]]
use = "cluster.hdbscan"
min_points = 5
min_cloud_size = 40
allow_single_cluster = false

[[stage]]
use = "estimate"
"""


def test_set_takes_whole_dotted_stage_names(tmp_path):
    path = tmp_path / "pipe.toml"
    path.write_text(f"[source]\n{SIMULATE}\n\n{BUILT_IN}")
    pipeline = load_pipeline(path, ["cluster.hdbscan.min_points=4"])
    assert pipeline.stages[1].params.min_points == 4 and pipeline.stages[1].origins["min_points"] == "--set"
    assert _problems(tmp_path, BUILT_IN, ["cluster.dbscan.eps=12"], SIMULATE) == [
        "--set cluster.dbscan.eps=12: the pipeline has no stage 'cluster.dbscan' (its stages: pointcloud, "
        "cluster.hdbscan, estimate); to swap one for it: --set stage.N.use=cluster.dbscan"]
    assert _problems(tmp_path, BUILT_IN, ["cluster.hdbscn.min_points=4"], SIMULATE) == [
        "--set cluster.hdbscn.min_points=4: no section or stage named 'cluster.hdbscn' "
        "(did you mean 'cluster.hdbscan'?)"]
    (line,) = _problems(tmp_path, BUILT_IN, ["cluster.hdbscan.min_size=4"], SIMULATE)
    assert line.startswith("--set cluster.hdbscan.min_size=4: unknown key 'min_size' (did you mean "
                           "'min_cloud_size'?); known keys: min_cloud_size, ")


def test_set_stage_use_swaps_a_stage_keeping_the_parameters_it_shares(tmp_path):
    path = tmp_path / "pipe.toml"
    path.write_text(f"[source]\n{SIMULATE}\n\n{BUILT_IN}")
    # The swap is applied first, whatever the order on the command line: the new stage's parameters follow it.
    pipeline = load_pipeline(path, ["cluster.dbscan.eps=12", "stage.2.use=cluster.dbscan"])
    stage = pipeline.stages[1]
    assert stage.use == "cluster.dbscan" and stage.origins["use"] == "--set"
    assert (stage.params.eps, stage.params.min_cloud_size) == (12.0, 40)  # min_cloud_size: from the file
    assert pipeline.warnings == [
        f"--set stage.2.use=cluster.dbscan: left out the file's parameters of stage 2 that 'cluster.dbscan' does "
        f"not have: min_points (line 14), allow_single_cluster (line 16)"]
    out = run_cli("check", str(path), "--set", "stage.2.use=cluster.dbscan")
    assert out.returncode == 0, out.stderr
    assert "stage 2: cluster.dbscan [use from --set] (transform; requires cloud; provides clusters)" in out.stdout
    assert "warning: --set stage.2.use=cluster.dbscan: left out the file's parameters" in out.stderr
    assert "(1 warning above)" in out.stdout
    unknown = _problems(tmp_path, BUILT_IN, ["stage.2.use=cluster.dbscn"], SIMULATE)
    assert unknown[0].startswith("--set stage.2.use=cluster.dbscn: unknown stage 'cluster.dbscn' (did you mean "
                                 "'cluster.dbscan'")


# -- plugins ----------------------------------------------------------------------------------------------


def test_stages_strict_fails_when_a_plugin_failed(plugin_site):
    assert run_cli("stages").returncode == 0
    strict = run_cli("stages", "--strict")
    assert strict.returncode == 1 and "plugins that failed to load" in strict.stdout


def test_stages_strict_passes_when_every_plugin_loaded():
    assert run_cli("stages", "--strict").returncode == 0


DEVKIT = '''
from conduit.hookspecs import hookimpl
from conduit.stage import TransformStage


class Hits(TransformStage):
    """{doc}"""
    name = "devkit.hits"
    provides = ("hits",)

    def process(self, event):
        event.artifacts["hits"] = {value}


@hookimpl
def conduit_register_stages(register):
    register(Hits)
'''


@pytest.fixture
def devkit(tmp_path):
    """conduit-devkit 0.1.0 installed in a site directory; a changed copy of it in a development directory."""
    site, dev = tmp_path / "site", tmp_path / "dev"
    dev.mkdir()
    (tmp_path / "conduit_devkit.py").write_text(DEVKIT.format(doc="Installed copy.", value=1))
    install_plugin_dist(site, "conduit-devkit", tmp_path / "conduit_devkit.py", {"devkit": "conduit_devkit"})
    (dev / "conduit_devkit.py").write_text(DEVKIT.format(doc="Development copy.", value=2))
    (dev / "conduit_devkit_next.py").write_text(DEVKIT.format(doc="Renamed development copy.", value=3))
    pipeline = tmp_path / "pipe.toml"
    pipeline.write_text('[source]\nkind = "simulate"\nevents = 1\n\n[[stage]]\nuse = "devkit.hits"\n')
    return site, dev, pipeline


def _env(*path, plugins: str) -> dict:
    return {"PYTHONPATH": os.pathsep.join(str(p) for p in path), "CONDUIT_PLUGINS": plugins}


def test_a_development_copy_shadowed_by_the_installed_module_is_warned_about(devkit):
    site, dev, pipeline = devkit
    env = _env(site, plugins="conduit_devkit")  # run from the copy's directory, which is not on the path
    for args in (["check", str(pipeline)], ["stages"]):
        out = run_cli(*args, cwd=dev, env=env)
        assert out.returncode == 0, out.stderr
        text = out.stdout + out.stderr
        assert ("warning: CONDUIT_PLUGINS=conduit_devkit: the development copy is not used: the module is "
                f"imported from the installed distribution conduit-devkit 0.1.0 ({site / 'conduit_devkit.py'})"
                ) in text
    ran = run_cli("run", str(pipeline), "--set", "engine.workers=0", cwd=dev, env=env)
    assert ran.returncode == 0 and "the development copy is not used" in ran.stderr


def test_a_development_copy_whose_stage_an_installed_plugin_registers_is_warned_about(devkit):
    site, dev, pipeline = devkit
    env = _env(dev, site, plugins="conduit_devkit_next")
    out = run_cli("check", str(pipeline), env=env)
    assert out.returncode == 0, out.stderr
    assert ("warning: CONDUIT_PLUGINS=conduit_devkit_next: its stage 'devkit.hits' is used instead of the one "
            "the installed plugin 'devkit' (conduit-devkit 0.1.0) registers") in out.stderr
    listing = run_cli("stages", "--strict", env=env)  # a warning, not a failure
    assert listing.returncode == 0 and "Renamed development copy." in listing.stdout


def test_a_development_copy_first_on_the_path_is_used_without_a_warning(devkit):
    site, dev, pipeline = devkit
    out = run_cli("stages", env=_env(dev, site, plugins="conduit_devkit"))
    assert out.returncode == 0
    assert "Development copy." in out.stdout and "warning" not in out.stdout + out.stderr
    assert "plugins that failed to load" not in out.stdout
