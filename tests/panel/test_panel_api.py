"""The control panel's JSON API over real HTTP on loopback: each control and its effect, and bad input.

Every test runs `conduit run PIPELINE --panel 127.0.0.1:0` in a subprocess (a
steady 50-100 events/s source, a transform with a parameter, histogram, record,
hdf5 and rerun sinks) and checks what the outputs hold once the run has ended.
"""

from __future__ import annotations

import json
import subprocess
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import h5py
import pytest

from conduit_panel.client import PanelError
from conduit_test_support import VENV_BIN
from panel_support import RECORDERS, read_record


def events_of(records: list) -> list[dict]:
    return [r for r in records if isinstance(r, dict) and "id" in r]


def stop_and_wait(run) -> int:
    assert run.client().post("stop") == {"ok": True}
    return run.wait_exit()


def test_pause_and_resume_skip_analysis_of_exactly_the_events_between(start_panel_run):
    run = start_panel_run(rate=100)
    client = run.client()
    run.wait_for(lambda s: s["events"]["analysed"] >= 20, what="20 events analysed")
    paused = client.post("pause")
    assert paused["ok"] and paused["changed"] and paused["paused"]
    assert client.post("pause")["changed"] is False  # already paused
    status = run.wait_for(lambda s: s["events"]["received"] >= paused["from_sequence"] + 30, what="30 more events")
    assert status["paused"] is True
    resumed = client.post("resume")
    assert resumed["changed"] and resumed["from_sequence"] > paused["from_sequence"] + 29
    run.wait_for(lambda s: s["events"]["received"] >= resumed["from_sequence"] + 20, what="20 more events")
    assert stop_and_wait(run) == 0

    records = events_of(read_record(run.dir / "out/record_7.jsonl"))
    first, last = paused["from_sequence"], resumed["from_sequence"]
    assert [r["sequence"] for r in records] == list(range(len(records)))  # every event recorded, in order
    assert [r["sequence"] for r in records if not r["analysed"]] == list(range(first, last))
    assert all(r["mark"] == 1.0 for r in records if r["analysed"])
    assert f"{'events analysed':<40} {len(records) - (last - first):>12}" in run.stdout
    assert f"{'events not analysed (paused)':<40} {last - first:>12}" in run.stdout


def test_reset_zeroes_the_histograms_between_the_same_two_events_for_every_sink(start_panel_run):
    run = start_panel_run(rate=100)
    run.wait_for(lambda s: s["events"]["delivered"] >= 40, what="40 events delivered")
    reset = run.client().post("reset")
    run.wait_for(lambda s: s["events"]["delivered"] >= reset["from_sequence"] + 25, what="25 more events")
    assert stop_and_wait(run) == 0

    records = read_record(run.dir / "out/record_7.jsonl")
    at = records.index("reset")
    assert records[at + 1]["sequence"] == reset["from_sequence"] > 40 - 1
    delivered = len(events_of(records))
    with h5py.File(run.dir / "out/histograms_run_0007.h5") as f:
        # Only the events after the reset are counted: the histograms were zeroed at that event.
        assert f["histograms"].attrs["events"] == delivered - reset["from_sequence"]
        assert f["histograms/cluster_multiplicity"].attrs["entries"] == delivered - reset["from_sequence"]


