"""Serve simulated events as eleven fake DataExporters, one TCP port per CoBo.

Each CoBo ``c`` gets a :class:`conduit.get.dataexporter.DataExporterServer` on
``base_port + c`` (or an ephemeral port when ``base_port`` is 0). After the
expected clients have connected to every port, each event's AsAd frames go to
their CoBo's server. The frames of one event are spread over ``disorder``
event periods: within an event the AsAds arrive in a random order across
CoBos, and with ``disorder`` > 1 the late frames of one event overlap the
early frames of the next, as independent AsAd streams deliver them.

With ``pool`` > 0 the first ``pool`` events are generated and encoded once,
then served cyclically with fresh event ids and timestamps patched into the
frame headers: generation is then no longer the limit (hundreds of events/s).
After the last event every queued frame is written, the connections are
closed (clients see EOF) and :func:`serve_simulation` returns its statistics.
"""

from __future__ import annotations

import dataclasses
import heapq
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import trio

if TYPE_CHECKING:
    from .generator import Simulator
    from .truth import TruthWriter

__all__ = ["serve_simulation", "ServeStats", "ServeError", "patch_frame"]

#: Timestamp of served event 0 and the FRIB clock offset (100 MHz ticks), as the generator uses.
_T0 = 1_000_000_000
_FRIB_OFFSET = 123_456_789


class ServeError(RuntimeError):
    """Serving cannot start or continue (one line)."""


@dataclasses.dataclass
class ServeStats:
    """What a serve sent."""

    events: int = 0
    frames: int = 0
    bytes: int = 0  #: frame bytes per client, length prefixes included
    elapsed: float = 0.0  #: seconds from the first frame to the last one written
    ports: dict[int, int] = dataclasses.field(default_factory=dict)  #: cobo -> port

    @property
    def events_per_second(self) -> float:
        return self.events / self.elapsed if self.elapsed > 0 else math.inf

    @property
    def megabytes_per_second(self) -> float:
        return self.bytes / 1e6 / self.elapsed if self.elapsed > 0 else math.inf


def patch_frame(frame: bytes, event_id: int, timestamp: int) -> bytes:
    """A copy of ``frame`` with the header's eventTime (u48 at byte 16) and eventIdx (u32 at 22) replaced."""
    return b"".join((frame[:16], (timestamp & 0xFFFF_FFFF_FFFF).to_bytes(6, "big"),
                     (event_id & 0xFFFF_FFFF).to_bytes(4, "big"), frame[26:]))  # fmt: skip


async def serve_simulation(
    sim: Simulator,
    *,
    host: str = "127.0.0.1",
    base_port: int = 46491,
    rate: float = 0.0,
    clients: int = 1,
    connect_timeout: float = 60.0,
    pool: int = 0,
    disorder: float = 1.2,
    truth: TruthWriter | None = None,
    on_listening: Callable[[dict[int, int]], None] | None = None,
    task_status: Any = trio.TASK_STATUS_IGNORED,
) -> ServeStats:
    """Serve ``sim.params.events`` events; return when every frame is written and the servers closed.

    ``rate`` events/s (0: as fast as the clients read), ``clients`` connections
    awaited on every port for up to ``connect_timeout`` s, ``pool`` distinct
    events served cyclically (0: every event generated fresh). ``task_status``
    and ``on_listening`` receive {cobo: port} once every port listens.
    """
    from ..get.dataexporter import DataExporterServer
    from .writers import event_frames

    params = sim.params
    cobos = sorted({c for c, _ in sim.asads})
    servers = {c: DataExporterServer(host, 0 if base_port == 0 else base_port + c) for c in cobos}
    stats = ServeStats()
    order_rng = np.random.default_rng([params.seed, 0x5E57E])
    period = 1e8 / params.trigger_rate

    async with trio.open_nursery() as nursery:
        for c, server in servers.items():
            try:
                stats.ports[c] = await nursery.start(server.serve)
            except OSError as err:
                nursery.cancel_scope.cancel()
                raise ServeError(f"cannot listen on {host}:{server.port} for CoBo {c}: {err.strerror or err}") from None
        if on_listening is not None:
            on_listening(dict(stats.ports))
        task_status.started(dict(stats.ports))

        def generate(index: int) -> dict[tuple[int, int], bytes]:
            generated = sim.event(index)
            if truth is not None:
                truth.write(generated)
            return event_frames(sim, generated)

        pool_frames: list[dict[tuple[int, int], bytes]] = []
        if pool > 0:
            for index in range(min(pool, params.events)):
                pool_frames.append(await trio.to_thread.run_sync(generate, index))

        with trio.move_on_after(connect_timeout) as waiting:
            for server in servers.values():
                await server.wait_clients(clients)
        if waiting.cancelled_caught:
            missing = [f"CoBo {c} ({host}:{stats.ports[c]}: {s.n_clients})" for c, s in servers.items() if s.n_clients < clients]
            for server in servers.values():
                await server.stop()
            raise ServeError(f"timed out after {connect_timeout:g} s waiting for {clients} client(s) on every port; "
                             f"short: {', '.join(missing)}")  # fmt: skip

        heap: list[tuple[float, int, int, bytes]] = []
        seq = 0
        start = time.perf_counter()
        # Fresh events: generate the next one in a thread while this one is sent.
        next_frames = None
        for n in range(params.events):
            if pool_frames:
                k = n % len(pool_frames)
                event_id = params.first_event_id + n
                ts = int(_T0 + round(n * period))
                frames = {key: patch_frame(f, event_id, ts + _FRIB_OFFSET if key[0] == 10 else ts)
                          for key, f in pool_frames[k].items()}  # fmt: skip
                if truth is not None:
                    truth.served(event_id, k)
            else:
                frames = next_frames if next_frames is not None else await trio.to_thread.run_sync(generate, n)
                next_frames = None
            keys = n + order_rng.uniform(0.0, max(disorder, 0.0), len(frames))
            for key, ((cobo, _asad), frame) in zip(keys, frames.items()):
                heapq.heappush(heap, (float(key), seq, cobo, frame))
                seq += 1
            if not pool_frames and n + 1 < params.events:
                async with trio.open_nursery() as gen:
                    result: dict = {}

                    async def make(i=n + 1):
                        result["frames"] = await trio.to_thread.run_sync(generate, i)

                    gen.start_soon(make)
                    await _send_until(heap, n + 1.0, servers, stats)
                next_frames = result["frames"]
            else:
                await _send_until(heap, n + 1.0, servers, stats)
            stats.events += 1
            if rate > 0:
                await trio.sleep_until(_trio_deadline(start, (n + 1) / rate))
        await _send_until(heap, math.inf, servers, stats)
        for server in servers.values():
            await server.drain()
        stats.elapsed = time.perf_counter() - start
        for server in servers.values():
            await server.stop()
    return stats


async def _send_until(heap: list, limit: float, servers: dict, stats: ServeStats) -> None:
    while heap and heap[0][0] < limit:
        _, _, cobo, frame = heapq.heappop(heap)
        await servers[cobo].send_frame(frame)
        stats.frames += 1
        stats.bytes += len(frame) + 8


def _trio_deadline(start_perf: float, offset: float) -> float:
    return trio.current_time() + (start_perf + offset - time.perf_counter())
