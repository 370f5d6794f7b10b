"""EC2's VM import tasks, as ImportImage starts them, DescribeImportImageTasks shows them,
CancelImportTask stops them and Image Builder reads them.

Tasks started by ImportImage (issue 19) belong to the account and Region that started
them and run their course (``lifecycle``) on the clock: each holds one of the
``--task-slots`` of its account and Region while active; a ClientToken binds a task to
its request; a task that ended is listed for 7 days (the current model: "active or
were completed or canceled in the previous 7 days"). ImportImage reads the service role
from IAM and the disks from S3 through ``RoleBook`` and ``DiskStore``, each served by
its own sub-package.

Beside them, the tasks ImportImage never started, declared for rehearsals of the stages
after the import (``declared``); DescribeImportImageTasks lists both (``listing``).
``outcome`` is what an image built from a task follows (``imagebuilder.builds.TaskOutcome``).
No HTTP here.
"""

from __future__ import annotations

import math
import random
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from ibimport.emulator.core import Clock, Scope
from ibimport.emulator.ec2.declared import (
    DELETED_MESSAGE,
    ImportTask,
    TaskStatus,
    draw_status,
    listed_tasks,
)
from ibimport.emulator.ec2.lifecycle import Failure as TaskFailure
from ibimport.emulator.ec2.lifecycle import StartedTask, TaskState, draw_fate
from ibimport.emulator.ec2.listing import DescribedTask, TagFilter, page
from ibimport.emulator.ec2.validation import ImportImageRequest, check_task_id
from ibimport.emulator.exceptions import (
    DryRunOperation,
    IdempotentParameterMismatch,
    IncorrectState,
    InvalidConversionTaskIdMalformed,
    InvalidParameter,
    ResourceLimitExceeded,
)
from ibimport.emulator.imagebuilder.builds import TaskOutcome

__all__ = [
    "HISTORY_S",
    "DiskLocation",
    "DiskStore",
    "ImportTasks",
    "RoleBook",
]

_ALWAYS_COMPLETED = TaskOutcome(completed_at=-math.inf, failure=None)
#: How long a task that ended stays listed (current model: "the previous 7 days").
HISTORY_S = 7 * 86400.0
#: How long a failed or cancelled task shows ``deleting``: a hundredth of the mean
#: duration, at most 5 s (the emulator's guess).
_DELETING_SHARE, _DELETING_MAX_S = 0.01, 5.0
#: A task in these states stands for its disks: starting another is a duplicate import
#: (one that is deleting, failed or cancelled, may be replaced).
_STANDING = (TaskState.ACTIVE, TaskState.COMPLETED)


class DiskLocation(Protocol):
    """What ImportImage learns of one disk object (``s3.models``)."""

    @property
    def region(self) -> str | None:
        """The bucket's Region; None if no bucket has that name."""

    @property
    def readable(self) -> bool:
        """Whether the object exists and the importing account can read it."""

    @property
    def size(self) -> int | None:
        """Its size in bytes, if readable."""


class DiskStore(Protocol):
    """Where ImportImage finds disk objects: the emulator's S3."""

    def locate(self, bucket: str, key: str, *, account: str) -> DiskLocation: ...


class RoleBook(Protocol):
    """Which service roles exist: the emulator's IAM."""

    def has_role(self, account: str, name: str) -> bool: ...


@dataclass(slots=True)
class ScopeImports:
    """The tasks ImportImage started in one account and Region, and what they did."""

    #: In start order, append-only: a page token is an index into it.
    tasks: list[StartedTask] = field(default_factory=list)
    by_token: dict[str, StartedTask] = field(default_factory=dict)
    #: Each disk set's tasks: a second standing one is a duplicate import of the VM.
    by_disks: dict[tuple[str, ...], list[StartedTask]] = field(default_factory=dict)
    #: The tasks holding a slot the last time anyone looked (``ImportTasks._active``).
    active: dict[str, StartedTask] = field(default_factory=dict)
    replays: int = 0
    duplicates: int = 0
    quota_refusals: int = 0
    max_active: int = 0


