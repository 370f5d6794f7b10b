"""One task started by ImportImage, from its start to its end, as DescribeImportImageTasks shows it.

A task's whole course is fixed when it starts (its duration and whether and how it
fails, drawn from a hash of the seed and its disks) except a cancel, so that its status
at any moment is a pure function of the clock: tests move a fake clock instead of
waiting. Where each rule comes from:

- From the current EC2 model: the statuses the ``task-state`` filter names (``active``,
  ``completed``, ``deleting``, ``deleted``); CancelImportTask answers ``PreviousState``
  and ``State``, which the AWS CLI's example shows as ``active`` and ``deleting``.
- From what EC2 reports (issue 19, and users' reports quoted below): an active task's
  StatusMessage and Progress steps ``pending`` 1, ``converting`` 19, ``booting`` 39,
  ``preparing ami`` 57; a completed one has an ``ImageId`` and no Progress; a failed one
  ends ``deleted`` with a ``ClientError: ...`` or ``FirstBootFailure: ...`` message.
- The emulator's own guesses: where in its course each failure strikes, that a failed
  or cancelled task spends ``deleting_s`` in ``deleting`` first, the words of a cancelled
  task, and the spread of durations (log-normal around the mean: a long tail).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from ibimport.emulator.core import Scope

__all__ = [
    "CANCELLED_MESSAGE",
    "PHASES",
    "Failure",
    "StartedTask",
    "TaskFate",
    "TaskState",
    "draw_fate",
]

#: An active task's (share of its course from which it shows, StatusMessage, Progress).
PHASES = (
    (0.0, "pending", "1"),
    (0.10, "converting", "19"),
    (0.45, "booting", "39"),
    (0.70, "preparing ami", "57"),
)
#: The spread of task durations: log-normal with this sigma around the mean (a guess:
#: most tasks near the mean, one in a hundred nearly three times as long).
DURATION_SIGMA = 0.5
#: What a cancelled task says once ``deleting``: the emulator's guess (EC2 documents none).
CANCELLED_MESSAGE = "User initiated task cancelation"


class Failure(StrEnum):
    """How a started task can end ``deleted``; the names are ``--task-failure-mix``'s."""

    UNSUPPORTED_KERNEL = "unsupported-kernel"
    DISK_VALIDATION = "disk-validation"
    FIRST_BOOT = "first-boot"
    #: The disk object is missing or not the caller's: the role cannot read it.
    DISK_ACCESS = "disk-access"


#: EC2's words for each failure, as users have quoted them.
FAILURE_MESSAGES = {
    # hashicorp/packer#6743 (the kernel version is this emulator's).
    Failure.UNSUPPORTED_KERNEL: (
        "ClientError: Unsupported kernel version 5.14.0-70.13.1.el9_0.x86_64"
    ),
    # osbuild/osbuild-composer#706 (an ImportSnapshot task; the same validation).
    Failure.DISK_VALIDATION: (
        "ClientError: Disk validation failed [Unsupported specified file format]"
    ),
    # keithvassallomt/windows10-ec2#3, and issue 19: the role cannot read the object.
    Failure.DISK_ACCESS: (
        "ClientError: Disk validation failed "
        "[We do not have access to the given resource. Reason 403 Forbidden]"
    ),
    # The VM Import/Export troubleshooting guide's FirstBootFailure entry.
    Failure.FIRST_BOOT: (
        "FirstBootFailure: This import request failed because the instance failed to boot "
        "and establish network connectivity."
    ),
}
#: The share of a task's course at which each failure ends it (the emulator's guess: disk
#: problems while validating, the kernel while converting, the first boot while booting).
FAILS_AT = {
    Failure.DISK_ACCESS: 0.08,
    Failure.DISK_VALIDATION: 0.08,
    Failure.UNSUPPORTED_KERNEL: 0.30,
    Failure.FIRST_BOOT: 0.60,
}


class TaskState(StrEnum):
    """EC2's ImportImageTask statuses (the ``task-state`` filter's values)."""

    ACTIVE = "active"
    COMPLETED = "completed"
    DELETING = "deleting"
    DELETED = "deleted"


@dataclass(frozen=True, slots=True)
class TaskFate:
    """What a task will do if nobody cancels it: take ``duration_s``, or fail."""

    duration_s: float
    failure: Failure | None


