"""Import tasks ImportImage never started: declared, for rehearsals of the stages after the
import. Image Builder reads them and DescribeImportImageTasks lists them as it does the
tasks ImportImage started (``models``).

One of three ways (``EmulatorConfig``):

- ``--import-tasks FILE``: exactly the tasks listed; any other ID does not exist. An
  active task completes ``CompletesAfterS`` seconds after the emulator first started
  (``--state`` keeps that start across a restart).
- ``--task-mix``: a task is made up the first time its ID is seen, its status drawn from
  a hash of the seed and the ID, so the same ID gets the same status in any order and
  after a restart; an active one completes ``--task-active-s`` after it was first seen.
- neither: no task exists, as for an ID AWS never issued: DescribeImportImageTasks refuses
  it and an image built from it FAILS (issue 21). ``--task-mix completed=1`` is the
  convenience of every task existing and done (rehearsals and benchmarks).

Declared tasks are the same in every account and region (the file names neither).
No HTTP here.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from ibimport.emulator.ec2.lifecycle import TaskState
from ibimport.emulator.ec2.listing import DescribedTask
from ibimport.emulator.ec2.validation import TASK_ID
from ibimport.errors import ConfigError

__all__ = [
    "DELETED_MESSAGE",
    "ImportTask",
    "TaskStatus",
    "draw_status",
    "listed_tasks",
    "load_import_tasks",
]

#: What EC2 says of a failed import, the most common reason (issue 12).
DELETED_MESSAGE = "ClientError: Unknown OS / Missing OS files"
_ACTIVE_MESSAGE = "converting"


class TaskStatus(StrEnum):
    """EC2's ImportImageTask Status values that the emulator's tasks take."""

    COMPLETED = "completed"
    ACTIVE = "active"
    DELETED = "deleted"


@dataclass(slots=True, kw_only=True)
class ImportTask:
    """One import task as recorded; an active one becomes completed at ``completes_at``."""

    task_id: str
    status: TaskStatus
    message: str | None = None
    progress: str | None = None
    started: float = 0.0
    completes_at: float | None = None

    def status_at(self, now: float) -> TaskStatus:
        """The status at ``now``: an active task past its completion time is completed."""
        active = self.status is TaskStatus.ACTIVE
        if active and self.completes_at is not None and now >= self.completes_at:
            return TaskStatus.COMPLETED
        return self.status

    def described(self, now: float) -> DescribedTask:
        """As EC2 shows it at ``now``: progress only while active, an AMI once done."""
        status = self.status_at(now)
        if status is TaskStatus.ACTIVE:
            progress = self.progress
            if progress is None and self.completes_at is not None:
                span = max(self.completes_at - self.started, 1e-9)
                progress = str(min(99, max(1, int(100 * (now - self.started) / span))))
            return DescribedTask(
                task_id=self.task_id,
                status=TaskState.ACTIVE,
                message=self.message or _ACTIVE_MESSAGE,
                progress=progress,
                image_id=None,
            )
        image_id = None
        if status is TaskStatus.COMPLETED:
            image_id = "ami-" + hashlib.sha256(self.task_id.encode()).hexdigest()[:17]
        message = self.message if status is TaskStatus.DELETED else None
        return DescribedTask(
            task_id=self.task_id,
            status=TaskState(status.value),
            message=message,
            progress=None,
            image_id=image_id,
        )

    def to_state(self) -> dict[str, Any]:
        """A task made up from the mix, as ``--state`` keeps it."""
        return {
            "id": self.task_id,
            "status": self.status.value,
            "message": self.message,
            "started": self.started,
            "completesAt": self.completes_at,
        }

    @classmethod
    def from_state(cls, data: dict[str, Any]) -> ImportTask:
        """A task made up from the mix, read back from ``--state``."""
        return cls(
            task_id=data["id"],
            status=TaskStatus(data["status"]),
            message=data.get("message"),
            started=float(data["started"]),
            completes_at=data.get("completesAt"),
        )


def load_import_tasks(path: Path) -> list[dict[str, Any]]:
    """Read and check ``--import-tasks``; a bad entry is named by its position and field."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read --import-tasks {path}: {exc}") from exc
    if not isinstance(data, list):
        raise ConfigError(f"--import-tasks {path}: must be a JSON list of tasks")
    statuses = ", ".join(s.value for s in TaskStatus)
    for index, entry in enumerate(data):
        where = f"--import-tasks {path}: task {index + 1}"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: must be a JSON object")
        task_id = entry.get("ImportTaskId")
        if not isinstance(task_id, str) or not TASK_ID.match(task_id):
            raise ConfigError(f"{where}: ImportTaskId: must be import-ami-..., got {task_id!r}")
        if entry.get("Status") not in {s.value for s in TaskStatus}:
            raise ConfigError(f"{where}: Status: must be one of {statuses}")
        for name in ("StatusMessage", "Progress"):
            if entry.get(name) is not None and not isinstance(entry[name], str | int):
                raise ConfigError(f"{where}: {name}: must be text")
        after = entry.get("CompletesAfterS", 0)
        if not isinstance(after, int | float) or isinstance(after, bool) or after < 0:
            raise ConfigError(f"{where}: CompletesAfterS: must be a number of seconds >= 0")
    return data


def listed_tasks(entries: Iterable[dict[str, Any]], *, started: float) -> dict[str, ImportTask]:
    """The tasks ``load_import_tasks`` read, by ID; an active one completes
    ``CompletesAfterS`` after ``started`` (when the emulator first started)."""
    tasks = {}
    for entry in entries:
        status = TaskStatus(entry["Status"])
        after = float(entry.get("CompletesAfterS", 0))
        progress = entry.get("Progress")
        tasks[entry["ImportTaskId"]] = ImportTask(
            task_id=entry["ImportTaskId"],
            status=status,
            message=entry.get("StatusMessage"),
            progress=None if progress is None else str(progress),
            started=started,
            completes_at=started + after if status is TaskStatus.ACTIVE else None,
        )
    return tasks


def draw_status(task_id: str, *, salt: str, shares: dict[str, float]) -> str:
    """The mix's status for an ID (a ``TaskStatus`` value, or ``missing``): a hash of seed
    and ID placed on the shares' scale."""
    digest = hashlib.sha256(f"{salt}:{task_id}".encode()).digest()
    point = int.from_bytes(digest[:8], "big") / 2.0**64
    total = 0.0
    for status, share in shares.items():
        total += share
        if point < total:
            return status
    return next(s for s, share in reversed(shares.items()) if share > 0)
