"""CPU-time samples of a ``conduit run`` process, for `benchmarks/cpu_samples.py` (nothing here is a test).

Put this directory first on ``PYTHONPATH`` and set ``CONDUIT_CPU_SAMPLES=PATH``: a ``conduit run`` started
with that environment (e.g. by ``end_to_end.py online``, which passes its environment on) arms
``ITIMER_PROF`` (the process's CPU time, every thread: 1 sample per 2 ms of CPU) and, once ``PATH.go``
exists and while ``PATH.stop`` does not, counts the Python stack of the main thread at each sample. At exit
it writes ``PATH.PID`` (one ``frame;frame;... count`` line per stack, root first) and ``PATH.PID.gc`` (the
cyclic GC's collections and thread CPU per generation meanwhile).

Unlike a wall-clock sampler (py-spy), whose samples on a loaded machine also fall where the thread waits for a
CPU, every sample here is 2 ms of CPU the process used. Two biases: CPU used by other threads (the sinks'
threads) is counted at the main thread's current line (often trio's ``epoll_wait`` when it is idle), and a
sample taken during a C call (a numba kernel, a system call) is counted at the Python line that made it.
"""

import os
import sys

_PATH = os.environ.get("CONDUIT_CPU_SAMPLES")
_ARGV = " ".join(sys.argv)
if _PATH and "multiprocessing" not in _ARGV and os.environ.get("CONDUIT_CPU_SAMPLES_PID") != str(os.getpid()):
    os.environ["CONDUIT_CPU_SAMPLES_PID"] = str(os.getpid())  # once per process
    import atexit
    import collections
    import gc
    import signal
    import time

    _counts: collections.Counter = collections.Counter()
    _state = {"on": False}
    _gc = {"n": [0, 0, 0], "cpu": [0.0, 0.0, 0.0], "t0": 0.0}

    def _sampling() -> bool:
        if not _state["on"] and os.path.exists(_PATH + ".go"):
            _state["on"] = True
        return _state["on"] and not os.path.exists(_PATH + ".stop")

    def _on_gc(phase, info) -> None:
        if phase == "start":
            _gc["t0"] = time.thread_time()
        elif _state["on"]:
            _gc["n"][info["generation"]] += 1
            _gc["cpu"][info["generation"]] += time.thread_time() - _gc["t0"]

    def _sample(signum, frame) -> None:
        if not _sampling():
            return
        stack = []
        while frame is not None and len(stack) < 80:
            code = frame.f_code
            stack.append(f"{code.co_name} ({os.path.basename(code.co_filename)}:{frame.f_lineno})")
            frame = frame.f_back
        _counts[";".join(reversed(stack))] += 1

    def _write() -> None:
        signal.setitimer(signal.ITIMER_PROF, 0, 0)
        with open(f"{_PATH}.{os.getpid()}", "w") as out:
            for stack, n in _counts.items():
                out.write(f"{stack} {n}\n")
        with open(f"{_PATH}.{os.getpid()}.gc", "w") as out:
            out.write(f"collections per generation {_gc['n']}, thread CPU s {_gc['cpu']}\n")

    if "conduit" in sys.argv[0] and "run" in sys.argv[1:3]:
        gc.callbacks.append(_on_gc)
        signal.signal(signal.SIGPROF, _sample)
        signal.setitimer(signal.ITIMER_PROF, 0.002, 0.002)
        atexit.register(_write)
