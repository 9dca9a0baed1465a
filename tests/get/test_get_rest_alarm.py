"""RestAlarm: the connections' rests between reads end read_pause later (up to one tick more), together."""

from __future__ import annotations

import trio
import trio.testing

from conduit.get.exporter_client import RestAlarm


def test_rests_last_the_pause_and_a_burst_ends_together():
    ended: list[tuple[str, float, float]] = []

    async def main():
        alarm = RestAlarm(0.005)
        tick = 0.005 / RestAlarm.GRID

        async def resting(name: str, delay: float) -> None:
            await trio.sleep(delay)
            start = trio.current_time()
            await alarm.rest()
            ended.append((name, start, trio.current_time()))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(alarm.run)
            # A burst of reads: three rests asked within one tick, then one much later (after the alarm went idle).
            for name, delay in (("a", 0.0101), ("b", 0.0102), ("c", 0.0103), ("late", 0.05)):
                nursery.start_soon(resting, name, delay)
            await trio.sleep(0.1)
            nursery.cancel_scope.cancel()
        assert tick == 0.001

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert sorted(name for name, _, _ in ended) == ["a", "b", "c", "late"]
    for name, start, end in ended:
        assert 0.005 - 1e-12 <= end - start <= 0.005 + 0.001 + 1e-12, (name, end - start)  # float sums
    burst = {end for name, _, end in ended if name != "late"}
    assert len(burst) == 1  # one wake-up for the three rests of the burst


def test_a_cancelled_rest_leaves_the_others_alone():
    ended: list[str] = []

    async def main():
        alarm = RestAlarm(0.01)

        async def resting(name: str) -> None:
            await alarm.rest()
            ended.append(name)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(alarm.run)
            doomed = trio.CancelScope()

            async def cancelled() -> None:
                with doomed:
                    await alarm.rest()
                ended.append("cancelled")  # reached once its scope was cancelled, before its rest ended

            nursery.start_soon(resting, "kept")
            nursery.start_soon(cancelled)
            await trio.sleep(0.002)
            doomed.cancel()
            await trio.sleep(0.05)
            # Rests keep working after the alarm went idle.
            nursery.start_soon(resting, "again")
            await trio.sleep(0.05)
            nursery.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert ended == ["cancelled", "kept", "again"]
