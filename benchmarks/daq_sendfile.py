"""Is sendfile from a file cheaper than sendmsg for the simulated DAQ? The sender's CPU per event, 4 ways.

    python benchmarks/daq_sendfile.py [--events 1000] [--rate 200] [--reader trunc|copy] [--repeat 2]

A niced sender process serves 2.78 MB per event (40 frames of the default mix's
size, each CoBo's frames for a pool of 50 events contiguous in one file region) to 11
loopback TCP sockets, on a 10 ms grid (one write per CoBo per pass), read in this
process (``trunc``: recv(MSG_TRUNC), the kernel discards the bytes; ``copy``: recv
into a buffer, as the conduit does). The sender's user and system CPU per event
come from /proc/PID/stat from the first byte read to the last:

* ``sendmsg``: one sendmsg per CoBo per pass of (head, 10 patched bytes, tail) per
  frame from memory, as `conduit simulate serve` sends (the kernel copies);
* ``sendfile-per-frame``: what serve would need, since every served event has its
  own header bytes and frame order: sendmsg(head + patch, MSG_MORE), then
  os.sendfile(tail) from a memfd, per frame;
* ``sendfile-range``: the ideal, not possible with patched headers: one os.sendfile
  per CoBo per pass of a contiguous range of a memfd (no per-event bytes);
* ``sendfile-range-ext4``: the same from a file in /tmp's page cache instead of a memfd.

Results go to docs/performance.md by hand, with the machine and the load average.
"""

from __future__ import annotations

import argparse
import mmap
import os
import random
import selectors
import socket
import struct
import subprocess
import sys
import tempfile
import time

FRAMES, EVENT_BYTES, COBOS, POOL, TICK = 40, 2_780_000, 11, 50, 0.01
FRAME = EVENT_BYTES // FRAMES
VARIANTS = ("sendmsg", "sendfile-per-frame", "sendfile-range", "sendfile-range-ext4")


def _pool_file(variant: str) -> tuple[int, memoryview, list[list[list[tuple[int, int]]]]]:
    """The pool in a file: (fd, its bytes mapped, [cobo][event] -> [(offset, length)] of each frame)."""
    if variant.endswith("-ext4"):
        fd, path = tempfile.mkstemp(prefix="daq_sendfile_")
        os.unlink(path)
    else:
        fd = os.memfd_create("daq_pool")
    blob, frames = bytearray(), [[[] for _ in range(POOL)] for _ in range(COBOS)]
    for c in range(COBOS):
        for e in range(POOL):
            for f in range(c, FRAMES, COBOS):
                frames[c][e].append((len(blob), 8 + FRAME))
                blob += struct.pack("<Q", FRAME) + os.urandom(FRAME)
    os.pwrite(fd, blob, 0)
    os.fsync(fd)
    return fd, memoryview(mmap.mmap(fd, len(blob))), frames


def _sendfile_all(sock_fd: int, fd: int, offset: int, count: int) -> None:
    while count:
        n = os.sendfile(sock_fd, fd, offset, count)
        offset, count = offset + n, count - n


def sender(port0: int, variant: str, events: int, rate: float) -> None:
    """Serve ``events`` to the 11 readers of ports port0.. (blocking sockets), paced on the TICK grid."""
    conns = [socket.create_server(("127.0.0.1", port0 + c)).accept()[0] for c in range(COBOS)]
    fd, view, frames = _pool_file(variant)
    region_end = [frames[c][-1][-1][0] + frames[c][-1][-1][1] for c in range(COBOS)]
    patch = b"0123456789"
    print("ready", flush=True)
    per_pass, t0, n = max(1, round(rate * TICK)), time.perf_counter(), 0
    while n < events:
        pool_events = [(n + i) % POOL for i in range(per_pass)]
        for c, conn in enumerate(conns):
            mine = [x for e in pool_events for x in frames[c][e]]
            if variant == "sendmsg":
                parts = []
                for off, size in mine:
                    parts += (view[off:off + 24], patch, view[off + 34:off + size])
                conn.sendmsg(parts)
            elif variant == "sendfile-per-frame":
                for off, size in mine:
                    conn.sendmsg([view[off:off + 24], patch], [], socket.MSG_MORE)
                    _sendfile_all(conn.fileno(), fd, off + 34, size - 34)
            else:
                first, last = mine[0][0], mine[-1][0] + mine[-1][1]
                if last > first:
                    _sendfile_all(conn.fileno(), fd, first, last - first)
                else:  # the pool wrapped: two ranges
                    _sendfile_all(conn.fileno(), fd, first, region_end[c] - first)
                    _sendfile_all(conn.fileno(), fd, frames[c][0][0][0], last - frames[c][0][0][0])
        n += per_pass
        delay = t0 + n / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
    for conn in conns:
        conn.close()


def _cpu_ticks(pid: int) -> tuple[int, int]:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]), int(fields[12])


def measure(variant: str, events: int, rate: float, reader: str) -> str:
    listen = socket.create_server(("127.0.0.1", 0))  # a free block of 11 ports is found by the OS one at a time
    port0 = listen.getsockname()[1] + 1
    listen.close()
    proc = subprocess.Popen([sys.executable, __file__, "--sender", str(port0), variant, str(events), str(rate)],
                            stdout=subprocess.PIPE, text=True, preexec_fn=lambda: os.nice(10))
    socks = []
    for c in range(COBOS):
        while True:
            try:
                socks.append(socket.create_connection(("127.0.0.1", port0 + c)))
                break
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError("sender failed (ports in use?)") from None
                time.sleep(0.05)
    assert proc.stdout.readline().strip() == "ready"
    load = os.getloadavg()[0]
    sel = selectors.DefaultSelector()
    for s in socks:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
    buf, flags = bytearray(1 << 20), socket.MSG_TRUNC if reader == "trunc" else 0
    first, total, open_socks = None, 0, COBOS
    while open_socks:
        for key, _ in sel.select():
            try:
                got = key.fileobj.recv_into(buf, len(buf), flags)
            except BlockingIOError:
                continue
            if first is None and got:
                first, t_first = _cpu_ticks(proc.pid), time.perf_counter()
            if got == 0:
                sel.unregister(key.fileobj)
                key.fileobj.close()
                open_socks -= 1
            total += got
    last, t_last = _cpu_ticks(proc.pid), time.perf_counter()
    proc.wait()
    tick = 1e3 / os.sysconf("SC_CLK_TCK")
    user, system = (last[0] - first[0]) * tick / events, (last[1] - first[1]) * tick / events
    return (f"{variant:20s} reader {reader}: user {user:.2f} + system {system:.2f} = {user + system:.2f} ms/event, "
            f"{events / (t_last - t_first):.0f} events/s, {total / events / 1e6:.2f} MB/event, "
            f"load {load:.1f}-{os.getloadavg()[0]:.1f}")


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--sender":
        sender(int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), float(sys.argv[5]))
        return 0
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=1000)
    p.add_argument("--rate", type=float, default=200.0)
    p.add_argument("--reader", choices=("trunc", "copy"), default="trunc")
    p.add_argument("--repeat", type=int, default=2, help="rounds of all variants, interleaved (A/B in the same minutes)")
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    args = p.parse_args()
    print(f"machine: {os.cpu_count()} CPUs visible, kernel {os.uname().release}, Python {sys.version.split()[0]}")
    for _ in range(args.repeat):
        for variant in args.variants:
            print(measure(variant, args.events, args.rate, args.reader), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
