"""The simulator: seeded events from reaction to int16 trace matrix, with their truth.

:class:`Simulator` holds what does not change from event to event (stopping
tables, the pad lookup grid, the electronics map, per-channel pedestals) and
:meth:`Simulator.event` makes event number ``index`` (0, 1, ...). Every event
draws from its own generators, seeded by (seed, index, stream), so an event
does not depend on which events were generated before it, and the same seed
gives the same events whether they are served, written or generated
in-process.

Per event (see docs/simulator.md for the model and its parameters):

1. physics: vertex, reaction or particle gun, beam energy at the vertex;
2. tracking: helices with energy loss (:mod:`.tracking`), optional beam
   track, random noise hits;
3. response: electrons, diffusion, pads, gain, shaping (:mod:`.response`);
4. digitisation: pedestals, white and correlated (FPN) noise, rounding,
   clipping to 0..4095, readout (partial with zero suppression, or full).
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING

import numpy as np
from conduit_physics.kinematics import KinematicsError, two_body
from conduit_physics.species import Species, residual_of, species
from conduit_physics.stopping import gas_by_name, stopping_table

from conduit.event import Event
from .params import SimulationParams

if TYPE_CHECKING:
    from conduit.detector import DetectorParams

__all__ = [
    "Simulator",
    "SimulatedEvent",
    "EventSequence",
    "EventTruth",
    "PARTICLE_DTYPE",
    "DEPOSIT_DTYPE",
    "CONTRIBUTION_DTYPE",
]

N_BUCKETS = 512
N_CHANNELS = 68
FPN_CHANNELS = (11, 22, 45, 56)
ELEMENTARY_CHARGE = 1.602176634e-19  # C
#: Kinetic energy (MeV) below which a tracked particle is considered stopped.
T_STOP = 1e-4
#: Timestamp of event index 0 on the MuTanT clock, and the FRIB clock's offset (100 MHz ticks).
T0_TICKS = 1_000_000_000
FRIB_OFFSET_TICKS = 123_456_789
#: Noise hits: energy range (MeV) of one isolated deposit.
NOISE_HIT_ENERGY = (0.003, 0.012)
#: Width (buckets) of the moving average that gives the correlated noise its low-frequency colour.
CORRELATED_WIDTH = 8

PARTICLE_DTYPE = np.dtype(
    [
        ("event", "u4"),
        ("index", "i4"),
        ("role", "S8"),
        ("name", "S8"),
        ("Z", "i4"),
        ("A", "i4"),
        ("mass", "f8"),
        ("x", "f8"),
        ("y", "f8"),
        ("z", "f8"),
        ("polar", "f8"),
        ("azimuthal", "f8"),
        ("energy", "f8"),
        ("brho", "f8"),
        ("excitation", "f8"),
        ("deposited", "f8"),
        ("electrons", "i8"),
    ]
)
DEPOSIT_DTYPE = np.dtype(
    [("x", "f4"), ("y", "f4"), ("z", "f4"), ("energy", "f4"), ("electrons", "i4"), ("particle", "i2")]
)
CONTRIBUTION_DTYPE = np.dtype([("pad", "i4"), ("particle", "i2"), ("electrons", "i8"), ("charge", "f8"), ("read", "?")])


@dataclasses.dataclass
class EventTruth:
    """What really happened in one event.

    ``particles``: PARTICLE_DTYPE rows (index = particle label; roles
    ``beam``, ``ejectile``, ``residual``, ``gun``), angles in rad, energies in
    MeV, vertex in mm, Bρ in T·m. ``deposits``: the noiseless deposit points
    (x, y, z mm, energy MeV, ionisation electrons, particle label; −1 = noise
    hit). ``contributions``: per (pad, particle) the drift electrons collected
    and their amplified charge (electrons), ``read`` when the pad's trace was
    read out. ``reaction``: channel label, CM angle (rad), excitation (MeV),
    beam energy at the vertex (MeV).
    """

    event_id: int
    index: int
    particles: np.ndarray
    deposits: np.ndarray
    contributions: np.ndarray
    reaction: str = ""
    cm_angle: float = math.nan
    excitation: float = 0.0
    beam_energy_vertex: float = math.nan


@dataclasses.dataclass
class SimulatedEvent:
    """One generated event: the :class:`Event` (pads only, like merged files), the FPN rows and the truth.

    ``fpn`` holds the FPN channels of every AGET of the map, rows
    [cobo, asad, aget, channel, −1, 512 samples]; the GRAW and served outputs
    add them to the frames.
    """

    event: Event
    fpn: np.ndarray
    truth: EventTruth

    def all_traces(self) -> np.ndarray:
        """The trace matrix with the FPN rows appended (what the frames carry)."""
        return np.concatenate([self.event.traces, self.fpn])


@dataclasses.dataclass
class _Particle:
    role: str
    sp: Species
    x: float
    y: float
    z: float
    polar: float
    azimuthal: float
    energy: float
    excitation: float = 0.0
    z_limit: float | None = None  # the beam stops at the vertex


#: Where the GET response peaks after the charge arrives, in units of τ (reference §8).
PEAK_DELAY_TAU = 1.166


class Simulator:
    """Generates events for one parameter set and detector."""

    def __init__(
        self,
        params: SimulationParams,
        detector: DetectorParams | None = None,
        *,
        pads=None,
        electronics=None,
        base_dir=None,
    ):
        from conduit.detector import DetectorParams
        from conduit.get.maps import load_electronics_map
        from conduit.padplane import load_pad_plane
        from .padgrid import pad_grid
        from .response import mesh_weights, shaper_kernel

        self.params = params
        self.config = params.resolved()
        self.detector = detector if detector is not None else DetectorParams()
        det = self.detector

        def resolve(path):
            if path is None or base_dir is None or path.is_absolute():
                return path
            return base_dir / path

        self.pads = pads if pads is not None else load_pad_plane(resolve(det.pad_geometry))
        self.emap = electronics if electronics is not None else load_electronics_map(resolve(det.electronics_map))
        self.grid = pad_grid(self.pads)
        self.gas = gas_by_name(self.config.gas)
        self._tables: dict[str, object] = {}
        # Drift: TB(z) = t_mm + (L - z) / v_d, the exact inverse of DetectorParams.z_from_bucket.
        self.mm_per_bucket = det.drift_mm_per_bucket
        tau = params.shaping_time * det.get_frequency * 1e-3
        self.tau = tau
        self.kernel = shaper_kernel(tau)
        self.mesh_offsets, self.mesh_weights = mesh_weights(params.diffusion_mesh)
        # σ (mm) = √(2 D d / E) with d in m -> coef · √(d in mm).
        self.coef_t = math.sqrt(2.0 * params.transverse_diffusion / det.electric_field * 1e-3) * 1e3
        self.coef_l = math.sqrt(2.0 * params.longitudinal_diffusion / det.electric_field * 1e-3) * 1e3
        self.adc_per_electron = ELEMENTARY_CHARGE * 4096.0 / (params.dynamic_range * 1e-15)
        pad_gain = np.ones(self.pads.n_pads, dtype=np.float64)
        pad_gain[self.pads.beam_pads()] = params.beam_pad_gain
        self.pad_gain = pad_gain
        self._setup_electronics()
        if params.vertex_z is not None:
            self.vertex_range = (float(params.vertex_z[0]), float(params.vertex_z[1]))
            if not 0.0 <= self.vertex_range[0] <= self.vertex_range[1] <= det.detector_length:
                raise ValueError(
                    f"vertex_z {list(params.vertex_z)} mm lies outside the drift volume 0..{det.detector_length:g} mm"
                )
        else:
            low = float(det.z_from_bucket(N_BUCKETS - 1))
            self.vertex_range = (min(max(low, 0.0), det.detector_length), det.detector_length)
        self._check_reachable()

    def _check_reachable(self) -> None:
        """Fail early when no event can be made: the beam stops too soon, or every channel is closed."""
        cfg = self.config
        if cfg.preset.is_gun:
            return
        beam, target = species(cfg.beam), species(cfg.target)
        lo, hi = self.vertex_range
        e_low = self.table(beam).energy_after(cfg.beam_energy, lo)
        if e_low <= 0.0:
            raise ValueError(
                f"{cfg.beam} at {cfg.beam_energy:g} MeV stops before the vertex range {lo:.0f}..{hi:.0f} mm "
                f"in {cfg.pressure:g} Torr {cfg.gas}"
            )
        for channel in cfg.preset.channels:
            ejectile = species(channel.ejectile)
            residual = residual_of(beam, target, ejectile)
            try:
                two_body(beam.mass, target.mass, ejectile.mass, residual.mass + min(channel.excitations), e_low, 1.0)
                return
            except KinematicsError:
                continue
        raise ValueError(f"every reaction channel of preset {cfg.preset.name!r} is below threshold at {e_low:.3g} MeV")

    # -- static tables ---------------------------------------------------------------

    def _setup_electronics(self) -> None:
        emap = self.emap
        hw = np.asarray(emap.hardware, dtype=np.int64)
        n_pads = self.pads.n_pads
        pad_hw = np.full((n_pads, 4), -1, dtype=np.int64)
        m = min(n_pads, hw.shape[0])
        pad_hw[:m] = hw[:m]
        self.pad_hw = pad_hw
        self.mapped = pad_hw[:, 0] >= 0
        self.asads = tuple(emap.asads)
        agets = np.array([(c, a, g) for c, a in self.asads for g in range(4)], dtype=np.int64).reshape(-1, 3)
        self.agets = agets
        aget_index = np.full((11, 4, 4), -1, dtype=np.int64)
        aget_index[agets[:, 0], agets[:, 1], agets[:, 2]] = np.arange(len(agets))
        self.aget_index = aget_index
        # FPN rows: every FPN channel of every AGET of the map.
        fpn = np.repeat(agets, len(FPN_CHANNELS), axis=0)
        self.fpn_hw = np.column_stack([fpn, np.tile(FPN_CHANNELS, len(agets))])
        # Pedestals per hardware channel (11 CoBos x 4 AsAds x 4 AGETs x 68 channels), fixed for the run.
        rng = np.random.default_rng([self.params.seed, 0x7FFFFFFF])
        self.pedestals = rng.normal(self.params.pedestal_mean, self.params.pedestal_sigma, size=11 * 4 * 4 * N_CHANNELS)
        from .response import noise_bank

        self.noise_bank = noise_bank(self.params.seed)

    @staticmethod
    def channel_index(hw: np.ndarray) -> np.ndarray:
        """Global channel index of (cobo, asad, aget, channel) rows."""
        return ((hw[:, 0] * 4 + hw[:, 1]) * 4 + hw[:, 2]) * N_CHANNELS + hw[:, 3]

    def quarter_index(self, hw: np.ndarray) -> np.ndarray:
        """Row of the correlated-noise waveform (AGET quarter) of (cobo, asad, aget, channel) rows."""
        quarter = np.searchsorted(np.array([17, 34, 51]), hw[:, 3], side="right")
        return self.aget_index[hw[:, 0], hw[:, 1], hw[:, 2]] * 4 + quarter

    def table(self, sp: Species):
        """Stopping table (:class:`~.stopping.StoppingTable`) of a species in the gas."""
        tab = self._tables.get(sp.name)
        if tab is None:
            tab = self._tables[sp.name] = stopping_table(sp, self.gas, self.config.pressure, self.params.temperature)
        return tab

    def warm_up(self) -> None:
        """Compile (or load from the numba cache) the kernels by generating one event."""
        self.event(0)

    # -- one event -----------------------------------------------------------------------

    def event(self, index: int) -> SimulatedEvent:
        """Event number ``index`` (0-based) of this run."""
        p = self.params
        rng_phys = np.random.default_rng([p.seed, index, 1])
        rng_resp = np.random.default_rng([p.seed, index, 2])
        rng_noise = np.random.default_rng([p.seed, index, 3])
        event_id = p.first_event_id + index

        particles, reaction = self._sample_particles(rng_phys)
        dep_x, dep_y, dep_z, dep_e, dep_label = self._track(particles, rng_phys)
        signal, signal_pads, deposits_e, contrib = self._respond(rng_resp, dep_x, dep_y, dep_z, dep_e, dep_label)
        traces, fpn, read_pads = self._digitise(rng_noise, signal, signal_pads)

        timestamp, timestamp_other = self.timestamps(index)
        event = Event(id=event_id, traces=traces, timestamp=timestamp, timestamp_other=timestamp_other)
        truth = self._truth(
            event_id, index, particles, reaction, dep_x, dep_y, dep_z, dep_e, dep_label, deposits_e, contrib, read_pads
        )
        return SimulatedEvent(event=event, fpn=fpn, truth=truth)

    def timestamps(self, index: int) -> tuple[int, int]:
        """(timestamp, timestamp_other) of event ``index`` in 100 MHz ticks.

        Triggers come every 1/trigger_rate with up to 10 % jitter; CoBo 10's
        FRIB-synchronised clock runs at a fixed offset from the others.
        """
        period = 1e8 / self.params.trigger_rate
        jitter = _splitmix64(self.params.seed * 0x9E3779B97F4A7C15 + index) % max(1, int(period // 10))
        timestamp = int(T0_TICKS + round(index * period) + jitter)
        return timestamp, timestamp + FRIB_OFFSET_TICKS

    def pad_signals(self, x, y, z, energy, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Noiseless shaped signals of given deposits: (pad ids, (n, 512) ADC above pedestal).

        Deposits at ``x, y, z`` (mm) of ``energy`` (MeV) go through ionisation,
        drift, diffusion, gain and shaping exactly as in :meth:`event`; no
        pedestal, noise, rounding or clipping. For tests and calibration.
        """
        arrays = [np.atleast_1d(np.asarray(v, dtype=np.float64)) for v in (x, y, z, energy)]
        labels = np.zeros(len(arrays[0]), dtype=np.int64)
        signal, pads, _, _ = self._respond(np.random.default_rng(seed), *arrays, labels)
        return pads, signal

    def _sample_vertex(self, rng: np.random.Generator) -> tuple[float, float, float]:
        lo, hi = self.vertex_range
        sigma = self.params.beam_spot
        x, y = rng.normal(0.0, sigma, 2) if sigma > 0 else (0.0, 0.0)
        return float(x), float(y), float(rng.uniform(lo, hi))

    def _sample_particles(self, rng: np.random.Generator) -> tuple[list[_Particle], dict]:
        cfg = self.config
        preset = cfg.preset
        out: list[_Particle] = []
        reaction: dict = {"label": "", "cm_angle": math.nan, "excitation": 0.0, "beam_energy_vertex": math.nan}
        beam = species(cfg.beam)
        if preset.is_gun:
            x, y, z = self._sample_vertex(rng)
            gun = species(cfg.gun_particle)
            lo, hi = cfg.gun_multiplicity
            count = int(rng.integers(lo, hi + 1))
            e_lo, e_hi = cfg.gun_energy
            c_lo, c_hi = (math.cos(math.radians(a)) for a in cfg.gun_polar)
            for _ in range(count):
                energy = float(rng.uniform(e_lo, e_hi)) if e_hi > e_lo else e_lo
                cos_t = float(rng.uniform(c_hi, c_lo)) if c_lo > c_hi else c_lo
                out.append(_Particle("gun", gun, x, y, z, math.acos(cos_t), float(rng.uniform(0, 2 * math.pi)), energy))
            reaction["label"] = f"gun {gun.name}"
            if cfg.beam_track:
                out.insert(0, _Particle("beam", beam, x, y, 0.0, 0.0, 0.0, cfg.beam_energy, z_limit=z))
            return out, reaction

        target = species(cfg.target)
        beam_table = self.table(beam)
        channels = preset.channels
        weights = np.array([c.weight for c in channels], dtype=np.float64)
        weights /= weights.sum()
        for _attempt in range(1000):
            x, y, z = self._sample_vertex(rng)
            e_vertex = beam_table.energy_after(cfg.beam_energy, z)
            if e_vertex <= 0.0:
                continue
            channel = channels[int(rng.choice(len(channels), p=weights))]
            ejectile = species(channel.ejectile)
            residual = residual_of(beam, target, ejectile)
            excitation = float(channel.excitations[int(rng.integers(len(channel.excitations)))])
            c_lo, c_hi = (math.cos(math.radians(a)) for a in channel.cm_angle)
            theta_cm = math.acos(float(rng.uniform(min(c_lo, c_hi), max(c_lo, c_hi))))
            try:
                kin = two_body(beam.mass, target.mass, ejectile.mass, residual.mass + excitation, e_vertex, theta_cm)
            except KinematicsError:
                continue
            phi = float(rng.uniform(0.0, 2.0 * math.pi))
            if cfg.beam_track:
                out.append(_Particle("beam", beam, x, y, 0.0, 0.0, 0.0, cfg.beam_energy, z_limit=z))
            out.append(_Particle("ejectile", ejectile, x, y, z, kin.theta_c, phi, kin.energy_c))
            out.append(
                _Particle(
                    "residual",
                    residual,
                    x,
                    y,
                    z,
                    kin.theta_d,
                    (phi + math.pi) % (2 * math.pi),
                    kin.energy_d,
                    excitation,
                )
            )
            reaction.update(
                label=channel.label or f"{target.name}({beam.name},{ejectile.name}){residual.name}",
                cm_angle=theta_cm,
                excitation=excitation,
                beam_energy_vertex=e_vertex,
            )
            return out, reaction
        raise ValueError(
            f"could not sample a reaction in 1000 tries: {cfg.beam} at {cfg.beam_energy} MeV stops before the vertex "
            f"range {self.vertex_range} mm in {cfg.pressure} Torr {cfg.gas}, or the reaction is below threshold"
        )

    def _track(self, particles: list[_Particle], rng: np.random.Generator):
        from .tracking import track_particle

        p = self.params
        det = self.detector
        cap = 4096
        xs, ys, zs, es, labels = [], [], [], [], []
        for label, part in enumerate(particles):
            tab = self.table(part.sp)
            length = det.detector_length if part.z_limit is None else part.z_limit
            while True:
                bufs = [np.empty(cap) for _ in range(4)]
                n = track_particle(
                    part.x,
                    part.y,
                    part.z,
                    part.polar,
                    part.azimuthal,
                    part.energy,
                    part.sp.mass,
                    float(part.sp.Z),
                    det.magnetic_field,
                    tab.log_t0,
                    tab.dlog,
                    tab.stopping,
                    length,
                    p.chamber_radius,
                    p.step,
                    T_STOP,
                    *bufs,
                    0,
                )
                if n < cap:
                    break
                cap *= 4  # a long spiral: track again with room for it
            for lst, buf in zip((xs, ys, zs, es), bufs):
                lst.append(buf[:n])
            labels.append(np.full(n, label, dtype=np.int64))
        n_hits = int(rng.poisson(self.config.noise_hits)) if self.config.noise_hits > 0 else 0
        if n_hits:
            r = 260.0 * np.sqrt(rng.uniform(0.0, 1.0, n_hits))
            a = rng.uniform(0.0, 2 * math.pi, n_hits)
            lo, hi = self.vertex_range
            xs.append(r * np.cos(a))
            ys.append(r * np.sin(a))
            zs.append(rng.uniform(lo, hi, n_hits))
            es.append(rng.uniform(*NOISE_HIT_ENERGY, n_hits))
            labels.append(np.full(n_hits, -1, dtype=np.int64))
        if not xs:
            empty = np.empty(0)
            return empty, empty, empty, empty, np.empty(0, dtype=np.int64)
        return tuple(np.concatenate(v) for v in (xs, ys, zs, es)) + (np.concatenate(labels),)

    def _respond(self, rng, dep_x, dep_y, dep_z, dep_e, dep_label):
        from .response import collect, shape

        p = self.params
        det = self.detector
        g = self.grid
        electrons, c_dep, c_pad, c_prim, c_charge, c_time, c_sigma = collect(
            rng,
            dep_x,
            dep_y,
            dep_z,
            dep_e,
            dep_label,
            p.w_value * 1e-6,
            p.fano,
            det.detector_length,
            # The [detector] buckets are calibrated on pulse peaks (as in real data), so the
            # arrival comes one shaper peaking delay (1.166 τ) before the bucket of z.
            det.micromegas_time_bucket - PEAK_DELAY_TAU * self.tau,
            self.mm_per_bucket,
            self.coef_t,
            self.coef_l,
            self.mesh_offsets,
            self.mesh_weights,
            g.grid,
            g.x0,
            g.y0,
            g.cell,
            p.gain,
            p.polya_theta,
            self.pad_gain,
        )
        pads, row = np.unique(c_pad, return_inverse=True)
        signal = shape(row.astype(np.int64), c_time, c_sigma, c_charge, len(pads), self.kernel, self.adc_per_electron)
        contrib = (c_pad, dep_label[c_dep] if len(c_dep) else np.empty(0, np.int64), c_prim, c_charge)
        return signal, pads, electrons, contrib

    def _digitise(self, rng, signal: np.ndarray, signal_pads: np.ndarray):
        """Pedestal + signal + noise, rounded and clipped; choose the channels read out.

        Returns the pad trace matrix, the FPN rows, and the pads read.
        """
        from .response import BANK_ROWS, correlated_noise, digitise, draw_noise_rows

        p = self.params
        # Charge on pads absent from the electronics map is never read.
        on_map = self.mapped[signal_pads]
        signal_pads, signal = signal_pads[on_map], signal[on_map]
        if p.readout == "full":
            rows_pad = np.flatnonzero(self.mapped)
        else:
            free = self.mapped.copy()
            free[signal_pads] = False
            candidates = np.flatnonzero(free)
            n_noise = min(self.config.noise_pads, len(candidates))
            noise_pads = rng.choice(candidates, size=n_noise, replace=False) if n_noise else candidates[:0]
            rows_pad = np.union1d(signal_pads, noise_pads)
        # Rows in hardware order (cobo, asad, aget, channel), as the event builder emits them.
        rows_pad = rows_pad[np.argsort(self.channel_index(self.pad_hw[rows_pad]), kind="stable")]
        rows_hw = self.pad_hw[rows_pad]
        n_rows = len(rows_pad)
        n_fpn = len(self.fpn_hw)
        all_hw = np.concatenate([rows_hw, self.fpn_hw])
        # White noise: distinct rows of the simulator's noise bank, randomly shifted and signed (drawing
        # ~10^6 fresh normals per event would cost more than the rest of the event together). Correlated
        # noise: one low-frequency waveform per AGET quarter, shared by its channels and its FPN channel.
        n_quarters = len(self.agets) * 4
        n_white = n_rows + n_fpn
        bank = self.noise_bank
        if n_white + n_quarters <= BANK_ROWS:
            slots, shifts, signs = draw_noise_rows(rng, n_white + n_quarters)
        else:  # full readout: more rows than the bank holds, draw them fresh
            fresh = rng.standard_normal((n_white + n_quarters) * N_BUCKETS, dtype=np.float32)
            bank = fresh
            slots = np.arange(n_white + n_quarters, dtype=np.int64)
            shifts = np.zeros(len(slots), dtype=np.int64)
            signs = np.ones(len(slots))
        correlated = correlated_noise(
            bank, slots[n_white:], shifts[n_white:], signs[n_white:], CORRELATED_WIDTH, float(p.fpn_noise)
        )
        pedestals = self.pedestals[self.channel_index(all_hw)]
        row_of_pad = np.full(len(self.mapped), -1, dtype=np.int64)
        row_of_pad[rows_pad] = np.arange(n_rows)
        digitised, height = digitise(
            bank,
            slots[:n_white],
            shifts[:n_white],
            signs[:n_white],
            float(p.noise),
            correlated,
            self.quarter_index(all_hw),
            pedestals,
            np.ascontiguousarray(signal),
            row_of_pad[signal_pads],
        )
        keep = np.ones(n_rows, dtype=bool)
        if p.readout == "partial" and n_rows:
            # Zero suppression: a signal channel is read when it rises above threshold over its pedestal;
            # the noise-only pads are read whatever they hold.
            keep = (height[:n_rows] > p.threshold) | ~np.isin(rows_pad, signal_pads)
        traces = np.empty((int(keep.sum()), 517), dtype=np.int16)
        traces[:, :4] = rows_hw[keep]
        traces[:, 4] = rows_pad[keep]
        traces[:, 5:] = digitised[:n_rows][keep]
        fpn = np.empty((n_fpn, 517), dtype=np.int16)
        fpn[:, :4] = self.fpn_hw
        fpn[:, 4] = -1
        fpn[:, 5:] = digitised[n_rows:]
        return traces, fpn, rows_pad[keep]

    def _truth(
        self,
        event_id,
        index,
        particles,
        reaction,
        dep_x,
        dep_y,
        dep_z,
        dep_e,
        dep_label,
        deposits_e,
        contrib,
        read_pads,
    ) -> EventTruth:
        parts = np.zeros(len(particles), dtype=PARTICLE_DTYPE)
        for i, part in enumerate(particles):
            sel = dep_label == i
            parts[i] = (
                event_id,
                i,
                part.role.encode(),
                part.sp.name.encode(),
                part.sp.Z,
                part.sp.A,
                part.sp.mass + part.excitation,
                part.x,
                part.y,
                part.z,
                part.polar,
                part.azimuthal,
                part.energy,
                Species(part.sp.name, part.sp.Z, part.sp.A, part.sp.mass + part.excitation).brho(part.energy),
                part.excitation,
                float(dep_e[sel].sum()),
                int(deposits_e[sel].sum()),
            )
        deposits = np.zeros(len(dep_x), dtype=DEPOSIT_DTYPE)
        deposits["x"], deposits["y"], deposits["z"] = dep_x, dep_y, dep_z
        deposits["energy"], deposits["electrons"], deposits["particle"] = dep_e, deposits_e, dep_label
        c_pad, c_label, c_prim, c_charge = contrib
        if len(c_pad):
            key = c_pad.astype(np.int64) * 65536 + (c_label.astype(np.int64) + 1)
            uniq, inv = np.unique(key, return_inverse=True)
            contributions = np.zeros(len(uniq), dtype=CONTRIBUTION_DTYPE)
            contributions["pad"] = uniq // 65536
            contributions["particle"] = uniq % 65536 - 1
            contributions["electrons"] = np.bincount(inv, weights=c_prim, minlength=len(uniq)).astype(np.int64)
            contributions["charge"] = np.bincount(inv, weights=c_charge, minlength=len(uniq))
            contributions["read"] = np.isin(contributions["pad"], read_pads)
        else:
            contributions = np.zeros(0, dtype=CONTRIBUTION_DTYPE)
        return EventTruth(
            event_id=event_id,
            index=index,
            particles=parts,
            deposits=deposits,
            contributions=contributions,
            reaction=reaction["label"],
            cm_angle=reaction["cm_angle"],
            excitation=reaction["excitation"],
            beam_energy_vertex=reaction["beam_energy_vertex"],
        )


