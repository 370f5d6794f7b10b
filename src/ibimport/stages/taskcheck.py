"""Which rows' EC2 import tasks can be imported: every task ID looked up in batches.

ImportVmImage accepts a task that is still converting, failed or long gone, and the
image it makes then FAILS later. So ``preflight`` and ``run --preflight`` ask EC2 first,
``TASK_IDS_PER_CALL`` IDs per DescribeImportImageTasks call (never one call per row),
under a limiter and the imports' retry rules (``calls``). Each task is classified:

- ``ready``: ``completed``, its image can be built now;
- ``pending``: ``active`` (still converting), with EC2's progress;
- ``failed``: ``deleted``/``deleting``, with EC2's StatusMessage (why the conversion failed);
- ``unknown``: EC2 does not know the ID: mistyped, or older than the 7 days of history
  DescribeImportImageTasks keeps.

A row with disks, whose task ibimport will start, is checked by ``diskcheck`` in the same
words (``ready``, ``failed`` with the problem's own ``code``) and one more: ``unchecked``,
when the caller may not look (it is not blocked).

EC2 fails a whole call that names an unknown ID, and nothing documents which ID its
message names, so the message is never read: a failing batch is halved and each half
asked again until every unknown ID stands alone (binary splitting). k unknown IDs in a
batch of n cost at most 1 + 2k*ceil(log2 n) calls, and never more than 2n - 1 (two
calls per ID if every one is unknown); ``split_calls`` counts the calls beyond one per
batch. Pure engine: no printing, no files.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from functools import partial

import anyio

from ibimport.aws.client import (
    TASK_IDS_PER_CALL,
    UNKNOWN_TASK_CODES,
    ImportTaskInfo,
    PartitionClient,
)
from ibimport.errors import ApiError
from ibimport.flow.executor import CallExecutor, first_error

__all__ = ["TaskCheck", "TaskChecker", "TaskState", "classify_task"]

#: What ``unknown`` says when EC2 refused the ID without a message of its own.
UNKNOWN_MESSAGE = (
    "EC2 does not know this import task (mistyped, or older than the 7 days of history "
    "DescribeImportImageTasks keeps)"
)


def unknown_message(task_id: str, code: str = "") -> str:
    """A row's own words for its unknown task: its ID, never another row's."""
    return f"import task {task_id}: {code + ': ' if code else ''}{UNKNOWN_MESSAGE}"


class TaskState(StrEnum):
    """What a row's import task means for importing it now."""

    READY = "ready"
    PENDING = "pending"
    FAILED = "failed"
    UNKNOWN = "unknown"
    #: A row with disks whose disks or role the caller may not look at: not blocked.
    UNCHECKED = "unchecked"

    @property
    def sendable(self) -> bool:
        """The row may be sent now (``run --preflight`` does not block it)."""
        return self in (TaskState.READY, TaskState.UNCHECKED)


@dataclass(frozen=True, slots=True)
class TaskCheck:
    """One task's classification, with EC2's progress (pending) or message (failed)."""

    task_id: str
    state: TaskState
    progress: str = ""
    message: str = ""
    #: The errorCode a blocked row gets, where the state alone does not say (disk rows).
    code: str = ""


def classify_task(task: ImportTaskInfo) -> TaskCheck:
    """A task as DescribeImportImageTasks answered it, in our four words."""
    status = task.status.lower()
    if status == "completed":
        return TaskCheck(task.task_id, TaskState.READY)
    if status == "active":
        return TaskCheck(task.task_id, TaskState.PENDING, task.progress, task.message)
    if status in {"deleted", "deleting"}:
        return TaskCheck(task.task_id, TaskState.FAILED, message=task.message or f"task {status}")
    return TaskCheck(task.task_id, TaskState.UNKNOWN, message=f"unexpected status {task.status!r}")


@dataclass(slots=True)
class _Found:
    checks: dict[str, TaskCheck] = field(default_factory=dict)


class TaskChecker:
    """Looks up import tasks in batches; ``calls`` counts every call made, retries included."""

    def __init__(
        self,
        client: PartitionClient,
        calls: CallExecutor,
        *,
        batch_size: int = TASK_IDS_PER_CALL,
        parallel: int = 4,
    ) -> None:
        if batch_size < 1 or parallel < 1:
            raise ValueError("TaskChecker needs batch_size >= 1 and parallel >= 1")
        self._client = client
        self._calls = calls
        self._batch_size = batch_size
        self._parallel = parallel
        #: Batches asked again, halved, to isolate the IDs EC2 does not know.
        self.split_calls = 0

    @property
    def calls(self) -> int:
        return self._calls.calls

    async def check(self, task_ids: Iterable[str]) -> dict[str, TaskCheck]:
        """Every distinct ID classified; raises ``CallError`` when a lookup cannot complete."""
        wanted = list(dict.fromkeys(task_ids))
        batches = [
            wanted[i : i + self._batch_size] for i in range(0, len(wanted), self._batch_size)
        ]
        found = _Found()
        queue = iter(batches)

        async def worker() -> None:
            for batch in queue:
                await self._check_batch(batch, found)

        try:
            async with anyio.create_task_group() as tg:
                for _ in range(min(self._parallel, len(batches))):
                    tg.start_soon(worker)
        except BaseExceptionGroup as group:
            raise first_error(group) from None
        return {task_id: found.checks[task_id] for task_id in wanted}

    async def _check_batch(self, batch: Sequence[str], found: _Found) -> None:
        todo: list[list[str]] = [list(batch)]
        while todo:
            ids = todo.pop()
            try:
                tasks = await self._describe(ids)
            except ApiError as error:
                if error.code not in UNKNOWN_TASK_CODES:
                    raise
                if len(ids) > 1:
                    half = len(ids) // 2
                    todo += [ids[:half], ids[half:]]
                    self.split_calls += 2
                    continue
                [task_id] = ids
                found.checks[task_id] = TaskCheck(
                    task_id, TaskState.UNKNOWN, message=unknown_message(task_id, error.code)
                )
                continue
            answered = {task.task_id: task for task in tasks}
            for task_id in ids:
                task = answered.get(task_id)
                found.checks[task_id] = (
                    classify_task(task)
                    if task is not None
                    else TaskCheck(task_id, TaskState.UNKNOWN, message=unknown_message(task_id))
                )

    async def _describe(self, ids: Sequence[str]) -> list[ImportTaskInfo]:
        """Every page of one batch (EC2 may page even a call that names its IDs)."""
        tasks: list[ImportTaskInfo] = []
        token: str | None = None
        while True:
            page = await self._calls.read(
                partial(self._client.describe_import_tasks, ids, next_token=token)
            )
            tasks += page.tasks
            token = page.next_token
            if token is None:
                return tasks
