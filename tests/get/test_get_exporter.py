"""The ``exporter`` source over real TCP on 127.0.0.1 against eleven in-process DataExporter servers."""

from __future__ import annotations

import io
import logging
import socket
from contextlib import asynccontextmanager

import numpy as np
import pytest
import trio
import trio.testing

from conduit.config.pipeline import load_pipeline
from conduit.engine.runner import Engine
from conduit.get.dataexporter import DataExporterServer, length_prefix
from conduit.get.frames import encode_event_frames
from conduit.get.hosts import parse_hosts

FPN = np.full((4, 4, 512), 260)


def canonical(t):
    return t[np.lexsort((t[:, 3], t[:, 2], t[:, 1], t[:, 0]))]


class Harness:
    """Eleven servers, the engine running the exporter source, and what it delivered."""

    def __init__(self, servers, emap, rng):
        self.servers = servers
        self.emap = emap
        self.rng = rng
        self.events = []
        self.truth = {}
        self.sent = {}
        self._changed = trio.Event()
        self.engine: Engine | None = None
        self.summary = None
        self.finished = trio.Event()

    def on_event(self, event):
        self.events.append(event)
        self._changed.set()
        self._changed = trio.Event()

    async def wait_events(self, n):
        while len(self.events) < n:
            await self._changed.wait()

    @property
    def source(self):
        return self.engine.source

    async def send_event(self, event_id, *, skip_cobos=(), n_pads=40):
        pads = self.rng.choice(self.emap.n_pads, n_pads, replace=False)
        traces = np.zeros((n_pads, 517), np.int16)
        traces[:, :4] = self.emap.hardware_of(pads)
        traces[:, 4] = pads
        traces[:, 5:] = self.rng.integers(0, 4096, (n_pads, 512))
        self.truth[event_id] = canonical(traces)
        frames = encode_event_frames(traces, event_id, timestamp=10 * event_id, timestamp_other=10 * event_id + 1,
                                     fpn=FPN, asads=self.emap.asads)
        self.sent[event_id] = frames
        for (cobo, _asad), frame in frames.items():
            if cobo not in skip_cobos:
                await self.servers[cobo].send_frame(frame)

    def check_traces(self, event, lost_cobos=()):
        truth = self.truth[event.id]
        keep = ~np.isin(truth[:, 0], list(lost_cobos))
        assert np.array_equal(canonical(event.traces), truth[keep])


@asynccontextmanager
async def exporter_run(tmp_path, emap, *, extra="", n_servers=11, seed=0, timeout=0.4, read_pause=0.0):
    # read_pause = 0 by default: these tests wait with wait_all_tasks_blocked for "the receivers read everything",
    # and a receiver pausing between reads counts as blocked (the DAQ-fault tests run with the default pause).
    servers = [DataExporterServer() for _ in range(n_servers)]
    async with trio.open_nursery() as nursery:
        for s in servers:
            await nursery.start(s.serve)
        hosts = ", ".join(f'"{s.address}"' for s in servers)
        text = (f'[source]\nkind = "exporter"\nhosts = [{hosts}]\nreconnect_min = 0.02\nreconnect_max = 0.2\n'
                f'timeout = {timeout}\nread_pause = {read_pause}\n{extra}\n[engine]\nworkers = 0\n')
        pipeline = load_pipeline(tmp_path / "live.toml", text=text)
        h = Harness(servers, emap, np.random.default_rng(seed))
        h.engine = Engine(pipeline, handle_signals=False, on_event=h.on_event, status_stream=io.StringIO())

        async def run_engine():
            h.summary = await h.engine.run()
            h.finished.set()

        nursery.start_soon(run_engine)
        with trio.fail_after(20):
            for s in servers:
                await s.wait_clients(1)
            await h.source.wait_connected()
        yield h
        with trio.fail_after(20):
            h.engine.request_stop()
            await h.finished.wait()
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("read_pause", [0.0, 0.005, 0.02])
async def test_eleven_dataexporters_complete_events(tmp_path, emap, read_pause):
    """Every frame read and every event complete, also when the receivers pause between reads (the default
    0.005 s, and the longest allowed, 0.02 s: several frames per read)."""
    async with exporter_run(tmp_path, emap, read_pause=read_pause) as h:
        with trio.fail_after(20):
            for evt in range(12):
                await h.send_event(evt)
            await h.wait_events(12)
        assert h.source.status() == {f"cobo{c}": "connected" for c in range(11)}
    assert sorted(e.id for e in h.events) == list(range(12))
    for ev in h.events:
        assert ev.complete and ev.missing == ()
        assert (ev.timestamp, ev.timestamp_other) == (10 * ev.id, 10 * ev.id + 1)
        h.check_traces(ev)
    c = h.summary.source_counters
    per_cobo = {c_: sum(1 for cc, _ in h.emap.asads if cc == c_) for c_ in range(11)}
    assert all(c[f"cobo{cobo}_frames"] == 12 * n for cobo, n in per_cobo.items())
    assert c["frames"] == 12 * 40 and c["complete_events"] == 12 and c["protocol_errors"] == 0
    stats = [s.stats() for s in h.servers]
    assert all(c[f"cobo{i}_bytes"] == st.bytes_sent for i, st in enumerate(stats))
    assert h.summary.received == 12 and h.summary.dropped == 0


