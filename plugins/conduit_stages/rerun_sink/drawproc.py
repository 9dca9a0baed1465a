"""The rerun sink's draw process: a drawn event's panels built and logged off the main process.

Building a drawn event's rows (3-D cloud and helices, pad plane, traces, track
table) and Rerun's work on them (Arrow export, chunking, encoding, sending)
took the main process 0.8-1.4 ms of its own thread and as much again in
Rerun's threads per drawn event. So the sink starts one **draw process** in
``open()`` and joins it in ``close()``; the main process keeps counting every
event (peak heights, occupancy, health), picks the traces to draw (so only
those rows travel) and sends a drawn event's few small arrays (pad ids and
amplitudes, the picked traces, cloud, cluster labels, estimates: ~30 kB,
their bytes after a small pickled header, :func:`encode`) through a socket. The draw process logs them on Rerun streams of
its own with the run's application and recording ids: the viewer (or the
gRPC server, for late viewers) merges them with the main process's run
panels, as Rerun merges any processes logging one recording.

* **Saved recordings** (mode ``save``, or ``tee``): the draw process writes
  its rows to ``<path>.events.rrd`` beside the recording; at close the sink
  appends its messages to the recording (:meth:`.rrdfile.RrdFile.close`) and
  removes it, so one file holds the run. (If the main process is killed,
  both files stay; the viewer opens them together: same recording id.)
* **Back-pressure**: at most :data:`WINDOW` events wait for the draw
  process. A live view then does not draw (counted, and said on the panels);
  a recording that draws every event waits.
* **The draw process dies**: the sink says so in one line naming it and draws
  in the main process from then on; what it logged before stays.
* It runs in a session of its own (a Ctrl-C reaches the main process only)
  and ends when its socket closes (the main process gone), flushing first.
"""

from __future__ import annotations

import dataclasses
import json
import math
import mmap
import os
import pickle
import subprocess
import sys
import tempfile
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from conduit.exits import how_it_ended
from conduit.dtype_names import dtype_name, dtype_named

__all__ = ["DrawProcess", "DrawSpec", "DrawnEvent", "DrawProcessDied", "WINDOW", "child_main", "sidecar_path",
           "encode", "decode", "draw_message", "read_draw"]

#: Messages (drawn events, markers) handed to the draw process and not yet logged by it, at most.
WINDOW = 16
#: Socket buffer (bytes) on both ends (Linux caps it at net.core.wmem_max / rmem_max).
SOCKET_BYTES = 4 << 20
#: The artifacts a drawn event needs (:meth:`.eventview.EventView.draw`).
DRAWN_ARTIFACTS = ("cloud", "clusters", "estimates")


class DrawProcessDied(RuntimeError):
    """The draw process ended without being asked to; the message is one line naming it."""


@dataclasses.dataclass(frozen=True)
class DrawSpec:
    """What the draw process needs to draw (picklable, sent at start)."""

    application_id: str
    recording_id: str
    prefix: str
    params: Any  # RerunParams
    context: Any  # RunContext (its pads are rebuilt in the draw process)
    file: str | None  # the .rrd it writes (the recording's sidecar), if any
    urls: tuple[str, ...]  # gRPC addresses to connect to at start


@dataclasses.dataclass(frozen=True)
class DrawnEvent:
    """What :meth:`.eventview.EventView.draw` reads of an event, without its trace matrix (and, for a marker,
    without artifacts: :meth:`marker`)."""

    id: int
    timestamp: int
    complete: bool
    missing: tuple
    n_traces: int
    artifacts: dict[str, Any]

    @classmethod
    def marker(cls, event: Any) -> DrawnEvent:
        """What a marker (:meth:`.eventview.EventView.not_drawn`) reads of ``event``."""
        return cls(event.id, event.timestamp, event.complete, tuple(event.missing), event.n_traces, {})

    def get(self, artifact: str, default: Any = None) -> Any:
        return self.artifacts.get(artifact, default)


_HEADER_LENGTH = 4  # bytes: the length of a message's pickled header, little-endian
_ALIGN = 64  # bytes: where each array of a message starts (from the start of the message)
_PADDING = bytes(_ALIGN)


