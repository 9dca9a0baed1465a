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
        "'connect' to a running viewer at url; 'serve' gRPC on bind:port for viewers that join later; "
        "'save' an .rrd file at path; 'stdout' (for the importer); 'spawn' a local viewer (needs a display)",
    )
    url: str = param(DEFAULT_URL, "viewer address for mode 'connect'")
    path: str = param("out/run_{run:04d}.rrd", "recording file for mode 'save' (template with {run})")
    tee: bool = param(False, "in modes connect/serve, also save everything to path")
    bind: str = param("127.0.0.1", "address the gRPC server listens on in mode 'serve' (0.0.0.0 = every interface)")
    port: int = param(9876, "gRPC port for mode 'serve'", ge=1, le=65535)
    web_viewer: bool = param(False, "in mode 'serve', also serve the web viewer over HTTP on web_port")
    web_port: int = param(9090, "HTTP port of the web viewer", ge=1, le=65535)
    open_browser: bool = param(False, "open a browser on the web viewer (only with a display)")
    server_memory_limit: str = param("1GiB", "memory the gRPC server keeps for late viewers ('25%', '2GB')")
    application_id: str = param("attpc-conduit", "Rerun application id (viewers group recordings by it)")
    entity_prefix: str = param("", "prefix of every entity path (e.g. '/run7' to show several runs side by side)")
    recording_id: str | None = param(None, "Rerun recording id; default: run-NNNN")
    max_display_rate: float = param(
        5.0, "most events drawn per second (histograms still count every analysed event)", gt=0
    )
    histogram_interval: float = param(1.0, "seconds between histogram refreshes", gt=0)
    strongest_traces: int = param(8, "traces of the strongest pads drawn per event", ge=0, le=64)
    helix_points: int = param(200, "points per fitted-track line strip", ge=2)
    pad_plane: bool = param(True, "draw the pad plane with hit pads coloured by amplitude")
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
