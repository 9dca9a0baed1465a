"""conduit.exits: how a child process ended, as the one-line errors say it."""

from __future__ import annotations

import subprocess
import sys

from conduit.exits import how_it_ended


def test_a_killed_child_is_named_by_its_signal_and_an_exit_by_its_status() -> None:
    killed = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    assert how_it_ended(killed.returncode) == "still running"
    killed.kill()
    assert how_it_ended(killed.wait()) == "killed by SIGKILL"
    exited = subprocess.run([sys.executable, "-c", "raise SystemExit(3)"])
    assert how_it_ended(exited.returncode) == "exit status 3"
    assert how_it_ended(-77) == "killed by signal 77"
