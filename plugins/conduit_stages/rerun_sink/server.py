"""Mode ``serve``: a Rerun gRPC server (and optionally the web viewer) in a process of its own.

Why not the SDK's in-process server (``GrpcServerSink``)? It dies with the
conduit process, and rerun 0.41's server never ends its viewers' streams
cleanly, so every connected viewer shows "Data source failed: h2 protocol
error" at the end of each run. A separate ``rerun --serve-grpc`` server stays
up: conduit connects to it as a client and closes its stream cleanly at the
end of the run; viewers keep the whole run without an error and see the next
run on the same address. The server is started only if nothing listens on
``bind:port`` yet, in a session of its own (a Ctrl-C of the run does not reach
it), and left running (``keep_server``) or stopped at the end of the run.

The web viewer (``web_viewer = true``) is ``rerun --serve-web --bind BIND
--web-viewer-port PORT URL``: it listens on ``bind`` only (rerun-sdk's
``serve_web_viewer()`` always listens on every interface, 0.0.0.0).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

__all__ = ["ServerProcess", "rerun_executable", "start_server", "start_web_viewer", "listening", "public_host"]

STARTUP_TIMEOUT = 15.0


def rerun_executable() -> str:
    """The native ``rerun`` binary shipped with rerun-sdk (not the Python wrapper that forks it)."""
    spec = importlib.util.find_spec("rerun_cli")
    if spec is not None and spec.origin:
        binary = Path(spec.origin).parent / "rerun"
        if binary.exists():
            return str(binary)
    found = shutil.which("rerun")
    if found is None:
        raise FileNotFoundError("cannot find the rerun executable (is rerun-sdk installed?)")
    return found


def listening(host: str, port: int, timeout: float = 0.2) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def local_host(bind: str) -> str:
    """Where this machine reaches a server bound to ``bind``."""
    return "127.0.0.1" if bind in ("0.0.0.0", "::", "") else bind


def public_host(bind: str) -> str:
    """How other machines reach a server bound to ``bind`` (the host name for every-interface binds)."""
    return socket.gethostname() if bind in ("0.0.0.0", "::", "") else bind


@dataclasses.dataclass
class ServerProcess:
    """A rerun process this run started (``pid``), or None when one was already listening."""

    what: str
    pid: int | None
    process: subprocess.Popen | None = None

    def stop(self) -> None:
        """Stop the process if this run started it (SIGTERM, then SIGKILL after 5 s)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5.0)


def _start(args: list[str], host: str, port: int, what: str) -> ServerProcess:
    if listening(host, port):
        return ServerProcess(what, None)
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen([rerun_executable(), *args], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=errors, start_new_session=True,
                                   env={**os.environ, "RERUN_ANALYTICS": "0"})
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not listening(host, port):
            if process.poll() is not None or time.monotonic() > deadline:
                if process.poll() is None:
                    process.kill()
                    process.wait()
                errors.seek(0)
                tail = errors.read().decode(errors="replace").strip().splitlines()[-3:]
                raise RuntimeError(f"cannot start the {what} on {host}:{port}: " + (" / ".join(tail) or "no answer"))
            time.sleep(0.05)
    return ServerProcess(what, process.pid, process)


def start_server(bind: str, port: int, memory_limit: str) -> ServerProcess:
    """A Rerun gRPC server on bind:port (started unless one already listens there)."""
    return _start(["--serve-grpc", "--bind", bind, "--port", str(port), "--server-memory-limit", memory_limit],
                  local_host(bind), port, "Rerun gRPC server")


def start_web_viewer(bind: str, web_port: int, url: str) -> ServerProcess:
    """The web viewer over HTTP on bind:web_port, opening ``url`` (started unless one already listens there)."""
    return _start(["--serve-web", "--bind", bind, "--web-viewer-port", str(web_port), url],
                  local_host(bind), web_port, "Rerun web viewer")
