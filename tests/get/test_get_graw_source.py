"""The ``graw`` source on run folders written by the test, driven through the real engine."""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest

from conduit.config.pipeline import PipelineError, load_pipeline
from conduit.engine.runner import run_pipeline
from conduit.get.frames import encode_event_frames, scan_frames
from conduit.get.grawfiles import RunWriter, count_events, find_run

FPN = np.full((4, 4, 512), 250)


def make_events(emap, n, seed=0, n_pads=50):
    rng = np.random.default_rng(seed)
    events = []
    for i in range(n):
        pads = rng.choice(emap.n_pads, n_pads, replace=False)
        t = np.zeros((n_pads, 517), np.int16)
        t[:, :4] = emap.hardware_of(pads)
        t[:, 4] = pads
        t[:, 5:] = rng.integers(0, 4096, (n_pads, 512))
        events.append((100 + i, canonical(t), 1000 * i + 7, 1000 * i + 9))
    return events


def canonical(t):
    return t[np.lexsort((t[:, 3], t[:, 2], t[:, 1], t[:, 0]))]


def write_run(folder, emap, events, *, drop=(), split_bytes=1 << 30, old_names=False, header_cobo=None,
              mode="partial"):
    """Write ``events`` as a run folder; ``drop`` = {(event_id, (cobo, asad))} frames left out."""
    with RunWriter(folder, split_bytes=split_bytes, old_names=old_names) as w:
        for evt, traces, ts, ts_other in events:
            frames = encode_event_frames(traces, evt, timestamp=ts, timestamp_other=ts_other, fpn=FPN,
                                         asads=emap.asads, mode=mode)
            for key, frame in frames.items():
                if (evt, key) in drop:
                    continue
                if header_cobo is not None:
                    frame = frame[:26] + bytes([header_cobo]) + frame[27:]
                w.write(*key, frame)
    return w.files


def run(folder, tmp_path, extra=""):
    path = tmp_path / "replay.toml"
    text = f'[source]\nkind = "graw"\npath = "{folder}"\n{extra}\n[engine]\nworkers = 0\n'
    pipeline = load_pipeline(path, text=text)
    seen = []
    summary = run_pipeline(pipeline, handle_signals=False, on_event=seen.append)
    return summary, seen


def test_run_folder_with_split_files(emap, tmp_path):
    events = make_events(emap, 12)
    folder = tmp_path / "run_0042"
    files = write_run(folder, emap, events, split_bytes=150_000)
    run_folder = find_run(folder)
    assert run_folder.run == 42 and len(run_folder.streams) == 40
    assert max(len(s.files) for s in run_folder.streams) >= 2  # the splits are really there
    assert all(f.parent.name == f"mm{f.name[4:].split('_')[0]}" for f in files)
    summary, seen = run(folder, tmp_path)
    assert summary.error is None
    assert [e.id for e in seen] == [e[0] for e in events]
    for ev, (evt, traces, ts, ts_other) in zip(seen, events):
        assert ev.complete and ev.missing == () and ev.run == 42
        assert (ev.timestamp, ev.timestamp_other) == (ts, ts_other)
        assert np.array_equal(canonical(ev.traces), traces)
    c = summary.source_counters
    assert c["frames"] == 12 * 40 and c["complete_events"] == 12 and c["bad_frames"] == 0
    assert c["files"] == len(files) and c["streams"] == 40
    assert summary.complete == 12 and summary.incomplete == 0


