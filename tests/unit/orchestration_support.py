"""What the orchestration's unit tests share: manifest rows, a journal in memory, a listener
that collects every row once, and a stage that writes down what reached it."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ibimport.domain.results import RowResult, RowStatus
from ibimport.domain.stages import Metering, StageName
from ibimport.domain.tokens import client_token
from ibimport.engine.events import BaseListener, CallEvent
from ibimport.journal import JournalEntry, NullJournal
from ibimport.manifest import FieldError, ImageRequest, ManifestRow
from ibimport.stages.base import PartitionRun, RowWork
from ibimport.testing import FakeClock


def request(i: int, *, name: str | None = None) -> ImageRequest:
    return ImageRequest(
        name=name or f"vm-{i:03d}",
        semanticVersion="1.0.0",
        platform="Linux",
        vmImportTaskId=f"import-ami-{i:08x}",
    )


def manifest_rows(
    n: int, *, invalid: frozenset[int] = frozenset(), first: int = 1
) -> list[ManifestRow]:
    """Rows ``first``.. (n of them); those in ``invalid`` broke a rule (no request)."""
    rows = []
    for i in range(first, first + n):
        if i in invalid:
            error = FieldError("platform", "must be Linux or Windows", "BeOS")
            rows.append(ManifestRow(i, None, (error,), f"vm-{i:03d}", "1.0.0"))
        else:
            rows.append(ManifestRow(i, request(i), (), f"vm-{i:03d}", "1.0.0"))
    return rows


def entry(
    i: int,
    state: RowStatus,
    *,
    row: int | None = None,
    first_sent_at: float | None = None,
    token: str | None = None,
    attempts: int = 1,
) -> JournalEntry:
    """What an earlier run journalled of row ``i``'s image."""
    task = request(i)
    return JournalEntry(
        row=i if row is None else row,
        name=task.name,
        semantic_version=task.semanticVersion,
        client_token=token if token is not None else client_token(task),
        state=state,
        attempts=attempts,
        image_arn=f"arn:earlier/{task.name}" if state.is_done else "",
        request_id="",
        error_code="ServiceException" if state is RowStatus.FAILED else "",
        error_message="",
        first_sent_at=first_sent_at,
        updated_at=0.0,
    )


@dataclass
class Existing:
    """One ``record_existing`` the journal was asked for, with what it matched."""

    partition: str
    listed_at: float | None
    found: dict[str, str]


class MemoryJournal(NullJournal):
    """Just enough journal: entries by name (an earlier run's), what this run recorded."""

    def __init__(
        self, entries: list[JournalEntry] | None = None, *, names: list[str] | None = None
    ) -> None:
        self.entries = {e.name: e for e in entries or []}
        self.has_history = bool(entries)
        #: Names whose listing match ``record_existing`` commits (the journal's rows).
        self.names = names or []
        self.recorded: list[RowResult] = []
        self.existing: list[Existing] = []
        self.flushed = 0

    def get(self, name: str, semantic_version: str) -> JournalEntry | None:
        return self.entries.get(name)

    def record(self, result: RowResult) -> None:
        self.recorded.append(result)

    async def record_existing(
        self,
        arn_for: Callable[[str, str], str | None],
        *,
        belongs: Callable[[int], bool] | None,
        partition: str,
        listed_at: float | None = None,
    ) -> int:
        found = {name: arn for name in self.names if (arn := arn_for(name, "1.0.0")) is not None}
        self.existing.append(Existing(partition, listed_at, found))
        return len(found)

    async def flush(self) -> None:
        self.flushed += 1


class Collector(BaseListener):
    """Every row's result, each reported once, and how the run finished."""

    def __init__(self) -> None:
        self.results: dict[int, RowResult] = {}
        self.order: list[int] = []
        self.calls: list[CallEvent] = []
        self.started: list[int | None] = []
        self.finished: list[bool] = []

    def on_start(self, *, total_rows: int | None) -> None:
        self.started.append(total_rows)

    def on_call(self, event: CallEvent) -> None:
        self.calls.append(event)

    def on_row_done(self, result: RowResult) -> None:
        assert result.row not in self.results, f"row {result.row} reported twice"
        self.results[result.row] = result
        self.order.append(result.row)

    def on_finish(self, *, elapsed_s: float, interrupted: bool) -> None:
        self.finished.append(interrupted)

    def statuses(self) -> dict[int, RowStatus]:
        return {row: r.status for row, r in sorted(self.results.items())}


Answer = Callable[[RowWork], RowStatus | None]


@dataclass
class StepStage:
    """A fake ``RowStage``: writes ``(label, row)`` to ``log`` for each row it processes,
    takes ``latency_s`` of virtual time, and answers what ``answer`` says (None: on)."""

    label: str
    log: list[tuple[str, object]]
    clock: FakeClock
    answer: Answer = lambda work: None
    latency_s: float = 0.0
    deferred: frozenset[int] = frozenset()
    #: Called at the start of ``prepare`` (to stop the run, or start work beside it).
    on_prepare: Callable[[PartitionRun], None] | None = None
    #: Called as each row enters ``process``, before its latency.
    on_row: Callable[[RowWork], Coroutine[Any, Any, None]] | None = None
    run: PartitionRun | None = None
    entered: list[int] = field(default_factory=list)
    left: list[int] = field(default_factory=list)
    released: int = 0

    name: ClassVar[StageName] = StageName.EXISTING
    metering: ClassVar[Metering] = Metering.CONCURRENCY

    async def prepare(self, run: PartitionRun) -> None:
        self.log.append((self.label, "prepare"))
        self.run = run
        if self.on_prepare is not None:
            self.on_prepare(run)

    def defers(self, work: RowWork) -> bool:
        return work.row in self.deferred

    def release(self) -> None:
        self.released += 1

    async def process(self, work: RowWork) -> RowResult | None:
        assert self.run is not None, "prepare() first"
        self.entered.append(work.row)
        self.log.append((self.label, work.row))
        if self.on_row is not None:
            await self.on_row(work)
        if self.latency_s:
            await self.clock.sleep(self.latency_s)
        self.left.append(work.row)
        status = self.answer(work)
        return None if status is None else self.run.result(work, status)


def succeed(work: RowWork) -> RowStatus | None:
    return RowStatus.SUCCEEDED