async def test_a_dataexporter_restarts(tmp_path, emap, caplog):
    caplog.set_level(logging.INFO, logger="conduit")
    async with exporter_run(tmp_path, emap, seed=1) as h:
        with trio.fail_after(20):
            for evt in range(5):
                await h.send_event(evt)
            await h.wait_events(5)
            await h.servers[3].stop()  # CoBo 3's DataExporter goes away
            for evt in range(5, 10):
                await h.send_event(evt, skip_cobos=(3,))
            await h.wait_events(10)  # the others' data is not held hostage
            async with trio.open_nursery() as restart:
                await restart.start(h.servers[3].serve)  # ... and comes back on the same port
                await h.servers[3].wait_clients(1)
                await h.source.wait_connected()
                for evt in range(10, 15):
                    await h.send_event(evt)
                await h.wait_events(15)
                await h.servers[3].stop()
    by_id = {e.id: e for e in h.events}
    assert sorted(by_id) == list(range(15))
    cobo3 = tuple(p for p in emap.asads if p[0] == 3)
    for evt, ev in by_id.items():
        if 5 <= evt < 10:
            assert not ev.complete and ev.missing == cobo3
            h.check_traces(ev, lost_cobos=(3,))  # nothing lost from the other CoBos
        else:
            assert ev.complete
            h.check_traces(ev)
    c = h.summary.source_counters
    assert c["cobo3_reconnects"] == 1 and c["reconnects"] == 1
    assert "(cobo 3): the DataExporter closed the connection; reconnecting" in caplog.text
    assert "(cobo 3): reconnected" in caplog.text


async def test_protocol_errors_drop_and_reconnect(tmp_path, emap, caplog):
    async with exporter_run(tmp_path, emap, seed=2) as h:
        s = h.servers
        with trio.fail_after(20):
            await s[5].send_raw(length_prefix(10**12))  # oversize: must not be allocated
            await s[7].send_raw(length_prefix(512) + b"\xff" + bytes(511))  # garbage body
            frame = next(iter(encode_event_frames(np.zeros((0, 517), np.int16), 0, asads=[(9, 0)]).values()))
            await s[9].send_raw(length_prefix(len(frame) + 256) + frame + bytes(256))  # disagrees with size
            await s[2].send_raw(length_prefix(len(frame)) + frame[:100])  # then the exporter dies mid-frame
            await s[2].drain()
            await s[2].disconnect_clients()
            for i in (5, 7, 9, 2):
                await s[i].wait_connections(2)
            await h.source.wait_connected()
            for evt in range(100, 105):
                await h.send_event(evt)
            await h.wait_events(5)
    assert sorted(e.id for e in h.events) == list(range(100, 105))
    assert all(e.complete for e in h.events)
    for e in h.events:
        h.check_traces(e)
    c = h.summary.source_counters
    for i in (5, 7, 9, 2):
        assert c[f"cobo{i}_errors"] == 1 and c[f"cobo{i}_reconnects"] == 1
    assert c["protocol_errors"] == 4 and c["bad_frames"] == 0
    lines = [r.getMessage() for r in caplog.records if "protocol error" in r.getMessage()]
    assert len(lines) == 4 and all("\n" not in line for line in lines)
    text = "\n".join(lines)
    assert f"{s[5].address} (cobo 5): protocol error: length prefix 1000000000000 B exceeds max_frame_bytes" in text
    assert f"{s[7].address} (cobo 7): protocol error: message does not start with a GRAW frame" in text
    assert f"{s[9].address} (cobo 9): protocol error: length prefix {len(frame) + 256} B disagrees" in text
    assert f"{s[2].address} (cobo 2): protocol error: connection closed mid-message" in text