class ImportTasks:
    """The import tasks of one emulator: started by ImportImage (per account and Region)
    or declared; looked up by Image Builder, listed and cancelled through EC2."""

    def __init__(
        self,
        *,
        clock: Clock,
        listed: list[dict[str, Any]] | None = None,
        shares: Mapping[str, float] | None = None,
        seed: int | None = None,
        active_s: float = 60.0,
        slots: int = 20,
        duration_s: float = 2700.0,
        failures: Mapping[str, float] | None = None,
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
        self.slots = slots
        self.duration_s = duration_s
        self.failures = dict(failures or {})
        self._deleting_s = min(_DELETING_MAX_S, _DELETING_SHARE * duration_s)
        self._ids = random.Random(f"ids:{self._salt}")
        #: Set by the server: where ImportImage finds disks and roles (no S3/IAM: none).
        self.disks: DiskStore | None = None
        self.roles: RoleBook | None = None
        self.started = clock()
        #: Every declared task that exists and has been seen (or listed), in order seen.
        self.tasks: dict[str, ImportTask] = {}
        self._missing: set[str] = set()
        #: The tasks ImportImage started, by account and Region, and by ID.
        self.imports: dict[Scope, ScopeImports] = {}
        self._started_by_id: dict[str, StartedTask] = {}
        self.dirty = False
        self._build_listed()

    def _build_listed(self) -> None:
        self.tasks.clear()
        self.tasks.update(listed_tasks(self._listed or (), started=self.started))

    # ImportImage, CancelImportTask and what they did.

    def _scope(self, scope: Scope) -> ScopeImports:
        imports = self.imports.get(scope)
        if imports is None:
            imports = self.imports[scope] = ScopeImports()
        return imports

    def _active(self, imports: ScopeImports, now: float) -> dict[str, StartedTask]:
        """The tasks holding a slot now (the ones whose course ended are let go)."""
        active = imports.active
        for task_id in [i for i, task in active.items() if task.active_until <= now]:
            del active[task_id]
        return active

    def _visible(self, task: StartedTask, now: float) -> bool:
        """Whether EC2 still lists it: active, or ended less than ``HISTORY_S`` ago."""
        if task.completes:
            return now < task.active_until + HISTORY_S
        return now < task.gone_at + HISTORY_S

    def import_image(self, scope: Scope, request: ImportImageRequest) -> tuple[StartedTask, bool]:
        """Start a task, or return the one this ClientToken started (and True).

        Refused, in this order (the order is the emulator's guess): a ClientToken reused
        with other parameters; a missing service role; a bucket in another Region; no
        free slot. A disk object that is missing or not the caller's does not refuse the
        call: the task starts and fails its disk validation, as EC2's does.
        """
        now = self.clock()
        imports = self._scope(scope)
        token = request.client_token
        if token is not None:
            earlier = imports.by_token.get(token)
            if earlier is not None and self._visible(earlier, now):
                if earlier.request != request.bound:
                    raise IdempotentParameterMismatch(
                        f"The client token {token} has already been used with different parameters."
                    )
                if request.dry_run:
                    raise DryRunOperation()
                imports.replays += 1
                return earlier, True
        if self.roles is not None and not self.roles.has_role(scope.account, request.role):
            # The words issue 19 quotes from EC2.
            raise InvalidParameter(
                f"The service role {request.role} does not exist or does not have sufficient "
                "permissions for the service to continue"
            )
        readable, sizes = True, list[int | None]()
        for disk in request.disks:
            if disk.bucket is None or disk.key is None:
                sizes.append(None)
                continue
            if self.disks is None:
                readable = False
                sizes.append(None)
                continue
            where = self.disks.locate(disk.bucket, disk.key, account=scope.account)
            if where.region is not None and where.region != scope.region:
                # EC2's words for ImportSnapshot, as a user quoted them
                # (confidential-containers/cloud-api-adaptor#587); assumed the same here.
                raise InvalidParameter(
                    "The given S3 object is not local to the region. The object must be "
                    f"located in {scope.region}."
                )
            readable = readable and where.readable
            sizes.append(where.size)
        active = self._active(imports, now)
        if len(active) >= self.slots:
            if not request.dry_run:
                imports.quota_refusals += 1
            raise ResourceLimitExceeded(
                f"You have reached the limit of {self.slots} active import image tasks "
                f"in {scope.region}. Wait for a task to complete and try again."
            )
        if request.dry_run:
            raise DryRunOperation()
        refs = tuple(disk.ref for disk in request.disks)
        fate = draw_fate(self._salt, refs, mean_s=self.duration_s, failures=self.failures)
        if not readable:
            fate = type(fate)(fate.duration_s, TaskFailure.DISK_ACCESS)
        siblings = imports.by_disks.setdefault(refs, [])
        if any(t.state_at(now) in _STANDING for t in siblings):
            imports.duplicates += 1
        task = StartedTask(
            task_id="import-ami-" + "".join(self._ids.choices("0123456789abcdef", k=17)),
            scope=scope,
            client_token=token,
            request=request.bound,
            disks=refs,
            echo={**request.echo, "disks": _disk_details(request, sizes)},
            started=now,
            fate=fate,
            deleting_s=self._deleting_s,
            tags=dict(request.tags),
        )
        imports.tasks.append(task)
        siblings.append(task)
        if token is not None:
            imports.by_token[token] = task
        active[task.task_id] = task
        imports.max_active = max(imports.max_active, len(active))
        self._started_by_id[task.task_id] = task
        self.dirty = True
        return task, False

    def cancel(self, scope: Scope, task_id: str) -> TaskState:
        """Cancel an active task; returns its state before (it is ``deleting`` now).

        EC2 documents no error for a task that already ended; the emulator answers
        IncorrectState (EC2's code for a resource in the wrong state), in its own words.
        """
        check_task_id(task_id)
        now = self.clock()
        task = self._started(scope, task_id, now)
        if task is None:
            if self.find(task_id) is None:
                raise InvalidConversionTaskIdMalformed()
            raise IncorrectState(f"The import task {task_id} was not started by ImportImage.")
        state = task.state_at(now)
        if state is not TaskState.ACTIVE:
            raise IncorrectState(
                f"The import task {task_id} is {state.value}: it cannot be cancelled."
            )
        task.cancelled_at = now
        self._scope(scope).active.pop(task_id, None)
        self.dirty = True
        return state

    def _started(self, scope: Scope, task_id: str, now: float) -> StartedTask | None:
        task = self._started_by_id.get(task_id)
        if task is None or task.scope != scope or not self._visible(task, now):
            return None
        return task

    def import_stats(self, scope: Scope) -> dict[str, float | int]:
        """What the tasks of one account and Region did (``/_emulator/stats``)."""
        now = self.clock()
        imports = self._scope(scope)
        states = [task.state_at(now) for task in imports.tasks]
        return {
            "started": len(imports.tasks),
            "replays": imports.replays,
            "duplicates": imports.duplicates,
            "active": states.count(TaskState.ACTIVE),
            "maxActive": imports.max_active,
            "quotaRefusals": imports.quota_refusals,
            "completed": states.count(TaskState.COMPLETED),
            "deleted": sum(
                s is TaskState.DELETED and not t.cancelled
                for s, t in zip(states, imports.tasks, strict=True)
            ),
            "cancelled": sum(t.cancelled for t in imports.tasks),
            "busySlotSeconds": round(
                sum(min(now, t.active_until) - t.started for t in imports.tasks), 3
            ),
        }

    # Declared tasks.

    def find(self, task_id: str) -> ImportTask | None:
        """The declared task with this ID, made up on first sight unless from a file."""
        task = self.tasks.get(task_id)
        if (
            task is not None
            or self._listed is not None
            or self._shares is None
            or task_id in self._missing
        ):
            return task
        now = self.clock()
        drawn = draw_status(task_id, salt=self._salt, shares=self._shares)
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

    def outcome(self, scope: Scope, task_id: str) -> TaskOutcome:
        """When an image built from this task may start creating, or why and from when
        it fails. A task ImportImage started counts only in its own account and Region;
        Image Builder still knows one that EC2 no longer lists."""
        started = self._started_by_id.get(task_id)
        if started is not None and started.scope == scope:
            if started.completes:
                return TaskOutcome(completed_at=started.active_until, failure=None)
            return TaskOutcome(
                completed_at=None,
                failure=started.failure_message,
                failed_at=started.active_until,
            )
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

    def view(self, task: ImportTask) -> DescribedTask:
        """A declared task as EC2 shows it now."""
        return task.described(self.clock())

    def view_started(self, task: StartedTask) -> DescribedTask:
        """A task ImportImage started, as EC2 shows it now."""
        moment = task.view(self.clock())
        return DescribedTask(
            task_id=task.task_id,
            status=moment.state,
            message=moment.message,
            progress=moment.progress,
            image_id=moment.image_id,
            echo=task.echo,
            tags=task.tags,
        )

    def describe(
        self,
        scope: Scope,
        task_ids: Iterable[str],
        *,
        states: frozenset[str] | None,
        tags: TagFilter | None = None,
        max_results: int | None,
        next_token: str | None,
    ) -> tuple[list[DescribedTask], str | None]:
        """One page of tasks: the ones named (all must exist), or every one listed here
        (the declared ones, then the ones started in this account and Region).

        Filters hold for named tasks too. A page token is a place in the unfiltered
        lists, so a page never skips a task whose state changed since the last page.
        """
        now = self.clock()
        wanted = list(dict.fromkeys(task_ids))
        for task_id in wanted:
            check_task_id(task_id)
        parts: tuple[list[ImportTask | StartedTask], ...]
        if wanted:
            found: list[ImportTask | StartedTask] = []
            for task_id in wanted:
                task = self._started(scope, task_id, now) or self.find(task_id)
                if task is None:
                    raise InvalidConversionTaskIdMalformed()
                found.append(task)
            parts = (found, [])
        else:
            started = self.imports[scope].tasks if scope in self.imports else []
            parts = (list(self.tasks.values()), list(started))

        def shown(item: ImportTask | StartedTask) -> DescribedTask | None:
            if isinstance(item, StartedTask):
                return self.view_started(item) if self._visible(item, now) else None
            return self.view(item)

        return page(
            parts,
            shown,
            states=states,
            tags=tags,
            max_results=max_results,
            next_token=next_token,
        )

    def reset(self) -> None:
        """Forget the tasks made up or started so far; the listed ones start again now."""
        self.started = self.clock()
        self._missing.clear()
        self.imports.clear()
        self._started_by_id.clear()
        self._build_listed()
        self.dirty = True

    def to_state(self) -> dict[str, Any]:
        """The start reference, the tasks made up and started so far, for ``--state``."""
        made_up = [] if self._listed is not None else list(self.tasks.values())
        return {
            "started": self.started,
            "salt": self._salt,
            "tasks": [task.to_state() for task in made_up],
            "missing": sorted(self._missing),
            "imports": [
                {
                    "account": scope.account,
                    "region": scope.region,
                    "replays": imports.replays,
                    "duplicates": imports.duplicates,
                    "quotaRefusals": imports.quota_refusals,
                    "maxActive": imports.max_active,
                    "tasks": [task.to_state() for task in imports.tasks],
                }
                for scope, imports in self.imports.items()
            ],
        }

    def load_state(self, data: dict[str, Any]) -> None:
        """Take back the first start (so active tasks keep their deadlines) and the tasks."""
        self.started = float(data.get("started", self.started))
        self._salt = str(data.get("salt", self._salt))
        self._build_listed()
        if self._listed is None:
            for raw in data.get("tasks", []):
                self.tasks[raw["id"]] = ImportTask.from_state(raw)
            self._missing.update(data.get("missing", []))
        now = self.clock()
        for entry in data.get("imports", []):
            imports = self._scope(Scope(entry["account"], entry["region"]))
            imports.replays = int(entry.get("replays", 0))
            imports.duplicates = int(entry.get("duplicates", 0))
            imports.quota_refusals = int(entry.get("quotaRefusals", 0))
            imports.max_active = int(entry.get("maxActive", 0))
            for raw in entry.get("tasks", []):
                task = StartedTask.from_state(raw)
                imports.tasks.append(task)
                imports.by_disks.setdefault(task.disks, []).append(task)
                if task.client_token is not None:
                    imports.by_token[task.client_token] = task
                if task.active_until > now:
                    imports.active[task.task_id] = task
                self._started_by_id[task.task_id] = task
        # New IDs must not repeat the ones a seeded emulator handed out before a restart.
        self._ids = random.Random(f"ids:{self._salt}:{len(self._started_by_id)}")


def _disk_details(request: ImportImageRequest, sizes: list[int | None]) -> list[dict[str, Any]]:
    """Each disk as the task's ``snapshotDetailSet`` shows it."""
    details = []
    for disk, size in zip(request.disks, sizes, strict=True):
        detail: dict[str, Any] = {}
        if disk.format is not None:
            detail["format"] = disk.format
        if disk.url is not None:
            detail["url"] = disk.url
        elif disk.bucket is not None:
            detail["userBucket"] = {"s3Bucket": disk.bucket, "s3Key": disk.key}
        if disk.snapshot_id is not None:
            detail["snapshotId"] = disk.snapshot_id
        if size is not None:
            detail["diskImageSize"] = float(size)
        details.append(detail)
    return details
