"""The ``rerun`` sink: the physicist's live view of the run.

Every Rerun call happens inside this sink's own methods (the engine never
overlaps them), and each method sets the timelines it needs immediately
before logging, because Rerun's ``set_time`` is per thread and the engine may
call a sink from different worker threads.

Timelines: ``event`` (GET event id), ``daq_time`` (GET timestamp / 100 MHz,
seconds), ``run_time`` (seconds since the sink opened; rates and the log).
Event displays are throttled to ``max_display_rate``; histograms are refreshed
every ``histogram_interval`` from the shared :class:`HistogramSet`, which
counts every analysed event.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from conduit.stage import SinkStage

from . import geometry, kinematic_curves
from .blueprint import ENTITY, default_blueprint
from .logbridge import QueueHandler
from .params import RerunParams
from .rrdfile import RrdFile

__all__ = ["RerunSink", "viewer_listening", "has_display"]

GET_CLOCK_HZ = 100e6  # GET timestamps count 100 MHz ticks
#: Python logging level names -> Rerun TextLog levels.
_TEXT_LOG_LEVELS = {"DEBUG": "DEBUG", "INFO": "INFO", "WARNING": "WARN", "ERROR": "ERROR", "CRITICAL": "CRITICAL"}
N_CLASSES = 64  # annotation classes: 0 = noise, k + 1 = cluster label k (mod 64)


def _class_ids(labels: np.ndarray) -> np.ndarray:
    """Annotation class of each cluster label: 0 for noise (-1), else label mod 63, plus one."""
    labels = np.asarray(labels, dtype=np.int64)
    return np.where(labels >= 0, labels % (N_CLASSES - 1) + 1, 0).astype(np.uint16)


def has_display() -> bool:
    """True when a graphical session is available (a viewer can be spawned / a browser opened)."""
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def viewer_listening(url: str, timeout: float = 0.2) -> bool:
    """True when something accepts TCP connections at the URL's host and port."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 9876
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