def draw_fate(
    salt: str, disks: tuple[str, ...], *, mean_s: float, failures: dict[str, float]
) -> TaskFate:
    """The course of an import of these disks: the same disks and seed, the same course,
    in whatever order the tasks start (so a seeded wave repeats, and a kernel that is
    unsupported stays so when the same VM is imported again)."""
    digest = hashlib.sha256(f"{salt}:{'|'.join(disks)}".encode()).digest()
    u1, u2, u3 = ((int.from_bytes(digest[i : i + 7], "big") + 0.5) / 2.0**56 for i in (0, 7, 14))
    normal = math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)
    mu = math.log(mean_s) - DURATION_SIGMA**2 / 2  # so that the mean is mean_s
    duration = math.exp(mu + DURATION_SIGMA * normal)
    total = 0.0
    for name, share in failures.items():
        total += share
        if u3 < total:
            return TaskFate(duration, Failure(name))
    return TaskFate(duration, None)


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskView:
    """A started task at one moment: what DescribeImportImageTasks shows of its course."""

    state: TaskState
    message: str | None
    progress: str | None
    image_id: str | None


@dataclass(slots=True, kw_only=True)
class StartedTask:
    """One ImportImage task: its request, its fixed course, and a cancel if any."""

    task_id: str
    scope: Scope
    client_token: str | None
    #: The form parameters it was started with (but ClientToken and DryRun): a replay of
    #: its token must carry the same.
    request: dict[str, str]
    #: Its disks, each as ``s3://bucket/key`` (or a snapshot ID): the VM's identity.
    disks: tuple[str, ...]
    #: What DescribeImportImageTasks echoes: description, platform, tags, disk details.
    echo: dict[str, Any]
    started: float
    fate: TaskFate
    deleting_s: float
    cancelled_at: float | None = None
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def image_id(self) -> str:
        """The AMI a completed task made."""
        return "ami-" + hashlib.sha256(self.task_id.encode()).hexdigest()[:17]

    @property
    def natural_end(self) -> float:
        """When it completes or fails if not cancelled first."""
        fate = self.fate
        share = 1.0 if fate.failure is None else FAILS_AT[fate.failure]
        return self.started + fate.duration_s * share

    @property
    def cancelled(self) -> bool:
        """Whether a cancel ended it (rather than its own course)."""
        return self.cancelled_at is not None and self.cancelled_at < self.natural_end

    @property
    def active_until(self) -> float:
        """When it stops holding an import slot."""
        if self.cancelled_at is not None:
            return min(self.cancelled_at, self.natural_end)
        return self.natural_end

    @property
    def completes(self) -> bool:
        """Whether it ends ``completed`` (so far as anyone knows now)."""
        return self.fate.failure is None and not self.cancelled

    @property
    def failure_message(self) -> str | None:
        """EC2's words for how it ended, if it does not complete."""
        if self.cancelled:
            return CANCELLED_MESSAGE
        if self.fate.failure is None:
            return None
        return FAILURE_MESSAGES[self.fate.failure]

    @property
    def gone_at(self) -> float:
        """When it is ``deleted`` (a task that completes never is)."""
        return self.active_until + self.deleting_s

    def state_at(self, now: float) -> TaskState:
        """Its status at ``now``."""
        if now < self.active_until:
            return TaskState.ACTIVE
        if self.completes:
            return TaskState.COMPLETED
        return TaskState.DELETING if now < self.gone_at else TaskState.DELETED

    def view(self, now: float) -> TaskView:
        """Its status, StatusMessage, Progress and ImageId at ``now``."""
        state = self.state_at(now)
        if state is TaskState.ACTIVE:
            share = (now - self.started) / max(self.fate.duration_s, 1e-9)
            _, message, progress = next(p for p in reversed(PHASES) if share >= p[0])
            return TaskView(state=state, message=message, progress=progress, image_id=None)
        if state is TaskState.COMPLETED:
            return TaskView(state=state, message=None, progress=None, image_id=self.image_id)
        return TaskView(state=state, message=self.failure_message, progress=None, image_id=None)

    def to_state(self) -> dict[str, Any]:
        """As ``--state`` keeps it."""
        return {
            "id": self.task_id,
            "account": self.scope.account,
            "region": self.scope.region,
            "token": self.client_token,
            "request": self.request,
            "disks": list(self.disks),
            "echo": self.echo,
            "started": self.started,
            "durationS": self.fate.duration_s,
            "failure": None if self.fate.failure is None else self.fate.failure.value,
            "deletingS": self.deleting_s,
            "cancelledAt": self.cancelled_at,
            "tags": self.tags,
        }

    @classmethod
    def from_state(cls, data: dict[str, Any]) -> StartedTask:
        """A task read back from ``--state``."""
        failure = data.get("failure")
        return cls(
            task_id=data["id"],
            scope=Scope(data["account"], data["region"]),
            client_token=data.get("token"),
            request=dict(data["request"]),
            disks=tuple(data["disks"]),
            echo=dict(data.get("echo") or {}),
            started=float(data["started"]),
            fate=TaskFate(float(data["durationS"]), None if failure is None else Failure(failure)),
            deleting_s=float(data["deletingS"]),
            cancelled_at=data.get("cancelledAt"),
            tags=dict(data.get("tags") or {}),
        )
