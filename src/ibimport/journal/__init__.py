"""The journal that makes a run resumable: one SQLite file recording every row's state.

The runner talks to it through the small ``Journal`` protocol, so another store (a shared
database for several machines) can be added later without touching the runner.

The package's parts: ``_model`` (the values it hands out), ``_schema`` (tables, identity,
version), ``_transitions`` (the SQL that moves a row from state to state), ``_file``
(lock, header checks, creating and refusing files), ``_group_commit`` (batching writes
into commits, on the injected clock), ``_records`` (reading each row's stages and each
run's span), ``_connections`` (the writer and the reader under their locks, one write
transaction), ``_reads`` (the committed rows, counts and runs), ``_followups`` (what was
learnt after the import), ``_tasks`` (each row's EC2 import task) and ``_sqlite``
(``SqliteJournal``, which joins them and writes).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Protocol, runtime_checkable

from ibimport.domain.results import RowResult
from ibimport.domain.stages import StageName
from ibimport.journal._connections import FaultHook, exit_after_commits
from ibimport.journal._file import idle
from ibimport.journal._model import (
    DiffRow,
    Followup,
    JournalEntry,
    ManifestDiff,
    RunBand,
    RunHeader,
    StageRecord,
    TaskRecord,
    TaskStatus,
)
from ibimport.journal._schema import APPLICATION_ID, SCHEMA_VERSION
from ibimport.journal._sqlite import SqliteJournal

__all__ = [
    "APPLICATION_ID",
    "SCHEMA_VERSION",
    "DiffRow",
    "FaultHook",
    "Followup",
    "Journal",
    "JournalEntry",
    "ManifestDiff",
    "NullJournal",
    "RunBand",
    "RunHeader",
    "SqliteJournal",
    "StageName",
    "StageRecord",
    "TaskRecord",
    "TaskStatus",
    "exit_after_commits",
    "idle",
]


@runtime_checkable
class Journal(Protocol):
    """What the runner needs from a journal.

    Wrap the run in ``async with journal.running():`` so commits are grouped by a
    background flusher; without it every ``mark_in_flight`` commits on its own.
    """

    #: False when no earlier run wrote this journal: then ``get`` can only find rows this
    #: run wrote, and the runner skips the per-row lookup (about 5% of a row's CPU).
    has_history: bool

    def get(self, name: str, semantic_version: str) -> JournalEntry | None: ...

    def reimportable_images(self) -> set[tuple[str, str]]: ...

    def record_image_statuses(self, images: Iterable[tuple[str, str, str, str]]) -> None: ...

    def running(self) -> AbstractAsyncContextManager[None]: ...

    async def mark_in_flight(
        self, *, row: int, name: str, semantic_version: str, client_token: str, attempt: int
    ) -> None: ...

    def record(self, result: RowResult) -> None: ...

    def stage_started(self, identity: tuple[str, str], stage: StageName, *, at: float) -> None:
        """The row (name, semantic_version) entered ``stage`` at ``at`` (wall clock)."""
        ...

    def stage_ended(
        self,
        identity: tuple[str, str],
        stage: StageName,
        *,
        at: float,
        attempts: int,
        outcome: str,
        error_code: str = "",
        started_at: float | None = None,
    ) -> None:
        """The row left ``stage`` at ``at`` after ``attempts`` calls, with ``outcome``."""
        ...

    async def record_existing(
        self,
        arn_for: Callable[[str, str], str | None],
        *,
        belongs: Callable[[int], bool] | None,
        partition: str,
        listed_at: float | None = None,
    ) -> int: ...

    async def flush(self) -> None: ...

    async def aclose(self) -> None: ...


class NullJournal:
    """A journal that remembers nothing: for ``--no-journal`` and benchmarks."""

    has_history = False

    def get(self, name: str, semantic_version: str) -> JournalEntry | None:
        return None

    def reimportable_images(self) -> set[tuple[str, str]]:
        return set()

    def record_image_statuses(self, images: Iterable[tuple[str, str, str, str]]) -> None:
        return None

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        yield

    async def mark_in_flight(
        self, *, row: int, name: str, semantic_version: str, client_token: str, attempt: int
    ) -> None:
        return None

    def record(self, result: RowResult) -> None:
        return None

    def stage_started(self, identity: tuple[str, str], stage: StageName, *, at: float) -> None:
        return None

    def stage_ended(
        self,
        identity: tuple[str, str],
        stage: StageName,
        *,
        at: float,
        attempts: int,
        outcome: str,
        error_code: str = "",
        started_at: float | None = None,
    ) -> None:
        return None

    async def record_existing(
        self,
        arn_for: Callable[[str, str], str | None],
        *,
        belongs: Callable[[int], bool] | None,
        partition: str,
        listed_at: float | None = None,
    ) -> int:
        return 0

    async def flush(self) -> None:
        return None

    async def aclose(self) -> None:
        return None
