"""What the view shows is right for simulated AT-TPC events, read back from real .rrd recordings.

* the drawn helices lie on their tracks' points for both field signs (they were once mirror images);
* a pad is drawn at the same place in the pad-plane panel and in the 3-D view as the camera shows it;
* a file replay recorded to .rrd holds every event of the run, drawn.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conduit.config.pipeline import load_pipeline
from conduit.engine.runner import run_pipeline
from conduit.padplane import load_pad_plane
from conduit_stages.rerun_sink.blueprint import CAMERA

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from rrd_read import event_rows, latest_state, read_rrd  # noqa: E402

VENV_BIN = Path(sys.executable).parent
ANALYSIS = "".join(f'[[stage]]\nuse = "{use}"\n\n' for use in ("pointcloud", "cluster.hdbscan", "estimate")) \
    + '[[stage]]\nuse = "histogram"\nsave = false\n'


def simulated_recording(folder: Path, field: float, events: int = 16) -> Path:
    """Simulate ``events`` events in ``field`` (T), analyse them and record the view to an .rrd file."""
    folder.mkdir(parents=True, exist_ok=True)
    text = (f'[source]\nkind = "simulate"\nevents = {events}\nseed = 5\nrun = 2\n\n'
            f'[detector]\nmagnetic_field = {field}\n\n[engine]\nworkers = 0\n{ANALYSIS}\n'
            '[[stage]]\nuse = "rerun"\nmode = "save"\npath = "view.rrd"\n')
    summary = run_pipeline(load_pipeline(folder / "pipe.toml", text=text), handle_signals=False)
    assert summary.exit_code == 0, summary.error
    return folder / "view.rrd"


@pytest.fixture(scope="module", params=[2.85, -2.85], ids=["B+", "B-"])
def recording(request, tmp_path_factory):
    field = request.param
    return field, read_rrd(simulated_recording(tmp_path_factory.mktemp("view"), field))


def _distances(points: np.ndarray, strip: np.ndarray) -> np.ndarray:
    """Distance of each point to the polyline ``strip`` (to its segments, not just its vertices)."""
    a, b = strip[:-1], strip[1:]
    ab = b - a
    t = np.clip(np.einsum("psk,sk->ps", points[:, None, :] - a[None], ab) / np.maximum((ab * ab).sum(1), 1e-12),
                0.0, 1.0)
    nearest = a[None] + t[..., None] * ab[None]
    return np.linalg.norm(points[:, None, :] - nearest, axis=2).min(axis=1)


def test_helices_lie_on_their_tracks_for_both_field_signs(recording):
    field, rows = recording
    medians, mirrored = [], []
    clusters = {r["event"]: r for r in event_rows(rows, "/event/clusters")}
    for r in event_rows(rows, "/event/tracks"):
        points = np.array(clusters[r["event"]]["Points3D:positions"])
        classes = np.array(clusters[r["event"]]["Points3D:class_ids"])
        # what the viewer shows: track classes equal to the previous event's are not sent again
        shown = latest_state(rows, "/event/tracks", r["event"])
        for strip, cls in zip(shown["LineStrips3D:strips"], shown["LineStrips3D:class_ids"]):
            strip = np.array(strip)
            mine = points[classes == cls]
            if len(strip) < 10 or len(mine) < 20:
                continue
            medians.append(np.median(_distances(mine, strip)))
            # The same helix turned the other way round its circle (what was drawn before): far from the points.
            mirrored.append(np.median(_distances(mine, _reversed(strip))))
    assert len(medians) >= 8, f"too few fitted tracks in the recording ({len(medians)})"
    assert np.median(medians) < 5.0, (field, np.round(medians, 1))
    assert np.median(mirrored) > 4 * np.median(medians), (field, np.median(mirrored))


def _reversed(strip: np.ndarray) -> np.ndarray:
    """The helix on the same circle, from the same vertex with the same slope, turning the other way.

    Reflecting across the line from the vertex through the circle's centre (perpendicular to the
    initial transverse direction) maps the circle onto itself and reverses the sense of rotation.
    """
    vertex = strip[0]
    d = strip[1, :2] - vertex[:2]
    d = d / np.linalg.norm(d)
    n = np.array([-d[1], d[0]])
    rel = strip[:, :2] - vertex[:2]
    xy = vertex[:2] - (rel @ d)[:, None] * d + (rel @ n)[:, None] * n
    return np.column_stack([xy, strip[:, 2]])


def test_a_pad_is_at_the_same_place_in_the_pad_plane_and_the_3d_view(recording):
    """Pad-plane panel (2-D, drawn y down) vs the 3-D view's camera, both seen from +z: screen x = x, screen y = -y."""
    _, rows = recording
    pads = load_pad_plane(None)
    # The 3-D camera: above the pad plane (z = 1000 mm) on the -y side, z up: x runs right, +y away/up.
    position, target, up = (np.array(CAMERA[k]) for k in ("position", "look_target", "eye_up"))
    forward = target - position
    right = np.cross(forward, up)
    screen_up = np.cross(right, forward)
    assert position[2] > 1000.0 and right @ [1, 0, 0] > 0.99 * np.linalg.norm(right)
    assert screen_up @ [0, 1, 0] > 0  # +y shows upwards on screen, as in the pad-plane panel
    checked = 0
    clouds = {r["event"]: np.array(r["Points3D:positions"]) for r in event_rows(rows, "/event/cloud")}
    for r in event_rows(rows, "/event/pads/hits"):
        if r["event"] not in clouds or not len(clouds[r["event"]]):
            continue
        drawn = np.array(r["Points2D:positions"])
        ids = np.array([int(re.match(r"pad (\d+):", label).group(1)) for label in r["Points2D:labels"]])
        # The pad-plane panel draws pad p at (x_p, -y_p): y up on screen.
        np.testing.assert_allclose(drawn, np.column_stack([pads.x[ids], -pads.y[ids]]), atol=1e-3)
        cloud = clouds[r["event"]]
        # A known pad: the one of the event's strongest point (point clouds sit on pad centres).
        point = cloud[0]
        pad = int(np.argmin(np.hypot(pads.x - point[0], pads.y - point[1])))
        assert np.hypot(pads.x[pad] - point[0], pads.y[pad] - point[1]) < 1e-3 and pad in ids
        on_screen_2d = drawn[list(ids).index(pad)]
        np.testing.assert_allclose(on_screen_2d, [point[0], -point[1]], atol=1e-3)
        checked += 1
    assert checked >= 5