class EventSequence:
    """Events 0 … N−1 of a run, as every output consumes them.

    With ``pool`` = 0 every event is generated. With ``pool`` = K only events
    0 … K−1 are generated; event n ≥ K repeats event n mod K (same traces and
    truth) with its own id (first_event_id + n) and timestamps.
    """

    def __init__(self, sim: Simulator):
        self.sim = sim
        self.pool = min(sim.params.pool, sim.params.events)
        self._cache: dict[int, SimulatedEvent] = {}

    def __len__(self) -> int:
        return self.sim.params.events

    def source_index(self, n: int) -> int:
        """The generated event that event ``n`` carries."""
        return n % self.pool if self.pool else n

    def get(self, n: int) -> tuple[SimulatedEvent, bool]:
        """(event n, True when it was generated now rather than repeated from the pool)."""
        if not self.pool:
            return self.sim.event(n), True
        k = n % self.pool
        base = self._cache.get(k)
        fresh = base is None
        if fresh:
            base = self._cache[k] = self.sim.event(k)
        if n == k:
            return base, fresh
        ts, ts_other = self.sim.timestamps(n)
        ev = base.event
        event = Event(
            id=self.sim.params.first_event_id + n, traces=ev.traces.copy(), timestamp=ts, timestamp_other=ts_other
        )
        return SimulatedEvent(event=event, fpn=base.fpn, truth=base.truth), False


def _splitmix64(x: int) -> int:
    """A well-mixed 64-bit hash of ``x`` (SplitMix64's finaliser): cheap per-event pseudo-randomness."""
    x = (x + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return x ^ (x >> 31)

