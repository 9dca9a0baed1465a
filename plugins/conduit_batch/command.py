"""``conduit batch``: replay many runs through one pipeline on a Dask cluster."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from conduit.commands.common import add_pipeline_arguments, load_or_report

DESCRIPTION = """Replay many runs through a pipeline on a Dask cluster, one task per run.

The pipeline's file source must have a path template with {run}, e.g.

    [source]
    kind = "hdf5"
    path = "/data/e20009/merged/run_{run:04d}.h5"

and its sinks write per-run outputs (path = "out/run_{run:04d}.h5"). Each run
gives exactly what `conduit run` gives on that run alone. Finished runs are
recorded under --state and skipped next time unless --force; a failed run is
retried once and reported, the others go on. Histograms of all runs are summed
into one file at the end (--histograms).

    conduit batch replay.toml --runs 1-250 --local-workers 8
    conduit batch replay.toml --runs 1-250 --scheduler tcp://head-node:8786

Needs the batch extra: pip install 'attpc-conduit[batch]'."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_pipeline_arguments(parser)
    parser.add_argument("--runs", required=True, help="run numbers: 1-250 or 3,5,9-12")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--scheduler", help="address of a running Dask scheduler (tcp://host:8786)")
    where.add_argument("--local-workers", type=int, default=None, metavar="N",
                       help="start a LocalCluster of N single-threaded worker processes (default: one per core)")
    parser.add_argument("--force", action="store_true", help="process runs again even if already complete")
    parser.add_argument("--state", type=Path, default=None,
                        help="directory of per-run manifests (default: .conduit-batch/<pipeline name> next to it)")
    parser.add_argument("--histograms", type=Path, default=None,
                        help="file for the summed histograms of all runs (default: <state>/histograms_merged.h5)")


def _open_client(args):
    from distributed import Client, LocalCluster

    if args.scheduler:
        return Client(args.scheduler), None
    import os

    n = args.local_workers or max(1, len(os.sched_getaffinity(0)))
    cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0",
                           silence_logs=40)
    return Client(cluster), cluster


def main(args: argparse.Namespace) -> int:
    from .plan import BatchPlanError, pipeline_fingerprint, plan_runs
    from .runs import parse_runs
    from .state import Manifests
    from .task import process_run

    try:
        runs = parse_runs(args.runs)
    except ValueError as err:
        print(f"conduit batch: {err}", file=sys.stderr)
        return 2
    pipeline = load_or_report(args)
    if pipeline is None:
        return 2
    try:
        tasks, missing = plan_runs(pipeline, runs, args.overrides)
    except BatchPlanError as err:
        print(f"conduit batch: {err}", file=sys.stderr)
        return 2
    pipeline_path = pipeline.path.resolve()
    state_dir = args.state or pipeline_path.parent / ".conduit-batch" / pipeline_path.stem
    manifests = Manifests(state_dir.resolve(), pipeline_fingerprint(pipeline_path, args.overrides))
    for run, path in missing:
        print(f"run {run:04d}: no input at {path} (skipped)")
    done_before = [t for t in tasks if not args.force and manifests.is_complete(t.run)]
    todo = [t for t in tasks if t not in done_before]
    for task in sorted(done_before, key=lambda t: t.run):
        print(f"run {task.run:04d}: already complete (use --force to redo)")
    if not todo:
        print("nothing to do")
        return _merge(args, manifests, [t.run for t in tasks])

    try:
        client, cluster = _open_client(args)
    except ImportError:
        print("conduit batch: Dask is not installed; pip install 'attpc-conduit[batch]'", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"conduit batch: cannot reach the scheduler {args.scheduler}: {err}", file=sys.stderr)
        return 1
    failures: list[tuple[int, str]] = []
    started = time.monotonic()
    try:
        from distributed import as_completed

        workers = len(client.scheduler_info().get("workers", {}))
        print(f"{len(todo)} runs on {workers} Dask workers ({client.scheduler.address})")
        if client.dashboard_link:
            print(f"dashboard: {client.dashboard_link}")
        futures = {}
        for task in todo:
            future = client.submit(process_run, str(pipeline_path), list(task.overrides), task.run,
                                   key=f"conduit-run-{task.run:04d}-{manifests.fingerprint}", retries=1, pure=False)
            futures[future] = task
        finished = 0
        events = 0
        for future in as_completed(futures):
            task = futures[future]
            finished += 1
            try:
                result = future.result()
            except Exception as err:  # reported per run; the others go on
                failures.append((task.run, str(err)))
                print(f"[{finished:>4}/{len(todo)}] run {task.run:04d} FAILED (after one retry): {err}")
                continue
            manifests.record(result)
            events += result["received"]
            elapsed = time.monotonic() - started
            print(f"[{finished:>4}/{len(todo)}] run {task.run:04d}: {result['received']} events in "
                  f"{result['wall_seconds']:.1f} s -> {', '.join(result['outputs']) or 'no outputs'} "
                  f"(overall {events / max(elapsed, 1e-9):.0f} events/s, {finished / elapsed * 60:.1f} runs/min)")
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    status = _merge(args, manifests, [t.run for t in tasks])
    print(f"done: {len(todo) - len(failures)} runs processed, {len(done_before)} already complete, "
          f"{len(failures)} failed, {len(missing)} missing, in {time.monotonic() - started:.1f} s")
    for run, error in failures:
        print(f"  failed run {run:04d}: {error}")
    return 1 if failures else status


def _merge(args, manifests, runs: list[int]) -> int:
    from .histmerge import merge_run_histograms

    target = args.histograms or manifests.directory / "histograms_merged.h5"
    merged = merge_run_histograms(manifests, runs, target)
    if merged:
        print(f"histograms of {merged} runs summed into {target}")
    return 0
