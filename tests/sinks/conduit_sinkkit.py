"""A test source for the sink tests: deterministic events carrying every standard artifact.

Load it with ``CONDUIT_PLUGINS=conduit_sinkkit`` (and this directory on
``PYTHONPATH``) or call :func:`make_event` directly. Each event ``i`` has:

* traces: ``20 + i % 7`` rows, pads ``(37 * i + 101 * r) % 10240``, samples a
  ramp plus a pulse whose height grows with the row;
The source ``sinkkit`` emits raw events (traces only, ``analysed`` False);
the transform ``sinkkit.analyse`` attaches the artifacts below, as real
analysis stages would:

* ``k = 1 + i % 3`` helical tracks sampled at ``points`` points each, the
  cloud sorted by z, one cluster per track (labels 0..k-1, plus 3 noise points);
* one estimate row per track whose fields are simple functions of (i, track)
  (see :func:`estimate_values`), so tests can predict histogram contents;
* timestamp ``1_000_000 + 12_345 * i``, timestamp_other ``2 * timestamp``.
"""

from __future__ import annotations

import math

import numpy as np
import trio

from conduit.artifacts import ESTIMATE_DTYPE, Clusters, Direction
from conduit.event import Event
from conduit.hookspecs import hookimpl
from conduit.params import Params, param
from conduit.source import Source
from conduit.stage import TransformStage

__all__ = ["make_event", "estimate_values", "SinkkitSource", "make_traces"]