def test_missing_asad_gives_incomplete_events(emap, tmp_path):
    events = make_events(emap, 8, seed=1)
    ids = [e[0] for e in events]
    drop = {(ids[3], (3, 2)), (ids[4], (3, 2)), (ids[4], (10, 1)), (ids[7], (0, 0))}
    folder = tmp_path / "run_0005"
    write_run(folder, emap, events, drop=drop)
    summary, seen = run(folder, tmp_path)
    assert [e.id for e in seen] == ids
    missing = {e.id: e.missing for e in seen if not e.complete}
    assert missing == {ids[3]: ((3, 2),), ids[4]: ((3, 2), (10, 1)), ids[7]: ((0, 0),)}
    for ev, (evt, traces, *_ts) in zip(seen, events):
        lost = {k for (i, k) in drop if i == evt}
        keep = np.array([(c, a) not in lost for c, a in traces[:, :2].tolist()], bool)
        assert np.array_equal(canonical(ev.traces), traces[keep])
    # CoBo 10 lost event ids[4] on AsAd 1 only: AsAd 0 still carries timestamp_other.
    assert seen[4].timestamp_other == events[4][3]
    assert summary.incomplete == 3 and summary.source_counters["incomplete_events"] == 3


def test_interleaved_ids_and_a_stream_that_lacks_early_events(emap, tmp_path):
    """Event ids jump (not contiguous) and one AsAd starts late: the merge still orders events."""
    events = make_events(emap, 6, seed=2)
    events = [(evt * 3 + (i % 2), t, a, b) for i, (evt, t, a, b) in enumerate(events)]
    drop = {(events[0][0], (9, 3)), (events[1][0], (9, 3))}
    folder = tmp_path / "run_0006"
    write_run(folder, emap, events, drop=drop)
    summary, seen = run(folder, tmp_path)
    assert [e.id for e in seen] == [e[0] for e in events]
    assert [e.complete for e in seen] == [False, False, True, True, True, True]


def test_old_style_names_and_cobo_zero_headers(emap, tmp_path, caplog):
    events = make_events(emap, 4, seed=3)
    folder = tmp_path / "run_0093"
    files = write_run(folder, emap, events, old_names=True, header_cobo=0)
    assert all(f.name.startswith("CoBo_AsAd") for f in files)
    with caplog.at_level(logging.INFO, logger="conduit"):
        summary, seen = run(folder, tmp_path)
    assert summary.error is None and len(seen) == 4
    for ev, (_, traces, *_ts) in zip(seen, events):
        assert ev.complete and np.array_equal(canonical(ev.traces), traces)
    assert seen[0].timestamp_other == events[0][3]  # CoBo 10 recognised from its mm10 folder
    assert caplog.text.count("old firmware") == 1


def test_truncated_last_frame(emap, tmp_path, caplog):
    events = make_events(emap, 5, seed=4)
    folder = tmp_path / "run_0001"
    write_run(folder, emap, events)
    victim = next(p for p in (folder / "mm6").iterdir() if "AsAd2" in p.name)
    data = victim.read_bytes()
    cut = len(data) - 3000
    victim.write_bytes(data[:cut])
    last = [f.offset for f in scan_frames(data)][-1]
    with caplog.at_level(logging.WARNING):
        summary, seen = run(folder, tmp_path)
    assert summary.error is None
    assert [e.id for e in seen] == [e[0] for e in events]
    assert [e.complete for e in seen] == [True] * 4 + [False]
    assert seen[4].missing == ((6, 2),)
    assert summary.source_counters["bad_frames"] == 1
    line = next(r.getMessage() for r in caplog.records if "truncated" in r.getMessage())
    assert f"{victim} @ byte {last}: truncated frame" in line and "\n" not in line


def test_garbage_inside_a_file_is_skipped_by_resync(emap, tmp_path, caplog):
    events = make_events(emap, 4, seed=5)
    folder = tmp_path / "run_0002"
    write_run(folder, emap, events)
    victim = next(p for p in (folder / "mm1").iterdir() if "AsAd0" in p.name)
    data = victim.read_bytes()
    frame_len = [f.offset for f in scan_frames(data)][1]
    victim.write_bytes(data[:frame_len] + os.urandom(999) + data[frame_len:])
    with caplog.at_level(logging.WARNING):
        summary, seen = run(folder, tmp_path)
    assert [e.complete for e in seen] == [True] * 4
    assert summary.source_counters["bad_frames"] == 1
    assert f"{victim} @ byte {frame_len}" in caplog.text


