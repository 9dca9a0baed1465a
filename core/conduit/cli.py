"""The ``conduit`` command line.

Each sub-command lives in its own module with ``add_arguments(parser)`` and
``main(args) -> int``; only the chosen one is imported, so ``conduit --help``
answers without loading numpy, numba, hdbscan, rerun or h5py.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from . import __version__

#: name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("conduit.commands.run", "run a pipeline (conduit run pipelines/online.toml)"),
    "check": ("conduit.commands.check", "validate a pipeline and print it resolved, without running it"),
    "stages": ("conduit.commands.stages", "list every discovered stage and source, with parameters"),
    "simulate": ("conduit.simulate.command", "make synthetic AT-TPC data: serve 11 DataExporters or write files"),
    "new-stage": ("conduit.commands.new_stage", "write a ready-to-install stage plugin package skeleton"),
    "batch": ("conduit.commands.batch", "replay many runs on a Dask cluster"),
    # The control panel's commands live in its plugin package (conduit_panel).
    "status": ("conduit_panel.commands.status", "show a running conduit's status (through its control panel)"),
    "ctl": ("conduit_panel.commands.ctl", "steer a running conduit: pause, resume, stop, reset, new-run, set"),
}

USAGE = """usage: conduit [--version] [-h] COMMAND [ARGS]

attpc-conduit: online data conduit for the AT-TPC. Receives GET frames from
the DataExporters (or replays .graw run folders and merged HDF5 files),
builds events and runs the stages a TOML pipeline declares.

commands:
{commands}

Run `conduit COMMAND --help` for the options of a command.
"""


def _top_help() -> str:
    width = max(len(n) for n in COMMANDS)
    listing = "\n".join(f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items())
    return USAGE.format(commands=listing)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``conduit`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_top_help())
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        print(f"conduit {__version__}")
        return 0
    name = argv[0]
    if name not in COMMANDS:
        import difflib

        close = difflib.get_close_matches(name, list(COMMANDS), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        print(f"conduit: unknown command '{name}'{hint}; see `conduit --help`", file=sys.stderr)
        return 2
    module_name, text = COMMANDS[name]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"conduit {name}", description=getattr(module, "DESCRIPTION", text),
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
