"""Serve simulated events as eleven fake DataExporters, one TCP port per CoBo.

Each CoBo ``c`` gets a :class:`conduit.get.dataexporter.DataExporterServer` on
``base_port + c`` (or an ephemeral port when ``base_port`` is 0). After the
expected clients have connected to every port, each event's AsAd frames go to
their CoBo's server. The frames of one event are spread over ``disorder``
event periods: within an event the AsAds arrive in a random order across
CoBos, and with ``disorder`` > 1 the late frames of one event overlap the
early frames of the next, as independent AsAd streams deliver them.

With the simulation's ``pool`` = K > 0 the first K events are generated and
encoded once, then served cyclically with fresh event ids and timestamps
patched into the frame headers: generation is then no longer the limit
(hundreds of events/s). A pool frame is stored split around the 10 header
bytes that change, and sent as (head, the event's 10 bytes, tail) in one
``sendmsg`` per CoBo: nothing is copied in Python per served event. At a
rate, everything due is sent once per 10 ms tick (:func:`_send_events`).
After the last event every queued frame is written, the connections are
closed (clients see EOF) and :func:`serve_simulation` returns its statistics.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import math
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import trio

from conduit.get.dataexporter import length_prefix

if TYPE_CHECKING:
    from .generator import Simulator
    from .truth import TruthWriter

__all__ = ["serve_simulation", "ServeStats", "ServeError", "patch_frame"]


#: At most this many events go in one pass (one write per CoBo).
MAX_LAG_EVENTS = 4

#: Passes queued for a client (not yet taken by its socket) before the sender waits for it: a slow reader
#: holds every CoBo back within a few events (its socket's buffers aside), as triggers pace real CoBos.
QUEUED_PASSES = 2

#: Paced serving wakes at most once per this many seconds and sends everything due (s).
TICK = 0.01

#: TCP congestion control of the DAQ's sockets. Over loopback the machine's default here, bbr, keeps a few
#: 64 kB segments in flight and waits for the reader's (delayed) acknowledgements: with a reader that lags
#: (the busy conduit) every pass is written in pieces, each a wake-up of the DAQ. reno lets the reader's
#: window fill: about 0.3 ms less of the DAQ's CPU per served event (docs/performance.md, fifth round); the
#: bytes are the same. Environment CONDUIT_SIM_CONGESTION overrides it ("" = the machine's default).
CONGESTION: str | None = "reno"

#: Send buffer of the DAQ's sockets (B): None = the kernel's autotuning (up to tcp_wmem's 4 MB here); fixed
#: sizes of 1-32 MB measured no cheaper (docs/performance.md, fifth round). CONDUIT_SIM_SEND_BUFFER overrides.
SEND_BUFFER: int | None = None


class ServeError(RuntimeError):
    """Serving cannot start or continue (one line)."""


@dataclasses.dataclass
class ServeStats:
    """What a serve sent."""

    events: int = 0
    frames: int = 0
    bytes: int = 0  #: frame bytes per client, length prefixes included
    elapsed: float = 0.0  #: seconds from the first frame to the last one written
    behind: float = 0.0  #: most seconds an event went out after it was due (paced serving)
    waited: float = 0.0  #: seconds the sender waited for clients that read slowly (TCP backpressure)
    ports: dict[int, int] = dataclasses.field(default_factory=dict)  #: cobo -> port
    cobo_frames: dict[int, int] = dataclasses.field(default_factory=dict)  #: cobo -> frames sent

    @property
    def events_per_second(self) -> float:
        return self.events / self.elapsed if self.elapsed > 0 else math.inf

    @property
    def megabytes_per_second(self) -> float:
        return self.bytes / 1e6 / self.elapsed if self.elapsed > 0 else math.inf


def _send_buffer() -> int | None:
    """The DAQ sockets' send buffer: :data:`SEND_BUFFER`, or CONDUIT_SIM_SEND_BUFFER (B; 0 = autotuning)."""
    value = os.environ.get("CONDUIT_SIM_SEND_BUFFER")
    return SEND_BUFFER if value is None else (int(value) or None)


