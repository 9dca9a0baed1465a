"""An in-process, DataExporter-compatible TCP server (trio), for tests and the simulator.

It speaks the protocol of gwm17/DataExporter (get_format.md 4): every message is
a u64 little-endian length followed by that many bytes of one GRAW frame; a
server accepts any number of clients, sends every frame to every client
connected at that moment (no replay to late clients), and never reads from them.

Usage::

    server = DataExporterServer(port=0)            # 0 = an ephemeral port
    async with trio.open_nursery() as nursery:
        port = await nursery.start(server.serve)   # listening; server.port == port
        await server.wait_clients(1)               # a conduit connected
        await server.send_frame(frame_bytes)       # to every connected client
        await server.drain()                       # until every queued frame is written
        await server.stop()                        # close the listener and all clients

API (all coroutines run in the caller's trio loop):

* ``DataExporterServer(host="127.0.0.1", port=0, *, queue_frames=1024)``
* ``await nursery.start(server.serve)`` -> bound port; ``server.port``, ``server.address`` ("host:port").
  After :meth:`stop`, ``serve`` may be started again: it rebinds the same port (a restart).
* ``await server.send_frame(frame)``: queue one frame for every connected client; waits
  only when a client's queue (``queue_frames``) is full.
* ``await server.send_raw(data)``: queue raw bytes, no prefix (tests of protocol errors).
* ``await server.send_buffers(buffers, frames=n)``: queue the concatenation of ``buffers``
  (already length-prefixed frames, ``n`` of them) without joining or copying them; the
  buffers must stay unchanged until written (:meth:`drain`). One ``sendmsg`` per client.
* ``await server.wait_clients(n)``: until at least ``n`` clients are connected.
* ``await server.wait_connections(n)``: until ``n`` connections were accepted in total.
* ``await server.drain()``: until every queued message is written to its socket.
* ``await server.disconnect_clients()``: drop every connection, keep listening.
* ``await server.stop()``: stop listening and drop every connection (DataExporter exits).
* ``server.stats()`` -> :class:`ServerStats` (frames and bytes sent in total and per client).
* ``server.waited``: seconds the sender spent waiting for slow clients (a full queue, :meth:`drain`).

Cost: a message is written to each client's socket at once, in the caller's task,
when that client has nothing queued (the common case: one ``sendmsg`` system call,
no task switch); only what the socket does not take is queued, for a writer task
that waits until the socket is writable. A client whose queue holds ``queue_frames``
messages makes the sender wait: a slow reader holds the sender back, as TCP holds
back a real DataExporter's CoBos.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import socket
import struct
import time
from collections.abc import Callable, Iterable
from typing import Any

import trio

__all__ = ["DataExporterServer", "ServerStats", "ClientStats", "DEFAULT_PORT", "length_prefix", "set_send_buffer",
           "set_congestion_control"]

#: The DataExporter's port (hard-wired in DataRouter.cpp).
DEFAULT_PORT = 46491
_PREFIX = struct.Struct("<Q")
Buffer = bytes | bytearray | memoryview

#: Linux's SO_SNDBUFFORCE (asm-generic/socket.h; Python's socket module does not name it).
_SO_SNDBUFFORCE = getattr(socket, "SO_SNDBUFFORCE", 32)

#: Buffers handed to one sendmsg call (Linux IOV_MAX is 1024).
_IOV_MAX = 1024


def length_prefix(n: int) -> bytes:
    """The 8-byte little-endian length that precedes every message."""
    return _PREFIX.pack(n)


def set_congestion_control(sock: socket.socket, name: str) -> str:
    """Use TCP congestion control ``name`` on ``sock`` when the kernel has it; return the one in use.

    A sender's choice only (it decides how much is in flight). Not available or not allowed: the socket keeps
    the machine's default (net.ipv4.tcp_congestion_control), silently: it changes the cost, never the bytes."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, name.encode())
    except OSError:
        pass
    return congestion_control(sock)


def congestion_control(sock: socket.socket) -> str:
    """The TCP congestion control ``sock`` uses (e.g. "bbr", "reno")."""
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, 16).rstrip(b"\0").decode()


