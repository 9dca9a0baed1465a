"""``conduit simulate``: serve simulated events as 11 DataExporters, or write .graw / merged HDF5 files.

The simulation and detector options are generated from the parameter models
(:class:`~conduit_simulate.params.SimulationParams`,
:class:`conduit.detector.DetectorParams`), so ``--help`` always lists every
option with its unit, default and one-line doc, and the values go through the
same validation as a pipeline's ``[source]`` / ``[detector]`` tables.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import time
import types
import typing
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

DESCRIPTION = """Make synthetic AT-TPC GET data with its truth.

  conduit simulate serve --events 1000 --rate 100      11 fake DataExporters on 127.0.0.1:46491-46501
  conduit simulate serve --events 20000 --pool 50      ... 50 distinct events repeated: hundreds of events/s
  conduit simulate graw out/ --run 7 --events 200      a .graw run folder out/run_0007/mm*/CoBo*_AsAd*_..._0000.graw
  conduit simulate hdf5 out/run_0007.h5 --events 200   a merged HDF5 file (attpc_merger 1.0 layout)

Every output comes with a truth HDF5 file (particles, deposits, per-pad
contributions; layout in docs/simulator.md). The same --seed gives the same
events in every output. Presets: default, elastic, dp, alpha-elastic, protons, alphas,
single-track; options left unset take the preset's value."""

__all__ = ["add_arguments", "main", "add_params_arguments", "params_from_args"]

_LOG = logging.getLogger("conduit.simulate")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _describe_default(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (tuple, list)):
        return " ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def add_params_arguments(group, model, prefix: str = "") -> None:
    """Add one option per parameter of ``model`` (a Params class) to an argparse group.

    Options default to ``argparse.SUPPRESS`` so that only what the user typed
    reaches :func:`params_from_args`; the help text shows the model's default.
    """
    for spec in model.specs():
        tp = spec.type
        optional = False
        if get_origin(tp) in (typing.Union, types.UnionType):
            args = [a for a in get_args(tp) if a is not type(None)]
            optional = len(args) < len(get_args(tp))
            tp = args[0] if len(args) == 1 else tp
        kwargs: dict[str, Any] = {"dest": prefix + spec.name, "default": argparse.SUPPRESS}
        default = _describe_default(spec.default)
        help_text = spec.doc + (f" [default: {default}]" if default and "default:" not in spec.doc else "")
        if spec.range_text():
            help_text += f" ({spec.range_text()})"
        kwargs["help"] = help_text.replace("%", "%%")
        origin = get_origin(tp)
        if tp is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif origin is Literal:
            kwargs["choices"] = list(get_args(tp))
            kwargs["metavar"] = "{" + ",".join(str(c) for c in get_args(tp)) + "}"
        elif origin is tuple:
            items = get_args(tp)
            kwargs["nargs"] = len(items)
            kwargs["type"] = items[0]
            kwargs["metavar"] = ("LOW", "HIGH") if len(items) == 2 else None
        elif tp in (int, float, str, Path):
            kwargs["type"] = tp
            kwargs["metavar"] = {int: "N", float: "X", str: "NAME", Path: "PATH"}[tp]
        else:  # pragma: no cover - a new parameter type must be taught here
            raise TypeError(f"no command-line form for parameter {spec.name}: {spec.type}")
        del optional
        group.add_argument(_flag(spec.name), **kwargs)


