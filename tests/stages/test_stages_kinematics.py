"""kinematics: the track fit, the missing mass against the simulator's own reactions, hypotheses and statuses,
the pipeline checks, and the histogram and hdf5 records of the artifact."""

from __future__ import annotations

import math
import textwrap

import h5py
import numpy as np
import pytest
from conduit.artifacts import ESTIMATE_DTYPE, KINEMATICS_DTYPE, KINEMATICS_STATUS, Clusters, empty_kinematics
from conduit.config.pipeline import PipelineError, load_pipeline
from conduit.detector import DetectorParams
from conduit.event import Event
from conduit.stage import StageContext
from conduit_physics.kinematics import two_body
from conduit_physics.species import residual_of, species
from conduit_stages.kinematics import helixfit
from conduit_stages.kinematics.curves import kinematic_curves
from conduit_stages.kinematics.params import KinematicsParams
from conduit_stages.kinematics.reaction import arc_middle_path
from conduit_stages.kinematics.stage import KinematicsStage, TrackKinematics
from conduit_stages.kinematics.warm import synthetic_track

DETECTOR = DetectorParams()  # 2.85 T
REACTION = {"beam": "10Be", "beam_energy": 93.0, "target": "d", "gas": "D2", "pressure": 600.0}
OK, NO_HYPOTHESIS, NO_BRHO, BEAM_STOPPED, UNPHYSICAL = range(5)


def kinematics(**overrides) -> TrackKinematics:
    return TrackKinematics(KinematicsParams.from_mapping({**REACTION, "ejectile": "p", **overrides}), DETECTOR)


def fit(kin: TrackKinematics, points: np.ndarray, seed: list[float]) -> tuple[int, np.ndarray, float]:
    tab = kin.fit_tables[0]
    p = kin.params
    q = np.empty(6)
    pts = np.ascontiguousarray(points, dtype=np.float64)
    status, _, residual = helixfit.fit_track(
        np.asarray(seed, dtype=np.float64), pts[:, 0].copy(), pts[:, 1].copy(), pts[:, 2].copy(), p.point_sigma,
        p.beam_spot, tab.mass, tab.charge, kin.field, tab.energy, tab.range_mm, tab.g, p.fit_step, kin.max_nodes,
        p.fit_max_iterations, q)
    return status, q, residual


# ---------------------------------------------------------------- the fit


@pytest.mark.parametrize("energy,polar_deg", [(5.0, 60.0), (20.0, 40.0), (1.5, 125.0), (8.0, 84.0)])
def test_fit_recovers_a_track_of_its_own_model_from_a_poor_seed(energy, polar_deg):
    kin = kinematics()
    polar = math.radians(polar_deg)
    _, points = synthetic_track(kin, energy=energy, polar=polar, azimuthal=0.5, z0=400.0, step=3.0)
    seed = [1.0, -1.0, 404.0, polar + math.radians(1.0), 0.5 + math.radians(3.0), energy * 1.05]
    status, q, residual = fit(kin, points, seed)
    assert status == helixfit.FIT_CONVERGED
    assert q[5] == pytest.approx(energy, rel=2e-3)
    assert math.degrees(q[3]) == pytest.approx(polar_deg, abs=0.02)
    assert q[2] == pytest.approx(400.0, abs=0.3)
    assert math.hypot(q[0], q[1]) < 0.3
    assert residual < 0.1  # mm: the points lie on the model's own trajectory


def _simulated_track(name: str, energy: float, polar_deg: float, noise: float, rng) -> np.ndarray:
    """Deposit points of the simulator's own tracking (an independent integrator), every 3rd mm, with noise."""
    from conduit_simulate.tracking import track_particle
    from conduit_physics.stopping import GASES, stopping_table

    sp = species(name)
    tab = stopping_table(sp, GASES["D2"], 600.0, 293.15)
    out = [np.zeros(20_000) for _ in range(4)]
    n = track_particle(0.5, -0.5, 300.0, math.radians(polar_deg), 1.2, energy, sp.mass, float(sp.Z), 2.85,
                       tab.log_t0, tab.dlog, tab.stopping, 1000.0, 292.0, 1.0, 1e-4, *out, 0)
    points = np.column_stack([o[:n] for o in out[:3]])[::3]
    return points + rng.normal(0.0, noise, points.shape)


