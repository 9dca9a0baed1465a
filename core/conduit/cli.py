"""The ``conduit`` command line.

Every sub-command, the core's own included (``run``, ``check``, ``stages``,
``new-stage``), comes from a plugin through the ``conduit_register_commands``
hook; the simulator and batch replay register theirs the same way. Each
names a module with ``add_arguments(parser)`` and ``main(args) -> int``,
imported only when that command runs, so ``conduit --help`` answers without
loading numpy, numba, hdbscan, rerun or h5py.

``conduit --trace-plugins COMMAND ...`` prints every plugin loaded and every
hook call (the same as ``CONDUIT_TRACE_PLUGINS=1``).
"""

from __future__ import annotations

import argparse
import os
import sys

from . import __version__

#: The core's commands, listed first in this order; plugins' commands follow by name.
CORE_ORDER = ("run", "check", "stages", "new-stage")

USAGE = """usage: conduit [--version] [-h] [--trace-plugins] COMMAND [ARGS]

attpc-conduit: online data conduit for the AT-TPC. Receives GET frames from
the DataExporters (or replays .graw run folders and merged HDF5 files),
builds events and runs the stages a TOML pipeline declares.

commands:
{commands}

Run `conduit COMMAND --help` for the options of a command.{failures}
"""


def _ordered(commands: dict) -> list:
    core = [commands[name] for name in CORE_ORDER if name in commands]
    return core + sorted((c for c in commands.values() if c.name not in CORE_ORDER), key=lambda c: c.name)


def _top_help(commands: dict, failures: list) -> str:
    listed = _ordered(commands)
    width = max((len(c.name) for c in listed), default=0)
    listing = "\n".join(f"  {c.name:<{width}}  {c.help}" for c in listed) or "  (none: no plugin registered any)"
    failed = ""
    if failures:
        failed = "\n\nplugins that failed to load (see `conduit stages`):\n" + "\n".join(
            f"  {f.line()}" for f in failures)
    return USAGE.format(commands=listing, failures=failed)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``conduit`` console script; returns the exit status."""
    from .params import did_you_mean
    from .plugins import TRACE_ENV, get_commands

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "--trace-plugins":
        os.environ[TRACE_ENV] = "1"
        argv = argv[1:]
    if argv and argv[0] in ("-V", "--version"):
        print(f"conduit {__version__}")
        return 0
    commands, failures = get_commands(refresh=bool(os.environ.get(TRACE_ENV)))
    if not argv or argv[0] in ("-h", "--help"):
        print(_top_help(commands, failures))
        return 0 if argv else 2
    name = argv[0]
    if name not in commands:
        hint = did_you_mean(name, commands)
        print(f"conduit: unknown command '{name}'{hint}; see `conduit --help`", file=sys.stderr)
        for failure in failures:
            print(f"conduit: plugin {failure.line()}", file=sys.stderr)
        return 2
    command = commands[name]
    module = command.load()
    parser = argparse.ArgumentParser(prog=f"conduit {name}", description=getattr(module, "DESCRIPTION", command.help),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    module.add_arguments(parser)
    args = parser.parse_args(argv[1:])
    try:
        return int(module.main(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