def params_from_args(model, args: argparse.Namespace, prefix: str = "", extra: dict | None = None):
    """Build ``model`` from the options the user gave (validated like a TOML table)."""
    given = {}
    for spec in model.specs():
        key = prefix + spec.name
        if hasattr(args, key):
            value = getattr(args, key)
            given[spec.name] = list(value) if isinstance(value, list) else value
    if extra:
        given.update(extra)
    return model.from_mapping(given)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from conduit.detector import DetectorParams
    from .params import SimulationParams

    sub = parser.add_subparsers(dest="output", metavar="{serve,graw,hdf5}", required=True)
    commands = {
        "serve": "serve the events as 11 DataExporters (one TCP port per CoBo)",
        "graw": "write a .graw run folder (run_NNNN/mm{c}/CoBo{c}_AsAd{a}_<time>_NNNN.graw)",
        "hdf5": "write a merged HDF5 file (attpc_merger 1.0 layout)",
    }
    for name, text in commands.items():
        p = sub.add_parser(name, help=text, description=text)
        out = p.add_argument_group("output")
        if name == "serve":
            out.add_argument("--host", default="127.0.0.1", help="address to listen on [default: %(default)s]")
            out.add_argument(
                "--base-port",
                type=int,
                default=46491,
                help="CoBo c listens on base-port + c (0: ephemeral ports) [default: %(default)s]",
            )
            out.add_argument(
                "--rate",
                type=float,
                default=0.0,
                help="events per second (0: as fast as the clients read) [default: %(default)s]",
            )
            out.add_argument(
                "--clients", type=int, default=1, help="connections to wait for on every port [default: %(default)s]"
            )
            out.add_argument(
                "--connect-timeout",
                type=float,
                default=60.0,
                help="seconds to wait for the clients before giving up [default: %(default)s]",
            )
            out.add_argument(
                "--disorder",
                type=float,
                default=1.2,
                help="an event's frames are spread over this many event periods (> 1: consecutive "
                "events' frames overlap) [default: %(default)s]",
            )
            out.add_argument(
                "--run", type=int, default=1, help="run number (names the default truth file) [default: %(default)s]"
            )
            out.add_argument("--truth", type=Path, default=None, help="truth file [default: out/run_NNNN_truth.h5]")
        elif name == "graw":
            out.add_argument("output_dir", type=Path, nargs="?", help="directory in which run_NNNN/ is created")
            out.add_argument("--out", type=Path, dest="output_option", help="the same as OUTPUT_DIR")
            out.add_argument("--run", type=int, default=1, help="run number (run_NNNN folder) [default: %(default)s]")
            out.add_argument(
                "--split-size",
                type=float,
                default=1024.0,
                metavar="MB",
                help="start a new _NNNN.graw file when one would exceed this size (MiB) [default: %(default)s]",
            )
            out.add_argument("--stamp", default=None, help="time stamp in the file names [default: now]")
            out.add_argument(
                "--truth",
                type=Path,
                default=None,
                help="truth file [default: run_NNNN_truth.h5 next to the run folder]",
            )
        else:
            out.add_argument(
                "output_file", type=Path, nargs="?", help="merged HDF5 file to write, e.g. out/run_0001.h5"
            )
            out.add_argument("--out", type=Path, dest="output_option", help="the same as OUTPUT_FILE")
            out.add_argument("--truth", type=Path, default=None, help="truth file [default: <output>_truth.h5]")
        out.add_argument("-q", "--quiet", action="store_true",
                         help="print only where it serves and one final line: what it served and how it kept pace"
                         if name == "serve" else "print only the final line (no progress counter)")
        out.add_argument("--existing", choices=("keep", "refuse", "replace"), default="keep",
                         help="an output (or truth file) already there: keep it under a numbered name, refuse, or "
                              "replace it (as [engine] existing_outputs) [default: %(default)s]")
        add_params_arguments(
            p.add_argument_group('simulation (the [source] table of kind "simulate")'), SimulationParams
        )
        add_params_arguments(
            p.add_argument_group("detector (the [detector] table)"), DetectorParams, prefix="detector."
        )
    parser.epilog = "Run `conduit simulate serve --help` (or graw, hdf5) for every option."


def _resolve_output(args: argparse.Namespace) -> list[str]:
    """Merge the positional output path with ``--out``; one of them is required (not for serve)."""
    if args.output == "serve":
        return []
    name = "output_dir" if args.output == "graw" else "output_file"
    positional, option = getattr(args, name), getattr(args, "output_option", None)
    if positional is not None and option is not None and positional != option:
        return [f"give the output once: {positional} or --out {option}"]
    if positional is None and option is None:
        return [f"missing the output {'directory' if name == 'output_dir' else 'file'} (positional or --out)"]
    setattr(args, name, positional if positional is not None else option)
    return []


def _load(args: argparse.Namespace):
    from conduit.detector import DetectorParams
    from conduit.params import ParamError
    from .params import SimulationParams

    problems = []
    params = detector = None
    try:
        params = params_from_args(SimulationParams, args)
    except ParamError as err:
        problems += [f"--{p.dotted().replace('_', '-')}: {p.message}" for p in err.problems]
    try:
        detector = params_from_args(DetectorParams, args, prefix="detector.")
    except ParamError as err:
        problems += [f"--{p.dotted().replace('_', '-')}: {p.message}" for p in err.problems]
    return params, detector, problems


