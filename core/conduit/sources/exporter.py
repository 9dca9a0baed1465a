"""The ``exporter`` source: receive frames live from the DataExporters (one TCP client per CoBo).

::

    [source]
    kind = "exporter"
    hosts = "192.168.41.60-70"     # or ["10.0.0.5", "10.0.0.6:47000"], or "127.0.0.1:47001-47011"
    port = 46491
    # cobos = [0, 1, ...]          # CoBo id of each host, in order (default 0, 1, 2, ...)

Each CoBo's connection is a trio task reading length-prefixed frames
(get_format.md 4) into a fixed buffer and handing them to the shared event
builder, which judges every frame against its own stream and the other CoBos'
consensus (docs/ingestion.md). A DataExporter that is down, drops or restarts is
retried with exponential backoff while the others carry on; while it is down its
AsAds are not waited for (events come out incomplete, naming them in ``missing``). A
protocol error (oversize or inconsistent length prefix, garbage) is logged in one
line naming host:port, the connection is dropped and re-established. A frame whose
header names another CoBo than its connection's is dropped and counted
(``cobo_id_mismatch = "drop"``) or taken as the connection's CoBo
(``"trust_connection"``, for firmware that writes 0 everywhere).

No CoBo slows the others: a stream more than ``max_depth / 2`` ids *ahead of the
consensus* pauses (TCP flow control holds its data upstream) until the consensus
catches up, for at most ``timeout`` seconds per consensus value; a slow, stalled or
silent CoBo is behind the consensus and never holds anyone. Its events come out
incomplete on time; its backlog, when it comes, is counted as late frames. A
connected CoBo that sends nothing for ``silent_after`` seconds, or stays more than
``max_depth`` ids behind for that long (trickling), is reported once per episode
(log line, status line, run summary). A periodic task applies the builder's time
limit so incomplete events still come out when traffic stops; on cancellation
(Ctrl-C) everything held is flushed as incomplete.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import Any, Literal

from conduit.get.options import BuilderParams
from conduit.hookspecs import hookimpl
from conduit.params import Problem, param

from .building import FrameSource

__all__ = ["ExporterSource", "ExporterParams"]

DEFAULT_HOSTS = "192.168.41.60-70"
DEFAULT_PORT = 46491
#: A little above the largest legal frame: partial readout of all 272 channels x 512
#: buckets in 4-byte items is 256 + 557,056 = 557,312 B (a full-readout frame is 278,784 B).
DEFAULT_MAX_FRAME = 600_000


class ExporterParams(BuilderParams):
    """DataExporter connections."""

    hosts: str | list[str] = param(
        DEFAULT_HOSTS, "DataExporter hosts: a last-octet range '192.168.41.60-70', 'host:47001-47011' (port range), "
                       "or a list of 'host' / 'host:port'")
    port: int = param(DEFAULT_PORT, "TCP port for hosts given without one", ge=1, le=65535)
    cobos: list[int] | None = param(None, "CoBo id of each host, in host order; default 0, 1, 2, ...")
    connect_timeout: float = param(5.0, "give up one connection attempt after this long (s)", gt=0)
    reconnect_min: float = param(0.5, "first wait before reconnecting to a DataExporter that is down (s)", gt=0)
    reconnect_max: float = param(30.0, "longest wait between reconnection attempts (doubles up to this) (s)", gt=0)
    max_frame_bytes: int = param(DEFAULT_MAX_FRAME, "a length prefix above this is a protocol error (B)",
                                 ge=1024)
    cobo_id_mismatch: Literal["drop", "trust_connection"] = param(
        "drop", "a frame whose header CoBo id differs from its connection's: 'drop' (counted in "
                "wrong_cobo_frames, never recorded under another CoBo's pads) or 'trust_connection' (use the "
                "connection's CoBo: old firmware wrote 0 in every header)")
    read_pause: float = param(
        0.005, "after a read that emptied a connection's socket, wait this long (up to a fifth more: the rests "
               "of a burst of reads end together) before reading it again, so "
               "frames are read a few at a time (less CPU per frame; 0: read each as it comes); a connection "
               "behind the others reads on at once. Keep it well below max_depth / event rate (s)", ge=0, le=0.02)
    run: int | None = param(None, "run number given to the events and to output names ({run}); "
                                  "set it per run: --set source.run=42")

    def check(self) -> list[Problem]:
        problems = super().check()
        try:
            targets = self.targets()
        except ValueError as err:
            return problems + [Problem(("hosts",), str(err))]
        if self.cobos is not None:
            if len(self.cobos) != len(targets):
                problems.append(Problem(("cobos",), f"{len(self.cobos)} CoBo ids for {len(targets)} hosts"))
            elif len(set(self.cobos)) != len(self.cobos):
                problems.append(Problem(("cobos",), "CoBo ids must be unique"))
        if self.reconnect_max < self.reconnect_min:
            problems.append(Problem(("reconnect_max",), f"must be ≥ reconnect_min ({self.reconnect_min:g})"))
        return problems

    def targets(self) -> list[tuple[str, int]]:
        from conduit.get.hosts import parse_hosts

        return parse_hosts(self.hosts, self.port)


class ExporterSource(FrameSource):
    """Receive GET frames live from the DataExporters (one TCP connection per CoBo) and build events."""

    kind = "exporter"
    live = True
    Params = ExporterParams

    def __init__(self, params: ExporterParams, context: Any):
        super().__init__(params, context)
        from conduit.get.exporter_client import Link
        from conduit.ratelog import RateLimitedLog

        targets = params.targets()
        cobos = params.cobos if params.cobos is not None else list(range(len(targets)))
        self.links = [Link(cobo, host, port) for cobo, (host, port) in zip(cobos, targets)]
        self._changed = None  # trio.Event, created in the trio loop
        self._progress = None  # trio.Event: a link received a frame (wakes paused links)
        self._paused = 0
        self._alarm = None  # RestAlarm: the connections' rests between reads (read_pause > 0)
        self._mark: int | None = None  # cached backlog mark (see _backlog_mark)
        self._finishing: frozenset[int] | set[int] = frozenset()  # CoBos still in the previous run, as of the mark
        self._mark_time = float("-inf")
        self._mark_frame = -1  # self._frames_seen when the mark was computed
        self._frame_time = float("-inf")  # trio clock when the last frame was received (s)
        self._frames_seen = 0  # frames received by all links (a fresh backlog mark is computed once per frame)
        self._rate_log = RateLimitedLog(self.log)

    def _set_state(self, link, state: str) -> None:
        link.state = state
        if self._changed is not None:
            self._changed.set()
            self._changed = type(self._changed)()

    async def wait_connected(self, cobos=None) -> None:
        """Return when every link (or those of the given CoBo ids) is connected ("ready to receive")."""
        import trio

        wanted = [link for link in self.links if cobos is None or link.cobo in cobos]
        while not all(link.state == "connected" for link in wanted):
            if self._changed is None:
                self._changed = trio.Event()
            await self._changed.wait()

    def check_environment(self) -> list[tuple[str, str]]:
        """Host names this machine cannot resolve (a warning: the DAQ network may only exist on the DAQ machine)."""
        from conduit.get.hosts import unresolvable_hosts

        failed = unresolvable_hosts([link.host for link in self.links])
        return [("hosts", f"{host} does not resolve ({why}): its DataExporter cannot be reached from here")
                for host, why in failed.items()]

    def warm_up(self) -> None:
        self.builder.warm_up()

    # -- running -------------------------------------------------------------------------------

    async def run(self) -> None:
        import trio

        builder = self.builder
        if self._changed is None:
            self._changed = trio.Event()
        self._progress = trio.Event()
        if self.params.read_pause > 0:
            from conduit.get.exporter_client import RestAlarm

            self._alarm = RestAlarm(self.params.read_pause)
        self.log.info("connecting to %d DataExporter(s): %s", len(self.links),
                      ", ".join(f"cobo{link.cobo}={link.name}" for link in self.links))
        try:
            async with trio.open_nursery() as nursery:
                for link in self.links:
                    nursery.start_soon(self._connection, link)
                nursery.start_soon(self._watch)
                if self._alarm is not None:
                    nursery.start_soon(self._alarm.run)
        finally:
            # Cancellation (Ctrl-C, --max-events) or an error: nothing received is lost.
            with trio.CancelScope(shield=True):
                for event in builder.flush():
                    await self.emit(event)

    async def _emit_all(self, events) -> None:
        for event in events:
            await self.emit(event)

    async def _watch(self) -> None:
        """Apply the builder's time limit and report silent or trickling CoBos, a few times a second."""
        import trio

        builder = self.builder
        period = min(0.25, self.params.timeout / 4, self.params.silent_after / 4)
        while True:
            await trio.sleep(period)
            if self._paused:
                self._progress.set()  # a paused link's first wait has no deadline of its own (see _pause)
            now = trio.current_time()
            await self._emit_all(builder.poll(now))
            connected = [link for link in self.links if link.state == "connected"]
            fell_silent = [link for link in connected if self._check_health(link, now)]
            if fell_silent and len(fell_silent) == len(connected) > 1:
                self.log.info("no DataExporter has sent a frame for %g s (the DAQ is not running?)",
                              self.params.silent_after)
            else:
                for link in fell_silent:
                    self.log.warning("%s (cobo %d): connected but no frame for %g s (silent_after) while the other "
                                     "CoBos send", link.name, link.cobo, self.params.silent_after)

    def _check_health(self, link, now: float) -> bool:
        """Report (once per episode) a CoBo that stays behind the others; True when it just fell silent."""
        p = self.params
        quiet = now - max(link.last_frame_time, link.connected_at)
        if quiet > p.silent_after and link.health != "silent":
            self._end_behind(link)
            link.health, link.silent_since = "silent", now - quiet
            link.silent_episodes += 1
            return True
        if link.health == "silent":
            return False
        lag = self.builder.sequencer.lag(link.cobo)
        if lag is None or lag <= p.max_depth:
            self._end_behind(link)
            return False
        if link.behind_since is None:
            link.behind_since = now
        elif now - link.behind_since > p.silent_after and link.health != "behind":
            link.health = "behind"
            link.behind_episodes += 1
            link.late_at_behind = self._late(link.cobo)
            self.log.warning("%s (cobo %d): %d events behind the other CoBos for %.0f s (a slow or trickling "
                             "DataExporter); its events come out incomplete and its frames arrive late",
                             link.name, link.cobo, lag, now - link.behind_since)
        return False

    def _end_behind(self, link) -> None:
        if link.health == "behind":
            self.log.info("%s (cobo %d): caught up with the other CoBos (%d late frames meanwhile)", link.name,
                          link.cobo, self._late(link.cobo) - link.late_at_behind)
            link.health = ""
        link.behind_since = None

    def _late(self, cobo: int) -> int:
        return self.builder.cobo_losses.get(cobo, {}).get("late_frames", 0)

    async def _connection(self, link) -> None:
        """Keep one DataExporter connected: connect, receive, and on any failure back off and retry."""
        import trio

        from conduit.get.exporter_client import ProtocolError, receive_frames

        builder = self.builder
        delay = self.params.reconnect_min
        failures_in_a_row = 0
        while True:
            self._set_state(link, "connecting")
            try:
                with trio.fail_after(self.params.connect_timeout):
                    stream = await trio.open_tcp_stream(link.host, link.port)
            except (OSError, trio.TooSlowError) as err:
                link.connect_failures += 1
                failures_in_a_row += 1
                reason = "timed out" if isinstance(err, trio.TooSlowError) else _os_reason(err)
                if failures_in_a_row == 1:
                    self.log.warning("%s (cobo %d): cannot connect: %s; retrying with backoff", link.name,
                                     link.cobo, reason)
                    await self._emit_all(builder.set_offline(link.cobo, True))
                self._set_state(link, "retrying")
                await trio.sleep(delay)
                delay = min(delay * 2, self.params.reconnect_max)
                continue
            link.connects += 1
            link.sock = stream.socket
            failures_in_a_row = 0
            builder.set_offline(link.cobo, False)
            link.connected_at = trio.current_time()
            link.health = ""
            self._set_state(link, "connected")
            if link.connects > 1:
                self.log.info("%s (cobo %d): reconnected", link.name, link.cobo)
            frames_before = link.frames
            try:
                async with stream:
                    await receive_frames(stream, link, max_frame_bytes=self.params.max_frame_bytes,
                                         on_frames=self._frames_handler(link, builder), emit=self.emit,
                                         rest=(lambda: self._rest(link)) if self.params.read_pause > 0 else None)
                self.log.warning("%s (cobo %d): the DataExporter closed the connection; reconnecting",
                                 link.name, link.cobo)
            except ProtocolError as err:
                link.errors += 1
                self.log.error("%s (cobo %d): protocol error: %s; dropping the connection and reconnecting",
                               link.name, link.cobo, err)
            except OSError as err:
                link.errors += 1
                self.log.warning("%s (cobo %d): connection lost: %s; reconnecting", link.name, link.cobo,
                                 err.strerror or err)
            link.sock = None
            self._set_state(link, "retrying")
            await self._emit_all(builder.set_offline(link.cobo, True))
            if link.frames > frames_before:
                delay = self.params.reconnect_min  # it worked for a while: start the backoff afresh
            await trio.sleep(delay)
            delay = min(delay * 2, self.params.reconnect_max)

    def _frames_handler(self, link, builder):
        """The :data:`~conduit.get.exporter_client.FramesHandler` of ``link``: every complete frame of a read in one
        call, each validated once here and handed to the builder, the stream's pace checked after each."""
        import trio

        from conduit.get.frames import CORE_BYTES, FrameError, check_frame, peek_event_cobo

        source = f"{link.name} (cobo {link.cobo})"
        trust = self.params.cobo_id_mismatch == "trust_connection"
        cobo = link.cobo
        add_checked, add_frame = builder.add_checked, builder.add_frame
        hold = self._hold

        def on_frames(buf, spans: list, i: int) -> tuple[int, list, Awaitable[None] | None]:
            # The frames of one read came in together: one clock reading for all of them.
            now = self._frame_time = trio.current_time()
            out: list = []
            n = len(spans)
            while i < n:
                offset, length = spans[i], spans[i + 1]
                i += 2
                self._frames_seen += 1
                # A valid data frame's header is read once, here, and handed to the builder as it is (``info``).
                try:
                    info = check_frame(buf, offset, length)
                except FrameError:
                    info = None
                if info is not None and info.frame_bytes == length and not info.is_blob:
                    event_id, header_cobo = info.event_id, info.cobo
                elif length < CORE_BYTES:  # not valid: the builder validates it again, counts and reports it
                    out += add_frame(buf, offset, length, now=now, source=source, cobo=cobo)
                    event_id = None
                else:  # not valid, or not data: the same, after noting the stream's position
                    info = None
                    event_id, header_cobo = peek_event_cobo(buf, offset)
                if event_id is not None:
                    link.latest = event_id
                    link.last_frame_time = now
                    if link.health == "silent":
                        self._silence_over(link, now, source)
                    if self._paused:
                        self._progress.set()  # a no-op until a woken link waits again (it re-arms the event)
                    if header_cobo != cobo and not trust:
                        self._wrong_cobo(link, source, event_id, header_cobo, length)
                    elif info is None:
                        out += add_frame(buf, offset, length, now=now, source=source, cobo=cobo)
                    else:
                        add_checked(buf, info, cobo, now, source, out)
                # The pace check after every frame: a stream never runs ahead, even within one read.
                token = hold(link)
                if token is not None and token != link.gave_up_at:
                    return i, out, self._pause(link, token)
            return i, out, None

        return on_frames

    def _silence_over(self, link, now: float, source: str) -> None:
        link.health = ""
        link.silent_seconds += now - link.silent_since
        self.log.info("%s: frames again after %.1f s of silence", source, now - link.silent_since)

    def _wrong_cobo(self, link, source: str, event_id: int, header_cobo: int, length: int) -> None:
        link.wrong_cobo += 1
        self._rate_log(f"wrong_cobo{link.cobo}", logging.WARNING,
                       "%s: frame of event %d: header says CoBo %d: dropped (wrong_cobo_frames; set "
                       "source.cobo_id_mismatch = \"trust_connection\" if this firmware writes a wrong "
                       "CoBo id, e.g. 0)", source, event_id, header_cobo)
        self.builder.reject("wrong_cobo_frames", length, cobo=link.cobo)

    # -- keeping the streams together ---------------------------------------------------------------
    #
    # Sockets are read fairly in bytes, but CoBos carry different amounts of data per
    # event (CoBo 10 has two AsAds in the default map), so when the receivers are busy a
    # light stream races ahead in event ids and a heavy one falls behind. A stream pauses
    # (TCP flow control holds its data upstream) while it is more than max_depth / 2 ids
    # ahead of
    #   * the builder's consensus (the median of all streams, so one slow CoBo does not
    #     lower it), or of a restart the others have not agreed to (EventBuilder.hold_back);
    #   * a connection that is behind it with bytes already received and not read yet
    #     (its DataExporter is not slow, we are: read it first). A connection that is
    #     behind with nothing to read (a slow, stalled or silent DataExporter), more than
    #     outlier_gap behind, or restarted alone holds nobody.
    # It waits at most ``timeout`` seconds for one thing (one consensus value, one
    # restart vote, one backlog position), then reads on.

    def _backlog_mark(self, now: float, *, fresh: bool) -> int | None:
        """The lowest id among in-step connections with unread bytes (at most 20 ms old unless ``fresh``;
        a fresh one is computed once per frame received, however many paused links ask for it)."""
        stale = self._mark_frame != self._frames_seen if fresh else now - self._mark_time > 0.02
        if stale:
            self._mark, self._mark_time, self._mark_frame = self._lowest_backlog(), now, self._frames_seen
        return self._mark

    def _lowest_backlog(self) -> int | None:
        """The lowest ``latest`` among connections in step (not an outlier behind the consensus, no stream
        diverged or proposing a restart) with bytes received and not read yet. One poll(2) tells which sockets
        have anything to read; only those are asked how much (one ioctl each), in id order, until the first with
        a backlog."""
        from conduit.get.exporter_client import readable

        builder = self.builder
        consensus = builder.consensus
        if consensus is None:
            return None
        floor = consensus - self.params.outlier_gap
        candidates = [link for link in self.links if link.latest >= floor]
        ready = readable(candidates)
        if not ready:
            return None
        sequencer = builder.sequencer
        unsettled = sequencer.unsettled_cobos()
        # After a restart, a CoBo still finishing the previous run with bytes unread holds the new run's readers
        # too: it stands just before the new run's first id (as in the consensus). Without this, the others ran
        # max_depth ids into the new run while its bytes waited, and its first new-run frames came late.
        self._finishing = finishing = sequencer.finishing_cobos() if unsettled else frozenset()
        start = sequencer.new_start - 1
        for link in sorted(candidates, key=_by_latest if not finishing else
                           lambda link: start if link.cobo in finishing else link.latest):
            if link.fd in ready and (link.cobo not in unsettled or link.cobo in finishing) and link.unread_bytes() > 0:
                return start if link.cobo in finishing else link.latest
        return None

    def _hold(self, link, *, fresh: bool = False) -> tuple[str, int] | None:
        builder = self.builder
        token = builder.hold_back(link.cobo, link.latest)
        if token is None:
            # The clock as of the last frame received: the mark's 20 ms age is counted in frames' times.
            mark = self._backlog_mark(self._frame_time, fresh=fresh)
            if mark is not None and builder.runs_ahead(link.latest, mark) and link.cobo not in self._finishing:
                token = ("backlog", mark)
        return token

    async def _rest(self, link) -> None:
        """After a read that emptied ``link``'s socket: wait ``read_pause`` (up to a fifth more: the rests of a
        burst of reads end together, see :class:`~conduit.get.exporter_client.RestAlarm`) before the next one,
        unless the link is behind the consensus (then it reads on as soon as the other tasks had their turn)."""
        import trio

        consensus = self.builder.consensus
        if consensus is None or link.latest >= consensus:
            await self._alarm.rest()
        else:
            await trio.lowlevel.checkpoint()  # the other tasks' turn (receive_frames yields in rest() only)

    async def _pause(self, link, token: tuple[str, int]) -> None:
        """Wait (at most ``timeout`` s per token) until ``link`` no longer runs ahead; woken by every frame received.

        Most pauses end at the first wake-up (the frame the others were waiting for came), so that first wait has
        no cancel scope of its own (a scope costs ~10 us, and a link running ahead pauses once per frame): it ends
        at the next frame any link receives or at the next tick of :meth:`_watch` (at most ``timeout / 4`` s);
        only a pause that lasts longer enters a scope with the deadline, counted from the start of the pause."""
        import trio

        link.pauses += 1
        self._paused += 1
        try:
            deadline = trio.current_time() + self.params.timeout
            if (held := self._hold(link, fresh=True)) is None or held == link.gave_up_at:
                return
            self._arm()
            await self._progress.wait()
            if (held := self._hold(link, fresh=True)) is None or held == link.gave_up_at:
                return
            with trio.move_on_at(deadline) as scope:
                while (held := self._hold(link, fresh=True)) is not None and held != link.gave_up_at:
                    if held != token:
                        token = held
                    self._arm()
                    await self._progress.wait()
            if scope.cancelled_caught:
                link.gave_up_at = token
        finally:
            self._paused -= 1

    def _arm(self) -> None:
        """A fresh progress event to wait on once the current one was set (the frame handler only sets it: one
        allocation per wake-up, not one per frame received while a link is paused)."""
        if self._progress.is_set():
            import trio

            self._progress = trio.Event()

    # -- reporting -------------------------------------------------------------------------------

    def status(self) -> dict[str, str]:
        return {f"cobo{link.cobo}": (link.health or link.state) if link.state == "connected" else link.state
                for link in self.links}

    def byte_counts(self) -> dict[str, int]:
        return {f"cobo{link.cobo}": link.bytes for link in self.links}

    def losses(self) -> dict[str, int]:
        counts = self._builder.losses() if self._builder is not None else {}
        counts["protocol_errors"] = sum(link.errors for link in self.links)
        return counts

    def counters(self) -> dict[str, int]:
        builder = self._builder
        counts = builder.counter_dict() if builder is not None else {}
        counts["protocol_errors"] = sum(link.errors for link in self.links)
        counts["reconnects"] = sum(link.reconnects for link in self.links)
        counts["connect_failures"] = sum(link.connect_failures for link in self.links)
        counts["silent_episodes"] = sum(link.silent_episodes for link in self.links)
        counts["behind_episodes"] = sum(link.behind_episodes for link in self.links)
        for link in self.links:
            lost = builder.cobo_losses.get(link.cobo, {}) if builder is not None else {}
            per_cobo = {
                "bytes": link.bytes, "frames": link.frames, "errors": link.errors, "reconnects": link.reconnects,
                "pauses": link.pauses, "silent": link.silent_episodes, "behind": link.behind_episodes,
                "late": lost.get("late_frames", 0),
                "quarantined": sum(v for k, v in lost.items() if k != "late_frames"),
            }
            for key, value in per_cobo.items():
                counts[f"cobo{link.cobo}_{key}"] = value
        return counts


def _by_latest(link) -> int:
    return link.latest


def _os_reason(err: OSError) -> str:
    """The useful part of a connection error (trio wraps per-address failures in a group)."""
    cause = err.__cause__
    if isinstance(cause, BaseExceptionGroup) and cause.exceptions:
        inner = cause.exceptions[0]
        if isinstance(inner, OSError):
            return inner.strerror or str(inner)
    return err.strerror or str(err)


@hookimpl
def conduit_register_sources(register) -> None:
    register(ExporterSource)
