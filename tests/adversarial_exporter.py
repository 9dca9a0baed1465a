"""An adversarial DataExporter for the tests, written from ../shared/reference/get_format.md only.

It shares no code with the project's encoder (``conduit.get.frames``), simulator or
``DataExporterServer``: its GRAW frames are laid out byte by byte from section 1 of the
format reference (partial readout, big-endian, 256-byte blocks) and its server speaks
section 4's protocol (u64 little-endian length, then the frame) over real TCP on
127.0.0.1. The test drives it: which CoBo sends which frames, with which header ids,
when, at what pace, and where a connection is cut.

Every sample carries a fingerprint of (run, event, cobo, asad, aget, channel, bucket),
so a row recorded under the wrong event, run or CoBo, or with the wrong samples, is
caught by :meth:`Daq.check_event`.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable, Iterable

import numpy as np
import trio

BLOCK = 256  #: metaType 8: 2**8-byte blocks (get_format.md 1.1)
#: Buckets each channel is read at (the rest of its 512 samples are zero after decoding).
BUCKETS = np.array([0, 1, 37, 100, 255, 256, 400, 511])
#: Event times: run * RUN_TICKS + event * 1000 (+ 1 for CoBo 10), so an event's run is readable back.
RUN_TICKS = 10**9


def fingerprint(run: int, event: int, cobo: int, asad: int, aget, channel, bucket):
    """The 12-bit sample written at (aget, channel, bucket): never 0, different for every coordinate."""
    return (event * 7919 + run * 104729 + cobo * 613 + asad * 157 + np.asarray(aget) * 53
            + np.asarray(channel) * 11 + np.asarray(bucket) * 3) % 4093 + 1


@functools.lru_cache(maxsize=None)
def _layout(channels: tuple[tuple[int, int], ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, bytes]:
    """Per channel list: each item's AGET, channel, bucket, its address bits, and the hit-pattern bytes."""
    agets = np.repeat([a for a, _ in channels], len(BUCKETS))
    chans = np.repeat([c for _, c in channels], len(BUCKETS))
    buckets = np.tile(BUCKETS, len(channels))
    address = (agets.astype(np.uint32) << 30) | (chans.astype(np.uint32) << 23) | (buckets.astype(np.uint32) << 14)
    hits = bytearray()
    for aget in range(4):  # channel c is bit 67 - c of the AGET's 72-bit field (get_format.md 1.4)
        bits = 0
        for a, c in channels:
            if a == aget:
                bits |= 1 << (67 - c)
        hits += bits.to_bytes(9, "big")
    return agets, chans, buckets, address, bytes(hits)


