"""DataExporterServer's send buffer: the size asked is applied to every client socket, and a slow reader of a
socket with a large buffer still gets every byte, in order, with exact frame counts (real loopback TCP)."""

from __future__ import annotations

import hashlib
import os
import socket

import trio

from conduit.get.dataexporter import DataExporterServer, length_prefix, set_send_buffer


def _may_force() -> bool:
    return os.geteuid() == 0


def test_set_send_buffer_gives_at_least_the_size_asked_when_allowed():
    with socket.socket() as sock:
        given = set_send_buffer(sock, 16 << 20)
        with open("/proc/sys/net/core/wmem_max") as f:
            cap = int(f.read())
        # The kernel doubles what it is asked for (its bookkeeping); without SO_SNDBUFFORCE it caps at wmem_max.
        assert given == 2 * (16 << 20) if _may_force() else given == 2 * min(16 << 20, cap)


async def test_a_slow_reader_of_a_large_send_buffer_gets_every_byte_in_order():
    frames = [os.urandom(1 + (i * 7919) % 300_000) for i in range(120)]
    expected = b"".join(length_prefix(len(f)) + f for f in frames)
    server = DataExporterServer(queue_frames=2, send_buffer=16 << 20)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        await server.wait_clients(1)
        got = bytearray()

        async def slow_reader():
            while chunk := await stream.receive_some(1 << 16):
                got.extend(chunk)
                await trio.sleep(0.0005)  # slower than the sender: its socket fills, writes are cut

        nursery.start_soon(slow_reader)
        for i in range(0, len(frames), 3):
            parts = [p for f in frames[i:i + 3] for p in (length_prefix(len(f)), memoryview(f))]
            assert await server.send_buffers(parts, frames=len(frames[i:i + 3])) == 1
        await server.drain()
        stats = server.stats()
        assert stats.frames_sent == 120 and stats.bytes_sent == len(expected)
        assert stats.clients[0].frames == 120 and stats.clients[0].send_buffer >= (16 << 20 if _may_force() else 1)
        await server.stop()
        with trio.fail_after(60):
            while len(got) < len(expected):
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert hashlib.sha256(got).digest() == hashlib.sha256(expected).digest()


def test_congestion_control_is_set_when_the_kernel_has_it_and_left_alone_otherwise():
    from conduit.get.dataexporter import set_congestion_control

    with open("/proc/sys/net/ipv4/tcp_available_congestion_control") as f:
        available = f.read().split()
    with socket.socket() as sock:
        default = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, 16).rstrip(b"\0").decode()
        assert set_congestion_control(sock, "no-such-algorithm") == default
        if "reno" in available:  # reno is built into every Linux kernel
            assert set_congestion_control(sock, "reno") == "reno"


async def test_clients_report_the_congestion_control_and_get_the_same_bytes():
    frames = [os.urandom(50_000 + i) for i in range(20)]
    server = DataExporterServer(congestion="reno")
    got = bytearray()
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        await server.wait_clients(1)

        async def read_to_eof():
            while chunk := await stream.receive_some(1 << 16):
                got.extend(chunk)

        nursery.start_soon(read_to_eof)
        for f in frames:
            await server.send_frame(f)
        with trio.fail_after(60):
            await server.drain()
        assert server.stats().clients[0].congestion == "reno"
        await server.stop()
    assert bytes(got) == b"".join(length_prefix(len(f)) + f for f in frames)
