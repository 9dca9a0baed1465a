"""Helpers shared by the benchmark scripts."""

from __future__ import annotations

import os
import platform


def machine() -> str:
    """CPU model, visible CPUs and Python version: every recorded figure names its machine."""
    model = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} CPUs visible, Python {platform.python_version()}"


#: The reference analysis chain, as [[stage]] tables for the pipeline-running benchmarks.
ANALYSIS_STAGES = """
[[stage]]
use = "pointcloud"

[[stage]]
use = "cluster.hdbscan"

[[stage]]
use = "estimate"

[[stage]]
use = "histogram"
"""
