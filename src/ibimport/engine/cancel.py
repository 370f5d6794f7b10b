"""``ibimport cancel JOURNAL``: cancel a wave's active EC2 import tasks, and journal it.

A wave's tasks hold the account's import slots for hours; a wrong option or a change
freeze needs them stopped, not waited out. ``cancel_tasks`` asks CancelImportTask of each
task the journal holds ``active`` (started or adopted by its runs: the ``tasks`` table),
each with the client of the task's own account and Region, found as ``wait`` finds them
(the journal's recorded partitions, Region, profile and endpoint), under that partition's
limiter and retry rules. A task cancelled is journalled ``cancelled`` and so is its row,
which a later ``run`` starts again under a new task (a new ClientToken), while the other
rows resume as they stood. A task EC2 will not cancel is looked up: one that had ended
(completed, deleted) is journalled as it is, its row untouched. The journal must not be in
use: the run is stopped first (its tasks go on without it).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field, replace
from enum import StrEnum
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from ibimport._files import check_paths
from ibimport.aws.client import TASK_IDS_PER_CALL, PartitionClient
from ibimport.engine.fleet import Partition, open_partitions
from ibimport.engine.followup import open_existing_journal, partition_calls
from ibimport.engine.partitions import Place
from ibimport.errors import CallError, JournalBusy
from ibimport.flow.clock import Clock
from ibimport.flow.executor import CallExecutor
from ibimport.flow.limiter import MonotonicClock
from ibimport.flow.retry import Disposition, classify, fatal_message
from ibimport.journal import SqliteJournal, TaskRecord, TaskStatus
from ibimport.report.outputs import RebuiltOutputs, journal_outputs, rebuild_outputs
from ibimport.stages.taskfollow import TaskVerdict, task_status
from ibimport.stages.taskstart import TASK_ERROR_CODES

if TYPE_CHECKING:
    from ibimport.engine.settings import BatchConfig

__all__ = ["CancelOutcome", "CancelResult", "TaskCancel", "cancel_tasks"]


class CancelOutcome(StrEnum):
    """What became of one active task of the journal."""

    CANCELLED = "cancelled"
    #: It had ended before the cancel (EC2's status in ``TaskCancel.detail``).
    ENDED = "ended"
    #: It could not be cancelled (the error in ``TaskCancel.detail``); it may still run.
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class TaskCancel:
    """One task the journal held active, and what the cancel did to it."""

    name: str
    semantic_version: str
    task_id: str
    outcome: CancelOutcome
    detail: str = ""


@dataclass(slots=True)
class CancelResult:
    """Every task the journal held active, the rows journalled ``cancelled``, the calls
    made and the outputs rewritten."""

    tasks: list[TaskCancel] = field(default_factory=list)
    rows_cancelled: int = 0
    calls: int = 0
    outputs: RebuiltOutputs | None = None

    @property
    def counts(self) -> Counter[CancelOutcome]:
        return Counter(task.outcome for task in self.tasks)

    @property
    def all_stopped(self) -> bool:
        """No task of the wave is left running (each cancelled, or ended already)."""
        return all(task.outcome is not CancelOutcome.FAILED for task in self.tasks)


async def cancel_tasks(
    journal_path: Path,
    *,
    config: BatchConfig,
    clock: Clock | None = None,
    report_path: Path | None = None,
    results_path: Path | None = None,
) -> CancelResult:
    """Cancel the journal's active import tasks; journal them and their rows; rewrite the
    run's report and results (``report_path``, ``results_path``, else where the journal
    says). ``config`` gives the client, limiter and retry settings (its manifest is not
    read). Raises ``JournalError`` when the journal is in use or unusable, ``ConfigError``
    for an unusable output, before any call.
    """
    clock = clock or MonotonicClock()
    check_paths(inputs={}, outputs={}, stores={"the journal": journal_path})
    report_path, results_path = journal_outputs(
        journal_path, report_path=report_path, results_path=results_path
    )
    try:
        journal = open_existing_journal(journal_path)
    except JournalBusy:
        raise JournalBusy(
            f"a run is using the journal {journal_path}: stop it first (Ctrl-C; its import "
            "tasks go on without it), then cancel"
        ) from None
    result = CancelResult()
    try:
        active = [r for r in journal.task_records().values() if r.status is TaskStatus.ACTIVE]
        if active:
            await _cancel_partitions(config, journal, active, result, clock=clock)
    finally:
        await journal.aclose()
    result.tasks.sort(key=lambda t: (t.name, t.semantic_version))
    result.outputs = rebuild_outputs(
        journal_path, report_path=report_path, results_path=results_path
    )
    return result


async def _cancel_partitions(
    config: BatchConfig,
    journal: SqliteJournal,
    active: Sequence[TaskRecord],
    result: CancelResult,
    *,
    clock: Clock,
) -> None:
    """Each partition's tasks with its own client, the partitions side by side."""
    recorded = journal.header.settings.get("partitions")
    places = (
        [Place(p.get("profile"), p.get("region")) for p in recorded if isinstance(p, dict)]
        if isinstance(recorded, list) and len(recorded) > 1
        else [Place(None, None)]
    )
    async with AsyncExitStack() as stack:
        partitions = await open_partitions(places, base=config.client, stack=stack)
        by_place: dict[tuple[str, str], list[TaskRecord]] = {}
        for record in active:
            by_place.setdefault((record.account, record.region), []).append(record)
        async with anyio.create_task_group() as group:
            for (account, region), records in by_place.items():
                partition = _partition_of(partitions, account=account, region=region)
                if partition is None or partition.client is None:
                    why = (
                        str(partition.failure)
                        if partition is not None and partition.failure is not None
                        else f"no client reaches account {account or '(default)'} in {region}: "
                        "pass the --profile and --region of the run that started it"
                    )
                    result.tasks += [_task(r, CancelOutcome.FAILED, why) for r in records]
                    continue
                calls = partition_calls(config, partition, clock)
                group.start_soon(
                    partial(
                        _cancel_partition,
                        partition.client,
                        calls,
                        journal,
                        records,
                        result,
                        clock=clock,
                    )
                )