def set_send_buffer(sock: socket.socket, size: int) -> int:
    """Ask for a ``size``-byte send buffer on ``sock``; return what the kernel gave (B, the kernel doubles it).

    SO_SNDBUFFORCE (root or CAP_NET_ADMIN) is not capped by net.core.wmem_max; without the right, SO_SNDBUF
    is (4 MB here). Either one turns the kernel's send-buffer autotuning off for this socket."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_SNDBUFFORCE, size)
    except OSError:  # not allowed: SO_SNDBUF, capped at net.core.wmem_max
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)


@dataclasses.dataclass
class ClientStats:
    """One client connection: who, and what was written to it."""

    peer: str
    frames: int = 0  #: frames whose last byte was written
    bytes: int = 0  #: bytes written, prefixes included
    connected: bool = True
    send_buffer: int = 0  #: the socket's send buffer as the kernel reports it (B; SO_SNDBUF)
    congestion: str = ""  #: the socket's TCP congestion control


@dataclasses.dataclass
class ServerStats:
    frames_sent: int  #: frame messages written (summed over clients)
    bytes_sent: int  #: bytes written (summed over clients, prefixes included)
    connections_accepted: int
    clients: list[ClientStats]  #: currently connected clients


class _Client:
    """One connection: its socket (non-blocking) and the bytes queued for it but not yet written."""

    def __init__(self, sock: socket.socket, peer: str):
        self.sock = sock
        self.stats = ClientStats(peer)
        self.pending: collections.deque[Buffer] = collections.deque()  # unwritten buffers, in order
        self.ends: collections.deque[tuple[int, int]] = collections.deque()  # (queued bytes at its end, frames)
        self.queued = 0  #: bytes queued since connected
        self.written = 0  #: bytes written since connected
        self.gone = False
        self.has_pending = trio.Event()
        self.scope = trio.CancelScope()

    def queue(self, buffers: list[Buffer], size: int, frames: int) -> None:
        self.pending.extend(buffers)
        self.queued += size
        self.ends.append((self.queued, frames))

    def write(self) -> int:
        """Write what the socket takes now (never waits); return the frames completed. OSError: the client is gone."""
        done = 0
        while self.pending:
            if len(self.pending) <= _IOV_MAX:
                iov, size = self.pending, self.queued - self.written
            else:
                iov = list(itertools.islice(self.pending, _IOV_MAX))
                size = sum(map(len, iov))
            try:
                n = self.sock.sendmsg(iov)
            except BlockingIOError:
                break
            done += self._advance(n)
            if n < size:
                break  # the socket buffer is full
        return done

    def _advance(self, n: int) -> int:
        self.written += n
        self.stats.bytes += n
        pending = self.pending
        if self.written == self.queued:  # all of it: the common case
            pending.clear()
        else:
            while n >= len(pending[0]):
                n -= len(pending.popleft())
            if n:
                pending[0] = memoryview(pending[0])[n:]
        frames = 0
        ends = self.ends
        while ends and ends[0][0] <= self.written:
            frames += ends.popleft()[1]
        self.stats.frames += frames
        return frames


class DataExporterServer:
    """A DataExporter look-alike on one TCP port (see the module docstring)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, queue_frames: int = 1024,
                 send_buffer: int | None = None, congestion: str | None = None):
        """``queue_frames``: messages queued per client (not yet written to its socket) before the sender waits;
        ``send_buffer``: each client socket's send buffer (B, see :func:`set_send_buffer`; None: the kernel's
        autotuning); ``congestion``: each client socket's TCP congestion control (e.g. "reno", see
        :func:`set_congestion_control`; None: the machine's default)."""
        self.host = host
        self.port = port
        self.queue_frames = queue_frames
        self.send_buffer = send_buffer
        self.congestion = congestion
        self._clients: list[_Client] = []
        self._accepted = 0
        self._frames_sent = 0
        self._bytes_written_gone = 0  # bytes written to clients that have left
        self._changed = trio.Event()
        self._scope: trio.CancelScope | None = None
        self._stopped: trio.Event | None = None
        self.waited = 0.0  #: seconds senders spent waiting for slow clients (full queues, :meth:`drain`)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def n_clients(self) -> int:
        return len(self._clients)

    def stats(self) -> ServerStats:
        written = self._bytes_written_gone + sum(c.written for c in self._clients)
        return ServerStats(self._frames_sent, written, self._accepted,
                           [dataclasses.replace(c.stats) for c in self._clients])

    # -- serving ------------------------------------------------------------------------------

    async def serve(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Listen and serve clients until :meth:`stop` or cancellation."""
        listeners = await trio.open_tcp_listeners(self.port, host=self.host)
        self.port = listeners[0].socket.getsockname()[1]
        self._stopped = trio.Event()
        try:
            with trio.CancelScope() as self._scope:
                async with trio.open_nursery() as nursery:
                    task_status.started(self.port)
                    await trio.serve_listeners(self._handle, listeners, handler_nursery=nursery)
        finally:
            for listener in listeners:
                await trio.aclose_forcefully(listener)
            self._scope = None
            self._stopped.set()
            self._notify()

    async def stop(self) -> None:
        """Close the listener and every client connection; returns when ``serve`` has ended."""
        if self._scope is not None and self._stopped is not None:
            self._scope.cancel()
            await self._stopped.wait()

    async def disconnect_clients(self) -> None:
        """Drop every connected client (they see EOF); keep listening."""
        clients = list(self._clients)
        for client in clients:
            client.scope.cancel()
        await self._wait_for(lambda: not any(c in self._clients for c in clients))

    async def _handle(self, stream: trio.SocketStream) -> None:
        # The socket is driven directly (sendmsg, wait_writable): trio's stream would cost two scheduler
        # passes per write. detach() hands over the descriptor; TCP_NODELAY set by the stream stays.
        sock = socket.socket(fileno=stream.socket.detach())
        sock.setblocking(False)
        if self.send_buffer:
            set_send_buffer(sock, self.send_buffer)
        if self.congestion:
            set_congestion_control(sock, self.congestion)
        try:
            host, port = sock.getpeername()[:2]
            peer = f"{host}:{port}"
        except OSError:  # already gone
            peer = "?"
        client = _Client(sock, peer)
        client.stats.send_buffer = sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
        client.stats.congestion = congestion_control(sock)
        self._clients.append(client)
        self._accepted += 1
        self._notify()
        try:
            with client.scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._watch_eof, sock, nursery.cancel_scope)
                    await self._write_queued(client)
                    nursery.cancel_scope.cancel()  # a failed write: the client went away
        finally:
            self._drop(client)
            trio.lowlevel.notify_closing(sock)
            sock.close()
            self._notify()

    async def _write_queued(self, client: _Client) -> None:
        """Write what the sender could not write at once, as the socket takes it."""
        while not client.gone:
            if not client.pending:
                client.has_pending = trio.Event()
                await client.has_pending.wait()
                continue
            await trio.lowlevel.wait_writable(client.sock)
            queued = len(client.ends)
            try:
                self._frames_sent += client.write()
            except OSError:
                return  # the client went away; the real server purges it on the next broadcast
            if len(client.ends) < queued:  # a message completed: what senders and drain() wait for
                self._notify()

    @staticmethod
    async def _watch_eof(sock: socket.socket, scope: trio.CancelScope) -> None:
        # The protocol is one-way; reading only tells us when the client closes.
        while True:
            await trio.lowlevel.wait_readable(sock)
            try:
                if not sock.recv(4096):
                    break
            except BlockingIOError:
                continue
            except OSError:
                break
        scope.cancel()

    def _drop(self, client: _Client) -> None:
        if client in self._clients:
            self._clients.remove(client)
            self._bytes_written_gone += client.written
        client.gone = True
        client.stats.connected = False
        client.has_pending.set()

    # -- sending --------------------------------------------------------------------------------

    async def send_frame(self, frame: bytes | bytearray | memoryview) -> int:
        """Queue one frame (length-prefixed) for every connected client; return how many."""
        return await self.send_buffers((length_prefix(len(frame)), bytes(frame)), frames=1)

    async def send_raw(self, data: bytes) -> int:
        """Queue raw bytes (no length prefix) for every connected client; return how many."""
        return await self.send_buffers((bytes(data),))

    async def send_buffers(self, buffers: Iterable[Buffer], *, frames: int = 0) -> int:
        """Queue the concatenation of ``buffers`` (holding ``frames`` whole frames) for every connected client.

        The buffers (bytes, or bytearrays and memoryviews of bytes) are referenced, not copied: they
        must not change until written (:meth:`drain`). Returns the number of clients it was queued
        for; waits only while a client's queue is full.
        """
        views = buffers if isinstance(buffers, list) else list(buffers)
        size = sum(map(len, views))
        sent = 0
        for client in list(self._clients):
            if len(client.ends) >= self.queue_frames:
                await self._wait_for(lambda: client.gone or len(client.ends) < self.queue_frames, timed=True)
            if client.gone:
                continue
            idle = not client.pending
            client.queue(views, size, frames)
            if idle:  # the common case: the socket takes it all now, in this task
                try:
                    self._frames_sent += client.write()
                except OSError:
                    self._drop(client)
                    client.scope.cancel()
                    continue
                if client.pending:
                    client.has_pending.set()
            sent += 1
        # A cancellation point but no schedule point when nobody waited: the caller paces itself.
        await trio.lowlevel.checkpoint_if_cancelled()
        return sent

    # -- waiting ----------------------------------------------------------------------------------

    async def wait_clients(self, n: int = 1) -> None:
        """Return when at least ``n`` clients are connected."""
        await self._wait_for(lambda: len(self._clients) >= n)

    async def wait_connections(self, n: int) -> None:
        """Return when ``n`` connections have been accepted since the server was created."""
        await self._wait_for(lambda: self._accepted >= n)

    async def drain(self) -> None:
        """Return when every message queued so far has been written (or its client has gone)."""
        await self._wait_for(lambda: all(c.gone or c.written >= c.queued for c in self._clients), timed=True)

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def _wait_for(self, condition: Callable[[], bool], *, timed: bool = False) -> None:
        """Until ``condition()``; ``timed``: the time it took goes to :attr:`waited` (a sender held back)."""
        if condition():
            return
        t0 = time.perf_counter()
        while not condition():
            await self._changed.wait()
        if timed:
            self.waited += time.perf_counter() - t0
