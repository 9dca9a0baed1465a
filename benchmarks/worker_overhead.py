"""CPU cost of analysing an event in a worker process rather than in the main process.

    NUMBA_CACHE_DIR=.numba-cache .venv/bin/python benchmarks/worker_overhead.py [--events 1000]
        [--chain none full] [--workers 2] [--reuse]

The same events (simulated, default mix, cycled) go through the engine's
pool (:func:`conduit.engine.pool.open_pool`) twice per chain: with
``workers = 0`` (the chain in a thread of this process) and with real
worker processes (trace matrix through shared memory, the rest pickled),
two events in flight per worker as the engine keeps them. Each event gets
a trace matrix of its own, freshly allocated and written (as the event
builder makes one per event: 0.7 MB of new data through the caches per
event); ``--reuse`` hands the templates' matrices over instead (warm
caches). Per event: the CPU time of this process (all threads) and of the
workers (from /proc), user + system. The difference between the two
set-ups is the cost of the worker round trip: pickling the event and the
result, the shared-memory copy, the pipes and wake-ups.

Chains: ``none`` is one stage that does nothing (the bare round trip);
``full`` is pointcloud + cluster.hdbscan + estimate (the result carries a
cloud, clusters and estimates back).

Also printed: the size of what is pickled each way for one event of the
``full`` chain and the time to pickle and unpickle it, with cloudpickle (as
trio-parallel pickles objects) and with :mod:`conduit.engine.messages`
(what the pool sends).
"""

from __future__ import annotations

import argparse
import os
import pickle
import sys
import time

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import trio
from _common import children, cpu_seconds, machine  # noqa: E402
from conduit.stage import RunContext, TransformStage  # noqa: E402


class Nothing(TransformStage):
    """A transform that reads nothing and makes nothing: the worker round trip alone."""

    name = "nothing"
    requires = ()
    provides = ()

    def process(self, event) -> None:
        pass


def chain(name: str) -> list:
    from conduit.params import Params
    from conduit_stages.cluster.hdbscan_stage import HdbscanStage
    from conduit_stages.estimate.stage import EstimateStage
    from conduit_stages.pointcloud.stage import PointcloudStage

    if name == "none":
        return [(Nothing, Params())]
    return [(cls, cls.Params()) for cls in (PointcloudStage, HdbscanStage, EstimateStage)]


def make_events(n: int, seed: int = 1):
    from conduit.detector import DetectorParams
    from conduit_simulate.generator import Simulator
    from conduit_simulate.params import SimulationParams

    sim = Simulator(SimulationParams(seed=seed, events=n, preset="default"), DetectorParams())
    return [sim.event(i).event for i in range(n)]


REUSE = False  # --reuse: the template's own trace matrix for every event (warm caches)


def fresh(event, sequence: int):
    """A new event with a new copy of the template's traces (as a source makes them), no artifacts."""
    from conduit.event import Event

    traces = event.traces if REUSE else event.traces.copy()
    return Event(id=sequence, traces=traces, timestamp=event.timestamp, sequence=sequence)


def workers_cpu() -> float:
    return sum(cpu_seconds(pid) or 0.0 for pid in children(os.getpid()))


def workers_faults() -> int:
    """Minor page faults of the workers so far (/proc/PID/stat field 10)."""
    total = 0
    for pid in children(os.getpid()):
        try:
            with open(f"/proc/{pid}/stat") as f:
                total += int(f.read().rsplit(")", 1)[1].split()[7])
        except (OSError, IndexError, ValueError):
            pass
    return total


async def run(stages, workers: int, templates, count: int) -> tuple[float, float, float]:
    """(main-process CPU s, workers' CPU s, workers' minor page faults) per event over ``count`` events, two
    in flight."""
    from conduit.engine.pool import ChainSpec, open_pool

    spec = ChainSpec.create(stages, RunContext())
    async with open_pool(spec, workers, niceness=0) as pool:
        await pool.warm_up()
        for i in range(4 * max(workers, 1)):  # every worker has mapped its slots and seen the spec
            await pool.analyse(fresh(templates[i % len(templates)], i))
        send, receive = trio.open_memory_channel(0)

        async def analyst() -> None:
            async for event in receive:
                await pool.analyse(event)

        c0, w0, f0 = time.process_time(), workers_cpu(), workers_faults()
        async with trio.open_nursery() as nursery:
            for _ in range(2 * max(workers, 1)):  # the engine keeps 2 per worker in flight
                nursery.start_soon(analyst)
            async with send:
                for i in range(count):
                    await send.send(fresh(templates[i % len(templates)], i))
        c1, w1, f1 = time.process_time(), workers_cpu(), workers_faults()
    return (c1 - c0) / count, (w1 - w0) / count, (f1 - f0) / count


def message_sizes(templates) -> str:
    """What one event of the full chain costs to pickle each way: as trio-parallel pickles objects
    (cloudpickle) and as the pool sends them (:func:`conduit.engine.messages.pack`); bytes, µs of thread CPU."""
    import cloudpickle
    from conduit.engine.messages import pack, unpack
    from conduit.engine.pool import ChainSpec, _Chain, _without_traces
    from conduit.engine.shared_traces import SlotRef

    spec = ChainSpec.create(chain("full"), RunContext())
    built = _Chain(spec)
    built.warm_up()
    event = fresh(templates[0], 0)
    result = built.run(fresh(templates[0], 0))
    sent = (_without_traces(event), SlotRef("conduit-1-0", event.traces.shape, event.traces.dtype.str))

    def cost(function, repeats: int = 500) -> float:
        t0 = time.thread_time()
        for _ in range(repeats):
            function()
        return (time.thread_time() - t0) / repeats * 1e6

    out = []
    for what, obj in (("event (traces left out) + slot", sent), ("chain result", result)):
        old = cloudpickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
        new = pack(obj)
        out.append(f"{what}: cloudpickle {len(old):,} bytes, dumps {cost(lambda: cloudpickle.dumps(obj, protocol=5)):.1f} "
                   f"+ loads {cost(lambda: pickle.loads(old)):.1f} µs; pack {len(new):,} bytes, pack "
                   f"{cost(lambda: pack(obj)):.1f} + unpack {cost(lambda: unpack(new)):.1f} µs")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--chain", nargs="+", choices=("none", "full"), default=["none", "full"])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--reuse", action="store_true", help="no new trace matrix per event (warm caches)")
    args = parser.parse_args()
    global REUSE
    REUSE = args.reuse
    sys.setrecursionlimit(10000)
    templates = make_events(20)
    print(f"machine: {machine()}; load average {os.getloadavg()[0]:.2f}")
    print(f"{args.events} events of the default mix (20 simulated, cycled, "
          f"{'the same matrices' if REUSE else 'a new trace matrix each'}), two in flight per worker; CPU ms per "
          "event (user + system); code: " + os.path.dirname(os.path.dirname(sys.modules['conduit'].__file__)))
    print()
    print("| chain | set-up | main process | workers | total | workers' minor faults |")
    print("|---|---|---|---|---|---|")
    for name in args.chain:
        for workers in (0, args.workers):
            main_cpu, worker_cpu, faults = trio.run(run, chain(name), workers, templates, args.events)
            setup = "in-process (workers = 0)" if workers == 0 else f"{workers} worker processes"
            print(f"| {name} | {setup} | {1e3 * main_cpu:.3f} | {1e3 * worker_cpu:.3f} | "
                  f"{1e3 * (main_cpu + worker_cpu):.3f} | {faults:.1f} |")
    print()
    print(message_sizes(templates))
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
