"""Fuzzing the frame parser and the DataExporter TCP framing: no crash, no unbounded allocation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conduit.get.exporter_client import Link, ProtocolError, receive_frames
from conduit.get.frames import FrameError, check_frame, decode_frame

REAL_FRAME = (Path(__file__).parent.parent / "data" / "partial_readout_frame.graw").read_bytes()
MAX_FRAME = 600_000


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    cuts=st.integers(min_value=0, max_value=len(REAL_FRAME)),
    flips=st.lists(st.tuples(st.integers(0, len(REAL_FRAME) - 1), st.integers(0, 255)), max_size=12),
)
def test_mutated_real_frames_are_rejected_or_decoded_within_bounds(cuts, flips):
    data = bytearray(REAL_FRAME[:cuts] if cuts < 300 else REAL_FRAME)
    for position, value in flips:
        if position < len(data):
            data[position] = value
    data = bytes(data)
    try:
        info = check_frame(data, source="fuzz")
    except FrameError as err:
        assert str(err).startswith("fuzz @ byte 0: ") and "\n" not in str(err)
        return
    assert info.frame_bytes <= len(data)
    decoded = decode_frame(data)
    # Whatever came out addresses real channels and buckets only.
    for name in ("aget", "channel", "bucket"):
        if hasattr(decoded, name):
            values = np.asarray(getattr(decoded, name))
            limit = {"aget": 3, "channel": 67, "bucket": 511}[name]
            assert values.size == 0 or (values.min() >= 0 and values.max() <= limit)


def _run_stream(chunks: list[bytes]) -> tuple[list[int], str | None]:
    """Send ``chunks`` over a real socket pair into receive_frames; return frame lengths seen and the error."""
    lengths: list[int] = []
    error: list[str] = []

    async def main():
        a, b = trio.socket.socketpair()
        stream = trio.SocketStream(a)
        link = Link(cobo=0, host="fuzz", port=0)

        def on_frame(buffer, offset, length):
            assert length <= MAX_FRAME  # never asked to handle more than the limit
            assert offset + length <= len(buffer)
            lengths.append(length)
            return []

        async def emit(item):
            raise AssertionError("on_frame returned nothing to emit")

        async def sender():
            try:
                for chunk in chunks:
                    await b.send(chunk)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the receiver dropped the connection after a protocol error, as it should
            b.close()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(sender)
            try:
                await receive_frames(stream, link, max_frame_bytes=MAX_FRAME, on_frame=on_frame, emit=emit)
            except ProtocolError as err:
                error.append(str(err))
            a.close()

    trio.run(main)
    return lengths, error[0] if error else None


def _message(frame: bytes) -> bytes:
    return len(frame).to_bytes(8, "little") + frame


SPLITS = st.one_of(st.integers(500, 40000), st.sampled_from([7, 61, 256, 4096]))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    garbage=st.binary(min_size=0, max_size=2048),
    prefix=st.one_of(st.integers(0, 2**64 - 1), st.sampled_from([2**63, 10**12, MAX_FRAME + 1, 35072, 0])),
    split=SPLITS,
)
def test_tcp_framing_survives_random_bytes_and_lengths(garbage, prefix, split):
    payload = _message(REAL_FRAME) + prefix.to_bytes(8, "little") + garbage
    chunks = [payload[i:i + split] for i in range(0, len(payload), split)]
    lengths, error = _run_stream(chunks)
    # The good frame in front always gets through, whatever follows it.
    assert lengths[:1] == [len(REAL_FRAME)]
    if prefix > MAX_FRAME:
        assert error is not None and "exceeds max_frame_bytes" in error
    if error is not None:
        assert "\n" not in error


@settings(max_examples=40, deadline=None)
@given(split=SPLITS, repeats=st.integers(1, 4))
def test_tcp_framing_reassembles_frames_split_anywhere(split, repeats):
    payload = b"".join(_message(REAL_FRAME) for _ in range(repeats)) + (0).to_bytes(8, "little")
    chunks = [payload[i:i + split] for i in range(0, len(payload), split)]
    lengths, error = _run_stream(chunks)
    assert error is None
    assert lengths == [len(REAL_FRAME)] * repeats