@pytest.mark.parametrize("one_read", [False, True])
async def test_a_stream_that_runs_ahead_pauses(tmp_path, emap, one_read):
    """CoBo 10's DataExporter delivers 40 events before the others send theirs. Without pacing the
    depth limit (4) would cut events 1..35 as incomplete; CoBo 10's stream pauses instead. ``one_read``: its 40
    events come in one message (one read holds many of them): the pace check after every frame stops the stream
    inside that read, not at its end."""
    async with exporter_run(tmp_path, emap, extra="max_depth = 4", timeout=5.0, seed=4) as h:
        with trio.fail_after(30):
            await h.send_event(0, n_pads=5)
            await h.wait_events(1)
            for evt in range(1, 41):  # CoBo 10 only (or, for one read, nobody yet) ...
                await h.send_event(evt, n_pads=5, skip_cobos=range(11) if one_read else range(10))
            if one_read:
                ten = [f for evt in range(1, 41) for (c, _), f in sorted(h.sent[evt].items()) if c == 10]
                await h.servers[10].send_buffers([b for f in ten for b in (length_prefix(len(f)), f)],
                                                 frames=len(ten))
            await trio.testing.wait_all_tasks_blocked(cushion=0.05)  # ... read as far as it is allowed
            link10 = h.source.links[10]
            assert link10.pauses >= 1 and link10.latest < 10
            for evt in range(1, 41):
                for (cobo, _asad), frame in h.sent[evt].items():
                    if cobo != 10:
                        await h.servers[cobo].send_frame(frame)
            await h.wait_events(41)
    assert sorted(e.id for e in h.events) == list(range(41))
    assert all(e.complete for e in h.events)
    assert h.summary.source_counters["late_frames"] == 0


async def test_time_limit_and_flush_on_stop(tmp_path, emap):
    async with exporter_run(tmp_path, emap, seed=3) as h:
        with trio.fail_after(20):
            await h.send_event(1, skip_cobos=range(5, 11))
            await h.wait_events(1)  # traffic stopped: the time limit lets it out
            await h.send_event(2, skip_cobos=range(2, 11))
            for s in h.servers[:2]:
                await s.drain()
            while h.source.builder.held == 0 and len(h.events) < 2:  # receivers read what was drained
                await trio.testing.wait_all_tasks_blocked(cushion=0.001)
    # Stopping flushed event 2 (held, incomplete) instead of losing it.
    assert [(e.id, e.complete) for e in h.events] == [(1, False), (2, False)]
    assert h.events[0].missing == tuple(p for p in emap.asads if p[0] >= 5)
    assert h.events[1].missing == tuple(p for p in emap.asads if p[0] >= 2)
    h.check_traces(h.events[0], lost_cobos=range(5, 11))
    h.check_traces(h.events[1], lost_cobos=range(2, 11))
    assert h.summary.incomplete == 2


async def test_unreachable_dataexporter(tmp_path, emap, caplog):
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    dead_port = dead.getsockname()[1]
    dead.close()  # nothing listens there now
    server = DataExporterServer()
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        text = (f'[source]\nkind = "exporter"\nhosts = ["{server.address}", "127.0.0.1:{dead_port}"]\n'
                "reconnect_min = 0.02\nreconnect_max = 0.05\nexpected_asads = [[0, 0], [1, 0]]\n"
                "[engine]\nworkers = 0\n")
        pipeline = load_pipeline(tmp_path / "p.toml", text=text)
        seen = []
        got = trio.Event()

        def on_event(ev):
            seen.append(ev)
            got.set()

        engine = Engine(pipeline, handle_signals=False, on_event=on_event, status_stream=io.StringIO())
        done = trio.Event()
        summary = {}

        async def run_engine():
            summary["s"] = await engine.run()
            done.set()

        nursery.start_soon(run_engine)
        with trio.fail_after(20):
            await server.wait_clients(1)
            await engine.source.wait_connected([0])
            while engine.source.links[1].connect_failures < 3:  # backoff keeps retrying
                await trio.testing.wait_all_tasks_blocked(cushion=0.01)
            frames = encode_event_frames(np.zeros((0, 517), np.int16), 7, asads=[(0, 0)])
            await server.send_frame(frames[(0, 0)])
            await got.wait()  # CoBo 1 is down: not waited for
            engine.request_stop()
            await done.wait()
        nursery.cancel_scope.cancel()
    assert [(e.id, e.complete, e.missing) for e in seen] == [(7, False, ((1, 0),))]
    assert caplog.text.count(f"127.0.0.1:{dead_port} (cobo 1): cannot connect") == 1
    assert summary["s"].source_counters["connect_failures"] >= 3


