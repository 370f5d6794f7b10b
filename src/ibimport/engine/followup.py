"""Before and after a batch (issue 12): ``preflight_tasks`` and ``wait_for_images``.

The library entry points for ``ibimport preflight`` and ``ibimport wait`` (``run --wait``
is ``BatchConfig.wait``): they wire the client, a limiter and the journal to the engine
modules that decide (``importtasks``, ``waiter``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from ibimport._files import check_paths
from ibimport.domain import rowstate
from ibimport.domain.request import ImageRequest
from ibimport.domain.rowstate import ImageStatus
from ibimport.engine.events import RunListener, round_teller
from ibimport.engine.fleet import Partition, default_client, open_partitions
from ibimport.engine.partitions import Place, RowPlan, told_rate
from ibimport.engine.selection import partition_rows, select_rows
from ibimport.errors import CallError, ConfigError, FatalBatchError
from ibimport.flow.clock import Clock
from ibimport.flow.executor import CallExecutor, PartitionHealth, first_error
from ibimport.flow.limiter import MonotonicClock, build_limiter
from ibimport.flow.retry import Disposition, classify, fatal_message
from ibimport.journal import SqliteJournal
from ibimport.report.documents import PartitionSlots, TaskPreflight, TaskRow
from ibimport.report.outputs import RebuiltOutputs, journal_outputs, rebuild_outputs
from ibimport.stages.diskcheck import DiskChecker
from ibimport.stages.imagewait import WaitFigures, WaitSettings, follow_journal
from ibimport.stages.taskcheck import TaskChecker
from ibimport.stages.taskgate import TaskGate, TaskGateStage
from ibimport.stages.taskstart import SlotsSeen, account_slots

if TYPE_CHECKING:
    from ibimport.engine.control import BatchControl
    from ibimport.engine.settings import BatchConfig

__all__ = [
    "WaitResult",
    "preflight_tasks",
    "wait_for_images",
]


def _calls(config: BatchConfig, clock: Clock) -> CallExecutor:
    """The default partition's read-only calls, under ``--rate`` and the retry rules."""
    return CallExecutor(
        build_limiter(concurrency=config.run.concurrency, rate=config.rate, clock=clock),
        clock=clock,
        policy=config.run.retry_policy(),
        health=config.run.health(),
    )


async def preflight_tasks(
    config: BatchConfig, *, results_path: Path | None = None, clock: Clock | None = None
) -> TaskPreflight:
    """Classify every row's vmImportTaskId, many per call, and every row's disks and
    import role (``diskcheck``) with its partition's free task slots; write
    ``results_path`` if given.

    The rows go through the selection pass as a run's do: each row's task is asked of the
    EC2 of its own partition (its ``region`` and ``profile`` columns, else the command
    line's). Raises ``ConfigError`` (``results_path`` would overwrite the manifest, or
    cannot be written) and ``InvalidManifest`` before any call, and ``FatalBatchError``
    when a lookup cannot complete (credentials, permissions: with what to do).
    """
    outputs = {"--results": results_path} if results_path is not None else {}
    check_paths(inputs={"the manifest": config.manifest}, outputs=outputs)
    selection = select_rows(config)
    if selection.invalid_count:
        raise selection.refusal()
    clock = clock or MonotonicClock()
    started = clock.now()
    found: list[TaskRow] = []
    slots: list[PartitionSlots] = []
    calls_made = throttled = 0
    async with AsyncExitStack() as stack:
        partitions = await open_partitions(
            selection.plan.places or [Place(None, None)], base=config.client, stack=stack
        )
        for partition in partitions:
            if partition.failure is not None or partition.client is None:
                raise FatalBatchError(f"{partition.failure}; nothing was checked")
            rows: list[tuple[int, ImageRequest, str]] = []
            disk_rows: list[tuple[int, ImageRequest]] = []
            for r in partition_rows(config, partition, selection.plan, selection.prints):
                if r.task is not None and r.task.vmImportTaskId is not None:
                    rows.append((r.row, r.task, r.task.vmImportTaskId))
                elif r.task is not None and r.task.has_disks:
                    disk_rows.append((r.row, r.task))
            calls = partition_calls(config, partition, clock)
            checker = TaskChecker(partition.client, calls)
            try:
                checks = await checker.check(task_id for _, _, task_id in rows)
            except CallError as error:
                raise lookup_failed(error) from None
            found += [
                TaskRow(row, task.name, task.semanticVersion, checks[task_id])
                for row, task, task_id in rows
            ]
            if disk_rows:
                checked_disks, seen = await _check_disks(config, partition, calls, disk_rows)
                found += checked_disks
                slots.append(PartitionSlots(partition.account, partition.region, seen))
            calls_made += calls.calls
            throttled += calls.throttled
    checked = TaskPreflight(
        rows=tuple(sorted(found, key=lambda r: r.row)),
        slots=tuple(slots),
        calls=calls_made,
        throttled=throttled,
        elapsed_s=clock.now() - started,
    )
    if results_path is not None:
        checked.write_csv(results_path)
    return checked


