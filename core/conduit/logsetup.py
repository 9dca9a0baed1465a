"""Logging for the command line: one line per message, safe next to the status line."""

from __future__ import annotations

import logging
import sys


class _LineHandler(logging.StreamHandler):
    """Clears a live status line (on a terminal) before writing a message."""

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(self.stream, "isatty", lambda: False)():
            self.stream.write("\r\x1b[2K")
        super().emit(record)


def configure_logging(verbosity: int = 0) -> None:
    """INFO by default, DEBUG with -v, WARNING with -q (verbosity < 0)."""
    level = logging.DEBUG if verbosity > 0 else logging.INFO if verbosity == 0 else logging.WARNING
    handler = _LineHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("conduit")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
