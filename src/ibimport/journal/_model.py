"""What the journal hands out: one row's entry, the run's header, a manifest's diff.

Plain values, no SQLite: the ``Journal`` protocol, the runner and the CLI speak them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from ibimport.domain.results import RowResult, RowStatus
from ibimport.domain.stages import StageName

__all__ = [
    "DiffRow",
    "Followup",
    "JournalEntry",
    "ManifestDiff",
    "RunBand",
    "RunHeader",
    "StageRecord",
    "TaskRecord",
    "TaskStatus",
]


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """What the journal knows about one row (identity: name + semantic_version)."""

    row: int
    name: str
    semantic_version: str
    client_token: str
    state: RowStatus
    attempts: int
    image_arn: str
    request_id: str
    error_code: str
    error_message: str
    #: Wall-clock time this clientToken was first sent; None if it never was.
    first_sent_at: float | None
    updated_at: float
    #: Where the row was imported (schema 4; empty before its outcome was recorded).
    account: str = ""
    region: str = ""

    def to_result(self, *, resumed: bool = False) -> RowResult:
        """The row as a ``RowResult``; pass ``resumed=True`` for rows carried into a new run."""
        return RowResult(
            row=self.row,
            name=self.name,
            semantic_version=self.semantic_version,
            status=self.state,
            client_token=self.client_token,
            image_arn=self.image_arn,
            request_id=self.request_id,
            attempts=self.attempts,
            error_code=self.error_code,
            error_message=self.error_message,
            resumed=resumed,
            account=self.account,
            region=self.region,
        )


@dataclass(frozen=True, slots=True)
class Followup:
    """What was learnt of a row beside its import (schema 3); empty text: not learnt yet."""

    image_status: str = ""  # rowstate.ImageStatus
    image_reason: str = ""
    task_status: str = ""  # importtasks.TaskState
    task_progress: str = ""
    task_message: str = ""


@dataclass(frozen=True, slots=True)
class StageRecord:
    """One row's passage through one stage (schema 5): what a timeline and per-stage
    durations are drawn from. A stage entered again (a resume) keeps its latest start."""

    name: str
    semantic_version: str
    stage: StageName
    #: Wall-clock (epoch) seconds.
    started_at: float
    #: None while the row is in the stage (or was when the run was killed).
    ended_at: float | None
    attempts: int
    #: The stage's own word for how it ended (a row status, an image status, a task
    #: state); empty while the row is in the stage.
    outcome: str
    error_code: str

    @property
    def duration_s(self) -> float | None:
        return None if self.ended_at is None else max(self.ended_at - self.started_at, 0.0)


@dataclass(frozen=True, slots=True)
class RunBand:
    """When one run of the batch started and ended (wall clock), for a report's bands;
    ``ended_at`` is None for runs recorded before schema 5."""

    started_at: float
    ended_at: float | None
    interrupted: bool
    fatal: str | None


@dataclass(frozen=True, slots=True)
class RunHeader:
    """The run a journal belongs to: which manifest, with which settings."""

    manifest_path: str
    manifest_fingerprint: str
    settings: dict[str, Any]
    created_at: float
    schema_version: int


#: (row, name, semantic_version)
DiffRow = tuple[int, str, str]


@dataclass(frozen=True, slots=True)
class ManifestDiff:
    """How the current manifest differs from the one journalled.

    The lists hold at most ``keep`` rows each (in row order); the ``n_*`` counts are exact.
    """

    changed: list[DiffRow] = field(default_factory=list)
    added: list[DiffRow] = field(default_factory=list)
    removed: list[DiffRow] = field(default_factory=list)
    n_changed: int = 0
    n_added: int = 0
    n_removed: int = 0

    @property
    def is_empty(self) -> bool:
        """True when resuming with this manifest needs no ``--force``."""
        return not (self.n_changed or self.n_added or self.n_removed)

    def describe(self, limit: int = 10) -> list[str]:
        """Human lines explaining the difference, at most ``limit`` examples per kind."""
        lines: list[str] = []
        for what, rows, count in (
            (
                "changed (different content, so a different clientToken)",
                self.changed,
                self.n_changed,
            ),
            ("added", self.added, self.n_added),
            ("removed", self.removed, self.n_removed),
        ):
            if not count:
                continue
            lines.append(f"{count} row{'s' if count != 1 else ''} {what}:")
            shown = rows[:limit]
            lines.extend(f"  row {row}: {name} {version}" for row, name, version in shown)
            if count > len(shown):
                lines.append(f"  ... and {count - len(shown)} more")
        return lines


class TaskStatus(StrEnum):
    """An EC2 import task (ImportImage) as the journal keeps it: EC2's statuses, and
    ``cancelled`` for one ``ibimport cancel`` (or a person) cancelled."""

    ACTIVE = "active"
    COMPLETED = "completed"
    DELETING = "deleting"
    DELETED = "deleted"
    CANCELLED = "cancelled"

    @property
    def ended(self) -> bool:
        """The task holds no slot any more (a deleting one is taken to, until deleted)."""
        return self not in (TaskStatus.ACTIVE, TaskStatus.DELETING)

    @property
    def standing(self) -> bool:
        """The task imports (or imported) its row's VM: no other may be started for it."""
        return self in (TaskStatus.ACTIVE, TaskStatus.COMPLETED)


@dataclass(frozen=True, slots=True)
class TaskRecord:
    """One row's EC2 import task (schema 6): kept beyond EC2's 7 days of task history."""

    name: str
    semantic_version: str
    task_id: str
    #: ImportImage's ClientToken, and how many tasks of the row ended deleted before it.
    client_token: str
    generation: int
    status: TaskStatus
    progress: str = ""
    message: str = ""
    #: The AMI a completed task made.
    image_id: str = ""
    #: Wall-clock seconds: when the task was started (or adopted), and when it ended.
    started_at: float | None = None
    ended_at: float | None = None
    account: str = ""
    region: str = ""
