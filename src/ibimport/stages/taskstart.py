"""The task-start stage: a row with disks gets its EC2 import task (ImportImage), once.

For a row that gives its disks (``diskImage`` / ``diskContainers``) instead of a
``vmImportTaskId``, before Image Builder can import anything EC2 must import the VM: a
task of 15 minutes to hours, of which an account and Region may run only so many at once.
This stage, metered by slots held for the task's whole life (``flow.slots``):

- adopts a task already started for the row: its journal's first, else one EC2 lists
  with the row's image tag (a lost journal, another machine). A task that is active or
  completed is the row's; only when every earlier one ended ``deleted`` is another
  started, under a new ClientToken (``tokens.task_client_token``'s generation);
- else takes a slot (waiting for one, holding a worker: only as many rows wait as the
  pipeline has workers) and calls ImportImage with the row's ClientToken, the task
  tagged with the row's image identity and that token, and journals the task at once;
- then lets the row go on to the existing stage and ImportVmImage as soon as the task
  started (pipelined, the default: the current Image Builder model says the task "doesn't
  need to be complete"), or once it completed (``after_task``). Pipelined, the row's
  outcome waits (``holds`` / ``settle``, without a worker) for its task's end: a task
  that ends ``deleted`` fails the row with EC2's message, whatever ImportVmImage said.

The quota error is back-pressure (``Disposition.BACKPRESSURE``): the slot meter shrinks
and the row waits for room. The missing service role and a bucket in another Region stop
the partition (every row of it would fail alike); any other refusal fails the row.
Followed by ``taskfollow.TaskFollower`` (batched polling) beside the rows.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import ClassVar

import anyio

from ibimport.aws.client import ImportTaskInfo, PartitionClient
from ibimport.domain.diskimport import TASK_TAG_IMAGE, TASK_TAG_TOKEN
from ibimport.domain.results import RowResult, RowStatus
from ibimport.domain.stages import Metering, StageName
from ibimport.domain.tokens import NAMESPACE, task_client_token
from ibimport.errors import CallError, FatalBatchError
from ibimport.flow.clock import Clock
from ibimport.flow.executor import Attempts, CallExecutor, GaveUp
from ibimport.flow.retry import Disposition, classify, fatal_message
from ibimport.flow.slots import DEFAULT_TASK_SLOTS, TaskSlots
from ibimport.journal import TaskRecord, TaskStatus
from ibimport.stages.base import PartitionRun, RowWork
from ibimport.stages.taskfollow import (
    TaskEnd,
    TaskFollower,
    TaskLedger,
    TaskVerdict,
    known_end,
    tagged,
    task_status,
)

__all__ = [
    "QUOTA_SERVICE_CODE",
    "TASK_ERROR_CODES",
    "SlotsSeen",
    "TaskStartSettings",
    "TaskStartStage",
    "account_slots",
    "import_vm_image_token",
    "list_tasks",
]

#: Service Quotas' service code of VM Import/Export (issue 19); its concurrent import
#: tasks quota is found by name (``_QUOTA_NAME``): AWS's quota code could not be checked.
QUOTA_SERVICE_CODE = "vmimportexport"
_QUOTA_NAME = "import image task"

#: The row's errorCode for each way its task can end it.
TASK_ERROR_CODES = {
    TaskVerdict.FAILED: "TaskFailed",
    TaskVerdict.CANCELLED: "TaskCancelled",
    TaskVerdict.STALLED: "TaskStalled",
    TaskVerdict.TIMED_OUT: "TaskTimedOut",
}
#: EC2's words for refusals that would refuse every row of the partition alike.
_ROLE_MISSING = "does not exist or does not have sufficient permissions"
_NOT_LOCAL = "not local to the region"


@dataclass(frozen=True, kw_only=True, slots=True)
class TaskStartSettings:
    """How a partition starts its tasks."""

    #: Slots told (``--task-slots``); None: Service Quotas' value, else ``DEFAULT_TASK_SLOTS``.
    slots: int | None = None
    #: ``--after-task``: ImportVmImage only once the task completed.
    after_task: bool = False
    token_salt: str = ""


def import_vm_image_token(token: str, task_id: str) -> str:
    """The clientToken a row with disks sends ImportVmImage with: its row token joined to
    its task's ID, so a new task (after one that failed) is a new request, and the same
    task always the same one."""
    return str(uuid.uuid5(NAMESPACE, f"{token}\x00{task_id}"))


class TaskStartStage:
    """Starts or adopts each disk row's EC2 import task (see the module's docstring)."""

    name: ClassVar[StageName] = StageName.TASK_START
    metering: ClassVar[Metering] = Metering.SLOTS

    def __init__(
        self,
        client: PartitionClient,
        calls: CallExecutor,
        lookups: CallExecutor,
        follower: TaskFollower,
        slots: TaskSlots,
        ledger: TaskLedger,
        *,
        clock: Clock,
        settings: TaskStartSettings = TaskStartSettings(),
    ) -> None:
        self._client = client
        self._calls = calls
        self._lookups = lookups
        self.follower = follower
        self.slots = slots
        self._ledger = ledger
        self._clock = clock
        self._settings = settings
        self._run: PartitionRun | None = None
        self._ready = False
        self._ready_lock = anyio.Lock()
        self._failed_ready: str | None = None
        self._journalled: dict[tuple[str, str], TaskRecord] = {}
        self._listed: Mapping[str, list[ImportTaskInfo]] = {}
        #: Tasks this stage started and adopted (for the report), and the rows that went
        #: through it (for the live view's ETA: the others have no task yet).
        self.started = 0
        self.adopted = 0
        self.rows_through = 0
        self.quota: int | None = None

    async def prepare(self, run: PartitionRun) -> None:
        self._run = run
        run.beside(self.follower.run)

    def figures(self) -> dict[str, float | int | None]:
        """What the partition's tasks cost and how full its slots were kept (the report's
        ``importTasks``): the quota, tasks started and adopted, the most active at once,
        the quota's refusals, slot-seconds busy as ibimport saw them (start to the round
        that saw the end), and the status rounds with their calls and the tasks asked."""
        follower, slots = self.follower, self.slots
        return {
            "quota": self.quota,
            "started": self.started,
            "adopted": self.adopted,
            "maxActive": slots.max_active,
            "quotaRefusals": slots.refusals,
            "busySlotS": round(slots.busy_slot_s, 3),
            "statusRounds": follower.rounds,
            "statusCalls": follower.calls,
            "tasksAsked": follower.tasks_asked,
            "callsPerTaskPerRound": round(follower.calls / follower.tasks_asked, 4)
            if follower.tasks_asked
            else None,
        }

    def defers(self, work: RowWork) -> bool:
        return False  # a row waiting for a slot holds a worker: back-pressure on the manifest

    def release(self) -> None:
        self.follower.release()
        self.slots.close()  # rows waiting for a slot are answered now, not at the drain's end

    # ------------------------------------------------------------ the row

    async def process(self, work: RowWork) -> RowResult | None:
        try:
            return await self._process(work)
        finally:
            self.rows_through += 1  # given a task, answered, or not a row with disks

    async def _process(self, work: RowWork) -> RowResult | None:
        if not work.request.has_disks:
            return None
        run = self._run
        assert run is not None, "prepare() first"
        if not await self._ensure_ready(run):
            return run.result(
                work, RowStatus.SKIPPED, error=("StoppedOnFatalError", self._failed_ready or "")
            )
        identity = (work.request.name, work.request.semanticVersion)
        run.journal.stage_started(identity, StageName.TASK_START, at=self._clock.wall())
        record, generation = self._known(work)
        # ImportImage is a request of its own: its attempts are not ImportVmImage's.
        attempts = Attempts()
        if record is None:
            started = await self._start(run, work, generation, attempts)
            if isinstance(started, RowResult):
                self._ended(identity, started)
                return started
            record = started
        work.params["vmImportTaskId"] = record.task_id
        work.call_token = import_vm_image_token(work.token, record.task_id)
        end = known_end(record)
        if not record.status.ended:
            self.follower.follow(record)  # for its slot too, until EC2 says it ended
            if end is None and self._settings.after_task:
                end = await self.follower.answer(record.task_id)
        if end is not None and end.verdict is not TaskVerdict.COMPLETED:
            result = self._task_result(run, work, end)
            self._ended(identity, result)
            return result
        run.journal.stage_ended(
            identity,
            StageName.TASK_START,
            at=self._clock.wall(),
            attempts=attempts.made,
            outcome=record.status.value,
        )
        return None

    def holds(self, work: RowWork) -> bool:
        """Pipelined: the row's outcome waits for its task's end."""
        task_id = work.params.get("vmImportTaskId")
        return (
            work.request.has_disks
            and isinstance(task_id, str)
            and not self._settings.after_task
            and self.follower.follows(task_id)
            and self.follower.end_of(task_id) is None
        )

    async def settle(self, work: RowWork, result: RowResult) -> RowResult:
        """The row's outcome once its task ended: a task that did not complete fails it."""
        run = self._run
        assert run is not None
        if result.status not in (RowStatus.SUCCEEDED, RowStatus.EXISTS):
            return result
        end = await self.follower.answer(str(work.params["vmImportTaskId"]))
        if end.verdict is TaskVerdict.COMPLETED:
            return result
        if end.verdict is TaskVerdict.INTERRUPTED:
            return run.result(
                work, RowStatus.SKIPPED, error=("Interrupted", "its import task is still running")
            )
        failed = self._task_result(run, work, end)
        failed.image_arn = result.image_arn
        return failed

    def _task_result(self, run: PartitionRun, work: RowWork, end: TaskEnd) -> RowResult:
        if end.verdict is TaskVerdict.INTERRUPTED:
            return run.result(work, RowStatus.SKIPPED, error=("Interrupted", ""))
        status = RowStatus.CANCELLED if end.verdict is TaskVerdict.CANCELLED else RowStatus.FAILED
        return run.result(work, status, error=(TASK_ERROR_CODES[end.verdict], end.message))

    def _ended(self, identity: tuple[str, str], result: RowResult) -> None:
        run = self._run
        assert run is not None
        if result.status is RowStatus.SKIPPED:
            return
        run.journal.stage_ended(
            identity,
            StageName.TASK_START,
            at=self._clock.wall(),
            attempts=0,
            outcome=result.status,
            error_code=result.error_code,
        )

    # ------------------------------------------------------------ finding and starting

    def _known(self, work: RowWork) -> tuple[TaskRecord | None, int]:
        """The row's task to adopt, else None and the generation of the one to start."""
        request = work.request
        identity = (request.name, request.semanticVersion)
        journalled = self._journalled.get(identity)
        listed = self._listed.get(request.image_tag(), [])
        for info in listed:
            status = task_status(info)
            if status.standing:
                return self._adopt(work, info, journalled), 0
        if journalled is not None and journalled.status.standing:
            # The journal knows a task EC2 no longer lists (past its 7 days): kept as is.
            if journalled.status is TaskStatus.ACTIVE:
                self.slots.adopted()
            self.adopted += 1
            return journalled, 0
        earlier = len(listed)
        if journalled is not None:
            earlier = max(earlier, journalled.generation + 1)
        return None, earlier

    def _adopt(
        self, work: RowWork, info: ImportTaskInfo, journalled: TaskRecord | None
    ) -> TaskRecord:
        status = task_status(info)
        generation = (
            journalled.generation
            if journalled is not None and journalled.task_id == info.task_id
            else 0
        )
        record = TaskRecord(
            work.request.name,
            work.request.semanticVersion,
            info.task_id,
            info.tags.get(TASK_TAG_TOKEN, ""),
            generation,
            status,
            progress=info.progress,
            message=info.message,
            image_id=info.image_id,
            started_at=journalled.started_at if journalled is not None else self._clock.wall(),
            ended_at=None if not status.ended else self._clock.wall(),
            account=self._origin[0],
            region=self._origin[1],
        )
        if journalled != record:
            self._ledger.record_task(record)
        if not status.ended:
            self.slots.adopted()
        self.adopted += 1
        return record

    @property
    def _origin(self) -> tuple[str, str]:
        return self._run.origin if self._run is not None else ("", "")

    async def _start(
        self, run: PartitionRun, work: RowWork, generation: int, attempts: Attempts
    ) -> TaskRecord | RowResult:
        request = work.request
        token = task_client_token(request, salt=self._settings.token_salt, generation=generation)
        tags = {TASK_TAG_IMAGE: request.image_tag(), TASK_TAG_TOKEN: token}
        params = request.import_image_params()
        while True:
            if not await self.slots.acquire():
                return run.result(work, RowStatus.SKIPPED, error=("Interrupted", ""))
            if run.stopping:
                self.slots.not_started()
                return run.result(work, RowStatus.SKIPPED, error=("Interrupted", ""))
            try:
                info = await self._calls.call(
                    lambda: self._client.import_image(params, client_token=token, tags=tags),
                    attempts=attempts,
                    stopping=lambda: run.stopping,
                    on_attempt=run.attempt_listener(work),
                )
            except GaveUp as gave_up:
                if gave_up.disposition is Disposition.BACKPRESSURE:
                    self.slots.refused()
                    if run.stopping:
                        return run.result(work, RowStatus.SKIPPED, error=("Interrupted", ""))
                    continue
                self.slots.not_started()
                return self._refused(run, work, gave_up)
            break
        self.slots.started()
        self.started += 1
        status = task_status(info)
        record = TaskRecord(
            request.name,
            request.semanticVersion,
            info.task_id,
            token,
            generation,
            status,
            progress=info.progress,
            message=info.message,
            image_id=info.image_id,
            started_at=self._clock.wall(),
            account=run.origin[0],
            region=run.origin[1],
        )
        self._ledger.record_task(record)
        if status.ended:  # answered already ended (a replayed token): its slot is free
            self.slots.finished()
        return record

    def _refused(self, run: PartitionRun, work: RowWork, gave_up: GaveUp) -> RowResult:
        error = gave_up.error
        if gave_up.fatal is not None:
            run.stop(gave_up.fatal)
        elif _ROLE_MISSING in error.message or _NOT_LOCAL in error.message:
            run.stop(FatalBatchError(f"ImportImage refused: {error.code}: {error.message}"))
        if gave_up.fatal is not None or run.stopping or gave_up.in_doubt:
            # No answer, or the partition stops: the task may have started; the resume
            # finds it by its tag or is answered it by its token.
            return run.result(work, RowStatus.SKIPPED, error=(error.code, error.message))
        return run.result(work, RowStatus.FAILED, error=(error.code, error.message))

    # ------------------------------------------------------------ once per partition

    async def _ensure_ready(self, run: PartitionRun) -> bool:
        """On the first row with disks: the journal's tasks, the tasks EC2 lists with
        ibimport's tags, and the slots (the quota less the account's active tasks)."""
        async with self._ready_lock:
            if self._ready:
                return self._failed_ready is None
            self._ready = True
            try:
                self._journalled = self._ledger.task_records()
                listed = await list_tasks(
                    self._client, self._lookups, {"tag-key": [TASK_TAG_IMAGE]}
                )
                self._listed = tagged(listed, TASK_TAG_IMAGE)
                seen = await account_slots(self._client, self._lookups, told=self._settings.slots)
                quota = seen.quota
            except CallError as error:
                self._failed_ready = (
                    fatal_message(error)
                    if classify(error) is Disposition.FATAL
                    else f"could not list the EC2 import tasks ({error.code}: {error.message}), "
                    "so none was started: re-run"
                )
                run.stop(FatalBatchError(self._failed_ready))
                return False
            self.quota = quota
            self.slots.size(quota, active_elsewhere=seen.active)
            return True