def test_host_specifications():
    assert parse_hosts("192.168.41.60-70") == [(f"192.168.41.{60 + i}", 46491) for i in range(11)]
    assert parse_hosts("127.0.0.1:47001-47011")[-1] == ("127.0.0.1", 47011)
    assert parse_hosts(["daq-1", "daq-2:5000"], 46491) == [("daq-1", 46491), ("daq-2", 5000)]
    for bad, msg in [("1.2.3.4-300", "bad last-octet range"), ("h:0", "port out of range"),
                     ("h:abc", "bad port 'abc'"), ("", "empty host entry")]:
        with pytest.raises(ValueError, match=msg):
            parse_hosts(bad)


def test_exporter_params_are_checked(tmp_path):
    base = '[source]\nkind = "exporter"\n'
    with pytest.raises(Exception, match="source.cobos: 2 CoBo ids for 11 hosts"):
        load_pipeline(tmp_path / "a.toml", text=base + "cobos = [1, 2]\n")
    with pytest.raises(Exception, match=r"source.hosts: 'h:abc': bad port 'abc'"):
        load_pipeline(tmp_path / "b.toml", text=base + 'hosts = "h:abc"\n')
    p = load_pipeline(tmp_path / "c.toml", text=base)
    assert p.source.params.targets()[0] == ("192.168.41.60", 46491)
    assert p.source.params.max_frame_bytes > 278_784


async def test_dataexporter_server_no_replay_and_stats():
    server = DataExporterServer()
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        first = await trio.open_tcp_stream("127.0.0.1", server.port)
        await server.wait_clients(1)
        await server.send_frame(b"A" * 256)
        second = await trio.open_tcp_stream("127.0.0.1", server.port)
        await server.wait_clients(2)
        await server.send_frame(b"B" * 512)
        await server.drain()

        async def read(stream, n):
            data = b""
            while len(data) < n:
                data += await stream.receive_some(n - len(data))
            return data

        assert await read(first, 8 + 256 + 8 + 512) == length_prefix(256) + b"A" * 256 + length_prefix(512) + b"B" * 512
        assert await read(second, 8 + 512) == length_prefix(512) + b"B" * 512  # no replay
        stats = server.stats()
        assert stats.frames_sent == 3 and stats.bytes_sent == 2 * 520 + 264
        assert sorted(c.frames for c in stats.clients) == [1, 2]
        await second.aclose()
        await server._wait_for(lambda: server.n_clients == 1)
        await server.stop()
        assert await first.receive_some() == b""  # stop closes the connections
        nursery.cancel_scope.cancel()


async def test_unread_bytes_of_a_socket_being_closed_is_zero_not_an_error():
    """Another link's pacing asks every socket how much it holds; a stream's aclose() closes the socket and
    yields before the link forgets it (its fileno is then -1): that must read as 0, not end the source with
    "ValueError: file descriptor cannot be a negative integer" (seen when the DAQ closed every connection)."""
    from conduit.get.exporter_client import Link

    left, right = trio.socket.socketpair()
    link = Link(0, "127.0.0.1", 1)
    link.sock = left
    await right.send(b"x" * 1000)
    await trio.testing.wait_all_tasks_blocked()
    assert link.unread_bytes() == 1000
    left.close()
    assert left.fileno() == -1 and link.unread_bytes() == 0
    right.close()


# -- all complete frames of a read in one call -------------------------------------------------------------------


