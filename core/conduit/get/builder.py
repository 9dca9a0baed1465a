"""The event builder: frames in, :class:`conduit.event.Event` out (get_format.md 5.4).

Plain synchronous code shared by the ``graw``, ``exporter`` and ``simulate``
sources and the tests; time is passed in explicitly (``now``, seconds on any
monotonic clock) so behaviour is deterministic.

Rules
-----
* Frames are grouped by GET event id (never by timestamp). Which event (and which
  run, after a counter restart) a frame belongs to is decided per (cobo, asad) stream
  against its own sequence and the other streams' consensus
  (:mod:`conduit.get.sequence`): an id far ahead of the others is quarantined, a
  stream that goes back proposes a restart that the others must agree to, one that
  restarts alone is set aside. None of these can retire held events.
* An event is emitted **complete** as soon as every expected (cobo, asad) has
  reported. The expected set defaults to the AsAds that carry pads in the map
  (40 in the default map) and can be overridden.
* Otherwise it is emitted **incomplete** (``Event.complete = False``,
  ``Event.missing`` = the expected pairs that did not report) when

  - it falls more than ``max_depth`` event ids behind the consensus, or
  - it has waited more than ``timeout`` seconds since its first frame (:meth:`poll`), or
  - every expected stream that can still deliver has reported: streams of CoBos marked
    offline (:meth:`set_offline`), silent for ``silent_after`` seconds while the others
    moved on by more than ``max_depth`` ids, restarted alone, or proposing a restart are
    not waited for, or
  - the input ends (:meth:`flush`), or the caller closes ids below a bound (:meth:`close_before`).
* A frame for an event already emitted (remembered for the last ``remember`` ids),
  or more than ``max_depth`` behind the consensus, is a **late frame**: counted and
  dropped, never a new event. A second frame from the same (cobo, asad) for a held
  event is a **duplicate**: counted and dropped (the first is kept).
* Frames from (cobo, asad) pairs outside the expected set are counted
  (``unexpected_frames``) and used while their event is held.
* Timestamps: CoBo 10's event time -> ``Event.timestamp_other``, the other CoBos'
  -> ``Event.timestamp`` (the first frame that carries each).
* Traces: one int16 row per mapped signal channel [cobo, asad, aget, channel, pad,
  512 samples], rows grouped by (cobo, asad) in ascending order. FPN channels never
  appear (optional FPN subtraction), unmapped channels are dropped and counted.
* A frame that fails validation is counted as a bad frame and reported in one
  line (``source @ byte offset: reason``); it never stops the builder.
* Every frame lost is counted by reason (:data:`LOSS_REASONS`, :meth:`losses`, per CoBo
  in :attr:`cobo_losses`) and logged, the first of each reason at once and then at
  most once per ``log_interval`` seconds.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
from collections.abc import Callable, Iterable

import numpy as np

from ..event import N_COLUMNS, Event, empty_traces
from ..ratelog import RateLimitedLog
from .decoder import ROWS_NEEDED, FrameDecoder
from .frames import FrameError, FrameInfo, check_frame
from .maps import ElectronicsMap
from .sequence import RESTART, Sequencer, StreamKey

__all__ = ["EventBuilder", "BuilderCounters", "COBO_WITH_FRIB_TIME", "LOSS_REASONS", "DEFAULT_OUTLIER_GAP"]

log = logging.getLogger("conduit.get.builder")

#: Where emitted events' trace matrices are made: ``memory(rows, columns)`` -> a new int16 array, or None for
#: an ordinary one (e.g. :meth:`conduit.engine.shared_traces.TraceSlots.array`: straight into shared memory).
TraceMemory = Callable[[int, int], "np.ndarray | None"]

#: Working matrices of emitted events kept for the next ones (a few events are held at a time).
MAX_SPARE_MATRICES = 4

#: The CoBo whose clock is FRIB-synchronised (its time goes to ``timestamp_other``).
COBO_WITH_FRIB_TIME = 10
#: Bad-frame messages logged in full before the builder starts summarising.
LOG_FIRST_ERRORS = 20
#: Event ids further than this ahead of the consensus are outliers (quarantined).
DEFAULT_OUTLIER_GAP = 100
#: Counters of frames (or items) lost, by reason (docs/ingestion.md, "What is lost and why").
LOSS_REASONS = ("bad_frames", "late_frames", "duplicate_frames", "quarantined_ahead", "quarantined_behind",
                "restart_frames", "wrong_cobo_frames", "items_dropped")


@dataclasses.dataclass
class BuilderCounters:
    """Running totals of one builder."""

    frames: int = 0  #: frames offered (valid or not)
    bytes: int = 0  #: bytes of frames offered
    bad_frames: int = 0  #: frames that failed validation
    skipped_frames: int = 0  #: blob/topology frames and unknown frame types (skipped by size)
    clamped_frames: int = 0  #: frames whose item count did not fit their size (clamped; a warning)
    items_dropped: int = 0  #: invalid items (channel > 67, bucket > 511)
    late_frames: int = 0  #: frames of events already emitted or too far behind the consensus
    duplicate_frames: int = 0  #: a second frame from the same (cobo, asad) for one event
    quarantined_ahead: int = 0  #: frames whose id is far ahead of the other streams
    quarantined_behind: int = 0  #: frames whose id went back, then the stream resumed its sequence
    restart_frames: int = 0  #: frames of a stream that restarted its counter alone
    wrong_cobo_frames: int = 0  #: frames whose header names another CoBo than their connection (dropped)
    unexpected_frames: int = 0  #: frames from (cobo, asad) pairs outside the expected set
    complete_events: int = 0
    incomplete_events: int = 0
    unmapped_channels: int = 0  #: channels with data that are not in the map (once per frame)
    restarts: int = 0  #: event-counter restarts agreed by the streams (a new run)
    lone_restarts: int = 0  #: episodes of streams restarting their counter alone

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


class _Lane:
    """What the builder looks up once per frame for a (cobo, asad) stream."""

    __slots__ = ("counts", "expected", "slots")

    def __init__(self, counts: dict[str, int], expected: bool, slots: np.ndarray):
        self.counts = counts  # the stream's entry of EventBuilder.asad_counts
        self.expected = expected  # in the expected set
        self.slots = slots  # its decoding table (ElectronicsMap.slots)


class _Pending:
    """One event being assembled: its frames' rows decoded straight into one growing matrix.

    ``parts`` maps each stream to where its rows are (first row, count); rows of a part taken
    away (a restart's frames set aside) stay behind as a hole that :meth:`traces` skips.
    """

    __slots__ = ("key", "first_seen", "parts", "stamps", "n_expected_reported", "_rows", "_used")

    def __init__(self, key: tuple[int, int], first_seen: float, rows: np.ndarray):
        self.key = key  # (epoch, event id)
        self.first_seen = first_seen
        self.parts: dict[StreamKey, tuple[int, int]] = {}
        self.stamps: dict[StreamKey, int] = {}  # event time of each part
        self.n_expected_reported = 0
        self._rows = rows  # (capacity, 517) int16, contents irrelevant
        self._used = 0

    @property
    def matrix(self) -> np.ndarray:
        """The whole working matrix (to be reused for another event once this one is emitted)."""
        return self._rows

    def free_rows(self, needed: int = ROWS_NEEDED) -> np.ndarray:
        """The next ``needed`` unused rows (grown, by doubling, when the matrix is too small)."""
        if self._used + needed > self._rows.shape[0]:
            grown = np.empty((max(2 * self._rows.shape[0], self._used + needed), N_COLUMNS), np.int16)
            grown[:self._used] = self._rows[:self._used]
            self._rows = grown
        return self._rows[self._used:self._used + needed]

    def add(self, stream: StreamKey, n: int) -> None:
        """The first ``n`` rows of :meth:`free_rows` are ``stream``'s part."""
        self.parts[stream] = (self._used, n)
        self._used += n

    def add_rows(self, stream: StreamKey, rows: np.ndarray) -> None:
        """Copy ``rows`` in as ``stream``'s part (a frame moved from another event)."""
        self.free_rows(rows.shape[0])[:] = rows
        self.add(stream, rows.shape[0])

    def rows(self, stream: StreamKey) -> np.ndarray:
        start, n = self.parts[stream]
        return self._rows[start:start + n]

    def take(self, stream: StreamKey) -> tuple[np.ndarray, int]:
        """Remove ``stream``'s part; return a copy of its rows and its time stamp."""
        rows = self.rows(stream).copy()
        del self.parts[stream]
        return rows, self.stamps.pop(stream)

    def traces(self, memory: TraceMemory | None = None) -> np.ndarray:
        """The event's trace matrix (a new array, from ``memory`` when it gives one): parts in (cobo, asad)
        order, one copy."""
        parts = sorted(self.parts.items())
        total = sum(n for _, (_, n) in parts)
        if total == 0:
            return empty_traces()
        out = memory(total, N_COLUMNS) if memory is not None else None
        if out is None:
            out = np.empty((total, N_COLUMNS), np.int16)
        # One copy per run of parts that lie in order in the working matrix too (a CoBo's AsAds arrive one after
        # the other on its connection): about one per CoBo instead of one per frame.
        rows = self._rows
        at = 0
        run_start, run_end = parts[0][1][0], parts[0][1][0]
        for _, (start, n) in parts:
            if start != run_end:
                out[at:at + run_end - run_start] = rows[run_start:run_end]
                at += run_end - run_start
                run_start = start
            run_end = start + n
        out[at:at + run_end - run_start] = rows[run_start:run_end]
        return out


class EventBuilder:
    """Group frames by event id and emit :class:`~conduit.event.Event` objects.

    ``expected`` overrides the (cobo, asad) pairs an event needs to be complete
    (default: ``emap.asads``). ``timeout`` (s) may be None for file sources, where
    only depth, :meth:`close_before` and :meth:`flush` apply. ``outlier_gap`` (event
    ids) is how far ahead of the consensus a frame may be before it is quarantined;
    a stream silent for ``silent_after`` s (live only) while the others moved on is
    not waited for and does not count for the consensus or restart votes.
    """

    def __init__(
        self,
        emap: ElectronicsMap,
        *,
        expected: Iterable[tuple[int, int]] | None = None,
        max_depth: int = 10,
        timeout: float | None = 2.0,
        fpn_subtraction: bool = False,
        remember: int = 4096,
        outlier_gap: int = DEFAULT_OUTLIER_GAP,
        silent_after: float = 10.0,
        log_interval: float = 30.0,
        logger: logging.Logger | None = None,
    ):
        if max_depth < 0:
            raise ValueError("max_depth must be >= 0")
        self.emap = emap
        self.expected: frozenset[tuple[int, int]] = frozenset(
            (int(c), int(a)) for c, a in (emap.asads if expected is None else expected))
        self._expected_sorted = tuple(sorted(self.expected))
        self.max_depth = int(max_depth)
        self.timeout = timeout
        self.outlier_gap = max(int(outlier_gap), self.max_depth + 1)
        #: Ids a live reader may run ahead (of the consensus, a restart, a backlog) before it pauses: max_depth / 2.
        self.pause_slack = max(1, self.max_depth // 2)
        #: A stream silent this long (s; live sources) no longer counts for the consensus or votes.
        self.silent_after = None if timeout is None else float(silent_after)
        self.sequencer = Sequencer(max_depth=self.max_depth, outlier_gap=self.outlier_gap, timeout=timeout,
                                   stale_after=self.silent_after, expected=self.expected)
        self.decoder = FrameDecoder(emap, fpn_subtraction=fpn_subtraction)
        self.counters = BuilderCounters()
        #: Frames lost per CoBo and reason (``{3: {"late_frames": 12}}``).
        self.cobo_losses: dict[int, dict[str, int]] = collections.defaultdict(lambda: collections.defaultdict(int))
        #: Per (cobo, asad) stream: ``frames`` offered (valid, not skipped) and frames lost by reason.
        self.asad_counts: dict[StreamKey, dict[str, int]] = collections.defaultdict(
            lambda: collections.defaultdict(int))
        self.log = logger or log
        self.rate_log = RateLimitedLog(self.log, interval=log_interval)
        #: The last few bad-frame messages (for status displays and tests).
        self.errors: collections.deque[str] = collections.deque(maxlen=50)
        self._held: dict[tuple[int, int], _Pending] = {}  # insertion order = age order
        self._lanes: dict[StreamKey, _Lane] = {}
        self._emitted_order: collections.deque[tuple[int, int]] = collections.deque()
        self._emitted: set[tuple[int, int]] = set()
        self._remember = max(int(remember), 1)
        self._last_consensus: int | None = None
        self._excused_cache: dict[int, frozenset[StreamKey]] = {}
        self._excused_version = -1
        #: Rows a new event's matrix starts with (follows the events' sizes; it grows when needed).
        self._capacity = 4 * ROWS_NEEDED
        self._spare: list[np.ndarray] = []  # working matrices of emitted events, for the next ones
        #: Where emitted events' trace matrices are made (None: ordinary arrays). The engine sets it to its
        #: worker pool's shared-memory slots, so that an analysed event's traces need no copy to reach a worker.
        self.trace_memory: TraceMemory | None = None

    # -- state -----------------------------------------------------------------------------

    @property
    def held(self) -> int:
        """Events currently being assembled (including a proposed restart's)."""
        return len(self._held)

    @property
    def consensus(self) -> int | None:
        """The event id the live streams agree on (lower median of their latest ids)."""
        return self.sequencer.consensus

    @property
    def epoch(self) -> int:
        """How many event-counter restarts the streams agreed on so far."""
        return self.sequencer.epoch

    def counter_dict(self) -> dict[str, int]:
        """Counters including the decoder's (items dropped, unmapped channels)."""
        self.counters.items_dropped = self.decoder.items_dropped
        self.counters.unmapped_channels = self.decoder.unmapped_channels
        return self.counters.as_dict()

    def asad_counters(self) -> dict[StreamKey, dict[str, int]]:
        """Per (cobo, asad): ``frames`` offered and frames lost by reason (a copy)."""
        return {stream: dict(counts) for stream, counts in self.asad_counts.items()}

    def losses(self) -> dict[str, int]:
        """Frames (and items) lost so far, by reason (:data:`LOSS_REASONS`)."""
        counts = self.counter_dict()
        return {reason: counts[reason] for reason in LOSS_REASONS}

    def warm_up(self) -> None:
        """Compile the decoding kernels."""
        self.decoder.warm_up()

    # -- input -------------------------------------------------------------------------------

    def add_frame(
        self,
        buf,
        offset: int = 0,
        length: int | None = None,
        *,
        now: float = 0.0,
        source: str = "<buffer>",
        cobo: int | None = None,
        asad: int | None = None,
        info: FrameInfo | None = None,
    ) -> list[Event]:
        """Offer one frame (bytes-like or uint8 array) at ``offset``; return the events it completes.

        ``length`` is the frame's length when known from outside (a length prefix);
        the frame's own size must agree. ``cobo``/``asad`` override the header's.
        ``info`` skips re-validation when the caller already has it (for ``buf`` as given).
        """
        self.counters.frames += 1
        if info is None:
            try:
                info = check_frame(buf, offset, length, source=source)
                if length is not None and info.frame_bytes != length:
                    raise FrameError(source, offset, f"frame size field says {info.frame_bytes} B, "
                                                     f"the stream delivered {length} B")
            except FrameError as err:
                self.counters.bytes += length if length is not None else max(len(buf) - offset, 0)
                self.report_bad(err)
                return []
        out: list[Event] = []
        self._file(buf, info, info.cobo if cobo is None else cobo, info.asad if asad is None else asad, now, source,
                   out)
        return out

    def add_checked(self, buf: np.ndarray, info: FrameInfo, cobo: int, now: float, source: str,
                    out: list[Event]) -> None:
        """:meth:`add_frame` for a frame the caller validated (``info`` = ``check_frame`` of the uint8 array ``buf``
        as given, its size agreeing with the stream's), taken as CoBo ``cobo``'s: the events it completes are
        appended to ``out``. One positional call per frame for a receiver handing on many frames at a time."""
        self.counters.frames += 1
        self._file(buf, info, cobo, info.asad, now, source, out)

    def _file(self, buf, info: FrameInfo, cobo: int, asad: int, now: float, source: str, out: list[Event]) -> None:
        """Count a valid frame, judge where it goes and decode it there; append the events that come out."""
        counters = self.counters
        counters.bytes += info.frame_bytes
        if info.frame_type == 0:  # FrameInfo.skip: no AT-TPC data
            counters.skipped_frames += 1
            return
        if info.clamped:
            counters.clamped_frames += 1
            self._note(f"{source} @ byte {info.offset}: item count exceeds the frame size; clamped to "
                       f"{info.n_items} items (padding not decoded)")
        stream = (cobo, asad)
        lane = self._lanes.get(stream)
        if lane is None:
            lane = self._lanes[stream] = _Lane(self.asad_counts[stream], stream in self.expected,
                                               self.emap.slots(*stream))
        lane.counts["frames"] += 1
        if not lane.expected:
            counters.unexpected_frames += 1
        event_id = info.event_id
        seq = self.sequencer
        pending: _Pending | None
        if seq.advance(stream, event_id, now):
            # The common case (a live stream's next id): filed under the current run, nothing else to decide.
            if seq.version != self._excused_version:
                out += self._emit_ready()
            key = (seq.epoch, event_id)
            pending = self._held.get(key)
            if pending is None or stream in pending.parts:
                pending = self._target(key, stream, source, now)
        else:
            epoch, reason, withdrew = seq.judge(stream, event_id, now, lambda i: self._waits_for(i, stream))
            if withdrew:
                out += self._rejudge(stream, now)
            if seq.version != self._excused_version:
                out += self._emit_ready()  # e.g. the previous run's last event no longer waits for this stream
            if epoch is None:
                self._lose(reason, stream, event_id, source)  # type: ignore[arg-type]
                pending = None
            else:
                key = (epoch, event_id)
                pending = self._target(key, stream, source, now)
        if pending is not None:
            data = buf if isinstance(buf, np.ndarray) else np.frombuffer(buf, np.uint8)
            # Decoded straight into the event's matrix: no per-frame array, no concatenation.
            n = self.decoder.decode_into(data, info, pending.free_rows(), cobo, asad, slots=lane.slots)
            pending.add(stream, n)
            if self._attach(pending, stream, info.timestamp):
                out.append(self._emit(self._held.pop(key)))
        self._settle(now, out)
        if self.timeout is not None:
            self._expire(now, out)

    def reject(self, reason: str, nbytes: int, *, cobo: int) -> None:
        """Count a frame the caller drops before building (e.g. ``wrong_cobo_frames``; the caller logs it,
        knowing why)."""
        self.counters.frames += 1
        self.counters.bytes += nbytes
        self._count(reason, (cobo, -1))

    def poll(self, now: float) -> list[Event]:
        """Emit (incomplete) events that have waited more than ``timeout`` seconds, and events that no
        longer wait for anything (a stream went silent); settle restart proposals that ran out of time."""
        out: list[Event] = []
        if self.timeout is None:
            return out
        self.sequencer.refresh(now)
        self._settle(now, out)
        self._expire(now, out)
        out.sort(key=lambda e: e.id)
        return out

    def _expire(self, now: float, out: list[Event]) -> None:
        """Emit the held events whose first frame came more than ``timeout`` s ago (oldest first) into ``out``."""
        limit = now - self.timeout  # type: ignore[operator]
        held = self._held
        if not held or next(iter(held.values())).first_seen >= limit:
            return  # the common case: the oldest held event is young enough
        proposed = self.sequencer.epoch + 1
        expired = []
        for key, pending in held.items():
            if pending.first_seen >= limit:
                break
            if key[0] != proposed:  # a proposed restart's frames wait for the verdict
                expired.append(key)
        out += [self._emit(held.pop(k)) for k in expired]

    def close_before(self, event_id: int) -> list[Event]:
        """Emit every held event of the current run with an id below ``event_id`` (a merged file
        stream has moved past them)."""
        epoch = self.sequencer.epoch
        keys = sorted(k for k in self._held if k[0] == epoch and k[1] < event_id)
        return [self._emit(self._held.pop(k)) for k in keys]

    def flush(self) -> list[Event]:
        """Settle any restart proposal, then emit everything held (end of input), in run and id order."""
        out = []
        decision = self.sequencer.decide(0.0, final=True)
        if decision is not None:
            out += self._apply(decision)
        proposed = self.sequencer.epoch + 1
        keys = sorted(k for k in self._held if k[0] != proposed)
        out += [self._emit(self._held.pop(k)) for k in keys]
        self.sequencer.close_old()
        return out

    def set_offline(self, cobo: int, offline: bool = True) -> list[Event]:
        """Mark a CoBo's AsAds as not delivering (a dead connection); return events that no
        longer wait for anything (emitted incomplete, with those AsAds in ``missing``)."""
        self.sequencer.set_offline(cobo, offline)
        return self._emit_ready() if offline else []

    def hold_back(self, cobo: int, latest: int) -> tuple[str, int] | None:
        """What a live reader of ``cobo``, whose last frame had id ``latest``, should wait for before
        reading on (None: nothing): ("consensus", C) when it is more than ``max_depth / 2`` ids ahead of
        the consensus C (but not an outlier), ("restart", epoch) when it went back more than that many
        ids into a restart the others have not agreed to yet. Callers wait a bounded time per value."""
        seq = self.sequencer
        if seq.gone_into_restart(cobo, latest) > self.pause_slack:
            return ("restart", seq.epoch)
        consensus = seq.consensus
        if consensus is None or (seq.old_open and cobo in seq.finishing_cobos()):
            return None  # still finishing the previous run: its ids are not comparable with the new run's consensus
        return ("consensus", consensus) if self.runs_ahead(latest, consensus) else None

    def runs_ahead(self, latest: int, reference: int) -> bool:
        """True when a reader at id ``latest`` is more than :attr:`pause_slack` ids past ``reference`` and not an
        outlier (at most ``outlier_gap`` past it): it should pause until the others catch up."""
        return self.pause_slack < latest - reference <= self.outlier_gap

    def far_ahead(self, event_id: int) -> bool:
        """True when ``event_id`` is more than ``outlier_gap`` ids past the consensus (it would be quarantined)."""
        return self.sequencer.far_ahead(event_id)

    # -- deciding where a frame goes -----------------------------------------------------------------

    def _waits_for(self, event_id: int, stream: StreamKey) -> bool:
        """Is the current run's event ``event_id`` held, without a frame from ``stream`` yet?"""
        pending = self._held.get((self.sequencer.epoch, event_id))
        return pending is not None and stream not in pending.parts

    def _target(self, key: tuple[int, int], stream: StreamKey, source: str, now: float) -> _Pending | None:
        """The held event a frame of ``stream`` goes to (created if needed), or None (counted as lost)."""
        pending = self._held.get(key)
        if pending is None:
            late = key in self._emitted
            if not late and key[0] == self.sequencer.epoch:
                consensus = self._last_consensus  # the depth window as of the previous frame
                late = consensus is not None and key[1] < consensus - self.max_depth
            if late:
                self._lose("late_frames", stream, key[1], source)
                return None
            pending = self._held[key] = _Pending(key, now, self._matrix())
        elif stream in pending.parts:
            self._lose("duplicate_frames", stream, key[1], source)
            return None
        return pending

    def _attach(self, pending: _Pending, stream: StreamKey, stamp: int) -> bool:
        """Count one frame (its rows already added to ``pending``) in a held event; True when it is now ready."""
        pending.stamps[stream] = stamp
        if stream in self.expected:
            pending.n_expected_reported += 1
        return self._ready(pending)

    def _rejudge(self, stream: StreamKey, now: float) -> list[Event]:
        """A stream withdrew its restart proposal (it was a glitch): file its frames held aside again."""
        proposed = self.sequencer.epoch + 1
        out = []
        for key in [k for k, p in self._held.items() if k[0] == proposed and stream in p.parts]:
            aside = self._held[key]
            rows, stamp = aside.take(stream)
            if stream in self.expected:
                aside.n_expected_reported -= 1
            if not aside.parts:
                del self._held[key]
            target = (proposed - 1, key[1])
            reason = None if target in self._held else self.sequencer.rejudge(key[1])
            if reason is not None:
                self._lose(reason, stream, key[1], f"cobo {stream[0]} asad {stream[1]}")
                continue
            pending = self._target(target, stream, f"cobo {stream[0]} asad {stream[1]}", now)
            if pending is None:
                continue
            pending.add_rows(stream, rows)
            if self._attach(pending, stream, stamp):
                out.append(self._emit(self._held.pop(target)))
        return out

    def _settle(self, now: float, out: list[Event]) -> None:
        """Act on restart decisions, the depth limit and the end of the previous run (events into ``out``)."""
        seq = self.sequencer
        if seq.proposing_streams:
            decision = seq.decide(now)
            if decision is not None:
                out += self._apply(decision)
        consensus = seq.consensus
        if consensus is not None and (self._last_consensus is None or consensus > self._last_consensus):
            self._last_consensus = consensus
            floor = consensus - self.max_depth
            epoch = seq.epoch
            old = sorted(k for k in self._held if k[0] == epoch and k[1] < floor)
            out += [self._emit(self._held.pop(k)) for k in old]
        if seq.old_open and seq.old_done():
            out += self._close_previous_run()
        if seq.version != self._excused_version:
            out += self._emit_ready()

    def _apply(self, decision) -> list[Event]:
        kind, streams = decision
        return self._restart() if kind == RESTART else self._alone(streams)

    def _restart(self) -> list[Event]:
        seq = self.sequencer
        out = self._close_previous_run() if seq.old_open else []
        going_back, live = len(seq.proposers()), len(seq.live_streams())
        held_old = sum(1 for k in self._held if k[0] == seq.epoch)
        previous, first = seq.declare_restart()
        self.counters.restarts += 1
        self._last_consensus = None
        self.log.warning("the DAQ restarted its event counter: %d of %d live streams went back (from event %d "
                         "to %d); a new run starts; %d event(s) of the previous run still held", going_back, live,
                         previous, first, held_old)
        return out + self._emit_ready()

    def _alone(self, streams) -> list[Event]:
        seq = self.sequencer
        keys = {s.key for s in streams}
        proposed = seq.epoch + 1
        consensus = seq.consensus
        first = {s.key: s.first_new for s in streams}
        seq.diverge(streams)
        self.counters.lone_restarts += 1
        for key in [k for k, p in self._held.items() if k[0] == proposed and keys & p.parts.keys()]:
            aside = self._held[key]
            for stream in keys & aside.parts.keys():
                aside.take(stream)
                if stream in self.expected:
                    aside.n_expected_reported -= 1
                self._count("restart_frames", stream)
            if not aside.parts:
                del self._held[key]
        for cobo in sorted({k[0] for k in keys}):
            asads = sorted(k[1] for k in keys if k[0] == cobo)
            self.rate_log("lone", logging.WARNING,
                          "cobo %d asad %s restarted its event counter alone (at event %d; the other CoBos are at "
                          "%s): its frames are set aside (restart_frames) until it is back in step or the DAQ "
                          "restarts", cobo, ",".join(map(str, asads)), min(first[(cobo, a)] for a in asads),
                          "?" if consensus is None else consensus)
        return self._emit_ready()

    def _close_previous_run(self) -> list[Event]:
        seq = self.sequencer
        seq.close_old()
        keys = sorted(k for k in self._held if k[0] < seq.epoch)
        return [self._emit(self._held.pop(k)) for k in keys]

    # -- readiness and emission -----------------------------------------------------------------------

    def _excused(self, epoch: int) -> frozenset[StreamKey]:
        seq = self.sequencer
        if seq.version != self._excused_version:
            self._excused_cache.clear()
            self._excused_version = seq.version
        got = self._excused_cache.get(epoch)
        if got is None:
            got = self._excused_cache[epoch] = frozenset(seq.excused(epoch))
        return got

    def _ready(self, pending: _Pending) -> bool:
        epoch = pending.key[0]
        if epoch > self.sequencer.epoch:
            return False  # a proposed restart's frames wait for the verdict
        if pending.n_expected_reported == len(self.expected):
            return True
        excused = self._excused(epoch)
        if not excused:
            return False
        parts = pending.parts
        return all(p in parts or p in excused for p in self._expected_sorted)

    def _emit_ready(self) -> list[Event]:
        ready = sorted(k for k, p in self._held.items() if self._ready(p))
        return [self._emit(self._held.pop(k)) for k in ready]

    def _emit(self, pending: _Pending) -> Event:
        complete = pending.n_expected_reported == len(self.expected)
        traces = pending.traces(self.trace_memory)
        # The next events' matrices start big enough for this one's rows (one frame's worth to spare).
        self._capacity = max(self._capacity * 7 // 8, traces.shape[0] + ROWS_NEEDED)
        self._recycle(pending.matrix)
        missing = () if complete else tuple(p for p in self._expected_sorted if p not in pending.parts)
        if complete:
            self.counters.complete_events += 1
        else:
            self.counters.incomplete_events += 1
        timestamp = next((t for k, t in pending.stamps.items() if k[0] != COBO_WITH_FRIB_TIME), 0)
        timestamp_other = next((t for k, t in pending.stamps.items() if k[0] == COBO_WITH_FRIB_TIME), 0)
        self._emitted.add(pending.key)
        self._emitted_order.append(pending.key)
        if len(self._emitted_order) > self._remember:
            self._emitted.discard(self._emitted_order.popleft())
        return Event(
            id=pending.key[1],
            traces=traces,
            timestamp=timestamp,
            timestamp_other=timestamp_other,
            complete=complete,
            missing=missing,
        )

    def _matrix(self) -> np.ndarray:
        """A working matrix for a new event: a spare one of a fitting size, or a new one."""
        while self._spare:
            rows = self._spare.pop()
            if self._capacity <= rows.shape[0] <= 2 * self._capacity:
                return rows
        return np.empty((self._capacity, N_COLUMNS), np.int16)

    def _recycle(self, rows: np.ndarray) -> None:
        """Keep an emitted event's working matrix for a later event (its traces were copied out): no new
        allocation, no fresh pages to fault in, per event."""
        if len(self._spare) < MAX_SPARE_MATRICES:
            self._spare.append(rows)

    # -- counting and reporting losses -------------------------------------------------------------------

    def _count(self, reason: str, stream: StreamKey) -> None:
        setattr(self.counters, reason, getattr(self.counters, reason) + 1)
        self.cobo_losses[stream[0]][reason] += 1
        if stream[1] >= 0:  # -1: a frame dropped before its AsAd was trusted (wrong CoBo id)
            self.asad_counts[stream][reason] += 1

    def _lose(self, reason: str, stream: StreamKey, event_id: int, source: str) -> None:
        self._count(reason, stream)
        consensus = self.sequencer.consensus
        where = "?" if consensus is None else str(consensus)
        what = f"{source}: frame of event {event_id} from cobo {stream[0]} asad {stream[1]}"
        if reason == "late_frames":
            self.rate_log(reason, logging.WARNING, "%s is late (its event was already built, or it is more than "
                          "max_depth = %d ids behind the other CoBos at %s): counted in late_frames", what,
                          self.max_depth, where)
        elif reason == "duplicate_frames":
            self.rate_log(reason, logging.WARNING, "%s is a second frame of that AsAd for one event: dropped "
                          "(duplicate_frames)", what)
        elif reason == "quarantined_ahead":
            self.rate_log(reason, logging.WARNING, "%s is more than outlier_gap = %d ids ahead of the other CoBos "
                          "(at %s): quarantined (quarantined_ahead)", what, self.outlier_gap, where)
        elif reason == "quarantined_behind":
            self.rate_log(reason, logging.WARNING, "%s went back in its stream, which then resumed its sequence "
                          "(the other CoBos are at %s): quarantined (quarantined_behind)", what, where)
        elif reason == "restart_frames":
            self.rate_log(reason, logging.WARNING, "%s belongs to a stream that restarted its event counter "
                          "alone (the other CoBos are at %s): set aside (restart_frames)", what, where)
        else:  # pragma: no cover - every reason the builder itself drops for is worded above
            self.rate_log(reason, logging.WARNING, "%s dropped (%s)", what, reason)

    def report_bad(self, err: FrameError) -> None:
        """Count and report (one line, rate-limited) a bad frame found by the caller (e.g. a file reader)."""
        self.counters.bad_frames += 1
        self._note(f"bad frame: {err}")

    def _note(self, message: str) -> None:
        self.errors.append(message)
        n = self.counters.bad_frames + self.counters.clamped_frames
        if n <= LOG_FIRST_ERRORS:
            self.log.warning("%s", message)
            if n == LOG_FIRST_ERRORS:
                self.log.warning("further bad-frame messages are counted, not logged")
