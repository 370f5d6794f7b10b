"""Before and after a batch (issue 12): ``preflight_tasks`` and ``wait_for_images``.

The library entry points for ``ibimport preflight`` and ``ibimport wait`` (``run --wait``
is ``BatchConfig.wait``): they wire the client, a limiter and the journal to the engine
modules that decide (``importtasks``, ``waiter``).
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, cast

import anyio

from ibimport._files import atomic_private_file, check_paths
from ibimport.aws.client import ImageStatusClient, ImportTaskClient
from ibimport.domain import rowstate
from ibimport.domain.rowstate import ImageStatus
from ibimport.engine.fleet import Partition, base_settings, default_client, open_partitions
from ibimport.engine.partitions import Place, RowPlan, told_rate
from ibimport.engine.selection import partition_rows, select_rows
from ibimport.errors import CallError, ConfigError, FatalBatchError
from ibimport.flow.calls import RetriedCalls, first_error
from ibimport.flow.clock import Clock
from ibimport.flow.limiter import MonotonicClock, build_limiter
from ibimport.flow.retry import Backoff, Disposition, classify, fatal_message
from ibimport.journal import SqliteJournal
from ibimport.report import neutralise_cell
from ibimport.report.outputs import RebuiltOutputs, journal_outputs, rebuild_outputs
from ibimport.stages.imagewait import WaitFigures, WaitSettings, follow_journal
from ibimport.stages.taskcheck import TaskCheck, TaskChecker, TaskState
from ibimport.stages.taskgate import TaskGate

if TYPE_CHECKING:
    from ibimport.engine.batch import BatchConfig, BatchControl

__all__ = [
    "TASK_RESULTS_COLUMNS",
    "TaskPreflight",
    "TaskRow",
    "WaitResult",
    "preflight_tasks",
    "wait_for_images",
]

TASK_RESULTS_COLUMNS = (
    "row",
    "name",
    "semanticVersion",
    "vmImportTaskId",
    "taskStatus",
    "taskProgress",
    "taskMessage",
)


@dataclass(frozen=True, slots=True)
class TaskRow:
    """One manifest row and its import task's classification."""

    row: int
    name: str
    semantic_version: str
    task: TaskCheck


@dataclass(slots=True)
class TaskPreflight:
    """Every valid row's task, and what looking them up cost."""

    rows: list[TaskRow] = field(default_factory=list)
    calls: int = 0
    throttled: int = 0
    elapsed_s: float = 0.0

    @property
    def counts(self) -> Counter[TaskState]:
        return Counter(row.task.state for row in self.rows)

    @property
    def all_ready(self) -> bool:
        return all(row.task.state is TaskState.READY for row in self.rows)


def _calls(config: BatchConfig, clock: Clock) -> RetriedCalls:
    return RetriedCalls(
        build_limiter(concurrency=config.run.concurrency, rate=config.rate, clock=clock),
        clock=clock,
        backoff=Backoff(base_s=config.run.backoff_base_s, cap_s=config.run.backoff_cap_s),
    )


