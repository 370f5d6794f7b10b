"""The task gate (``stages.taskgate``) in a pipeline, on a fake EC2 task checker and virtual
time: ready rows pass, the others are blocked with EC2's reason, converting rows wait for
their task without a worker (``--wait-for-tasks``) and are answered at once by a stop."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

from orchestration_support import Collector, MemoryJournal, StepStage, manifest_rows, succeed

from ibimport.domain.results import RowStatus
from ibimport.engine.pipeline import Pipeline, RunSettings
from ibimport.errors import ApiError, CallError
from ibimport.manifest import ManifestRow
from ibimport.stages.base import RowStage, RowWork
from ibimport.stages.polling import Waiting, WaitRound
from ibimport.stages.taskcheck import TaskCheck, TaskState
from ibimport.stages.taskgate import TaskGate, TaskGateStage, TaskWait
from ibimport.testing import FakeClock


class FakeChecker:
    """EC2's import tasks as a script: each task's state, a converting one until
    ``ready_at`` (virtual time); ``fail_with`` makes every lookup fail."""

    def __init__(
        self,
        clock: FakeClock,
        states: dict[str, TaskCheck],
        *,
        ready_at: dict[str, float] | None = None,
        fail_with: CallError | None = None,
    ) -> None:
        self.clock = clock
        self.states = states
        self.ready_at = ready_at or {}
        self.fail_with = fail_with
        self.asked: list[tuple[float, list[str]]] = []

    @property
    def calls(self) -> int:
        return len(self.asked)

    async def check(self, task_ids: Iterable[str]) -> dict[str, TaskCheck]:
        ids = list(task_ids)
        self.asked.append((self.clock.now(), ids))
        if self.fail_with is not None:
            raise self.fail_with
        return {task_id: self._state(task_id) for task_id in ids}

    def _state(self, task_id: str) -> TaskCheck:
        if self.clock.now() >= self.ready_at.get(task_id, math.inf):
            return TaskCheck(task_id, TaskState.READY)
        return self.states.get(task_id, TaskCheck(task_id, TaskState.READY))


def _task_id(row: int) -> str:
    return f"import-ami-{row:08x}"  # as ``orchestration_support.request`` names them


def _pending(row: int, progress: str = "40") -> TaskCheck:
    return TaskCheck(_task_id(row), TaskState.PENDING, progress, "converting")


def _gated(
    checker: FakeChecker,
    rows: Sequence[ManifestRow],
    clock: FakeClock,
    *,
    wait: TaskWait | None = None,
    concurrency: int = 1,
    on_round: Callable[[WaitRound], None] | None = None,
) -> tuple[Pipeline, TaskGateStage, StepStage, Collector]:
    gate = TaskGateStage(
        TaskGate(checker, clock=clock, wait=wait, on_round=on_round),  # type: ignore[arg-type]
        rows=lambda: [r.task for r in rows if r.task is not None],
    )
    sent = StepStage("import", [], clock, answer=succeed)
    collector = Collector()
    stages: list[RowStage] = [gate, sent]
    pipeline = Pipeline(
        stages,
        journal=MemoryJournal(),
        clock=clock,
        listeners=[collector],
        settings=RunSettings(concurrency=concurrency),
    )
    return pipeline, gate, sent, collector


async def test_ready_rows_pass_and_the_others_are_blocked_with_ec2s_reason() -> None:
    clock = FakeClock()
    rows = manifest_rows(4)
    checker = FakeChecker(
        clock,
        {
            _task_id(2): TaskCheck(_task_id(2), TaskState.FAILED, message="ClientError: bad disk"),
            _task_id(3): TaskCheck(_task_id(3), TaskState.UNKNOWN, message="not found"),
            _task_id(4): _pending(4, "73"),
        },
    )
    pipeline, _, sent, collector = _gated(checker, rows, clock)
    await pipeline.run(rows)
    # Every task asked about once, together, before any row.
    assert checker.asked == [(0.0, [_task_id(n) for n in range(1, 5)])]
    assert sent.entered == [1]
    assert collector.results[1].status is RowStatus.SUCCEEDED
    blocked = {row: collector.results[row] for row in (2, 3, 4)}
    assert {r.status for r in blocked.values()} == {RowStatus.BLOCKED}
    assert [blocked[n].error_code for n in (2, 3, 4)] == [
        "TaskFailed",
        "TaskNotFound",
        "TaskPending",
    ]
    assert blocked[2].error_message == f"import task {_task_id(2)} failed: ClientError: bad disk"
    assert "73% converted" in blocked[4].error_message


async def test_a_converting_row_waits_without_a_worker_and_is_sent_once_its_task_is_ready() -> None:
    clock = FakeClock()
    rows = manifest_rows(6)
    checker = FakeChecker(
        clock,
        {_task_id(n): _pending(n) for n in (1, 2, 3)},
        ready_at={_task_id(1): 12.0, _task_id(2): 12.0, _task_id(3): 3.0},
    )
    wait = TaskWait(timeout_s=3600.0, interval_s=5.0, max_interval_s=5.0, growth=1.0)
    sent_at: dict[int, float] = {}

    pipeline, gate, sent, collector = _gated(checker, rows, clock, wait=wait)

    async def stamp(work: RowWork) -> None:
        sent_at[work.row] = clock.now()

    sent.on_row = stamp
    await pipeline.run(rows)
    # Rows 4-6 did not queue behind three waiting rows (three workers at concurrency 1).
    assert (sent_at[4], sent_at[5], sent_at[6]) == (0.0, 0.0, 0.0)
    # Polled every 5 s: row 3's task (ready at 3) is seen at 5, rows 1-2's at 15.
    assert sent_at[3] == 5.0
    assert (sent_at[1], sent_at[2]) == (15.0, 15.0)
    assert [at for at, _ in checker.asked] == [0.0, 5.0, 10.0, 15.0]
    assert checker.asked[1][1] == [_task_id(n) for n in (1, 2, 3)]  # only the pending ones
    assert checker.asked[3][1] == [_task_id(1), _task_id(2)]
    assert gate.gate.rounds == 3
    assert collector.statuses() == {n: RowStatus.SUCCEEDED for n in range(1, 7)}


async def test_a_task_still_converting_at_the_deadline_blocks_its_row() -> None:
    clock = FakeClock()
    rows = manifest_rows(2)
    checker = FakeChecker(clock, {_task_id(1): _pending(1, "90")})
    wait = TaskWait(timeout_s=20.0, interval_s=5.0, max_interval_s=60.0, growth=2.0)
    pipeline, _, sent, collector = _gated(checker, rows, clock, wait=wait)
    await pipeline.run(rows)
    assert sent.entered == [2]
    assert collector.results[1].status is RowStatus.BLOCKED
    assert collector.results[1].error_code == "TaskPending"
    assert "90% converted" in collector.results[1].error_message
    # Rounds at 5 and 15 (the interval doubles), the last cut to the deadline at 20.
    assert [at for at, _ in checker.asked] == [0.0, 5.0, 15.0, 20.0]
    assert clock.now() == 20.0


async def test_each_polling_round_tells_the_tasks_by_state_the_next_poll_and_the_time_left() -> (
    None
):
    """Issue 23 item 6: ``--wait-for-tasks`` is shown while it polls, and when it ends."""
    clock = FakeClock()
    rows = manifest_rows(3)
    checker = FakeChecker(
        clock, {_task_id(1): _pending(1), _task_id(2): _pending(2)}, ready_at={_task_id(2): 4.0}
    )
    wait = TaskWait(timeout_s=20.0, interval_s=5.0, max_interval_s=60.0, growth=2.0)
    told: list[tuple[float, dict[str, int], int, float | None, float | None]] = []

    def heard(r: WaitRound) -> None:
        assert r.waiting_for is Waiting.TASKS
        told.append((clock.now(), dict(r.states), r.outstanding, r.next_poll_s, r.time_left_s))

    pipeline, _, _, collector = _gated(checker, rows, clock, wait=wait, on_round=heard)
    await pipeline.run(rows)
    assert told == [
        (0.0, {"pending": 2, "ready": 1}, 2, 5.0, 20.0),
        (5.0, {"pending": 1, "ready": 2}, 1, 10.0, 15.0),
        (15.0, {"pending": 1, "ready": 2}, 1, 5.0, 5.0),
        (20.0, {"pending": 1, "ready": 2}, 1, None, 0.0),  # out of time: row 1 is blocked
    ]
    assert collector.results[1].status is RowStatus.BLOCKED


async def test_a_gate_with_no_task_to_wait_for_tells_no_round() -> None:
    clock = FakeClock()
    rows = manifest_rows(2)
    told: list[WaitRound] = []
    wait = TaskWait(timeout_s=20.0, interval_s=5.0)
    pipeline, _, _, _ = _gated(FakeChecker(clock, {}), rows, clock, wait=wait, on_round=told.append)
    await pipeline.run(rows)
    assert told == []


async def test_a_stop_answers_the_waiting_rows_at_once_with_their_last_known_state() -> None:
    clock = FakeClock()
    rows = manifest_rows(2)
    checker = FakeChecker(clock, {_task_id(1): _pending(1)}, ready_at={_task_id(1): 500.0})
    wait = TaskWait(timeout_s=3600.0, interval_s=60.0, max_interval_s=60.0)
    pipeline, gate, sent, collector = _gated(checker, rows, clock, wait=wait)

    async def stop_when_sent(work: RowWork) -> None:
        pipeline.request_stop()

    sent.on_row = stop_when_sent
    outcome = await pipeline.run(rows)
    assert outcome.interrupted
    assert sent.entered == [2]
    assert collector.results[1].status is RowStatus.BLOCKED
    assert collector.results[1].error_code == "TaskPending"
    assert clock.now() < 60.0  # not one polling round was waited for
    assert len(checker.asked) == 1
    assert not gate.gate.waits(_task_id(1))


async def test_a_check_that_cannot_complete_stops_the_partition_with_nothing_sent() -> None:
    clock = FakeClock()
    rows = manifest_rows(3)
    checker = FakeChecker(
        clock, {}, fail_with=ApiError("InternalError", "EC2 is having a day", status=500)
    )
    pipeline, _, sent, collector = _gated(checker, rows, clock)
    outcome = await pipeline.run(rows)
    assert sent.entered == []
    assert str(outcome.fatal) == (
        "could not check the import tasks (InternalError: EC2 is having a day), "
        "so nothing was sent: re-run"
    )
    assert {r.error_code for r in collector.results.values()} == {"StoppedOnFatalError"}


async def test_a_check_refused_for_its_credentials_says_so() -> None:
    clock = FakeClock()
    rows = manifest_rows(1)
    denied = ApiError("UnauthorizedOperation", "not allowed to describe", status=403)
    pipeline, _, sent, _ = _gated(FakeChecker(clock, {}, fail_with=denied), rows, clock)
    outcome = await pipeline.run(rows)
    assert sent.entered == []
    assert str(outcome.fatal).startswith("every call would fail: UnauthorizedOperation")


async def test_a_stop_during_a_polling_round_sends_no_row_that_round_finds_ready() -> None:
    """Ctrl-C while a round of DescribeImportImageTasks is out: the tasks it finds ready
    let their rows go, but the stop came first, so none of them is sent."""
    clock = FakeClock()
    rows = manifest_rows(2)
    checker = FakeChecker(clock, {_task_id(1): _pending(1)}, ready_at={_task_id(1): 5.0})
    wait = TaskWait(timeout_s=3600.0, interval_s=5.0, max_interval_s=5.0)
    pipeline, _, sent, collector = _gated(checker, rows, clock, wait=wait)
    real_check = checker.check

    async def stopped_meanwhile(task_ids: Iterable[str]) -> dict[str, TaskCheck]:
        found = await real_check(task_ids)
        if checker.calls == 2:  # the first polling round
            pipeline.request_stop()
        return found

    checker.check = stopped_meanwhile  # type: ignore[method-assign]
    outcome = await pipeline.run(rows)
    assert outcome.interrupted
    assert sent.entered == [2]
    assert collector.results[1].status is RowStatus.SKIPPED
    assert collector.results[1].error_code == "Interrupted"
