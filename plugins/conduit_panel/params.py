"""The ``[panel]`` table."""

from __future__ import annotations

from conduit.params import Params, Problem, param

__all__ = ["PanelParams", "DEFAULT_LISTEN", "TOKEN_ENV", "split_listen", "is_loopback"]

DEFAULT_LISTEN = "127.0.0.1:8765"
#: Environment variable holding the panel's token (for the panel and for `conduit ctl`).
TOKEN_ENV = "CONDUIT_PANEL_TOKEN"


def split_listen(text: str) -> tuple[str, int]:
    """'HOST:PORT' (or ':PORT', 'PORT', '[::1]:PORT') -> (host, port); ValueError with a readable message."""
    text = text.strip()
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "127.0.0.1", text
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT like {DEFAULT_LISTEN}, got {text!r}")
    return host, int(port)


def is_loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


class PanelParams(Params):
    """The control panel: a web page and JSON API for the shift crew (docs/panel.md)."""

    enabled: bool = param(False, "serve the panel while the run goes on (`conduit run --panel` turns it on)")
    listen: str = param(
        DEFAULT_LISTEN, "HOST:PORT the panel listens on; 127.0.0.1 = this machine only; another address needs a "
                        "token for every control (port 0: any free port)")
    token: str | None = param(
        None, "the token control calls must carry when the panel listens beyond this machine; default: "
              "$CONDUIT_PANEL_TOKEN, else one generated at start and printed once")
    refresh: float = param(0.5, "seconds between status updates sent to the page (at most a few per second)",
                           ge=0.2, le=10.0)

    def check(self) -> list[Problem]:
        try:
            split_listen(self.listen)
        except ValueError as err:
            return [Problem(("listen",), str(err))]
        if self.token is not None and len(self.token) < 8:
            return [Problem(("token",), "a token needs at least 8 characters")]
        return []