def test_every_event_of_a_file_replay_is_in_the_recording(tmp_path):
    """`conduit simulate graw`, then a replay pipeline with rerun mode = "save": every event is drawn."""
    run_folder = tmp_path / "sim"
    result = subprocess.run([str(VENV_BIN / "conduit"), "simulate", "graw", str(run_folder), "--run", "7",
                             "--events", "24", "--seed", "9", "-q"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    folder = next(run_folder.glob("run_0007"))
    text = (f'[source]\nkind = "graw"\npath = "{folder}"\n\n[engine]\nworkers = 0\n{ANALYSIS}\n'
            '[[stage]]\nuse = "rerun"\nmode = "save"\npath = "replay_{run:04d}.rrd"\n')
    seen = []
    summary = run_pipeline(load_pipeline(tmp_path / "replay.toml", text=text), handle_signals=False,
                           on_event=seen.append)
    assert summary.exit_code == 0, summary.error
    ids = sorted(e.id for e in seen)
    assert len(ids) == 24
    rows = read_rrd(tmp_path / "replay_0007.rrd")
    headers = {r["event"]: r["TextDocument:text"][0] for r in event_rows(rows, "/event/summary")}
    assert sorted(headers) == ids
    assert not [i for i, text in headers.items() if "Not drawn" in text or "Not received" in text]
    with_cloud = sorted(e.id for e in seen if len(e.get("cloud", [])))
    assert len(with_cloud) >= 20 and sorted(r["event"] for r in event_rows(rows, "/event/cloud")) == with_cloud
    assert sorted(r["event"] for r in event_rows(rows, "/event/pads/hits")) == ids