def make_traces(i: int, rows: int | None = None) -> np.ndarray:
    n = 20 + i % 7 if rows is None else rows
    traces = np.zeros((n, 517), dtype=np.int16)
    rows = np.arange(n)
    traces[:, 0] = rows % 11
    traces[:, 1] = rows % 4
    traces[:, 2] = (rows // 4) % 4
    traces[:, 3] = (rows * 3) % 68
    traces[:, 4] = (37 * i + 101 * rows) % 10240
    t = np.arange(512)
    pulse = np.exp(-0.5 * ((t[None, :] - (100 + 5 * rows[:, None])) / 6.0) ** 2)
    traces[:, 5:] = (50 + (t[None, :] % 13) + (200 + 40 * rows[:, None]) * pulse).astype(np.int16)
    return traces


def estimate_values(i: int, track: int) -> dict[str, float]:
    """The estimate of track ``track`` of event ``i`` (radians for angles, mm, T·m)."""
    return {
        "brho": 0.05 + 0.1 * ((i + 3 * track) % 12),  # 0.05 .. 1.15
        "sqrt_dEdx": 2.0 + 3.0 * ((2 * i + track) % 6),  # 2 .. 17
        "polar": math.radians(10.0 + 20.0 * ((i + track) % 8)),  # 10 .. 150 deg
        "azimuthal": math.radians(45.0 * ((i + 2 * track) % 8)),
        "vertex_z": 100.0 + 7.0 * (i % 100),
        "radius": 40.0 + 10.0 * track,
    }


def _estimates(i: int, k: int) -> np.ndarray:
    rows = np.zeros(k, dtype=ESTIMATE_DTYPE)
    for t in range(k):
        v = estimate_values(i, t)
        r = v["radius"]
        rows[t]["event"] = i
        rows[t]["cluster_index"] = t
        rows[t]["cluster_label"] = t
        rows[t]["vertex_z"] = v["vertex_z"]
        # The circle passes through the beam axis at the vertex: centre at distance r.
        phi_c = v["azimuthal"] - math.pi / 2
        rows[t]["center_x"] = r * math.cos(phi_c)
        rows[t]["center_y"] = r * math.sin(phi_c)
        rows[t]["center_z"] = v["vertex_z"]
        rows[t]["radius"] = r
        rows[t]["polar"] = v["polar"]
        rows[t]["azimuthal"] = v["azimuthal"]
        rows[t]["brho"] = v["brho"]
        rows[t]["sqrt_dEdx"] = v["sqrt_dEdx"]
        rows[t]["dEdx"] = v["sqrt_dEdx"] ** 2
        rows[t]["dE"] = 1000.0 * (t + 1)
        rows[t]["arclength"] = 100.0
        rows[t]["direction"] = Direction.FORWARD if v["polar"] < math.pi / 2 else Direction.BACKWARD
        rows[t]["n_points"] = 0
        rows[t]["fit_rms"] = 0.5
    return rows


def make_event(i: int, points: int = 40, run: int | None = 3, analysed: bool = True) -> Event:
    """Event ``i`` with traces, cloud, clusters and estimates (see the module docstring)."""
    k = 1 + i % 3
    estimates = _estimates(i, k)
    clouds, labels = [], []
    for t in range(k):
        e = estimates[t]
        a0 = math.atan2(-e["center_y"], -e["center_x"])  # angle of the vertex seen from the centre
        s = np.linspace(0.0, 1.5, points)
        x = e["center_x"] + e["radius"] * np.cos(a0 + s)
        y = e["center_y"] + e["radius"] * np.sin(a0 + s)
        z = e["vertex_z"] + e["radius"] * s / math.tan(e["polar"])
        c = np.zeros((points, 8))
        c[:, 0], c[:, 1], c[:, 2] = x, y, z
        c[:, 3] = 100.0 + 10 * t + np.arange(points)
        c[:, 4] = 10.0 * c[:, 3]
        c[:, 5] = (np.arange(points) * 17 + 5 * t) % 10240
        c[:, 6] = 300.0 - z / 4
        c[:, 7] = 0.5 if t % 2 == 0 else 1.0
        clouds.append(c)
        labels.append(np.full(points, t, dtype=np.int32))
    noise = np.array([[200.0, 200.0, 50.0 + j, 5.0, 50.0, 9000 + j, 400.0, 1.0] for j in range(3)])
    clouds.append(noise)
    labels.append(np.full(3, -1, dtype=np.int32))
    cloud = np.concatenate(clouds)
    lab = np.concatenate(labels)
    order = np.argsort(cloud[:, 2], kind="stable")
    cloud, lab = cloud[order], lab[order]
    for t in range(k):
        estimates[t]["n_points"] = points
    clusters = Clusters(
        labels=lab,
        cluster_labels=np.arange(k, dtype=np.int32),
        directions=estimates["direction"].astype(np.int8),
    )
    ts = 1_000_000 + 12_345 * i
    return Event(
        id=i,
        traces=make_traces(i),
        timestamp=ts,
        timestamp_other=2 * ts,
        run=run,
        artifacts={"cloud": cloud, "clusters": clusters, "estimates": estimates} if analysed else {},
        analysed=analysed,
    )


class SinkkitParams(Params):
    events: int = param(20, "number of events (0 = endless)", ge=0)
    first: int = param(0, "id of the first event", ge=0)
    run: int = param(3, "run number")
    rate: float = param(0.0, "events per second (0 = as fast as the engine takes them)", ge=0)
    points: int = param(40, "points per track", ge=2)
    frib: bool = param(False, "attach a 'frib' artifact (977 word and a 1903 SIS3300 block)")
    big_after: int = param(0, "events with id >= this carry 2000 trace rows (2 MB); 0 = never", ge=0)


class SinkkitSource(Source):
    """Deterministic raw events (traces, timestamps, optional frib); ``sinkkit.analyse`` adds the rest."""

    kind = "sinkkit"
    Params = SinkkitParams
    provides = ("frib",)

    def run_number(self):
        return self.params.run

    def total(self):
        return self.params.events or None

    async def run(self) -> None:
        i = self.params.first
        period = 1.0 / self.params.rate if self.params.rate else 0.0
        while self.params.events == 0 or i < self.params.first + self.params.events:
            event = make_event(i, self.params.points, self.params.run, analysed=False)
            if self.params.big_after and i >= self.params.big_after:
                event.traces = make_traces(i, rows=2000)
            if self.params.frib:
                event.artifacts["frib"] = {
                    "977": np.array([i % 4], dtype=np.uint16),
                    "1903": (np.arange(64 * 8, dtype=np.uint16).reshape(64, 8) + i),
                    "id": i,
                    "timestamp": 10 * i,
                }
            await self.emit(event)
            i += 1
            if period:
                await trio.sleep(period)
            elif i % 32 == 0:
                await trio.sleep(0)


class LiveSinkkitSource(SinkkitSource):
    """Same events, live (never waits for the engine)."""

    kind = "sinkkit_live"
    live = True


class NoRunParams(SinkkitParams):
    run: int | None = param(None, "run number (none: a live DAQ that does not say)")


class LiveNoRunSource(LiveSinkkitSource):
    """Live and without a run number, like the exporter source without ``source.run``."""

    kind = "sinkkit_live_norun"
    Params = NoRunParams


class AnalyseParams(Params):
    points: int = param(40, "points per track (match the source's)", ge=2)


class Analyse(TransformStage):
    """Attaches the deterministic cloud, clusters and estimates of :func:`make_event`."""

    name = "sinkkit.analyse"
    provides = ("cloud", "clusters", "estimates")
    Params = AnalyseParams

    def process(self, event) -> None:
        full = make_event(event.id, self.params.points, event.run)
        event.artifacts.update(full.artifacts)


class SlowWarmParams(Params):
    seconds: float = param(30.0, "how long warm_up takes (s)", ge=0)


class SlowWarm(TransformStage):
    """A stage whose warm-up takes ``seconds`` (logs "warming up" first): a long start-up to interrupt."""

    name = "sinkkit.slow_warm"
    Params = SlowWarmParams

    def warm_up(self) -> None:
        import sys
        import time

        # Printed, not logged: a worker process has no log handler, and the tests wait for this line.
        print(f"sinkkit.slow_warm: warming up for {self.params.seconds:g} s", file=sys.stderr, flush=True)
        time.sleep(self.params.seconds)

    def process(self, event) -> None:
        pass


@hookimpl
def conduit_register_sources(register):
    register(SinkkitSource)
    register(LiveSinkkitSource)
    register(LiveNoRunSource)


@hookimpl
def conduit_register_stages(register):
    register(Analyse)
    register(SlowWarm)