async def preflight_tasks(
    config: BatchConfig, *, results_path: Path | None = None, clock: Clock | None = None
) -> TaskPreflight:
    """Classify every row's vmImportTaskId, many per call; write ``results_path`` if given.

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
    found = TaskPreflight()
    async with AsyncExitStack() as stack:
        partitions = await open_partitions(
            selection.plan.places or [Place(None, None)],
            base=await base_settings(config.client, local=config.local, stack=stack),
            stack=stack,
        )
        for partition in partitions:
            if partition.failure is not None or partition.client is None:
                raise FatalBatchError(f"{partition.failure}; nothing was checked")
            rows = [
                (r.row, r.task)
                for r in partition_rows(config, partition, selection.plan, selection.prints)
                if r.task is not None
            ]
            calls = _read_calls(config, partition, clock)
            checker = TaskChecker(_task_client(partition.client), calls)
            try:
                checks = await checker.check(task.vmImportTaskId for _, task in rows)
            except CallError as error:
                raise _lookup_failed(error) from None
            found.rows += [
                TaskRow(row, task.name, task.semanticVersion, checks[task.vmImportTaskId])
                for row, task in rows
            ]
            found.calls += calls.calls
            found.throttled += calls.throttled
    found.rows.sort(key=lambda r: r.row)
    found.elapsed_s = clock.now() - started
    if results_path is not None:
        _write_task_results(results_path, found)
    return found


def _lookup_failed(error: CallError, *, what: str = "check the import tasks") -> FatalBatchError:
    """A lookup that could not complete: a credential fault with what to do about it."""
    if classify(error) is Disposition.FATAL:
        return FatalBatchError(fatal_message(error))
    return FatalBatchError(f"could not {what} ({error.code}: {error.message})")


def _task_client(client: object) -> ImportTaskClient:
    """open_client's client also speaks EC2 (the runner's protocol need not)."""
    return cast(ImportTaskClient, client)


def _write_task_results(path: Path, found: TaskPreflight) -> None:
    try:
        with atomic_private_file(path) as handle:
            writer = csv.writer(handle)
            writer.writerow(TASK_RESULTS_COLUMNS)
            for r in found.rows:
                writer.writerow(
                    [
                        r.row,
                        neutralise_cell(r.name),
                        neutralise_cell(r.semantic_version),
                        neutralise_cell(r.task.task_id),
                        r.task.state.value,
                        neutralise_cell(r.task.progress),
                        neutralise_cell(r.task.message),
                    ]
                )
    except OSError as error:
        raise ConfigError(f"cannot write {error.filename}: {error.strerror}") from None


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
) -> WaitResult:
    """``ibimport wait``: follow a journal's imported images, then rewrite its run's outputs.

    ``config`` gives the client, limiter and retry settings (its manifest is not read).
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
    journal = _open_existing(journal_path)
    try:
        several = await follow_recorded_partitions(config, journal, settings=settings, clock=clock)
        if several is not None:
            images, figures = several
        else:
            async with default_client(config.client, local=config.local) as client:
                images, figures = await follow_journal(
                    _status_client(client),
                    journal,
                    calls=_calls(config, clock),
                    clock=clock,
                    settings=settings,
                )
    except CallError as error:
        raise _lookup_failed(error, what="follow the images") from None
    finally:
        await journal.aclose()
    outputs = rebuild_outputs(journal_path, report_path=report_path, results_path=results_path)
    return WaitResult(images=images, figures=figures, outputs=outputs)


def _status_client(client: object) -> ImageStatusClient:
    """open_client's client also reads image states (the runner's protocol need not)."""
    return cast(ImageStatusClient, client)


def _open_existing(journal_path: Path) -> SqliteJournal:
    """The journal ``run`` wrote, for writing; never a new one made up at a mistyped path."""
    if not journal_path.is_file():
        raise ConfigError(f"no journal at {journal_path}: pass the journal ibimport run wrote")
    return SqliteJournal.open(journal_path, manifest_path="", manifest_fingerprint="", settings={})


async def task_gates(
    config: BatchConfig,
    partitions: Sequence[Partition],
    plan: RowPlan | None,
    journal: SqliteJournal | None,
    *,
    clock: Clock,
) -> dict[int, TaskGate]:
    """``run --preflight``: each partition's tasks looked up (in batches) before it sends.

    Import tasks are regional, so each partition asks its own EC2 about its own rows (not
    those an earlier run settled). A partition whose lookup cannot complete sends nothing:
    it stops with that error, as a failed listing of existing images does.
    """
    settled: set[tuple[str, str]] = set()
    if journal is not None and journal.has_history:
        retry_failed = config.run.retry_failed
        settled = {
            (e.name, e.semantic_version)
            for e in journal.entries()
            if rowstate.settled(e.state, retry_failed=retry_failed)
        }
    gates: dict[int, TaskGate] = {}
    for partition in partitions:
        if partition.client is None or partition.failure is not None:
            continue
        task_ids = [
            r.task.vmImportTaskId
            for r in partition_rows(config, partition, plan, None)
            if r.task is not None and (r.task.name, r.task.semanticVersion) not in settled
        ]
        # open_client's client speaks EC2 too; runner fakes need not.
        checker = TaskChecker(
            cast(ImportTaskClient, partition.client), _read_calls(config, partition, clock)
        )
        gate = TaskGate(checker, clock=clock, wait=config.task_wait)
        try:
            await gate.check(task_ids)
        except CallError as error:
            partition.failure = FatalBatchError(
                fatal_message(error)
                if classify(error) is Disposition.FATAL
                else f"could not check the import tasks ({error.code}: {error.message}), "
                "so nothing was sent: re-run"
            )
            continue
        gates[id(partition)] = gate
    return gates