async def _check_disks(
    config: BatchConfig,
    partition: Partition,
    calls: CallExecutor,
    disk_rows: Sequence[tuple[int, ImageRequest]],
) -> tuple[list[TaskRow], SlotsSeen]:
    """A partition's rows with disks: their disks and role, and the slots free now."""
    assert partition.client is not None
    disks = DiskChecker(partition.client, calls, region=partition.region)
    try:
        checked = await disks.check((row, task) for row, task in disk_rows)
        seen = await account_slots(
            partition.client, calls, told=config.tasks.slots.for_region(partition.region)
        )
    except CallError as error:
        raise lookup_failed(error, what="check the disks and the import tasks") from None
    rows = [
        TaskRow(row, task.name, task.semanticVersion, checked[row].check, checked[row].size)
        for row, task in disk_rows
    ]
    return rows, seen


def lookup_failed(error: CallError, *, what: str = "check the import tasks") -> FatalBatchError:
    """A lookup that could not complete: a credential fault with what to do about it."""
    if classify(error) is Disposition.FATAL:
        return FatalBatchError(fatal_message(error))
    return FatalBatchError(f"could not {what} ({error.code}: {error.message})")


@dataclass(frozen=True, slots=True)
class WaitResult:
    """Every imported row's image by final state, what the wait cost, the outputs rewritten."""

    images: Counter[ImageStatus]
    figures: WaitFigures
    outputs: RebuiltOutputs

    @property
    def all_available(self) -> bool:
        return all(status is ImageStatus.AVAILABLE for status, n in self.images.items() if n)


async def wait_for_images(
    journal_path: Path,
    *,
    config: BatchConfig,
    settings: WaitSettings,
    clock: Clock | None = None,
    report_path: Path | None = None,
    results_path: Path | None = None,
    listeners: Sequence[RunListener] = (),
) -> WaitResult:
    """``ibimport wait``: follow a journal's imported images, then rewrite its run's outputs.

    ``config`` gives the client, limiter and retry settings (its manifest is not read).
    ``listeners`` hear each polling round (``on_wait_round``).
    Images an earlier wait settled are not asked again; an interrupted wait resumes. The
    outputs (``report_path``, ``results_path``, else where the journal says) are checked
    as ``report`` checks them, before any call; a credential fault is ``FatalBatchError``
    with what to do about it.
    """
    clock = clock or MonotonicClock()
    check_paths(inputs={}, outputs={}, stores={"the journal": journal_path})
    report_path, results_path = journal_outputs(
        journal_path, report_path=report_path, results_path=results_path
    )
    journal = open_existing_journal(journal_path)
    try:
        several = await follow_recorded_partitions(
            config, journal, settings=settings, clock=clock, listeners=listeners
        )
        if several is not None:
            images, figures = several
        else:
            async with default_client(config.client) as client:
                images, figures = await follow_journal(
                    client,
                    journal,
                    calls=_calls(config, clock),
                    clock=clock,
                    settings=settings,
                    on_round=round_teller(listeners, partition=""),
                )
    except CallError as error:
        raise lookup_failed(error, what="follow the images") from None
    finally:
        await journal.aclose()
    outputs = rebuild_outputs(journal_path, report_path=report_path, results_path=results_path)
    return WaitResult(images=images, figures=figures, outputs=outputs)


def open_existing_journal(journal_path: Path) -> SqliteJournal:
    """The journal ``run`` wrote, for writing; never a new one made up at a mistyped path."""
    if not journal_path.is_file():
        raise ConfigError(f"no journal at {journal_path}: pass the journal ibimport run wrote")
    return SqliteJournal.open(journal_path, manifest_path="", manifest_fingerprint="", settings={})


def settled_rows(journal: SqliteJournal, *, retry_failed: bool) -> frozenset[tuple[str, str]]:
    """(name, version) of the rows an earlier run settled: their tasks are not checked."""
    if not journal.has_history:
        return frozenset()
    return frozenset(
        (e.name, e.semantic_version)
        for e in journal.entries()
        if rowstate.settled(e.state, retry_failed=retry_failed)
    )


