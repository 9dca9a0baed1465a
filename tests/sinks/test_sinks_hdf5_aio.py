"""The hdf5 writer's direct writes by Linux AIO (conduit_stages.hdf5_sink.aio): bytes, order of tickets, errors."""

from __future__ import annotations

import errno
import mmap
import os

import numpy as np
import pytest

from conduit_stages.hdf5_sink import aio, rawio

BLOCK = rawio.BLOCK

def _available() -> bool:
    queue = aio.make_queue()
    if queue is None:
        return False
    queue.close()
    return True


pytestmark = pytest.mark.skipif(not _available(), reason="no Linux AIO here")


def _aligned(nbytes: int, fill: int) -> np.ndarray:
    a = np.frombuffer(mmap.mmap(-1, nbytes), dtype=np.uint8)
    a[:] = fill
    return a


def test_several_writes_in_flight_land_where_asked_and_tickets_complete_in_order(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"")
    raw = rawio.RawWriter(path, aio.make_queue())
    sources = [_aligned(4 * BLOCK, k + 1) for k in range(8)]
    for k, a in enumerate(sources):
        raw.write(a, (7 - k) * 4 * BLOCK)  # out of file order
    queue = raw.queue
    assert queue.submitted == 8 if raw.direct else queue.submitted == 0
    queue.wait(queue.submitted)
    assert queue.done(queue.submitted) and queue.completed == queue.submitted
    raw.close()
    queue.close()
    data = np.frombuffer(path.read_bytes(), np.uint8).reshape(8, 4 * BLOCK)
    assert [int(row[0]) for row in data] == [8 - k for k in range(8)]
    assert all((row == row[0]).all() for row in data)


def test_a_tail_and_an_unaligned_source_are_written_too(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"")
    raw = rawio.RawWriter(path, aio.make_queue())
    data = np.arange(3 * BLOCK + 100, dtype=np.uint8)
    unaligned = np.frombuffer(mmap.mmap(-1, 4 * BLOCK), np.uint8)[1:len(data) + 1]
    unaligned[:] = data[::-1]
    raw.write(data, 0)
    raw.write(unaligned, 4 * BLOCK)
    raw.queue.wait(raw.queue.submitted)
    raw.close()
    raw.queue.close()
    got = np.frombuffer(path.read_bytes(), np.uint8)
    assert (got[:len(data)] == data).all()
    assert (got[4 * BLOCK:4 * BLOCK + len(data)] == data[::-1]).all()


def test_a_refused_write_is_redone_by_ordinary_means_and_a_failed_one_raised_once(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"")
    queue = aio.make_queue()
    src = _aligned(BLOCK, 7)
    address = src.ctypes.data
    fd = os.open(path, os.O_WRONLY)
    redone = []
    # Ticket 1: an unaligned offset with O_DIRECT is refused (EINVAL): redone.
    direct = os.open(path, os.O_WRONLY | os.O_DIRECT)
    queue.write(direct, address, BLOCK, 1, src, lambda written: redone.append(written) or os.pwrite(fd, src, 1))
    # Ticket 2: a descriptor that cannot be written: its error.
    ro = os.open(path, os.O_RDONLY)
    queue.write(ro, address, BLOCK, 0, src, lambda written: None)
    # Ticket 3: fine.
    queue.write(direct, address, BLOCK, 2 * BLOCK, src, lambda written: None)
    with pytest.raises(OSError) as err:
        queue.wait(3)
    assert err.value.errno == errno.EBADF
    assert queue.first_failed == 2 and queue.completed == 3
    queue.wait(3)  # told once
    assert redone == [0]
    for d in (fd, direct, ro):
        os.close(d)
    queue.close()
    got = path.read_bytes()
    assert got[1:1 + BLOCK] == bytes(src) and got[2 * BLOCK:3 * BLOCK] == bytes(src)
