"""The import pipeline on fakes: a scripted client, an in-memory journal, virtual time."""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import anyio
import pytest

from ibimport.aws.client import BuildPage, BuildSummary, ImportResult
from ibimport.domain.results import RowResult, RowStatus
from ibimport.domain.stages import StageName
from ibimport.domain.tokens import client_token, reimport_token
from ibimport.engine.events import BaseListener, CallEvent, CallOutcome
from ibimport.engine.pipeline import RunSettings, import_pipeline
from ibimport.errors import ApiError, CallError, TransportError
from ibimport.flow.limiter import build_limiter
from ibimport.journal import JournalEntry, NullJournal
from ibimport.manifest import FieldError, ImageRequest, ManifestRow
from ibimport.testing import FakeClock

LATENCY_S = 0.02


def _task(i: int) -> ImageRequest:
    return ImageRequest(
        name=f"vm-{i:03d}",
        semanticVersion="1.0.0",
        platform="Linux",
        vmImportTaskId=f"import-ami-{i:08x}",
    )


def _rows(n: int) -> list[ManifestRow]:
    return [ManifestRow(i, _task(i), (), f"vm-{i:03d}", "1.0.0") for i in range(1, n + 1)]


def _throttle() -> ApiError:
    return ApiError("CallRateLimitExceededException", "Rate exceeded", status=429)


@dataclass
class ScriptedClient:
    """Answers per row name from a script of failures; anything unscripted succeeds."""

    clock: FakeClock
    script: dict[str, list[CallError]] = field(default_factory=dict)
    existing: dict[str, list[str]] = field(default_factory=dict)
    list_calls: int = 0
    calls: list[tuple[str, str]] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0

    async def import_vm_image(
        self, params: Mapping[str, Any], *, client_token: str
    ) -> ImportResult:
        name = params["name"]
        self.calls.append((name, client_token))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await self.clock.sleep(LATENCY_S)
        finally:
            self.in_flight -= 1
        failures = self.script.get(name)
        if failures:
            raise failures.pop(0)
        arn = f"arn:aws:imagebuilder:us-east-1:123456789012:image/{name}/1.0.0/1"
        return ImportResult(
            request_id=f"req-{len(self.calls)}", image_arn=arn, client_token=client_token
        )

    async def list_builds(self, *, next_token: str | None) -> BuildPage:
        self.list_calls += 1
        builds = [
            BuildSummary(arn=arn, name=name, semantic_version="1.0.0", status="AVAILABLE")
            for name, arns in self.existing.items()
            for arn in arns
        ]
        return BuildPage(builds=builds, next_token=None)


class MemoryJournal(NullJournal):
    """Just enough journal to drive resume decisions."""

    has_history = True

    def __init__(self, entries: dict[str, JournalEntry] | None = None) -> None:
        self.entries = entries or {}
        self.marked: list[int] = []
        self.recorded: list[RowResult] = []

    def get(self, name: str, semantic_version: str) -> JournalEntry | None:
        return self.entries.get(name)

    async def mark_in_flight(
        self, *, row: int, name: str, semantic_version: str, client_token: str, attempt: int
    ) -> None:
        self.marked.append(row)

    def record(self, result: RowResult) -> None:
        self.recorded.append(result)


class Collector(BaseListener):
    def __init__(self) -> None:
        self.results: dict[int, RowResult] = {}
        self.calls: list[CallEvent] = []
        self.finished: bool | None = None

    def on_call(self, event: CallEvent) -> None:
        self.calls.append(event)

    def on_row_done(self, result: RowResult) -> None:
        assert result.row not in self.results, f"row {result.row} reported twice"
        self.results[result.row] = result

    def on_finish(self, *, elapsed_s: float, interrupted: bool) -> None:
        self.finished = interrupted


async def _run(
    rows: list[ManifestRow],
    client: ScriptedClient,
    *,
    journal: NullJournal | None = None,
    settings: RunSettings | None = None,
    rate: float | None = 1000.0,
) -> tuple[Collector, Any]:
    settings = settings or RunSettings(concurrency=8)
    collector = Collector()
    runner = import_pipeline(
        client,
        build_limiter(concurrency=settings.concurrency, rate=rate, clock=client.clock),
        journal=journal or NullJournal(),
        clock=client.clock,
        listeners=[collector],
        settings=settings,
        rng=random.Random(7),
    )
    outcome = await runner.run(rows, total_rows=len(rows))
    return collector, outcome


