"""`conduit simulate` on the command line, and the `simulate` source kind in a pipeline."""

from __future__ import annotations

import re
import textwrap
import typing

import h5py
import numpy as np
import pytest
from conduit_test_support import REPO, run_cli

from conduit.detector import DetectorParams
from conduit_simulate.generator import Simulator
from conduit_simulate.params import SimulationParams
from conduit_simulate.presets import PRESET_NAMES, PRESETS
from conduit_physics.stopping import GASES


def test_help_documents_every_simulation_and_detector_option():
    for output in ("serve", "graw", "hdf5"):
        result = run_cli("simulate", output, "--help")
        assert result.returncode == 0, result.stderr
        text = result.stdout
        for spec in SimulationParams.specs() + DetectorParams.specs():
            flag = "--" + spec.name.replace("_", "-")
            assert re.search(rf"^\s+{re.escape(flag)}\b", text, re.M), (output, flag)
            first_words = " ".join(spec.doc.split()[:3])
            assert first_words in " ".join(text.split()), (output, spec.name)
    serve = run_cli("simulate", "serve", "--help").stdout
    for flag in ("--base-port", "--rate", "--clients", "--connect-timeout", "--pool", "--truth"):
        assert flag in serve


def test_presets_are_the_documented_choices():
    assert set(PRESET_NAMES) == {"default", "dense", "elastic", "dp", "alpha-elastic", "protons", "alphas", "single-track"}
    table = (REPO / "docs" / "simulator.md").read_text()
    assert all(f"| `{name}` |" in table for name in PRESET_NAMES)
    preset = next(s for s in SimulationParams.specs() if s.name == "preset")
    assert set(PRESETS) == set(typing.get_args(preset.type))
    gas = next(s for s in SimulationParams.specs() if s.name == "gas")
    assert set(typing.get_args(typing.get_args(gas.type)[0])) == set(GASES)


def test_cli_writes_hdf5_and_truth_identical_to_in_memory_events(tmp_path):
    out = tmp_path / "run_0004.h5"
    result = run_cli(
        "simulate",
        "hdf5",
        str(out),
        "--events",
        "3",
        "--seed",
        "5",
        "--preset",
        "protons",
        "--noise-pads",
        "20",
        "--magnetic-field",
        "3.0",
        "--gun-energy",
        "2",
        "4",
    )
    assert result.returncode == 0, result.stderr
    assert f"wrote 3 events to {out}" in result.stdout
    assert f"truth: {tmp_path / 'run_0004_truth.h5'}" in result.stdout
    params = SimulationParams(events=3, seed=5, preset="protons", noise_pads=20, gun_energy=(2.0, 4.0))
    sim = Simulator(params, DetectorParams(magnetic_field=3.0))
    with h5py.File(out, "r") as f:
        for n in range(3):
            assert np.array_equal(f[f"events/event_{n}/get_traces"][()], sim.event(n).event.traces)
    with h5py.File(tmp_path / "run_0004_truth.h5", "r") as f:
        assert f.attrs["events"] == 3
        assert '"magnetic_field": 3.0' in f.attrs["detector"]
        energies = f["particles"]["energy"]
        assert np.all((energies >= 2.0) & (energies <= 4.0))


def test_cli_rejects_bad_values_with_one_line_each(tmp_path):
    result = run_cli("simulate", "hdf5", str(tmp_path / "x.h5"), "--events", "0", "--window-time-bucket", "10")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert "conduit simulate: --events: must be ≥ 1, got 0" in lines
    assert "conduit simulate: --window-time-bucket: must differ from micromegas_time_bucket" in lines
    result = run_cli("simulate", "graw", str(tmp_path), "--beam", "Xx")
    assert result.returncode == 2
    assert "conduit simulate: --beam: unknown species 'Xx'" in result.stderr
    assert not (tmp_path / "run_0001").exists()


def test_cli_serve_times_out_cleanly_without_clients(tmp_path):
    result = run_cli(
        "simulate",
        "serve",
        "--base-port",
        "0",
        "--events",
        "2",
        "--preset",
        "single-track",
        "--connect-timeout",
        "0.5",
        "--truth",
        str(tmp_path / "t.h5"),
    )
    assert result.returncode == 1
    assert result.stdout.startswith("serving 2 events as 11 DataExporters on ")
    assert f"truth: {tmp_path / 't.h5'}" in result.stdout
    assert "timed out after 0.5 s waiting for 1 client(s) on every port" in result.stderr


_SERVED = r"served 6 events, 240 frames, ([\d.]+) MB per client in [\d.]+ s \(\d+ events/s, \d+ MB/s\)"
_PACING = r"pacing: at most \d+\.\d{3} s behind schedule; \d+\.\d\d s waiting for clients that read slowly"