@pytest.mark.parametrize("energy,polar_deg,polar_tolerance", [(3.0, 70.0, 0.05), (12.0, 50.0, 0.05), (1.2, 140.0, 0.5)])
def test_fit_recovers_the_simulators_tracks(energy, polar_deg, polar_tolerance, rng):
    """The simulator steps with its own integrator: the fit agrees to a few per mille in energy.

    The 1.2 MeV proton stops in the gas: the two integrations of the energy loss differ most in its last,
    tightest turns (0.3 mm median distance), which the fit absorbs with 0.35 deg of polar angle.
    """
    kin = kinematics()
    points = _simulated_track("p", energy, polar_deg, 0.0, rng)
    seed = [0.0, 0.0, 305.0, math.radians(polar_deg + 0.5), 1.25, energy * 0.96]
    status, q, residual = fit(kin, points, seed)
    assert status == helixfit.FIT_CONVERGED
    assert residual < 0.4
    assert q[5] == pytest.approx(energy, rel=3e-3)
    assert math.degrees(q[3]) == pytest.approx(polar_deg, abs=polar_tolerance)
    assert q[2] == pytest.approx(300.0, abs=0.7)
    # with 2 mm of noise on every point: still within a few per cent
    noisy = _simulated_track("p", energy, polar_deg, 2.0, rng)
    status, q, residual = fit(kin, noisy, seed)
    assert status == helixfit.FIT_CONVERGED
    assert q[5] == pytest.approx(energy, rel=0.03)
    assert 1.5 < residual < 4.0  # the median distance of 3-D Gaussian noise of 2 mm: 3.1 mm


def test_fit_fails_cleanly_on_points_that_are_no_track(rng):
    kin = kinematics()
    points = rng.uniform(-200.0, 200.0, (80, 3)) + [0.0, 0.0, 500.0]
    status, q, residual = fit(kin, points, [0.0, 0.0, 500.0, 1.0, 0.3, 5.0])
    assert status == helixfit.FIT_FAILED
    np.testing.assert_array_equal(q, [0.0, 0.0, 500.0, 1.0, 0.3, 5.0])  # the seed is kept
    assert residual > 2 * kin.params.point_sigma
    status, _, _ = fit(kin, points[:4], [0.0, 0.0, 500.0, 1.0, 0.3, 5.0])
    assert status == helixfit.FIT_FAILED  # fewer points than parameters


# ---------------------------------------------------------------- the reaction per track


def estimate_row(brho: float, polar: float, z: float, *, radius: float = 0.0, azimuthal: float = 0.4,
                 index: int = 0, sqrt_dedx: float = 10.0) -> np.void:
    est = np.zeros(1, dtype=ESTIMATE_DTYPE)[0]
    est["cluster_index"] = index
    est["brho"], est["polar"], est["vertex_z"], est["azimuthal"] = brho, polar, z, azimuthal
    est["radius"], est["sqrt_dEdx"] = radius, sqrt_dedx
    return est


@pytest.mark.parametrize("ejectile,excitation", [("p", 0.0), ("p", 0.32), ("d", 0.0), ("d", 3.368)])
def test_missing_mass_returns_the_simulated_state(ejectile, excitation):
    """The simulator's reaction at its beam energy after the loss over z: the excitation comes back exactly."""
    kin = kinematics(ejectile=ejectile, fit=False, brho_at="vertex")
    beam, target, ej = species("10Be"), species("d"), species(ejectile)
    residual = residual_of(beam, target, ej)
    for z in (150.0, 500.0, 950.0):
        beam_energy = kin.reaction.beam_table.energy_after(93.0, z)
        for theta_cm in (0.3, 1.2, 2.0, 2.9):
            k = two_body(beam.mass, target.mass, ej.mass, residual.mass + excitation, beam_energy, theta_cm)
            row = empty_kinematics(1)
            kin.track(estimate_row(ej.brho(k.energy_c), k.theta_c, z), np.zeros((0, 3)), 0, row)
            r = row[0]
            assert r["status"] == OK and r["fit_status"] == helixfit.FIT_OFF
            assert r["excitation"] == pytest.approx(excitation, abs=1e-5)
            assert r["theta_cm"] == pytest.approx(theta_cm, abs=1e-7)
            assert r["beam_energy"] == pytest.approx(beam_energy, rel=1e-12)
            assert r["ejectile_energy"] == pytest.approx(k.energy_c, rel=1e-9)
            assert (r["ejectile_Z"], r["ejectile_A"], r["hypothesis"]) == (ej.Z, ej.A, 0)


