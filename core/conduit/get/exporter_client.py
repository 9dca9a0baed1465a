"""DataExporter client side: host lists and one CoBo's receive loop (trio).

Protocol (get_format.md 4): each message is a u64 little-endian length, then that
many bytes of one GRAW frame; a length of 0 carries nothing. A length larger than
``max_frame_bytes``, not a multiple of the frame's block size, or different from
the frame's own size field is a protocol error: the connection is dropped (and
re-established by the caller) and the length is never allocated. Bytes are read
into one fixed buffer per connection (``readv`` on the socket); the complete frames of a
read are handed to the event builder in place, in one call.
"""

from __future__ import annotations

import collections
import dataclasses
import fcntl
import math
import os
import select
import socket
import struct
import termios
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import trio

from .frames import MAX_BLOCK_LOG2, MIN_BLOCK_LOG2

__all__ = ["FramesHandler", "Link", "ProtocolError", "RestAlarm", "one_by_one", "readable", "receive_frames", "split_messages",
           "DEFAULT_PORT", "FULL_FRAME_BYTES"]

DEFAULT_PORT = 46491
#: A complete full-readout frame (1089 blocks of 256 B).
FULL_FRAME_BYTES = 278_784
_PREFIX = 8
_LENGTH = struct.Struct("<Q")  # the length prefix (little-endian u64)
_WORD = struct.Struct(">I")  # a frame's first word: meta type, frame size in blocks


class ProtocolError(Exception):
    """The byte stream does not follow the DataExporter protocol."""