def _read_calls(config: BatchConfig, partition: Partition, clock: Clock) -> RetriedCalls:
    """A partition's read-only calls (task checks, image states): their own limiter."""
    return RetriedCalls(
        build_limiter(
            concurrency=config.run.concurrency,
            rate=told_rate(
                partition.region, rates=config.rates, rate=config.rate, shard=config.shard
            ),
            clock=clock,
        ),
        clock=clock,
        backoff=Backoff(base_s=config.run.backoff_base_s, cap_s=config.run.backoff_cap_s),
    )


async def follow_partitions(
    config: BatchConfig,
    partitions: Sequence[Partition],
    journal: SqliteJournal,
    *,
    clock: Clock,
    control: BatchControl | None,
) -> tuple[Counter[ImageStatus], WaitFigures, bool]:
    """``run --wait``: follow each partition's imported images with that partition's client.

    The journal's rows carry the account and Region they were imported into (schema 4);
    with one partition every row is its own.
    """
    assert config.wait is not None
    settings = config.wait
    figures = WaitFigures()
    images: Counter[ImageStatus] = Counter()
    several = len(partitions) > 1

    async def follow(partition: Partition) -> None:
        assert partition.client is not None
        place = (partition.account, partition.region)
        found, cost = await follow_journal(
            # open_client's client is an ImageStatusClient too; runner fakes need not be.
            cast(ImageStatusClient, partition.client),
            journal,
            calls=_read_calls(config, partition, clock),
            clock=clock,
            settings=settings,
            only=(lambda e: (e.account, e.region) == place) if several else None,
        )
        images.update(found)
        figures.rounds += cost.rounds
        figures.list_calls += cost.list_calls
        figures.get_calls += cost.get_calls
        figures.elapsed_s = max(figures.elapsed_s, cost.elapsed_s)
        figures.timed_out = figures.timed_out or cost.timed_out

    with anyio.CancelScope() as scope:
        if control is not None:
            control._wait_scope = scope
            if control.stop_requested:
                scope.cancel()
        try:
            async with anyio.create_task_group() as group:
                for partition in partitions:
                    if partition.client is not None:
                        group.start_soon(follow, partition)
        except BaseExceptionGroup as group:
            error = first_error(group)
            if isinstance(error, CallError):
                raise _lookup_failed(error, what="follow the images") from None
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
    config: BatchConfig, journal: SqliteJournal, *, settings: WaitSettings, clock: Clock
) -> tuple[Counter[ImageStatus], WaitFigures] | None:
    """``ibimport wait`` on the journal of a batch of several partitions: each partition's
    images followed with its own client (None: the journal names no partitions)."""
    recorded = journal.header.settings.get("partitions")
    if not isinstance(recorded, list) or len(recorded) < 2:
        return None
    places = [Place(p.get("profile"), p.get("region")) for p in recorded]
    async with AsyncExitStack() as stack:
        partitions = await open_partitions(
            places,
            base=await base_settings(config.client, local=config.local, stack=stack),
            stack=stack,
        )
        images, figures, _ = await follow_partitions(
            replace(config, wait=settings), partitions, journal, clock=clock, control=None
        )
    return images, figures