def test_arc_middle_correction_adds_the_energy_lost_over_half_the_first_arc():
    # half a turn (chord = diameter): s = π R / (2 sin θ); a short chord c: s ≈ c / (2 sin θ)
    assert arc_middle_path(100.0, math.radians(30.0), 200.0) == pytest.approx(math.pi * 100.0 / (2 * 0.5))
    assert arc_middle_path(100.0, math.radians(90.0), 10.0) == pytest.approx(5.0, rel=1e-3)
    assert arc_middle_path(100.0, math.radians(90.0), 500.0) == pytest.approx(math.pi * 50.0)  # capped at half a turn
    assert arc_middle_path(0.0, 1.0, 10.0) == 0.0
    kin = kinematics(fit=False)
    vertex = kinematics(fit=False, brho_at="vertex")
    # a 2 MeV proton at 60 deg: radius R = ρ sin θ, fitted over half a turn
    p = species("p")
    brho = p.brho(2.0)
    radius = brho / 2.85 * 1e3 * math.sin(math.radians(60.0))
    points = np.array([[2 * radius, 0.0, 500.0]])
    rows = [empty_kinematics(1), empty_kinematics(1)]
    for k, row in zip((kin, vertex), rows):
        k.track(estimate_row(brho, math.radians(60.0), 400.0, radius=radius), points, 0, row)
    s = math.pi * radius / (2 * math.sin(math.radians(60.0)))
    assert rows[1][0]["ejectile_energy"] == pytest.approx(2.0, rel=1e-9)
    assert rows[0][0]["ejectile_energy"] == pytest.approx(kin.reaction.ejectiles[0].table.energy_before(2.0, s))
    assert rows[0][0]["ejectile_energy"] > 2.0 + 0.01  # tens of keV lost over ~190 mm of D2


def test_every_track_keeps_its_row_with_the_reason_it_has_no_result():
    kin = kinematics(fit=False)
    row = empty_kinematics(1)
    kin.track(estimate_row(0.0, 1.0, 500.0), np.zeros((0, 3)), 0, row)
    assert row[0]["status"] == NO_BRHO and math.isnan(row[0]["excitation"])
    row = empty_kinematics(1)
    kin.track(estimate_row(0.5, 1.0, 500.0), np.zeros((0, 3)), -1, row)
    assert row[0]["status"] == NO_HYPOTHESIS and row[0]["hypothesis"] == -1 and math.isnan(row[0]["excitation"])
    row = empty_kinematics(1)
    kinematics(fit=False, beam_energy=5.0).track(estimate_row(0.5, 1.0, 500.0), np.zeros((0, 3)), 0, row)
    assert row[0]["status"] == BEAM_STOPPED  # 5 MeV of 10Be stops within millimetres of D2
    row = empty_kinematics(1)
    kin.track(estimate_row(700.0, math.pi - 0.01, 500.0), np.zeros((0, 3)), 0, row)
    assert row[0]["status"] == UNPHYSICAL and math.isnan(row[0]["excitation"])
    assert KINEMATICS_STATUS[UNPHYSICAL] == "unphysical"


# ---------------------------------------------------------------- the stage: hypotheses by PID gates

PID_POLYGON = [[0.05, 0.0], [2.0, 0.0], [2.0, 20.0], [0.05, 20.0]]  # "protons": sqrt(dE/dx) below 20


def histogram_params(gates=None):
    from conduit_stages.histogram.spec import HistogramParams

    return HistogramParams.from_mapping({"gates": gates if gates is not None else [
        {"name": "protons", "histogram": "pid", "polygon": PID_POLYGON},
        {"name": "heavy", "negate": "protons"},
    ]})


def event_with_tracks(tracks: list[tuple[float, float]], kin: TrackKinematics) -> Event:
    """An event with one synthetic proton track per (energy MeV, sqrt_dEdx): cloud, clusters and estimates."""
    clouds, labels, rows = [], [], []
    for k, (energy, sq) in enumerate(tracks):
        est, points = synthetic_track(kin, energy=energy, polar=1.0 + 0.2 * k, azimuthal=0.5 + k, z0=300.0 + 50 * k)
        est["cluster_index"], est["cluster_label"], est["sqrt_dEdx"], est["event"] = k, k, sq, 7
        cloud = np.zeros((len(points), 8))
        cloud[:, :3] = points
        clouds.append(cloud)
        labels.append(np.full(len(points), k, dtype=np.int32))
        rows.append(est)
    cloud = np.concatenate(clouds)
    order = np.argsort(cloud[:, 2], kind="stable")
    clusters = Clusters(np.concatenate(labels)[order], np.arange(len(tracks), dtype=np.int32),
                        np.zeros(len(tracks), dtype=np.int8))
    estimates = np.array(rows, dtype=ESTIMATE_DTYPE)
    return Event(id=7, traces=np.zeros((0, 517), np.int16),
                 artifacts={"cloud": cloud[order], "clusters": clusters, "estimates": estimates})


