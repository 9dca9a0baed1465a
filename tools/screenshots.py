"""Screenshots of what a person sees in the Rerun viewer: the default layout and each view maximized.

Runs the native viewer headless (``rerun`` from rerun-sdk, on a software
Vulkan driver such as Mesa's lavapipe: Debian package ``mesa-vulkan-drivers``)
at 1920x1080; no display is needed.

    python tools/screenshots.py file RECORDING OUTDIR [--events 0,50] [--views]
    python tools/screenshots.py live PIPELINE OUTDIR [--set key=value ...] [--at 8,16]
    python tools/screenshots.py docs SHOTS_DIR DOCS_DIR NAME=SOURCE.png[:WIDTH] ...

``file`` opens a recording (.rrd, or a merged .h5 through the importer) and
saves ``layout_event<N>.png`` (and ``<view>_event<N>.png`` with ``--views``)
for each event. ``live`` runs ``conduit run PIPELINE --set rerun.mode=serve``
on a free port, connects the viewer to it, saves ``live_<seconds>s.png`` at
the given times into the run and ``live_end.png`` after the run ended, and
fails when the viewer logged an error (e.g. a broken stream at the end).
``docs`` copies chosen screenshots into the docs, scaled down to WIDTH
pixels (default 1100) and reduced to 256 colours, so that they stay small.
``make screenshots`` calls all three (see the Makefile).
"""

from __future__ import annotations

import argparse
import copy
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

from rerun.experimental import ViewerClient  # noqa: E402 (documented above)

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn_viewer() -> ViewerClient:
    """A headless viewer (1920x1080) on a free port; rerun-sdk's binary must be on PATH for the spawn."""
    os.environ["PATH"] = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    os.environ.setdefault("RUST_LOG", "warn")  # the viewer's own log lines, only when they matter
    return ViewerClient.spawn(headless=True, port=free_port(), hide_welcome_screen=True)


def wait_loaded(client: ViewerClient, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = client.get_state()
        if state.views and state.active_recording and not state.loading:
            time.sleep(2.0)  # let the first frames paint
            return
        time.sleep(0.5)
    raise SystemExit("screenshots: the viewer shows no recording")


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")[:60]


def shoot_views(client: ViewerClient, out: Path, tag: str) -> list[Path]:
    """Each view maximized, one PNG each (hidden tabs included)."""
    state = client.get_state()
    original = client.get_blueprint().blueprint
    saved = []
    for view in state.views:
        blueprint = copy.deepcopy(original)
        blueprint["/viewport"]["ViewportBlueprint"]["maximized"] = view.view_id
        client.set_blueprint(blueprint, store_id=state.active_recording)
        time.sleep(1.5)
        path = out / f"{slug(view.name)}_{tag}.png"
        path.write_bytes(client.take_screenshot(view.view_id))
        saved.append(path)
        for report in view.reports or []:
            print(f"  {view.name}: {report.severity}: {report.summary}", file=sys.stderr)
    client.set_blueprint(original, store_id=state.active_recording)
    time.sleep(1.0)
    return saved


def errors(client: ViewerClient) -> list[str]:
    return [e.message.splitlines()[0] for e in client.get_logs() if e.level == "ERROR"]


def cmd_file(args: argparse.Namespace) -> int:
    out = Path(args.outdir)
    out.mkdir(parents=True, exist_ok=True)
    client = spawn_viewer()
    try:
        client.open(str(Path(args.recording).resolve()))
        wait_loaded(client)
        for event in [int(e) for e in args.events.split(",")]:
            client.set_time("event", sequence=event, play_state="paused")
            time.sleep(2.0)
            path = out / f"layout_event{event}.png"
            path.write_bytes(client.take_screenshot())
            print(path)
            if args.views:
                for view_path in shoot_views(client, out, f"event{event}"):
                    print(view_path)
        problems = errors(client)
    finally:
        client.quit()
    for problem in problems:
        print(f"viewer error: {problem}", file=sys.stderr)
    return 1 if problems else 0


def cmd_live(args: argparse.Namespace) -> int:
    out = Path(args.outdir)
    out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    client = spawn_viewer()
    run = None
    try:
        overrides = ["rerun.mode=serve", f"rerun.port={port}", "rerun.keep_server=true", *args.set]
        command = [str(BIN / "conduit"), "run", args.pipeline] + [a for o in overrides for a in ("--set", o)]
        run = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=open(out / "live_run.log", "w"))
        url = f"rerun+http://127.0.0.1:{port}/proxy"
        deadline = time.monotonic() + 120.0
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if run.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"screenshots: the run did not serve {url} (see {out / 'live_run.log'})")
                time.sleep(0.2)
        client.open(url)
        started = time.monotonic()
        for at in [float(a) for a in args.at.split(",")]:
            time.sleep(max(0.0, started + at - time.monotonic()))
            path = out / f"live_{at:g}s.png"
            path.write_bytes(client.take_screenshot())
            print(path)
        code = run.wait(timeout=600)
        time.sleep(3.0)  # what the viewer shows once the run has ended
        (out / "live_end.png").write_bytes(client.take_screenshot())
        print(out / "live_end.png")
        if args.views:
            for view_path in shoot_views(client, out, "live_end"):
                print(view_path)
        problems = errors(client)
    finally:
        if run is not None and run.poll() is None:
            run.terminate()
        client.quit()
        _stop_server(port, out / "live_run.log")
    for problem in problems:
        print(f"viewer error: {problem}", file=sys.stderr)
    if code:
        print(f"the run exited with {code} (see {out / 'live_run.log'})", file=sys.stderr)
    return 1 if problems or code else 0


