"""Every started EC2 import task of a partition, followed to its end in batched rounds.

A task started by ``stages.taskstart`` holds one of the partition's slots (``flow.slots``)
until EC2 says it ended. ``TaskFollower.run`` asks about every active task of the
partition in one paged DescribeImportImageTasks call per round (100 IDs a page), and
spaces the rounds by the time the soonest task is expected to need: a share
(``poll_share``) of its expected remaining time, between ``poll_min_s`` and
``poll_max_s``, so a slot sits idle at most that share of a task's duration. Before any
task of the run completed, the expected duration is unknown and the spacing grows from
``poll_min_s`` by half each round.

A row waits for its task's answer (``answer``) without holding a worker: ``completed``
(with the AMI), ``deleted`` with EC2's message, ``cancelled``, or a verdict of ours:
``stalled`` (Progress has not moved for ``stall_timeout_s``) or ``timed out``
(``task_timeout_s``). A task given up on for a verdict is still followed until it ends,
for its slot. Every change is journalled (``TaskLedger``).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from functools import partial
from typing import Protocol

import anyio

from ibimport.aws.client import TASK_IDS_PER_CALL, ImportTaskInfo, PartitionClient
from ibimport.errors import CallError
from ibimport.flow.clock import Clock
from ibimport.flow.executor import CallExecutor
from ibimport.flow.slots import TaskSlots
from ibimport.journal import TaskRecord, TaskStatus
from ibimport.stages.polling import Waiting, WaitRound

__all__ = [
    "CANCEL_MARKERS",
    "TaskEnd",
    "TaskFollowSettings",
    "TaskFollower",
    "TaskLedger",
    "TaskVerdict",
    "failure_hint",
    "task_status",
]

#: Words of a StatusMessage that say a person (or ``ibimport cancel``) cancelled the task.
CANCEL_MARKERS = ("cancel",)


class TaskLedger(Protocol):
    """Where a partition's tasks are journalled (``SqliteJournal``, or a memory)."""

    def task_records(self) -> dict[tuple[str, str], TaskRecord]: ...

    def record_task(self, record: TaskRecord) -> None: ...


class MemoryLedger:
    """A ledger that forgets at exit: for a run without a journal."""

    def __init__(self) -> None:
        self.records: dict[tuple[str, str], TaskRecord] = {}

    def task_records(self) -> dict[tuple[str, str], TaskRecord]:
        return dict(self.records)

    def record_task(self, record: TaskRecord) -> None:
        self.records[record.name, record.semantic_version] = record


class TaskVerdict(StrEnum):
    """How a row's task ended for the row."""

    COMPLETED = "completed"
    FAILED = "failed"  # deleted with EC2's message
    CANCELLED = "cancelled"
    STALLED = "stalled"
    TIMED_OUT = "timed_out"
    INTERRUPTED = "interrupted"  # a stop: the task goes on, a resume follows it again


@dataclass(frozen=True, slots=True)
class TaskEnd:
    """A row's task's answer: the verdict, and EC2's message or our reason."""

    verdict: TaskVerdict
    message: str = ""
    image_id: str = ""


@dataclass(frozen=True, kw_only=True, slots=True)
class TaskFollowSettings:
    """How tasks are followed: the rounds' spacing and the limits on a task."""

    poll_min_s: float = 5.0
    poll_max_s: float = 60.0
    poll_share: float = 0.05
    stall_timeout_s: float | None = None
    task_timeout_s: float | None = None


def task_status(info: ImportTaskInfo) -> TaskStatus:
    """EC2's status of a task in the journal's words (a deleted task that says it was
    cancelled is ``cancelled``)."""
    try:
        status = TaskStatus(info.status)
    except ValueError:
        return TaskStatus.ACTIVE  # a status EC2 added since: still going, ask again
    if status is TaskStatus.DELETED and _says_cancelled(info.message):
        return TaskStatus.CANCELLED
    return status


def _says_cancelled(message: str) -> bool:
    return any(marker in message.lower() for marker in CANCEL_MARKERS)


#: What to do about EC2's known failures (VM Import/Export troubleshooting guide).
_HINTS = (
    (
        "403 forbidden",
        "the import role cannot read the disk object: check that it exists, "
        "in the import Region, and the role's s3:GetObject on it",
    ),
    (
        "unsupported kernel",
        "the VM's kernel is not one VM Import supports: see the VM "
        "Import/Export guide's supported operating systems",
    ),
    (
        "no valid partitions",
        "the disk has no partition VM Import can read: export the whole disk, not a partition",
    ),
    (
        "unknown os",
        "VM Import could not find an operating system on the first disk: put the boot disk first",
    ),
    (
        "firstbootfailure",
        "the VM did not boot or reach the network in EC2: check its drivers "
        "(ENA, NVMe), DHCP and firewall",
    ),
    (
        "unsupported specified file format",
        "the disk's format is not the one given: check diskFormat or the file's extension",
    ),
)


