"""The panel's web application (Starlette, served by Hypercorn's trio worker in the engine's loop).

Routes (docs/panel.md has the JSON of each)::

    GET  /                  the page (static/index.html; its script and style ship in the package)
    GET  /api/status        the status snapshot (JSON)
    GET  /api/events        the same snapshot, pushed as server-sent events every `refresh` seconds
    POST /api/pause | /api/resume | /api/stop | /api/reset
    POST /api/new-run       {"run": 43}            (optional; default: the current run + 1)
    POST /api/set           {"set": ["pointcloud.peak_threshold=60", ...]}
    POST /api/gates         {"name": ..., "histogram": ..., "polygon": [[x, y], ...]}  (add or replace)
    POST /api/gates/remove  {"name": ...}

State changes are POST only, with a JSON body (``Content-Type: application/json``),
from the page's own origin (a cross-origin ``Origin`` or ``Sec-Fetch-Site`` is
refused, and no CORS header is ever sent), and with the token when the panel
listens beyond this machine. The ``Host`` header must name this server (a
DNS-rebinding page cannot reach a loopback panel).
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from conduit.engine.control import ControlError

if TYPE_CHECKING:
    from .service import PanelService

__all__ = ["build_app", "STATIC"]

STATIC = Path(__file__).parent / "static"
log = logging.getLogger("conduit.panel")

#: Largest request body accepted (B): a gate with a few hundred vertices fits easily.
MAX_BODY = 64 * 1024


def _error(status: int, *lines: str) -> JSONResponse:
    return JSONResponse({"ok": False, "errors": list(lines)}, status_code=status)


class _Refused(Exception):
    def __init__(self, response: Response):
        self.response = response


def build_app(service: PanelService) -> Starlette:
    """The Starlette application of one panel."""
    control = service.control

    def check_host(request: Request) -> None:
        host = request.headers.get("host", "")
        if not service.host_allowed(host):
            raise _Refused(_error(403, f"Host {host!r} is not this panel's address"))

    async def read_json(request: Request) -> dict[str, Any]:
        """Checks of a state-changing call, then its JSON body (an object; {} when empty)."""
        check_host(request)
        origin = request.headers.get("origin")
        if origin is not None and origin not in service.own_origins(request.headers.get("host", "")):
            raise _Refused(_error(403, f"cross-origin request from {origin} refused"))
        if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
            raise _Refused(_error(403, "cross-site request refused"))
        if service.token is not None:
            given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
            if not given:
                raise _Refused(_error(401, "this panel needs its token (Authorization: Bearer TOKEN)"))
            if not hmac.compare_digest(given.encode(), service.token.encode()):
                raise _Refused(_error(401, "wrong token"))
        body = await request.body()
        if len(body) > MAX_BODY:
            raise _Refused(_error(413, f"request body over {MAX_BODY} bytes"))
        if not body.strip():
            return {}
        kind = request.headers.get("content-type", "").split(";")[0].strip()
        if kind != "application/json":
            raise _Refused(_error(415, f"expected Content-Type: application/json, got {kind or 'none'}"))
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError) as err:
            raise _Refused(_error(400, f"malformed JSON: {err}")) from None
        if not isinstance(data, dict):
            raise _Refused(_error(400, f"expected a JSON object, got {type(data).__name__}"))
        return data

    def action(handler: Callable[[dict[str, Any], str], Awaitable[dict[str, Any]]]):
        async def endpoint(request: Request) -> Response:
            try:
                data = await read_json(request)
                who = f"control panel ({request.client.host if request.client else '?'})"
                result = await handler(data, who)
            except _Refused as refused:
                return refused.response
            except ControlError as err:
                return _error(err.status, *err.lines)
            service.refresh_now()
            return JSONResponse({"ok": True, **result})

        return endpoint

    async def pause(data, who):
        return {"changed": control.pause(who), "paused": True, "from_sequence": control.paused_from}

    async def resume(data, who):
        return {"changed": control.resume(who), "paused": False, "from_sequence": control.resumed_from}

    async def stop(data, who):
        control.stop(who)
        return {}

    async def reset(data, who):
        return {"from_sequence": control.reset(who)}

    async def new_run(data, who):
        switch = await control.new_run(data.get("run"), who)
        return {"run": switch.run, "closed": switch.closed}

    async def set_parameters(data, who):
        assignments = data.get("set")
        if isinstance(assignments, str):
            assignments = [assignments]
        if not isinstance(assignments, list) or not all(isinstance(a, str) for a in assignments):
            raise ControlError(['expected {"set": ["stage.key=value", ...]}'])
        change = await control.set_parameters(assignments, who)
        return {"change": change.to_dict() if change else None}

    async def set_gate(data, who):
        change = await control.set_gate(data, who)
        return {"change": change.to_dict() if change else None}

    async def remove_gate(data, who):
        name = data.get("name")
        if not isinstance(name, str):
            raise ControlError(['expected {"name": "gate name"}'])
        change = await control.remove_gate(name, who)
        return {"change": change.to_dict() if change else None}

    async def index(request: Request) -> Response:
        try:
            check_host(request)
        except _Refused as refused:
            return refused.response
        return FileResponse(STATIC / "index.html", headers=_NO_CACHE)

    async def status(request: Request) -> Response:
        try:
            check_host(request)
        except _Refused as refused:
            return refused.response
        return Response(service.snapshot(), media_type="application/json", headers=_NO_CACHE)

    async def events(request: Request) -> Response:
        try:
            check_host(request)
        except _Refused as refused:
            return refused.response
        return StreamingResponse(service.stream(), media_type="text/event-stream",
                                 headers={**_NO_CACHE, "X-Accel-Buffering": "no"})

    async def not_allowed(request: Request) -> Response:
        return _error(405, f"{request.method} {request.url.path}: state changes are POST only")

    routes = [
        Route("/", index, methods=["GET"]),
        Route("/api/status", status, methods=["GET"]),
        Route("/api/events", events, methods=["GET"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    for path, handler in (("/api/pause", pause), ("/api/resume", resume), ("/api/stop", stop),
                          ("/api/reset", reset), ("/api/new-run", new_run), ("/api/set", set_parameters),
                          ("/api/gates", set_gate), ("/api/gates/remove", remove_gate)):
        routes.append(Route(path, action(handler), methods=["POST"]))
        routes.append(Route(path, not_allowed, methods=["GET", "PUT", "DELETE", "PATCH"]))
    return Starlette(routes=routes)


_NO_CACHE = {"Cache-Control": "no-store"}
