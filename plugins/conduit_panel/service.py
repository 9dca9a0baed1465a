"""The ``panel`` service: serves the page and the JSON API from the engine's own trio loop.

Why Hypercorn + Starlette: Hypercorn is the one well-kept ASGI server with a
native trio worker (``hypercorn.trio.serve``), so the panel runs as tasks in
the engine's nursery, in the same loop, without a thread or a second event
loop; Starlette is a small, well-kept ASGI toolkit that runs on trio through
anyio, with routing, JSON, static files and streaming responses (server-sent
events) built in. No HTTP is parsed here (h11 does it under Hypercorn).

Never slows the DAQ: the status snapshot is built at most every ``refresh``
seconds by one task (:meth:`PanelService._ticker`), and every request or event
stream only copies those bytes; a slow or vanished browser holds only its own
connection's task (its stream waits for the socket, nobody else does).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import sys
from collections.abc import AsyncIterator
from typing import Any

import trio

from conduit.service import Service

from .params import TOKEN_ENV, PanelParams, is_loopback, split_listen

__all__ = ["PanelService", "TOKEN_ENV"]


log = logging.getLogger("conduit.panel")


class PanelService(Service):
    """The control panel for the shift crew: a web page and a JSON API (docs/panel.md)."""

    name = "panel"
    Params = PanelParams

    def __init__(self, params: PanelParams, control: Any):
        super().__init__(params, control)
        self.host, self.port = split_listen(params.listen)
        self.loopback = is_loopback(self.host)
        self.token: str | None = None
        if not self.loopback:
            self.token = params.token or os.environ.get(TOKEN_ENV) or secrets.token_urlsafe(18)
        self._bytes = b"{}"
        self._version = 0
        self._changed = trio.Event()
        self._refresh = trio.Event()
        self.url = ""

    @classmethod
    def enabled(cls, params: PanelParams) -> bool:
        return params.enabled

    # -- addresses ----------------------------------------------------------------------------

    def host_allowed(self, host_header: str) -> bool:
        """The Host header names this server (loopback panels answer loopback names only)."""
        host = host_header.rpartition(":")[0] if host_header.rpartition(":")[2].isdigit() else host_header
        host = host.strip("[]").lower()
        if not host:
            return False
        if self.loopback:
            return host in ("localhost", "::1") or host.startswith("127.")
        return True  # bound beyond this machine: any name that reaches it; controls need the token

    def own_origins(self, host_header: str) -> set[str]:
        return {f"http://{host_header}"}

    # -- the snapshot ---------------------------------------------------------------------------

    def snapshot(self) -> bytes:
        return self._bytes

    def refresh_now(self) -> None:
        """Rebuild the snapshot now (after a control call: the next read shows its effect), and once more soon."""
        try:
            self._build()
        except Exception as err:
            log.debug("status snapshot failed: %s", err, exc_info=True)
        self._refresh.set()

    def _build(self) -> None:
        status = self.control.status()
        status["panel"] = {"url": self.url, "token_required": self.token is not None,
                           "refresh_s": self.params.refresh}
        self._bytes = json.dumps(status, default=str, allow_nan=False).encode()
        self._version += 1
        self._changed.set()
        self._changed = trio.Event()

    async def _ticker(self) -> None:
        while True:
            try:
                self._build()
            except Exception as err:  # a snapshot that cannot be built must not stop the panel
                log.debug("status snapshot failed: %s", err, exc_info=True)
            with trio.move_on_after(self.params.refresh):
                await self._refresh.wait()
                await trio.sleep(0.05)  # let the control call's effects land (a handful of events)
            self._refresh = trio.Event()

    async def stream(self) -> AsyncIterator[bytes]:
        """Server-sent events: every new snapshot, and a comment every 15 s so proxies keep the stream."""
        version = -1
        while True:
            if version != self._version:
                version = self._version
                yield b"data: " + self._bytes + b"\n\n"
            with trio.move_on_after(15.0) as idle:
                await self._changed.wait()
            if idle.cancelled_caught:
                yield b": keep-alive\n\n"

    # -- serving --------------------------------------------------------------------------------

    async def run(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        from hypercorn.config import Config
        from hypercorn.trio import serve

        from .app import build_app

        config = Config()
        config.bind = [f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"]
        config.accesslog = None
        http_log = logging.getLogger("conduit.panel.http")
        http_log.setLevel(logging.WARNING)  # not Hypercorn's "Running on ..." (the panel says where it is)
        config.errorlog = http_log
        config.graceful_timeout = 1.0
        config.include_server_header = False
        app = build_app(self)
        self._build()
        async with trio.open_nursery() as nursery:
            try:
                binds = await nursery.start(lambda task_status: serve(app, config, task_status=task_status))
            except OSError as err:
                raise OSError(f"cannot listen on {self.params.listen}: {err.strerror or err}"
                              + (" (another run's panel? give another port: --panel 127.0.0.1:8766)"
                                 if err.errno == 98 else "")) from None
            self.url = binds[0].rstrip("/") + "/"
            nursery.start_soon(self._ticker)
            self._announce()
            task_status.started(self.url)

    def _announce(self) -> None:
        """Say where the panel is (and its token, printed once on the terminal: never logged)."""
        log.info("control panel at %s", self.url)
        if self.token is None:
            print(f"control panel: {self.url}", file=sys.stderr, flush=True)
            return
        given = bool(self.params.token or os.environ.get(TOKEN_ENV))
        where = f"given in [panel] token or ${TOKEN_ENV}" if given else "in this address"
        print(f"control panel: {self.url}{'' if given else f'?token={self.token}'}  (listening beyond this "
              f"machine: every control needs the token, {where})", file=sys.stderr, flush=True)
