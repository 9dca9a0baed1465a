"""Fixtures for the control panel tests: a real `conduit run --panel` in a subprocess, on a free port."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
SINKKIT = HERE.parent / "sinks"
VENV_BIN = Path(sys.executable).parent
sys.path[:0] = [str(HERE), str(SINKKIT)]  # panel_support, rrd_read

#: A steady file-like source (waits for the engine: nothing skipped), a transform with a parameter, sinks.
PIPELINE = """
[source]
kind = "sinkkit"
events = 0
rate = {rate}
run = 7

[engine]
workers = 0

[[stage]]
use = "sinkkit.analyse"

[[stage]]
use = "panelkit.mark"

[[stage]]
use = "histogram"
path = "out/histograms_run_{{run:04d}}.h5"

[[stage]]
use = "panelkit.record"
path = "out/record_{{run}}.jsonl"
{extra}
"""



class PanelRun:
    """One `conduit run --panel` subprocess: its panel client, output directory and logs."""

    def __init__(self, directory: Path, proc: subprocess.Popen, stderr: Path, stdout: Path):
        self.dir = directory
        self.proc = proc
        self.stderr_path = stderr
        self.stdout_path = stdout
        self.url = ""

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text()

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text()

    def wait_url(self, timeout: float = 120.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(r"control panel: (http://\S+?/)", self.stderr)
            if match:
                self.url = match.group(1)
                return self.url
            if self.proc.poll() is not None:
                raise AssertionError(f"conduit exited {self.proc.returncode}:\n{self.stderr}")
            time.sleep(0.05)
        raise AssertionError(f"no panel address within {timeout} s:\n{self.stderr}")

    @property
    def address(self) -> str:
        return self.url.removeprefix("http://").rstrip("/")

    def client(self, token: str | None = None):
        from conduit_panel.client import PanelClient

        return PanelClient(self.address, token=token)

    def wait_for(self, predicate, timeout: float = 60.0, what: str = "condition"):
        """Poll the status until ``predicate(status)`` is true; return that status."""
        deadline = time.monotonic() + timeout
        client = self.client()
        while time.monotonic() < deadline:
            status = client.status()
            if predicate(status):
                return status
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}; last status: {status}")

    def wait_exit(self, timeout: float = 120.0) -> int:
        return self.proc.wait(timeout=timeout)


@pytest.fixture
def panel_env(monkeypatch):
    """The test plugins (sinkkit, panelkit) on the path, in this process and in subprocesses."""
    path = os.pathsep.join([str(HERE), str(SINKKIT), os.environ.get("PYTHONPATH", "")])
    monkeypatch.setenv("PYTHONPATH", path)
    monkeypatch.setenv("CONDUIT_PLUGINS", "conduit_sinkkit,conduit_panelkit")
    monkeypatch.delenv("CONDUIT_PANEL_TOKEN", raising=False)
    yield


@pytest.fixture
def start_panel_run(tmp_path, panel_env):
    """start_panel_run(rate=50, extra="", listen="127.0.0.1:0", env=None) -> a PanelRun serving its panel."""
    runs: list[PanelRun] = []

    def start(rate: float = 50.0, extra: str = "", listen: str = "127.0.0.1:0", env: dict | None = None,
              args: tuple = ()) -> PanelRun:
        directory = tmp_path / f"run{len(runs)}"
        (directory / "out").mkdir(parents=True)
        pipe = directory / "pipe.toml"
        pipe.write_text(textwrap.dedent(PIPELINE.format(rate=rate, extra=extra)))
        stderr, stdout = directory / "stderr.txt", directory / "stdout.txt"
        full_env = dict(os.environ)
        full_env.update(env or {})
        proc = subprocess.Popen([str(VENV_BIN / "conduit"), "run", str(pipe), "--panel", listen, *args],
                                cwd=directory, env=full_env, stdout=stdout.open("w"), stderr=stderr.open("w"))
        run = PanelRun(directory, proc, stderr, stdout)
        runs.append(run)
        run.wait_url()
        return run

    yield start
    for run in runs:
        if run.proc.poll() is None:
            run.proc.send_signal(signal.SIGINT)
            try:
                run.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                run.proc.kill()
                run.proc.wait()