def _small_frames() -> list[bytes]:
    """Three short frames of different sizes (a header-only one, one with 10 buckets of one channel, another empty)."""
    from conduit.get.frames import encode_frame

    one = np.array([[0, 3]])
    ten = np.zeros((1, 512), bool)
    ten[0, :10] = True
    return [encode_frame(cobo=0, asad=a, event_id=7, timestamp=70, channels=ch, samples=np.full((len(ch), 512), 5),
                         buckets=ten[:len(ch)] if len(ch) else None)
            for a, ch in ((0, np.zeros((0, 2), int)), (1, one), (2, np.zeros((0, 2), int)))]


def _messages(frames: list[bytes]) -> bytes:
    """The frames as DataExporter messages, with an empty message (length 0) after the first."""
    out = length_prefix(len(frames[0])) + frames[0] + length_prefix(0)
    return out + b"".join(length_prefix(len(f)) + f for f in frames[1:])


def test_split_messages_at_every_byte_boundary():
    """Whatever part of a message one read brought, the complete frames come out once each, in order, and the
    split resumes where the incomplete one starts."""
    from conduit.get.exporter_client import split_messages

    frames = _small_frames()
    data = _messages(frames)
    assert len({len(f) for f in frames}) == 2 and len(data) > 1000
    for k in range(len(data) + 1):
        spans, start, error = split_messages(data, 0, k, 600_000)
        more, end, error2 = split_messages(data, start, len(data), 600_000)
        assert error is None and error2 is None and end == len(data)
        got = [data[o:o + n] for o, n in zip(spans[::2] + more[::2], spans[1::2] + more[1::2])]
        assert got == frames, k
        assert all(o + n <= k for o, n in zip(spans[::2], spans[1::2]))  # nothing past the bytes read


def test_split_messages_stops_at_a_bad_prefix_after_the_frames_before_it():
    from conduit.get.exporter_client import ProtocolError, split_messages

    frames = _small_frames()
    data = _messages(frames) + length_prefix(10**9) + bytes(20)
    spans, start, error = split_messages(data, 0, len(data), 600_000)
    assert [data[o:o + n] for o, n in zip(spans[::2], spans[1::2])] == frames
    assert isinstance(error, ProtocolError) and "exceeds max_frame_bytes" in str(error)
    assert start == len(_messages(frames))
    # A bad first word is caught as soon as 12 bytes of the message are there, before the frame is complete.
    bad = _messages(frames[:1]) + length_prefix(512) + b"\xff" + bytes(3)
    spans, _, error = split_messages(bad, 0, len(bad), 600_000)
    assert len(spans) == 2 and "does not start with a GRAW frame" in str(error)


