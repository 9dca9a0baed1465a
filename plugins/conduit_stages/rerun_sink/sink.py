"""The ``rerun`` sink: the physicist's live view of the run.

Every Rerun call happens inside this sink's own methods (the engine never
overlaps them), and each method sets the timelines it needs immediately
before logging, because Rerun's ``set_time`` is per thread and the engine may
call a sink from different worker threads.

Timelines: ``event`` (GET event id; the one the layout steps), ``daq_time``
(GET timestamp / 100 MHz, seconds), ``run_time`` (seconds since the sink
opened). What is drawn:

* per event (:mod:`.eventview`): 3-D cloud and helices, pad plane, traces,
  the track table. Live, drawing is throttled to ``max_display_rate``; an
  event not drawn still leaves a header saying so and empties the per-event
  panels, so no panel shows an older event as the current one. Recording a
  file source to .rrd draws every event (``draw_every_event``).
* per run, refreshed every ``histogram_interval``: histograms
  (:mod:`.histview`), pad occupancy (:mod:`.occupancy`), CoBo/AsAd health
  (:mod:`.health`), rates against wall-clock time (:mod:`.rates`); logged on
  the ``event`` timeline at the newest event, so stepping back shows them as
  they were then.
* the log: conduit's messages (rate-limited, :mod:`.logbridge`) and the
  end-of-run summary.
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from conduit.stage import SinkStage

from . import arrow
from .blueprint import ENTITY, default_blueprint
from .colors import ColorScale
from .draw import log_figure
from .drawproc import DrawnEvent, DrawProcess, DrawProcessDied, DrawSpec, draw_message, sidecar_path
from .eventview import EVENT_ROOT, GET_CLOCK_HZ, EventView, class_ids
from .health import AsadHealth
from .histview import histogram_figure
from .kinematic_curves import curves_for
from .logbridge import QueueHandler
from .occupancy import DEAD_COLOR, UNSEEN_COLOR, Occupancy
from .params import RerunParams
from .plot2d import Figure, Texts, add_colorbar
from .rates import RateHistory
from .rrdfile import RrdFile, quiet_footer_warning
from .server import ServerProcess, listening, local_host, public_host, start_server, start_web_viewer
from .streamrows import log_all, log_row, set_times

__all__ = ["RerunSink", "viewer_listening", "has_display", "class_ids"]

#: Python logging level names -> Rerun TextLog levels.
_TEXT_LOG_LEVELS = {"DEBUG": "DEBUG", "INFO": "INFO", "WARNING": "WARN", "ERROR": "ERROR", "CRITICAL": "CRITICAL"}


def has_display() -> bool:
    """True when a graphical session is available (a viewer can be spawned / a browser opened)."""
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def viewer_listening(url: str, timeout: float = 0.2) -> bool:
    """True when something accepts TCP connections at the URL's host and port."""
    parts = urlsplit(url)
    return listening(parts.hostname or "127.0.0.1", parts.port or 9876, timeout)


