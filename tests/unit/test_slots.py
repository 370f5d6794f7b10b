"""The task slots meter (``flow.slots``): held for a task's life, shrunk by the quota
error, grown back as tasks end; in virtual time."""

from __future__ import annotations

import anyio
import pytest

from ibimport.flow.slots import TaskSlots
from ibimport.testing import FakeClock


async def test_a_start_waits_for_a_task_to_end_and_fifo_order_holds() -> None:
    clock = FakeClock()
    slots = TaskSlots(2, clock=clock)
    order: list[int] = []

    async def start(n: int) -> None:
        await slots.acquire()
        slots.started()
        order.append(n)

    async with anyio.create_task_group() as group:
        for n in range(4):
            group.start_soon(start, n)
        await anyio.wait_all_tasks_blocked()
        assert order == [0, 1]
        assert slots.active == 2
        slots.finished()
        await anyio.wait_all_tasks_blocked()
        assert order == [0, 1, 2]
        slots.finished()
    assert order == [0, 1, 2, 3]
    assert slots.max_active == 2


async def test_the_quota_error_shrinks_to_what_is_held_and_ends_grow_it_back() -> None:
    clock = FakeClock()
    slots = TaskSlots(5, clock=clock)
    for _ in range(3):
        await slots.acquire()
        slots.started()
    await slots.acquire()
    slots.refused()  # others hold the other two
    assert (slots.limit, slots.held, slots.refusals) == (3, 3, 1)
    slots.finished()
    assert slots.limit == 4  # one more than before: probes for a slot others released
    slots.finished()
    slots.finished()
    assert slots.limit == 5  # never above the quota


async def test_with_nothing_running_a_refused_start_waits_before_asking_again() -> None:
    clock = FakeClock()
    slots = TaskSlots(3, clock=clock, retry_after_s=30.0)
    await slots.acquire()
    slots.refused()
    assert slots.limit == 1
    await slots.acquire()
    assert clock.now() == pytest.approx(30.0)


async def test_sizing_takes_the_accounts_active_tasks_and_adopted_ones_give_back() -> None:
    clock = FakeClock()
    slots = TaskSlots(20, clock=clock)
    slots.size(20, active_elsewhere=7)  # two of the seven are ours, adopted below
    assert slots.limit == 13
    slots.adopted()
    slots.adopted()
    assert (slots.limit, slots.held, slots.active) == (15, 2, 2)


async def test_busy_slot_seconds_count_started_tasks_only() -> None:
    clock = FakeClock()
    slots = TaskSlots(2, clock=clock)
    await slots.acquire()
    slots.started()
    clock.advance(10.0)
    slots.finished()
    clock.advance(5.0)
    assert slots.busy_slot_s == pytest.approx(10.0)


async def test_closing_answers_every_waiting_start_at_once_without_a_slot() -> None:
    clock = FakeClock()
    slots = TaskSlots(1, clock=clock)
    assert await slots.acquire()
    slots.started()
    answers: list[bool] = []

    async def start() -> None:
        answers.append(await slots.acquire())

    async with anyio.create_task_group() as group:
        for _ in range(3):
            group.start_soon(start)
        await anyio.wait_all_tasks_blocked()
        assert answers == []
        slots.close()
    assert answers == [False, False, False]
    assert (slots.held, slots.active) == (1, 1)  # the running task keeps its slot
    assert clock.now() == 0.0
    assert not await slots.acquire()  # closed: nothing starts any more


async def test_closing_ends_the_quiet_wait_after_a_refusal() -> None:
    clock = FakeClock()
    slots = TaskSlots(3, clock=clock, retry_after_s=30.0)
    await slots.acquire()
    slots.refused()
    answers: list[bool] = []

    async def start() -> None:
        answers.append(await slots.acquire())

    async def stop_later() -> None:
        await clock.sleep(5.0)
        slots.close()

    async with anyio.create_task_group() as group:
        group.start_soon(start)
        group.start_soon(stop_later)
    assert answers == [False]
    assert clock.now() == pytest.approx(5.0)  # not the 30 s of the quiet wait
