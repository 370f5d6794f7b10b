"""The task check and the image waiter on fakes and a FakeClock: batching, splitting, rounds."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ibimport.aws.client import (
    BuildPage,
    BuildSummary,
    ImageState,
    ImportTaskInfo,
    ImportTaskPage,
)
from ibimport.domain.results import RowResult
from ibimport.domain.rowstate import ImageStatus, RerunPlan, RowStatus, image_status
from ibimport.domain.stages import StageName
from ibimport.errors import ApiError, CallError
from ibimport.flow.executor import CallExecutor, RetryPolicy
from ibimport.flow.limiter import build_limiter
from ibimport.flow.retry import Backoff
from ibimport.journal import SqliteJournal
from ibimport.stages.imagewait import ImageWaiter, WaitSettings, follow_journal
from ibimport.stages.polling import Waiting, WaitRound
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


@pytest.mark.parametrize("names", [True, False])
async def test_tasks_are_classified_in_batches_and_a_bad_id_is_isolated_by_halving(
    names: bool,
) -> None:
    """Whether EC2's message names the unknown ID or not, the answer and the cost are the
    same: the message is never read (issue 21)."""
    tasks = {t.task_id: t for t in (_task(i) for i in range(250))}
    tasks[_task(3).task_id] = _task(3, "active", progress="40")
    tasks[_task(4).task_id] = _task(4, "deleted", message="ClientError: Unknown OS")
    ec2 = FakeEc2(tasks, names=names)
    clock = FakeClock()
    checker = TaskChecker(ec2, _calls(clock))
    ids = [*tasks, "import-ami-99999999999999999"]
    checks = await checker.check(ids)
    assert checks[_task(0).task_id].state is TaskState.READY
    assert checks[_task(3).task_id].state is TaskState.PENDING
    assert checks[_task(3).task_id].progress == "40"
    assert checks[_task(4).task_id].message == "ClientError: Unknown OS"
    assert checks["import-ami-99999999999999999"].state is TaskState.UNKNOWN
    # 251 IDs: 3 batches; the one of 51 with the bad ID is halved 6 times, 2 calls each.
    assert checker.calls == 3 + 2 * 6
    assert checker.split_calls == 2 * 6


async def test_splitting_costs_at_most_two_calls_per_id_when_none_is_known() -> None:
    ec2 = FakeEc2({})
    checker = TaskChecker(ec2, _calls(FakeClock()))
    unknown = [f"import-ami-{i:017d}" for i in range(100)]
    checks = await checker.check(unknown)
    assert {c.state for c in checks.values()} == {TaskState.UNKNOWN}
    assert checker.calls == 2 * 100 - 1
    assert checker.split_calls == checker.calls - 1


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


@dataclass
class FakeImages:
    """Images that become ``final`` at ``ready_at[arn]`` on the clock; counts calls by kind."""

    clock: FakeClock
    ready_at: dict[str, float]
    final: dict[str, str] = field(default_factory=dict)
    #: Images the service does not have (GetImage: ResourceNotFoundException).
    gone: set[str] = field(default_factory=set)
    #: Images that exist but are not listed yet (``--list-delay-s``).
    unlisted: set[str] = field(default_factory=set)
    lists: int = 0
    gets: int = 0

    def _status(self, arn: str) -> str:
        if self.clock.now() < self.ready_at[arn]:
            return "CREATING"
        return self.final.get(arn, "AVAILABLE")

    async def list_builds(self, *, next_token: str | None) -> BuildPage:
        self.lists += 1
        arns = sorted(set(self.ready_at) - self.gone - self.unlisted)
        start = int(next_token or 0)
        page = arns[start : start + 100]
        builds = [BuildSummary(a, "vm", "1.0.0", self._status(a), "why") for a in page]
        more = start + 100 < len(arns)
        return BuildPage(builds, str(start + 100) if more else None)

    async def get_image(self, arn: str) -> ImageState:
        self.gets += 1
        if arn in self.gone:
            raise ApiError(
                "ResourceNotFoundException", f"Resource {arn} does not exist.", status=404
            )
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


async def test_an_image_absent_from_a_complete_listing_is_deleted_at_once() -> None:
    """Issue 22 item 13: not TIMED_OUT after the whole timeout; GetImage confirms each
    absentee once, so a build not listed yet is not taken for gone."""
    clock = FakeClock()
    ready = {ARN.format(i=i): 10_000.0 for i in range(300)}
    gone = {ARN.format(i=i) for i in range(0, 300, 2)}
    unlisted = {ARN.format(i=1)}
    images = FakeImages(clock, ready, gone=gone, unlisted=unlisted)
    settled: list[ImageStatus] = []
    waiter = ImageWaiter(
        images,
        _calls(clock),
        clock=clock,
        settings=WaitSettings(timeout_s=3600),
        on_settled=lambda outcomes: settled.extend(o.status for o in outcomes),
    )
    outcomes = await waiter.wait(ready)
    assert waiter.figures.rounds[0] == (300, 2 + 151)  # 2 pages, then 151 GetImage
    assert settled[:150] == [ImageStatus.DELETED] * 150  # in the first round
    assert {outcomes[arn].status for arn in gone} == {ImageStatus.DELETED}
    assert outcomes[ARN.format(i=1)].status is ImageStatus.TIMED_OUT


def test_row_and_image_states() -> None:
    assert not RowStatus.BLOCKED.is_done
    assert RerunPlan.from_counts({RowStatus.BLOCKED: 2}).recheck == 2
    assert image_status("CREATING") is None
    assert image_status("DEPRECATED") is ImageStatus.AVAILABLE
    assert not ImageStatus.TIMED_OUT.is_final


async def test_a_wait_journals_each_image_s_stage_with_its_rounds_and_state(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    journal = SqliteJournal.open(
        tmp_path / "j", manifest_path="m", manifest_fingerprint="f", settings={}, clock=clock
    )
    arns = {ARN.format(i=1): 5.0, ARN.format(i=2): 10_000.0}
    for row, arn in enumerate(arns, start=1):
        journal.record(
            RowResult(
                row=row,
                name=f"vm-{row}",
                semantic_version="1.0.0",
                status=RowStatus.SUCCEEDED,
                client_token=f"t{row}",
                image_arn=arn,
            )
        )
    await journal.flush()
    began = clock.wall()
    totals, figures = await follow_journal(
        FakeImages(clock, arns),
        journal,
        calls=_calls(clock),
        clock=clock,
        settings=WaitSettings(interval_s=1.0, timeout_s=30.0),
    )
    assert totals == {ImageStatus.AVAILABLE: 1, ImageStatus.TIMED_OUT: 1}
    records = {r.name: r for r in journal.stage_records()}
    assert {r.stage for r in records.values()} == {StageName.IMAGE_WAIT}
    first, late = records["vm-1"], records["vm-2"]
    assert first.started_at == late.started_at == began
    assert (first.outcome, late.outcome) == ("AVAILABLE", "TIMED_OUT")
    assert first.ended_at is not None
    assert 5.0 <= first.ended_at - began < 30.0
    assert late.ended_at == began + clock.now()  # the deadline (FakeClock wall follows now)
    assert 1 < first.attempts < late.attempts == len(figures.rounds)
    journal.close()


async def test_each_round_tells_the_images_by_state_the_next_poll_and_the_time_left() -> None:
    """Issue 23 item 6: what a person watching the wait is shown comes from these rounds."""
    clock = FakeClock()
    ready = {ARN.format(i=1): 3.0, ARN.format(i=2): 10_000.0, ARN.format(i=3): 0.0}
    images = FakeImages(clock, ready, final={ARN.format(i=3): "FAILED"})
    told: list[tuple[float, dict[str, int], int, float | None, float | None, int]] = []

    def heard(r: WaitRound) -> None:
        assert r.waiting_for is Waiting.IMAGES
        told.append(
            (clock.now(), dict(r.states), r.outstanding, r.next_poll_s, r.time_left_s, r.rounds)
        )

    settings = WaitSettings(interval_s=2.0, growth=2.0, max_interval_s=60.0, timeout_s=20.0)
    waiter = ImageWaiter(images, _calls(clock), clock=clock, settings=settings, on_round=heard)
    await waiter.wait(ready)
    assert told == [
        (0.0, {}, 3, 0.0, 20.0, 0),  # as the wait begins: nothing asked yet
        (0.0, {"FAILED": 1, "CREATING": 2}, 2, 2.0, 20.0, 1),
        (2.0, {"FAILED": 1, "CREATING": 2}, 2, 4.0, 18.0, 2),
        (6.0, {"FAILED": 1, "AVAILABLE": 1, "CREATING": 1}, 1, 8.0, 14.0, 3),
        (14.0, {"FAILED": 1, "AVAILABLE": 1, "CREATING": 1}, 1, 6.0, 6.0, 4),  # cut to the end
        (20.0, {"FAILED": 1, "AVAILABLE": 1, "TIMED_OUT": 1}, 0, None, 0.0, 5),
    ]


async def test_a_journal_s_wait_tells_the_images_an_earlier_wait_settled_too(
    tmp_path: Path,
) -> None:
    journal = SqliteJournal.open(
        tmp_path / "j.db", manifest_path="m.csv", manifest_fingerprint="f", settings={}
    )
    for row in (1, 2):
        journal.record(
            RowResult(
                row=row,
                name=f"vm-{row}",
                semantic_version="1.0.0",
                status=RowStatus.SUCCEEDED,
                client_token=f"t{row}",
                image_arn=ARN.format(i=row),
            )
        )
    await journal.flush()
    journal.record_image_statuses([("vm-1", "1.0.0", "AVAILABLE", "")])
    clock = FakeClock()
    images = FakeImages(clock, {ARN.format(i=1): 0.0, ARN.format(i=2): 5.0})
    told: list[WaitRound] = []
    totals, _ = await follow_journal(
        images,
        journal,
        calls=_calls(clock),
        clock=clock,
        settings=WaitSettings(interval_s=2.0, timeout_s=None),
        on_round=told.append,
    )
    await journal.aclose()
    assert totals == {ImageStatus.AVAILABLE: 2}
    assert told[0].states == {"AVAILABLE": 1}
    assert told[0].outstanding == 1
    assert told[0].time_left_s is None  # no timeout
    assert told[-1].states == {"AVAILABLE": 2}
    assert told[-1].over
    assert all(r.states.get("CREATING") == 1 for r in told[1:-1])