def _partition_of(
    partitions: Sequence[Partition], *, account: str, region: str
) -> Partition | None:
    for partition in partitions:
        if (partition.account, partition.region) == (account, region):
            return partition
    return None


async def _cancel_partition(
    client: PartitionClient,
    calls: CallExecutor,
    journal: SqliteJournal,
    records: Sequence[TaskRecord],
    result: CancelResult,
    *,
    clock: Clock,
) -> None:
    refused: dict[str, tuple[TaskRecord, CallError]] = {}

    async def cancel(record: TaskRecord) -> None:
        try:
            await calls.read(partial(client.cancel_import_task, record.task_id))
        except CallError as error:
            refused[record.task_id] = (record, error)
            return
        message = f"import task {record.task_id} cancelled (ibimport cancel)"
        journal.record_task(
            replace(record, status=TaskStatus.CANCELLED, message=message, ended_at=clock.wall())
        )
        code = TASK_ERROR_CODES[TaskVerdict.CANCELLED]
        result.rows_cancelled += journal.record_cancelled(
            [(record.name, record.semantic_version, code, message)]
        )
        result.tasks.append(_task(record, CancelOutcome.CANCELLED))

    async with anyio.create_task_group() as group:
        for record in records:
            group.start_soon(cancel, record)
    if refused:
        await _look_up_refused(client, calls, journal, refused, result, clock=clock)
    result.calls += calls.calls


async def _look_up_refused(
    client: PartitionClient,
    calls: CallExecutor,
    journal: SqliteJournal,
    refused: dict[str, tuple[TaskRecord, CallError]],
    result: CancelResult,
    *,
    clock: Clock,
) -> None:
    """Tasks EC2 would not cancel: those that had ended are journalled as they are; the
    others keep the refusal (credentials and permissions said as what to do)."""
    ids = list(refused)
    seen: dict[str, TaskStatus] = {}
    for start in range(0, len(ids), TASK_IDS_PER_CALL):
        chunk = ids[start : start + TASK_IDS_PER_CALL]
        token: str | None = None
        while True:
            try:
                page = await calls.read(
                    partial(client.describe_import_tasks, chunk, next_token=token)
                )
            except CallError:
                break  # the refusals stand as they are
            for info in page.tasks:
                record, _ = refused.get(info.task_id, (None, None))
                if record is None:
                    continue
                status = task_status(info)
                seen[info.task_id] = status
                if status is not TaskStatus.ACTIVE:
                    journal.record_task(
                        replace(
                            record,
                            status=status,
                            progress=info.progress,
                            message=info.message,
                            image_id=info.image_id or record.image_id,
                            ended_at=clock.wall() if status.ended else None,
                        )
                    )
            token = page.next_token
            if token is None:
                break
    for task_id, (record, error) in refused.items():
        now = seen.get(task_id)
        if now is not None and now is not TaskStatus.ACTIVE:
            result.tasks.append(_task(record, CancelOutcome.ENDED, now.value))
            continue
        why = (
            fatal_message(error)
            if classify(error) is Disposition.FATAL
            else f"{error.code}: {error.message}"
        )
        result.tasks.append(_task(record, CancelOutcome.FAILED, why))


def _task(record: TaskRecord, outcome: CancelOutcome, detail: str = "") -> TaskCancel:
    return TaskCancel(record.name, record.semantic_version, record.task_id, outcome, detail)
