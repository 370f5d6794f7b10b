"""Schema 5: each row's stages (start, end, attempts, outcome) and each run's span, and the
upgrade of a real schema-4 journal."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest
from journal_support import open_journal, result

from ibimport.domain.results import RowStatus
from ibimport.errors import JournalError
from ibimport.journal import SCHEMA_VERSION, NullJournal, SqliteJournal, StageName, StageRecord
from ibimport.testing import FakeClock

SCHEMA_4 = Path(__file__).parent / "data" / "schema4.journal"


def _records(journal: SqliteJournal) -> dict[tuple[str, StageName], StageRecord]:
    return {(r.name, r.stage): r for r in journal.stage_records()}


async def test_a_stage_is_recorded_with_its_start_end_attempts_and_outcome(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    journal = open_journal(tmp_path / "j", clock=clock)
    async with journal.running():
        journal.stage_started(("web", "1.0.0"), StageName.IMPORT, at=100.0)
        await journal.mark_in_flight(
            row=1, name="web", semantic_version="1.0.0", client_token="tok", attempt=1
        )
        # The start is committed with the mark: a kill now still shows the row in the stage.
        assert _records(journal)[("web", StageName.IMPORT)].ended_at is None
        journal.stage_ended(
            ("web", "1.0.0"),
            StageName.IMPORT,
            at=102.5,
            attempts=3,
            outcome=RowStatus.FAILED,
            error_code="ValidationException",
        )
        journal.record(result("web", RowStatus.FAILED))
    records = _records(journal)
    assert records[("web", StageName.IMPORT)] == StageRecord(
        "web", "1.0.0", StageName.IMPORT, 100.0, 102.5, 3, "failed", "ValidationException"
    )
    assert records[("web", StageName.IMPORT)].duration_s == 2.5
    await journal.aclose()


async def test_entering_a_stage_again_restarts_it_and_an_end_keeps_the_start(
    tmp_path: Path,
) -> None:
    journal = open_journal(tmp_path / "j")
    journal.stage_started(("a", "1.0.0"), StageName.IMPORT, at=1.0)
    journal.stage_ended(("a", "1.0.0"), StageName.IMPORT, at=2.0, attempts=1, outcome="skipped")
    journal.stage_started(("a", "1.0.0"), StageName.IMPORT, at=10.0)  # the resume
    journal.stage_ended(
        ("a", "1.0.0"), StageName.IMPORT, at=12.0, attempts=2, outcome="succeeded", started_at=5.0
    )
    # An end whose start was never recorded takes the one given, else its own time.
    journal.stage_ended(
        ("b", "1.0.0"), StageName.IMAGE_WAIT, at=7.0, attempts=1, outcome="AVAILABLE"
    )
    await journal.flush()
    records = _records(journal)
    assert (
        records[("a", StageName.IMPORT)].started_at,
        records[("a", StageName.IMPORT)].ended_at,
    ) == (
        10.0,
        12.0,
    )
    assert records[("a", StageName.IMPORT)].attempts == 2
    assert records[("b", StageName.IMAGE_WAIT)].started_at == 7.0
    await journal.aclose()


async def test_stage_records_interleaved_with_row_writes_share_one_commit(tmp_path: Path) -> None:
    journal = open_journal(tmp_path / "j")
    for i in range(5):
        name = f"vm-{i}"
        journal.stage_started((name, "1.0.0"), StageName.IMPORT, at=float(i))
        journal.record(result(name, RowStatus.SUCCEEDED, row=i + 1))
        journal.stage_ended(
            (name, "1.0.0"), StageName.IMPORT, at=i + 0.5, attempts=1, outcome="succeeded"
        )
    before = journal.commits
    await journal.flush()
    assert journal.commits == before + 1
    assert journal.counts()[RowStatus.SUCCEEDED] == 5
    assert [r.ended_at for r in journal.stage_records()] == [0.5, 1.5, 2.5, 3.5, 4.5]
    await journal.aclose()


async def test_stage_records_page_through_many_rows_in_identity_order(tmp_path: Path) -> None:
    journal = open_journal(tmp_path / "j")
    for i in range(25):
        for stage in (StageName.IMPORT, StageName.EXISTING):
            journal.stage_started((f"vm-{i:02d}", "1.0.0"), stage, at=float(i))
    await journal.flush()
    found = [(r.name, r.stage.value) for r in journal.stage_records(page=7)]
    assert len(found) == 50
    assert found == sorted(found)
    await journal.aclose()


async def test_a_wait_round_commits_its_stage_ends_with_the_statuses(tmp_path: Path) -> None:
    path = tmp_path / "j"
    journal = open_journal(path)
    journal.stage_started(("web", "1.0.0"), StageName.IMAGE_WAIT, at=1.0)
    journal.stage_ended(
        ("web", "1.0.0"), StageName.IMAGE_WAIT, at=9.0, attempts=2, outcome="FAILED"
    )
    journal.record_image_statuses([("web", "1.0.0", "FAILED", "broken disk")])
    # Another process sees both at once: no flush happened.
    reader = SqliteJournal.open_readonly(path)
    try:
        (record,) = reader.stage_records()
        assert (record.outcome, record.ended_at) == ("FAILED", 9.0)
        assert reader.followups()[("web", "1.0.0")].image_status == "FAILED"
    finally:
        reader.close()
        journal.close()


async def test_the_listing_records_the_existing_stage_of_the_rows_it_found(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    journal = open_journal(tmp_path / "j", clock=clock)
    journal.record_pending([(1, "old", "1.0.0", "t1"), (2, "new", "1.0.0", "t2")])
    clock.advance(4.0)
    found = await journal.record_existing(
        lambda name, version: "arn:old" if name == "old" else None,
        belongs=None,
        partition="1/us-east-1",
        listed_at=clock.wall() - 3.0,
    )
    assert found == 1
    (record,) = journal.stage_records()
    assert (record.name, record.stage, record.outcome) == ("old", StageName.EXISTING, "exists")
    assert record.duration_s == pytest.approx(3.0)
    await journal.aclose()


async def test_each_run_keeps_its_start_and_end(tmp_path: Path) -> None:
    clock = FakeClock()
    path = tmp_path / "j"
    journal = open_journal(path, clock=clock)
    journal.record_run(started_at=10.0, ended_at=20.0, figures={"interrupted": True})
    clock.advance(50.0)
    journal.record_run(started_at=clock.wall() - 5.0, figures={"fatal": "no credentials"})
    await journal.aclose()
    reader = SqliteJournal.open_readonly(path)
    try:
        first, second = reader.run_bands()
        assert (first.started_at, first.ended_at, first.interrupted) == (10.0, 20.0, True)
        assert second.ended_at == clock.wall()
        assert second.fatal == "no credentials"
        assert len(reader.runs()) == 2  # the figures are read as before
    finally:
        reader.close()


def test_null_journal_takes_stage_records_and_keeps_nothing() -> None:
    null = NullJournal()
    null.stage_started(("a", "1"), StageName.TASK_START, at=0.0)
    null.stage_ended(("a", "1"), StageName.TASK_START, at=1.0, attempts=1, outcome="completed")


def test_every_stage_has_its_own_name_in_a_row_s_order() -> None:
    assert [s.value for s in StageName] == [
        "task_start",
        "task_check",
        "existing",
        "import",
        "image_wait",
    ]


# --------------------------------------------------------------- schema 4 -> 5


def _version(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        return int(version)
    finally:
        conn.close()


def test_the_fixture_is_a_schema_4_journal() -> None:
    assert SCHEMA_VERSION > 4
    assert _version(SCHEMA_4) == 4


async def test_a_real_schema_4_journal_is_upgraded_when_opened_for_writing(
    tmp_path: Path,
) -> None:
    path = tmp_path / "wave.journal"
    shutil.copy(SCHEMA_4, path)
    journal = SqliteJournal.open(path, manifest_path="x", manifest_fingerprint="y", settings={})
    assert _version(path) == SCHEMA_VERSION
    assert journal.task_records() == {}  # schema 6's tasks table, empty
    # What the old run recorded is all there.
    assert journal.counts()[RowStatus.SUCCEEDED] == 3
    assert [e.name for e in journal.entries()] == ["web-a", "web-b", "web-c"]
    (old_run,) = journal.runs()
    assert old_run["calls"] == 3
    (band,) = journal.run_bands()
    assert band.ended_at is None  # its end was not recorded before schema 5
    assert list(journal.stage_records()) == []
    # ... and the new records can be written.
    journal.stage_started(("web-a", "1.0.0"), StageName.IMAGE_WAIT, at=5.0)
    journal.record_run(started_at=4.0, ended_at=6.0, figures={})
    await journal.aclose()
    reader = SqliteJournal.open_readonly(path)
    try:
        assert [r.stage for r in reader.stage_records()] == [StageName.IMAGE_WAIT]
        assert [b.ended_at for b in reader.run_bands()] == [None, 6.0]
    finally:
        reader.close()


def test_a_schema_4_journal_read_only_is_read_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "wave.journal"
    shutil.copy(SCHEMA_4, path)
    reader = SqliteJournal.open_readonly(path)
    try:
        assert list(reader.stage_records()) == []
        assert [b.ended_at for b in reader.run_bands()] == [None]
        assert reader.counts()[RowStatus.SUCCEEDED] == 3
    finally:
        reader.close()
    assert _version(path) == 4


def test_a_journal_newer_than_this_schema_is_still_refused(tmp_path: Path) -> None:
    path = tmp_path / "wave.journal"
    shutil.copy(SCHEMA_4, path)
    SqliteJournal.open(path, manifest_path="x", manifest_fingerprint="y", settings={}).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    for opening in (
        lambda: SqliteJournal.open(path, manifest_path="x", manifest_fingerprint="y", settings={}),
        lambda: SqliteJournal.open_readonly(path),
    ):
        with pytest.raises(
            JournalError,
            match=rf"newer ibimport \(schema {SCHEMA_VERSION + 1}; this one reads up to "
            rf"{SCHEMA_VERSION}",
        ):
            opening()
    assert _version(path) == SCHEMA_VERSION + 1