def test_new_run_closes_complete_files_and_opens_the_next_runs(start_panel_run):
    from rrd_read import read_rrd

    run = start_panel_run(rate=60, extra=RECORDERS)
    run.wait_for(lambda s: s["events"]["delivered"] >= 30, what="30 events delivered")
    switch = run.client().post("new-run", {})
    assert switch["ok"] and switch["run"] == 8
    out = run.dir / "out"
    assert sorted(switch["closed"]) == sorted(str(out / n) for n in (
        "histograms_run_0007.h5", "record_7.jsonl", "run_0007.h5", "run_0007.rrd"))
    status = run.wait_for(lambda s: s["run"] == 8 and s["events"]["delivered"] >= 60, what="run 8 with events")
    assert status["runs"][0]["run"] == 7
    boundary = status["runs"][0]["last_sequence"] + 1
    # The closed run's files are complete while the next run is being written.
    with h5py.File(out / "run_0007.h5") as f:
        assert f["events"].attrs["min_event"] == 0 and f["events"].attrs["max_event"] == boundary - 1
        assert len(f["events"]) == boundary and f.attrs["run"] == 7
    assert not (out / "run_0007.h5.parts").exists()
    assert stop_and_wait(run) == 0

    first, second = read_record(out / "record_7.jsonl"), read_record(out / "record_8.jsonl")
    assert first[-1] == "closed" and second[-1] == "closed"
    assert [r["sequence"] for r in events_of(first)] == list(range(boundary))
    total = len(events_of(first)) + len(events_of(second))
    assert [r["sequence"] for r in events_of(second)] == list(range(boundary, total))
    assert {r["run"] for r in events_of(second)} == {8}
    with h5py.File(out / "run_0008.h5") as f:
        assert f.attrs["run"] == 8 and len(f["events"]) == total - boundary
        assert f["events"].attrs["min_event"] == boundary
    for number, ids in ((7, range(boundary)), (8, range(boundary, total))):
        with h5py.File(out / f"histograms_run_{number:04d}.h5") as f:  # each run counts its own events
            assert f["histograms"].attrs["events"] == len(ids)
        rows = read_rrd(out / f"run_{number:04d}.rrd")  # rerun's own reader: complete recordings
        assert sorted(r["event"] for r in rows["/event/cloud"]) == list(ids)  # sinkkit ids = sequence numbers


def test_set_changes_parameters_from_the_event_it_names_and_records_them(start_panel_run):
    run = start_panel_run(rate=80, extra=RECORDERS)
    client = run.client()
    run.wait_for(lambda s: s["events"]["analysed"] >= 25, what="25 events analysed")
    answer = client.post("set", {"set": ["panelkit.mark.value=7.5", 'panelkit.mark.label="b"']})
    change = answer["change"]
    assert change["changes"] == {"panelkit.mark.value": {"old": 1.0, "new": 7.5},
                                 "panelkit.mark.label": {"old": "a", "new": "b"}}
    status = run.wait_for(lambda s: s["changes"] and s["changes"][0]["event"] is not None, what="the change's first event")
    assert status["changes"][0]["event"] == change["sequence"]  # sinkkit event ids are 0, 1, 2 ...
    assert {p["key"]: p["value"] for p in status["parameters"]}["panelkit.mark.value"] == 7.5
    run.wait_for(lambda s: s["events"]["analysed"] >= change["sequence"] + 20, what="20 more events")
    assert client.post("set", {"set": ["panelkit.mark.value=7.5"]})["change"] is None  # already in force
    assert stop_and_wait(run) == 0

    records = read_record(run.dir / "out/record_7.jsonl")
    at = next(i for i, r in enumerate(records) if isinstance(r, dict) and "change" in r)
    assert records[at + 1]["sequence"] == change["sequence"]  # told between the two events
    events = events_of(records)
    assert all(r["mark"] == (1.0 if r["sequence"] < change["sequence"] else 7.5) for r in events)
    assert sum(r["mark"] == 7.5 for r in events) >= 20
    with h5py.File(run.dir / "out/run_0007.h5") as f:
        recorded = json.loads(f.attrs["parameter_changes"])
        initial = json.loads(f.attrs["pipeline_parameters"])
    assert [(c["event"], c["changes"]["panelkit.mark.value"]["new"]) for c in recorded] == [(change["sequence"], 7.5)]
    assert {"use": "panelkit.mark", "params": {"value": 1.0, "label": "a", "fail_ids": []}} in initial
    assert "parameters in force from event" in run.stderr


def test_gates_are_added_edited_and_refused_when_wrong(start_panel_run):
    run = start_panel_run(rate=50)
    client = run.client()
    run.wait_for(lambda s: s["events"]["analysed"] >= 5, what="5 events")
    gate = {"name": "protons", "histogram": "pid", "polygon": [[0.0, 0.0], [1.5, 0.0], [1.5, 40.0]]}
    assert client.post("gates", gate)["change"]["changes"]["histogram.gates"]["new"][0]["name"] == "protons"
    edited = client.post("gates", {**gate, "polygon": [[0.0, 0.0], [1.0, 0.0], [1.0, 20.0], [0.0, 20.0]]})
    assert len(edited["change"]["changes"]["histogram.gates"]["new"]) == 1
    with pytest.raises(PanelError) as bad:
        client.post("gates", {"name": "bad", "histogram": "pid", "polygon": [[0, 0], [1, 1]]})
    assert bad.value.lines == ["gate 'bad': a polygon needs at least 3 vertices, got 2"]
    with pytest.raises(PanelError) as bad:
        client.post("gates", {"name": "bad", "histogram": "nope", "polygon": [[0, 0], [1, 1], [1, 0]]})
    assert "unknown histogram 'nope'" in bad.value.lines[0]
    status = client.status()
    assert [g["name"] for g in status["gates"]["gates"]] == ["protons"]
    assert status["gates"]["gates"][0]["polygon"] == [[0.0, 0.0], [1.0, 0.0], [1.0, 20.0], [0.0, 20.0]]
    assert client.post("gates/remove", {"name": "protons"})["change"]["changes"]["histogram.gates"]["new"] == []
    assert stop_and_wait(run) == 0
    assert "gates now: protons" in run.stderr