def encode(message: tuple, arrays: tuple[np.ndarray | None, ...] = ()) -> bytes:
    """``message`` (plain Python values, pickled) and ``arrays`` (numpy arrays or None), the arrays as their raw
    bytes after the pickled header, which names each one's dtype and shape.

    Pickling an array costs ~15-40 us, a structured one (the estimates) ~100 us on a loaded machine, most of it
    numpy's reduce and the dtype's own pickle: here a dtype is named by its ``str`` or ``descr`` (made once).
    """
    shapes, data = [], []
    for a in arrays:
        if a is None:
            shapes.append(None)
            continue
        a = np.ascontiguousarray(a)
        shapes.append((dtype_name(a.dtype), a.shape))
        data += [a.data.cast("B") if a.size else b"", _PADDING[:-a.nbytes % _ALIGN]]
    header = pickle.dumps((message, shapes), protocol=pickle.HIGHEST_PROTOCOL)
    # every array starts _ALIGN-aligned (the kernels' usual type; numpy and numba are slower on unaligned data)
    return b"".join([len(header).to_bytes(_HEADER_LENGTH, "little"), header,
                     _PADDING[:-(_HEADER_LENGTH + len(header)) % _ALIGN], *data])


def decode(data: bytes | bytearray) -> tuple[tuple, tuple[np.ndarray | None, ...]]:
    """The ``(message, arrays)`` :func:`encode` made; the arrays are views of ``data`` (writable when ``data`` is a
    bytearray: the kernels' usual argument type)."""
    n = int.from_bytes(data[:_HEADER_LENGTH], "little")
    message, shapes = pickle.loads(data[_HEADER_LENGTH:_HEADER_LENGTH + n])
    at = _HEADER_LENGTH + n
    at += -at % _ALIGN
    arrays = []
    for shape in shapes:
        if shape is None:
            arrays.append(None)
            continue
        dtype = dtype_named(shape[0])
        count = math.prod(shape[1])
        arrays.append(np.frombuffer(data, dtype, count=count, offset=at).reshape(shape[1]))
        at += count * dtype.itemsize
        at += -at % _ALIGN
    return message, tuple(arrays)


def draw_message(times: dict, run: int, event: Any, charges: tuple[np.ndarray, np.ndarray],
                 picked: tuple[np.ndarray, list[str]] | None) -> bytes:
    """A drawn event for the draw process: what :meth:`.eventview.EventView.draw` reads (:func:`read_draw`)."""
    cloud, clusters, estimates = (event.artifacts.get(k) for k in DRAWN_ARTIFACTS)
    clustered = clusters is not None
    meta = (event.id, event.timestamp, event.complete, tuple(event.missing), event.n_traces,
            picked[1] if picked is not None else None, clustered)
    arrays = (charges[0], charges[1], picked[0] if picked is not None else None, cloud, estimates,
              clusters.labels if clustered else None, clusters.cluster_labels if clustered else None,
              clusters.directions if clustered else None)
    return encode(("draw", times, run, meta), arrays)


def read_draw(message: tuple, arrays: tuple) -> tuple[DrawnEvent, tuple, tuple | None]:
    """The event, charges and picked traces of a :func:`draw_message`."""
    from conduit.artifacts import Clusters

    event_id, timestamp, complete, missing, n_traces, what, clustered = message[3]
    ids, amplitude, traces, cloud, estimates, labels, cluster_labels, directions = arrays
    artifacts = {"cloud": cloud, "estimates": estimates,
                 "clusters": Clusters(labels, cluster_labels, directions) if clustered else None}
    event = DrawnEvent(event_id, timestamp, complete, missing, n_traces,
                       {k: v for k, v in artifacts.items() if v is not None})
    return event, (ids, amplitude), (traces, what) if traces is not None else None


def sidecar_path(path: os.PathLike | str) -> str:
    """Where the draw process writes a saved recording's per-event rows until the sink appends them."""
    return f"{os.fspath(path)}.events.rrd"


