"""Helpers shared by the test suite (importable as `conduit_test_support`)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
TESTKIT = REPO / "tests" / "core" / "testkit"


def pip_install(package_dir: Path, site: Path) -> dict[str, str]:
    """pip-install a package directory into its own ``site`` directory (not the project's venv); return the
    environment (``PYTHONPATH``) under which ``conduit`` and ``pytest`` subprocesses see it."""
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(site), str(package_dir)], check=True, capture_output=True, text=True)
    return {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}


def run_pytest(tests: Path, cwd: Path, env: dict | None = None, timeout: float = 600):
    """Run pytest on ``tests`` in a subprocess (a plugin package's own tests); return the CompletedProcess."""
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tests)],
                          cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=timeout)


def install_plugin_dist(site: Path, dist_name: str, module_file: Path, entry_points: dict[str, str]) -> None:
    """Install a one-module distribution into ``site`` the way pip would lay it out.

    A ``.dist-info`` directory with METADATA and entry_points.txt makes
    importlib.metadata (and so conduit's discovery) see a real installed
    distribution once ``site`` is on sys.path.
    """
    site.mkdir(parents=True, exist_ok=True)
    shutil.copy(module_file, site / module_file.name)
    info = site / f"{dist_name.replace('-', '_')}-0.1.0.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist_name}\nVersion: 0.1.0\n")
    lines = ["[conduit]"] + [f"{name} = {target}" for name, target in entry_points.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    (info / "RECORD").write_text("")


@contextlib.contextmanager
def installed_testkit(site: Path, dist_name: str, module: str, plugin: str):
    """The testkit module ``module`` installed into ``site`` as the distribution ``dist_name`` (plugin name
    ``plugin``) while the block runs: the registry sees it, and the module is forgotten afterwards."""
    from conduit.plugins import get_registry

    install_plugin_dist(site, dist_name, TESTKIT / f"{module}.py", {plugin: module})
    get_registry(refresh=True)
    try:
        yield site
    finally:
        sys.modules.pop(module, None)


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 120):
    """Run the installed ``conduit`` console script; return the CompletedProcess."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run(
        [str(VENV_BIN / "conduit"), *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def session_cpu_seconds(session: int) -> float:
    """CPU time (user + system, s) of every live process of ``session`` (a process started with
    ``start_new_session``: itself, its workers ...) and of the children they have reaped."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:  # it ended while we looked
            continue
        if int(fields[3]) == session:  # fields[0] is the state (stat field 3): session is field 6
            total += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime (fields 14-17)
    return total / tick


class StallWatch:
    """Calls a run stalled when it used less than ``min_cpu`` s of CPU in the last ``seconds`` s (sampled often)."""

    def __init__(self, seconds: float, min_cpu: float, cpu: float):
        self.seconds, self.min_cpu = seconds, min_cpu
        self.window = [(time.monotonic(), cpu)]  # (when, CPU seconds used by then), the last ``seconds`` s

    def stalled(self, cpu: float) -> bool:
        now = time.monotonic()
        self.window = [(t, c) for t, c in self.window if now - t <= self.seconds] + [(now, cpu)]
        first, used = self.window[0]
        return now - first >= self.seconds - 1.0 and cpu - used < self.min_cpu


def run_cli_until_done(*args: str, env: dict | None = None, stalled_after: float = 120.0,
                       min_cpu: float = 0.5, limit: float = 3600.0) -> subprocess.CompletedProcess:
    """Run the installed ``conduit`` console script until it exits, however long the machine's load makes it.

    A wall-clock timeout fails a run that is only slow (a cold numba cache compiles the whole chain in every
    worker: minutes of CPU, and a loaded CI machine gives a process a tenth of a CPU). This one calls the run
    hung only when its processes (the script and its workers) used less than ``min_cpu`` s of CPU in the
    last ``stalled_after`` s, or after ``limit`` s in all (a hang that spins); then it kills them all and
    fails with the tail of stderr.
    """
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([str(VENV_BIN / "conduit"), *args], env={**os.environ, **(env or {})},
                                stdout=out, stderr=err, text=True, start_new_session=True)
        start, watch = time.monotonic(), StallWatch(stalled_after, min_cpu, 0.0)
        while proc.poll() is None:
            time.sleep(1.0)
            now, cpu = time.monotonic(), session_cpu_seconds(proc.pid)
            idle = watch.stalled(cpu)
            if idle or now - start > limit:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)  # its workers too: none left running after the test
                proc.wait()
                err.seek(0)
                why = (f"used less than {min_cpu} s of CPU in {stalled_after:.0f} s" if idle
                       else f"still running after {limit:.0f} s")
                raise AssertionError(f"conduit {' '.join(args)}: {why} (hung?); killed after "
                                     f"{now - start:.0f} s, {cpu:.1f} s of CPU; stderr:\n{err.read()[-3000:]}")
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out.read(), err.read())


@contextlib.asynccontextmanager
async def fail_if_hung(stalled_after: float = 60.0, min_cpu: float = 0.5):
    """Like ``trio.fail_after``, but the limit is on doing nothing: the block fails (``trio.TooSlowError``) only
    when this process used less than ``min_cpu`` s of CPU (all its threads) in the last ``stalled_after`` s.
    A start-up that compiles (a cold numba cache: every fresh clone; a minute at load 20 on 2 CPUs) is waited for.
    """
    import trio

    hung = False

    async def watch(scope: trio.CancelScope) -> None:
        nonlocal hung
        stall = StallWatch(stalled_after, min_cpu, time.process_time())
        while True:
            await trio.sleep(1.0)
            if stall.stalled(time.process_time()):
                hung = True
                scope.cancel()
                return

    async with trio.open_nursery() as nursery:
        with trio.CancelScope() as scope:
            nursery.start_soon(watch, scope)
            try:
                yield
            finally:
                nursery.cancel_scope.cancel()
    if hung:
        raise trio.TooSlowError(f"no progress: less than {min_cpu} s of CPU in {stalled_after:.0f} s (hung?)")


def read_collected(path: str | Path) -> tuple[list[dict], bool]:
    """(records, closed) from the testkit collect sink's JSON-lines file (reset markers skipped)."""
    records, closed = [], False
    for line in Path(path).read_text().splitlines():
        value = json.loads(line)
        if value == "closed":
            closed = True
        elif isinstance(value, dict):
            records.append(value)
    return records, closed


def pipeline_from_tables(tmp_path: Path, source: str, stages: str, engine: str = "workers = 0"):
    """A pipeline file ``pipe.toml`` in ``tmp_path`` from [source] and [engine] lines and [[stage]] tables, loaded."""
    import textwrap

    from conduit.config.pipeline import load_pipeline

    text = f"[source]\n{source}\n\n[engine]\n{engine}\n\n{textwrap.dedent(stages)}"
    path = tmp_path / "pipe.toml"
    path.write_text(text)
    return load_pipeline(path)