def _raw(url: str, body: bytes | None, headers: dict, method: str = "POST") -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_bad_input_gets_a_clear_error_and_changes_nothing(start_panel_run):
    run = start_panel_run(rate=50)
    client = run.client()
    before = run.wait_for(lambda s: s["events"]["analysed"] >= 5, what="5 events")
    cases = [
        (["panelkit.mark.nonsense=1"], "--set panelkit.mark.nonsense=1: unknown key 'nonsense'; known keys: value, label, fail_ids"),
        (["panelkit.mark.value=101"], "--set panelkit.mark.value=101: must be ≤ 100, got 101.0"),
        (["panelkit.mark.value=true"], "--set panelkit.mark.value=true: expected a number, got True (bool)"),
        (["nostage.value=1"], "--set nostage.value=1: no section or stage named 'nostage' (did you mean 'stage'?)"),
        (["source.rate=5"], "source.rate=5: [source] cannot change while the run goes on; restart the run with "
                            "--set source.rate=5"),
        (['panelkit.record.path="x.jsonl"'], "panelkit.record.path: the panelkit.record stage's parameters cannot "
                                            "change while the run goes on (it takes: none); restart the run with --set"),
        (["value"], "--set value: expected section.key=value"),
        (["stage.1.use=panelkit.mark"], "stage.1.use=panelkit.mark: a stage cannot be swapped while the run goes "
                                        "on; restart the run with --set stage.1.use=panelkit.mark"),
    ]
    for assignments, message in cases:
        with pytest.raises(PanelError) as refused:
            # One good value with the bad one: all or nothing.
            client.post("set", {"set": ["panelkit.mark.value=9", *assignments]})
        assert refused.value.status == 400
        assert refused.value.lines == [message]
    url = run.url + "api/"
    assert _raw(url + "set", b'{"set": [', {"Content-Type": "application/json"})[1]["errors"][0].startswith(
        "malformed JSON: ")
    assert _raw(url + "set", b'["x"]', {"Content-Type": "application/json"}) == (
        400, {"ok": False, "errors": ["expected a JSON object, got list"]})
    assert _raw(url + "set", b'{"set": 5}', {"Content-Type": "application/json"}) == (
        400, {"ok": False, "errors": ['expected {"set": ["stage.key=value", ...]}']})
    assert _raw(url + "pause", b"pause=1", {"Content-Type": "application/x-www-form-urlencoded"}) == (
        415, {"ok": False, "errors": ["expected Content-Type: application/json, got application/x-www-form-urlencoded"]})
    assert _raw(url + "pause", None, {}, method="GET") == (
        405, {"ok": False, "errors": ["GET /api/pause: state changes are POST only"]})
    assert _raw(url + "pause", b"{}", {"Content-Type": "application/json", "Origin": "http://evil.example"}) == (
        403, {"ok": False, "errors": ["cross-origin request from http://evil.example refused"]})
    assert _raw(url + "pause", b"{}", {"Content-Type": "application/json", "Sec-Fetch-Site": "cross-site"})[0] == 403
    assert _raw(url + "status", None, {"Host": "evil.example:80"}, method="GET")[0] == 403  # DNS rebinding
    with pytest.raises(PanelError) as refused:
        client.post("new-run", {"run": 7})
    assert refused.value.lines == ["run 7 is the current run: give another number"]
    with pytest.raises(PanelError) as refused:
        client.post("new-run", {"run": -3})
    assert refused.value.lines == ["run number must be an integer ≥ 0, got -3"]

    # 100 concurrent status polls: every one answered with the full snapshot; the run goes on.
    def poll(_):
        return client.status()

    with ThreadPoolExecutor(max_workers=100) as pool:
        answers = list(pool.map(poll, range(100)))
    assert len(answers) == 100 and all(a["run"] == 7 and a["phase"] == "running" for a in answers)
    after = run.wait_for(lambda s: s["events"]["analysed"] >= before["events"]["analysed"] + 10, what="10 more")
    assert after["changes"] == [] and after["paused"] is False and after["run"] == 7
    assert {p["key"]: p["value"] for p in after["parameters"]}["panelkit.mark.value"] == 1.0
    assert stop_and_wait(run) == 0
    events = events_of(read_record(run.dir / "out/record_7.jsonl"))
    assert all(r["mark"] == 1.0 for r in events) and all(r["analysed"] for r in events)
    assert "run summary (interrupted)" in run.stdout and "error:" not in run.stdout