def test_stage_takes_the_hypothesis_the_histogram_stages_gate_gives():
    params = KinematicsParams.from_mapping({**REACTION, "hypotheses": [
        {"ejectile": "p", "gate": "protons", "states": [0.0, 0.32]},
        {"ejectile": "d", "gate": "heavy"},
    ]})
    context = StageContext(detector=DETECTOR, pipeline=(("histogram", histogram_params()), ("kinematics", params)))
    stage = KinematicsStage(params, context)
    stage.warm_up()
    ev = event_with_tracks([(5.0, 10.0), (3.0, 45.0), (8.0, 19.9)], stage.kin)
    stage.process(ev)
    rows = ev.artifacts["kinematics"]
    assert rows.dtype == KINEMATICS_DTYPE and len(rows) == len(ev.artifacts["estimates"]) == 3
    np.testing.assert_array_equal(rows["cluster_index"], [0, 1, 2])
    np.testing.assert_array_equal(rows["event"], [7, 7, 7])
    np.testing.assert_array_equal(rows["hypothesis"], [0, 1, 0])
    np.testing.assert_array_equal(rows["ejectile_A"], [1, 2, 1])
    np.testing.assert_array_equal(rows["fit_status"], [helixfit.FIT_CONVERGED] * 3)
    # the proton tracks are fitted back to their energies
    np.testing.assert_allclose(rows["ejectile_energy"][[0, 2]], [5.0, 8.0], rtol=2e-3)
    # no fallback ejectile: a track no gate accepts keeps its row, status no_hypothesis
    only = params.replace(hypotheses=params.hypotheses[:1])
    stage = KinematicsStage(only, StageContext(detector=DETECTOR, pipeline=(("histogram", histogram_params()),)))
    ev = event_with_tracks([(5.0, 10.0), (3.0, 45.0)], stage.kin)
    stage.process(ev)
    np.testing.assert_array_equal(ev.artifacts["kinematics"]["status"], [OK, NO_HYPOTHESIS])
    with pytest.raises(ValueError, match="no histogram stage in the pipeline declares the gate"):
        KinematicsStage(only, StageContext(detector=DETECTOR))


def test_the_stage_counts_the_tracks_without_a_result_by_reason():
    """What the kinematics stage leaves without a result reaches the run's counts (summary, status, HDF5)."""
    params = KinematicsParams.from_mapping({**REACTION, "fit": False, "hypotheses": [
        {"ejectile": "p", "gate": "protons"}]})
    stage = KinematicsStage(params, StageContext(detector=DETECTOR, pipeline=(("histogram", histogram_params()),)))
    ev = event_with_tracks([(5.0, 10.0), (3.0, 45.0), (4.0, 60.0), (6.0, 12.0)], stage.kin)
    stage.process(ev)
    np.testing.assert_array_equal(ev.artifacts["kinematics"]["status"], [OK, NO_HYPOTHESIS, NO_HYPOTHESIS, OK])
    assert ev.counts == {"kinematics": {"no_hypothesis": 2}}
    ev = event_with_tracks([(5.0, 10.0)], stage.kin)
    stage.process(ev)
    assert ev.counts == {}  # nothing without a result: nothing counted


def test_an_event_without_tracks_gets_an_empty_table():
    kin = kinematics()
    ev = Event(
        id=1, traces=np.zeros((0, 517), np.int16),
        artifacts={"cloud": np.zeros((0, 8)), "clusters": Clusters.empty(0), "estimates": np.zeros(0, ESTIMATE_DTYPE)})
    assert len(kin.compute(ev)) == 0


