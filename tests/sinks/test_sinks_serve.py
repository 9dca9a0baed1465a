"""Mode ``serve``: a separate Rerun gRPC server on bind:port, a web viewer that honours ``bind``, and a run
that ends without an error in the viewers watching it."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conduit.stage import StageContext
from conduit_stages.rerun_sink.params import RerunParams
from conduit_stages.rerun_sink.server import listening, rerun_executable
from conduit_stages.rerun_sink.sink import RerunSink

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import conduit_sinkkit as kit  # noqa: E402
from rrd_read import read_rrd  # noqa: E402

VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listeners(port: int) -> str:
    """The `ss -ltnp` lines of sockets listening on ``port``."""
    out = subprocess.run(["ss", "-ltnp"], capture_output=True, text=True).stdout
    return "\n".join(line for line in out.splitlines() if f":{port} " in line)


def serve_sink(tmp_path, **params) -> RerunSink:
    ctx = StageContext(run=3, base_dir=tmp_path, live=True)
    sink = RerunSink(RerunParams.from_mapping({"mode": "serve", "max_display_rate": 1000.0, **params}), ctx)
    sink.open()
    sink.begin()
    return sink


@pytest.mark.parametrize("apart", [False, True], ids=["drawn-here", "draw-process"])
def test_serve_starts_a_loopback_server_that_a_late_viewer_reads_and_stops_it_when_told(tmp_path, apart):
    """A viewer that joins after the events gets them all, with the statics logged once when the run opened
    (chamber, annotation classes, pad outline) and the run panels: from both processes when drawn apart."""
    port = free_port()
    # Every event drawn: fed faster than any display rate (with a draw process the sink only hands them over).
    sink = serve_sink(tmp_path, port=port, keep_server=False, draw_every_event=True, draw_process=apart)
    try:
        url = f"rerun+http://127.0.0.1:{port}/proxy"
        assert sink.outputs() == [url]
        server = sink.servers[0]
        lines = listeners(port)
        assert f"127.0.0.1:{port} " in lines and f"0.0.0.0:{port} " not in lines and f"pid={server.pid}," in lines
        for i in range(6):
            sink.consume(kit.make_event(i))
        sink._close_stream(sink.streams[0])  # flush what was logged (close() would stop the server too)
        saved = tmp_path / "late.rrd"
        viewer = subprocess.Popen([rerun_executable(), "--connect", url, "--save", str(saved)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            # The viewer writes the file as the stream arrives: a read may meet a half-written message, and on
            # a loaded machine the viewer can take well over 20 s to start; wait for all six events, up to 120 s.
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                try:
                    if saved.exists() and len(read_rrd(saved).get("/event/cloud", [])) >= 6:
                        break
                except Exception:
                    pass  # half-written: read again
                time.sleep(0.1)
        finally:
            viewer.terminate()
            viewer.wait(timeout=20)
        rows = read_rrd(saved)
        assert [r["event"] for r in rows["/event/cloud"]] == list(range(6))
        for static in ("/detector/chamber", "/event", "/padplane/outline", "/colorbar3d"):
            assert [r["_static"] for r in rows[static]] == [True], static  # once, static
        assert rows["/event/pads/hits"] and rows["/health"]  # per-event rows and run panels
        sink.streams = []
    finally:
        sink.close()
    assert server.process.poll() is not None and not listening("127.0.0.1", port)  # keep_server = false


def test_serve_leaves_its_server_for_the_next_run_which_reuses_it(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="conduit")
    port = free_port()
    first = serve_sink(tmp_path, port=port)
    pid = first.servers[0].pid
    first.consume(kit.make_event(0))
    first.close()
    try:
        assert listening("127.0.0.1", port) and f"kill {pid}" in caplog.text
        second = serve_sink(tmp_path, port=port)
        assert second.servers[0].pid is None  # already listening: connected to, not started
        second.consume(kit.make_event(1))
        second.close()
    finally:
        os.kill(pid, signal.SIGTERM)


def test_web_viewer_listens_on_bind_only(tmp_path):
    port, web_port = free_port(), free_port()
    sink = serve_sink(tmp_path, port=port, web_port=web_port, web_viewer=True, keep_server=False)
    try:
        lines = listeners(web_port)
        assert f"127.0.0.1:{web_port} " in lines and f"0.0.0.0:{web_port} " not in lines and "[::]" not in lines
        page = f"http://127.0.0.1:{web_port}/?url=rerun+http://127.0.0.1:{port}/proxy"
        assert page in sink.outputs()
        with urllib.request.urlopen(f"http://127.0.0.1:{web_port}/", timeout=10) as response:
            assert response.status == 200
    finally:
        sink.close()
    assert not listening("127.0.0.1", web_port)


def _headless_viewer():
    """A headless native viewer, or a skip when this machine has no (software) Vulkan driver.

    Without one the viewer falls back to OpenGL on llvmpipe and panics here; `make test` installs Debian's
    mesa-vulkan-drivers (tools/ensure-test-packages.sh), so on CI a missing driver fails instead of skipping.
    """
    from rerun.experimental import ViewerClient

    if not list(Path("/usr/share/vulkan/icd.d").glob("lvp_icd.*.json")):
        message = "no software Vulkan driver (apt-get install mesa-vulkan-drivers)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)

    os.environ["PATH"] = f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    try:
        return ViewerClient.spawn(headless=True, port=free_port(), hide_welcome_screen=True)
    except Exception as err:  # no graphics adapter: needs mesa-vulkan-drivers (lavapipe)
        pytest.skip(f"no headless Rerun viewer here: {err}")


def _open_when_ready(client, url: str, wait: float = 60.0) -> None:
    """Open `url` in a just-spawned viewer: under load its control channel cancels requests until it is up."""
    deadline = time.monotonic() + wait
    while True:
        try:
            client.open(url)
            return
        except ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_a_viewer_watching_a_live_run_sees_its_end_without_an_error(tmp_path):
    """The in-process gRPC server of rerun-sdk left every viewer with "h2 protocol error" at the end of a run."""
    client = _headless_viewer()
    port = free_port()
    sink = None
    try:
        sink = serve_sink(tmp_path, port=port)
        pid = sink.servers[0].pid
        _open_when_ready(client, f"rerun+http://127.0.0.1:{port}/proxy")
        for i in range(10):
            sink.consume(kit.make_event(i))
            time.sleep(0.05)
        sink.close()
        time.sleep(3.0)
        state = client.get_state()
        assert state.recordings, "the viewer received nothing"
        errors = [e.message for e in client.get_logs() if e.level == "ERROR"]
        assert errors == []
    finally:
        client.quit()
        if sink is not None and sink.servers and sink.servers[0].pid:
            os.kill(sink.servers[0].pid, signal.SIGTERM)
