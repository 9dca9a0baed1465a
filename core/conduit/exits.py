"""How a child process ended, in the words the one-line errors use (shared by the engine and the sinks)."""

from __future__ import annotations

import signal

__all__ = ["how_it_ended"]


def how_it_ended(code: int | None) -> str:
    """``exit status 3``, ``killed by SIGKILL`` (``killed by signal 77`` for a number with no name), or
    ``still running`` for ``None`` (a ``Popen.returncode`` / ``Process.exitcode``)."""
    if code is None:
        return "still running"
    if code >= 0:
        return f"exit status {code}"
    try:
        return f"killed by {signal.Signals(-code).name}"
    except ValueError:
        return f"killed by signal {-code}"
