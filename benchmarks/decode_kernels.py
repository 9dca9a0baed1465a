"""Micro benchmark of the partial-readout decode kernel: CPU ns per item, current against the reference.

The reference is the kernel as it was before the fourth round of issue 17, kept in
``tests/reference_decode_kernels.py`` (the differential test checks both give the same bytes).
Two inputs:

* ``real``: the real 2017 GRAW frame (8,704 items, 17 channels of which 16 FPN), decoded
  ``--real-reps`` times per repetition;
* ``default mix``: the frames of ``--events`` events of the online benchmarks' default mix
  (700 signal channels over the 40 AsAds plus their FPN channels, 512 buckets each: ~686,000
  items per event), the decoder's own call (``FrameDecoder.decode_into`` into a reused output,
  Python wrapper and numba dispatch included), in the CoBo's item order as the simulator writes
  it (docs/formats.md "The order of the items": the items of one readout clock from AGET 0);
* ``mix, turning merger``: the same frames with the items of each clock starting at an AGET that
  drifts as in the real frame (one step per 1,200 clocks, every 7th clock one further);
* ``mix, round-robin``: the same frames in the order the simulator wrote before (the four AGET
  streams interleaved item by item), for comparison with earlier rounds.

The two kernels alternate, repetition by repetition, in one process pinned to one CPU; each
figure is CPU time (``time.thread_time``) per item, median and best of ``--reps``.

    python benchmarks/decode_kernels.py --reps 21
    python benchmarks/decode_kernels.py --previous /tmp/clone/core/conduit/get/_kernels.py   # A/B with a commit
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("NUMBA_CACHE_DIR", str(ROOT / ".numba-cache"))
sys.path.insert(0, str(ROOT / "tests"))

import reference_decode_kernels as reference  # noqa: E402
from _common import machine  # noqa: E402
from conduit.get import _kernels as current  # noqa: E402
from conduit.get.decoder import ROWS_NEEDED, FrameDecoder  # noqa: E402
from conduit.get.frames import PARTIAL, check_frame, decode_frame, decode_items, encode_frame  # noqa: E402
from conduit.get.maps import load_electronics_map  # noqa: E402
from ingest import make_events  # noqa: E402

REAL_FRAME = ROOT / "tests" / "data" / "partial_readout_frame.graw"


def load_kernels(path: str):
    """The kernels module at ``path`` (e.g. ``_kernels.py`` of a clone at an earlier commit), for an A/B."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("previous_decode_kernels", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # numba's cache looks the module up by name
    spec.loader.exec_module(module)
    return module


def reordered(frame: bytes, how: str) -> bytes:
    """``frame`` (partial readout, all buckets) with its items in another order: ``turning`` (the merger's first
    AGET drifting over the frame) or ``round-robin`` (the four AGET streams interleaved item by item)."""
    d = decode_frame(frame)
    if how == "turning":
        clock = np.arange(512 * 70)
        return encode_frame(cobo=d.header.cobo, asad=d.header.asad, event_id=d.header.event_id,
                            timestamp=d.header.event_time, channels=d.channels, samples=d.traces,
                            first_aget=(clock // 1200 + (clock % 7 == 0)) % 4)
    info = check_frame(frame)
    items = np.frombuffer(frame, ">u4", info.n_items, info.data_offset)
    aget = decode_items(frame, info)[0]
    rank = np.empty_like(aget)
    for a in range(4):  # the k-th item of each AGET stream, then AGET by AGET
        rank[aget == a] = np.arange(np.count_nonzero(aget == a))
    body = items[np.lexsort((aget, rank))].tobytes()
    return frame[:info.data_offset] + body + frame[info.data_offset + len(body):]


def decoders(emap, previous: str | None = None) -> dict[str, FrameDecoder]:
    """One decoder per kernel set (the reference's, and ``previous``'s when given, swapped in), warmed up."""
    out = {}
    sets = [("reference", reference)] + ([("previous", load_kernels(previous))] if previous else [])
    for name, module in sets + [("current", current)]:
        dec = FrameDecoder(emap)
        dec.warm_up()
        dec._kernels = {PARTIAL: module.decode_partial, 2: module.decode_full}
        dec.warm_up()
        out[name] = dec
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=4, help="default-mix events decoded per repetition")
    ap.add_argument("--real-reps", type=int, default=200, help="decodes of the real frame per repetition")
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--cpu", type=int, default=(os.cpu_count() or 1) - 1, help="pin to this CPU; -1: do not pin")
    ap.add_argument("--previous", help="also time the kernels of this _kernels.py (e.g. of a clone at the commit "
                                       "before a change)")
    args = ap.parse_args(argv)
    if args.cpu >= 0 and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})
    emap = load_electronics_map()
    decs = decoders(emap, args.previous)
    out = np.empty((ROWS_NEEDED, 517), np.int16)

    real = np.frombuffer(REAL_FRAME.read_bytes(), np.uint8)
    real_info = check_frame(real)
    _, events = make_events(args.events, 700)
    mixes = {"default mix": [f for ev in events for f in ev.values()]}
    mixes["mix, turning merger"] = [reordered(f, "turning") for f in mixes["default mix"]]
    mixes["mix, round-robin"] = [reordered(f, "round-robin") for f in mixes["default mix"]]
    mixes = {k: [(np.frombuffer(f, np.uint8), check_frame(f)) for f in v] for k, v in mixes.items()}
    mix_items = sum(i.n_items for _, i in mixes["default mix"])

    def run_real(dec: FrameDecoder) -> None:
        for _ in range(args.real_reps):
            dec.decode_into(real, real_info, out)

    def run_mix(frames):
        def run(dec: FrameDecoder) -> None:
            for f, i in frames:
                dec.decode_into(f, i, out)
        return run

    cases = (("real frame", run_real, args.real_reps * real_info.n_items),
             *((name, run_mix(frames), mix_items) for name, frames in mixes.items()))
    times: dict[tuple[str, str], list[float]] = {(c, k): [] for c, _, _ in cases for k in decs}
    load0 = os.getloadavg()
    for _ in range(args.reps):
        for case, run, n_items in cases:
            for name, dec in decs.items():
                t0 = time.thread_time()
                run(dec)
                times[case, name].append((time.thread_time() - t0) / n_items * 1e9)
    load1 = os.getloadavg()
    print(f"machine: {machine()}; pinned to CPU {args.cpu}; load average {load0[0]:.1f} -> {load1[0]:.1f}")
    print(f"default mix: {mix_items / args.events:,.0f} items per event\n")
    print("| input | kernel | ns/item median | best | ms per default event (median) |")
    print("|---|---|---|---|---|")
    for case, _, _ in cases:
        for name in decs:
            t = times[case, name]
            print(f"| {case} | {name} | {statistics.median(t):.3f} | {min(t):.3f} | "
                  f"{statistics.median(t) * mix_items / args.events / 1e6:.3f} |")
    # The kernels ran one after the other in each repetition: the ratio within a repetition sees the same load.
    others = [k for k in decs if k != "current"]
    print("\ncurrent / other, median of the ratios within a repetition (under 1: current is faster)\n")
    print("| input | " + " | ".join(others) + " |")
    print("|---|" + "---|" * len(others))
    for case, _, _ in cases:
        ratios = [statistics.median(c / o for c, o in zip(times[case, "current"], times[case, k])) for k in others]
        print(f"| {case} | " + " | ".join(f"{r:.3f}" for r in ratios) + " |")


if __name__ == "__main__":
    main()
