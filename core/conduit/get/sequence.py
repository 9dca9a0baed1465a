"""Which event a frame belongs to: every stream judged against its own sequence and the others' consensus.

A *stream* is one (cobo, asad): its frames carry increasing event ids. The
*consensus* is the lower median of the last ids of the live streams (not
disconnected, not diverged, not stale: a stream is stale when it has been silent for
``stale_after`` seconds *while the others moved on* by more than ``max_depth`` ids, so
a pause of the whole DAQ makes nobody stale), so one stream that
glitches, stalls, trickles or restarts alone cannot move it. Plain synchronous code;
time comes in as ``now`` (seconds, any monotonic clock); file sources pass
``stale_after = timeout = None`` and every stream stays live.

Rules (docs/ingestion.md, "The event builder"):

* A frame more than ``outlier_gap`` ids **ahead** of the consensus is quarantined
  (``quarantined_ahead``): it never creates, completes or retires events and never
  moves the depth window. Its id still counts as that stream's position, so when a
  majority of streams really move ahead together the consensus follows them.
* A frame whose id is **below its own stream's last accepted id** (and whose event is not
  still held waiting for it: that is just a frame out of order) means that stream went
  back: it *proposes* a counter restart. Its frames are held aside under the next
  *epoch* (never emitted) until one of:

  - **restart agreed**: more than half of the live streams have gone back. A new epoch
    starts (logged once, counted in ``restarts``); the frames held aside become the new
    run's events. Streams still finishing the previous run keep filling its events
    until they go back too (or the previous run is closed: all streams moved over, the
    new run is ``max_depth`` ids on, or its events time out);
  - **glitch**: the stream's next frame continues its old sequence (an id above the one
    it went back from, other than the next id of its new sequence). The frames held
    aside are judged again in the current epoch (attached if their event is still
    held, ``late_frames`` if already built, ``quarantined_behind`` if more than
    ``outlier_gap`` behind the consensus);
  - **restarted alone**: the other streams went on: the consensus moved more than
    ``outlier_gap`` ids past the newest id at the time the stream went back (or
    ``timeout`` seconds passed) without a majority. The stream (with the other
    proposing streams of its CoBo) is *diverged*: logged once per episode, counted in
    ``lone_restarts``; its frames (held aside and later) are counted in
    ``restart_frames`` until it is back in step (an id at or above the consensus) or
    the DAQ restarts as a whole.

  While a restart is being agreed, the streams still finishing the previous run count
  for the new run's consensus as if just before its first id, so streams already in
  the new run cannot run away from them (the exporter paces streams ahead of the
  consensus) and the new run's first events wait for everyone.

* Otherwise the frame belongs to the current epoch; the builder decides between
  holding, completing, ``late_frames`` (already built, or more than ``max_depth``
  behind the consensus: a lagging stream's backlog) and ``duplicate_frames``.
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Callable, Iterable

__all__ = ["Sequencer", "Stream", "StreamKey", "RESTART", "LONE"]

StreamKey = tuple[int, int]  # (cobo, asad)

#: :meth:`Sequencer.decide` outcomes.
RESTART = "restart"
LONE = "lone"


@dataclasses.dataclass(eq=False)
class Stream:
    """What the sequencer knows about one (cobo, asad) stream."""

    key: StreamKey
    epoch: int
    #: Highest id accepted from this stream in its epoch (its own sequence).
    top: int | None = None
    #: Last id seen in its epoch, outliers included: the stream's vote for the consensus.
    head: int | None = None
    last_time: float = 0.0
    #: The consensus (and epoch) when its last frame came: a stream goes stale only once the others moved on.
    seen_at: int | None = None
    seen_epoch: int = 0
    fresh: bool = True
    #: Restarted alone (or jumped away): frames counted, not built, until back in step.
    diverged: bool = False
    #: Diverged when the whole DAQ restarted: back in step when it goes back too, not before.
    rejoin: bool = False
    #: While proposing a restart: ``top`` before going back, first id and time of the new sequence.
    old_top: int | None = None
    first_new: int = 0
    proposed_at: float = 0.0
    mark: int = 0  # newest id of the current epoch when it went back
    #: Eligible for the consensus (the value ``head`` sits in the sorted list).
    counted: bool = False


class Sequencer:
    """Judge frames per stream and keep the consensus, the epochs and restart proposals."""

    def __init__(self, *, max_depth: int, outlier_gap: int, timeout: float | None,
                 stale_after: float | None, expected: Iterable[StreamKey] = ()):
        self.max_depth = max_depth
        self.outlier_gap = outlier_gap
        self.timeout = timeout
        self.stale_after = stale_after
        self.expected = frozenset(expected)
        # Live start-up: expected streams not heard from yet count as just before the first id seen,
        # for ``stale_after`` seconds, so the first connection read cannot run away from the others.
        self._first: tuple[int, float] | None = None  # (first id, when)
        self._waiting_for_unheard = stale_after is not None
        self._unheard_stale = False  # expected streams never heard from are not waited for any more
        self.epoch = 0
        self.streams: dict[StreamKey, Stream] = {}
        self.offline_cobos: frozenset[int] = frozenset()
        #: The previous epoch still accepts frames from streams that have not gone back yet.
        self.old_open = False
        self.old_top = 0
        self.new_start = 0  # first id of the current epoch (after a restart)
        self._heads: list[int] = []  # sorted heads of the counted streams
        #: Lower median of the live streams' positions in the current epoch (None before any frame).
        self.consensus: int | None = None
        self._newest = -1  # highest id accepted in the current epoch
        self._proposing = 0  # streams proposing a restart
        #: Bumped whenever which streams count (and so which are excused) may have changed.
        self.version = 0

    # -- the consensus ---------------------------------------------------------------------------

    def _set_consensus(self) -> None:
        """The consensus is a plain attribute (read several times per frame), set whenever the heads change."""
        heads = self._heads
        self.consensus = heads[(len(heads) - 1) // 2] if heads else None

    def _eligible(self, s: Stream) -> bool:
        return (s.epoch == self.epoch and not s.diverged and s.fresh and s.head is not None
                and s.key[0] not in self.offline_cobos)

    def _rebuild(self) -> None:
        self.version += 1
        self._proposing = sum(1 for s in self.streams.values() if s.epoch == self.epoch + 1)
        heads = []
        for s in self.streams.values():
            s.counted = self._eligible(s)
            if s.counted:
                heads.append(s.head)
            elif self._straggler(s):
                heads.append(self.new_start - 1)  # it will start the new run from there
        if self._waiting_for_unheard and self._first is not None and self.epoch == 0:
            heads += [self._first[0] - 1 for key in self.expected
                      if key not in self.streams and key[0] not in self.offline_cobos]
        if not heads:  # everything stale (the DAQ paused): fall back to every stream of the epoch
            for s in self.streams.values():
                if s.epoch == self.epoch and not s.diverged and s.head is not None \
                        and s.key[0] not in self.offline_cobos:
                    s.counted = True
                    heads.append(s.head)
        heads.sort()
        self._heads = heads
        self._set_consensus()

    def _straggler(self, s: Stream) -> bool:
        """Still finishing the previous run (live, connected)."""
        return (self.old_open and s.epoch == self.epoch - 1 and s.fresh and not s.diverged
                and s.key[0] not in self.offline_cobos)

    def _move_head(self, s: Stream, event_id: int) -> None:
        if s.counted:
            heads = self._heads
            del heads[bisect.bisect_left(heads, s.head)]
            bisect.insort(heads, event_id)
            s.head = event_id
            self._set_consensus()
        else:
            s.head = event_id
            if self._eligible(s):
                self._rebuild()

    def refresh(self, now: float) -> bool:
        """Mark streams silent for more than ``stale_after`` s as stale (live sources); True when that changed."""
        if self.stale_after is None:
            return False
        changed = False
        first = self._first
        if first is not None and now - first[1] > self.stale_after:
            if self._waiting_for_unheard:
                self._waiting_for_unheard, changed = False, True
            if not self._unheard_stale and self._moved_on(first[0], 0):
                self._unheard_stale, changed = True, True
        for s in self.streams.values():
            fresh = now - s.last_time <= self.stale_after or not self._moved_on(s.seen_at, s.seen_epoch)
            if fresh != s.fresh:
                s.fresh, changed = fresh, True
        if changed:
            self._rebuild()
        return changed

    def _moved_on(self, seen_at: int | None, seen_epoch: int) -> bool:
        """Have the live streams moved more than ``max_depth`` ids past ``seen_at`` (of ``seen_epoch``)?"""
        if seen_epoch != self.epoch:
            return True
        consensus = self.consensus
        return consensus is not None and (seen_at is None or consensus - seen_at > self.max_depth)

    def set_offline(self, cobo: int, offline: bool) -> None:
        self.offline_cobos = self.offline_cobos | {cobo} if offline else self.offline_cobos - {cobo}
        self._rebuild()

    # -- judging one frame -------------------------------------------------------------------------

    def advance(self, key: StreamKey, event_id: int, now: float) -> bool:
        """The common case of :meth:`judge`, cheaply: True when ``key``'s frame ``event_id`` belongs to the current
        run with nothing else to decide (a known, live, in-step stream that does not go back, an id not far ahead);
        its stream moves on exactly as :meth:`judge` would move it. False (nothing changed): call :meth:`judge`."""
        s = self.streams.get(key)
        if (s is None or not s.fresh or s.diverged or s.epoch != self.epoch or s.top is None or event_id < s.top
                or self.far_ahead(event_id)):
            return False
        s.last_time = now
        s.seen_at, s.seen_epoch = self.consensus, self.epoch
        s.top = event_id
        self._move_head(s, event_id)
        if event_id > self._newest:
            self._newest = event_id
        return True

    def judge(self, key: StreamKey, event_id: int, now: float,
              waiting: Callable[[int], bool] | None = None) -> tuple[int | None, str | None, bool]:
        """(epoch to file the frame under or None, loss reason when dropped, True when ``key`` withdrew a
        restart proposal: its frames held aside must be judged again with :meth:`rejudge`).

        ``waiting(id)`` says whether the current run's event ``id`` is still held and waits for this
        stream: a frame that goes back to such an event came out of order, it is not a restart."""
        s = self.streams.get(key)
        if s is None:
            if self._first is None:
                self._first = (event_id, now)
            s = self.streams[key] = Stream(key, self.epoch, last_time=now)
            if key in self.expected and self._waiting_for_unheard:
                self._rebuild()  # its virtual head makes way for the real one
        s.last_time = now
        s.seen_at, s.seen_epoch = self.consensus, self.epoch
        if not s.fresh:
            s.fresh = True
            self._rebuild()
        epoch = self.epoch
        withdrew = False
        if s.epoch == epoch + 1:  # proposing a restart
            # Back above where it went back from, and not simply the next id of its new sequence (a counter
            # restarted a few events into a run soon passes its old top): that was a glitch.
            if (s.old_top is not None and event_id > s.old_top and event_id != s.top + 1  # type: ignore[operator]
                    and not self.far_ahead(event_id)):
                self._withdraw(s)
                withdrew = True
            else:
                s.top = max(s.top, event_id)  # type: ignore[type-var]
                s.head = event_id
                return epoch + 1, None, False
        elif s.epoch < epoch:  # still finishing the previous run
            if s.top is not None and event_id < s.top:  # went back: it joins the new run
                s.epoch, s.top, s.head = epoch, None, None
            else:
                s.top = event_id if s.top is None else max(s.top, event_id)
                if not self.old_open or s.epoch != epoch - 1:
                    return None, "late_frames", False
                if event_id > self.old_top + self.outlier_gap:
                    return None, "quarantined_ahead", False
                return epoch - 1, None, False
        if s.rejoin:
            if s.top is not None and event_id < s.top:  # it restarted with the others: in step again
                s.diverged = s.rejoin = False
                s.top = s.head = None
            else:  # still counting from its own lone restart
                s.top = event_id if s.top is None else max(s.top, event_id)
                return None, "restart_frames", withdrew
        if s.top is not None and event_id < s.top:
            if waiting is not None and waiting(event_id):
                return epoch, None, withdrew  # out of order within its stream, its event still held
            self._propose(s, event_id, now)
            return epoch + 1, None, withdrew
        if self.far_ahead(event_id):
            self._move_head(s, event_id)
            return None, "quarantined_ahead", withdrew
        consensus = self.consensus
        if s.diverged:
            if consensus is not None and event_id < consensus:
                s.top = s.head = event_id
                return None, "restart_frames", withdrew
            s.diverged = False  # back in step
        s.top = event_id if s.top is None else max(s.top, event_id)
        self._move_head(s, event_id)
        if event_id > self._newest:
            self._newest = event_id
        return epoch, None, withdrew

    def far_ahead(self, event_id: int) -> bool:
        """True when ``event_id`` is more than ``outlier_gap`` ids past the consensus (quarantined_ahead)."""
        consensus = self.consensus
        return consensus is not None and event_id > consensus + self.outlier_gap

    def rejudge(self, event_id: int) -> str | None:
        """Loss reason for a frame of a withdrawn proposal whose event is not held (None: hold it)."""
        consensus = self.consensus
        if consensus is not None and event_id < consensus - self.outlier_gap:
            return "quarantined_behind"
        if consensus is not None and event_id < consensus - self.max_depth:
            return "late_frames"
        return None

    # -- restart proposals -------------------------------------------------------------------------

    def _propose(self, s: Stream, event_id: int, now: float) -> None:
        s.old_top = s.top
        s.epoch = self.epoch + 1
        s.top = s.head = event_id
        s.first_new = event_id
        s.proposed_at = now
        s.mark = self._newest
        self._rebuild()

    def _withdraw(self, s: Stream) -> None:
        s.epoch = self.epoch
        s.top, s.old_top = s.old_top, None
        s.head = s.top
        self._rebuild()

    @property
    def proposing_streams(self) -> int:
        """How many streams propose a restart right now."""
        return self._proposing

    def proposers(self) -> list[Stream]:
        return [s for s in self.streams.values() if s.epoch == self.epoch + 1]

    def live_streams(self) -> list[Stream]:
        """Streams that take part in a vote: connected, not diverged, heard from lately (all when none is)."""
        voters = [s for s in self.streams.values()
                  if s.epoch >= self.epoch - 1 and not s.diverged and s.key[0] not in self.offline_cobos]
        fresh = [s for s in voters if s.fresh]
        return fresh or voters

    def decide(self, now: float, *, final: bool = False) -> tuple[str, list[Stream]] | None:
        """(RESTART, proposers) when more than half of the live streams went back; (LONE, streams) for
        proposers whose fellow streams went on (the consensus moved ``outlier_gap`` past their mark)
        or that waited ``timeout`` s without a majority, with the other proposers of their CoBos
        (``final``: the input ended, every proposal is settled now); else None."""
        if not self._proposing:
            return None
        proposers = self.proposers()
        live = self.live_streams()
        going_back = sum(1 for s in live if s.epoch == self.epoch + 1)
        if 2 * going_back > len(live):
            return RESTART, proposers
        consensus = self.consensus
        cobos = {s.key[0] for s in proposers
                 if final or (consensus is not None and consensus > s.mark + self.outlier_gap)
                 or (self.timeout is not None and now - s.proposed_at > self.timeout)}
        lone = [s for s in proposers if s.key[0] in cobos]
        return (LONE, lone) if lone else None

    def declare_restart(self) -> tuple[int, int]:
        """Start the next epoch; return (previous run's newest id, new run's first id)."""
        previous = self._newest
        proposers = self.proposers()
        self.epoch += 1
        self.old_open = True
        self.old_top = previous
        self.new_start = min(s.first_new for s in proposers)
        self._newest = max(s.top for s in proposers)  # type: ignore[type-var]
        for s in self.streams.values():
            if s.epoch == self.epoch:
                s.old_top = None
            elif s.diverged:  # it rejoins once it goes back too
                s.epoch, s.head, s.rejoin = self.epoch, None, True
            elif s.epoch < self.epoch - 1:  # a straggler of an older run starts afresh
                s.epoch, s.top, s.head = self.epoch, None, None
        self._rebuild()
        return previous, self.new_start

    def diverge(self, streams: Iterable[Stream]) -> None:
        """The given proposers restarted alone: back to the current epoch, diverged."""
        for s in streams:
            s.epoch, s.old_top, s.diverged = self.epoch, None, True
        self._rebuild()

    def old_done(self) -> bool:
        """True when the previous run can be closed: no live stream is still in it."""
        return self.old_open and not any(self._straggler(s) for s in self.streams.values())

    def close_old(self) -> None:
        """The previous run is closed: its stragglers' frames are late from now on."""
        self.old_open = False
        self._rebuild()

    def gone_into_restart(self, cobo: int, event_id: int) -> int:
        """How far ``event_id`` (a frame just read from ``cobo``) is into the new sequence of a stream of that CoBo
        that proposes a restart (0: it is not in such a sequence, e.g. it continues its old one)."""
        if not self._proposing:
            return 0
        return max((event_id - s.first_new for s in self.streams.values()
                    if s.key[0] == cobo and s.epoch == self.epoch + 1
                    and s.first_new <= event_id <= (s.old_top if s.old_top is not None else event_id)), default=0)

    # -- what events need not wait for ------------------------------------------------------------------

    def excused(self, epoch: int) -> set[StreamKey]:
        """Streams that will not deliver frames for events of ``epoch``: diverged, stale (or expected and
        never heard from while the others moved on), disconnected, or (for the previous run) already in the
        new one. A stream proposing a restart is still waited for (it may have glitched and come back);
        streams still finishing the previous run are not excused from the new run's events: they will come."""
        out = {key for key in self.expected if key[0] in self.offline_cobos}
        if self._unheard_stale:
            out.update(key for key in self.expected if key not in self.streams)
        for key, s in self.streams.items():
            if (s.diverged and not s.rejoin) or not s.fresh or key[0] in self.offline_cobos:
                out.add(key)
            elif epoch < self.epoch and s.epoch != epoch:  # already in a newer run
                out.add(key)
        return out

    def unsettled_cobos(self) -> set[int]:
        """CoBos with a stream not in the current run (diverged, proposing a restart, or still finishing the
        previous run): the links a backlog mark ignores."""
        epoch = self.epoch
        return {s.key[0] for s in self.streams.values() if s.epoch != epoch or s.diverged}

    def finishing_cobos(self) -> set[int]:
        """CoBos whose streams not in the current run are all still finishing the previous one (live, in step):
        their backlog comes before the new run's first id, so the new run must not run away from them."""
        epoch = self.epoch
        out = {s.key[0] for s in self.streams.values() if self._straggler(s)}
        out -= {s.key[0] for s in self.streams.values() if s.diverged or (s.epoch != epoch and not self._straggler(s))}
        return out

    def lag(self, cobo: int) -> int | None:
        """How many ids the given CoBo's most advanced stream is behind the consensus (None: unknown)."""
        consensus = self.consensus
        heads = [s.head for s in self.streams.values()
                 if s.key[0] == cobo and s.epoch == self.epoch and s.head is not None]
        if consensus is None or not heads:
            return None
        return consensus - max(heads)