class DrawProcess:
    """The draw process, seen from the sink (one per open sink)."""

    def __init__(self, spec: DrawSpec):
        self.sent = 0  # messages handed over
        # Messages the draw process has handled (a uint64 it counts up in a shared page): read without a syscall.
        page = tempfile.TemporaryFile(dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
        page.truncate(mmap.PAGESIZE)
        self._page = mmap.mmap(page.fileno(), mmap.PAGESIZE)
        # [0]: messages handled; [1]: 1 while the sink waits for room (the draw process then writes a byte to
        # the wake-up pipe after each message, so the sink sleeps in a read instead of polling).
        self._done = np.ndarray((2,), np.uint64, buffer=self._page)
        self._wake, wake = os.pipe()
        os.set_blocking(self._wake, False)
        import socket

        parent, child = socket.socketpair()
        # Room for WINDOW drawn events (~30-40 kB each) in the socket: a send does not block the main process.
        parent.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BYTES)
        child.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BYTES)
        code = ("import sys, json; sys.path[:0] = json.loads(sys.argv[1]); "
                "from conduit_stages.rerun_sink.drawproc import child_main; "
                "child_main(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))")
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", code, json.dumps(sys.path), str(child.fileno()), str(page.fileno()), str(wake)],
                pass_fds=[child.fileno(), page.fileno(), wake], stdin=subprocess.DEVNULL, start_new_session=True)
        except BaseException:
            parent.close()
            self._page.close()
            os.close(self._wake)
            raise
        finally:
            child.close()
            page.close()
            os.close(wake)
        self.conn = Connection(parent.detach())
        self.send(("start", spec))  # handled once its streams are open and its kernels loaded (wait_ready)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def behind(self) -> int:
        """Messages sent and not yet handled."""
        return self.sent - int(self._done[0])

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Block until the draw process has opened its streams and loaded its kernels (started with the run,
        not at its first events); raises DrawProcessDied."""
        import time

        end = time.monotonic() + timeout
        while self.behind:
            self.check_alive()
            if time.monotonic() > end:
                raise DrawProcessDied(f"the rerun draw process (pid {self.pid}) did not start in {timeout:g} s")
            time.sleep(0.002)

    def has_room(self) -> bool:
        return self.behind < WINDOW

    def flush(self) -> None:
        """Block until the draw process has logged everything sent and its streams have sent or written it."""
        self.send(("flush",))
        self.wait_for_room(0)

    def wait_for_room(self, most: int = WINDOW - 1) -> None:
        """Block until at most ``most`` messages wait (default: fewer than :data:`WINDOW`); raises
        DrawProcessDied."""
        import select

        self._done[1] = 1
        try:
            while self.behind > most:
                self.check_alive()
                select.select([self._wake], [], [], 0.05)  # a byte per message handled; the timeout checks it lives
                try:
                    os.read(self._wake, 4096)
                except BlockingIOError:
                    pass
        finally:
            self._done[1] = 0

    def send(self, message: tuple | bytes) -> None:
        """Hand one message (``("not_drawn", ...)``, ``("not_received", ...)``, ``("connect", url)``, or a
        :func:`draw_message`) to the draw process; raises DrawProcessDied."""
        self._send_bytes(message if isinstance(message, bytes) else encode(message))
        self.sent += 1

    def finish(self, timeout: float = 30.0) -> list[str]:
        """Let the draw process log what it holds, flush its streams and exit; join it. Returns what went wrong
        writing its streams (Rerun's error per stream that failed). Raises DrawProcessDied."""
        try:
            self._send(("finish",))
            if not self.conn.poll(timeout):
                raise DrawProcessDied(f"the rerun draw process (pid {self.pid}) did not finish in {timeout:g} s")
            problems = pickle.loads(self.conn.recv_bytes())
        except (EOFError, OSError):
            raise self._died() from None
        finally:
            self.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover - it answered, then hung
            self.proc.kill()
            self.proc.wait()
        return problems

    def kill(self) -> None:
        """End it at once (the sink failed); what it buffered may be lost."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.close()

    def close(self) -> None:
        if not self.conn.closed:
            self.conn.close()
            os.close(self._wake)
        if not self._page.closed:
            self._done = None
            self._page.close()

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise self._died()

    def _died(self) -> DrawProcessDied:
        code = self.proc.wait()
        how = how_it_ended(code)
        return DrawProcessDied(f"the rerun draw process (pid {self.proc.pid}) died ({how})")

    def _send(self, message: tuple) -> None:
        self._send_bytes(encode(message))

    def _send_bytes(self, data: bytes) -> None:
        try:
            self.conn.send_bytes(data)
        except OSError:  # its end of the socket closed: it is exiting
            raise self._died() from None


# -- the draw process ----------------------------------------------------------------------


def child_main(sock_fd: int, page_fd: int, wake_fd: int) -> None:
    """The draw process: draw what arrives until ``finish`` (or the main process is gone), then flush."""
    conn = Connection(sock_fd)
    page = mmap.mmap(page_fd, mmap.PAGESIZE)
    os.close(page_fd)
    done = np.ndarray((2,), np.uint64, buffer=page)
    try:
        (kind, spec), _ = decode(conn.recv_bytes())
    except EOFError:
        return
    assert kind == "start"
    code = 0
    os.set_blocking(wake_fd, False)
    drawer = _Drawer(spec)
    done[0] += 1  # ready
    try:
        while True:
            try:
                message = decode(bytearray(conn.recv_bytes()))  # writable arrays: the kernels' usual type
            except EOFError:  # the main process is gone: keep what was drawn
                break
            if message[0][0] == "finish":
                conn.send_bytes(pickle.dumps(drawer.close()))
                break
            drawer.handle(message)
            done[0] += 1
            if done[1]:  # the sink waits for room
                try:
                    os.write(wake_fd, b"w")
                except BlockingIOError:  # the pipe is full of wake-ups already
                    pass
    except BaseException as err:  # one line on the terminal, not a traceback; the sink sees the exit
        print(f"rerun draw process: {type(err).__name__}: {err}", file=sys.stderr, flush=True)
        code = 1
    finally:
        drawer.close()
        sys.stdout.flush()
        sys.stderr.flush()
        # Not Rerun's exit hook: after a write error it can block forever (see .rrdfile._abandon); every
        # stream was flushed above.
        os._exit(code)


class _Drawer:
    """The draw process's streams and event view."""

    def __init__(self, spec: DrawSpec):
        from .rrdfile import quiet_footer_warning

        quiet_footer_warning()  # before rerun is first imported
        import rerun as rr

        from .eventview import EventView
        from .kernels import warm_up

        self.rr = rr
        self.spec = spec
        self.view = EventView(rr, spec.context, spec.params)
        warm_up()
        self.streams: list[Any] = []
        self.held: dict[int, dict[str, dict[Any, Any]]] = {}
        self.closed = False
        if spec.file is not None:
            stream = self._new_stream()
            stream.save(spec.file, write_footer=False)
            self.streams.append(stream)
        for url in spec.urls:
            self._connect(url)

    def _new_stream(self) -> Any:
        return self.rr.RecordingStream(self.spec.application_id, recording_id=self.spec.recording_id,
                                       make_default=False)

    def _connect(self, url: str) -> None:
        stream = self._new_stream()
        stream.connect_grpc(url)
        self.streams.append(stream)

    def handle(self, decoded: tuple[tuple, tuple]) -> None:
        from .streamrows import log_all, set_times

        message, arrays = decoded
        kind, times = message[0], message[1] if len(message) > 1 else None
        if kind == "connect":
            self._connect(message[1])
            return
        if kind == "flush":
            for stream in self.streams:
                stream.flush(timeout_sec=10.0)
            return
        set_times(self.streams, **times)
        if kind == "draw":
            event, charges, picked = read_draw(message, arrays)
            rows = self.view.draw(event, message[2], charges, picked=picked)
        elif kind == "not_drawn":  # (kind, times, event, run, reason, shown)
            rows = self.view.not_drawn(*message[2:])
        elif kind == "not_received":  # (kind, times, first, last, run, shown)
            rows = self.view.not_received(*message[2:])
        else:
            raise ValueError(f"unknown message {kind!r}")
        log_all(self.streams, self.held, self.spec.prefix, rows)

    def close(self) -> list[str]:
        """Flush every stream; what went wrong (a stream that failed is not disconnected: see the exit)."""
        if self.closed:
            return []
        self.closed = True
        problems = []
        for stream in self.streams:
            try:
                stream.flush(timeout_sec=10.0)
            except Exception as err:  # its file writer died (disk full, file size limit) or a viewer is gone
                problems.append(str(err))
                continue
            stream.disconnect()
        return problems