class RerunSink(SinkStage):
    """Live Rerun view: 3-D event display, pad plane, traces, histograms, rates and log."""

    name = "rerun"
    Params = RerunParams

    # -- life cycle --------------------------------------------------------------------

    def open(self) -> None:
        import rerun as rr

        p = self.params
        self.rr = rr
        self.started = time.monotonic()
        self.run = self.context.run if self.context.run is not None else 0
        self.recording_id = p.recording_id or f"run-{self.run:04d}"
        self.streams: list[Any] = []
        self.statics: list[tuple[str, Any]] = []
        self._outputs: list[str] = []
        self.displayed = 0
        self.consumed = 0
        self.last_display = -math.inf
        self.last_event_id: int | None = None
        self.last_histograms = -math.inf
        self.hist_version: int | None = None
        self.blueprint_sent_for: tuple | None = None
        self.grpc_connected = p.mode != "connect"
        self.last_probe = -math.inf
        self.prefix = p.entity_prefix.rstrip("/")

        if p.mode == "spawn" and not has_display():
            raise ValueError("mode 'spawn' needs a display (DISPLAY/WAYLAND_DISPLAY unset); use mode 'serve' and "
                             "connect a viewer to it, or mode 'save'")
        self.file: RrdFile | None = None
        if p.mode == "save" or (p.tee and p.mode in ("connect", "serve")):
            # Claimed now, written from begin() on (the stream buffers until then).
            path = self.context.format_path(p.path)
            stream = self._new_stream()
            self.file = RrdFile(path, self.context.claim_output(path), stream)
            self.streams.append(stream)
        if p.mode == "stdout":
            stream = self._new_stream()
            stream.stdout()
            self.streams.append(stream)
            self._outputs.append("stdout")
        elif p.mode == "serve":
            stream = self._new_stream()
            stream.set_sinks(rr.GrpcServerSink(bind_ip=p.bind, port=p.port, server_memory_limit=p.server_memory_limit))
            host = "127.0.0.1" if p.bind in ("0.0.0.0", "::") else p.bind
            url = f"rerun+http://{host}:{p.port}/proxy"
            self.streams.append(stream)
            self._outputs.append(url)
            self.log.info("serving the live view at %s (open it with: rerun %s)", url, url)
            if p.web_viewer:
                rr.serve_web_viewer(web_port=p.web_port, open_browser=p.open_browser and has_display(), connect_to=url)
                self._outputs.append(f"http://{host}:{p.web_port}/?url={url}")
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

        self.handler = QueueHandler(p.log_level)
        logging.getLogger("conduit").addHandler(self.handler)
        self._log_statics()
        kinematic_curves.log_curves(self)

    def begin(self) -> None:
        if self.file is not None:
            self.file.start()

    def consume(self, event) -> None:
        self.consumed += 1
        self.last_event_id = event.id
        now = time.monotonic()
        self._maybe_connect(now)
        self._maybe_send_blueprint()
        period = 1.0 / self.params.max_display_rate
        due = now - self.last_display >= period
        # Prefer analysed events; show a raw one only when no analysed event came for a while.
        if due and (event.analysed or now - self.last_display >= 2 * period):
            self.last_display = now
            self.displayed += 1
            self._display(event)
        if now - self.last_histograms >= self.params.histogram_interval:
            self._send_histograms(now)
        self._drain_log(now)

    def on_metrics(self, metrics) -> None:
        now = time.monotonic()
        self._maybe_connect(now)
        self._maybe_send_blueprint()
        self._set_times(run_time=metrics.elapsed)
        m = ENTITY["metrics"]
        self._log(f"{m}/events_per_s/received", self.rr.Scalars(metrics.received_rate))
        self._log(f"{m}/events_per_s/analysed", self.rr.Scalars(metrics.analysed_rate))
        self._log(f"{m}/events_per_s/skipped", self.rr.Scalars(metrics.skipped_rate))
        fraction = metrics.complete_fraction
        if not math.isnan(fraction):
            self._log(f"{m}/complete_fraction", self.rr.Scalars(fraction))
        for stream, rate in sorted(metrics.byte_rates.items()):
            self._log(f"{m}/bytes_per_s/{stream}", self.rr.Scalars(rate))
        if now - self.last_histograms >= self.params.histogram_interval:
            self._send_histograms(now)
        self._drain_log(now)

    def close(self) -> None:
        if not hasattr(self, "handler"):  # open() failed part way
            if getattr(self, "file", None) is not None:
                self.file.close()
            return
        logging.getLogger("conduit").removeHandler(self.handler)
        now = time.monotonic()
        try:
            self._maybe_send_blueprint()
            self._send_histograms(now, force=True)
            self._drain_log(now)
        finally:
            for stream in self.streams:
                if self.file is None or stream is not self.file.stream:
                    self._close_stream(stream)
            self.streams = []
            problem = self.file.close() if self.file is not None else None
        self.log.info("rerun: %d events drawn of %d received", self.displayed, self.consumed)
        if problem:
            raise OSError(problem)

    def outputs(self) -> list[str]:
        written = getattr(self, "file", None)
        files = [str(written.path)] if written is not None and written.complete else []
        return files + list(getattr(self, "_outputs", []))

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
        if not viewer_listening(self.params.url):
            return
        stream = self._new_stream()
        stream.connect_grpc(self.params.url)
        self.streams.append(stream)
        self.grpc_connected = True
        self.blueprint_sent_for = None
        self.hist_version = None  # send the histograms' full state again
        for path, archetype in self.statics:
            stream.log(path, archetype, static=True)
        self.log.info("connected to the Rerun viewer at %s", self.params.url)

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
        """Set this thread's timelines on every stream (reset first: set_time is per thread)."""
        for stream in self.streams:
            stream.reset_time()
            if event is not None:
                stream.set_time("event", sequence=event)
            if daq_seconds is not None:
                stream.set_time("daq_time", duration=daq_seconds)
            if run_time is not None:
                stream.set_time("run_time", duration=run_time)
            if event is None and self.last_event_id is not None:
                stream.set_time("event", sequence=self.last_event_id)

    def _log(self, path: str, archetype: Any) -> None:
        path = self.prefix + path if self.prefix else path
        for stream in self.streams:
            stream.log(path, archetype)

    def _static(self, path: str, archetype: Any) -> None:
        path = (self.prefix + path if path != "/" else self.prefix or "/") if self.prefix else path
        self.statics.append((path, archetype))
        for stream in self.streams:
            stream.log(path, archetype, static=True)

    # -- static content -----------------------------------------------------------------------

    def _log_statics(self) -> None:
        rr = self.rr
        length = float(self.context.detector.detector_length)
        self._static("/", rr.ViewCoordinates.RIGHT_HAND_Z_UP)  # z along the beam, towards the pad plane
        self._static(f"{ENTITY['detector']}/chamber",
                     rr.LineStrips3D(geometry.chamber_outline(length), radii=0.4, colors=(110, 110, 120)))
        colors = geometry.label_colors(N_CLASSES - 1)
        infos = [rr.AnnotationInfo(id=0, label="noise", color=(130, 130, 130))]
        infos += [rr.AnnotationInfo(id=k + 1, label=f"cluster {k}", color=tuple(int(c) for c in colors[k]))
                  for k in range(N_CLASSES - 1)]
        self._static(ENTITY["event"], rr.AnnotationContext(infos))
        if self.params.pad_plane:
            pads = self.context.pads
            if pads.vertices is not None:
                self._static(ENTITY["pad_outline"], rr.LineStrips2D(geometry.pad_outlines(pads.vertices), radii=0.08,
                                                                    colors=(70, 70, 80), draw_order=0.0))
            else:
                self._static(ENTITY["pad_outline"], rr.Points2D(np.column_stack([pads.x, pads.y]), radii=0.5,
                                                                colors=(70, 70, 80), draw_order=0.0))
        m = ENTITY["metrics"]
        for name, color in (("received", (90, 160, 255)), ("analysed", (80, 200, 120)), ("skipped", (240, 90, 80))):
            self._static(f"{m}/events_per_s/{name}", rr.SeriesLines(colors=color, names=name))
        self._static(f"{m}/complete_fraction", rr.SeriesLines(colors=(230, 200, 80), names="complete"))

    def _maybe_send_blueprint(self) -> None:
        """(Re)send the layout when the histogram list is first known (the histogram sink may open later)."""
        from conduit_stages.histogram.sink import SHARED_KEY

        hset = self.context.shared.get(SHARED_KEY)
        key = tuple((name, h.dimensions) for name, h in hset.histograms.items()) if hset is not None else ()
        if key == self.blueprint_sent_for or not self.streams:
            return
        blueprint = default_blueprint(list(key), prefix=self.prefix)
        for stream in self.streams:
            stream.send_blueprint(blueprint)
        self.blueprint_sent_for = key

    # -- per event ---------------------------------------------------------------------------

    def _display(self, event) -> None:
        rr = self.rr
        if not self.streams:
            return
        self._set_times(event=event.id, daq_seconds=event.timestamp / GET_CLOCK_HZ,
                        run_time=time.monotonic() - self.started)
        self._log(ENTITY["event"], rr.Clear(recursive=True))
        self._log(ENTITY["pad_hits"], rr.Clear(recursive=True))
        self._log(ENTITY["traces"], rr.Clear(recursive=True))
        cloud = event.get("cloud")
        if cloud is not None and len(cloud):
            xyz = cloud[:, :3]
            charge = geometry.cloud_charge(cloud)
            self._log(ENTITY["cloud"], rr.Points3D(xyz, radii=1.5, colors=geometry.colormap(charge, low=0.0)))
            clusters = event.get("clusters")
            if clusters is not None and len(clusters.labels) == len(cloud):
                class_ids = _class_ids(clusters.labels)
                self._log(ENTITY["clusters"], rr.Points3D(xyz, radii=1.5, class_ids=class_ids))
        estimates = event.get("estimates")
        if estimates is not None and len(estimates):
            field = float(self.context.detector.magnetic_field)
            length = float(self.context.detector.detector_length)
            strips = geometry.helices(estimates, field, length, self.params.helix_points)
            class_ids = _class_ids(np.asarray(estimates["cluster_label"]))
            labels = [f"Bρ {r['brho']:.3f} T·m, θ {math.degrees(r['polar']):.1f}°, √(dE/dx) {r['sqrt_dEdx']:.1f}"
                      for r in estimates]
            self._log(ENTITY["tracks"], rr.LineStrips3D(strips, radii=1.0, class_ids=class_ids, labels=labels))
            vertices = np.column_stack([estimates["vertex_x"], estimates["vertex_y"], estimates["vertex_z"]])
            self._log(ENTITY["vertices"], rr.Points3D(vertices, radii=4.0, class_ids=class_ids))
        traces = event.traces
        if not traces.shape[0]:
            return
        ids, amplitude = geometry.pad_charges(traces)
        if self.params.pad_plane:
            pads = self.context.pads
            ok = (ids >= 0) & (ids < pads.n_pads)
            if ok.any():
                xy = np.column_stack([pads.x[ids[ok]], pads.y[ids[ok]]])
                self._log(ENTITY["pad_hits"], rr.Points2D(xy, radii=2.6 * pads.scale[ids[ok]],
                                                          colors=geometry.colormap(amplitude[ok], low=0.0),
                                                          draw_order=1.0))
        if self.params.strongest_traces:
            pad_ids, samples = geometry.strongest_traces(traces, self.params.strongest_traces, amplitude)
            buckets = np.arange(samples.shape[1], dtype=np.float64)
            strips = [np.column_stack([buckets, s]) for s in samples]
            self._log(ENTITY["strongest"], rr.LineStrips2D(strips, radii=0.6, colors=geometry.label_colors(len(strips)),
                                                           labels=[f"pad {p}" for p in pad_ids]))

    def _send_histograms(self, now: float, force: bool = False) -> None:
        from conduit_stages.histogram.sink import SHARED_KEY

        self.last_histograms = now
        hset = self.context.shared.get(SHARED_KEY)
        if hset is None or not self.streams:
            return
        if not force and hset.version == self.hist_version:
            return
        self.hist_version = hset.version
        rr = self.rr
        self._set_times(run_time=now - self.started)
        for view in hset.snapshot():
            path = f"{ENTITY['histograms']}/{view.name}"
            if view.y is None:
                edges = view.x.edges
                centres = 0.5 * (edges[1:] + edges[:-1])
                self._log(path, rr.BarChart(view.counts, abscissa=centres))
            else:
                # Rows = y from high (top) to low, columns = x: reads like the usual 2-D plot.
                image = view.counts.T[::-1]
                self._log(path, rr.Tensor(np.ascontiguousarray(image), dim_names=[view.y.label, view.x.label]))

    def _drain_log(self, now: float) -> None:
        records = self.handler.drain()
        if not records or not self.streams:
            return
        self._set_times(run_time=now - self.started)
        for level, text in records:
            self._log(ENTITY["log"], self.rr.TextLog(text, level=_TEXT_LOG_LEVELS.get(level, "INFO")))
