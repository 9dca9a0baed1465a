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
* ``await server.wait_clients(n)``: until at least ``n`` clients are connected.
* ``await server.wait_connections(n)``: until ``n`` connections were accepted in total.
* ``await server.drain()``: until every queued message is written to its socket.
* ``await server.disconnect_clients()``: drop every connection, keep listening.
* ``await server.stop()``: stop listening and drop every connection (DataExporter exits).
* ``server.stats()`` -> :class:`ServerStats` (frames and bytes sent in total and per client).
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Callable
from typing import Any

import trio

__all__ = ["DataExporterServer", "ServerStats", "ClientStats", "DEFAULT_PORT", "length_prefix"]

#: The DataExporter's port (hard-wired in DataRouter.cpp).
DEFAULT_PORT = 46491
_PREFIX = struct.Struct("<Q")


def length_prefix(n: int) -> bytes:
    """The 8-byte little-endian length that precedes every message."""
    return _PREFIX.pack(n)


@dataclasses.dataclass
class ClientStats:
    """One client connection: who, and what was written to it."""

    peer: str
    frames: int = 0
    bytes: int = 0  #: bytes written, prefixes included
    connected: bool = True


@dataclasses.dataclass
class ServerStats:
    frames_sent: int  #: frame messages written (summed over clients)
    bytes_sent: int  #: bytes written (summed over clients, prefixes included)
    connections_accepted: int
    clients: list[ClientStats]  #: currently connected clients


class _Client:
    def __init__(self, peer: str, queue: int):
        self.stats = ClientStats(peer)
        self.send, self.recv = trio.open_memory_channel[tuple[bytes, bool]](queue)
        self.queued = 0
        self.written = 0
        self.scope = trio.CancelScope()


class DataExporterServer:
    """A DataExporter look-alike on one TCP port (see the module docstring)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, queue_frames: int = 1024):
        self.host = host
        self.port = port
        self.queue_frames = queue_frames
        self._clients: list[_Client] = []
        self._accepted = 0
        self._frames_sent = 0
        self._bytes_sent = 0
        self._changed = trio.Event()
        self._scope: trio.CancelScope | None = None
        self._stopped: trio.Event | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def n_clients(self) -> int:
        return len(self._clients)

    def stats(self) -> ServerStats:
        return ServerStats(self._frames_sent, self._bytes_sent, self._accepted,
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
        try:
            host, port = stream.socket.getpeername()[:2]
            peer = f"{host}:{port}"
        except OSError:  # already gone
            peer = "?"
        client = _Client(peer, self.queue_frames)
        self._clients.append(client)
        self._accepted += 1
        self._notify()
        try:
            with client.scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._watch_eof, stream, nursery.cancel_scope)
                    async for message, is_frame in client.recv:
                        await stream.send_all(message)
                        client.written += 1
                        client.stats.bytes += len(message)
                        self._bytes_sent += len(message)
                        if is_frame:
                            client.stats.frames += 1
                            self._frames_sent += 1
                        self._notify()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client went away; the real server purges it on the next broadcast
        finally:
            client.stats.connected = False
            self._clients.remove(client)
            client.send.close()
            await trio.aclose_forcefully(stream)
            self._notify()

    @staticmethod
    async def _watch_eof(stream: trio.SocketStream, scope: trio.CancelScope) -> None:
        # The protocol is one-way; reading only tells us when the client closes.
        try:
            while await stream.receive_some(4096):
                pass
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        scope.cancel()

    # -- sending --------------------------------------------------------------------------------

    async def send_frame(self, frame: bytes | bytearray | memoryview) -> int:
        """Queue one frame (length-prefixed) for every connected client; return how many."""
        return await self._broadcast(length_prefix(len(frame)) + bytes(frame), True)

    async def send_raw(self, data: bytes) -> int:
        """Queue raw bytes (no length prefix) for every connected client; return how many."""
        return await self._broadcast(bytes(data), False)

    async def _broadcast(self, message: bytes, is_frame: bool) -> int:
        sent = 0
        for client in list(self._clients):
            try:
                await client.send.send((message, is_frame))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                continue
            client.queued += 1
            sent += 1
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
        await self._wait_for(lambda: all(c.written >= c.queued for c in self._clients))

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def _wait_for(self, condition: Callable[[], bool]) -> None:
        while not condition():
            await self._changed.wait()