def test_full_readout_run(emap, tmp_path):
    events = make_events(emap, 2, seed=6, n_pads=20)
    folder = tmp_path / "run_0003"
    write_run(folder, emap, events, mode="full")
    summary, seen = run(folder, tmp_path)
    assert len(seen) == 2 and all(e.complete for e in seen)
    # Full readout delivers every channel of every AsAd: all 10,240 pads, zeros where nothing was written.
    ev = seen[0]
    assert ev.n_traces == 10_240
    got = {int(p): row for p, row in zip(ev.traces[:, 4], ev.traces[:, 5:])}
    for row in events[0][1]:
        assert np.array_equal(got[int(row[4])], row[5:])


def test_total_and_run_number(emap, tmp_path):
    events = make_events(emap, 7, seed=7, n_pads=5)
    folder = tmp_path / "run_0123"
    write_run(folder, emap, events, drop={(events[2][0], (0, 0))})
    from conduit.sources.graw import GrawParams, GrawSource
    from conduit.stage import StageContext

    src = GrawSource(GrawParams(path=folder), StageContext())
    assert src.run_number() == 123 and src.total() == 7
    stream00 = next(s for s in find_run(folder).streams if (s.cobo, s.asad) == (0, 0))
    assert count_events(stream00) == 6


def test_missing_folder_is_a_one_line_error(tmp_path):
    summary, seen = run(tmp_path / "run_0404", tmp_path)
    assert seen == [] and summary.error is not None
    assert f"{tmp_path / 'run_0404'}: no such run folder" in summary.error and "\n" not in summary.error


def test_folder_without_graw_files(tmp_path):
    (tmp_path / "run_0009" / "mm0").mkdir(parents=True)
    summary, _ = run(tmp_path / "run_0009", tmp_path)
    assert "no .graw files" in summary.error


def test_builder_options_reach_the_builder(emap, tmp_path):
    events = make_events(emap, 3, seed=8, n_pads=800)
    folder = tmp_path / "run_0004"
    write_run(folder, emap, events)
    with pytest.raises(Exception, match=r"x.toml:4: source.expected_asads.1: \[5, 5\] is not a \(cobo 0..10, asad 0..3\) pair"):
        load_pipeline(tmp_path / "x.toml", text=f'[source]\nkind = "graw"\npath = "{folder}"\n'
                                                 "expected_asads = [[0, 0], [5, 5]]\n")
    summary, seen = run(folder, tmp_path, "expected_asads = [[0, 0], [0, 1]]\nfpn_subtraction = true\n")
    assert all(e.complete for e in seen) and summary.source_counters["unexpected_frames"] == 3 * 38
    # Complete as soon as (0, 0) and (0, 1) reported (the merge feeds them first): only their traces,
    # with the FPN (flat 250) subtracted from every sample.
    truth = events[0][1]
    truth = truth[(truth[:, 0] == 0) & (truth[:, 1] <= 1)]
    assert len(truth) > 0
    assert np.array_equal(canonical(seen[0].traces)[:, :5], truth[:, :5])
    assert np.array_equal(canonical(seen[0].traces)[:, 5:], truth[:, 5:] - 250)


def test_bad_electronics_map_is_reported_with_file_and_line(emap, tmp_path):
    events = make_events(emap, 1, seed=9, n_pads=5)
    folder = tmp_path / "run_0010"
    write_run(folder, emap, events)
    (tmp_path / "bad_map.csv").write_text("cobo,asad,aget,aget channel,pad\n0,0,0,0,1\n0,0,0,99,2\n")
    path = tmp_path / "replay.toml"
    text = (f'[source]\nkind = "graw"\npath = "{folder}"\n[detector]\nelectronics_map = "bad_map.csv"\n'
            "[engine]\nworkers = 0\n")
    with pytest.raises(PipelineError) as caught:  # found when the pipeline is loaded, before anything runs
        load_pipeline(path, text=text)
    assert caught.value.lines == [f"{path}:5: detector.electronics_map: {tmp_path / 'bad_map.csv'}:3: "
                                  "channel 99 out of range 0..67"]