def failure_hint(message: str) -> str:
    """A hint for one of EC2's known failures, or ""."""
    lowered = message.lower().replace(" ", "")
    for marker, hint in _HINTS:
        if marker.replace(" ", "") in lowered:
            return hint
    return ""


@dataclass(slots=True)
class _Followed:
    record: TaskRecord
    since: float  # monotonic: when we started following it
    progress: str
    moved_at: float
    answered: anyio.Event = field(default_factory=anyio.Event)
    end: TaskEnd | None = None


class TaskFollower:
    """One partition's started tasks, followed in batched rounds (see the module doc)."""

    def __init__(
        self,
        client: PartitionClient,
        calls: CallExecutor,
        slots: TaskSlots,
        ledger: TaskLedger,
        *,
        clock: Clock,
        settings: TaskFollowSettings = TaskFollowSettings(),
        on_end: Callable[[TaskRecord], None] | None = None,
        on_round: Callable[[WaitRound], None] | None = None,
        rows_left: Callable[[], int] | None = None,
    ) -> None:
        self._client = client
        self._calls = calls
        self._slots = slots
        self._ledger = ledger
        self._clock = clock
        self._settings = settings
        self._on_end = on_end
        #: Told after each round (the live view); ``rows_left``: rows of the partition not
        #: yet given a task, for the ETA.
        self._on_round = on_round
        self._rows_left = rows_left
        self._followed: dict[str, _Followed] = {}
        self._more = anyio.Event()
        self._released = False
        self._durations: list[float] = []
        #: Rounds made and DescribeImportImageTasks calls they took (retries included),
        #: and the tasks each round asked about (for calls per task per round).
        self.rounds = 0
        self.tasks_asked = 0

    @property
    def calls(self) -> int:
        return self._calls.calls

    @property
    def active(self) -> int:
        return sum(1 for f in self._followed.values() if not f.record.status.ended)

    def follow(self, record: TaskRecord) -> None:
        """Follow a started (or adopted) task until it ends; it holds a slot till then."""
        if record.task_id in self._followed:
            return
        now = self._clock.now()
        self._followed[record.task_id] = _Followed(record, now, record.progress, now)
        self._more.set()

    def follows(self, task_id: str) -> bool:
        return task_id in self._followed

    def end_of(self, task_id: str) -> TaskEnd | None:
        """The task's answer if it has one already."""
        followed = self._followed.get(task_id)
        return None if followed is None else followed.end

    async def answer(self, task_id: str) -> TaskEnd:
        """Wait for the task's answer (its end, a verdict, or a stop)."""
        followed = self._followed[task_id]
        await followed.answered.wait()
        return followed.end or TaskEnd(TaskVerdict.INTERRUPTED)

    def release(self) -> None:
        """A stop: every waiting row is answered ``interrupted`` now (tasks go on)."""
        self._released = True
        for followed in self._followed.values():
            followed.answered.set()
        self._more.set()

    async def run(self) -> None:
        """The rounds, until the stop (run beside the rows)."""
        interval = self._settings.poll_min_s
        while not self._released:
            waiting = [f for f in self._followed.values() if not f.record.status.ended]
            if not waiting:
                self._more = anyio.Event()
                await self._more.wait()
                interval = self._settings.poll_min_s
                continue
            await self._clock.sleep(self._spacing(waiting, interval))
            interval = min(interval * 1.5, self._settings.poll_max_s)
            if self._released:
                return
            await self._round([f.record.task_id for f in waiting])
            self._verdicts()
            self._tell(interval)

    def _tell(self, growing: float) -> None:
        """The round as the live view shows it: tasks by status, the slots in use of the
        quota, the task running longest, and an ETA from the slots and the durations seen."""
        if self._on_round is None:
            return
        followed = list(self._followed.values())
        running = [f for f in followed if not f.record.status.ended]
        now = self._clock.now()
        oldest = min(running, key=lambda f: f.since) if running else None
        self._on_round(
            WaitRound(
                waiting_for=Waiting.WAVE,
                states=Counter(f.record.status.value for f in followed),
                outstanding=len(running),
                next_poll_s=self._spacing(running, growing)
                if running
                # Between tasks with rows still to start, the wave is not over.
                else (self._settings.poll_min_s if self._left() else None),
                rounds=self.rounds,
                quota=self._slots.ceiling,
                in_use=self._slots.active,
                slowest=""
                if oldest is None
                else f"{oldest.record.name} {oldest.record.semantic_version} at "
                f"{oldest.progress or '?'}%",
                slowest_age_s=None if oldest is None else now - oldest.since,
                eta_s=self._eta(running, now),
            )
        )

    def _eta(self, running: Sequence[_Followed], now: float) -> float | None:
        """The work left (rows without a task, and what the running ones should still
        take, at the median duration seen) over the slots; never before the running task
        expected last. None until a task completed."""
        if not self._durations:
            return None
        median = sorted(self._durations)[len(self._durations) // 2]
        ahead = [max(median - (now - f.since), 0.0) for f in running]
        work = self._left() * median + sum(ahead)
        return max(work / max(self._slots.limit, 1), max(ahead, default=0.0))

    def _left(self) -> int:
        return self._rows_left() if self._rows_left is not None else 0

    def _spacing(self, waiting: Sequence[_Followed], growing: float) -> float:
        """A share of the soonest expected end, within the bounds; ``growing`` until a
        duration is known."""
        settings = self._settings
        if not self._durations:
            return growing
        expected = sorted(self._durations)[len(self._durations) // 2]  # the median
        now = self._clock.now()
        soonest = min(expected - (now - f.since) for f in waiting)
        spacing = settings.poll_share * max(soonest, 0.0)
        return min(max(spacing, settings.poll_min_s), settings.poll_max_s)

    async def _round(self, task_ids: list[str]) -> None:
        self.rounds += 1
        self.tasks_asked += len(task_ids)
        for start in range(0, len(task_ids), TASK_IDS_PER_CALL):
            chunk = task_ids[start : start + TASK_IDS_PER_CALL]
            token: str | None = None
            while True:
                try:
                    page = await self._calls.read(
                        partial(self._client.describe_import_tasks, chunk, next_token=token)
                    )
                except CallError:
                    return  # asked again next round; a partition-wide fault stops elsewhere
                for info in page.tasks:
                    self._update(info)
                token = page.next_token
                if token is None:
                    break

    def _update(self, info: ImportTaskInfo) -> None:
        followed = self._followed.get(info.task_id)
        if followed is None or followed.record.status.ended:
            return
        now = self._clock.now()
        status = task_status(info)
        if info.progress != followed.progress:
            followed.progress, followed.moved_at = info.progress, now
        record = replace(
            followed.record,
            status=status,
            progress=info.progress,
            message=info.message,
            image_id=info.image_id or followed.record.image_id,
        )
        followed.record = record
        if status is TaskStatus.DELETING and followed.end is None:
            # Failed or cancelled: the row is answered now, the slot freed once deleted.
            followed.end = _end_of(record)
            followed.answered.set()
        if not status.ended:
            return
        record = replace(record, ended_at=self._clock.wall())
        followed.record = record
        self._ledger.record_task(record)
        self._slots.finished()
        if status is TaskStatus.COMPLETED:
            self._durations.append(now - followed.since)
        if followed.end is None:
            followed.end = _end_of(record)
            followed.answered.set()
        if self._on_end is not None:
            self._on_end(record)

    def _verdicts(self) -> None:
        """Stalled and timed-out tasks: their rows are answered, the slot kept till the end."""
        settings = self._settings
        now = self._clock.now()
        for followed in self._followed.values():
            if followed.end is not None or followed.record.status.ended:
                continue
            if (
                settings.task_timeout_s is not None
                and now - followed.since >= settings.task_timeout_s
            ):
                followed.end = TaskEnd(
                    TaskVerdict.TIMED_OUT,
                    f"import task {followed.record.task_id} did not end within "
                    f"--task-timeout ({_duration(settings.task_timeout_s)}; at "
                    f"{followed.progress or '?'}%)",
                )
            elif (
                settings.stall_timeout_s is not None
                and now - followed.moved_at >= settings.stall_timeout_s
            ):
                followed.end = TaskEnd(
                    TaskVerdict.STALLED,
                    f"import task {followed.record.task_id} stalled: its progress "
                    f"({followed.progress or '?'}%) has not moved for "
                    f"{_duration(settings.stall_timeout_s)} (--stall-timeout)",
                )
            if followed.end is not None:
                followed.answered.set()


def _end_of(record: TaskRecord) -> TaskEnd:
    if record.status is TaskStatus.COMPLETED:
        return TaskEnd(TaskVerdict.COMPLETED, image_id=record.image_id)
    if record.status is TaskStatus.CANCELLED or _says_cancelled(record.message):
        return TaskEnd(TaskVerdict.CANCELLED, record.message or "cancelled")
    message = record.message or "EC2 gave no reason"
    hint = failure_hint(message)
    return TaskEnd(TaskVerdict.FAILED, f"{message} (hint: {hint})" if hint else message)


def known_end(record: TaskRecord) -> TaskEnd | None:
    """The answer of a task the journal (or a listing) already saw end, else None."""
    return None if record.status is TaskStatus.ACTIVE else _end_of(record)


def _duration(seconds: float) -> str:
    if seconds >= 3600 and math.isclose(seconds % 3600, 0):
        return f"{seconds / 3600:g} h"
    if seconds >= 60 and math.isclose(seconds % 60, 0):
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"


def tagged(tasks: Sequence[ImportTaskInfo], key: str) -> Mapping[str, list[ImportTaskInfo]]:
    """Tasks by the value of their tag ``key`` (tasks without it left out)."""
    found: dict[str, list[ImportTaskInfo]] = {}
    for info in tasks:
        value = info.tags.get(key)
        if value is not None:
            found.setdefault(value, []).append(info)
    return found