def test_curves_follow_the_two_body_kinematics_of_each_listed_state():
    params = KinematicsParams.from_mapping({**REACTION, "ejectile": "p", "states": [0.0, 0.32, 80.0], "curve_z": 200.0})
    curves = kinematic_curves(params)
    assert [c.label for c in curves] == ["11Be(0 MeV) p", "11Be(0.32 MeV) p"]  # 80 MeV is out of reach
    beam_energy = TrackKinematics(params, DETECTOR).reaction.beam_energy_at(200.0)
    k = two_body(species("10Be").mass, species("d").mass, species("p").mass, species("11Be").mass + 0.32,
                 beam_energy, math.pi / 2)
    assert curves[1].polar[90] == pytest.approx(math.degrees(k.theta_c))
    assert curves[1].brho[90] == pytest.approx(species("p").brho(k.energy_c))
    assert len(curves[0].polar) == 181 and np.all(np.diff(curves[0].polar[:60]) > 0)


# ---------------------------------------------------------------- pipeline checks

PIPELINE = """
[source]
kind = "simulate"

[[stage]]
use = "pointcloud"

[[stage]]
use = "cluster.hdbscan"

[[stage]]
use = "estimate"

[[stage]]
use = "kinematics"
{kinematics}

{histogram}
"""
HISTOGRAM = """
[[stage]]
use = "histogram"

[[stage.gates]]
name = "protons"
histogram = "pid"
polygon = [[0.05, 0.0], [2.0, 0.0], [2.0, 20.0]]

[[stage.histograms]]
name = "ex"
x = "excitation"

[[stage.gates]]
name = "ground"
histogram = "ex"
interval = [-0.5, 0.5]
"""




def gated(gate: str) -> str:
    """The kinematics table of 10Be(d,p) in D2 with one hypothesis gated by ``gate``."""
    return "\n".join(f"{key} = {value!r}" for key, value in REACTION.items()).replace("'", '"') + f"""
[[stage.hypotheses]]
ejectile = "p"
gate = "{gate}"
"""


def load(tmp_path, kinematics_text: str, histogram: str = HISTOGRAM):
    path = tmp_path / "pipe.toml"
    path.write_text(PIPELINE.format(kinematics=textwrap.dedent(kinematics_text), histogram=histogram))
    return path, load_pipeline(path)


def test_pipeline_with_a_valid_reaction_loads(tmp_path):
    _, pipeline = load(tmp_path, gated("protons"))
    kin = next(s for s in pipeline.stages if s.use == "kinematics")
    assert kin.requires == ("cloud", "clusters", "estimates") and kin.provides == ("kinematics",)
    hist = next(s for s in pipeline.stages if s.use == "histogram")
    assert "kinematics" in hist.requires  # it histograms the excitation energy


def test_pipeline_errors_name_the_line_and_the_fix(tmp_path):
    path = tmp_path / "pipe.toml"
    with pytest.raises(PipelineError) as err:
        load(tmp_path, """
            beam = "10Bee"
            beam_energy = 93.0
            target = "d"
            gas = "D3"
            pressure = 600.0
            """)
    text = "\n".join(err.value.lines)
    line = 1 + path.read_text().splitlines().index('beam = "10Bee"')
    assert f"{path}:{line}: stage.4.beam: unknown species '10Bee' (did you mean '10Be'?)" in text
    assert "stage.4.gas: unknown gas 'D3'" in text
    assert "stage.4.ejectile: name the ejectile, or give [[stage.hypotheses]] with PID gates" in text
    with pytest.raises(PipelineError) as err:
        load(tmp_path, """
            beam = "18O"
            beam_energy = 93.0
            target = "d"
            gas = "D2"
            pressure = 600.0
            ejectile = "p"
            """)
    assert "stage.4.ejectile: no mass for the residual (Z=8, A=19) of d(18O,p)" in "\n".join(err.value.lines)
    with pytest.raises(PipelineError) as err:
        load(tmp_path, 'beam = "10Be"\nejectile = "p"\n')
    text = "\n".join(err.value.lines)
    for key in ("beam_energy", "target", "gas", "pressure"):
        assert f"stage.4.{key}: missing required parameter '{key}'" in text


@pytest.mark.parametrize("gate,histogram,message", [
    ("protonz", HISTOGRAM, "unknown gate 'protonz'; the histogram stage declares: protons, ground"),
    ("ground", HISTOGRAM, "gate 'ground' is drawn on 'excitation', which this stage computes; use estimate fields"),
    ("protons", "", "gate 'protons' needs a histogram stage that declares it ([[stage.gates]])"),
])
def test_a_hypothesis_gate_must_be_a_histogram_gate_on_estimate_fields(tmp_path, gate, histogram, message):
    with pytest.raises(PipelineError) as err:
        load(tmp_path, gated(gate), histogram)
    path = tmp_path / "pipe.toml"
    lines = err.value.lines
    assert any(line.startswith(f"{path}:") and f"stage.4.hypotheses.0.gate: {message}" in line for line in lines), lines


