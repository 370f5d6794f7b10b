"""Before and after a batch (issue 12): ``preflight_tasks`` and ``wait_for_images``.

The library entry points for ``ibimport preflight`` and ``ibimport wait`` (``run --wait``
is ``BatchConfig.wait``): they wire the client, a limiter and the journal to the engine
modules that decide (``importtasks``, ``waiter``).
"""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from ibimport._files import atomic_private_file
from ibimport.batch import BatchConfig, _client_for
from ibimport.calls import RetriedCalls
from ibimport.client import ImageStatusClient, ImportTaskClient
from ibimport.clock import Clock
from ibimport.errors import ConfigError, InvalidManifest
from ibimport.importtasks import TaskCheck, TaskChecker, TaskState
from ibimport.journal import SqliteJournal
from ibimport.limiter import MonotonicClock, build_limiter
from ibimport.manifest import read_manifest
from ibimport.outputs import RebuiltOutputs, rebuild_outputs
from ibimport.report import neutralise_cell
from ibimport.retry import Backoff
from ibimport.rowstate import ImageStatus
from ibimport.waiter import WaitFigures, WaitSettings, follow_journal

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

    Raises ``InvalidManifest`` before any call when a row breaks a rule, and the last
    ``CallError`` when a lookup cannot complete (a fatal one: credentials, permissions).
    """
    rows = []
    invalid = []
    total = 0
    for manifest_row in read_manifest(
        config.manifest, fmt=config.fmt, extra_tags=config.extra_tags
    ):
        total += 1
        if manifest_row.task is None:
            invalid.append(manifest_row)
        else:
            rows.append((manifest_row.row, manifest_row.task))
    if invalid:
        raise InvalidManifest(
            lines=tuple(line for row in invalid[:1000] for line in row.describe()),
            shown_rows=min(len(invalid), 1000),
            invalid_rows=len(invalid),
            total_rows=total,
        )
    clock = clock or MonotonicClock()
    started = clock.now()
    calls = _calls(config, clock)
    async with _client_for(config) as client:
        checker = TaskChecker(_task_client(client), calls)
        checks = await checker.check(task.vmImportTaskId for _, task in rows)
    found = TaskPreflight(
        rows=[
            TaskRow(row, task.name, task.semanticVersion, checks[task.vmImportTaskId])
            for row, task in rows
        ],
        calls=calls.calls,
        throttled=calls.throttled,
        elapsed_s=clock.now() - started,
    )
    if results_path is not None:
        _write_task_results(results_path, found)
    return found


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
) -> WaitResult:
    """``ibimport wait``: follow a journal's imported images, then rewrite its run's outputs.

    ``config`` gives the client, limiter and retry settings (its manifest is not read).
    Images an earlier wait settled are not asked again; an interrupted wait resumes.
    """
    clock = clock or MonotonicClock()
    journal = _open_existing(journal_path)
    try:
        async with _client_for(config) as client:
            images, figures = await follow_journal(
                _status_client(client),
                journal,
                calls=_calls(config, clock),
                clock=clock,
                settings=settings,
            )
    finally:
        await journal.aclose()
    outputs = rebuild_outputs(journal_path)
    return WaitResult(images=images, figures=figures, outputs=outputs)


def _status_client(client: object) -> ImageStatusClient:
    """open_client's client also reads image states (the runner's protocol need not)."""
    return cast(ImageStatusClient, client)


def _open_existing(journal_path: Path) -> SqliteJournal:
    """The journal ``run`` wrote, for writing; never a new one made up at a mistyped path."""
    if not journal_path.is_file():
        raise ConfigError(f"no journal at {journal_path}: pass the journal ibimport run wrote")
    return SqliteJournal.open(journal_path, manifest_path="", manifest_fingerprint="", settings={})
