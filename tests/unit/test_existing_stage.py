"""The existing-image stage (``stages.existing``) in a pipeline, on a fake listing and a
journal in memory: what it commits before any row, when it lists, and what a row in doubt
becomes once the listing answers (or cannot)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest
from orchestration_support import (
    Collector,
    MemoryJournal,
    StepStage,
    entry,
    manifest_rows,
    request,
    succeed,
)

from ibimport.aws.client import BuildPage, BuildSummary
from ibimport.domain.results import RowStatus
from ibimport.engine.pipeline import Pipeline, RunSettings
from ibimport.errors import ApiError, CallError, TransportError
from ibimport.flow.executor import CallExecutor, PartitionHealth, RetryPolicy
from ibimport.flow.limiter import build_limiter
from ibimport.flow.retry import Backoff
from ibimport.journal import JournalEntry
from ibimport.manifest import ManifestRow
from ibimport.stages.existing import ExistingStage, Reconciler
from ibimport.testing import FakeClock

ORIGIN = ("123456789012", "us-east-1")
IMAGES = "arn:aws:imagebuilder:us-east-1:123456789012:image"


def _arn(i: int, build: int = 1) -> str:
    return f"{IMAGES}/vm-{i:03d}/1.0.0/{build}"


@dataclass
class Listing:
    """ListImageBuildVersions over ``standing`` (row numbers whose image has a build), in
    pages of two; ``faults`` are raised first, in order, one per call."""

    clock: FakeClock
    standing: Sequence[int] = ()
    faults: list[CallError] = field(default_factory=list)
    calls: list[float] = field(default_factory=list)
    log: list[tuple[str, object]] | None = None

    async def list_builds(self, *, next_token: str | None) -> BuildPage:
        self.calls.append(self.clock.now())
        await self.clock.sleep(0.5)
        if self.faults:
            raise self.faults.pop(0)
        start = int(next_token or 0)
        builds = [
            BuildSummary(
                arn=_arn(i), name=f"vm-{i:03d}", semantic_version="1.0.0", status="AVAILABLE"
            )
            for i in self.standing[start : start + 2]
        ]
        more = start + 2 < len(self.standing)
        if self.log is not None:
            self.log.append(("list", start))
        return BuildPage(builds=builds, next_token=str(start + 2) if more else None)


class LoggedJournal(MemoryJournal):
    def __init__(
        self,
        log: list[tuple[str, object]],
        entries: list[JournalEntry] | None = None,
        *,
        names: list[str] | None = None,
    ) -> None:
        super().__init__(entries, names=names)
        self.log = log

    async def record_existing(self, arn_for, *, belongs, partition, listed_at=None):  # type: ignore[no-untyped-def]
        found = await super().record_existing(
            arn_for, belongs=belongs, partition=partition, listed_at=listed_at
        )
        self.log.append(("record_existing", found))
        return found


def _pipeline(
    listing: Listing,
    journal: MemoryJournal,
    *,
    list_first: bool,
    log: list[tuple[str, object]] | None = None,
) -> tuple[Pipeline, ExistingStage, StepStage, Collector]:
    clock = listing.clock
    lookups = CallExecutor(
        build_limiter(concurrency=1, rate=None, clock=clock),
        clock=clock,
        policy=RetryPolicy(backoff=Backoff(base_s=0.1, cap_s=1.0, max_attempts=3)),
        health=PartitionHealth(),
        rng=random.Random(3),
    )
    existing = ExistingStage(
        Reconciler(listing, lookups, clock=clock),  # type: ignore[arg-type]
        clock=clock,
        list_first=list_first,
    )
    sent = StepStage("import", log if log is not None else [], clock, answer=succeed)
    collector = Collector()
    pipeline = Pipeline(
        [existing, sent],
        journal=journal,
        clock=clock,
        listeners=[collector],
        settings=RunSettings(concurrency=2),
        origin=ORIGIN,
    )
    return pipeline, existing, sent, collector


async def test_listing_first_commits_what_it_found_before_any_row_is_sent() -> None:
    clock = FakeClock(wall_start=5_000.0)
    log: list[tuple[str, object]] = []
    listing = Listing(clock, standing=[2, 4, 5, 9], log=log)
    journal = LoggedJournal(log, names=[request(n).name for n in range(1, 7)])
    pipeline, existing, sent, collector = _pipeline(listing, journal, list_first=True, log=log)
    await pipeline.run(manifest_rows(6))
    assert log[:3] == [("list", 0), ("list", 2), ("record_existing", 3)]  # then rows
    assert len(listing.calls) == 2  # once for the partition, not once a row
    [committed] = journal.existing
    assert committed.partition == "123456789012/us-east-1"
    assert committed.listed_at == 5_000.0  # when the listing started (wall clock)
    assert committed.found == {"vm-002": _arn(2), "vm-004": _arn(4), "vm-005": _arn(5)}
    assert sorted(sent.entered) == [1, 3, 6]
    for row in (2, 4, 5):
        assert collector.results[row].status is RowStatus.EXISTS
        assert collector.results[row].image_arn == _arn(row)
    assert existing.reconciler.listing is not None
    assert existing.reconciler.listing.builds == 4


@pytest.mark.parametrize(
    ("fault", "says"),
    [
        (
            ApiError("ServiceUnavailableException", "down", status=503),
            "could not list the images that already exist (ServiceUnavailableException: down), "
            "so nothing was sent: re-run, or pass --no-reconcile for an account known to have "
            "no images",
        ),
        (
            ApiError("AccessDeniedException", "not allowed", status=403),
            "every call would fail: AccessDeniedException: not allowed (check the credentials, "
            "the region and the IAM policy in the README)",
        ),
        (
            TransportError("EndpointConnectionError", "no route"),
            "cannot reach the Image Builder endpoint: no route",
        ),
    ],
)
async def test_a_listing_that_fails_stops_the_partition_with_one_message(
    fault: CallError, says: str
) -> None:
    clock = FakeClock()
    listing = Listing(clock, standing=[1], faults=[fault] * 10)
    journal = MemoryJournal(names=["vm-001"])
    pipeline, _, sent, collector = _pipeline(listing, journal, list_first=True)
    outcome = await pipeline.run(manifest_rows(4))
    assert str(outcome.fatal) == says
    assert sent.entered == []
    assert journal.existing == []  # nothing committed from a listing that did not complete
    assert {r.error_message for r in collector.results.values()} == {says}
    assert {r.status for r in collector.results.values()} == {RowStatus.SKIPPED}


async def test_without_list_first_a_fresh_partition_never_lists() -> None:
    clock = FakeClock()
    listing = Listing(clock, standing=[1, 2])
    pipeline, _, sent, collector = _pipeline(listing, MemoryJournal(), list_first=False)
    await pipeline.run(manifest_rows(3))
    assert listing.calls == []
    assert sorted(sent.entered) == [1, 2, 3]
    assert collector.statuses() == {n: RowStatus.SUCCEEDED for n in (1, 2, 3)}


async def test_a_row_in_doubt_takes_the_listing_and_is_succeeded_if_its_call_landed() -> None:
    clock = FakeClock()
    listing = Listing(clock, standing=[2, 3])
    journal = MemoryJournal(
        [
            entry(2, RowStatus.IN_FLIGHT, first_sent_at=100.0),  # same token: it landed
            entry(3, RowStatus.IN_FLIGHT, first_sent_at=100.0, token="an-older-token"),
            entry(4, RowStatus.IN_FLIGHT, first_sent_at=100.0),  # not listed: sent again
            entry(5, RowStatus.PENDING),  # never sent: not in doubt
        ]
    )
    pipeline, _, sent, collector = _pipeline(listing, journal, list_first=False)
    await pipeline.run(manifest_rows(5))
    assert len(listing.calls) == 1  # lazily, once, for every row that needed it
    assert collector.results[2].status is RowStatus.SUCCEEDED
    assert collector.results[2].image_arn == _arn(2)
    assert collector.results[3].status is RowStatus.EXISTS  # another token's build
    assert collector.results[3].image_arn == _arn(3)
    assert sorted(sent.entered) == [1, 4, 5]
    assert collector.results[4].status is RowStatus.SUCCEEDED
    assert collector.results[4].image_arn == ""  # the fake import stage's answer, not a listing


async def test_a_row_in_doubt_whose_listing_fails_is_not_sent_and_the_others_go_on() -> None:
    clock = FakeClock()
    down = ApiError("ServiceUnavailableException", "down", status=503)
    listing = Listing(clock, standing=[1], faults=[down] * 10)
    journal = MemoryJournal(
        [
            entry(1, RowStatus.IN_FLIGHT, first_sent_at=100.0),
            entry(3, RowStatus.IN_FLIGHT, first_sent_at=100.0),
        ]
    )
    pipeline, _, sent, collector = _pipeline(listing, journal, list_first=False)
    outcome = await pipeline.run(manifest_rows(4))
    assert outcome.fatal is None
    assert len(listing.calls) == 3  # one listing's attempts; the second row did not list again
    assert sorted(sent.entered) == [2, 4]
    for row in (1, 3):
        result = collector.results[row]
        assert (result.status, result.error_code) == (
            RowStatus.SKIPPED,
            "ServiceUnavailableException",
        )
        assert result.error_message.startswith(
            "not sent: could not check for an existing build of a row sent before"
        )


async def test_a_row_already_done_is_carried_over_before_it_could_need_a_listing() -> None:
    clock = FakeClock()
    listing = Listing(clock, standing=[])
    journal = MemoryJournal([entry(1, RowStatus.SUCCEEDED, first_sent_at=100.0)])
    pipeline, _, sent, collector = _pipeline(listing, journal, list_first=False)
    rows: list[ManifestRow] = manifest_rows(2)
    await pipeline.run(rows)
    assert listing.calls == []
    assert collector.results[1].resumed
    assert sent.entered == [2]
