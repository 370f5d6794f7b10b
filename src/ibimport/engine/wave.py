"""A wave's EC2 import tasks, as a batch composes them per partition (issue 19).

``TaskWave`` holds the settings of rows with disks (``--task-slots``, ``--after-task``,
``--stall-timeout``, ``--task-timeout``, the polling's spacing); ``task_start_stage``
makes one partition's task-start stage with its own slots, follower and executors.
The stage skips rows without disks, and asks nothing of a partition that has none.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ibimport.aws.client import PartitionClient
from ibimport.domain.apimodel import REGION_PATTERN
from ibimport.engine.events import RunListener, round_teller
from ibimport.engine.pipeline import RunSettings
from ibimport.errors import ConfigError
from ibimport.flow.clock import Clock
from ibimport.flow.executor import CallExecutor, PartitionHealth
from ibimport.flow.limiter import build_limiter
from ibimport.flow.slots import TaskSlots
from ibimport.stages.taskfollow import TaskFollower, TaskFollowSettings, TaskLedger
from ibimport.stages.taskstart import TaskStartSettings, TaskStartStage

__all__ = ["TaskSlotSpec", "TaskWave", "parse_task_slots", "task_start_stage"]


@dataclass(frozen=True, slots=True)
class TaskSlotSpec:
    """``--task-slots``: a number for every partition and/or one per Region."""

    default: int | None = None
    per_region: Mapping[str, int] = field(default_factory=dict)

    def for_region(self, region: str) -> int | None:
        """The slots told for this Region; None: ask Service Quotas (else 20)."""
        return self.per_region.get(region, self.default)


def parse_task_slots(values: Sequence[str]) -> TaskSlotSpec:
    """``["20"]`` or ``["us-east-1=20", "eu-west-1=10"]`` (a bare number is the default)."""
    default: int | None = None
    per_region: dict[str, int] = {}
    for text in values:
        region, _, number = text.rpartition("=")
        if not number.strip().isdigit() or int(number) < 1:
            raise ConfigError(
                f"--task-slots {text!r}: expected N or REGION=N with N at least 1, such as 20"
            )
        if not region:
            default = int(number)
        elif re.fullmatch(REGION_PATTERN, region):
            per_region[region] = int(number)
        else:
            raise ConfigError(f"--task-slots {text!r}: {region!r} is not a Region's name")
    return TaskSlotSpec(default, per_region)


@dataclass(frozen=True, kw_only=True, slots=True)
class TaskWave:
    """How the rows with disks start and follow their EC2 import tasks."""

    slots: TaskSlotSpec = field(default_factory=TaskSlotSpec)
    after_task: bool = False
    follow: TaskFollowSettings = field(default_factory=TaskFollowSettings)
    #: With nothing of ours running, how long a start the quota refused waits to ask again.
    quota_retry_s: float = 30.0


def task_start_stage(
    client: PartitionClient,
    wave: TaskWave,
    *,
    region: str,
    ledger: TaskLedger,
    clock: Clock,
    settings: RunSettings,
    health: PartitionHealth,
    rng: random.Random | None = None,
    listeners: Sequence[RunListener] = (),
    partition: str = "",
    total_rows: int | None = None,
) -> TaskStartStage:
    """One partition's task-start stage: its slots, its follower and their executors (the
    start calls and the lookups each under a limiter of their own). ``listeners`` hear the
    follower's rounds (``Waiting.WAVE``), named ``partition``; ``total_rows``, the
    partition's rows, gives their ETA the rows that have no task yet."""
    policy = settings.retry_policy()
    stages: list[TaskStartStage] = []

    def rows_left() -> int:
        if total_rows is None or not stages:
            return 0
        return max(total_rows - stages[0].rows_through, 0)

    rng = rng or random.Random()

    def executor(concurrency: int) -> CallExecutor:
        limiter = build_limiter(concurrency=concurrency, rate=None, clock=clock)
        return CallExecutor(limiter, clock=clock, policy=policy, health=health, rng=rng)

    slots = TaskSlots(
        wave.slots.for_region(region) or 20, clock=clock, retry_after_s=wave.quota_retry_s
    )
    follower = TaskFollower(
        client,
        executor(1),
        slots,
        ledger,
        clock=clock,
        settings=wave.follow,
        on_round=round_teller(listeners, partition=partition),
        rows_left=rows_left,
    )
    stage = TaskStartStage(
        client,
        executor(4),
        executor(1),
        follower,
        slots,
        ledger,
        clock=clock,
        settings=TaskStartSettings(
            slots=wave.slots.for_region(region),
            after_task=wave.after_task,
            token_salt=settings.token_salt,
        ),
    )
    stages.append(stage)
    return stage
