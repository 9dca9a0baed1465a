"""Analysis workers keep the memory the chain frees for the next event (glibc's heap not trimmed).

Measured in a fresh interpreter each (the allocator's state is per process): the minor page faults of
allocating, touching and freeing arrays of 1, 2, 4, 8 and 16 MiB, the same sequence twice (as a worker
allocates about the same arrays event after event). With glibc's defaults the second pass faults its pages
in again (blocks given back to the system by ``munmap`` or by trimming the heap); after
:func:`conduit.engine.workers.keep_heap` it reuses the first pass's pages.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

SCRIPT = """
import resource, sys
import numpy as np
from conduit.engine.workers import keep_heap

if sys.argv[1] == "keep" and not keep_heap():
    print("unsupported")
    raise SystemExit
faults = []
for _ in range(3):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for mib in (1, 2, 4, 8, 16):
        block = np.empty(mib << 20, dtype=np.uint8)
        block[::4096] = 1  # touch every page
        del block
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(*faults)
"""


def faults(mode: str) -> list[int]:
    """Minor faults of each of three passes over the sequence, in a fresh interpreter."""
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, check=True).stdout
    if out.strip() == "unsupported":
        pytest.skip("not glibc: no mallopt")
    return [int(n) for n in out.split()]


def test_a_worker_reuses_freed_memory_instead_of_faulting_fresh_pages():
    default, kept = faults("default"), faults("keep")
    # both fault the pages in on the first pass (31 MiB touched: at least a few hundred faults, however
    # large the kernel's folios)
    assert default[0] > 300 and kept[0] > 300, (default, kept)
    # glibc's default gives blocks back and faults them in again on the second pass
    assert default[1] > 300, default
    # kept: the next passes reuse the first pass's pages
    assert kept[1] < 30 and kept[2] < 30, kept
