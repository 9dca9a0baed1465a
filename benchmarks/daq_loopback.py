"""The simulated DAQ and its reader over loopback: CPU per served event of BOTH ends against socket buffer sizes.

    NUMBA_CACHE_DIR=.numba-cache .venv/bin/python benchmarks/daq_loopback.py \
        [--events 3000] [--rate 200] [--read-rate 170] [--send-buffer 0 8M ...] [--receive-buffer 4M ...] \
        [--repeat 1] [--pythonpath DIR ...]

`conduit simulate serve --rate R --pool 50` (niced +10, as in end_to_end.py online) is read by the conduit's own
receive loop (`conduit.get.exporter_client.receive_frames`: 11 connections, readv into one buffer per connection,
5 ms rests after a read that emptied the socket, the length prefixes checked) in this process, with a frame
handler that does nothing. ``--read-rate`` (events/s, below the serve rate) holds the reader back as the busy
conduit is held back online: the reader then reads slowly, the DAQ's sockets fill and its writes are cut into
pieces, which is what makes the DAQ dear online (0 = read as fast as possible).

For every pair (send buffer on the DAQ's sockets, receive buffer on the reader's) it prints, per served event:
the DAQ's user and system CPU (ms, /proc/PID/stat from the first byte read to its exit), the reader's
(getrusage of this process over the same span: the conduit main process's receive cost), their sum, the DAQ's
`sendmsg` and `epoll_ctl` calls per event when ``--count-calls`` (the DAQ reports them itself), and the kernel's
TCP prune/collapse counters (TcpExt, machine-wide) that a too-small receive buffer drives up.

Buffers are given as bytes with an optional K/M suffix; 0 = not set (the kernel's autotuning). The DAQ's
send buffer goes in with the environment variable CONDUIT_SIM_SEND_BUFFER; the reader's receive buffer with
a stand-in for the stream's socket that replaces receive_frames' own SO_RCVBUF (4 MB) with the size asked. ``--pythonpath`` runs the
DAQ and the reader from another checkout (an A/B against an older commit in the same minutes).
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

from simulate import _connect_when_listening, _cpu_ticks, _free_port_block  # noqa: E402  (benchmarks/ is the script's directory)

ROOT = Path(__file__).resolve().parent.parent
PYTHON = ROOT / ".venv" / "bin" / "python"
FRAMES_PER_EVENT = 40
_SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)  # Linux; Python does not name it


def _size(text: str) -> int:
    m = re.fullmatch(r"(\d+)([KkMm]?)", text)
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r}")
    return int(m[1]) << {"": 0, "k": 10, "m": 20}[m[2].lower()]


def _tcp_ext() -> dict[str, int]:
    with open("/proc/net/netstat") as f:
        lines = f.read().splitlines()
    for head, values in zip(lines[::2], lines[1::2]):
        if head.startswith("TcpExt:"):
            return dict(zip(head.split()[1:], map(int, values.split()[1:])))
    return {}


class _Sized:
    """A stream whose socket gets ``size`` as its receive buffer (SO_RCVBUFFORCE; 0: the kernel's autotuning)
    instead of what receive_frames asks for (4 MB), to measure the conduit's side against its buffer."""

    def __init__(self, stream, size: int):
        self.socket = self
        self._sock = stream.socket
        self._size = size

    def fileno(self) -> int:
        return self._sock.fileno()

    def setsockopt(self, level: int, option: int, value) -> None:
        if level == socket.SOL_SOCKET and option == socket.SO_RCVBUF:
            if self._size:
                self._sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, self._size)
            return
        self._sock.setsockopt(level, option, value)


