"""The event builder: frames in, :class:`conduit.event.Event` out (get_format.md 5.4).

Plain synchronous code shared by the ``graw``, ``exporter`` and ``simulate``
sources and the tests; time is passed in explicitly (``now``, seconds on any
monotonic clock) so behaviour is deterministic.

Rules
-----
* Frames are grouped by GET event id (never by timestamp).
* An event is emitted **complete** as soon as every expected (cobo, asad) has
  reported. The expected set defaults to the AsAds that carry pads in the map
  (40 in the default map) and can be overridden.
* Otherwise it is emitted **incomplete** (``Event.complete = False``,
  ``Event.missing`` = the expected pairs that did not report) when

  - it falls more than ``max_depth`` events behind the newest event id seen, or
  - it has waited more than ``timeout`` seconds since its first frame (:meth:`poll`), or
  - every expected pair that is still online has reported (pairs of CoBos marked
    offline with :meth:`set_offline` are not waited for), or
  - the input ends (:meth:`flush`), or the caller closes ids below a bound (:meth:`close_before`).
* A frame for an event already emitted (remembered for the last ``remember`` ids),
  or older than ``max_depth`` behind the newest id, is a **late frame**: counted
  and dropped, never a new event. A second frame from the same (cobo, asad) for a
  held event is a **duplicate**: counted and dropped (the first is kept).
* A frame whose id is more than ``restart_gap`` below the newest id means the DAQ
  restarted its counter (a new run): everything held is flushed as incomplete,
  the memory of emitted ids is cleared, and building starts again.
* Frames from (cobo, asad) pairs outside the expected set are counted
  (``unexpected_frames``) and used while their event is held.
* Timestamps: CoBo 10's event time -> ``Event.timestamp_other``, the other CoBos'
  -> ``Event.timestamp`` (the first frame that carries each).
* Traces: one int16 row per mapped signal channel [cobo, asad, aget, channel, pad,
  512 samples], rows grouped by (cobo, asad) in ascending order. FPN channels never
  appear (optional FPN subtraction), unmapped channels are dropped and counted.
* A frame that fails validation is counted as a bad frame and reported in one
  line (``source @ byte offset: reason``); it never stops the builder.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
from collections.abc import Iterable

import numpy as np

from ..event import Event, empty_traces
from .decoder import FrameDecoder
from .frames import FrameError, FrameInfo, check_frame
from .maps import ElectronicsMap

__all__ = ["EventBuilder", "BuilderCounters", "COBO_WITH_FRIB_TIME"]

log = logging.getLogger("conduit.get.builder")

#: The CoBo whose clock is FRIB-synchronised (its time goes to ``timestamp_other``).
COBO_WITH_FRIB_TIME = 10
#: Bad-frame messages logged in full before the builder starts summarising.
LOG_FIRST_ERRORS = 20


@dataclasses.dataclass
class BuilderCounters:
    """Running totals of one builder."""

    frames: int = 0  #: frames offered (valid or not)
    bytes: int = 0  #: bytes of frames offered
    bad_frames: int = 0  #: frames that failed validation
    skipped_frames: int = 0  #: blob/topology frames and unknown frame types (skipped by size)
    clamped_frames: int = 0  #: frames whose item count did not fit their size (clamped; a warning)
    items_dropped: int = 0  #: invalid items (channel > 67, bucket > 511)
    late_frames: int = 0  #: frames of events already emitted or too old
    duplicate_frames: int = 0  #: a second frame from the same (cobo, asad) for one event
    unexpected_frames: int = 0  #: frames from (cobo, asad) pairs outside the expected set
    complete_events: int = 0
    incomplete_events: int = 0
    unmapped_channels: int = 0  #: channels with data that are not in the map (once per frame)
    restarts: int = 0  #: event-id counter restarts seen

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class _Pending:
    event_id: int
    first_seen: float
    parts: dict[tuple[int, int], np.ndarray] = dataclasses.field(default_factory=dict)
    n_expected_reported: int = 0
    timestamp: int = 0
    timestamp_other: int = 0
    has_timestamp: bool = False
    has_timestamp_other: bool = False


class EventBuilder:
    """Group frames by event id and emit :class:`~conduit.event.Event` objects.

    ``expected`` overrides the (cobo, asad) pairs an event needs to be complete
    (default: ``emap.asads``). ``timeout`` (s) may be None for file sources, where
    only depth, :meth:`close_before` and :meth:`flush` apply.
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
        restart_gap: int = 1000,
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
        self.restart_gap = max(int(restart_gap), self.max_depth + 1)
        self.decoder = FrameDecoder(emap, fpn_subtraction=fpn_subtraction)
        self.counters = BuilderCounters()
        self.log = logger or log
        #: The last few bad-frame messages (for status displays and tests).
        self.errors: collections.deque[str] = collections.deque(maxlen=50)
        self._held: dict[int, _Pending] = {}  # insertion order = age order
        self._newest: int | None = None
        self._emitted_order: collections.deque[int] = collections.deque()
        self._emitted: set[int] = set()
        self._remember = max(int(remember), 1)
        self._offline: frozenset[tuple[int, int]] = frozenset()

    # -- state -----------------------------------------------------------------------------

    @property
    def held(self) -> int:
        """Events currently being assembled."""
        return len(self._held)

    @property
    def newest_event_id(self) -> int | None:
        return self._newest

    def counter_dict(self) -> dict[str, int]:
        """Counters including the decoder's (items dropped, unmapped channels)."""
        self.counters.items_dropped = self.decoder.items_dropped
        self.counters.unmapped_channels = self.decoder.unmapped_channels
        return self.counters.as_dict()

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
        counters = self.counters
        counters.frames += 1
        if info is None:
            try:
                info = check_frame(buf, offset, length, source=source)
                if length is not None and info.frame_bytes != length:
                    raise FrameError(source, offset, f"frame size field says {info.frame_bytes} B, "
                                                     f"the stream delivered {length} B")
            except FrameError as err:
                counters.bytes += length if length is not None else max(len(buf) - offset, 0)
                self.report_bad(err)
                return []
        counters.bytes += info.frame_bytes
        if info.skip:
            counters.skipped_frames += 1
            return []
        if info.clamped:
            counters.clamped_frames += 1
            self._note(f"{source} @ byte {info.offset}: item count exceeds the frame size; clamped to "
                       f"{info.n_items} items (padding not decoded)")
        key = (info.cobo if cobo is None else cobo, info.asad if asad is None else asad)
        event_id = info.event_id
        out: list[Event] = []

        newest = self._newest
        if newest is not None and event_id < newest - self.restart_gap:
            self.log.warning("%s: event id %d after %d: the DAQ restarted its event counter; "
                             "flushing %d held event(s)", source, event_id, newest, len(self._held))
            counters.restarts += 1
            out.extend(self.flush())
            self._emitted.clear()
            self._emitted_order.clear()
            newest = self._newest = None

        expected = key in self.expected
        if not expected:
            counters.unexpected_frames += 1
        pending = self._held.get(event_id)
        if pending is None:
            if event_id in self._emitted or (newest is not None and event_id < newest - self.max_depth):
                if expected:
                    counters.late_frames += 1
                return out
            pending = self._held[event_id] = _Pending(event_id, now)
        elif key in pending.parts:
            counters.duplicate_frames += 1
            return out

        data = buf if isinstance(buf, np.ndarray) else np.frombuffer(buf, np.uint8)
        pending.parts[key] = self.decoder.decode(data, info, key[0], key[1])
        if expected:
            pending.n_expected_reported += 1
        if key[0] == COBO_WITH_FRIB_TIME:
            if not pending.has_timestamp_other:
                pending.timestamp_other, pending.has_timestamp_other = info.timestamp, True
        elif not pending.has_timestamp:
            pending.timestamp, pending.has_timestamp = info.timestamp, True

        if self._ready(pending):
            out.append(self._emit(self._held.pop(event_id)))
        if newest is None or event_id > newest:
            self._newest = event_id
            out.extend(self._evict_depth())
        if self.timeout is not None:
            out.extend(self.poll(now))
        return out

    def poll(self, now: float) -> list[Event]:
        """Emit (incomplete) events that have waited more than ``timeout`` seconds."""
        out: list[Event] = []
        if self.timeout is None:
            return out
        limit = now - self.timeout
        while self._held:
            first = next(iter(self._held.values()))
            if first.first_seen >= limit:
                break
            out.append(self._emit(self._held.pop(first.event_id)))
        out.sort(key=lambda e: e.id)
        return out

    def close_before(self, event_id: int) -> list[Event]:
        """Emit every held event with an id below ``event_id`` (a merged file stream has moved past them)."""
        ids = sorted(i for i in self._held if i < event_id)
        return [self._emit(self._held.pop(i)) for i in ids]

    def flush(self) -> list[Event]:
        """Emit everything held (end of input), in id order."""
        ids = sorted(self._held)
        return [self._emit(self._held.pop(i)) for i in ids]

    def set_offline(self, cobo: int, offline: bool = True) -> list[Event]:
        """Mark a CoBo's AsAds as not delivering (a dead connection); return events that no
        longer wait for anything (emitted incomplete, with those AsAds in ``missing``)."""
        pairs = {p for p in self.expected if p[0] == cobo}
        self._offline = self._offline | pairs if offline else self._offline - pairs
        if not offline:
            return []
        ready = sorted(i for i, p in self._held.items() if self._ready(p))
        return [self._emit(self._held.pop(i)) for i in ready]

    # -- internals -------------------------------------------------------------------------------

    def _ready(self, pending: _Pending) -> bool:
        if pending.n_expected_reported == len(self.expected):
            return True
        if not self._offline:
            return False
        parts = pending.parts
        return all(p in parts for p in self.expected if p not in self._offline)

    def _evict_depth(self) -> list[Event]:
        assert self._newest is not None
        floor = self._newest - self.max_depth
        old = sorted(i for i in self._held if i < floor)
        return [self._emit(self._held.pop(i)) for i in old]

    def _emit(self, pending: _Pending) -> Event:
        complete = pending.n_expected_reported == len(self.expected)
        parts = [pending.parts[k] for k in sorted(pending.parts)]
        parts = [p for p in parts if p.shape[0]]
        if not parts:
            traces = empty_traces()
        elif len(parts) == 1:
            traces = parts[0].copy()
        else:
            traces = np.concatenate(parts)
        missing = () if complete else tuple(p for p in self._expected_sorted if p not in pending.parts)
        if complete:
            self.counters.complete_events += 1
        else:
            self.counters.incomplete_events += 1
        self._emitted.add(pending.event_id)
        self._emitted_order.append(pending.event_id)
        if len(self._emitted_order) > self._remember:
            self._emitted.discard(self._emitted_order.popleft())
        return Event(
            id=pending.event_id,
            traces=traces,
            timestamp=pending.timestamp,
            timestamp_other=pending.timestamp_other,
            complete=complete,
            missing=missing,
        )

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
