"""Pipelines side by side (``engine.fleet.run_fleet``), on fake stages in virtual time: a
partition that stops stops alone, and the batch's outcome says which one stopped."""

from __future__ import annotations

from orchestration_support import Collector, MemoryJournal, StepStage, manifest_rows, succeed

from ibimport.domain.results import RowStatus
from ibimport.engine.fleet import FanOut, Partition, PartitionWork, run_fleet
from ibimport.engine.pipeline import Pipeline, RunOutcome, RunSettings
from ibimport.errors import FatalBatchError
from ibimport.manifest import ManifestRow
from ibimport.stages.base import RowWork
from ibimport.testing import FakeClock

EAST = ("111111111111", "us-east-1")
WEST = ("222222222222", "eu-west-1")


class Side:
    """One partition of the fleet: its stage, its pipeline, its rows."""

    def __init__(
        self,
        clock: FakeClock,
        origin: tuple[str, str],
        rows: list[ManifestRow],
        batch: Collector,
        *,
        stop_at: int | None = None,
        failure: FatalBatchError | None = None,
    ) -> None:
        self.own = Collector()
        self.stage = StepStage("import", [], clock, answer=succeed, latency_s=1.0)
        self.pipeline = Pipeline(
            [self.stage],
            journal=MemoryJournal(),
            clock=clock,
            listeners=[FanOut([batch]), self.own],
            settings=RunSettings(concurrency=1),
            origin=origin,
        )
        self.partition = Partition(origin[0], origin[1], {0}, None, failure)
        self.work = PartitionWork(self.partition, self.pipeline, rows)
        self.finished_at: float | None = None
        if stop_at is not None:
            refused = FatalBatchError(f"{self.partition.label}: the AWS credentials were refused")

            async def stop(work: RowWork) -> None:
                if work.row == stop_at:
                    self.pipeline.stop(refused)

            self.stage.on_row = stop


async def _fleet(clock: FakeClock, batch: Collector, *sides: Side) -> RunOutcome:
    return await run_fleet(
        [side.work for side in sides], clock=clock, listeners=[batch], total_rows=20
    )


async def test_a_partition_that_stops_leaves_the_other_running_to_the_end() -> None:
    clock = FakeClock()
    batch = Collector()
    east = Side(clock, EAST, manifest_rows(12), batch)
    west = Side(clock, WEST, manifest_rows(8, first=13), batch, stop_at=14)
    outcome = await _fleet(clock, batch, east, west)

    assert east.own.statuses() == {n: RowStatus.SUCCEEDED for n in range(1, 13)}
    assert clock.now() >= 4.0  # twelve 1 s rows, three at a time: it ran on after west stopped
    assert len(west.own.results) == 8  # every row of the stopped one is reported
    assert RowStatus.SKIPPED in set(west.own.statuses().values())
    assert {r.error_code for r in west.own.results.values() if r.status is RowStatus.SKIPPED} == {
        "StoppedOnFatalError"
    }
    assert {(r.account, r.region) for r in west.own.results.values()} == {WEST}

    assert outcome.fatal is not None
    assert str(outcome.fatal) == (
        "1 of 2 partitions stopped (222222222222/eu-west-1: the AWS credentials were "
        "refused); the other 1 ran to the end"
    )
    assert not outcome.interrupted
    assert outcome.elapsed_s == clock.now()
    # The batch's own listeners: one start, one finish, every row of both partitions.
    assert batch.started == [20]
    assert batch.finished == [False]
    assert len(batch.order) == 20


async def test_a_partition_that_could_not_open_sends_nothing_and_is_named() -> None:
    clock = FakeClock()
    batch = Collector()
    east = Side(clock, EAST, manifest_rows(3), batch)
    failed = Side(
        clock,
        WEST,
        manifest_rows(2, first=4),
        batch,
        failure=FatalBatchError("no credentials in profile"),
    )
    outcome = await _fleet(clock, batch, east, failed)
    assert failed.stage.entered == []
    assert failed.stage.run is None  # never prepared
    assert east.own.statuses() == {n: RowStatus.SUCCEEDED for n in (1, 2, 3)}
    assert {r.error_message for r in failed.own.results.values()} == {"no credentials in profile"}
    assert str(outcome.fatal) == (
        "1 of 2 partitions stopped (222222222222/eu-west-1: no credentials in profile); "
        "the other 1 ran to the end"
    )


async def test_when_every_partition_stops_each_is_named() -> None:
    clock = FakeClock()
    batch = Collector()
    east = Side(clock, EAST, manifest_rows(4), batch, stop_at=1)
    west = Side(clock, WEST, manifest_rows(4, first=5), batch, stop_at=7)
    outcome = await _fleet(clock, batch, east, west)
    message = str(outcome.fatal)
    assert message.startswith("2 of 2 partitions stopped (111111111111/us-east-1: ")
    assert "; 222222222222/eu-west-1: the AWS credentials were refused)" in message
    # A message that already names its partition is not prefixed twice.
    assert "us-east-1: 111111111111/us-east-1" not in message


async def test_one_partitions_stop_is_passed_on_as_it_is() -> None:
    clock = FakeClock()
    batch = Collector()
    only = Side(clock, WEST, manifest_rows(4), batch, stop_at=1)
    outcome = await _fleet(clock, batch, only)
    assert str(outcome.fatal) == "222222222222/eu-west-1: the AWS credentials were refused"


async def test_a_stop_asked_of_one_partition_is_the_batchs_interruption() -> None:
    clock = FakeClock()
    batch = Collector()
    east = Side(clock, EAST, manifest_rows(6), batch)
    west = Side(clock, WEST, manifest_rows(6, first=7), batch)

    async def interrupt(work: RowWork) -> None:
        if work.row == 7:
            west.pipeline.request_stop()

    west.stage.on_row = interrupt
    outcome = await _fleet(clock, batch, east, west)
    assert outcome.interrupted
    assert outcome.fatal is None
    assert batch.finished == [True]
    assert east.own.statuses() == {n: RowStatus.SUCCEEDED for n in range(1, 7)}