def _entry(
    task: ImageRequest, state: RowStatus, *, sent_at: float | None = 0.0, token: str | None = None
) -> JournalEntry:
    return JournalEntry(
        row=1,
        name=task.name,
        semantic_version=task.semanticVersion,
        client_token=token or client_token(task),
        state=state,
        attempts=1,
        image_arn="arn:old" if state.is_done else "",
        request_id="",
        error_code="" if state is not RowStatus.FAILED else "ServiceException",
        error_message="",
        first_sent_at=sent_at,
        updated_at=0.0,
    )


async def test_every_row_is_sent_once_with_its_deterministic_token() -> None:
    client = ScriptedClient(FakeClock())
    collector, outcome = await _run(_rows(40), client)
    assert outcome.fatal is None
    assert not outcome.interrupted
    assert sorted(name for name, _ in client.calls) == [f"vm-{i:03d}" for i in range(1, 41)]
    assert all(r.status is RowStatus.SUCCEEDED for r in collector.results.values())
    assert collector.results[5].client_token == client_token(_task(5))
    assert collector.results[5].image_arn.endswith("image/vm-005/1.0.0/1")
    assert client.max_in_flight <= 8


async def test_retries_reuse_the_same_token_and_count_attempts() -> None:
    client = ScriptedClient(
        FakeClock(),
        script={
            "vm-002": [
                ApiError("ServiceUnavailableException", "busy", status=503),
                TransportError("ConnectionClosed", "dropped"),
            ]
        },
    )
    collector, _ = await _run(_rows(3), client)
    tokens = {token for name, token in client.calls if name == "vm-002"}
    assert len([n for n, _ in client.calls if n == "vm-002"]) == 3
    assert tokens == {client_token(_task(2))}
    assert collector.results[2].status is RowStatus.SUCCEEDED
    assert collector.results[2].attempts == 3
    outcomes = [e.outcome for e in collector.calls if e.row == 2]
    assert outcomes == [CallOutcome.RETRYABLE, CallOutcome.RETRYABLE, CallOutcome.OK]


async def test_permanent_error_fails_the_row_only() -> None:
    client = ScriptedClient(
        FakeClock(),
        script={"vm-001": [ApiError("InvalidParameterValueException", "bad name", status=400)]},
    )
    collector, outcome = await _run(_rows(4), client)
    failed = collector.results[1]
    assert (failed.status, failed.error_code, failed.error_message, failed.attempts) == (
        RowStatus.FAILED,
        "InvalidParameterValueException",
        "bad name",
        1,
    )
    assert [collector.results[i].status for i in (2, 3, 4)] == [RowStatus.SUCCEEDED] * 3
    assert outcome.fatal is None


async def test_attempts_are_bounded_by_max_attempts() -> None:
    errors: list[CallError] = [ApiError("ServiceException", "boom", status=500) for _ in range(10)]
    client = ScriptedClient(FakeClock(), script={"vm-001": errors})
    collector, _ = await _run(_rows(1), client, settings=RunSettings(concurrency=2, max_attempts=3))
    assert collector.results[1].status is RowStatus.FAILED
    assert collector.results[1].attempts == 3
    assert len(client.calls) == 3


async def test_throttles_have_their_own_budget_and_slow_the_limiter() -> None:
    client = ScriptedClient(FakeClock(), script={"vm-001": [_throttle() for _ in range(9)]})
    collector, _ = await _run(_rows(1), client, settings=RunSettings(concurrency=2, max_attempts=3))
    assert collector.results[1].status is RowStatus.SUCCEEDED
    assert collector.results[1].attempts == 10
    assert sum(e.outcome is CallOutcome.THROTTLED for e in collector.calls) == 9


