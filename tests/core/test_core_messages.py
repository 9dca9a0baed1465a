"""What goes between the main process and the workers (conduit.engine.messages) comes back equal, array by array."""

from __future__ import annotations

import dataclasses
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from conduit.artifacts import ESTIMATE_DTYPE, KINEMATICS_DTYPE, Clusters, empty_estimates
from conduit.engine.messages import KNOWN_DTYPES, pack, unpack
from conduit.engine.pool import ChainResult, StageFailure
from conduit.event import Event


def same_array(a: np.ndarray, b: np.ndarray) -> bool:
    """Same type, dtype, shape and bytes (objects: equal elements)."""
    if not (type(a) is type(b) and a.dtype == b.dtype and a.shape == b.shape):
        return False
    if a.dtype.hasobject:
        return a.tolist() == b.tolist()
    return a.tobytes(order="A") == b.tobytes(order="A")


ARRAYS = {
    "float64 cloud": np.random.default_rng(1).normal(size=(186, 8)),
    "int32 labels": np.arange(-1, 185, dtype=np.int32),
    "int8 directions": np.array([1, -1, 0], dtype=np.int8),
    "big-endian": np.arange(6, dtype=">f4").reshape(2, 3),
    "empty (0, 8)": np.zeros((0, 8)),
    "0-d": np.array(3.5),
    "bool": np.array([True, False, True]),
    "complex": np.array([1 + 2j, -3j]),
    "datetime": np.array(["2026-12-07T10:00"], dtype="datetime64[ns]"),
    "unicode": np.array(["pad", "cobo"]),
    "estimates (known structured)": np.resize(empty_estimates(3), 3),
    "kinematics (known structured)": np.ones(4, dtype=KINEMATICS_DTYPE),
    "other structured": np.array([(1, 2.5)], dtype=[("a", "<i4"), ("b", "<f8")]),
    "nested structured": np.zeros(2, dtype=[("a", "<i4"), ("v", "<f8", (3,))]),
    "objects": np.array([{"a": 1}, None, "x"], dtype=object),
    "Fortran order": np.asfortranarray(np.arange(12.0).reshape(3, 4)),
    "strided view": np.arange(20.0)[::3],
    "void of size 0": np.zeros(3, dtype="V0"),
}


@pytest.mark.parametrize("name", list(ARRAYS))
def test_arrays_come_back_equal_and_writable(name):
    array = ARRAYS[name]
    back = unpack(pack(array))
    assert same_array(back, array), name
    assert back.flags.writeable
    if array.flags.f_contiguous and not array.flags.c_contiguous:
        assert back.flags.f_contiguous  # layout kept (numpy's own pickling)
    back[...] = back  # writable in fact


def test_read_only_arrays_and_shared_buffers_come_back_as_independent_writable_copies():
    base = np.arange(10.0)
    read_only = base.copy()
    read_only.flags.writeable = False
    pair = unpack(pack({"view": base[2:5], "same": base, "ro": read_only}))
    np.testing.assert_array_equal(pair["view"], base[2:5])
    np.testing.assert_array_equal(pair["ro"], read_only)
    assert pair["ro"].flags.writeable
    pair["same"][0] = 99.0
    assert base[0] == 0.0  # nothing points back into the sender's memory


def test_a_chain_result_with_every_standard_artifact_round_trips():
    estimates = np.zeros(2, dtype=ESTIMATE_DTYPE)
    estimates["vertex_z"] = [12.5, 800.25]
    estimates["direction"] = [1, -1]
    clusters = Clusters(np.array([0, 0, 1, -1], dtype=np.int32), np.array([0, 1], dtype=np.int32),
                        np.array([1, -1], dtype=np.int8))
    result = ChainResult(
        artifacts={"cloud": ARRAYS["float64 cloud"], "clusters": clusters, "estimates": estimates},
        seconds={"pointcloud": 0.001},
        failures=[StageFailure("estimate", "ValueError: x", "Traceback ...")],
        skipped={"kinematics": "needs 'estimates'"},
        empty=["cluster.hdbscan"],
        counts={"estimate": {"too_few_points": 2}},
    )
    back = unpack(pack(result))
    assert isinstance(back, ChainResult)
    assert same_array(back.artifacts["cloud"], result.artifacts["cloud"])
    assert same_array(back.artifacts["estimates"], estimates)
    for field in dataclasses.fields(Clusters):
        assert same_array(getattr(back.artifacts["clusters"], field.name), getattr(clusters, field.name))
    assert (back.seconds, back.failures, back.skipped, back.empty, back.counts) == (
        result.seconds, result.failures, result.skipped, result.empty, result.counts)


def test_the_event_sent_to_a_worker_round_trips():
    event = Event(7, traces=np.zeros((0, 517), dtype=np.int16), timestamp=2**40 + 3, complete=False,
                  missing=((3, 1),), run=12, artifacts={"note": "x", "mask": np.array([True])}, sequence=5)
    back = unpack(pack(event))
    assert back.id == 7 and back.timestamp == 2**40 + 3 and back.missing == ((3, 1),) and back.run == 12
    assert same_array(back.traces, event.traces) and same_array(back.artifacts["mask"], event.artifacts["mask"])


def test_known_dtypes_are_sent_as_an_index_not_spelled_out():
    estimates = np.zeros(3, dtype=ESTIMATE_DTYPE)
    assert ESTIMATE_DTYPE in KNOWN_DTYPES
    # numpy's pickle names every field; the compact form names none of them
    assert b"vertex_z" in pickle.dumps(estimates, protocol=5)
    assert b"vertex_z" not in pack(estimates)
    assert len(pack(estimates)) < len(pickle.dumps(estimates, protocol=5)) // 2


def test_a_class_defined_in_a_script_travels_by_value(tmp_path):
    """Plain pickle cannot send a class defined in __main__ to another process; pack falls back to cloudpickle."""
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent("""
        import sys
        import numpy as np
        from conduit.engine.messages import pack

        class Track:
            def __init__(self, points):
                self.points = points

        sys.stdout.buffer.write(pack({"track": Track(np.arange(3.0))}))
    """))
    data = subprocess.run([sys.executable, str(script)], capture_output=True, check=True).stdout
    back = unpack(data)  # another process, which has no __main__.Track
    np.testing.assert_array_equal(back["track"].points, [0.0, 1.0, 2.0])
    assert type(back["track"]).__name__ == "Track"
