"""``run --preflight``: rows held back until their EC2 import task is ready.

ImportVmImage accepts a task that is still converting, failed or gone, and the image it
makes FAILS later; a row whose task is not ready is better not sent. ``TaskGate.check``
looks up every task of a partition before its first import, in batches
(``importtasks``); the runner then asks ``admit`` of each row it is about to send:

- ``ready``: sent;
- ``failed`` / ``unknown``: recorded ``blocked`` (``TaskFailed`` with EC2's
  StatusMessage, ``TaskNotFound``), checked again on a re-run;
- ``pending``: ``blocked`` (``TaskPending``, with EC2's progress); or, with a wait
  (``--wait-for-tasks``), the row waits without holding a worker while ``poll`` asks EC2
  again about every pending task in batches, backing off, until each completes (then the
  row is sent) or the deadline passes (then it is blocked); ``on_round`` hears where that
  wait stands after each round (``polling.WaitRound``), for people watching.

Pure engine: no printing, no files.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import ClassVar

import anyio

from ibimport.domain.request import ImageRequest
from ibimport.domain.results import RowResult, RowStatus
from ibimport.domain.stages import Metering, StageName
from ibimport.errors import CallError, FatalBatchError
from ibimport.flow.clock import Clock
from ibimport.flow.retry import Disposition, classify, fatal_message
from ibimport.stages.base import PartitionRun, RowWork
from ibimport.stages.diskcheck import DiskChecker
from ibimport.stages.polling import Waiting, WaitRound
from ibimport.stages.taskcheck import TaskCheck, TaskChecker, TaskState

__all__ = ["BLOCKED_CODES", "TaskGate", "TaskGateStage", "TaskWait", "blocked_reason"]

#: The row's errorCode for each task state that blocks it.
BLOCKED_CODES = {
    TaskState.PENDING: "TaskPending",
    TaskState.FAILED: "TaskFailed",
    TaskState.UNKNOWN: "TaskNotFound",
}


@dataclass(frozen=True, kw_only=True, slots=True)
class TaskWait:
    """``--wait-for-tasks``: how often to ask again about pending tasks, for how long."""

    timeout_s: float = 3600.0
    interval_s: float = 5.0
    max_interval_s: float = 60.0
    growth: float = 1.5

    def __post_init__(self) -> None:
        if self.timeout_s < 0 or not 0 < self.interval_s <= self.max_interval_s:
            raise ValueError("TaskWait needs timeout_s >= 0 and 0 < interval_s <= max_interval_s")


def blocked_reason(check: TaskCheck) -> tuple[str, str]:
    """(errorCode, errorMessage) for a row whose task (or disks) is not ready."""
    if check.code:
        return check.code, check.message
    code = BLOCKED_CODES[check.state]
    if check.state is TaskState.PENDING:
        progress = f" ({check.progress}% converted)" if check.progress else ""
        detail = f": {check.message}" if check.message else ""
        return code, f"import task {check.task_id} is still converting{progress}{detail}"
    if check.state is TaskState.FAILED:
        return code, f"import task {check.task_id} failed: {check.message}"
    return code, check.message  # names its task (``taskcheck.unknown_message``)


class TaskGate:
    """Which rows of one partition may be sent now, by their import task's state."""

    def __init__(
        self,
        checker: TaskChecker,
        *,
        clock: Clock,
        wait: TaskWait | None = None,
        on_round: Callable[[WaitRound], None] | None = None,
    ) -> None:
        self._checker = checker
        self._clock = clock
        self._wait = wait
        self._on_round = on_round
        self._checks: dict[str, TaskCheck] = {}
        #: Pending tasks a row may still wait for; set when the task settles (or not).
        self._settled: dict[str, anyio.Event] = {}
        self._released = False
        #: Polling rounds of ``poll`` (each is one batched lookup of the pending tasks).
        self.rounds = 0

    @property
    def calls(self) -> int:
        """DescribeImportImageTasks calls made, retries included."""
        return self._checker.calls

    @property
    def checks(self) -> dict[str, TaskCheck]:
        return self._checks

    async def check(self, task_ids: Iterable[str]) -> None:
        """Every task looked up once, in batches; raises ``CallError`` if that cannot finish."""
        self._checks = await self._checker.check(task_ids)
        if self._wait is not None:
            self._settled = {
                task_id: anyio.Event()
                for task_id, check in self._checks.items()
                if check.state is TaskState.PENDING
            }

    async def admit(self, task_id: str) -> tuple[str, str] | None:
        """None: send the row; else (errorCode, errorMessage) to record it ``blocked``.

        A pending task with a wait returns once ``poll`` has settled it or ``release``
        was called (a stop): the row does not hold a worker while it waits.
        """
        check = self._checks.get(task_id)
        if check is None:  # not asked (a row the check was not told of): ask now
            check = (await self._checker.check([task_id]))[task_id]
            self._checks[task_id] = check
        event = self._settled.get(task_id)
        if check.state is TaskState.PENDING and event is not None and not self._released:
            await event.wait()
            check = self._checks[task_id]
        return None if check.state.sendable else blocked_reason(check)

    def waits(self, task_id: str) -> bool:
        """Whether ``admit`` may wait for this task (so the runner defers the row)."""
        event = self._settled.get(task_id)
        return event is not None and not event.is_set() and not self._released

    def release(self) -> None:
        """A stop: every waiting row is answered now with its task's last known state."""
        self._released = True
        for event in self._settled.values():
            event.set()

    async def poll(self) -> None:
        """Ask again about the pending tasks until each settles or the wait's deadline.

        Returns at once without a wait. Each round is one batched lookup of the tasks still
        pending; rounds are spaced by an interval that grows by ``growth``.
        """
        wait = self._wait
        if wait is None or not self._settled:
            return
        deadline = self._clock.now() + wait.timeout_s
        interval = wait.interval_s
        try:
            while not self._released:
                pending = [task_id for task_id, ev in self._settled.items() if not ev.is_set()]
                if not pending:
                    return
                now = self._clock.now()
                if now >= deadline:
                    return
                pause = min(interval, deadline - now)
                self._tell(len(pending), next_poll_s=pause, time_left_s=deadline - now)
                await self._clock.sleep(pause)
                interval = min(interval * wait.growth, wait.max_interval_s)
                self.rounds += 1
                try:
                    found = await self._checker.check(pending)
                except CallError:
                    return  # EC2 cannot be asked: the waiting rows end blocked, as last seen
                for task_id, check in found.items():
                    self._checks[task_id] = check
                    if check.state is not TaskState.PENDING:
                        self._settled[task_id].set()
        finally:
            self.release()  # rows still waiting end blocked with their last known state
            waiting = sum(1 for check in self._checks.values() if check.state is TaskState.PENDING)
            left = max(deadline - self._clock.now(), 0.0)
            self._tell(waiting, next_poll_s=None, time_left_s=left)

    def _tell(self, outstanding: int, *, next_poll_s: float | None, time_left_s: float) -> None:
        """Where ``poll`` stands, to ``on_round``: the partition's tasks by state."""
        if self._on_round is None:
            return
        self._on_round(
            WaitRound(
                waiting_for=Waiting.TASKS,
                states=dict(Counter(check.state.value for check in self._checks.values())),
                outstanding=outstanding,
                next_poll_s=next_poll_s,
                time_left_s=time_left_s,
                rounds=self.rounds,
            )
        )


