"""Unit tests of the example experiment stages (run with pytest from this directory)."""

import numpy as np

from conduit.artifacts import Direction
from conduit.event import Event
from conduit import RunContext
from conduit.testing import check_stage, make_events
from conduit_e20009.ion_chamber import IonChamberParams, IonChamberStage
from conduit_e20009.linkage import LinkageClusterStage, LinkageParams


def ic_trace(peaks: list[tuple[int, float]], n: int = 2048, pedestal: float = 300.0) -> np.ndarray:
    t = np.arange(n)
    trace = np.full(n, pedestal)
    for centre, height in peaks:
        trace += height * np.exp(-0.5 * ((t - centre) / 6.0) ** 2)
    data = np.zeros((n, 8), dtype=np.uint16)
    data[:, 0] = np.round(trace).astype(np.uint16)
    return data


def test_ion_chamber_takes_the_first_peak_after_the_delay():
    event = Event(id=1, artifacts={"frib": {"1903": ic_trace([(500, 800.0), (1300, 1500.0), (1700, 600.0)])}})
    stage = IonChamberStage(IonChamberParams(gate=[1000.0, 2000.0], max_multiplicity=2), RunContext())
    stage.process(event)
    ic = event.artifacts["ion_chamber"]
    assert ic["centroid"] == 1300.0
    assert abs(ic["amplitude"] - 1500.0) < 2.0
    assert ic["multiplicity"] == 2  # the peak at 500 is before the delay
    assert ic["gate"] is True
    assert ic["integral"] > ic["amplitude"] * 6  # a ~6-sample-wide Gaussian


def test_ion_chamber_without_peak_or_data_marks_the_event():
    quiet = Event(id=2, artifacts={"frib": {"1903": ic_trace([])}})
    stage = IonChamberStage(IonChamberParams(), RunContext())
    stage.process(quiet)
    assert quiet.artifacts["ion_chamber"]["multiplicity"] == 0
    assert quiet.artifacts["ion_chamber"]["gate"] is False
    missing = Event(id=3, artifacts={"frib": {}})
    stage.process(missing)
    assert missing.artifacts["ion_chamber"]["amplitude"] == -1.0


def helix(centre, radius, z0, z1, n, sense):
    z = np.linspace(z0, z1, n)
    phi = sense * (z - z0) / 100.0
    return np.column_stack([centre[0] + radius * np.cos(phi), centre[1] + radius * np.sin(phi), z])


def test_linkage_separates_two_tracks_and_noise_and_finds_directions():
    rng = np.random.default_rng(4)
    forward = helix((60.0, 0.0), 60.0, 200.0, 500.0, 120, +1)   # azimuth grows with z: forward
    backward = helix((-80.0, 40.0), 50.0, 600.0, 900.0, 100, -1)
    noise = np.column_stack([rng.uniform(-250, 250, 10), rng.uniform(-250, 250, 10), rng.uniform(0, 1000, 10)])
    points = np.vstack([forward, backward, noise])
    cloud = np.zeros((len(points), 8))
    cloud[:, :3] = points
    order = np.argsort(cloud[:, 2])
    cloud = cloud[order]
    truth = np.repeat([0, 1, -1], [120, 100, 10])[order]
    event = Event(id=1, artifacts={"cloud": cloud})
    LinkageClusterStage(LinkageParams(min_cloud_size=20), RunContext()).process(event)
    clusters = event.artifacts["clusters"]
    assert clusters.count == 2
    for k in range(2):
        members = truth[clusters.indices(k)]
        assert len(set(members)) == 1 and members[0] >= 0  # pure
    sizes = sorted(len(clusters.indices(k)) for k in range(2))
    assert sizes[0] >= 95 and sizes[1] >= 114  # LOF cleaning may take off the odd end point
    by_truth = {int(truth[clusters.indices(k)][0]): int(clusters.directions[k]) for k in range(2)}
    assert by_truth == {0: Direction.FORWARD, 1: Direction.BACKWARD}
    assert (clusters.labels[truth == -1] == -1).all()


# conduit.testing (a pytest plugin installed with attpc-conduit): the stage contract on simulated events.

def test_linkage_keeps_the_stage_contract():
    check_stage(LinkageClusterStage)


def test_ion_chamber_keeps_the_stage_contract(make_event):
    events = []
    for seed, peak in ((1, 1300), (2, 1500)):
        event = make_event("default", seed)
        event.artifacts["frib"] = {"1903": ic_trace([(peak, 1200.0)])}
        events.append(event)
    check = check_stage(IonChamberStage, events=events)
    assert [e.artifacts["ion_chamber"]["centroid"] for e in check.events] == [1300.0, 1500.0]


def test_linkage_finds_tracks_in_simulated_events(run_stages):
    events = make_events(5, "default", seed=11)
    done = run_stages(["pointcloud", LinkageClusterStage, "estimate"], events)
    assert sum(e.artifacts["clusters"].count for e in done) >= 5
    assert sum(len(e.artifacts["estimates"]) for e in done) >= 3
