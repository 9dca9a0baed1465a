"""Parameters of the ``rerun`` sink."""

from __future__ import annotations

from typing import Literal

from conduit.params import Params, Problem, param

__all__ = ["RerunParams", "DEFAULT_URL"]

DEFAULT_URL = "rerun+http://127.0.0.1:9876/proxy"


class RerunParams(Params):
    """Where the live view goes and how much of it is drawn."""

    mode: Literal["connect", "serve", "save", "stdout", "spawn"] = param(
        "connect",
        "'connect' to a running viewer at url; 'serve' through a Rerun gRPC server on bind:port that viewers join "
        "at any time (started if none listens there, and left running for the next run); 'save' an .rrd file at "
        "path; 'stdout' (for the importer); 'spawn' a local viewer (needs a display)",
    )
    url: str = param(DEFAULT_URL, "viewer address for mode 'connect'")
    path: str = param("out/run_{run:04d}.rrd", "recording file for mode 'save' (template with {run})")
    tee: bool = param(False, "in modes connect/serve, also save everything to path")
    bind: str = param("127.0.0.1", "address the gRPC server (and the web viewer) listen on in mode 'serve' "
                                   "(0.0.0.0 = every interface)")
    port: int = param(9876, "gRPC port for mode 'serve'", ge=1, le=65535)
    keep_server: bool = param(
        True, "mode 'serve': leave the gRPC server this run started running after the run, so that viewers keep "
              "the run without a connection error and see the next run (stop it with: kill PID, printed at start)")
    web_viewer: bool = param(False, "in mode 'serve', also serve the web viewer over HTTP on bind:web_port")
    web_port: int = param(9090, "HTTP port of the web viewer", ge=1, le=65535)
    open_browser: bool = param(False, "open a browser on the web viewer (only with a display)")
    server_memory_limit: str = param("1GiB", "memory the gRPC server keeps for late viewers ('25%', '2GB')")
    application_id: str = param("attpc-conduit", "Rerun application id (viewers group recordings by it)")
    entity_prefix: str = param("", "prefix of every entity path (e.g. '/run7' to show several runs side by side)")
    recording_id: str | None = param(None, "Rerun recording id; default: run-NNNN")
    max_display_rate: float = param(
        5.0, "most events drawn per second when drawing is throttled (histograms still count every analysed event)",
        gt=0,
    )
    draw_every_event: bool | None = param(
        None, "draw every event (no throttling); default: yes when a file source is recorded to .rrd (mode save, "
              "stdout, or tee), so the recording is reproducible; no for live sources and live viewers",
    )
    draw_process: bool = param(
        False, "draw each event's panels (3-D view, pad plane, traces, track table) in a process of its own, so that "
               "the main process only counts events and hands the drawn ones over (modes save, serve, connect and "
               "spawn; mode stdout draws in the main process): ~0.2 ms instead of ~0.8-1.3 ms of the main process "
               "per drawn event, but ~20 % more CPU in all (docs/performance.md)")
    histogram_interval: float = param(1.0, "seconds between refreshes of histograms, occupancy, health and rates",
                                      gt=0)
    refresh_events: int = param(
        50, "when every event is drawn: events between refreshes of histograms, occupancy and health, after "
            "refreshes at events 1, 2, 5, 10 and 20 (the recording's pace then does not depend on the machine's "
            "speed); rates still follow the clock", ge=1)
    traces: Literal["strongest", "cluster"] | list[int] = param(
        "strongest", "which traces are drawn: 'strongest' unsaturated pads, the pads of the largest 'cluster', or "
                     "a list of pad ids like [1024, 1025]",
    )
    trace_count: int = param(8, "most traces drawn per event (0: no trace panel content)", ge=0, le=32)
    helix_points: int = param(200, "points per fitted-track line strip", ge=2)
    pad_plane: bool = param(True, "draw the pad plane with hit pads coloured by amplitude, and its occupancy")
    occupancy_threshold: float = param(
        30.0, "a pad counts as hit in the occupancy when its peak is this far above its baseline (ADC)", ge=0)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = param(
        "INFO", "lowest level of conduit log messages shown in the viewer's log view"
    )
    reconnect_interval: float = param(
        3.0, "mode 'connect': seconds between checks that the viewer is listening (nothing is sent before)",
        gt=0,
    )

    def check(self) -> list[Problem]:
        problems = []
        if self.mode == "connect" and "://" not in self.url:
            problems.append(Problem(("url",), f"expected a URL like {DEFAULT_URL}, got {self.url!r}"))
        if self.entity_prefix and not self.entity_prefix.startswith("/"):
            problems.append(Problem(("entity_prefix",), f"must start with '/', got {self.entity_prefix!r}"))
        try:
            self.path.format(run=1)
        except (KeyError, IndexError, ValueError) as err:
            problems.append(Problem(("path",), f"bad template {self.path!r}: only {{run}} may be used ({err})"))
        return problems
