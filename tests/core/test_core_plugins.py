"""Discovery through entry points: separately installed packages, broken ones, the CLI listing."""

from __future__ import annotations

import subprocess
import sys

from conduit.plugins import get_registry

from conduit_test_support import run_cli


def test_stage_from_a_separately_installed_distribution_is_discovered(plugin_site):
    registry = get_registry()
    assert registry.stages["testkit.double"].__module__ == "conduit_testkit"
    assert registry.origin["testkit.double"] == "testkit"
    assert registry.sources["counting"].kind == "counting"
    assert registry.plugins["testkit"] == "conduit-testkit 0.1.0"


def test_broken_plugins_are_reported_by_name_and_do_not_hide_others(plugin_site):
    registry = get_registry()
    failures = {f.plugin: f for f in registry.failures}
    assert "deliberate" in failures["broken"].error and failures["broken"].target == "conduit_broken"
    assert "name must be dotted lower-case" in failures["badstage"].error
    assert "testkit.collect" in registry.stages  # loaded after/alongside the broken ones


def test_a_raising_registration_hook_is_that_plugins_failure_alone(plugin_site):
    """Each plugin's hook is called on its own (through pluggy): badhook's raises, every other one registers."""
    import conduit_badhook

    conduit_badhook.WRAPPED_SOURCE_CALLS.clear()
    registry = get_registry(refresh=True)
    failures = [f for f in registry.failures if f.plugin == "badhook"]
    assert [(f.target, f.error.split(" [")[0]) for f in failures] == [
        ("conduit_register_stages", "RuntimeError: deliberate failure in a registration hook")]
    assert {"testkit.double", "pointcloud", "cluster.hdbscan", "hdf5"} <= set(registry.stages)
    assert registry.origin["testkit.double"] == "testkit" and registry.origin["pointcloud"] == "pointcloud"
    assert registry.origin["source:simulate"] == "simulate" and registry.origin["source:graw"] == "source-graw"
    # badhook's hook wrapper ran around every plugin's source hook, each called on its own.
    providers = {"testkit", "source-exporter", "source-graw", "source-hdf5", "simulate"}
    assert len(conduit_badhook.WRAPPED_SOURCE_CALLS) == len(providers)


def test_commands_come_from_plugins_and_a_clash_is_reported(plugin_site):
    from conduit.plugins import get_commands

    commands, failures = get_commands(refresh=True)
    assert commands["run"].plugin == "commands" and commands["simulate"].plugin == "simulate"
    assert commands["batch"].plugin == "batch" and commands["testkit-hello"].plugin == "testkit"
    assert commands["status"].plugin == commands["ctl"].plugin == "panel"
    assert ("badhook", "command 'run'", "command 'run' already registered by commands") in [
        (f.plugin, f.target, f.error) for f in failures]
    top = run_cli("--help")
    assert top.returncode == 0
    listed = [line.split()[0] for line in top.stdout.split("commands:")[1].split("Run `conduit")[0].splitlines()
              if line.strip()]
    assert listed == ["run", "check", "stages", "new-stage", "batch", "ctl", "simulate", "status", "testkit-hello"]
    assert "greet (testkit's own command)" in top.stdout
    assert "badhook (command 'run'): command 'run' already registered by commands" in top.stdout
    hello = run_cli("testkit-hello", "--name", "shift", "--status", "3")
    assert hello.returncode == 3 and hello.stdout == "hello shift from testkit\n"
    assert "Print a greeting" in run_cli("testkit-hello", "--help").stdout
    unknown = run_cli("testkit-hallo")
    assert unknown.returncode == 2 and "unknown command 'testkit-hallo' (did you mean 'testkit-hello'?)" in unknown.stderr


def test_trace_switch_prints_plugin_loading_and_every_hook_call(plugin_site):
    traced = run_cli("--trace-plugins", "stages")
    assert traced.returncode == 0
    err = traced.stderr
    assert "[conduit plugins] loading plugin testkit = conduit_testkit (conduit-testkit 0.1.0)" in err
    assert "[conduit plugins] conduit_register_stages of plugin testkit:" in err
    assert "conduit_register_stages [hook]" in err and "finish conduit_register_stages" in err
    by_env = run_cli("--version", env={"CONDUIT_TRACE_PLUGINS": "1"})
    assert by_env.stderr == ""  # --version loads no plugin
    quiet = run_cli("stages")
    assert "[conduit plugins]" not in quiet.stderr


def test_blocked_plugins_are_skipped(plugin_site, monkeypatch):
    monkeypatch.setenv("CONDUIT_BLOCK_PLUGINS", "broken,testkit")
    registry = get_registry(refresh=True)
    assert "testkit.double" not in registry.stages
    assert all(f.plugin != "broken" for f in registry.failures)


def test_conduit_stages_lists_stages_parameters_and_failures(plugin_site):
    result = run_cli("stages")
    out = result.stdout
    assert "testkit.fail  [transform]  from plugin 'testkit'" in out
    assert "requires: doubled    provides: checked" in out
    assert "fail_ids: list[int] = []" in out and "event ids on which to raise" in out
    assert "testkit.collect  [sink]" in out
    assert "counting_live (live)" in out
    assert "plugins that failed to load" in out
    assert "broken (conduit_broken): ImportError: conduit_broken needs a library" in out
    assert "badstage (NoName):" in out
    assert "badhook (conduit_register_stages): RuntimeError: deliberate failure in a registration hook" in out
    assert "badhook (command 'run'): command 'run' already registered by commands" in out
    assert out.count("broken (conduit_broken)") == 1  # a load failure is listed once, not per hook


def test_help_and_version_import_no_heavy_library():
    code = (
        "import sys, io, contextlib\n"
        "from conduit.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    main(['--help']); main(['--version'])\n"
        "heavy = {'numpy', 'numba', 'h5py', 'hdbscan', 'rerun', 'trio', 'scipy', 'sklearn'}\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    version = run_cli("--version")
    assert version.returncode == 0 and version.stdout.startswith("conduit 0.")


def test_pipeline_reference_in_docs_is_generated_from_the_parameter_models():
    from pathlib import Path

    from conduit.commands.stages import format_markdown

    registry = get_registry(refresh=True)
    assert not [f for f in registry.failures if not f.plugin.startswith(("broken", "badstage", "badhook"))]
    committed = (Path(__file__).resolve().parents[2] / "docs" / "pipeline-reference.md").read_text()
    assert committed.strip() == format_markdown(registry).strip(), "run `make docs` to regenerate it"
