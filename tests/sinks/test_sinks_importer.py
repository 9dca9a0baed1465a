"""rerun-importer-attpc: `rerun FILE.h5 --save out.rrd` headless, exit 66 on foreign files, Rerun's extra flags."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from rrd_read import read_rrd  # noqa: E402

VENV_BIN = Path(sys.executable).parent
N_EVENTS = 5


def env_with_venv() -> dict:
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("NUMBA_CACHE_DIR", str(HERE.parent.parent / ".numba-cache"))
    env.pop("CONDUIT_IMPORTER_PIPELINE", None)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def merged(tmp_path_factory) -> Path:
    """A small simulated merged file (attpc_merger 1.0 layout)."""
    out = tmp_path_factory.mktemp("importer") / "run_0011.h5"
    res = subprocess.run([str(VENV_BIN / "conduit"), "simulate", "hdf5", str(out), "--events", str(N_EVENTS),
                          "--seed", "5"], capture_output=True, text=True, env=env_with_venv(), timeout=300)
    assert res.returncode == 0, res.stderr
    return out


def event_ids(path: Path) -> list[int]:
    with h5py.File(path, "r") as f:
        return sorted(int(f["events"][k]["get_traces"].attrs["id"]) for k in f["events"])


def test_rerun_cli_opens_a_merged_file_headless(merged, tmp_path):
    out = tmp_path / "out.rrd"
    # --port: `rerun FILE --save` also opens a gRPC port (default 9876, maybe taken on a shared machine).
    res = subprocess.run(["rerun", str(merged), "--save", str(out), "--port", str(free_port())],
                         capture_output=True, text=True, env=env_with_venv(), timeout=300, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert out.exists(), res.stderr[-2000:]
    rows = read_rrd(out)
    ids = event_ids(merged)
    assert [r["event"] for r in rows["/event/cloud"]] == ids  # every event drawn, in order
    assert len([r for r in rows["/event/pads/hits"] if "Points2D:positions" in r]) == len(ids)
    assert "/event/tracks" in rows and "/histograms/pid/heatmap" in rows  # analysed by the default pipeline
    assert rows["/detector/chamber"][0]["_static"]


def test_foreign_files_exit_66(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not AT-TPC data")
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f.create_group("images").create_dataset("a", data=[1, 2, 3])
    fake = tmp_path / "fake.h5"
    fake.write_bytes(b"not hdf5 at all")
    for path, reason in ((text, "not an HDF5 file name"), (other, "unknown HDF5 layout"),
                         (fake, "no HDF5 signature"), (tmp_path / "missing.h5", "not a file")):
        res = subprocess.run([str(VENV_BIN / "rerun-importer-attpc"), str(path), "--application-id", "x"],
                             capture_output=True, env=env_with_venv(), timeout=120)
        assert res.returncode == 66, (path, res.stderr)
        assert res.stdout == b""
        assert reason in res.stderr.decode(), res.stderr


def test_extra_rerun_flags_ids_and_prefix(merged, tmp_path):
    """The flags the SDK's log_file_from_path passes, including undocumented ones."""
    out = tmp_path / "stdout.rrd"
    args = [str(VENV_BIN / "rerun-importer-attpc"), str(merged), "--application-id", "app", "--recording-id", "rec7",
            "--opened-application-id", "app", "--opened-recording-id", "rec7", "--entity-path-prefix", "/replay",
            "--time_sequence", "event=7", "--sequence", "event=7", "--time_duration_nanos", "log_time=5",
            "--max-events", "2"]
    with open(out, "wb") as fh:
        res = subprocess.run(args, stdout=fh, stderr=subprocess.PIPE, env=env_with_venv(), timeout=300)
    assert res.returncode == 0, res.stderr.decode()[-2000:]
    from rerun.chunk import RrdReader

    entries = RrdReader(str(out)).recordings()
    assert [(e.application_id, e.recording_id) for e in entries] == [("app", "rec7")]
    rows = read_rrd(out)
    assert [r["event"] for r in rows["/replay/event/cloud"]] == event_ids(merged)[:2]
    assert not any(k.startswith("/event") for k in rows)


def test_named_pipeline_from_the_environment(merged, tmp_path):
    pipeline = tmp_path / "view.toml"
    pipeline.write_text(textwrap.dedent("""
        [source]
        kind = "exporter"
        hosts = "192.168.41.60-70"

        [engine]
        workers = 0

        [[stage]]
        use = "pointcloud"

        [[stage]]
        use = "rerun"
        mode = "connect"
        max_display_rate = 2.0
        """))
    out = tmp_path / "named.rrd"
    env = env_with_venv() | {"CONDUIT_IMPORTER_PIPELINE": str(pipeline)}
    with open(out, "wb") as fh:
        res = subprocess.run([str(VENV_BIN / "rerun-importer-attpc"), str(merged)], stdout=fh,
                             stderr=subprocess.PIPE, env=env, timeout=300)
    assert res.returncode == 0, res.stderr.decode()[-2000:]
    rows = read_rrd(out)
    assert [r["event"] for r in rows["/event/cloud"]] == event_ids(merged)  # mode and throttle overridden
    assert "/event/tracks" not in rows and not any(k.startswith("/histograms") for k in rows)


def test_pipeline_errors_are_reported_with_lines(merged, tmp_path):
    pipeline = tmp_path / "bad.toml"
    pipeline.write_text('[[stage]]\nuse = "pointclod"\n')
    res = subprocess.run([str(VENV_BIN / "rerun-importer-attpc"), str(merged), "--pipeline", str(pipeline)],
                         capture_output=True, text=True, env=env_with_venv(), timeout=120)
    assert res.returncode == 2 and res.stdout == ""
    assert f"{pipeline}:2: stage.1.use: unknown stage 'pointclod' (did you mean 'pointcloud'" in res.stderr