def _congestion() -> str | None:
    """The DAQ sockets' congestion control: :data:`CONGESTION`, or CONDUIT_SIM_CONGESTION ("" = the machine's)."""
    value = os.environ.get("CONDUIT_SIM_CONGESTION")
    return CONGESTION if value is None else (value or None)


def _header_patch(event_id: int, timestamp: int) -> bytes:
    """Header bytes 16..25: eventTime (u48, big-endian) then eventIdx (u32)."""
    return (timestamp & 0xFFFF_FFFF_FFFF).to_bytes(6, "big") + (event_id & 0xFFFF_FFFF).to_bytes(4, "big")


def patch_frame(frame: bytes, event_id: int, timestamp: int) -> bytes:
    """A copy of ``frame`` with the header's eventTime (u48 at byte 16) and eventIdx (u32 at 22) replaced."""
    view = memoryview(frame)
    return b"".join((view[:16], _header_patch(event_id, timestamp), view[26:]))


async def serve_simulation(
    sim: Simulator,
    *,
    host: str = "127.0.0.1",
    base_port: int = 46491,
    rate: float = 0.0,
    clients: int = 1,
    connect_timeout: float = 60.0,
    disorder: float = 1.2,
    truth: TruthWriter | None = None,
    on_listening: Callable[[dict[int, int]], None] | None = None,
    on_serving: Callable[[], None] | None = None,
    before_close: Callable[[ServeStats], Awaitable[None]] | None = None,
    task_status: Any = trio.TASK_STATUS_IGNORED,
) -> ServeStats:
    """Serve ``sim.params.events`` events; return when every frame is written and the servers closed.

    ``rate`` events/s (0: as fast as the clients read), ``clients`` connections
    awaited on every port for up to ``connect_timeout`` s; ``sim.params.pool``
    distinct events are served cyclically (0: every event fresh). ``task_status``
    and ``on_listening`` receive {cobo: port} once every port listens;
    ``on_serving`` is called when the first event is about to go (the pool
    made, every client connected); ``before_close`` is awaited after the last frame is written and before the
    connections close. Raises :class:`ServeError` (a port in use, clients that
    never came).
    """
    from conduit.get.dataexporter import DataExporterServer

    cobos = sorted({c for c, _ in sim.asads})
    servers = {
        c: DataExporterServer(host, 0 if base_port == 0 else base_port + c, queue_frames=QUEUED_PASSES,
                              send_buffer=_send_buffer(), congestion=_congestion())
        for c in cobos
    }
    stats = ServeStats()
    failure: ServeError | None = None
    async with trio.open_nursery() as nursery:
        try:
            for c, server in servers.items():
                try:
                    stats.ports[c] = await nursery.start(server.serve)
                except OSError as err:
                    raise ServeError(
                        f"cannot listen on {host}:{server.port} for CoBo {c}: {err.strerror or err}"
                    ) from None
            if on_listening is not None:
                on_listening(dict(stats.ports))
            task_status.started(dict(stats.ports))
            source = _EventFrames(sim, truth)
            if source.sequence.pool:
                await trio.to_thread.run_sync(source.fill_pool)
            await _wait_for_clients(servers, stats.ports, host, clients, connect_timeout)
            if on_serving is not None:
                on_serving()
            await _send_events(source, servers, stats, rate=rate, disorder=disorder, seed=sim.params.seed)
            if before_close is not None:
                await before_close(stats)
            for server in servers.values():
                await server.stop()
        except ServeError as err:
            # Raised outside the nursery so that callers see a plain ServeError, not an exception group.
            failure = err
            nursery.cancel_scope.cancel()
    if failure is not None:
        raise failure
    return stats


#: One frame ready to send: (cobo, bytes on the wire with the length prefix, head, tail). What is sent is
#: head + patch + tail, where patch is the served event's 10 header bytes (16..25) for a pool frame (head:
#: prefix and bytes 0..15, tail: bytes 26..), and head + tail for a fresh frame (head: prefix, tail: frame).
_Frame = tuple[int, int, bytes, bytes | memoryview]


