"""A small client of the panel's JSON API (``conduit status``, ``conduit ctl``, scripts); standard library only."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from typing import Any

from .params import DEFAULT_LISTEN, TOKEN_ENV, split_listen

__all__ = ["PanelClient", "PanelError", "base_url"]



class PanelError(Exception):
    """The panel refused a call (``lines`` from its answer) or could not be reached."""

    def __init__(self, lines: list[str], status: int | None = None):
        self.lines = lines
        self.status = status
        super().__init__("; ".join(lines))


def base_url(address: str | None) -> str:
    """'HOST:PORT', 'PORT' or 'http://HOST:PORT[/]' -> 'http://HOST:PORT'."""
    address = (address or DEFAULT_LISTEN).strip().rstrip("/")
    if address.startswith(("http://", "https://")):
        return address
    host, port = split_listen(address)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class PanelClient:
    """Calls one running conduit's panel: ``status()`` and ``post("pause")``, ``post("set", {...})`` ..."""

    def __init__(self, address: str | None = None, *, token: str | None = None, timeout: float = 30.0):
        self.url = base_url(address)
        self.token = token if token is not None else os.environ.get(TOKEN_ENV)
        self.timeout = timeout

    def status(self) -> dict[str, Any]:
        return self._call(urllib.request.Request(f"{self.url}/api/status"))

    def post(self, action: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = json.dumps(body or {}).encode()
        return self._call(urllib.request.Request(f"{self.url}/api/{action}", data=data, headers=headers,
                                                 method="POST"))

    def _call(self, request: urllib.request.Request) -> dict[str, Any]:
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as err:
            try:
                answer = json.loads(err.read())
                lines = answer.get("errors") or [str(err)]
            except ValueError:
                lines = [f"{err.code} {err.reason}"]
            raise PanelError(lines, err.code) from None
        except (urllib.error.URLError, OSError) as err:
            reason = getattr(err, "reason", err)
            raise PanelError([f"no conduit panel answers at {self.url}: {reason} (is the run started with "
                              f"--panel?)"]) from None
