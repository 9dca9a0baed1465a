"""The ``graw`` source under the same DAQ faults as the live path (issue 12): the same rules, exact counts.

Run folders are written frame by frame with the adversarial encoder (``adversarial_exporter``,
written from the format reference), one file per (cobo, asad) stream as the DAQ writes them.
"""

from __future__ import annotations

from pathlib import Path

from adversarial_exporter import RUN_TICKS, Daq
from conduit.config.pipeline import load_pipeline
from conduit.engine.runner import run_pipeline

NO_LOSS = {"bad_frames": 0, "late_frames": 0, "duplicate_frames": 0, "quarantined_ahead": 0,
           "quarantined_behind": 0, "restart_frames": 0, "wrong_cobo_frames": 0, "items_dropped": 0,
           "queue_full_events": 0}


def write_run(folder: Path, daq: Daq, events, *, fault=None) -> None:
    """One .graw file per stream; ``events`` are ids (run 0) or (run, id); ``fault(cobo, asad, run, event)``
    returns the header id to write instead (None: the true one)."""
    for cobo, asad in daq.asads:
        path = folder / f"mm{cobo}" / f"CoBo{cobo}_AsAd{asad}_2024-01-01T00:00:00.000_0000.graw"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as fh:
            for item in events:
                run, event = item if isinstance(item, tuple) else (0, item)
                header_id = fault(cobo, asad, run, event) if fault else None
                fh.write(daq.frame(cobo, asad, event, run=run, header_id=header_id))


def replay(folder: Path, tmp_path: Path):
    text = f'[source]\nkind = "graw"\npath = "{folder}"\n[engine]\nworkers = 0\n'
    seen = []
    summary = run_pipeline(load_pipeline(tmp_path / "replay.toml", text=text), handle_signals=False,
                           on_event=seen.append)
    assert summary.error is None
    return summary, seen


def keys(seen) -> list[tuple[int, int]]:
    return [(int(ev.timestamp // RUN_TICKS), ev.id) for ev in seen]


def incomplete(seen) -> dict[int, tuple]:
    return {ev.id: ev.missing for ev in seen if not ev.complete}


def test_one_bumped_id_does_not_drop_an_asad_for_the_rest_of_the_file(tmp_path, emap):
    """Stream (3, 1)'s frame of event 150 says 650: that frame is quarantined; the stream is not held back
    behind it (the issue lost that AsAd for the rest of the file)."""
    daq = Daq(emap)
    folder = tmp_path / "run_0001"
    write_run(folder, daq, range(300), fault=lambda c, a, r, e: 650 if (c, a, e) == (3, 1, 150) else None)
    summary, seen = replay(folder, tmp_path)
    assert keys(seen) == [(0, i) for i in range(300)]  # in id order, each once
    assert incomplete(seen) == {150: ((3, 1),)}
    assert summary.losses == NO_LOSS | {"quarantined_ahead": 1}
    assert sum(daq.check_event(ev) for ev in seen) == 0


def test_a_stream_whose_first_frame_is_far_ahead(tmp_path, emap):
    """The very first frame of stream (8, 2) says 900: judged once the others set the consensus."""
    daq = Daq(emap)
    folder = tmp_path / "run_0002"
    write_run(folder, daq, range(50), fault=lambda c, a, r, e: 900 if (c, a, e) == (8, 2, 0) else None)
    summary, seen = replay(folder, tmp_path)
    assert keys(seen) == [(0, i) for i in range(50)]
    assert incomplete(seen) == {0: ((8, 2),)}
    assert summary.losses == NO_LOSS | {"quarantined_ahead": 1}


def test_one_frame_going_back_is_a_glitch(tmp_path, emap):
    """Stream (5, 2)'s frame of event 200 says 20, then the stream goes on: quarantined, not a restart."""
    daq = Daq(emap)
    folder = tmp_path / "run_0003"
    write_run(folder, daq, range(300), fault=lambda c, a, r, e: 20 if (c, a, e) == (5, 2, 200) else None)
    summary, seen = replay(folder, tmp_path)
    assert keys(seen) == [(0, i) for i in range(300)]
    assert incomplete(seen) == {200: ((5, 2),)}
    assert summary.losses == NO_LOSS | {"quarantined_behind": 1}
    assert summary.source_counters["restarts"] == 0 and summary.source_counters["lone_restarts"] == 0


def test_one_stream_restarting_alone(tmp_path, emap):
    """Stream (7, 0) restarts its counter at event 200 (its frames of 200..299 say 0..99): counted, no phantom
    or duplicate events, the other streams' events all built."""
    daq = Daq(emap)
    folder = tmp_path / "run_0004"
    write_run(folder, daq, range(300), fault=lambda c, a, r, e: e - 200 if (c, a) == (7, 0) and e >= 200 else None)
    summary, seen = replay(folder, tmp_path)
    assert keys(seen) == [(0, i) for i in range(300)]
    assert incomplete(seen) == {e: ((7, 0),) for e in range(200, 300)}
    assert summary.losses == NO_LOSS | {"restart_frames": 100}
    c = summary.source_counters
    assert c["restarts"] == 0 and c["lone_restarts"] == 1
    assert sum(daq.check_event(ev) for ev in seen) == 0


def test_every_stream_restarts_in_the_same_files(tmp_path, emap):
    """The files hold run 0 (events 0..149) then run 1 (0..99): one restart, 250 complete events, in order."""
    daq = Daq(emap)
    folder = tmp_path / "run_0005"
    write_run(folder, daq, [(0, e) for e in range(150)] + [(1, e) for e in range(100)])
    summary, seen = replay(folder, tmp_path)
    assert keys(seen) == [(0, i) for i in range(150)] + [(1, i) for i in range(100)]
    assert incomplete(seen) == {}
    assert summary.losses == NO_LOSS
    assert summary.source_counters["restarts"] == 1
    assert sum(daq.check_event(ev) for ev in seen) == 0