def _serve_six_events(tmp_path, *options: str) -> tuple[list[str], int]:
    """`conduit simulate serve` (6 events, pool 2, 100/s) read to EOF by 11 plain clients: (stdout lines, bytes read)."""
    import selectors
    import socket
    import subprocess

    from conduit_test_support import VENV_BIN

    proc = subprocess.Popen(
        [str(VENV_BIN / "conduit"), "simulate", "serve", "--base-port", "0", "--events", "6", "--pool", "2",
         "--rate", "100", "--preset", "single-track", "--truth", str(tmp_path / "t.h5"), *options],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        listening = proc.stdout.readline()
        ports = [int(p) for p in re.findall(r"cobo\d+=127\.0\.0\.1:(\d+)", listening)]
        if not ports:
            first, last = map(int, re.search(r"127\.0\.0\.1:(\d+)-(\d+)", listening).groups())
            ports = list(range(first, last + 1))
        assert len(ports) == 11, listening
        clients = [socket.create_connection(("127.0.0.1", port), timeout=60) for port in ports]
        received = 0
        with selectors.DefaultSelector() as readable:  # every client read at once: the server paces to the slowest
            for client in clients:
                readable.register(client, selectors.EVENT_READ)
            while readable.get_map():
                for key, _ in readable.select(timeout=60):
                    if chunk := key.fileobj.recv(1 << 20):
                        received += len(chunk)
                    else:
                        readable.unregister(key.fileobj)
                        key.fileobj.close()
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    return [listening.rstrip("\n"), *out.splitlines()], received


def test_cli_serve_says_when_it_serves_then_what_it_served_and_how_it_kept_pace(tmp_path):
    """A paced serve read by 11 plain clients: the serving line once every client is there, the totals, and
    the pacing line (how far behind schedule, how long it waited for slow readers)."""
    lines, received = _serve_six_events(tmp_path)
    listening, serving, served, pacing = lines
    assert listening.startswith("serving 6 events (a pool of 2 events, served cyclically) as 11 DataExporters on ")
    assert serving == "every port has its 1 client(s): serving"
    totals = re.fullmatch(_SERVED, served)
    assert totals and abs(float(totals[1]) * 1e6 - received) <= 0.05e6, (served, received)
    assert re.fullmatch(_PACING, pacing)


def test_cli_serve_quiet_prints_where_it_serves_and_one_final_line(tmp_path):
    """-q (on shift, serve in a corner terminal): the ports to connect to, then one line at the end that still
    says what was served and whether it kept pace; no serving line, no separate pacing line."""
    lines, received = _serve_six_events(tmp_path, "-q")
    listening, final = lines
    assert listening.startswith("serving 6 events (a pool of 2 events, served cyclically) as 11 DataExporters on ")
    totals = re.fullmatch(f"{_SERVED}; {_PACING}", final)
    assert totals and abs(float(totals[1]) * 1e6 - received) <= 0.05e6, (final, received)


def test_simulate_source_runs_a_pipeline(tmp_path):
    from conduit.config.pipeline import load_pipeline
    from conduit.engine.runner import run_pipeline

    pipeline_file = tmp_path / "sim.toml"
    pipeline_file.write_text(
        textwrap.dedent("""
        [source]
        kind = "simulate"
        events = 4
        seed = 9
        preset = "single-track"
        run = 12
        truth = "out/truth_{run:04d}.h5"

        [detector]
        magnetic_field = 2.5

        [engine]
        workers = 0
    """)
    )
    pipeline = load_pipeline(pipeline_file)
    seen = []
    summary = run_pipeline(pipeline, on_event=seen.append, handle_signals=False)
    assert summary.error is None
    assert summary.received == 4
    assert [e.id for e in seen] == [0, 1, 2, 3]
    assert all(e.run == 12 for e in seen)
    sim = Simulator(SimulationParams(events=4, seed=9, preset="single-track"), DetectorParams(magnetic_field=2.5))
    for ev in seen:
        assert np.array_equal(ev.traces, sim.event(ev.id).event.traces)
    with h5py.File(tmp_path / "out" / "truth_0012.h5", "r") as f:
        assert f.attrs["events"] == 4
        assert '"magnetic_field": 2.5' in f.attrs["detector"]


def test_simulate_source_reports_bad_parameters_with_lines(tmp_path):
    from conduit.config.pipeline import PipelineError, load_pipeline

    pipeline_file = tmp_path / "bad.toml"
    pipeline_file.write_text('[source]\nkind = "simulate"\npreset = "defualt"\ngain = -3\n')
    with pytest.raises(PipelineError) as err:
        load_pipeline(pipeline_file)
    text = "\n".join(err.value.lines)
    assert f"{pipeline_file}:3: source.preset: must be one of" in text and "did you mean 'default'" in text
    assert f"{pipeline_file}:4: source.gain: must be > 0" in text


def test_simulator_doc_names_every_parameter_and_preset():
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "simulator.md").read_text(encoding="utf-8")
    for spec in SimulationParams.specs():
        assert f"| `{spec.name}` | `--{spec.name.replace('_', '-')}" in doc, spec.name
    for name in PRESET_NAMES:
        assert f"| `{name}` |" in doc, name


