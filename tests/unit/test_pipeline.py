"""One partition's pipeline (``engine.pipeline``) on fake stages, in virtual time: the order
of a row's walk, deferred rows, prepare, stops and drains, work beside the rows, resume."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import anyio
from orchestration_support import (
    Collector,
    MemoryJournal,
    StepStage,
    entry,
    manifest_rows,
    succeed,
)

from ibimport.domain.results import RowResult, RowStatus
from ibimport.engine.pipeline import Pipeline, RunOutcome, RunSettings
from ibimport.errors import FatalBatchError
from ibimport.manifest import ManifestRow
from ibimport.stages.base import PartitionRun, RowStage, RowWork
from ibimport.testing import FakeClock


def _pipeline(
    stages: Sequence[RowStage],
    clock: FakeClock,
    *,
    journal: MemoryJournal | None = None,
    concurrency: int = 1,
    drain_timeout_s: float = 3600.0,
    retry_failed: bool = True,
) -> tuple[Pipeline, Collector]:
    collector = Collector()
    pipeline = Pipeline(
        stages,
        journal=journal or MemoryJournal(),
        clock=clock,
        listeners=[collector],
        settings=RunSettings(
            concurrency=concurrency, drain_timeout_s=drain_timeout_s, retry_failed=retry_failed
        ),
        origin=("123456789012", "us-east-1"),
    )
    return pipeline, collector


async def _run(pipeline: Pipeline, rows: Iterable[ManifestRow], **kwargs: object) -> RunOutcome:
    return await pipeline.run(rows, **kwargs)  # type: ignore[arg-type]


async def test_each_row_walks_the_stages_in_order_until_one_answers() -> None:
    clock = FakeClock()
    log: list[tuple[str, object]] = []
    stages = [
        StepStage("a", log, clock, latency_s=0.5),
        StepStage("b", log, clock),
        StepStage("c", log, clock, answer=succeed),
    ]
    pipeline, collector = _pipeline(stages, clock, concurrency=4)
    outcome = await _run(pipeline, manifest_rows(6), total_rows=6)
    assert (outcome.fatal, outcome.interrupted) == (None, False)
    for row in range(1, 7):
        assert [label for label, seen in log if seen == row] == ["a", "b", "c"]
    assert collector.statuses() == {row: RowStatus.SUCCEEDED for row in range(1, 7)}
    assert collector.started == [6]
    assert collector.finished == [False]
    first = collector.results[1]
    assert (first.account, first.region) == ("123456789012", "us-east-1")


async def test_a_stages_answer_ends_the_walk_and_none_goes_on() -> None:
    clock = FakeClock()
    log: list[tuple[str, object]] = []

    def fail_even(work: RowWork) -> RowStatus | None:
        return RowStatus.FAILED if work.row % 2 == 0 else None

    first = StepStage("first", log, clock, answer=fail_even)
    last = StepStage("last", log, clock, answer=succeed)
    journal = MemoryJournal()
    pipeline, collector = _pipeline([first, last], clock, journal=journal)
    await _run(pipeline, manifest_rows(6))
    assert sorted(first.entered) == [1, 2, 3, 4, 5, 6]
    assert sorted(last.entered) == [1, 3, 5]
    assert collector.statuses() == {
        row: RowStatus.FAILED if row % 2 == 0 else RowStatus.SUCCEEDED for row in range(1, 7)
    }
    assert sorted(r.row for r in journal.recorded) == [1, 2, 3, 4, 5, 6]


async def test_a_row_no_stage_settles_is_skipped_saying_so() -> None:
    clock = FakeClock()
    pipeline, collector = _pipeline([StepStage("only", [], clock)], clock)
    await _run(pipeline, manifest_rows(2))
    assert collector.statuses() == {1: RowStatus.SKIPPED, 2: RowStatus.SKIPPED}
    assert collector.results[1].error_code == "NotImported"


async def test_an_invalid_row_is_reported_invalid_and_reaches_no_stage() -> None:
    clock = FakeClock()
    stage = StepStage("only", [], clock, answer=succeed)
    pipeline, collector = _pipeline([stage], clock)
    await _run(pipeline, manifest_rows(3, invalid=frozenset({2})))
    assert sorted(stage.entered) == [1, 3]
    assert collector.results[2].status is RowStatus.INVALID
    assert collector.results[2].error_message == "platform: must be Linux or Windows"


async def test_a_deferred_row_holds_no_worker() -> None:
    """Ten rows wait in a stage for the eleventh row to open a gate. With one call in
    flight the pipeline has three workers: the eleventh is reached only if the waiting
    rows hold none (else they give up waiting at virtual t=1000)."""
    clock = FakeClock()
    log: list[tuple[str, object]] = []
    opened = anyio.Event()
    saw_open: dict[int, bool] = {}

    async def gate(work: RowWork) -> None:
        if work.row == 11:
            opened.set()
            return
        while not opened.is_set() and clock.now() < 1000:
            await clock.sleep(1.0)
        saw_open[work.row] = opened.is_set()

    waiting = StepStage("gate", log, clock, deferred=frozenset(range(1, 11)), on_row=gate)
    rest = StepStage("rest", log, clock, answer=succeed)
    pipeline, collector = _pipeline([waiting, rest], clock, concurrency=1)
    await _run(pipeline, manifest_rows(11))
    assert saw_open == {row: True for row in range(1, 11)}
    assert clock.now() < 1000
    assert collector.order[0] == 11  # it overtook the rows waiting before it
    # The rest of a deferred row's walk ran after its wait.
    assert sorted(rest.entered) == list(range(1, 12))
    assert collector.statuses() == {row: RowStatus.SUCCEEDED for row in range(1, 12)}


async def test_prepare_runs_once_per_stage_in_order_before_any_row() -> None:
    clock = FakeClock()
    log: list[tuple[str, object]] = []
    stages = [StepStage("a", log, clock), StepStage("b", log, clock, answer=succeed)]
    pipeline, _ = _pipeline(stages, clock, concurrency=4)
    await _run(pipeline, manifest_rows(8))
    assert log[:2] == [("a", "prepare"), ("b", "prepare")]
    assert [seen for _, seen in log].count("prepare") == 2


async def test_a_stop_in_prepare_sends_nothing_and_names_its_reason_on_every_row() -> None:
    clock = FakeClock()
    log: list[tuple[str, object]] = []

    def refuse(run: PartitionRun) -> None:
        run.stop(FatalBatchError("could not list the images"))

    first = StepStage("a", log, clock, on_prepare=refuse)
    second = StepStage("b", log, clock, answer=succeed)
    journal = MemoryJournal()
    pipeline, collector = _pipeline([first, second], clock, journal=journal)
    outcome = await _run(pipeline, manifest_rows(4, invalid=frozenset({3})))
    assert log == [("a", "prepare")]  # the next stage is not prepared; no row walks
    assert str(outcome.fatal) == "could not list the images"
    assert not outcome.interrupted
    assert collector.finished == [False]
    for row in (1, 2, 4):
        assert collector.results[row].status is RowStatus.SKIPPED
        assert collector.results[row].error_code == "StoppedOnFatalError"
        assert collector.results[row].error_message == "could not list the images"
    assert collector.results[3].status is RowStatus.INVALID
    assert [r.status for r in journal.recorded] == [RowStatus.INVALID]  # skipped: not journalled
    assert first.released == second.released == 1


async def test_a_partition_stopped_before_it_starts_prepares_nothing() -> None:
    clock = FakeClock()
    log: list[tuple[str, object]] = []
    pipeline, collector = _pipeline([StepStage("a", log, clock, answer=succeed)], clock)
    outcome = await _run(
        pipeline, manifest_rows(3), stopped_by=FatalBatchError("no credentials for eu-west-1")
    )
    assert log == []
    assert str(outcome.fatal) == "no credentials for eu-west-1"
    assert {r.error_code for r in collector.results.values()} == {"StoppedOnFatalError"}
    assert len(collector.results) == 3


def _stopping_at(pipeline_box: list[Pipeline], row: int):  # type: ignore[no-untyped-def]
    async def maybe_stop(work: RowWork) -> None:
        if work.row == row:
            pipeline_box[0].request_stop()

    return maybe_stop


async def test_a_stop_cuts_off_the_rows_in_progress_after_the_drain_and_reports_the_rest() -> None:
    clock = FakeClock()
    box: list[Pipeline] = []
    stage = StepStage("slow", [], clock, answer=succeed, latency_s=1.0, on_row=_stopping_at(box, 5))
    journal = MemoryJournal()
    pipeline, collector = _pipeline([stage], clock, journal=journal, drain_timeout_s=0.0)
    box.append(pipeline)
    outcome = await _run(pipeline, manifest_rows(12), total_rows=12)
    assert outcome.interrupted
    assert outcome.fatal is None
    assert collector.finished == [True]
    assert sorted(collector.results) == list(range(1, 13))  # every row, once
    cut_off = set(stage.entered) - set(stage.left)
    assert 5 in cut_off
    finished = set(stage.left)
    for row, result in collector.results.items():
        if row in finished:
            assert result.status is RowStatus.SUCCEEDED
        elif row in cut_off:
            assert (result.status, result.error_code) == (RowStatus.SKIPPED, "Interrupted")
        else:  # never reached: reported, not sent
            assert (result.status, result.error_code) == (RowStatus.SKIPPED, "")
            assert row not in stage.entered
    assert max(stage.entered) < 12  # the stop left rows unreached
    assert {r.row for r in journal.recorded} == finished
    assert journal.flushed == 1
    assert stage.released == 1


async def test_a_stop_with_time_to_drain_lets_the_rows_in_progress_finish() -> None:
    clock = FakeClock()
    box: list[Pipeline] = []
    stage = StepStage("slow", [], clock, answer=succeed, latency_s=1.0, on_row=_stopping_at(box, 5))
    pipeline, collector = _pipeline([stage], clock, drain_timeout_s=3600.0)
    box.append(pipeline)
    outcome = await _run(pipeline, manifest_rows(12))
    assert outcome.interrupted
    assert stage.entered
    assert sorted(stage.entered) == sorted(stage.left)
    for row, result in collector.results.items():
        expected = RowStatus.SUCCEEDED if row in stage.entered else RowStatus.SKIPPED
        assert result.status is expected
    assert len(collector.results) == 12


async def test_after_a_stop_the_unreached_rows_come_from_the_callers_list() -> None:
    clock = FakeClock()
    box: list[Pipeline] = []
    stage = StepStage("slow", [], clock, answer=succeed, latency_s=1.0, on_row=_stopping_at(box, 2))
    pipeline, collector = _pipeline([stage], clock)
    box.append(pipeline)
    asked: list[int] = []

    def unreached(last_row: int) -> Iterable[RowResult]:
        asked.append(last_row)
        return [
            RowResult(row=n, name=f"vm-{n:03d}", semantic_version="1.0.0", status=RowStatus.SKIPPED)
            for n in range(last_row + 1, 13)
        ]

    rows = manifest_rows(12)
    taken: list[int] = []

    def reading() -> Iterable[ManifestRow]:
        for row in rows:
            taken.append(row.row)
            yield row

    await _run(pipeline, reading(), unreached=unreached)
    assert asked == [max(stage.entered)] == [max(taken)]
    assert sorted(collector.results) == list(range(1, 13))
    assert len(taken) < 12  # the rest were not read again from the manifest


async def test_a_fatal_stop_names_its_reason_on_the_rows_it_cut_off() -> None:
    clock = FakeClock()
    box: list[Pipeline] = []

    async def fatal_at_4(work: RowWork) -> None:
        if work.row == 4:
            box[0].stop(FatalBatchError("the AWS credentials were refused"))

    stage = StepStage("slow", [], clock, answer=succeed, latency_s=1.0, on_row=fatal_at_4)
    pipeline, collector = _pipeline([stage], clock, concurrency=2)
    box.append(pipeline)
    outcome = await _run(pipeline, manifest_rows(10))
    assert str(outcome.fatal) == "the AWS credentials were refused"
    assert not outcome.interrupted
    cut_off = set(stage.entered) - set(stage.left)
    assert 4 in cut_off
    for row, result in collector.results.items():
        if row in stage.left:
            assert result.status is RowStatus.SUCCEEDED
        else:
            assert result.status is RowStatus.SKIPPED
            assert result.error_code == "StoppedOnFatalError"
            assert result.error_message == "the AWS credentials were refused"
    assert len(collector.results) == 10


async def test_work_beside_the_rows_is_cancelled_once_every_row_is_done() -> None:
    clock = FakeClock()
    ticks: list[float] = []
    ended: list[str] = []

    async def poll() -> None:
        try:
            for _ in range(100_000):  # bounded: a pipeline that never cancels it fails, not hangs
                await clock.sleep(1.0)
                ticks.append(clock.now())
            ended.append("ran out")
        except anyio.get_cancelled_exc_class():
            ended.append("cancelled")
            raise

    def start_polling(run: PartitionRun) -> None:
        run.beside(poll)

    stage = StepStage("a", [], clock, answer=succeed, latency_s=10.0, on_prepare=start_polling)
    pipeline, collector = _pipeline([stage], clock)
    await _run(pipeline, manifest_rows(3))
    assert ended == ["cancelled"]
    assert len(collector.results) == 3
    assert ticks
    assert max(ticks) <= 10.0


async def test_rows_an_earlier_run_settled_are_carried_over_not_walked() -> None:
    clock = FakeClock()
    journal = MemoryJournal(
        [
            entry(2, RowStatus.SUCCEEDED, row=7),  # journalled where row 7 stood then
            entry(3, RowStatus.FAILED),
            entry(4, RowStatus.EXISTS),
            entry(5, RowStatus.IN_FLIGHT, first_sent_at=0.0),
        ]
    )
    stage = StepStage("a", [], clock, answer=succeed)
    pipeline, collector = _pipeline([stage], clock, journal=journal)
    await _run(pipeline, manifest_rows(5))
    assert sorted(stage.entered) == [1, 3, 5]  # failed and in-flight rows are sent again
    for row in (2, 4):
        carried = collector.results[row]
        assert carried.resumed
        assert carried.image_arn == f"arn:earlier/vm-{row:03d}"
    assert collector.results[2].status is RowStatus.SUCCEEDED
    assert collector.results[4].status is RowStatus.EXISTS
    assert {r.row for r in journal.recorded} == {1, 3, 5}  # carried rows are not re-journalled


async def test_failed_rows_are_carried_over_when_not_retried() -> None:
    clock = FakeClock()
    journal = MemoryJournal([entry(2, RowStatus.FAILED, attempts=3)])
    stage = StepStage("a", [], clock, answer=succeed)
    pipeline, collector = _pipeline([stage], clock, journal=journal, retry_failed=False)
    await _run(pipeline, manifest_rows(3))
    assert sorted(stage.entered) == [1, 3]
    assert collector.results[2].status is RowStatus.FAILED
    assert collector.results[2].resumed
    assert collector.results[2].attempts == 3


async def test_a_row_sent_again_counts_its_earlier_attempts() -> None:
    clock = FakeClock()
    journal = MemoryJournal([entry(1, RowStatus.IN_FLIGHT, first_sent_at=0.0, attempts=2)])

    async def one_attempt(work: RowWork) -> None:
        assert work.prior is not None
        assert work.prior.attempts == 2
        work.attempts.made += 1

    stage = StepStage("a", [], clock, answer=succeed, on_row=one_attempt)
    pipeline, collector = _pipeline([stage], clock, journal=journal)
    await _run(pipeline, manifest_rows(1))
    assert collector.results[1].attempts == 3


async def test_a_deferred_row_whose_wait_ends_after_a_stop_goes_no_further() -> None:
    """A stop starts nothing new: a row that waited in a stage (deferred) and is let go
    just as a stop is asked for is cut off there, like a row between two stages, instead
    of walking on into the next stage (where an import would be sent)."""
    clock = FakeClock()
    box: list[Pipeline] = []
    let_go = anyio.Event()

    async def wait_or_stop(work: RowWork) -> None:
        if work.row == 1:
            await let_go.wait()
        else:  # the wait ends and the stop is asked for in one go (as a poll, then a signal)
            let_go.set()
            box[0].request_stop()

    gate = StepStage("gate", [], clock, deferred=frozenset({1}), on_row=wait_or_stop)
    sent = StepStage("import", [], clock, answer=succeed)
    pipeline, collector = _pipeline([gate, sent], clock)
    box.append(pipeline)
    outcome = await _run(pipeline, manifest_rows(2))
    assert outcome.interrupted
    assert 1 not in sent.entered
    assert collector.results[1].status is RowStatus.SKIPPED
    assert collector.results[1].error_code == "Interrupted"