async def test_fatal_error_stops_the_batch_with_one_message() -> None:
    denied = [ApiError("AccessDeniedException", "not authorized", status=403) for _ in range(200)]
    client = ScriptedClient(FakeClock(), script={f"vm-{i:03d}": [denied[i]] for i in range(1, 101)})
    collector, outcome = await _run(_rows(100), client, settings=RunSettings(concurrency=4))
    assert outcome.fatal is not None
    assert "AccessDeniedException" in str(outcome.fatal)
    assert len(client.calls) <= 4, "at most the calls already in flight"
    assert len(collector.results) == 100, "every row still gets a result"
    statuses = {r.status for r in collector.results.values()}
    assert statuses <= {RowStatus.FAILED, RowStatus.SKIPPED}
    assert sum(r.status is RowStatus.SKIPPED for r in collector.results.values()) >= 96


async def test_unreachable_endpoint_stops_after_a_short_streak() -> None:
    refused = {
        f"vm-{i:03d}": [TransportError("EndpointConnectionError", "refused") for _ in range(20)]
        for i in range(1, 51)
    }
    client = ScriptedClient(FakeClock(), script=refused)
    _, outcome = await _run(
        _rows(50), client, settings=RunSettings(concurrency=2, unreachable_after=5)
    )
    assert outcome.fatal is not None
    assert "cannot reach" in str(outcome.fatal)
    assert len(client.calls) < 10


async def test_invalid_rows_are_reported_and_never_sent() -> None:
    bad = ManifestRow(
        2,
        None,
        (FieldError("platform", "must be one of Windows, Linux, macOS", "Solaris"),),
        "vm-002",
        "1.0.0",
    )
    rows = [_rows(1)[0], bad]
    client = ScriptedClient(FakeClock())
    collector, _ = await _run(rows, client)
    assert [n for n, _ in client.calls] == ["vm-001"]
    assert collector.results[2].status is RowStatus.INVALID
    assert "platform" in collector.results[2].error_message


async def test_resume_skips_done_rows_and_retries_failed_ones() -> None:
    rows = _rows(3)
    journal = MemoryJournal(
        {
            "vm-001": _entry(_task(1), RowStatus.SUCCEEDED),
            "vm-002": _entry(_task(2), RowStatus.FAILED),
            "vm-003": _entry(_task(3), RowStatus.IN_FLIGHT),
        }
    )
    client = ScriptedClient(FakeClock())
    collector, _ = await _run(rows, client, journal=journal)
    assert sorted(n for n, _ in client.calls) == ["vm-002", "vm-003"]
    assert collector.results[1].resumed
    assert collector.results[1].image_arn == "arn:old"
    assert collector.results[3].status is RowStatus.SUCCEEDED
    assert collector.results[3].attempts == 2, "attempts accumulate across runs"
    assert sorted(journal.marked) == [2, 3]


async def test_no_retry_failed_carries_failures_over() -> None:
    journal = MemoryJournal({"vm-001": _entry(_task(1), RowStatus.FAILED)})
    client = ScriptedClient(FakeClock())
    collector, _ = await _run(
        _rows(1), client, journal=journal, settings=RunSettings(retry_failed=False)
    )
    assert client.calls == []
    assert collector.results[1].status is RowStatus.FAILED
    assert collector.results[1].resumed


@pytest.mark.parametrize(("age_s", "looks_up"), [(9 * 3600.0, True), (60.0, True)])
async def test_a_row_in_doubt_looks_for_an_existing_build_first_whatever_its_age(
    age_s: float, looks_up: bool
) -> None:
    # Issue 22 item 2: the token's age (--token-ttl, a guess) no longer decides.
    now = 1_000_000.0
    journal = MemoryJournal({"vm-001": _entry(_task(1), RowStatus.IN_FLIGHT, sent_at=now - age_s)})
    client = ScriptedClient(
        FakeClock(wall_start=now),
        existing={"vm-001": ["arn:aws:imagebuilder:x:1:image/vm-001/1.0.0/1"]},
    )
    collector = Collector()
    runner = import_pipeline(
        client,
        build_limiter(concurrency=2, rate=100.0, clock=client.clock),
        journal=journal,
        clock=client.clock,
        listeners=[collector],
    )
    await runner.run(_rows(1))
    if looks_up:
        assert client.calls == []
        # Sent before with this very token and now listed: its call landed.
        assert collector.results[1].status is RowStatus.SUCCEEDED
        assert collector.results[1].image_arn.endswith("/1.0.0/1")
    else:
        assert len(client.calls) == 1
        assert collector.results[1].status is RowStatus.SUCCEEDED