def run_once(args, send_buffer: int, receive_buffer: int, pythonpath: str | None, tmp: Path,
             congestion: str | None = None) -> dict:
    import trio

    base = _free_port_block()
    env = dict(os.environ, NUMBA_CACHE_DIR=str(ROOT / ".numba-cache"), CONDUIT_SIM_SEND_BUFFER=str(send_buffer))
    if congestion is not None:
        env["CONDUIT_SIM_CONGESTION"] = congestion
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    proc = subprocess.Popen(
        [str(PYTHON), "-m", "conduit", "simulate", "serve", "--base-port", str(base), "--events", str(args.events),
         "--pool", "50", "--rate", str(args.rate), "--truth", str(tmp / f"truth_{base}.h5"), "--connect-timeout",
         "120", "--existing", "replace"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, preexec_fn=lambda: os.nice(10))
    from conduit.get.exporter_client import Link, receive_frames

    state = {"frames": 0, "first": None}

    def on_frame(array, offset, length):
        if state["first"] is None:
            state["first"] = (_cpu_ticks(proc.pid), resource.getrusage(resource.RUSAGE_SELF), time.perf_counter(),
                              _tcp_ext())
        state["frames"] += 1
        return ()

    async def emit(_):
        pass

    def pace():
        if args.read_rate <= 0 or state["first"] is None:
            return None
        ahead = state["frames"] / (FRAMES_PER_EVENT * args.read_rate) - (time.perf_counter() - state["first"][2])
        return trio.sleep(ahead) if ahead > 0.002 else None

    async def read(port: int) -> None:
        async with await _connect_when_listening(port, 2400, proc) as stream:
            await receive_frames(_Sized(stream, receive_buffer), Link(0, "127.0.0.1", port), max_frame_bytes=600_000,
                                 on_frame=on_frame, emit=emit, pace=pace, rest=lambda: trio.sleep(0.005))

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            for c in range(11):
                nursery.start_soon(read, base + c)

    load = os.getloadavg()[0]
    trio.run(main)
    reader_end = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter(), _tcp_ext()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    out = proc.stdout.read()
    proc.stdout.close()
    if proc.returncode:
        raise RuntimeError(f"serve failed ({proc.returncode}): {out}")
    (u0, s0), ru0, t0, tcp0 = state["first"]
    ru1, t1, tcp1 = reader_end
    tick = 1e3 / os.sysconf("SC_CLK_TCK")
    n = args.events
    pacing = re.search(r"^pacing: (.*)$", out, re.M)
    return {
        "daq": ((usage.ru_utime * 1e3 - u0 * tick) / n, (usage.ru_stime * 1e3 - s0 * tick) / n),
        "reader": ((ru1.ru_utime - ru0.ru_utime) * 1e3 / n, (ru1.ru_stime - ru0.ru_stime) * 1e3 / n),
        "frames": state["frames"], "rate": n / (t1 - t0), "load": (load, os.getloadavg()[0]),
        "prune": {k: tcp1.get(k, 0) - tcp0.get(k, 0) for k in ("PruneCalled", "TCPRcvCollapsed", "TCPLossProbes",
                                                                "TCPDSACKRecv", "TCPTimeouts")},
        "pacing": pacing[1] if pacing else "",
    }


def main() -> int:
    import tempfile

    from _common import machine

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--rate", type=float, default=200.0, help="serve rate (events/s)")
    parser.add_argument("--read-rate", type=float, default=170.0, help="reader's rate (events/s; 0: no limit)")
    parser.add_argument("--send-buffer", type=_size, nargs="+", default=[0], help="DAQ SO_SNDBUF(FORCE) sizes")
    parser.add_argument("--receive-buffer", type=_size, nargs="+", default=[4 << 20],
                        help="reader SO_RCVBUF(FORCE) sizes")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--pythonpath", nargs="+", default=[""], help="checkouts to compare ('' = this one)")
    parser.add_argument("--congestion", nargs="+", default=[None],
                        help="DAQ sockets' TCP congestion control ('' = the machine's; default: serve's own)")
    args = parser.parse_args()
    print(f"# {machine()}; serve {args.events} events at {args.rate:g}/s, read at {args.read_rate:g}/s")
    print("code | send buf | recv buf | DAQ user+sys | reader user+sys | sys both | events/s | TCP prune, collapse, "
          "loss probes, DSACKs, timeouts | load | pacing")
    with tempfile.TemporaryDirectory(prefix="daq_loopback_") as tmp:
        for _ in range(args.repeat):
            for path, cc, sb, rb in itertools.product(args.pythonpath, args.congestion, args.send_buffer,
                                                      args.receive_buffer):
                r = run_once(args, sb, rb, path or None, Path(tmp), cc)
                d, q = r["daq"], r["reader"]
                code = (path or "this") + ("" if cc is None else f" cc={cc or 'default'}")
                print(f"{code} | {sb >> 10}K | {rb >> 10}K | {d[0]:.2f}+{d[1]:.2f} | {q[0]:.2f}+{q[1]:.2f} | "
                      f"{d[1] + q[1]:.2f} | {r['rate']:.0f} | {','.join(f'{v}' for v in r['prune'].values())} | "
                      f"{r['load'][0]:.1f}-{r['load'][1]:.1f} | {r['pacing']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
