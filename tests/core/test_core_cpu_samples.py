"""benchmarks/cpu_samples.py: CPU-time samples sorted by where the CPU went (a benchmark tool; its sorting tested)."""

from __future__ import annotations

import sys
from pathlib import Path


def _load_cpu_samples():
    """The benchmark module, with benchmarks/ on sys.path only while it loads (see test_core_trace_seconds.py)."""
    benchmarks = str(Path(__file__).resolve().parents[2] / "benchmarks")
    sys.path.insert(0, benchmarks)
    try:
        import cpu_samples
    finally:
        sys.path.remove(benchmarks)
    return cpu_samples


cpu_samples = _load_cpu_samples()


def test_each_stack_goes_to_the_category_of_its_innermost_known_frame(tmp_path):
    root = "<module> (conduit:6);run (_run.py:2532);unrolled_run (_run.py:2866)"
    lines = [
        # decoding inside the builder inside the frame handler: the decode kernel, innermost
        f"{root};receive_frames (exporter_client.py:189);on_frames (exporter.py:324);_file (builder.py:389);"
        "decode_into (decoder.py:75) 5",
        # the builder's own Python (its innermost known frame)
        f"{root};receive_frames (exporter_client.py:189);on_frames (exporter.py:324);_file (builder.py:356) 3",
        # a timer's expiry under the rest alarm's task: trio's timers, not the rest's own Python
        f"{root};run (exporter_client.py:294);sleep_until (_timeouts.py:91);__exit__ (_run.py:714) 2",
        f"{root};get_events (_io_epoll.py:243) 4",
        "something (elsewhere.py:1) 1",
    ]
    path = tmp_path / "samples"
    path.write_text("\n".join(lines) + "\n")
    counts, innermost, total = cpu_samples.categorise(str(path))
    assert total == 15
    assert counts["decode kernel (numba)"] == 5
    assert counts["builder: _file, sequencer, settle/expire"] == 3
    assert counts["trio cancel scopes and timers (expiry, Cancelled)"] == 2
    assert sum(n for name, n in counts.items() if name.startswith("epoll_wait")) == 4
    assert counts["other"] == 1
    assert innermost["decode_into (decoder.py:75)"] == 5