async def test_changed_row_already_sent_is_looked_up_not_duplicated() -> None:
    journal = MemoryJournal(
        {"vm-001": _entry(_task(1), RowStatus.IN_FLIGHT, sent_at=1e12, token="old-token")}
    )
    client = ScriptedClient(FakeClock(), existing={"vm-001": ["arn:existing"]})
    collector, _ = await _run(_rows(1), client, journal=journal)
    assert client.calls == []
    assert collector.results[1].status is RowStatus.EXISTS


async def test_request_stop_drains_and_reports_unreached_rows_as_skipped() -> None:
    clock = FakeClock()
    client = ScriptedClient(clock)
    collector = Collector()
    runner = import_pipeline(
        client,
        build_limiter(concurrency=4, rate=100.0, clock=clock),
        journal=NullJournal(),
        clock=clock,
        listeners=[collector],
        settings=RunSettings(concurrency=4),
    )

    async def stop_soon() -> None:
        await clock.sleep(0.1)
        runner.request_stop()

    async with anyio.create_task_group() as tg:
        tg.start_soon(stop_soon)
        outcome = await runner.run(_rows(200))
    assert outcome.interrupted
    assert collector.finished is True
    assert len(collector.results) == 200
    sent = {n for n, _ in client.calls}
    succeeded = {r.name for r in collector.results.values() if r.status is RowStatus.SUCCEEDED}
    assert succeeded == sent, "calls in flight were allowed to finish"
    assert 0 < len(sent) < 50
    assert sum(r.status is RowStatus.SKIPPED for r in collector.results.values()) == 200 - len(sent)


class StageJournal(NullJournal):
    """Records the stage calls the runner makes, with the virtual wall clock."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, StageName, float, int, str, str]] = []

    def stage_started(self, identity: tuple[str, str], stage: StageName, *, at: float) -> None:
        self.events.append(("start", identity[0], stage, at, 0, "", ""))

    def stage_ended(
        self,
        identity: tuple[str, str],
        stage: StageName,
        *,
        at: float,
        attempts: int,
        outcome: str,
        error_code: str = "",
        started_at: float | None = None,
    ) -> None:
        self.events.append(("end", identity[0], stage, at, attempts, outcome, error_code))


async def test_each_sent_row_s_import_stage_is_journalled_with_its_attempts() -> None:
    clock = FakeClock()
    client = ScriptedClient(
        clock,
        script={
            "vm-001": [_throttle()],
            "vm-002": [ApiError("ValidationException", "bad", status=400)],
        },
    )
    journal = StageJournal()
    await _run(_rows(2), client, journal=journal, settings=RunSettings(concurrency=1))
    by_row = {name: [e for e in journal.events if e[1] == name] for name in ("vm-001", "vm-002")}
    (start, end) = by_row["vm-001"]
    assert start[0] == "start"
    assert start[2] is StageName.IMPORT
    assert end[:3] == ("end", "vm-001", StageName.IMPORT)
    assert end[4:] == (2, "succeeded", "")
    assert end[3] - start[3] >= 2 * LATENCY_S  # two calls of virtual latency
    (_, failed) = by_row["vm-002"]
    assert failed[4:] == (1, "failed", "ValidationException")


async def test_a_re_import_cut_off_is_sent_again_under_its_own_token() -> None:
    # --retry-failed-images sent the row under reimport_token(token, failed ARN); killed
    # before the answer, it is in_flight with that token and still the failed image's ARN.
    # Its own token would be answered with the failed image: the re-import's is reused.
    failed = "arn:aws:imagebuilder:x:1:image/vm-001/1.0.0/1"
    own = reimport_token(client_token(_task(1)), failed)
    entry = replace(
        _entry(_task(1), RowStatus.IN_FLIGHT, sent_at=1e12, token=own), image_arn=failed
    )
    client = ScriptedClient(FakeClock(wall_start=1e12))
    collector, _ = await _run(_rows(1), client, journal=MemoryJournal({"vm-001": entry}))
    assert client.calls == [("vm-001", own)]
    assert collector.results[1].status is RowStatus.SUCCEEDED
    assert collector.results[1].client_token == own
