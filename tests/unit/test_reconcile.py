"""Reconcile: a complete listing of what exists, or none; rows matched by image identity."""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from ibimport.aws.client import BuildPage, BuildSummary, ImportResult
from ibimport.domain.results import RowStatus
from ibimport.domain.tokens import client_token
from ibimport.engine.pipeline import RunSettings, import_pipeline
from ibimport.errors import ApiError, CallError, TransportError
from ibimport.flow.executor import CallExecutor, RetryPolicy
from ibimport.flow.limiter import build_limiter
from ibimport.flow.retry import Backoff
from ibimport.journal import JournalEntry, NullJournal
from ibimport.manifest import ImageRequest, ManifestRow
from ibimport.stages.existing import ExistingStage, Reconciler
from ibimport.testing import FakeClock

ACCOUNT = "arn:aws:imagebuilder:us-east-1:123456789012:image"


def _build(name: str, version: str, number: int, status: str = "AVAILABLE") -> BuildSummary:
    arn = f"{ACCOUNT}/{name.lower().replace(' ', '-')}/{version}/{number}"
    return BuildSummary(arn=arn, name=name, semantic_version=version, status=status)


@dataclass
class PagedClient:
    """Lists ``builds`` in pages of ``page_size``; ``faults`` are raised before a page, in order."""

    clock: FakeClock
    builds: list[BuildSummary]
    page_size: int = 100
    faults: list[CallError] = field(default_factory=list)
    list_calls: int = 0
    imports: list[str] = field(default_factory=list)

    async def list_builds(self, *, next_token: str | None) -> BuildPage:
        self.list_calls += 1
        await self.clock.sleep(0.01)
        if self.faults:
            raise self.faults.pop(0)
        start = int(next_token or 0)
        end = start + self.page_size
        more = end < len(self.builds)
        return BuildPage(builds=self.builds[start:end], next_token=str(end) if more else None)

    async def import_vm_image(
        self, params: Mapping[str, Any], *, client_token: str
    ) -> ImportResult:
        self.imports.append(params["name"])
        return ImportResult(request_id="r", image_arn=f"{ACCOUNT}/x/1.0.0/1", client_token="t")


def _reconciler(client: PagedClient, *, max_attempts: int = 4) -> Reconciler:
    calls = CallExecutor(
        build_limiter(concurrency=1, rate=None, clock=client.clock),
        clock=client.clock,
        policy=RetryPolicy(backoff=Backoff(base_s=0.1, cap_s=1.0, max_attempts=max_attempts)),
        rng=random.Random(1),
    )
    return Reconciler(client, calls, clock=client.clock)


async def test_a_listing_reads_every_page_and_matches_names_equal_once_normalised() -> None:
    builds = [_build(f"vm-{i:04d}", "1.0.0", 1) for i in range(250)]
    builds += [_build("Web 01", "2.0.0", 1), _build("web_01", "2.0.0", 3)]
    builds += [_build("Web 01", "2.0.0", 2), _build("broken", "1.0.0", 1, status="FAILED")]
    client = PagedClient(FakeClock(), builds)
    listing = await _reconciler(client).existing()
    assert client.list_calls == 3  # 254 builds, 100 a page
    assert listing.calls == 3
    assert listing.builds == 254
    assert listing.arn_for("vm-0123", "1.0.0") == f"{ACCOUNT}/vm-0123/1.0.0/1"
    # Web 01, web_01 and WEB-01 are one image; the newest build answers.
    assert (
        listing.arn_for(
            "WEB-01",
            "2.0.0",
        )
        == f"{ACCOUNT}/web_01/2.0.0/3"
    )
    assert listing.arn_for("web-01", "1.0.0") is None  # another version is another image
    assert listing.arn_for("broken", "1.0.0") is None  # a failed build does not stand


async def test_throttled_and_transient_pages_are_retried_until_the_listing_completes() -> None:
    throttle = ApiError("CallRateLimitExceededException", "slow down", status=429)
    client = PagedClient(
        FakeClock(),
        [_build(f"vm-{i}", "1.0.0", 1) for i in range(150)],
        faults=[throttle, throttle, ApiError("ServiceException", "oops", status=500), throttle],
    )
    listing = await _reconciler(client).existing()
    assert listing.builds == 150
    assert listing.calls == client.list_calls == 6  # 2 pages + 4 failed attempts


