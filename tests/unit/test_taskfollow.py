"""The wave's task follower (``stages.taskfollow``) as the live view hears it: each round
tells the tasks by status, the slots in use of the quota, the task running longest and an
ETA from the slots and the durations seen; in virtual time, against a fake EC2."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import anyio

from ibimport.aws.client import ImportTaskInfo, ImportTaskPage
from ibimport.engine.pipeline import RunSettings
from ibimport.flow.executor import CallExecutor, PartitionHealth
from ibimport.flow.limiter import build_limiter
from ibimport.flow.slots import TaskSlots
from ibimport.journal import TaskRecord, TaskStatus
from ibimport.stages.polling import Waiting, WaitRound
from ibimport.stages.taskfollow import MemoryLedger, TaskFollower, TaskFollowSettings
from ibimport.testing import FakeClock


class FakeEc2:
    """Tasks that complete at given virtual times."""

    def __init__(self, clock: FakeClock, ends: Mapping[str, float]) -> None:
        self._clock = clock
        self._ends = dict(ends)

    async def describe_import_tasks(
        self, task_ids: Sequence[str], *, next_token: str | None, filters: Any = None
    ) -> ImportTaskPage:
        now = self._clock.now()
        tasks = [
            ImportTaskInfo(task_id, "completed", "", "", image_id="ami-1")
            if now >= self._ends[task_id]
            else ImportTaskInfo(task_id, "active", "19", "converting")
            for task_id in task_ids
        ]
        return ImportTaskPage(tasks=tasks, next_token=None)


async def test_each_round_tells_slots_slowest_and_an_eta_once_a_duration_is_known() -> None:
    clock = FakeClock()
    ends = {"import-ami-1": 10.0, "import-ami-2": 40.0}
    slots = TaskSlots(5, clock=clock)
    executor = CallExecutor(
        build_limiter(concurrency=1, rate=None, clock=clock),
        clock=clock,
        policy=RunSettings().retry_policy(),
        health=PartitionHealth(),
    )
    heard: list[WaitRound] = []
    follower = TaskFollower(
        FakeEc2(clock, ends),  # type: ignore[arg-type]
        executor,
        slots,
        MemoryLedger(),
        clock=clock,
        settings=TaskFollowSettings(poll_min_s=1.0, poll_max_s=2.0),
        on_round=heard.append,
        rows_left=lambda: 3,
    )
    for n, task_id in enumerate(ends, start=1):
        assert await slots.acquire()
        slots.started()
        follower.follow(TaskRecord(f"vm-{n}", "1.0.0", task_id, "t", 0, TaskStatus.ACTIVE))

    async with anyio.create_task_group() as group:
        group.start_soon(follower.run)
        await follower.answer("import-ami-2")
        follower.release()

    first = heard[0]
    assert first.waiting_for is Waiting.WAVE
    assert (first.quota, first.in_use, first.outstanding) == (5, 2, 2)
    assert first.slowest == "vm-1 1.0.0 at 19%"
    assert first.eta_s is None  # no task has completed yet: no duration to go by
    after = next(r for r in heard if r.states.get("completed") == 1)
    assert (after.in_use, after.outstanding) == (1, 1)
    assert after.slowest.startswith("vm-2 ")
    # vm-1 took 10 s, seen within a round (2 s at most): the median duration is 10-12 s.
    # The ETA: three rows without a task at that median, plus what vm-2 should still take
    # (nothing: it has run as long as the median), over the five slots: 6-7.2 s.
    assert after.eta_s is not None
    assert 6.0 <= after.eta_s <= 7.2
    assert heard[-1].states == {"completed": 2}
    # No task running, but three rows still to start: the wave is not over.
    assert heard[-1].next_poll_s == 1.0