def test_beyond_loopback_every_control_needs_the_token(start_panel_run):
    token = "s3cret-token-for-tests"
    run = start_panel_run(rate=50, listen="0.0.0.0:0", env={"CONDUIT_PANEL_TOKEN": token})
    url = run.url.replace("0.0.0.0", "127.0.0.1")
    run.url = url
    assert "every control needs the token" in run.stderr and token not in run.stderr  # given: never printed
    status, answer = _raw(url + "api/pause", b"{}", {"Content-Type": "application/json"})
    assert (status, answer["errors"]) == (401, ["this panel needs its token (Authorization: Bearer TOKEN)"])
    status, answer = _raw(url + "api/pause", b"{}", {"Content-Type": "application/json",
                                                     "Authorization": "Bearer wrong-token-123"})
    assert (status, answer["errors"]) == (401, ["wrong token"])
    assert run.client(token="").status()["paused"] is False  # reading needs no token
    assert run.client(token=token).post("pause")["paused"] is True
    assert run.client(token=token).status()["paused"] is True
    assert run.client(token=token).post("stop") == {"ok": True}
    assert run.wait_exit() == 0


def test_a_generated_token_is_printed_once(start_panel_run):
    run = start_panel_run(rate=50, listen="0.0.0.0:0")
    printed = [line for line in run.stderr.splitlines() if "token" in line]
    assert len(printed) == 1 and "?token=" in printed[0]
    token = printed[0].split("?token=")[1].split()[0]
    run.url = run.url.replace("0.0.0.0", "127.0.0.1")
    with pytest.raises(PanelError):
        run.client(token="").post("reset")
    assert run.client(token=token).post("reset")["ok"]
    assert run.client(token=token).post("stop") == {"ok": True}
    assert run.wait_exit() == 0
    assert run.stderr.count(token) == 1  # never logged


def test_status_and_ctl_commands(start_panel_run):
    run = start_panel_run(rate=50)
    run.wait_for(lambda s: s["events"]["analysed"] >= 5, what="5 events")
    conduit = str(VENV_BIN / "conduit")

    def cli(*args):
        return subprocess.run([conduit, *args], capture_output=True, text=True, timeout=60)

    shown = cli("status", run.address)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("run 7  RUNNING  ") and "stage    panelkit.mark" in shown.stdout
    assert json.loads(cli("status", run.address, "--json").stdout)["run"] == 7
    assert cli("ctl", run.address, "pause").stdout.startswith("analysis paused from event #")
    assert cli("ctl", run.address, "resume").stdout.startswith("analysis resumed from event #")
    assert cli("ctl", run.address, "reset").stdout.startswith("histograms reset from event #")
    done = cli("ctl", run.address, "set", "panelkit.mark.value=3")
    assert done.returncode == 0 and "panelkit.mark.value 1.0 -> 3.0" in done.stdout
    refused = cli("ctl", run.address, "set", "panelkit.mark.value=-1")
    assert refused.returncode == 1
    assert refused.stderr.strip() == "conduit ctl set: --set panelkit.mark.value=-1: must be ≥ 0, got -1.0"
    switched = cli("ctl", run.address, "new-run", "12")
    assert switched.returncode == 0 and switched.stdout.startswith("run 12 started; closed: ")
    assert cli("ctl", run.address, "stop").returncode == 0
    assert run.wait_exit() == 0
    assert (run.dir / "out/record_12.jsonl").exists()
    nobody = cli("status", "127.0.0.1:9")
    assert nobody.returncode == 2 and "no conduit panel answers at http://127.0.0.1:9" in nobody.stderr
