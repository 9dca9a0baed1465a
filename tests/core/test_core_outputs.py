"""conduit.outputs: the lock on an output path and what happens to a file already there."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys

import pytest

from conduit.outputs import OutputError, claim_output, lock_path_of, next_free_name

HOLD = """
import sys, time
from conduit.outputs import claim_output
claim = claim_output(sys.argv[1])
print("held", flush=True)
sys.stdin.read()  # until the test closes our stdin
claim.release()
"""


def test_a_path_is_claimed_once(tmp_path):
    path = tmp_path / "out" / "run_0001.h5"
    with claim_output(path) as claim:
        assert claim.held and lock_path_of(path).exists() and path.parent.is_dir()
        with pytest.raises(OutputError) as caught:
            claim_output(path)
        assert str(caught.value) == (f"{path}: already being written by another stage of this pipeline; give this "
                                     "run another output path or run number")
    assert not lock_path_of(path).exists()  # released: the lock file goes with it
    claim_output(path).release()  # and the path can be claimed again


def test_another_process_holding_the_path_is_named(tmp_path):
    path = tmp_path / "run.h5"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(OutputError) as caught:
            claim_output(path)
        message = str(caught.value)
        assert message.startswith(f"{path}: already being written by another conduit run (pid {holder.pid} on "
                                  f"{socket.gethostname()} since ")
        assert message.endswith("); give this run another output path or run number") and "\n" not in message
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    claim_output(path).release()


def test_a_lock_left_by_a_killed_run_is_taken_over(tmp_path, caplog):
    path = tmp_path / "run.h5"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    assert holder.stdout.readline() == "held\n"
    holder.kill()  # SIGKILL: the kernel drops its flock, the lock file stays
    holder.wait()
    assert lock_path_of(path).read_text().startswith(f"pid {holder.pid} on ")
    caplog.set_level(logging.INFO, logger="conduit")
    with claim_output(path, logger=logging.getLogger("conduit.outputs")):
        assert lock_path_of(path).read_text().startswith(f"pid {os.getpid()} on ")
    assert (f"{path}: took over the lock left by a run that ended without releasing it (pid {holder.pid} on "
            in caplog.text)


def test_keep_renames_the_old_file_to_the_next_number(tmp_path, caplog):
    path = tmp_path / "run_0042.h5"
    caplog.set_level(logging.INFO, logger="conduit")
    for content in (b"first", b"second", b"third"):
        with claim_output(path, "keep", logging.getLogger("conduit.outputs")) as claim:
            claim.make_room()
            assert not path.exists()
            path.write_bytes(content)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run_0042.1.h5", "run_0042.2.h5", "run_0042.h5"]
    assert [(tmp_path / n).read_bytes() for n in ("run_0042.1.h5", "run_0042.2.h5", "run_0042.h5")] == \
        [b"first", b"second", b"third"]
    assert f"{path} already existed: kept it as run_0042.2.h5" in caplog.text
    # Numbering follows time: one above the highest in use, even with a gap below.
    (tmp_path / "run_0042.1.h5").unlink()
    assert next_free_name(path).name == "run_0042.3.h5"
    (tmp_path / "run_0042.7.h5.parts").mkdir()
    assert next_free_name(path).name == "run_0042.8.h5"
    assert next_free_name(tmp_path / "noext").name == "noext.1"


def test_refuse_and_replace(tmp_path, caplog):
    path = tmp_path / "run.rrd"
    path.write_bytes(b"old")
    with pytest.raises(OutputError) as caught:
        claim_output(path, "refuse")
    assert str(caught.value) == (f"{path}: already exists (engine.existing_outputs = \"refuse\"); move it away, or "
                                 "use \"keep\" to keep it under a numbered name")
    assert not lock_path_of(path).exists() and path.read_bytes() == b"old"

    caplog.set_level(logging.INFO, logger="conduit")
    with claim_output(path, "replace", logging.getLogger("conduit.outputs")) as claim:
        assert claim.make_room() is None and not path.exists()
    assert f"replacing {path} (3 B; engine.existing_outputs = \"replace\")" in caplog.text
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_an_unwritable_directory_is_one_line(tmp_path):
    (tmp_path / "out").write_text("a file where the directory should be")
    with pytest.raises(OutputError) as caught:
        claim_output(tmp_path / "out" / "run.h5")
    assert str(caught.value) == f"cannot write {tmp_path / 'out' / 'run.h5'}: File exists"