def main(args: argparse.Namespace) -> int:
    params, detector, problems = _load(args)
    problems += _resolve_output(args)
    if problems:
        for line in problems:
            print(f"conduit simulate: {line}", file=sys.stderr)
        return 2
    from .generator import Simulator
    from .truth import TruthWriter

    try:
        sim = Simulator(params, detector)
    except (ValueError, OSError) as err:
        print(f"conduit simulate: {err}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    progress = None if args.quiet or not sys.stderr.isatty() else _Progress(params.events)
    if args.output == "serve":
        return _serve(args, sim, params, detector)
    if args.output == "graw":
        from .writers import write_graw_run

        run_dir = args.output_dir / f"run_{args.run:04d}"
        truth_path = args.truth or args.output_dir / f"run_{args.run:04d}_truth.h5"
        try:
            with _claimed(args.existing, run_dir, truth_path), \
                    TruthWriter(truth_path, params, detector, pool_size=min(params.pool, params.events)) as truth:
                files = write_graw_run(
                    sim,
                    run_dir,
                    truth,
                    split_bytes=int(args.split_size * (1 << 20)),
                    stamp=args.stamp,
                    progress=progress,
                )
        except OSError as err:
            print(f"conduit simulate: cannot write {run_dir}: {err}", file=sys.stderr)
            return 1
        except ValueError as err:
            print(f"conduit simulate: {err}", file=sys.stderr)
            return 1
        size = sum(f.stat().st_size for f in files)
        _done(progress)
        print(
            f"wrote {params.events} events as {len(files)} .graw files ({size / 1e6:.1f} MB) in {run_dir} "
            f"in {time.perf_counter() - started:.1f} s; truth: {truth_path}"
        )
        return 0
    from .writers import write_hdf5

    out = args.output_file
    truth_path = args.truth or out.with_name(out.stem + "_truth.h5")
    try:
        with _claimed(args.existing, out, truth_path), \
                TruthWriter(truth_path, params, detector, pool_size=min(params.pool, params.events)) as truth:
            write_hdf5(sim, out, truth, progress=progress)
    except OSError as err:
        print(f"conduit simulate: cannot write {out}: {err}", file=sys.stderr)
        return 1
    except ValueError as err:
        print(f"conduit simulate: {err}", file=sys.stderr)
        return 1
    _done(progress)
    print(
        f"wrote {params.events} events to {out} ({out.stat().st_size / 1e6:.1f} MB) "
        f"in {time.perf_counter() - started:.1f} s; truth: {truth_path}"
    )
    return 0


@contextlib.contextmanager
def _claimed(policy: str, *paths: Path):
    """Claim the outputs as a run's sinks do (conduit.outputs): locked against another writer, an existing
    one kept under a numbered name (or refused, or replaced), released at the end."""
    from conduit.outputs import claim_output

    with contextlib.ExitStack() as stack:
        claims = [stack.enter_context(claim_output(path, policy, _LOG)) for path in paths]
        for claim in claims:
            claim.make_room()
        yield


def _serve(args, sim, params, detector) -> int:
    import trio

    from .serve import ServeError, serve_simulation
    from .truth import TruthWriter

    truth_path = args.truth or Path("out") / f"run_{args.run:04d}_truth.h5"

    def listening(ports: dict[int, int]) -> None:
        values = sorted(ports.values())
        span = (
            f"{args.host}:{values[0]}-{values[-1]}"
            if values == list(range(values[0], values[-1] + 1))
            else ", ".join(f"cobo{c}={args.host}:{p}" for c, p in sorted(ports.items()))
        )
        pool = f" (a pool of {params.pool} events, served cyclically)" if params.pool else ""
        print(
            f"serving {params.events} events{pool} as {len(ports)} DataExporters on {span} "
            f"(CoBo {min(ports)}-{max(ports)}), waiting for {args.clients} client(s) per port; truth: {truth_path}",
            flush=True,
        )

    def serving() -> None:
        print(f"every port has its {args.clients} client(s): serving", flush=True)

    try:
        with _claimed(args.existing, truth_path), \
                TruthWriter(truth_path, params, detector, pool_size=min(params.pool, params.events)) as truth:
            stats = trio.run(
                lambda: serve_simulation(
                    sim,
                    host=args.host,
                    base_port=args.base_port,
                    rate=args.rate,
                    clients=args.clients,
                    connect_timeout=args.connect_timeout,
                    disorder=args.disorder,
                    truth=truth,
                    on_listening=listening,
                    on_serving=None if args.quiet else serving,
                )
            )
    except ServeError as err:
        print(f"conduit simulate: {err}", file=sys.stderr)
        return 1
    served = (
        f"served {stats.events} events, {stats.frames} frames, {stats.bytes / 1e6:.1f} MB per client in "
        f"{stats.elapsed:.2f} s ({stats.events_per_second:.0f} events/s, {stats.megabytes_per_second:.0f} MB/s)"
    )
    behind = f"at most {stats.behind:.3f} s behind schedule; " if args.rate > 0 else ""
    pacing = f"pacing: {behind}{stats.waited:.2f} s waiting for clients that read slowly"
    # Quiet: the result still says whether the serve kept pace (on shift, the one line that matters).
    print(f"{served}; {pacing}" if args.quiet else f"{served}\n{pacing}")
    return 0


class _Progress:
    """A one-line progress counter on stderr (only on a terminal)."""

    def __init__(self, total: int):
        self.total = total
        self.start = time.perf_counter()
        self.last = 0.0

    def __call__(self, done: int) -> None:
        now = time.perf_counter()
        if now - self.last < 0.2 and done < self.total:
            return
        self.last = now
        rate = done / max(now - self.start, 1e-9)
        print(f"\r{done}/{self.total} events ({rate:.0f}/s)", end="", file=sys.stderr, flush=True)


def _done(progress) -> None:
    if progress is not None:
        print(file=sys.stderr)