async def test_frames_split_across_reads_at_every_byte_boundary_reach_the_handler_once_each_in_order():
    """Over a real socket pair: the messages are sent in two pieces, cut at every byte, each piece read before the
    next is sent; every frame reaches ``on_frames`` whole, once, in order, and a piece holding several complete
    frames hands them on in one call."""
    from conduit.get.exporter_client import Link, receive_frames

    frames = _small_frames()
    data = _messages(frames)
    got: list[bytes] = []
    calls: list[int] = []

    def on_frames(array, spans, i):
        calls.append((len(spans) - i) // 2)
        got.extend(bytes(array[o:o + n]) for o, n in zip(spans[i::2], spans[i + 1::2]))
        return len(spans), [], None

    async def emit(_event):  # pragma: no cover - on_frames builds no events here
        raise AssertionError

    left, right = trio.socket.socketpair()
    link = Link(0, "pair", 0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: receive_frames(trio.SocketStream(left), link, max_frame_bytes=600_000,
                                                  on_frames=on_frames, emit=emit))
        await right.send(data)  # all three in one read: one call
        await trio.testing.wait_all_tasks_blocked()
        assert calls == [3] and got == frames
        for k in range(1, len(data)):
            got.clear()
            await right.send(data[:k])
            await trio.testing.wait_all_tasks_blocked()
            await right.send(data[k:])
            await trio.testing.wait_all_tasks_blocked()
            assert got == frames, k
        right.close()
    assert link.frames == 3 * len(data)


async def test_a_bad_frame_in_the_middle_of_a_read(tmp_path, emap, caplog):
    """CoBo 3's frames of two events come in one message with a frame whose header is broken (consistent length)
    between them: the frames before it are built, it is counted (bad_frames) and named, the connection stays and
    the frames after it are built too. CoBo 4's frames of both events come in one message ending in a broken length
    prefix: they are built (events 0 and 1 complete), then the connection is dropped and re-established."""
    async with exporter_run(tmp_path, emap, seed=7, timeout=5.0) as h:
        s = h.servers
        with trio.fail_after(20):
            for evt in (0, 1):
                await h.send_event(evt, skip_cobos=(3, 4))
            three = [f for evt in (0, 1) for (c, _), f in sorted(h.sent[evt].items()) if c == 3]
            bad = bytearray(three[1])
            bad[8:10] = (0xFFFF).to_bytes(2, "big")  # header size: 65,535 blocks, more than the frame
            batch = three[:2] + [bytes(bad)] + three[2:]
            await s[3].send_buffers([b for f in batch for b in (length_prefix(len(f)), f)], frames=len(batch))
            four = [f for evt in (0, 1) for (c, _), f in sorted(h.sent[evt].items()) if c == 4]
            await s[4].send_raw(b"".join(length_prefix(len(f)) + f for f in four) + length_prefix(10**12))
            await h.wait_events(2)
            await s[4].wait_connections(2)
            await h.source.wait_connected()
            await h.send_event(2)
            await h.wait_events(3)
    assert [(e.id, e.complete) for e in h.events] == [(0, True), (1, True), (2, True)]
    for e in h.events:
        h.check_traces(e)
    c = h.summary.source_counters
    assert c["bad_frames"] == 1 and c["cobo3_errors"] == 0 and c["cobo3_frames"] == 13
    assert c["cobo4_errors"] == 1 and c["protocol_errors"] == 1 and c["late_frames"] == 0
    assert c["frames"] == 121 and c["complete_events"] == 3  # 120 built, 1 bad
    bad_lines = [r.getMessage() for r in caplog.records if "header size 65535 blocks" in r.getMessage()]
    assert len(bad_lines) == 1 and bad_lines[0].startswith(f"bad frame: {s[3].address} (cobo 3) @ byte ")
    assert f"{s[4].address} (cobo 4): protocol error: length prefix 1000000000000 B exceeds" in caplog.text


def test_the_length_prefix_check_of_split_messages_is_check_prefix():
    """split_messages tests the common case of a message's first word in one line and leaves the wording of a bad
    one to _check_prefix: both accept exactly the same (word, length) pairs."""
    from conduit.get.exporter_client import ProtocolError, _check_prefix, split_messages

    rng = np.random.default_rng(3)
    words = [(meta << 24) | size for meta in (0x08, 0x06, 0x04, 0x0C, 0x03, 0x0D, 0x88, 0x48, 0x18, 0x00)
             for size in (1, 2, 3, 255, 0x0FFF)]
    words += [int(w) for w in rng.integers(0, 2**32, 200)]
    checked = 0
    for word in words:
        for length in {((word & 0xFFFFFF) << (word >> 24 & 0x0F)), 256, 512, 100, 4096, 1024 * 1024}:
            if not 0 < length <= 2**24:
                continue
            try:
                _check_prefix(word, length)
                expected = None
            except ProtocolError as err:
                expected = str(err)
            data = length_prefix(length) + word.to_bytes(4, "big")
            _, _, error = split_messages(data, 0, len(data), 2**24)
            assert (None if error is None else str(error)) == expected, (hex(word), length)
            checked += expected is None
    assert checked >= 20  # both outcomes were exercised


async def test_readable_names_exactly_the_sockets_with_unread_bytes():
    """The backlog mark asks poll(2) once which sockets have anything to read, then FIONREAD only for those: a
    socket with bytes is readable, an empty one is not, a closed one or none is left out."""
    from conduit.get.exporter_client import Link, readable

    pairs = [trio.socket.socketpair() for _ in range(4)]
    links = [Link(i, "pair", i) for i in range(5)]
    for link, (left, _right) in zip(links, pairs):
        link.sock = left
    await pairs[1][1].send(b"x" * 10)
    await pairs[3][1].send(b"y")
    await trio.testing.wait_all_tasks_blocked()
    pairs[2][0].close()  # fileno -1: left out, not an error
    assert readable(links) == {links[1].fd, links[3].fd}
    assert [link.unread_bytes() for link in links] == [0, 10, 0, 1, 0]
    assert readable([links[0], links[4]]) == set()
    for left, right in pairs:
        left.close()
        right.close()