def test_cli_graw_accepts_out_option_and_splits(tmp_path):
    result = run_cli(
        "simulate",
        "graw",
        "--out",
        str(tmp_path / "sim"),
        "--run",
        "2",
        "--events",
        "2",
        "--preset",
        "single-track",
        "--stamp",
        "2024-05-06T07_08_09.010",
        "--split-size",
        "0.02",
    )
    assert result.returncode == 0, result.stderr
    run = tmp_path / "sim" / "run_0002"
    assert f"in {run} " in result.stdout and f"truth: {tmp_path / 'sim' / 'run_0002_truth.h5'}" in result.stdout
    files = sorted(p.name for p in (run / "mm3").iterdir())
    assert "CoBo3_AsAd0_2024-05-06T07_08_09.010_0000.graw" in files
    assert "CoBo3_AsAd0_2024-05-06T07_08_09.010_0001.graw" in files  # 20 kiB splits: one frame per file
    missing = run_cli("simulate", "hdf5", "--events", "1")
    assert missing.returncode == 2
    assert "conduit simulate: missing the output file (positional or --out)" in missing.stderr


def test_simulate_source_loopback_takes_the_online_path(tmp_path):
    """loopback = true: served by 11 DataExporters on 127.0.0.1, received and built by the exporter source."""
    from conduit.config.pipeline import load_pipeline
    from conduit.engine.runner import run_pipeline

    pipeline_file = tmp_path / "demo.toml"
    pipeline_file.write_text(
        textwrap.dedent("""
        [source]
        kind = "simulate"
        loopback = true
        events = 6
        seed = 4
        truth = "truth.h5"

        [engine]
        workers = 0
    """)
    )
    seen = []
    summary = run_pipeline(load_pipeline(pipeline_file), on_event=seen.append, handle_signals=False)
    assert summary.error is None, summary.error
    assert summary.received == 6 and summary.complete == 6
    assert summary.source_counters["frames"] == 6 * 40 and summary.source_counters["bad_frames"] == 0
    sim = Simulator(SimulationParams(events=6, seed=4))

    def rows(t):  # the builder orders rows within an AsAd its own way
        return t[np.lexsort((t[:, 3], t[:, 2], t[:, 1], t[:, 0]))]

    for ev in sorted(seen, key=lambda e: e.id):
        assert ev.complete
        assert np.array_equal(rows(ev.traces), rows(sim.event(ev.id).event.traces))
    with h5py.File(tmp_path / "truth.h5", "r") as f:
        assert f.attrs["events"] == 6


def test_rate_needs_loopback(tmp_path):
    from conduit.config.pipeline import PipelineError, load_pipeline

    pipeline_file = tmp_path / "bad.toml"
    pipeline_file.write_text('[source]\nkind = "simulate"\nrate = 50.0\n')
    with pytest.raises(PipelineError, match="source.rate: applies with loopback = true only"):
        load_pipeline(pipeline_file)


def test_cli_keeps_an_existing_output_and_truth_file(tmp_path):
    """The recording rule of `conduit run` (docs/outputs.md) holds for the simulator's files too: a second
    `conduit simulate` on the same paths keeps the first files under numbered names, byte for byte."""
    args = ["simulate", "graw", str(tmp_path), "--events", "2", "--seed", "1", "--preset", "single-track",
            "--noise-pads", "0", "-q"]
    assert run_cli(*args).returncode == 0
    run_dir, truth = tmp_path / "run_0001", tmp_path / "run_0001_truth.h5"
    first_files = {p.relative_to(run_dir): p.read_bytes() for p in run_dir.rglob("*.graw")}
    first_truth = truth.read_bytes()
    second = run_cli(*args[:-1], "--seed", "2")
    assert second.returncode == 0, second.stderr
    assert "run_0001 already existed: kept it as run_0001.1" in second.stderr
    assert "run_0001_truth.h5 already existed: kept it as run_0001_truth.1.h5" in second.stderr
    kept = tmp_path / "run_0001.1"
    assert {p.relative_to(kept): p.read_bytes() for p in kept.rglob("*.graw")} == first_files
    assert (tmp_path / "run_0001_truth.1.h5").read_bytes() == first_truth
    # The new run's files are named by their own start time: the same folders and count, new bytes.
    second_files = {p.relative_to(run_dir): p.read_bytes() for p in run_dir.rglob("*.graw")}
    assert sorted(p.parent for p in second_files) == sorted(p.parent for p in first_files)
    assert set(second_files.values()).isdisjoint(first_files.values())
    refused = run_cli(*args, "--existing", "refuse")
    assert refused.returncode == 1 and "already exists" in refused.stderr
    assert not (tmp_path / "run_0001.2").exists()


def test_simulate_source_keeps_an_earlier_truth_file(tmp_path):
    path = tmp_path / "sim.toml"
    path.write_text(textwrap.dedent("""
        [source]
        kind = "simulate"
        events = 3
        preset = "single-track"
        noise_pads = 0
        run = 5
        truth = "truth_{run:04d}.h5"
    """))
    truth = path.parent / "truth_0005.h5"
    truth.write_bytes(b"an earlier truth file")
    result = run_cli("run", str(path))
    assert result.returncode == 0, result.stderr
    assert (path.parent / "truth_0005.1.h5").read_bytes() == b"an earlier truth file"
    with h5py.File(truth, "r") as f:
        assert f.attrs["events"] == 3