def _pool_frame(cobo: int, frame: bytes) -> _Frame:
    """A pool frame split around the bytes a served event patches: prefix + bytes 0..15, then bytes 26.. ."""
    return cobo, 8 + len(frame), length_prefix(len(frame)) + frame[:16], memoryview(frame)[26:]


class _EventFrames:
    """The frames of served event n: generated fresh, or a pool event's frames with a new id and time."""

    def __init__(self, sim: Simulator, truth: TruthWriter | None):
        from .generator import EventSequence

        self.sim = sim
        self.truth = truth
        self.sequence = EventSequence(sim)
        self.pool: list[list[_Frame]] = []
        self.error: ServeError | None = None

    def generate(self, index: int) -> dict[tuple[int, int], bytes]:
        """Simulate and encode event ``index`` (runs in a worker thread); record its truth."""
        from .writers import event_frames

        generated = self.sim.event(index)
        if self.truth is not None:
            self.truth.write(generated)
        return event_frames(self.sim, generated)

    def fill_pool(self) -> None:
        """Generate the pool; every frame is kept split around its patched header bytes (no copy per event)."""
        self.pool = [
            [_pool_frame(cobo, f) for (cobo, _), f in self.generate(i).items()] for i in range(self.sequence.pool)
        ]

    def from_pool(self, n: int) -> tuple[list[_Frame], bytes, bytes]:
        """Pool event n: its frames, and the header bytes 16..25 (eventTime, eventIdx) for CoBos 0-9 and CoBo 10."""
        k = self.sequence.source_index(n)
        event_id = self.sim.params.first_event_id + n
        ts, ts_other = self.sim.timestamps(n)
        if self.truth is not None:
            self.truth.served(event_id, k)
        return self.pool[k], _header_patch(event_id, ts), _header_patch(event_id, ts_other)

    async def produce(self, send: trio.MemorySendChannel) -> None:
        """Feed (n, frames, None, None) for every fresh event, made in a thread one ahead of the sender.

        A generation error ends the feed and is kept in ``error`` for the sender to raise.
        """
        async with send:
            for n in range(self.sim.params.events):
                try:
                    made = await trio.to_thread.run_sync(self.generate, n)
                except ValueError as err:
                    self.error = ServeError(f"event {n}: {err}")
                    return
                frames = [(cobo, 8 + len(f), length_prefix(len(f)), f) for (cobo, _), f in made.items()]
                await send.send((n, frames, None, None))

    async def pool_events(self) -> AsyncIterator[tuple[int, list[_Frame], bytes, bytes]]:
        """(n, frames, patch, patch for CoBo 10) of every served event, from the pool, in this task."""
        for n in range(self.sim.params.events):
            yield (n, *self.from_pool(n))


async def _wait_for_clients(servers: dict, ports: dict[int, int], host: str, clients: int, timeout: float) -> None:
    with trio.move_on_after(timeout) as waiting:
        for server in servers.values():
            await server.wait_clients(clients)
    if waiting.cancelled_caught:
        short = [c for c, srv in servers.items() if srv.n_clients < clients]
        raise ServeError(
            f"timed out after {timeout:g} s waiting for {clients} client(s) on every port; {len(short)} of "
            f"{len(servers)} ports short, e.g. CoBo {short[0]} at {host}:{ports[short[0]]} has "
            f"{servers[short[0]].n_clients}"
        )


