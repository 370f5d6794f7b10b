"""``ibimport.testing.FakeClock``: virtual time that moves only when every task waits."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest

from ibimport.testing import DEFAULT_WALL_START, FakeClock


async def test_fake_clock_wakes_concurrent_sleepers_at_their_own_times() -> None:
    clock = FakeClock()
    woke: list[tuple[str, float]] = []

    async def nap(name: str, seconds: float) -> None:
        await clock.sleep(seconds)
        woke.append((name, clock.now()))

    async with anyio.create_task_group() as tg:
        for name, seconds in [("c", 3.0), ("a", 1.0), ("b", 2.0), ("a2", 1.0)]:
            tg.start_soon(nap, name, seconds)
    assert woke == [("a", 1.0), ("a2", 1.0), ("b", 2.0), ("c", 3.0)]
    assert clock.now() == 3.0


async def test_fake_clock_chained_sleeps_add_up_and_do_not_interfere() -> None:
    clock = FakeClock(start=10.0)
    ends: dict[str, float] = {}

    async def steps(name: str, step: float, count: int) -> None:
        for _ in range(count):
            await clock.sleep(step)
        ends[name] = clock.now()

    async with anyio.create_task_group() as tg:
        tg.start_soon(steps, "fast", 0.25, 8)
        tg.start_soon(steps, "slow", 1.0, 3)
    assert ends == {"fast": pytest.approx(12.0), "slow": pytest.approx(13.0)}


async def test_fake_clock_time_waits_for_other_work_to_finish() -> None:
    """Time moves only once every task is blocked: a busy task sees no time pass."""
    clock = FakeClock()
    seen: list[float] = []

    async def busy() -> None:
        for _ in range(50):
            await anyio.lowlevel.checkpoint()
            seen.append(clock.now())

    async with anyio.create_task_group() as tg:
        tg.start_soon(clock.sleep, 5.0)
        tg.start_soon(busy)
    assert set(seen) == {0.0}


async def test_fake_clock_survives_cancelled_sleepers_including_the_driver() -> None:
    clock = FakeClock()
    woke: list[float] = []

    async def nap(seconds: float) -> None:
        await clock.sleep(seconds)
        woke.append(clock.now())

    async with anyio.create_task_group() as tg:
        with anyio.CancelScope() as first:  # the first sleeper becomes the driver
            first.cancel()
            await clock.sleep(100.0)
        tg.start_soon(nap, 2.0)
        async with anyio.create_task_group() as doomed:
            doomed.start_soon(clock.sleep, 1.5)
            doomed.start_soon(clock.sleep, 50.0)
            await clock.sleep(1.0)
            doomed.cancel_scope.cancel()
    assert woke == [2.0]
    assert clock.now() == 2.0


async def test_fake_clock_zero_sleep_is_a_checkpoint() -> None:
    clock = FakeClock()
    await clock.sleep(0)
    await clock.sleep(-1)
    assert clock.now() == 0.0


async def test_fake_clock_wall_time_moves_with_virtual_time() -> None:
    assert FakeClock(start=10.0).wall() == DEFAULT_WALL_START
    clock = FakeClock(start=10.0, wall_start=1_000.0)
    await clock.sleep(2.5)
    assert (clock.now(), clock.wall()) == (12.5, 1_002.5)


async def test_fake_clock_advance_moves_time_by_hand_and_wakes_who_is_due() -> None:
    clock = FakeClock(wall_start=50.0)
    clock.advance(1.5)
    assert (clock.now(), clock.wall()) == (1.5, 51.5)
    woke: list[float] = []

    async def nap() -> None:
        await clock.sleep(10.0)
        woke.append(clock.now())

    async with anyio.create_task_group() as tg:
        tg.start_soon(nap)
        await anyio.lowlevel.checkpoint()  # the nap is asleep, due at 11.5
        clock.advance(20.0)
    assert woke == [21.5]
    with pytest.raises(ValueError, match="forward"):
        clock.advance(-1.0)
