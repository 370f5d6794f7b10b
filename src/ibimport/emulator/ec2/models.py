"""EC2's VM import tasks, as DescribeImportImageTasks shows them and Image Builder reads them.

Where tasks come from, one of three (``EmulatorConfig``):

- ``--import-tasks FILE``: exactly the tasks listed; any other ID does not exist. An
  active task completes ``CompletesAfterS`` seconds after the emulator first started
  (``--state`` keeps that start across a restart).
- ``--task-mix``: a task is made up the first time its ID is seen, its status drawn from
  a hash of the seed and the ID, so the same ID gets the same status in any order and
  after a restart; an active one completes ``--task-active-s`` after it was first seen.
- neither: no task exists, as for an ID AWS never issued: DescribeImportImageTasks refuses
  it and an image built from it FAILS (issue 21). ``--task-mix completed=1`` is the
  convenience of every task existing and done (rehearsals and benchmarks).

Tasks are the same in every account and region (the file names neither). ``outcome`` is
what an image built from a task follows (``models.TaskOutcome``). No HTTP here.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from ibimport.emulator.core import Clock
from ibimport.emulator.exceptions import InvalidConversionTaskIdMalformed, InvalidParameterValue
from ibimport.emulator.imagebuilder.models import TaskOutcome
from ibimport.errors import ConfigError

__all__ = [
    "DELETED_MESSAGE",
    "ImportTask",
    "ImportTasks",
    "TaskStatus",
    "TaskView",
    "check_task_id",
    "load_import_tasks",
]

# An ImportImage task ID: "import-ami-" and 8 (older) or 17 lowercase letters and digits.
_TASK_ID = re.compile(r"^import-ami-[0-9a-z]{8,17}$")
#: The filter DescribeImportImageTasks takes, and its values (current EC2 model's docs).
STATE_FILTER = "task-state"
STATE_FILTER_VALUES = frozenset({"active", "completed", "deleting", "deleted"})
#: What EC2 says of a failed import, the most common reason (issue 12).
DELETED_MESSAGE = "ClientError: Unknown OS / Missing OS files"
_ACTIVE_MESSAGE = "converting"
_ALWAYS_COMPLETED = TaskOutcome(completed_at=-math.inf, failure=None)


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


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskView:
    """A task as DescribeImportImageTasks answers it at one moment."""

    task_id: str
    status: TaskStatus
    message: str | None
    progress: str | None
    image_id: str | None


def check_task_id(task_id: str) -> None:
    """Raise EC2's InvalidParameterValue unless ``task_id`` is shaped like an import task's."""
    if not _TASK_ID.match(task_id):
        raise InvalidParameterValue(
            f"Value ({task_id}) for parameter ImportTaskId is invalid. Expected: 'import-ami-...'."
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
        if not isinstance(task_id, str) or not _TASK_ID.match(task_id):
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


class ImportTasks:
    """The import tasks of one emulator: looked up by Image Builder, listed by EC2."""

    def __init__(
        self,
        *,
        clock: Clock,
        listed: list[dict[str, Any]] | None = None,
        shares: Mapping[str, float] | None = None,
        seed: int | None = None,
        active_s: float = 60.0,
    ) -> None:
        self.clock = clock
        self._listed = listed
        self._shares = dict(shares) if shares is not None else None
        self._salt = str(seed) if seed is not None else secrets.token_hex(8)
        # ``--task-mix completed=1``: every task exists and is done, nothing to record.
        self._all_completed = (
            listed is None
            and self._shares is not None
            and math.isclose(self._shares.get(TaskStatus.COMPLETED.value, 0.0), 1.0)
        )
        self._active_s = active_s
        self.started = clock()
        #: Every task that exists and has been seen (or listed), in the order first seen.
        self.tasks: dict[str, ImportTask] = {}
        self._missing: set[str] = set()
        self.dirty = False
        self._build_listed()

    def _build_listed(self) -> None:
        self.tasks.clear()
        for entry in self._listed or ():
            status = TaskStatus(entry["Status"])
            after = float(entry.get("CompletesAfterS", 0))
            progress = entry.get("Progress")
            self.tasks[entry["ImportTaskId"]] = ImportTask(
                task_id=entry["ImportTaskId"],
                status=status,
                message=entry.get("StatusMessage"),
                progress=None if progress is None else str(progress),
                started=self.started,
                completes_at=self.started + after if status is TaskStatus.ACTIVE else None,
            )

    def find(self, task_id: str) -> ImportTask | None:
        """The task with this ID, made up on first sight unless tasks come from a file."""
        task = self.tasks.get(task_id)
        if (
            task is not None
            or self._listed is not None
            or self._shares is None
            or task_id in self._missing
        ):
            return task
        now = self.clock()
        drawn = self._draw(task_id)
        if drawn == "missing":
            self._missing.add(task_id)
            return None
        status = TaskStatus(drawn)
        task = self.tasks[task_id] = ImportTask(
            task_id=task_id,
            status=status,
            message=DELETED_MESSAGE if status is TaskStatus.DELETED else None,
            started=now,
            completes_at=now + self._active_s if status is TaskStatus.ACTIVE else None,
        )
        self.dirty = True
        return task

    def _draw(self, task_id: str) -> str:
        """The mix's status for an ID: a hash of seed and ID placed on the shares' scale."""
        if self._shares is None:
            return "missing"
        digest = hashlib.sha256(f"{self._salt}:{task_id}".encode()).digest()
        point = int.from_bytes(digest[:8], "big") / 2.0**64
        total = 0.0
        for status, share in self._shares.items():
            total += share
            if point < total:
                return status
        return next(s for s, share in reversed(self._shares.items()) if share > 0)

    def outcome(self, task_id: str) -> TaskOutcome:
        """When an image built from this task may start creating, or why it fails."""
        if self._all_completed:
            return _ALWAYS_COMPLETED  # the hot path of every benchmark: nothing to look up
        task = self.find(task_id)
        if task is None:
            # The emulator's own words: AWS does not document Image Builder's reason.
            return TaskOutcome(
                completed_at=None, failure=f"The import task {task_id} does not exist."
            )
        if task.status is TaskStatus.DELETED:
            return TaskOutcome(completed_at=None, failure=task.message or DELETED_MESSAGE)
        if task.status is TaskStatus.ACTIVE and task.completes_at is not None:
            return TaskOutcome(completed_at=task.completes_at, failure=None)
        return _ALWAYS_COMPLETED

    def view(self, task: ImportTask) -> TaskView:
        """The task as EC2 shows it now: progress only while active, an AMI once done."""
        now = self.clock()
        status = task.status_at(now)
        if status is TaskStatus.ACTIVE:
            progress = task.progress
            if progress is None and task.completes_at is not None:
                span = max(task.completes_at - task.started, 1e-9)
                progress = str(min(99, max(1, int(100 * (now - task.started) / span))))
            return TaskView(
                task_id=task.task_id,
                status=status,
                message=task.message or _ACTIVE_MESSAGE,
                progress=progress,
                image_id=None,
            )
        image_id = None
        if status is TaskStatus.COMPLETED:
            image_id = "ami-" + hashlib.sha256(task.task_id.encode()).hexdigest()[:17]
        message = task.message if status is TaskStatus.DELETED else None
        return TaskView(
            task_id=task.task_id, status=status, message=message, progress=None, image_id=image_id
        )

    def describe(
        self,
        task_ids: Iterable[str],
        *,
        states: frozenset[str] | None,
        max_results: int | None,
        next_token: str | None,
    ) -> tuple[list[TaskView], str | None]:
        """One page of tasks: the ones named (all must exist), or every one seen."""
        wanted = list(dict.fromkeys(task_ids))
        for task_id in wanted:
            check_task_id(task_id)
        if wanted:
            found = {task_id: self.find(task_id) for task_id in wanted}
            if any(task is None for task in found.values()):
                raise InvalidConversionTaskIdMalformed()
            tasks = [task for task in found.values() if task is not None]
        else:
            tasks = list(self.tasks.values())
        views = [self.view(task) for task in tasks]
        if states is not None:
            views = [v for v in views if v.status.value in states]
        start = _decode_token(next_token, len(views))
        end = len(views) if max_results is None else min(len(views), start + max_results)
        token = _encode_token(end) if end < len(views) else None
        return views[start:end], token

    def reset(self) -> None:
        """Forget the tasks made up so far; the listed ones start again now."""
        self.started = self.clock()
        self._missing.clear()
        self._build_listed()
        self.dirty = True

    def to_state(self) -> dict[str, Any]:
        """The start reference and the tasks made up so far, for ``--state``."""
        made_up = [] if self._listed is not None else list(self.tasks.values())
        return {
            "started": self.started,
            "salt": self._salt,
            "tasks": [
                {
                    "id": t.task_id,
                    "status": t.status.value,
                    "message": t.message,
                    "started": t.started,
                    "completesAt": t.completes_at,
                }
                for t in made_up
            ],
            "missing": sorted(self._missing),
        }

    def load_state(self, data: dict[str, Any]) -> None:
        """Take back the first start (so active tasks keep their deadlines) and the tasks."""
        self.started = float(data.get("started", self.started))
        self._salt = str(data.get("salt", self._salt))
        self._build_listed()
        if self._listed is None:
            for raw in data.get("tasks", []):
                self.tasks[raw["id"]] = ImportTask(
                    task_id=raw["id"],
                    status=TaskStatus(raw["status"]),
                    message=raw.get("message"),
                    started=float(raw["started"]),
                    completes_at=raw.get("completesAt"),
                )
            self._missing.update(data.get("missing", []))


def _encode_token(index: int) -> str:
    return base64.urlsafe_b64encode(f"tasks:{index}".encode()).decode()


def _decode_token(token: str | None, limit: int) -> int:
    if token is None:
        return 0
    try:
        kind, _, index = base64.urlsafe_b64decode(token.encode()).decode().partition(":")
        value = int(index)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        value = -1
        kind = ""
    if kind != "tasks" or not 0 <= value <= limit:
        raise InvalidParameterValue(f"The value ({token}) for parameter NextToken is invalid.")
    return value