def graw_frame(*, cobo: int, asad: int, event_id: int, timestamp: int, run: int, true_event: int,
               true_cobo: int, channels: list[tuple[int, int]]) -> bytes:
    """One partial-readout frame (get_format.md 1.2, 1.5): a 256-byte header, one big-endian u32 per sample
    (AGET in bits 31-30, channel 29-23, bucket 22-14, sample 11-0), zero padding to the block size.

    ``cobo``/``event_id`` are what the header says; the samples are those of ``true_cobo``/``true_event``
    (so a frame with a lying header is recognisable wherever it ends up).
    """
    agets, chans, buckets, address, hits = _layout(tuple(channels))
    samples = fingerprint(run, true_event, true_cobo, asad, agets, chans, buckets)
    body = (address | samples.astype(np.uint32)).astype(">u4").tobytes()
    n_blocks = 1 + -(-len(body) // BLOCK)
    header = bytearray(BLOCK)
    header[0] = 8  # metaType: big-endian, not a blob, 2**8-byte blocks
    header[1:4] = n_blocks.to_bytes(3, "big")  # frameSize (blocks, padding included)
    header[4] = 0  # dataSource
    struct.pack_into(">HB", header, 5, 1, 5)  # frameType 1 (partial readout), revision 5
    struct.pack_into(">HHI", header, 8, 1, 4, len(address))  # headerSize (blocks), itemSize, nItems
    header[16:22] = timestamp.to_bytes(6, "big")  # eventTime u48
    struct.pack_into(">IBB", header, 22, event_id, cobo, asad)  # eventIdx, coboIdx, asadIdx
    header[31:67] = hits  # hitPat_0 .. hitPat_3
    return bytes(header) + body + bytes(n_blocks * BLOCK - BLOCK - len(body))


def message(frame: bytes) -> bytes:
    """One DataExporter message: u64 little-endian length, then the frame (get_format.md 4.2)."""
    return len(frame).to_bytes(8, "little") + frame


class FakeExporter:
    """One CoBo's DataExporter: listens on 127.0.0.1 (a free port), sends what the test says to its client."""

    def __init__(self, cobo: int):
        self.cobo = cobo
        self.port = 0
        self.client: trio.SocketStream | None = None
        self.connections = 0
        self.frames_sent = 0
        self._changed = trio.Event()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def serve(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, stream: trio.SocketStream) -> None:
        self.client = stream
        self.connections += 1
        self._changed.set()
        self._changed = trio.Event()
        await trio.sleep_forever()  # the test owns the connection; it closes it with cut()

    async def wait_connections(self, n: int = 1) -> None:
        while self.connections < n:
            await self._changed.wait()

    async def send(self, frames: Iterable[bytes]) -> None:
        frames = list(frames)
        await self.wait_connections()
        await self.client.send_all(b"".join(message(f) for f in frames))  # type: ignore[union-attr]
        self.frames_sent += len(frames)

    async def cut(self, frame: bytes, keep: int) -> None:
        """Send ``keep`` bytes of a message carrying ``frame``, then close the connection (a crash mid-frame)."""
        client = self.client
        assert client is not None
        await client.send_all(message(frame)[:keep])
        self.client = None
        await client.aclose()


class Daq:
    """Eleven fake DataExporters (one per CoBo of the electronics map) and the frames of every event."""

    def __init__(self, emap, *, channels_per_asad: int = 2):
        self.emap = emap
        self.asads = tuple(emap.asads)
        self.cobos = sorted({c for c, _ in self.asads})
        self.exporters = {c: FakeExporter(c) for c in self.cobos}
        # Two mapped channels per AsAd, in different AGETs where the map allows.
        self.channels: dict[tuple[int, int], list[tuple[int, int]]] = {}
        for cobo, asad in self.asads:
            mapped = [(a, c) for a in range(4) for c in range(68) if emap.pads[cobo, asad, a, c] >= 0]
            picks = [mapped[0], mapped[len(mapped) // 2 + 1]]
            self.channels[(cobo, asad)] = picks[:channels_per_asad]
        self._sent = np.zeros(emap.pads.shape, bool)  # [cobo, asad, aget, channel]: a channel the DAQ reads
        for (cobo, asad), picks in self.channels.items():
            for aget, channel in picks:
                self._sent[cobo, asad, aget, channel] = True

    async def start(self, nursery: trio.Nursery) -> None:
        for exporter in self.exporters.values():
            await nursery.start(exporter.serve)

    @property
    def hosts(self) -> str:
        return ", ".join(f'"{self.exporters[c].address}"' for c in self.cobos)

    def asads_of(self, cobo: int) -> list[int]:
        return [a for c, a in self.asads if c == cobo]

    def frame(self, cobo: int, asad: int, event: int, *, run: int = 0, header_id: int | None = None,
              header_cobo: int | None = None) -> bytes:
        """The frame CoBo ``cobo`` AsAd ``asad`` sends for ``event`` of ``run`` (the header may lie)."""
        stamp = run * RUN_TICKS + event * 1000 + (1 if cobo == 10 else 0)
        return graw_frame(cobo=cobo if header_cobo is None else header_cobo, asad=asad,
                          event_id=event if header_id is None else header_id, timestamp=stamp, run=run,
                          true_event=event, true_cobo=cobo, channels=self.channels[(cobo, asad)])

    def frames(self, cobo: int, events: Iterable[int], *, run: int = 0, **kw) -> list[bytes]:
        """The frames of ``cobo`` for ``events``, in DAQ order (event by event, AsAds in order)."""
        return [self.frame(cobo, asad, e, run=run, **kw) for e in events for asad in self.asads_of(cobo)]

    async def send(self, events: Iterable[int | tuple[int, int]], run: int = 0, cobos: Iterable[int] | None = None,
                   frames_for: Callable[[int, int, int], list[bytes]] | None = None, chunk: int = 5) -> None:
        """Every CoBo (or those given) sends its frames of ``events`` (ids of ``run``, or (run, id) pairs) in
        step with the others, ``chunk`` events at a time, as DataExporters do when triggers come in:
        no CoBo's sender gets further than one chunk ahead. ``frames_for(cobo, run, event)`` replaces the
        frames a CoBo sends for an event (a fault)."""
        items = [e if isinstance(e, tuple) else (run, e) for e in events]
        cobos = list(self.cobos if cobos is None else cobos)
        for start in range(0, len(items), chunk):
            part = items[start:start + chunk]
            async with trio.open_nursery() as nursery:
                for cobo in cobos:
                    frames = [f for r, e in part
                              for f in (frames_for(cobo, r, e) if frames_for else self.frames(cobo, [e], run=r))]
                    if frames:
                        nursery.start_soon(self.exporters[cobo].send, frames)

    # -- checking what was built ---------------------------------------------------------------------

    def check_event(self, event, *, run: int | None = None) -> int:
        """Rows of ``event`` that disagree with what was sent (wrong samples, labels, pad, event or run);
        also asserts that its rows are exactly those of the AsAds it does not list as missing."""
        if run is None:
            run = int(event.timestamp // RUN_TICKS) if event.timestamp else int(event.timestamp_other // RUN_TICKS)
        traces = event.traces
        cobo, asad, aget, channel, pad = (traces[:, i].astype(np.int64) for i in range(5))
        labelled = (self.emap.pads[cobo, asad, aget, channel] == pad) & self._sent[cobo, asad, aget, channel]
        want = np.zeros((len(traces), 512), np.int64)
        want[:, BUCKETS] = fingerprint(run, event.id, cobo[:, None], asad[:, None], aget[:, None],
                                       channel[:, None], BUCKETS[None, :])
        bad = int(np.count_nonzero(~(labelled & (traces[:, 5:] == want).all(axis=1))))
        present = {(int(c), int(a)) for c, a in traces[:, :2]} if len(traces) else set()
        assert present == set(self.asads) - set(event.missing), (event.id, sorted(present), event.missing)
        return bad