@dataclasses.dataclass
class Link:
    """One DataExporter connection (one CoBo) and its counters."""

    cobo: int
    host: str
    port: int
    state: str = "idle"  #: connecting | connected | retrying
    bytes: int = 0
    frames: int = 0
    errors: int = 0  #: protocol errors and connections lost mid-frame
    connects: int = 0
    connect_failures: int = 0
    #: Event id of the last frame received (-1: none yet) and when (trio clock, s).
    latest: int = -1
    last_frame_time: float = 0.0
    connected_at: float = 0.0
    #: Times this link paused reading because it was ahead of the other CoBos' consensus,
    #: and the consensus at which it last stopped waiting (it does not wait twice for one value).
    pauses: int = 0
    gave_up_at: tuple[str, int] | None = None
    #: "" (fine), "silent" (connected, no frame for silent_after) or "behind" (trickling), with episodes.
    health: str = ""
    silent_since: float = 0.0
    silent_seconds: float = 0.0
    silent_episodes: int = 0
    behind_since: float | None = None
    behind_episodes: int = 0
    late_at_behind: int = 0
    #: Frames whose header named another CoBo (dropped under cobo_id_mismatch = "drop").
    wrong_cobo: int = 0
    #: The connected socket (None while down), to ask how many received bytes wait unread.
    sock: Any = None

    def unread_bytes(self) -> int:
        """Bytes received by the kernel and not read yet (0 when not connected)."""
        if self.sock is None:
            return 0
        # A socket just closed (its stream's aclose() yields to the other tasks before the link forgets it)
        # has fileno -1: ioctl would raise ValueError, not OSError.
        fd = self.sock.fileno()
        if fd < 0:
            return 0
        try:
            return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]
        except OSError:
            return 0

    @property
    def name(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def fd(self) -> int:
        """The connected socket's descriptor (-1 when not connected or just closed)."""
        return -1 if self.sock is None else self.sock.fileno()

    @property
    def reconnects(self) -> int:
        return max(self.connects - 1, 0)


#: ``on_frames(array, spans, i) -> (j, events, wait)``: handle the frames ``spans[i:j]`` of ``array`` (a flat list of
#: offset, length pairs) in order, from index ``i`` up to the end or up to the first frame after which the stream
#: must pause; return the index after the last frame handled, the events built, and that pause (an awaitable) or None.
FramesHandler = Callable[[np.ndarray, list, int], "tuple[int, list, Awaitable[None] | None]"]


def readable(links: list[Link]) -> set[int]:
    """The descriptors of ``links``' sockets that have something to read (received bytes, or the end of the stream):
    one ``poll(2)`` for all of them. A socket that is not in it has no unread bytes (:meth:`Link.unread_bytes` is 0),
    so a caller looking for links with a backlog asks the kernel once, then once more per link it is in doubt of."""
    poller = select.poll()
    for link in links:
        if (fd := link.fd) >= 0:
            poller.register(fd, select.POLLIN)
    return {fd for fd, events in poller.poll(0) if events & select.POLLIN}


async def receive_frames(
    stream: trio.SocketStream,
    link: Link,
    *,
    max_frame_bytes: int,
    on_frame: Callable[[np.ndarray, int, int], list] | None = None,
    emit: Callable[[Any], Awaitable[None]],
    pace: Callable[[], Awaitable[None] | None] | None = None,
    rest: Callable[[], Awaitable[None]] | None = None,
    on_frames: FramesHandler | None = None,
) -> None:
    """Read length-prefixed frames until EOF and hand every complete frame of a read on, in order.

    Either ``on_frames`` (:data:`FramesHandler`) takes all complete frames of a read in one call (it paces the
    stream itself, frame by frame), or ``on_frame(buffer, offset, length)`` is called for each, followed by
    ``pace()``: a plain call, cheap when the stream may read on (it returns None), else an awaitable that holds
    this stream back while it is ahead of the others (awaited before the next frame is handled). ``await emit(x)``
    follows for every event built, in order, before any pause.

    ``await rest()`` (e.g. a short sleep; it must yield to the other tasks) follows a read that emptied
    the socket, so that frames are read a few at a time rather than one wake-up (and one trip round
    the event loop) per TCP segment; a read that filled the buffer (a backlog) is followed by the next
    after one trip round the event loop.
    The handler must be done with the bytes when it returns (the buffer is reused).
    Raises :class:`ProtocolError` on a bad length or garbage (after handing on the complete frames before it);
    returns on a clean EOF.
    """
    if on_frames is None:
        if on_frame is None:
            raise TypeError("receive_frames needs on_frame or on_frames")
        on_frames = one_by_one(on_frame, pace)
    sock = stream.socket
    fd = sock.fileno()
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    except OSError:  # pragma: no cover - best effort
        pass
    cap = max_frame_bytes + _PREFIX + (256 << 10)
    buf = bytearray(cap)
    view = memoryview(buf)
    array = np.frombuffer(buf, np.uint8)
    start = end = 0
    drained = False
    while True:
        spans, start, error = split_messages(buf, start, end, max_frame_bytes)
        i, n = 0, len(spans)
        while i < n:
            j, events, wait = on_frames(array, spans, i)
            link.frames += (j - i) >> 1
            i = j
            for event in events:
                await emit(event)
            if wait is not None:
                await wait
        if error is not None:
            raise error
        if start == end:
            start = end = 0
        elif cap - end < 65536 or cap - start < max_frame_bytes + _PREFIX:
            # Keep room for a whole message: move the partial one to the front.
            n = end - start
            buf[:n] = view[start:end]
            start, end = 0, n
        if drained and rest is not None:
            await rest()
        room = cap - end
        got = await _receive_into(fd, view[end:])
        drained = got < room
        if not drained or rest is None:
            # A read that filled the buffer (a backlog), or no rest between reads: let the other tasks run first
            # (not a cancellation point: the bytes just read are handed on before this task can be cancelled).
            await trio.lowlevel.cancel_shielded_checkpoint()
        if not got:
            if end > start:
                raise ProtocolError(f"connection closed mid-message ({end - start} B of an incomplete frame "
                                    "discarded)")
            return
        end += got
        link.bytes += got


def split_messages(buf, start: int, end: int, max_frame_bytes: int) -> tuple[list[int], int, ProtocolError | None]:
    """The complete messages in ``buf[start:end]``: (their frames as a flat list of offset, length pairs, where the
    first incomplete message starts, the protocol error that stopped the split or None). Empty messages (length 0)
    are skipped; an incomplete message's prefix is checked as soon as its first 12 bytes are there."""
    spans: list[int] = []
    unpack_length, unpack_word = _LENGTH.unpack_from, _WORD.unpack_from
    try:
        while end - start >= _PREFIX:
            (length,) = unpack_length(buf, start)
            if length == 0:
                start += _PREFIX
                continue
            if length > max_frame_bytes:
                raise ProtocolError(f"length prefix {length} B exceeds max_frame_bytes ({max_frame_bytes} B)")
            if end - start >= _PREFIX + 4:
                word = unpack_word(buf, start + _PREFIX)[0]
                # The length must be the frame's size field times its block size (a plausible one, big-endian
                # meta type): the common case tested in one line, any other is worded by _check_prefix.
                if (word & 0xFFFFFF) << (log2 := word >> 24 & 0x0F) != length or word >> 31 or log2 < MIN_BLOCK_LOG2 \
                        or log2 > MAX_BLOCK_LOG2:
                    _check_prefix(word, length)
            if end - start < _PREFIX + length:
                break
            spans += (start + _PREFIX, length)
            start += _PREFIX + length
    except ProtocolError as err:
        return spans, start, err
    return spans, start, None


def one_by_one(on_frame: Callable[[np.ndarray, int, int], list],
               pace: Callable[[], Awaitable[None] | None] | None = None) -> FramesHandler:
    """A :data:`FramesHandler` calling ``on_frame(buffer, offset, length)`` for each frame, then ``pace()``."""

    def on_frames(array: np.ndarray, spans: list, i: int) -> tuple[int, list, Awaitable[None] | None]:
        events: list = []
        n = len(spans)
        while i < n:
            out = on_frame(array, spans[i], spans[i + 1])
            i += 2
            if out:
                events += out
            if pace is not None and (wait := pace()) is not None:
                return i, events, wait
        return i, events, None

    return on_frames


class RestAlarm:
    """Short rests of many connections, woken together: ``await alarm.rest()`` returns ``pause`` seconds later,
    rounded up to the next multiple of ``pause / GRID`` (a tick), and every rest due at one tick ends in one wake-up.

    A ``trio.sleep`` costs a cancel scope (~10-20 us of CPU here) per rest; the DataExporters send on a common clock,
    so the connections' reads, and their rests, come in bursts: here the rests of one burst park on one
    :class:`trio.lowlevel.ParkingLot` (no scope) and one task sleeps once per tick that has a rest due. Run
    :meth:`run` in a nursery for as long as anybody rests."""

    GRID = 5  #: ticks per pause

    def __init__(self, pause: float):
        self.pause = pause
        self.tick = pause / self.GRID
        self._lots: dict[int, trio.lowlevel.ParkingLot] = {}  # tick number -> the rests ending then
        self._due: collections.deque[int] = collections.deque()  # those tick numbers, in order
        self._idle = trio.lowlevel.ParkingLot()  # run() waits here while nobody rests

    async def rest(self) -> None:
        """Wait ``pause`` s (up to one tick more); a cancellation point."""
        end = trio.current_time() + self.pause
        number = math.ceil(end / self.tick)
        if number * self.tick < end:  # rounding: never shorter than the pause
            number += 1
        lot = self._lots.get(number)
        if lot is None:  # a new tick, never earlier than the last one asked for (the clock and the pause are steady)
            lot = self._lots[number] = trio.lowlevel.ParkingLot()
            self._due.append(number)
            if len(self._due) == 1:
                self._idle.unpark_all()  # run() was waiting for a rest
        await lot.park()

    async def run(self) -> None:
        """Wake the rests tick by tick (forever; cancel it with its nursery)."""
        while True:
            if not self._due:
                await self._idle.park()
                continue
            number = self._due[0]
            await trio.sleep_until(number * self.tick)
            self._due.popleft()
            self._lots.pop(number).unpark_all()


async def _receive_into(fd: int, view: memoryview) -> int:
    """Read what the non-blocking socket ``fd`` has into ``view`` (waiting until it has something); return how many
    bytes (0: end of stream). trio's ``recv_into`` does the same plus a trip round the event loop after every
    successful read; here the caller decides when to yield (a read that emptied the socket is followed by a rest)."""
    await trio.lowlevel.checkpoint_if_cancelled()
    while True:
        try:
            return os.readv(fd, (view,))
        except BlockingIOError:
            await trio.lowlevel.wait_readable(fd)


def _check_prefix(word: int, length: int) -> None:
    """Validate a length against the frame's first 4 bytes (``word``, big-endian: meta type, frame size)."""
    meta = word >> 24
    log2 = meta & 0x0F
    if meta & 0x80 or not MIN_BLOCK_LOG2 <= log2 <= MAX_BLOCK_LOG2:
        raise ProtocolError(f"message does not start with a GRAW frame (meta type byte 0x{meta:02x})")
    block = 1 << log2
    if length % block:
        raise ProtocolError(f"length prefix {length} B is not a multiple of the {block} B block size")
    if (word & 0xFFFFFF) * block != length:
        raise ProtocolError(f"length prefix {length} B disagrees with the frame's size field "
                            f"({(word & 0xFFFFFF) * block} B)")