@dataclass(frozen=True, slots=True)
class SlotsSeen:
    """A partition's import task slots: the quota, where it came from, and the tasks
    already active in the account (any tool's, any shard's)."""

    quota: int
    #: ``--task-slots``, ``Service Quotas`` or ``default``.
    source: str
    active: int

    @property
    def free(self) -> int:
        return max(0, self.quota - self.active)


async def account_slots(
    client: PartitionClient, lookups: CallExecutor, *, told: int | None
) -> SlotsSeen:
    """The slots a partition may fill: the quota (told, else Service Quotas' where
    permitted, else ``DEFAULT_TASK_SLOTS``) and the account's active tasks. Raises
    ``CallError`` when the active tasks cannot be listed."""
    active = len(await list_tasks(client, lookups, {"task-state": ["active"]}))
    if told is not None:
        return SlotsSeen(told, "--task-slots", active)
    quota = await _quota(client, lookups)
    if quota is not None:
        return SlotsSeen(quota, "Service Quotas", active)
    return SlotsSeen(DEFAULT_TASK_SLOTS, "default", active)


async def list_tasks(
    client: PartitionClient, lookups: CallExecutor, filters: Mapping[str, list[str]]
) -> list[ImportTaskInfo]:
    """Every import task ``filters`` match, all pages."""
    found: list[ImportTaskInfo] = []
    token: str | None = None
    while True:
        page = await lookups.read(
            partial(client.describe_import_tasks, [], next_token=token, filters=filters)
        )
        found.extend(page.tasks)
        token = page.next_token
        if token is None:
            return found


async def _quota(client: PartitionClient, lookups: CallExecutor) -> int | None:
    """Service Quotas' concurrent import tasks, where permitted (else None)."""
    try:
        quotas = await lookups.read(lambda: client.list_service_quotas(QUOTA_SERVICE_CODE))
    except CallError:
        return None
    for quota in quotas:
        if _QUOTA_NAME in quota.name.lower() and quota.value >= 1:
            return int(quota.value)
    return None
