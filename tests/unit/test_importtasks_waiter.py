"""The task check and the image waiter on fakes and a FakeClock: batching, splitting, rounds."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from ibimport.aws.client import (
    BuildPage,
    BuildSummary,
    ImageState,
    ImportTaskInfo,
    ImportTaskPage,
    unknown_task_ids,
)
from ibimport.domain.rowstate import ImageStatus, RerunPlan, RowStatus, image_status
from ibimport.errors import ApiError, CallError
from ibimport.flow.executor import CallExecutor, RetryPolicy
from ibimport.flow.limiter import build_limiter
from ibimport.flow.retry import Backoff
from ibimport.stages.imagewait import ImageWaiter, WaitSettings
from ibimport.stages.taskcheck import TaskChecker, TaskState
from ibimport.testing import FakeClock

ARN = "arn:aws:imagebuilder:us-east-1:123456789012:image/vm-{i}/1.0.0/1"


def _calls(clock: FakeClock) -> CallExecutor:
    return CallExecutor(
        build_limiter(concurrency=4, rate=None, clock=clock),
        clock=clock,
        policy=RetryPolicy(backoff=Backoff()),
    )


@dataclass
class FakeEc2:
    """Knows ``tasks``; a call naming another ID fails whole, naming it only if ``names``."""

    tasks: dict[str, ImportTaskInfo]
    names: bool = True
    faults: list[CallError] = field(default_factory=list)
    asked: list[int] = field(default_factory=list)

    async def describe_import_tasks(
        self, task_ids: Sequence[str], *, next_token: str | None
    ) -> ImportTaskPage:
        self.asked.append(len(task_ids))
        if self.faults:
            raise self.faults.pop(0)
        unknown = [t for t in task_ids if t not in self.tasks]
        if unknown:
            text = f"The import task IDs '{', '.join(unknown)}' do not exist" if self.names else ""
            raise ApiError("InvalidConversionTaskId.Malformed", text, status=400)
        return ImportTaskPage([self.tasks[t] for t in task_ids], None)


def _task(i: int, status: str = "completed", **extra: str) -> ImportTaskInfo:
    return ImportTaskInfo(
        f"import-ami-{i:017d}", status, extra.get("progress", ""), extra.get("message", "")
    )


async def test_tasks_are_classified_in_batches_and_one_bad_id_costs_one_more_call() -> None:
    tasks = {t.task_id: t for t in (_task(i) for i in range(250))}
    tasks[_task(3).task_id] = _task(3, "active", progress="40")
    tasks[_task(4).task_id] = _task(4, "deleted", message="ClientError: Unknown OS")
    ec2 = FakeEc2(tasks)
    clock = FakeClock()
    checker = TaskChecker(ec2, _calls(clock))
    ids = [*tasks, "import-ami-99999999999999999"]
    checks = await checker.check(ids)
    assert checks[_task(0).task_id].state is TaskState.READY
    assert checks[_task(3).task_id].state is TaskState.PENDING
    assert checks[_task(3).task_id].progress == "40"
    assert checks[_task(4).task_id].message == "ClientError: Unknown OS"
    assert checks["import-ami-99999999999999999"].state is TaskState.UNKNOWN
    assert checker.calls == 3 + 1  # 251 IDs: 3 batches, the bad one asked again without it


async def test_a_message_naming_no_id_halves_the_batch() -> None:
    tasks = {t.task_id: t for t in (_task(i) for i in range(100))}
    ec2 = FakeEc2(tasks, names=False)
    checker = TaskChecker(ec2, _calls(FakeClock()))
    checks = await checker.check([*list(tasks)[:99], "import-ami-99999999999999999"])
    assert checks["import-ami-99999999999999999"].state is TaskState.UNKNOWN
    assert sum(c.state is TaskState.READY for c in checks.values()) == 99
    assert checker.calls <= 2 * 8  # about two calls per halving, never one per row


async def test_throttling_and_faults_are_retried_permanent_errors_raise() -> None:
    tasks = {_task(1).task_id: _task(1)}
    throttle = ApiError("RequestLimitExceeded", "slow down", status=503)
    fault = ApiError("InternalError", "oops", status=500)
    ec2 = FakeEc2(tasks, faults=[throttle, fault])
    checker = TaskChecker(ec2, _calls(FakeClock()))
    assert (await checker.check(tasks))[_task(1).task_id].state is TaskState.READY
    assert checker.calls == 3
    denied = FakeEc2(tasks, faults=[ApiError("UnauthorizedOperation", "no", status=403)])
    with pytest.raises(ApiError):
        await TaskChecker(denied, _calls(FakeClock())).check(tasks)


def test_unknown_ids_are_read_from_ec2s_message() -> None:
    message = "The import task IDs 'import-ami-0000000a, import-ami-0000000b' do not exist"
    asked = ["import-ami-0000000a", "import-ami-0000000b", "import-ami-0000000c"]
    assert unknown_task_ids(message, asked) == {"import-ami-0000000a", "import-ami-0000000b"}


@dataclass
class FakeImages:
    """Images that become ``final`` at ``ready_at[arn]`` on the clock; counts calls by kind."""

    clock: FakeClock
    ready_at: dict[str, float]
    final: dict[str, str] = field(default_factory=dict)
    lists: int = 0
    gets: int = 0

    def _status(self, arn: str) -> str:
        if self.clock.now() < self.ready_at[arn]:
            return "CREATING"
        return self.final.get(arn, "AVAILABLE")

    async def list_builds(self, *, next_token: str | None) -> BuildPage:
        self.lists += 1
        arns = sorted(self.ready_at)
        start = int(next_token or 0)
        page = arns[start : start + 100]
        builds = [BuildSummary(a, "vm", "1.0.0", self._status(a), "why") for a in page]
        more = start + 100 < len(arns)
        return BuildPage(builds, str(start + 100) if more else None)

    async def get_image(self, arn: str) -> ImageState:
        self.gets += 1
        return ImageState(arn, self._status(arn), "why")


async def test_many_outstanding_images_are_read_by_listing_the_last_few_by_get() -> None:
    clock = FakeClock()
    ready = {ARN.format(i=i): 10.0 for i in range(1000)}
    ready.update({ARN.format(i=i): 200.0 for i in range(5)})  # five stragglers
    images = FakeImages(clock, ready, final={ARN.format(i=0): "FAILED"})
    waiter = ImageWaiter(images, _calls(clock), clock=clock, settings=WaitSettings(timeout_s=None))
    outcomes = await waiter.wait(ready)
    assert outcomes[ARN.format(i=0)].status is ImageStatus.FAILED
    assert outcomes[ARN.format(i=0)].reason == "why"
    assert sum(o.status is ImageStatus.AVAILABLE for o in outcomes.values()) == 999
    for outstanding, calls in waiter.figures.rounds:
        assert calls <= max(1, -(-outstanding // 50)) or outstanding <= 10, (outstanding, calls)
    assert images.gets > 0  # the tail was read with GetImage
    assert images.lists >= 10


async def test_a_deadline_times_out_the_images_still_being_built() -> None:
    clock = FakeClock()
    ready = {ARN.format(i=1): 5.0, ARN.format(i=2): 10_000.0}
    settled: list[str] = []
    waiter = ImageWaiter(
        FakeImages(clock, ready),
        _calls(clock),
        clock=clock,
        settings=WaitSettings(interval_s=1.0, timeout_s=60.0),
        on_settled=lambda outcomes: settled.extend(o.arn for o in outcomes),
    )
    outcomes = await waiter.wait(ready)
    assert outcomes[ARN.format(i=1)].status is ImageStatus.AVAILABLE
    assert outcomes[ARN.format(i=2)].status is ImageStatus.TIMED_OUT
    assert 60.0 <= clock.now() < 61.0
    assert sorted(settled) == sorted(ready)
    # The interval grows 1.5x a round: about 10 rounds in 60 s, not 60 at a fixed 1 s.
    assert 5 <= len(waiter.figures.rounds) <= 15


def test_row_and_image_states() -> None:
    assert not RowStatus.BLOCKED.is_done
    assert RerunPlan.from_counts({RowStatus.BLOCKED: 2}).recheck == 2
    assert image_status("CREATING") is None
    assert image_status("DEPRECATED") is ImageStatus.AVAILABLE
    assert not ImageStatus.TIMED_OUT.is_final