def _stop_server(port: int, run_log: Path) -> None:
    """Stop the gRPC server the live run left running for its viewers (its pid is in the run's log)."""
    for line in run_log.read_text().splitlines() if run_log.exists() else []:
        match = re.search(r"server started \(pid (\d+)\)", line)
        if match and f":{port}/" in line:
            try:
                os.kill(int(match.group(1)), 15)
            except ProcessLookupError:
                pass


def cmd_docs(args: argparse.Namespace) -> int:
    from PIL import Image

    shots, docs = Path(args.shots), Path(args.docs)
    docs.mkdir(parents=True, exist_ok=True)
    for item in args.items:
        name, _, source = item.partition("=")
        source, _, width = source.partition(":")
        image = Image.open(shots / source).convert("RGB")
        target = int(width or 1100)
        if image.width > target:
            image = image.resize((target, round(image.height * target / image.width)), Image.LANCZOS)
        image.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(docs / name, optimize=True)
        print(docs / name, f"{(docs / name).stat().st_size / 1e3:.0f} kB")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    f = sub.add_parser("file", help="screenshots of a recording")
    f.add_argument("recording")
    f.add_argument("outdir")
    f.add_argument("--events", default="0")
    f.add_argument("--views", action="store_true", help="also each view maximized")
    f.set_defaults(run=cmd_file)
    live = sub.add_parser("live", help="screenshots of a live 'serve' run")
    live.add_argument("pipeline")
    live.add_argument("outdir")
    live.add_argument("--set", action="append", default=[], help="pipeline override, as for conduit run")
    live.add_argument("--at", default="10", help="seconds after the viewer connected, comma-separated")
    live.add_argument("--views", action="store_true", help="also each view maximized, after the run")
    live.set_defaults(run=cmd_live)
    docs = sub.add_parser("docs", help="copy chosen screenshots into the docs, small")
    docs.add_argument("shots")
    docs.add_argument("docs")
    docs.add_argument("items", nargs="+", help="NAME=SOURCE.png[:WIDTH], SOURCE relative to SHOTS")
    docs.set_defaults(run=cmd_docs)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