class RerunSink(SinkStage):
    """Live Rerun view: 3-D event, pad plane, traces, track table, histograms, occupancy, health, rates and log."""

    name = "rerun"
    Params = RerunParams

    # -- life cycle --------------------------------------------------------------------

    def open(self) -> None:
        quiet_footer_warning()  # before rerun is first imported
        import rerun as rr

        p = self.params
        self.rr = rr
        self.started = time.monotonic()
        self.run = self.context.run if self.context.run is not None else 0
        self.recording_id = p.recording_id or f"run-{self.run:04d}"
        self.streams: list[Any] = []
        self.statics: list[tuple[str, Any]] = []
        self._outputs: list[str] = []
        self.servers: list[ServerProcess] = []
        self.displayed = 0
        self.consumed = 0
        self.last_display = -math.inf
        self.last_event_id: int | None = None
        self.shown: int | None = None  # the event the per-event panels show (the last one drawn)
        self.marked = False  # a "not drawn" marker holds from an earlier event on
        self.last_refresh = -math.inf
        self.hist_version: int | None = None
        #: What each run-panel entity shows (see :func:`.draw.log_figure`): unchanged parts are not sent again.
        self.sent: dict[str, tuple] = {}
        #: Per stream (by id) and entity: the component arrays its viewer holds (constants are sent once).
        self.held: dict[int, dict[str, dict[Any, Any]]] = {}
        self.occupancy_version: int | None = None
        self.blueprint_sent_for: tuple | None = None
        #: (shared Histograms, (name, dimensions) per histogram, titles) the blueprint is made from.
        self.layout: tuple | None = None
        self.grpc_connected = p.mode not in ("connect", "serve")
        self.last_probe = -math.inf
        self.prefix = p.entity_prefix.rstrip("/")
        self.url = p.url
        self.snapshot = None
        self.every_event = p.draw_every_event if p.draw_every_event is not None else (
            not self.context.live and (p.mode in ("save", "stdout") or p.tee))
        self.view = EventView(rr, self.context, p)
        from .kernels import event_columns, warm_up  # numba: loaded when a run starts, not when stages are listed

        self._columns = event_columns
        warm_up()  # no compile (or cache load) while events flow
        pads = self.view.pads
        self.occupancy = Occupancy(pads.n_pads, p.occupancy_threshold) if pads is not None else None
        self.health = AsadHealth(self._expected_asads())
        self.rates = RateHistory()

        if p.mode == "spawn" and not has_display():
            raise ValueError("mode 'spawn' needs a display (DISPLAY/WAYLAND_DISPLAY unset); use mode 'serve' and "
                             "connect a viewer to it, or mode 'save'")
        self.file: RrdFile | None = None
        #: The draw process (:mod:`.drawproc`), when a drawn event's panels are drawn off the main process.
        self.drawer: DrawProcess | None = None
        self.behind = 0  # events not drawn because the draw process was behind
        self.stalled = False  # no event drawn since the draw process was found behind
        drawing_apart = p.draw_process and p.mode != "stdout"  # one stdout stream: the main process draws
        if p.mode == "save" or (p.tee and p.mode in ("connect", "serve")):
            # Claimed now, written from begin() on (the stream buffers until then).
            path = self.context.format_path(p.path)
            stream = self._new_stream()
            self.file = RrdFile(path, self.context.claim_output(path), stream,
                                sidecar=Path(sidecar_path(path)) if drawing_apart else None)
            self.streams.append(stream)
        if p.mode == "stdout":
            stream = self._new_stream()
            stream.stdout(write_footer=False)  # no per-chunk index kept in memory (see .rrdfile)
            self.streams.append(stream)
            self._outputs.append("stdout")
        elif p.mode == "serve":
            self._open_server()
        elif p.mode == "spawn":
            stream = self._new_stream()
            stream.spawn(port=p.port, connect=True)
            self.streams.append(stream)
            self._outputs.append(f"viewer on port {p.port}")
        elif p.mode == "connect":
            self._outputs.append(p.url)
            self._try_connect()
            if not self.grpc_connected:
                self.log.warning("no Rerun viewer listening at %s yet; will connect when one starts (start one "
                                 "with: rerun)", p.url)

        if drawing_apart:
            self._start_drawer()
        self.handler = QueueHandler(p.log_level)
        logging.getLogger("conduit").addHandler(self.handler)
        self._log_statics()
        self.curves = curves_for(self.context)

    def begin(self) -> None:
        if self.file is not None:
            self.file.start()
        self._maybe_send_blueprint()  # the layout is known once the stages have opened: not at the first event

    def consume(self, event) -> None:
        """Count the event (occupancy, health) and draw it when due; an event not drawn logs nothing unless
        it starts a stretch of events not drawn (its marker) or the run panels are due."""
        self.consumed += 1
        previous, self.last_event_id = self.last_event_id, event.id
        now = time.monotonic()
        if not self.grpc_connected:
            self._maybe_connect(now)
        # One cheap peak height per trace: counted for the occupancy, coloured on the pad plane when drawn.
        # (with each row's pad and (CoBo, AsAd) key, read in the same pass: no strided pass per count)
        heights, maxima, pads, keys = self._columns(event.traces)
        if self.occupancy is not None:
            self.occupancy.add(pads, heights)
        self.health.add(event, keys)
        if self.streams:
            # Latest-at: a marker holds for every later event until the next one is drawn, so it is logged
            # once per stretch of events not drawn (cheap on a fast live run), never per event. Timelines
            # are set only when something is logged.
            if previous is not None and event.id > previous + 1 and not self.marked:
                self._per_event(("not_received", {"event": previous + 1, "run_time": now - self.started},
                                 previous + 1, event.id - 1, self.run, self.shown))
                self.marked = True
            due = self._due(event, now)
            if due and not self._drawer_has_room():
                due, self.behind = False, self.behind + 1
                if not self.stalled:  # a marker saying why, once per stretch
                    self.stalled, self.marked = True, False
            if due:
                self.displayed += 1
                self.shown = event.id
                self.marked = self.stalled = False
                self._maybe_send_blueprint()
                self._draw(event, now, (pads, heights), maxima)
            elif not self.marked:
                self._per_event(("not_drawn", self._event_times(event, now), DrawnEvent.marker(event), self.run,
                                 self._why_not_drawn(), self.shown))
                self.marked = True
        if self._refresh_due(now):
            self._refresh(now)
        elif self.handler.pending():
            self._drain_log(now)

    def _event_times(self, event, now: float) -> dict[str, float]:
        return {"event": event.id, "daq_seconds": event.timestamp / GET_CLOCK_HZ, "run_time": now - self.started}

    # -- the per-event panels: in the draw process, else here --------------------------------

    def _start_drawer(self) -> None:
        """Start the draw process (:mod:`.drawproc`) with the gRPC addresses the sink is connected to."""
        p = self.params
        urls = []
        if self.grpc_connected and p.mode in ("connect", "serve"):
            urls.append(self.url)
        elif p.mode == "spawn":
            urls.append(f"rerun+http://127.0.0.1:{p.port}/proxy")
        spec = DrawSpec(p.application_id, self.recording_id, self.prefix, p, self.context,
                        str(self.file.sidecar) if self.file is not None else None, tuple(urls))
        self.drawer = DrawProcess(spec)
        try:
            self.drawer.wait_ready()
        except DrawProcessDied:
            self.drawer.kill()
            self.drawer = None
            raise
        self.log.debug("rerun draw process started (pid %d)", self.drawer.pid)

    def _drawer_has_room(self) -> bool:
        """False when a live view's draw process is behind (the event is then not drawn); a view drawing
        every event waits for it."""
        drawer = self.drawer
        if drawer is None or drawer.has_room():
            return True
        try:
            if self.every_event:
                drawer.wait_for_room()
                return True
            drawer.check_alive()
        except DrawProcessDied as err:
            self._drawer_died(err)
            return True
        return False

    def _draw(self, event, now: float, charges: tuple[np.ndarray, np.ndarray], maxima: np.ndarray) -> None:
        """Draw ``event``: hand it to the draw process (with the traces to draw already picked: only those rows
        travel), or draw it here."""
        if self.drawer is None:
            self._set_times(**self._event_times(event, now))
            self._log_all(self.view.draw(event, self.run, charges, maxima))
            return
        picked = None
        if self.params.traces and event.n_traces:
            cloud, clusters = event.get("cloud"), event.get("clusters")
            labels = clusters.labels if cloud is not None and clusters is not None and len(clusters.labels) == len(
                cloud) else None
            picked = self.view.pick_traces(event.traces, charges[1], cloud, labels, maxima)
        try:
            self.drawer.send(draw_message(self._event_times(event, now), self.run, event, charges, picked))
        except DrawProcessDied as err:
            self._drawer_died(err)
            self._set_times(**self._event_times(event, now))
            self._log_all(self.view.draw(event, self.run, charges, picked=picked))

    def _per_event(self, message: tuple) -> None:
        """Send a marker (an event not drawn, or not received) to the draw process, or log it here (also when
        the draw process died)."""
        if self.drawer is not None:
            try:
                self.drawer.send(message)
                return
            except DrawProcessDied as err:
                self._drawer_died(err)
        kind, times = message[0], message[1]
        self._set_times(**times)
        if kind == "not_drawn":
            self._log_all(self.view.not_drawn(*message[2:]))
        else:
            self._log_all(self.view.not_received(*message[2:]))

    def _drawer_died(self, err: Exception) -> None:
        """Say so once and draw here from now on (the per-event panels start afresh: clear what it drew)."""
        self.log.warning("%s; the live view draws its events in the main process from now on (what it had drawn "
                         "and not yet written out is missing)", err)
        drawer, self.drawer = self.drawer, None
        drawer.close()
        self.view.drawn_elsewhere()

    def on_metrics(self, metrics) -> None:
        now = time.monotonic()
        self._maybe_connect(now)
        self._maybe_send_blueprint()
        self.snapshot = metrics
        self.rates.add(metrics)
        if metrics.final:
            self._refresh(now)
        elif self.every_event:
            self._refresh_rates(now)  # run panels follow the event count; rates are wall-clock anyway
        elif now - self.last_refresh >= self.params.histogram_interval:
            self._refresh(now)
        if metrics.final:
            self.log.info("%s", self._summary_line(metrics))
        self._drain_log(now)

    def close(self) -> None:
        if not hasattr(self, "handler"):  # open() failed part way
            if getattr(self, "drawer", None) is not None:
                self.drawer.kill()
            if getattr(self, "file", None) is not None:
                self.file.close()
            return
        logging.getLogger("conduit").removeHandler(self.handler)
        now = time.monotonic()
        try:
            self._maybe_send_blueprint()
            self._refresh(now, force=True)
            self._drain_log(now, final=True)
        finally:
            drawn = self._finish_drawer()
            for stream in self.streams:
                if self.file is None or stream is not self.file.stream:
                    self._close_stream(stream)
            self.streams = []
            problem = self.file.close(drawn) if self.file is not None else None
            for server in self.servers:
                if not self.params.keep_server:
                    server.stop()
                elif server.pid is not None:
                    self.log.info("the %s (pid %d) keeps running for viewers and the next run; stop it with: "
                                  "kill %d", server.what, server.pid, server.pid)
        behind = f" ({self.behind} not drawn: the draw process was behind)" if self.behind else ""
        self.log.info("rerun: %d events drawn of %d received%s", self.displayed, self.consumed, behind)
        if problem:
            raise OSError(problem)

    def _finish_drawer(self) -> str | None:
        """Let the draw process log and flush what it holds, and join it (before the file takes its rows).
        Returns what went wrong writing the draw process's streams (its part of the recording is then
        incomplete), or None."""
        drawer, self.drawer = getattr(self, "drawer", None), None
        if drawer is None:
            return None
        try:
            problems = drawer.finish()
        except DrawProcessDied as err:
            self.log.warning("%s; the events it had not logged are missing from the view", err)
            return str(err) if self.file is not None else None
        for problem in problems:
            self.log.warning("rerun draw process: could not deliver everything: %s", problem)
        return "; ".join(problems) or None

    def live_outputs(self) -> list[str]:
        """The .rrd being written (once begun) and what is served, for the control panel."""
        written = getattr(self, "file", None)
        files = [str(written.path)] if written is not None and written.started else []
        return files + list(getattr(self, "_outputs", []))

    def outputs(self) -> list[str]:
        written = getattr(self, "file", None)
        files = [str(written.path)] if written is not None and written.complete else []
        return files + list(getattr(self, "_outputs", []))

    # -- what is drawn when ----------------------------------------------------------------

    def _due(self, event, now: float) -> bool:
        """Draw this event? Every event when drawing is not throttled; else at most max_display_rate per second,
        preferring analysed events (a raw one only when no analysed event came for two periods)."""
        if self.every_event:
            return True
        period = 1.0 / self.params.max_display_rate
        if now - self.last_display >= period and (event.analysed or now - self.last_display >= 2 * period):
            self.last_display = now
            return True
        return False

    def _refresh_due(self, now: float) -> bool:
        """Refresh the run panels? Every ``refresh_events`` events when every event is drawn (a recording
        then does not depend on the machine's speed), else every ``histogram_interval`` seconds."""
        if self.every_event:  # early refreshes for short replays, then a steady pace
            return self.consumed in (1, 2, 5, 10, 20) or self.consumed % self.params.refresh_events == 0
        return now - self.last_refresh >= self.params.histogram_interval

    def _why_not_drawn(self) -> str:
        if self.drawer is not None and not self.drawer.has_room():
            return f"the draw process is behind ({self.behind} events not drawn for that so far)"
        return f"drawing is limited to {self.params.max_display_rate:g} events/s on a live view"

    def _expected_asads(self) -> tuple[tuple[int, int], ...]:
        try:
            return self.context.electronics_map.asads
        except Exception:  # no map: only the AsAds seen in the data are listed
            return ()

    # -- server (mode serve) ----------------------------------------------------------------

    def _open_server(self) -> None:
        """Connect to a Rerun gRPC server on bind:port, starting one (see :mod:`.server`) if none listens."""
        p = self.params
        server = start_server(p.bind, p.port, p.server_memory_limit)
        self.servers.append(server)
        self.url = f"rerun+http://{local_host(p.bind)}:{p.port}/proxy"
        shown = f"rerun+http://{public_host(p.bind)}:{p.port}/proxy"
        self._try_connect()
        if not self.grpc_connected:
            raise RuntimeError(f"the Rerun gRPC server at {self.url} does not answer")
        self._outputs.append(shown)
        started = f"started (pid {server.pid})" if server.pid is not None else "already running"
        self.log.info("serving the live view at %s, server %s (open it with: rerun %s)", shown, started, shown)
        if p.web_viewer:
            web = start_web_viewer(p.bind, p.web_port, shown)
            self.servers.append(web)
            page = f"http://{public_host(p.bind)}:{p.web_port}/?url={shown}"
            self._outputs.append(page)
            self.log.info("web viewer at %s", page)
            if p.open_browser and has_display():
                import webbrowser

                webbrowser.open(page)

    # -- streams -------------------------------------------------------------------------

    def _new_stream(self):
        return self.rr.RecordingStream(self.params.application_id, recording_id=self.recording_id,
                                       make_default=False)

    def _try_connect(self) -> None:
        """Connect mode: create the gRPC stream only once a viewer listens, so an absent viewer costs nothing.

        (Rerun waits about 5 s at shutdown for a viewer it never reached, and
        buffers everything meanwhile.)
        """
        self.last_probe = time.monotonic()
        if not viewer_listening(self.url):
            return
        stream = self._new_stream()
        stream.connect_grpc(self.url)
        self.streams.append(stream)
        self.grpc_connected = True
        self.blueprint_sent_for = None
        self.hist_version = None  # send the run panels' full state again
        self.sent = {}
        self.occupancy_version = None
        for path, archetypes in self.statics:
            stream.log(path, *archetypes, static=True)
        if self.drawer is not None:
            try:
                self.drawer.send(("connect", self.url))
            except DrawProcessDied as err:
                self._drawer_died(err)
        self.log.info("connected to the Rerun viewer at %s", self.url)

    def _maybe_connect(self, now: float) -> None:
        if not self.grpc_connected and now - self.last_probe >= self.params.reconnect_interval:
            self._try_connect()

    def _close_stream(self, stream) -> None:
        try:
            stream.flush(timeout_sec=2.0)
        except Exception as err:  # an unreachable viewer: rerun drops what it could not send
            self.log.warning("rerun: could not deliver everything: %s", err)
        stream.disconnect()

    def _set_times(self, *, event: int | None = None, daq_seconds: float | None = None,
                   run_time: float | None = None) -> None:
        """Set this thread's timelines on every stream (reset first: set_time is per thread).

        Straight through Rerun's binding, as ``RecordingStream.set_time`` does after its checks (durations
        in seconds rounded to nanoseconds as it rounds them).
        """
        if event is None and self.last_event_id is not None:
            event = self.last_event_id
        set_times(self.streams, event=event, daq_seconds=daq_seconds, run_time=run_time)

    def _log(self, path: str, *archetypes: Any) -> None:
        """Log archetypes (or lists of component batches) as one row of ``path`` on every stream."""
        self._log_row(path, list(archetypes))

    def _log_row(self, path: str, row: Any) -> None:
        """Log a row (:func:`.arrow.row`, or a list of archetypes / component batches) on every stream."""
        log_row(self.streams, self.held, self.prefix, path, row)

    def _log_all(self, items: list[tuple[str, Any]]) -> None:
        """Log (path, archetype), (path, [archetypes]) and (path, row) items, one row each (:func:`.streamrows.log_all`)."""
        log_all(self.streams, self.held, self.prefix, items)

    def _static(self, path: str, archetypes: Any) -> None:
        path = (self.prefix + path if path != "/" else self.prefix or "/") if self.prefix else path
        archetypes = archetypes if isinstance(archetypes, list) else [archetypes]
        self.statics.append((path, archetypes))
        for stream in self.streams:
            stream.log(path, *archetypes, static=True)

    # -- static content -----------------------------------------------------------------------

    def _log_statics(self) -> None:
        for path, archetype in self.view.statics():
            self._static(path, archetype)
        if self.occupancy is not None:
            pads = self.view.pads
            self._static(f"{ENTITY['occupancy']}/pads", self.rr.Points2D(
                self.view.pad_xy(np.arange(pads.n_pads)), radii=2.4 * pads.scale, draw_order=3.0))

    def _maybe_send_blueprint(self) -> None:
        """(Re)send the layout when the histogram list is first known (the histogram sink may open later)."""
        from conduit_physics.histograms import Histograms

        histograms = self.context.shared.get(Histograms)
        if self.layout is None or self.layout[0] is not histograms:  # the list never changes once published
            views = histograms.snapshot() if histograms is not None else []
            self.layout = (histograms, tuple((v.name, v.dimensions) for v in views), {v.name: v.title for v in views})
        _, key, titles = self.layout
        if key == self.blueprint_sent_for or not self.streams:
            return
        blueprint = default_blueprint(list(key), prefix=self.prefix, titles=titles,
                                      pad_plane=self.occupancy is not None)
        for stream in self.streams:
            stream.send_blueprint(blueprint)
        self.blueprint_sent_for = key

    # -- run panels ------------------------------------------------------------------------------

    def _refresh(self, now: float, force: bool = False) -> None:
        """Histograms, occupancy, health and rates, as of the newest event."""
        self.last_refresh = now
        if not self.streams:
            return
        self._maybe_send_blueprint()
        self._set_times(run_time=now - self.started)
        self._send_histograms(force)
        self._send_occupancy(force)
        self._log(ENTITY["health"], self.rr.TextDocument(self.health.markdown(self.snapshot),
                                                         media_type="text/markdown"))
        self._refresh_rates(now)
        self._drain_log(now)

    def _refresh_rates(self, now: float) -> None:
        if not self.streams or not len(self.rates):
            return
        self._set_times(run_time=now - self.started)
        log_figure(self._log, self.rr, ENTITY["rates"], self.rates.figure(), self.sent)

    def _send_histograms(self, force: bool) -> None:
        from conduit_physics.histograms import Histograms

        histograms = self.context.shared.get(Histograms)
        if histograms is None or (not force and histograms.version == self.hist_version):
            return
        self.hist_version = histograms.version
        gates = histograms.gates()
        for view in histograms.snapshot():
            figure = histogram_figure(view, gates, self.curves)
            log_figure(self._log, self.rr, f"{ENTITY['histograms']}/{view.name}", figure, self.sent)

    def _send_occupancy(self, force: bool) -> None:
        occupancy = self.occupancy
        if occupancy is None or (not force and occupancy.version == self.occupancy_version):
            return
        self.occupancy_version = occupancy.version
        pads = self.view.pads
        scale = ColorScale(1.0, max(float(occupancy.hits.max(initial=0)), 2.0), log=True)
        colors = scale.rgba(occupancy.hits)  # packed in one compiled pass (numpy's ramp took ~0.5 ms per refresh)
        colors[occupancy.hits == 0] = arrow.pack(UNSEEN_COLOR)[0]
        dead = occupancy.dead()
        colors[dead] = arrow.pack(DEAD_COLOR)[0]
        hot = occupancy.hot(pads.radius)
        root = ENTITY["occupancy"]
        self._log(f"{root}/pads", arrow.components("Points2D", colors=arrow.rgba(colors)))
        self._log(f"{root}/hot", arrow.components("Points2D", positions=arrow.positions(self.view.pad_xy(hot), 2),
                                                  radii=arrow.floats(4.5 * pads.scale[hot]),
                                                  colors=arrow.colors((255, 255, 255)),
                                                  draw_order=arrow.floats(2.5, "DrawOrder")))
        fig = Figure()
        add_colorbar(fig, self.view.frame, scale, "events with a hit", gradient=False)  # the pad plane's (static)
        line = (f"{occupancy.events} events · {len(dead)} dead pads (never hit, red) · {len(hot)} hot pads "
                f"(> {occupancy.hot_fraction:.0%} of events, white ring)" if occupancy.events >= occupancy.min_events
                else f"{occupancy.events} events (dead and hot pads are counted after {occupancy.min_events})")
        fig.add("info", Texts(np.array([[0.0, self.view.frame.top - 28.0]]), [line]))
        log_figure(self._log, self.rr, root, fig, self.sent)

    def _summary_line(self, m) -> str:
        """The end-of-run summary for the log view."""
        rate = m.received / m.elapsed if m.elapsed > 0 else 0.0
        counters = m.source_counters
        problems = [f"{k.replace('_', ' ')} {v}" for k, v in counters.items()
                    if v and ("bad" in k or "late" in k or "duplicate" in k or "dropped" in k or "errors" in k)
                    and not k.startswith("cobo")]
        # What stages dropped or left without a result, by reason (estimate's rejected clusters ...).
        counted = [f"{name}: " + ", ".join(f"{reason} {n}" for reason, n in sorted(r["counts"].items(),
                                                                                  key=lambda kv: -kv[1]))
                   for name, r in getattr(m, "stages", {}).items() if any(r.get("counts", {}).values())]
        return (f"end of run {self.run}: {m.received} events received ({m.complete} complete, {m.incomplete} "
                f"incomplete), {m.analysed} analysed, {m.skipped} skipped (analysis behind), {m.dropped} dropped "
                f"(queue full), {m.failed} stage failures; {self.displayed} drawn; {m.elapsed:.1f} s, "
                f"{rate:.1f} events/s" + ("; " + ", ".join(problems) if problems else "; no bad, late or "
                                          "duplicate frames")
                + ("; counted by stages: " + "; ".join(counted) if counted else ""))

    def _drain_log(self, now: float, final: bool = False) -> None:
        records = self.handler.drain(final=final)
        if not records or not self.streams:
            return
        self._set_times(run_time=now - self.started)
        for level, text in records:
            self._log(ENTITY["log"], self.rr.TextLog(text, level=_TEXT_LOG_LEVELS.get(level, "INFO")))
