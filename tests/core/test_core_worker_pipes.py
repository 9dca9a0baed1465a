"""The workers' pipe framing (a 4-byte length, the bytes): what one side writes, the other reads back whole.

The worker reads its jobs from the pipe's descriptor and writes its answers with one ``writev``
(:func:`conduit.engine.workers.worker_loop`); the main process reads answers without blocking. Both cut the
byte stream with the same two functions. Real pipes, real processes' wire format
(:class:`multiprocessing.connection.Connection`'s).
"""

from __future__ import annotations

import multiprocessing
import os
import threading

from conduit.engine.workers import _HEADER, _missing, _take_message, _write_all


def test_messages_split_at_any_byte_come_back_whole_and_in_order():
    messages = [b"", b"a", b"job" * 100, bytes(range(256)) * 50]
    stream = b"".join(_HEADER.pack(len(m)) + m for m in messages)
    for step in (1, 3, 7, 4096):
        buffer = bytearray()
        got = []
        for start in range(0, len(stream), step):
            buffer += stream[start:start + step]
            while (message := _take_message(buffer)) is not None:
                got.append(message)
            assert _missing(buffer) >= 1 or not buffer
        assert got == messages
        assert not buffer


def test_missing_counts_the_header_then_the_body():
    assert _missing(bytearray()) == 4
    assert _missing(bytearray(b"\x00\x00")) == 2
    assert _missing(bytearray(_HEADER.pack(10) + b"abc")) == 7


def test_an_answer_larger_than_the_pipe_reaches_a_multiprocessing_reader_whole():
    """``_write_all`` on a real pipe, 3 answers of 1 MB (the pipe holds 64 kB): Connection.recv_bytes, what
    the worker's answers were read with before, reads each whole."""
    reader, writer = multiprocessing.Pipe(duplex=False)
    answers = [os.urandom(1 << 20) for _ in range(3)]
    got = []
    thread = threading.Thread(target=lambda: got.extend(reader.recv_bytes() for _ in answers))
    thread.start()
    for answer in answers:
        _write_all(writer.fileno(), (_HEADER.pack(len(answer)), answer))
    thread.join(30)
    assert got == answers
    reader.close()
    writer.close()


def test_jobs_sent_by_a_multiprocessing_writer_are_cut_whole_from_raw_reads():
    reader, writer = multiprocessing.Pipe(duplex=False)
    jobs = [b"x" * n for n in (0, 1, 700, 70_000)]
    thread = threading.Thread(target=lambda: [writer.send_bytes(job) for job in jobs])
    thread.start()
    buffer = bytearray()
    got = []
    while len(got) < len(jobs):
        while (job := _take_message(buffer)) is None:
            buffer += os.read(reader.fileno(), max(1 << 16, _missing(buffer)))
        got.append(job)
    thread.join(30)
    assert got == jobs
    reader.close()
    writer.close()