class TaskGateStage:
    """``run --preflight``: a row is sent only once its EC2 import task is ready, or, for
    a row with disks, once its disks and import role check out (``diskcheck``).

    ``prepare`` checks every task of the partition's rows in batches, and every disk and
    role of its rows with disks (a check that cannot complete stops the partition, nothing
    sent); each row is then admitted, deferred while its task converts
    (``--wait-for-tasks``: it holds no worker), or recorded ``blocked`` with EC2's reason
    (or the disk's problem), checked again on a re-run. Metered by the partition's read
    limiter. It comes before the task-start stage: a blocked row starts no task.
    """

    name: ClassVar[StageName] = StageName.TASK_CHECK
    metering: ClassVar[Metering] = Metering.RATE

    def __init__(
        self,
        gate: TaskGate,
        *,
        rows: Callable[[], Iterable[ImageRequest]],
        disks: DiskChecker | None = None,
    ) -> None:
        self.gate = gate
        self._rows = rows
        self._disks = disks
        self._disk_checks: dict[tuple[str, str], TaskCheck] = {}
        self._run: PartitionRun | None = None

    async def prepare(self, run: PartitionRun) -> None:
        self._run = run
        task_ids: list[str] = []
        disk_rows: list[tuple[tuple[str, str], ImageRequest]] = []
        for request in self._rows():
            if request.vmImportTaskId is not None:
                task_ids.append(request.vmImportTaskId)
            elif request.has_disks and self._disks is not None:
                disk_rows.append(((request.name, request.semanticVersion), request))
        try:
            await self.gate.check(task_ids)
            if disk_rows and self._disks is not None:
                found = await self._disks.check(disk_rows)
                self._disk_checks = {key: disk.check for key, disk in found.items()}
        except CallError as error:
            run.stop(
                FatalBatchError(
                    fatal_message(error)
                    if classify(error) is Disposition.FATAL
                    else f"could not check the import tasks ({error.code}: {error.message}), "
                    "so nothing was sent: re-run"
                )
            )
            return
        run.beside(self.gate.poll)  # --wait-for-tasks: asks again about pending tasks

    def defers(self, work: RowWork) -> bool:
        task_id = work.request.vmImportTaskId
        return task_id is not None and self.gate.waits(task_id)

    def release(self) -> None:
        self.gate.release()

    async def process(self, work: RowWork) -> RowResult | None:
        run = self._run
        assert run is not None, "prepare() first"
        task_id = work.request.vmImportTaskId
        if task_id is None:  # a row with disks: its task is ibimport's own (``taskstart``)
            check = self._disk_checks.get((work.request.name, work.request.semanticVersion))
            if check is None or check.state.sendable:
                return None
            return run.result(work, RowStatus.BLOCKED, error=blocked_reason(check))
        blocked = await self.gate.admit(task_id)
        if blocked is not None:
            return run.result(work, RowStatus.BLOCKED, error=blocked)
        return None