async def _send_events(
    source: _EventFrames, servers: dict, stats: ServeStats, *, rate: float, disorder: float, seed: int
) -> None:
    """Send every event's frames, each frame at a random point of a ``disorder``-event window.

    Event n is due ``n / rate`` s after the first (``rate`` 0: at once). The
    sender wakes on a grid of :data:`TICK` s and sends everything due by then
    in one pass: pool events due together (several per tick above 100/s, or
    after a late wake-up) go in one ``sendmsg`` per CoBo, up to
    :data:`MAX_LAG_EVENTS` at a time, so a sender that fell behind catches up
    in fewer, larger writes. Frames leave in the same order whatever the
    grouping (each pass sends the frames due before its last event + 1). A
    client with :data:`QUEUED_PASSES` passes its socket has not taken yet
    holds the sender (and so every CoBo) back until it reads.
    """
    order_rng = np.random.default_rng([seed, 0x5E57E])
    spread = max(disorder, 0.0)
    heap: list[tuple[float, int, int, int, bytes, bytes | None, memoryview | bytes]] = []
    seq = itertools.count()
    push = heapq.heappush
    pace = _Pacer(rate)
    batched = bool(source.pool)  # a fresh event waits for nobody: it goes as soon as it is made
    queued = 0  # events whose frames are in the heap or sent
    async with trio.open_nursery() as nursery:
        if source.pool:
            events = source.pool_events()
        else:
            send, events = trio.open_memory_channel(1)
            nursery.start_soon(source.produce, send)
        async for n, frames, patch, patch_other in events:
            keys = (n + order_rng.uniform(0.0, spread, len(frames))).tolist()
            for key, (cobo, size, head, tail) in zip(keys, frames):
                push(heap, (key, next(seq), cobo, size, head, patch_other if cobo == 10 else patch, tail))
            queued = n + 1
            if batched and (n + 1) % MAX_LAG_EVENTS and pace.due(n + 1):
                continue  # the next event is due too: one pass sends both
            pace.sending(stats.events)
            # Everything due before the next event's earliest frame goes now.
            await _send_until(heap, n + 1.0, servers, stats)
            stats.events = n + 1
            await pace.wait(n + 1)
    await _send_until(heap, math.inf, servers, stats)
    stats.events = queued
    for server in servers.values():
        await server.drain()
    stats.elapsed = time.perf_counter() - pace.start
    stats.behind = pace.behind
    stats.waited = sum(server.waited for server in servers.values())
    if source.error is not None:
        raise source.error


class _Pacer:
    """When event n is due (``n / rate`` s after the start), and how far behind that the sender fell."""

    def __init__(self, rate: float):
        self.rate = rate
        self.start = time.perf_counter()
        self.behind = 0.0  #: most seconds an event was sent after it was due

    def due(self, n: int) -> bool:
        return self.rate <= 0 or time.perf_counter() - self.start >= n / self.rate

    def sending(self, n: int) -> None:
        """Event ``n`` (the oldest of this pass) is being sent now."""
        if self.rate > 0:
            self.behind = max(self.behind, time.perf_counter() - self.start - n / self.rate)

    async def wait(self, n: int) -> None:
        """Until event ``n`` is due, on the :data:`TICK` grid; at once when it is already late."""
        if self.rate <= 0:
            await trio.lowlevel.checkpoint()
            return
        offset = math.ceil(n / self.rate / TICK - 1e-9) * TICK
        await trio.sleep_until(trio.current_time() + (self.start + offset - time.perf_counter()))


async def _send_until(heap: list, limit: float, servers: dict, stats: ServeStats) -> None:
    """Send every frame due before ``limit``, in due order per CoBo.

    The frames due to one CoBo go in one ``sendmsg`` of consecutive
    length-prefixed frames: the byte stream is exactly the DataExporter's, but
    the server makes 11 writes per event instead of about 40, and the frame
    bytes are never copied in Python: a pool frame is sent as its stored head,
    the served event's 10 header bytes and its stored tail.
    """
    batches: dict[int, list] = {}
    counts: dict[int, int] = {}
    pop = heapq.heappop
    while heap and heap[0][0] < limit:
        _, _, cobo, size, head, patch, tail = pop(heap)
        parts = batches.get(cobo)
        if parts is None:
            parts = batches[cobo] = []
            counts[cobo] = 0
        if patch is None:
            parts += (head, tail)
        else:
            parts += (head, patch, tail)
        counts[cobo] += 1
        stats.bytes += size
    for cobo, parts in batches.items():
        await servers[cobo].send_buffers(parts, frames=counts[cobo])
        stats.frames += counts[cobo]
        stats.cobo_frames[cobo] = stats.cobo_frames.get(cobo, 0) + counts[cobo]
