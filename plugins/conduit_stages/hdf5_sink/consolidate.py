"""Turn a recording left as ``FILE`` + ``FILE.parts/`` (a crashed or stopped run) into one file.

    python -m conduit_stages.hdf5_sink.consolidate out/run_0001.h5 [more files...]

The file is readable before and after; afterwards it no longer needs its
``.parts`` directory and can be moved or copied alone.
"""

from __future__ import annotations

import argparse
import sys
import time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m conduit_stages.hdf5_sink.consolidate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+", help="master files written by the hdf5 sink")
    args = parser.parse_args(argv)
    from .journal import WriterStillBusy, wait_for_writer
    from .partfile import WriteError, consolidate

    status = 0
    for name in args.files:
        t0 = time.perf_counter()
        try:
            wait_for_writer(name, say=lambda text: print(text, file=sys.stderr))  # a killed run's writer finishing
            copied = consolidate(name)
        except (WriteError, WriterStillBusy) as err:
            print(f"error: {err}", file=sys.stderr)
            status = 1
            continue
        except OSError as err:
            print(f"error: {name}: {err}", file=sys.stderr)
            status = 1
            continue
        if copied:
            print(f"{name}: {copied} objects copied in {time.perf_counter() - t0:.2f} s; parts removed")
        else:
            print(f"{name}: already self-contained")
    return status


if __name__ == "__main__":
    sys.exit(main())