def task_gate_stage(
    config: BatchConfig,
    partition: Partition,
    plan: RowPlan | None,
    settled: frozenset[tuple[str, str]],
    *,
    clock: Clock,
    health: PartitionHealth,
    listeners: Sequence[RunListener] = (),
) -> TaskGateStage:
    """``run --preflight``'s first stage for a partition: its rows' tasks (not those an
    earlier run settled), checked by its own EC2 (import tasks are regional) under its own
    read limiter; ``listeners`` hear the rounds of ``--wait-for-tasks``."""
    assert partition.client is not None

    def rows() -> Iterator[ImageRequest]:
        for r in partition_rows(config, partition, plan, None):
            task = r.task
            if task is not None and (task.name, task.semanticVersion) not in settled:
                yield task

    calls = partition_calls(config, partition, clock, health=health)
    checker = TaskChecker(partition.client, calls)
    gate = TaskGate(
        checker,
        clock=clock,
        wait=config.task_wait,
        on_round=round_teller(listeners, partition=partition.label),
    )
    return TaskGateStage(
        gate, rows=rows, disks=DiskChecker(partition.client, calls, region=partition.region)
    )


def partition_calls(
    config: BatchConfig,
    partition: Partition,
    clock: Clock,
    *,
    health: PartitionHealth | None = None,
) -> CallExecutor:
    """A partition's read-only calls (task checks, image states): their own limiter."""
    return CallExecutor(
        build_limiter(
            concurrency=config.run.concurrency,
            rate=told_rate(
                partition.region, rates=config.rates, rate=config.rate, shard=config.shard
            ),
            clock=clock,
        ),
        clock=clock,
        policy=config.run.retry_policy(),
        health=health or config.run.health(),
    )


async def follow_partitions(
    config: BatchConfig,
    partitions: Sequence[Partition],
    journal: SqliteJournal,
    *,
    settings: WaitSettings,
    clock: Clock,
    control: BatchControl | None,
    listeners: Sequence[RunListener] = (),
) -> tuple[Counter[ImageStatus], WaitFigures, bool]:
    """``run --wait`` and ``wait``: follow each partition's imported images with that
    partition's client (``config`` gives its limiter and retry rules); ``listeners`` hear
    each partition's rounds.

    The journal's rows carry the account and Region they were imported into (schema 4);
    with one partition every row is its own.
    """
    figures = WaitFigures()
    images: Counter[ImageStatus] = Counter()
    several = len(partitions) > 1

    async def follow(partition: Partition) -> None:
        assert partition.client is not None
        place = (partition.account, partition.region)
        found, cost = await follow_journal(
            partition.client,
            journal,
            calls=partition_calls(config, partition, clock),
            clock=clock,
            settings=settings,
            only=(lambda e: (e.account, e.region) == place) if several else None,
            on_round=round_teller(listeners, partition=partition.label),
        )
        images.update(found)
        figures.rounds += cost.rounds
        figures.list_calls += cost.list_calls
        figures.get_calls += cost.get_calls
        figures.elapsed_s = max(figures.elapsed_s, cost.elapsed_s)
        figures.timed_out = figures.timed_out or cost.timed_out

    with anyio.CancelScope() as scope:
        if control is not None:
            control.cancels(scope)
        try:
            async with anyio.create_task_group() as group:
                for partition in partitions:
                    if partition.client is not None:
                        group.start_soon(follow, partition)
        except BaseExceptionGroup as group:
            error = first_error(group)
            if isinstance(error, CallError):
                raise lookup_failed(error, what="follow the images") from None
            raise error from None
    return images, figures, scope.cancelled_caught


def record_partitions(journal: SqliteJournal, partitions: Sequence[Partition]) -> None:
    """Where a batch's partitions are, kept in its journal's header, so that a later
    ``ibimport wait JOURNAL`` follows each partition's images with that partition's client."""
    header = journal.header
    places = [
        {"profile": p.profile, "region": p.region, "account": p.account}
        for p in partitions
        if p.failure is None
    ]
    journal.update_header(
        manifest_fingerprint=header.manifest_fingerprint,
        settings={**header.settings, "partitions": places},
    )


async def follow_recorded_partitions(
    config: BatchConfig,
    journal: SqliteJournal,
    *,
    settings: WaitSettings,
    clock: Clock,
    listeners: Sequence[RunListener] = (),
) -> tuple[Counter[ImageStatus], WaitFigures] | None:
    """``ibimport wait`` on the journal of a batch of several partitions: each partition's
    images followed with its own client (None: the journal names no partitions)."""
    recorded = journal.header.settings.get("partitions")
    if not isinstance(recorded, list) or len(recorded) < 2:
        return None
    places = [Place(p.get("profile"), p.get("region")) for p in recorded]
    async with AsyncExitStack() as stack:
        partitions = await open_partitions(places, base=config.client, stack=stack)
        images, figures, _ = await follow_partitions(
            config,
            partitions,
            journal,
            settings=settings,
            clock=clock,
            control=None,
            listeners=listeners,
        )
    return images, figures