def test_custom_five_column_map(emap, tmp_path):
    """A pipeline's own map: only its channels become rows, with its pad numbers."""
    events = make_events(emap, 2, seed=10, n_pads=300)
    folder = tmp_path / "run_0011"
    write_run(folder, emap, events)
    rows = events[0][1]
    chosen = rows[:3]
    lines = ["cobo,asad,aget,aget channel,pad"] + [f"{r[0]},{r[1]},{r[2]},{r[3]},{i}" for i, r in enumerate(chosen)]
    (tmp_path / "mine.csv").write_text("\n".join(lines) + "\n")
    text = (f'[source]\nkind = "graw"\npath = "{folder}"\n[detector]\nelectronics_map = "mine.csv"\n'
            "[engine]\nworkers = 0\n")
    seen = []
    summary = run_pipeline(load_pipeline(tmp_path / "replay.toml", text=text), handle_signals=False,
                           on_event=seen.append)
    ev = seen[0]
    assert ev.complete  # expected = the AsAds of the custom map
    got = canonical(ev.traces)
    assert got[:, 4].tolist() == [0, 1, 2]
    assert np.array_equal(got[:, 5:], chosen[:, 5:]) and np.array_equal(got[:, :4], chosen[:, :4])
    assert summary.source_counters["unmapped_channels"] > 0


def _garbage(path, n_bytes, seed):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(np.random.default_rng(seed).integers(0, 256, n_bytes, dtype=np.uint8).tobytes())
    return path


def test_a_folder_of_pure_garbage_is_an_error_before_any_output_is_touched(tmp_path):
    folder = tmp_path / "run_0013"
    first = _garbage(folder / "mm0" / "CoBo0_AsAd0_2024-01-01T00:00:00.000_0000.graw", 300_000, 1)
    _garbage(folder / "mm1" / "CoBo1_AsAd2_2024-01-01T00:00:00.000_0000.graw", 200_000, 2)
    previous = tmp_path / "out" / "run_0013.h5"
    previous.parent.mkdir()
    previous.write_bytes(b"the recording of an earlier attempt")
    summary, seen = run(folder, tmp_path, extra="")
    # The same pipeline with a recorder: the run fails at start-up, the earlier file stays as it was.
    text = (f'[source]\nkind = "graw"\npath = "{folder}"\n[engine]\nworkers = 0\n'
            '[[stage]]\nuse = "hdf5"\nhistograms = false\n')
    recorded = run_pipeline(load_pipeline(tmp_path / "record.toml", text=text), handle_signals=False)
    for s in (summary, recorded):
        assert s.exit_code == 1 and not s.started and s.received == 0 and s.outputs == []
        assert s.error.startswith(f"source 'graw': {folder}: no valid GET frame in its 2 .graw files; first problem: "
                                  f"{first} @ byte 0: ")
        assert "\n" not in s.error
    assert seen == []
    assert sorted(p.name for p in previous.parent.iterdir()) == ["run_0013.h5"]
    assert previous.read_bytes() == b"the recording of an earlier attempt"


def test_one_garbage_stream_among_good_ones_is_named(emap, tmp_path, caplog):
    events = make_events(emap, 3, seed=12, n_pads=20)
    folder = tmp_path / "run_0014"
    write_run(folder, emap, events)
    junk = _garbage(folder / "mm10" / "CoBo10_AsAd3_2024-01-01T00:00:00.000_0000.graw", 50_000, 3)
    with caplog.at_level(logging.WARNING):
        summary, seen = run(folder, tmp_path)
    assert summary.exit_code == 0 and [e.id for e in seen] == [e[0] for e in events]
    assert f"{folder}: no valid GET frame in CoBo 10 AsAd 3 ({junk.name})" in caplog.text