@pytest.mark.parametrize(
    "fault",
    [
        ApiError("AccessDeniedException", "no", status=403),
        ApiError("InvalidRequestException", "bad", status=400),
        TransportError("ReadTimeout", "timed out"),
    ],
)
async def test_a_listing_that_cannot_complete_raises_and_later_askers_fail_at_once(
    fault: CallError,
) -> None:
    client = PagedClient(FakeClock(), [_build("vm-1", "1.0.0", 1)], faults=[fault] * 10)
    reconciler = _reconciler(client, max_attempts=3)
    with pytest.raises(CallError) as raised:
        await reconciler.existing()
    assert raised.value.code == fault.code
    calls = client.list_calls
    assert calls == (3 if isinstance(fault, TransportError) else 1)
    with pytest.raises(CallError):
        await reconciler.existing()
    assert client.list_calls == calls, "a failed listing is not retried by every row"
    assert reconciler.listing is None


def _rows(*names: str) -> list[ManifestRow]:
    rows = []
    for i, name in enumerate(names, start=1):
        task = ImageRequest(
            name=name, semanticVersion="1.0.0", platform="Linux", vmImportTaskId=f"import-ami-{i}"
        )
        rows.append(ManifestRow(row=i, task=task, errors=(), name=name, semantic_version="1.0.0"))
    return rows


class OneEntryJournal(NullJournal):
    """A journal that knows one row, sent long ago (its token may be forgotten)."""

    has_history = True

    def __init__(self, row: ManifestRow) -> None:
        assert row.task is not None
        self.entry = JournalEntry(
            row=row.row,
            name=row.task.name,
            semantic_version="1.0.0",
            client_token=client_token(row.task),
            state=RowStatus.IN_FLIGHT,
            attempts=1,
            image_arn="",
            request_id="",
            error_code="",
            error_message="",
            first_sent_at=0.0,
            updated_at=0.0,
        )

    def get(self, name: str, semantic_version: str) -> JournalEntry | None:
        return self.entry if name == self.entry.name else None


async def _run(client: PagedClient, rows: list[ManifestRow], *, preload: bool, journal: Any):
    from ibimport.engine.events import BaseListener

    results = {}

    class Collect(BaseListener):
        def on_row_done(self, result: Any) -> None:
            results[result.row] = result

    runner = import_pipeline(
        client,
        build_limiter(concurrency=4, rate=None, clock=client.clock),
        journal=journal,
        clock=client.clock,
        listeners=[Collect()],
        settings=RunSettings(concurrency=4, max_attempts=2, token_ttl_s=60.0),
    )
    if preload:
        stage = next(s for s in runner.stages if isinstance(s, ExistingStage))
        await stage.reconciler.existing()
    await runner.run(rows)
    return results


async def test_rows_whose_image_exists_under_another_spelling_are_not_sent() -> None:
    client = PagedClient(FakeClock(wall_start=1e6), [_build("web_01", "1.0.0", 1)])
    results = await _run(client, _rows("Web 01", "db-01"), preload=True, journal=NullJournal())
    assert client.imports == ["db-01"]
    assert results[1].status is RowStatus.EXISTS
    assert results[1].image_arn == f"{ACCOUNT}/web_01/1.0.0/1"
    assert results[2].status is RowStatus.SUCCEEDED


async def test_a_row_whose_lookup_fails_is_left_unresolved_not_sent() -> None:
    rows = _rows("vm-old")
    denied = ApiError("ServiceUnavailableException", "down", status=503)
    client = PagedClient(FakeClock(wall_start=1e6), [], faults=[denied] * 10)
    results = await _run(client, rows, preload=False, journal=OneEntryJournal(rows[0]))
    assert client.imports == [], "absence is never concluded from a failed listing"
    assert results[1].status is RowStatus.SKIPPED
    assert results[1].error_code == "ServiceUnavailableException"
    assert "could not check for an existing build" in results[1].error_message


async def test_a_row_whose_token_expired_takes_a_listing_and_is_sent_if_absent() -> None:
    rows = _rows("vm-old")
    client = PagedClient(FakeClock(wall_start=1e6), [_build("other", "1.0.0", 1)])
    results = await _run(client, rows, preload=False, journal=OneEntryJournal(rows[0]))
    assert client.list_calls == 1
    assert client.imports == ["vm-old"]
    assert results[1].status is RowStatus.SUCCEEDED