# ---------------------------------------------------------------- the histogram and hdf5 records


def kinematics_event(i: int, excitation: list[float], with_kinematics: bool = True) -> Event:
    est = np.zeros(len(excitation), dtype=ESTIMATE_DTYPE)
    est["brho"] = 0.5
    est["cluster_index"] = np.arange(len(excitation))
    artifacts = {"estimates": est}
    if with_kinematics:
        rows = empty_kinematics(len(excitation))
        rows["excitation"] = excitation
        rows["theta_cm"] = np.radians(30.0 + 10.0 * np.arange(len(excitation)))
        rows["cluster_index"] = np.arange(len(excitation))
        rows["status"] = [OK if math.isfinite(x) else UNPHYSICAL for x in excitation]
        artifacts["kinematics"] = rows
    return Event(id=i, traces=np.zeros((2, 517), np.int16), artifacts=artifacts, analysed=True)


def test_histograms_of_kinematics_fields_count_exactly():
    from conduit_stages.histogram.hset import HistogramSet
    from conduit_stages.histogram.sink import HistogramSink
    from conduit_stages.histogram.spec import HistogramParams

    params = HistogramParams.from_mapping({"defaults": False, "histograms": [
        {"name": "ex", "x": "excitation", "x_bins": 6, "x_range": [-1.0, 2.0]},
        {"name": "ex_cm", "x": "theta_cm", "x_bins": 18, "x_range": [0.0, 180.0], "y": "excitation", "y_bins": 6,
         "y_range": [-1.0, 2.0]},
        {"name": "cm_ground", "x": "theta_cm", "x_bins": 18, "x_range": [0.0, 180.0], "gate": "ground"},
    ], "gates": [{"name": "ground", "histogram": "ex", "interval": [-0.5, 0.5]}]})
    assert HistogramSink.artifacts(params) == (("estimates", "kinematics"), ())
    hset = HistogramSet.from_params(params)
    hset.fill(kinematics_event(1, [0.1, 0.3, float("nan")]))
    hset.fill(kinematics_event(2, [1.9, 5.0]))
    hset.fill(kinematics_event(3, [0.2], with_kinematics=False))  # no kinematics artifact: NaN, outside
    ex = hset["ex"]
    assert ex.entries == 3 and ex.outside == 3
    np.testing.assert_array_equal(ex.counts, [0, 0, 2, 0, 0, 1])  # 0.1 and 0.3 in [0, 0.5), 1.9 in [1.5, 2)
    cm = hset["ex_cm"]
    assert cm.entries == 3
    assert cm.counts[3, 2] == 1 and cm.counts[4, 2] == 1 and cm.counts[3, 5] == 1  # θcm 30, 40 deg (and 30 deg)
    ground = hset["cm_ground"]  # gated on the excitation energy: the two tracks within ±0.5 MeV
    assert ground.entries == 2 and ground.counts[3] == 1 and ground.counts[4] == 1


def test_hdf5_sink_records_one_kinematics_row_per_estimate(tmp_path):
    from conduit_stages.hdf5_sink.params import Hdf5Params
    from conduit_stages.hdf5_sink.sink import Hdf5Sink

    sink = Hdf5Sink(Hdf5Params(path="run_{run:04d}.h5", flush_interval=0.001, histograms=False),
                    StageContext(run=4, base_dir=tmp_path))
    sink.open()
    sink.begin()
    events = [kinematics_event(100 + i, [0.1 * i] * (i % 3)) for i in range(10)]
    events.append(kinematics_event(200, [0.5, 0.7], with_kinematics=False))  # estimates, no kinematics stage
    for ev in events:
        sink.consume(ev)
    sink.close()
    with h5py.File(tmp_path / "run_0004.h5", "r") as f:
        table = f["kinematics"][...]
        assert f["kinematics"].attrs["status_codes"] == ",".join(KINEMATICS_STATUS)
        assert "excitation MeV" in f["kinematics"].attrs["units"]
        assert len(f["estimates"]) == sum(i % 3 for i in range(10)) + 2
    assert len(table) == sum(i % 3 for i in range(10)) == 9
    expected = np.concatenate([np.full(i % 3, 100 + i) for i in range(10)])
    np.testing.assert_array_equal(table["event"], expected)
    np.testing.assert_allclose(table["excitation"], 0.1 * (expected - 100))
    assert "9 kinematics rows" in sink.describe()
