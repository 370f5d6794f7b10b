"""The SQLite journal: header, pending rows, state transitions, resume data, faults."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from journal_support import SETTINGS, mark, open_journal, raw_row, result

from ibimport.domain.results import RowStatus
from ibimport.errors import JournalError
from ibimport.journal import (
    APPLICATION_ID,
    SCHEMA_VERSION,
    Journal,
    JournalEntry,
    NullJournal,
    SqliteJournal,
)
from ibimport.testing import FakeClock


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "images.journal"


# ------------------------------------------------------------------ create / reopen


async def test_new_journal_is_identified_and_in_wal_mode(path: Path) -> None:
    journal = open_journal(path, clock=FakeClock(wall_start=42.0))
    assert journal.is_new
    assert journal.header.manifest_path == "images.csv"
    assert journal.header.manifest_fingerprint == "fp-1"
    assert journal.header.settings == SETTINGS
    assert journal.header.created_at == 42.0
    assert journal.header.schema_version == SCHEMA_VERSION
    await journal.aclose()

    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA application_id").fetchone() == (APPLICATION_ID,)
    assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    conn.close()


async def test_reopen_keeps_rows_and_the_original_header(path: Path) -> None:
    journal = open_journal(path)
    await mark(journal, "a")
    await journal.aclose()

    again = SqliteJournal.open(
        path, manifest_path="other.csv", manifest_fingerprint="fp-2", settings={"x": 1}
    )
    assert not again.is_new
    assert again.header.manifest_path == "images.csv"
    assert again.header.manifest_fingerprint == "fp-1"
    entry = again.get("a", "1.0.0")
    assert entry is not None
    assert entry.state is RowStatus.IN_FLIGHT
    assert again.get("b", "1.0.0") is None
    await again.aclose()


async def test_update_header_after_force(path: Path) -> None:
    journal = open_journal(path)
    journal.update_header(manifest_fingerprint="fp-2", settings={"region": "eu-west-1"})
    assert journal.header.manifest_fingerprint == "fp-2"
    await journal.aclose()
    reopened = SqliteJournal.open_readonly(path)
    assert reopened.header.manifest_fingerprint == "fp-2"
    assert reopened.header.settings == {"region": "eu-west-1"}
    assert reopened.header.manifest_path == "images.csv"
    reopened.close()

    moved = SqliteJournal.open(path, manifest_path="x", manifest_fingerprint="x", settings={})
    moved.update_header(manifest_fingerprint="fp-3", settings={}, manifest_path="new/images.csv")
    assert (moved.header.manifest_path, moved.header.manifest_fingerprint) == (
        "new/images.csv",
        "fp-3",
    )
    await moved.aclose()


# ------------------------------------------------------------------ pending rows before the run


def test_record_pending_writes_every_row_in_one_commit(path: Path) -> None:
    journal = open_journal(path)
    count = journal.record_pending(
        (row, f"vm-{row}", "1.0.0", f"tok-{row}") for row in range(1, 1001)
    )
    assert count == 1000
    assert journal.commits == 1
    assert journal.ops_committed == 1000
    assert journal.pending_recorded
    assert journal.counts()[RowStatus.PENDING] == 1000
    assert raw_row(path, "vm-7") == ("pending", "tok-7", 0, "", "", None)
    journal.close()


async def test_record_pending_keeps_rows_the_journal_knows(path: Path) -> None:
    journal = open_journal(path)
    await mark(journal, "a", token="tok-a")
    journal.record_pending([(1, "a", "1.0.0", "tok-a"), (2, "b", "1.0.0", "tok-b")])
    assert raw_row(path, "a")[0] == "in_flight"  # type: ignore[index]
    assert raw_row(path, "b")[0] == "pending"  # type: ignore[index]
    await journal.aclose()


async def test_record_pending_is_all_or_nothing_and_passes_the_source_error_on(
    path: Path,
) -> None:
    def rows() -> Iterator[tuple[int, str, str, str]]:
        yield 1, "a", "1.0.0", "tok-a"
        raise ValueError("row 2: not UTF-8")

    journal = open_journal(path)
    with pytest.raises(ValueError, match="not UTF-8"):
        journal.record_pending(rows())
    assert raw_row(path, "a") is None
    assert not journal.pending_recorded
    await mark(journal, "b", row=2)  # the journal is still usable
    assert raw_row(path, "b") is not None
    await journal.aclose()


def test_record_pending_commit_meets_the_fault_hook(path: Path) -> None:
    seen: list[int] = []
    journal = open_journal(path, fault_hook=seen.append)
    journal.record_pending([(1, "a", "1.0.0", "tok-a")])
    assert seen == [1]
    journal.close()


# ------------------------------------------------------------------ state transitions


async def test_row_lifecycle_and_token_clock(path: Path) -> None:
    clock = FakeClock(wall_start=100.0)
    journal = open_journal(path, clock=clock)

    await journal.mark_in_flight(
        row=1, name="a", semantic_version="1.0.0", client_token="tok", attempt=1
    )
    clock.advance(10.0)  # wall 110
    journal.record(
        result("a", RowStatus.FAILED, attempts=1, error_code="Throttling", error_message="slow")
    )
    await journal.flush()
    entry = journal.get("a", "1.0.0")
    assert entry is not None
    assert (entry.state, entry.error_code, entry.first_sent_at, entry.updated_at) == (
        RowStatus.FAILED,
        "Throttling",
        100.0,
        110.0,
    )

    # A retry with the same token keeps the token's first-sent time.
    clock.advance(10.0)  # wall 120
    await journal.mark_in_flight(
        row=1, name="a", semantic_version="1.0.0", client_token="tok", attempt=2
    )
    entry = journal.get("a", "1.0.0")
    assert entry is not None
    assert (entry.state, entry.attempts, entry.first_sent_at) == (RowStatus.IN_FLIGHT, 2, 100.0)

    journal.record(result("a", RowStatus.SUCCEEDED, attempts=2, image_arn="arn:a"))
    await journal.flush()
    entry = journal.get("a", "1.0.0")
    assert entry is not None
    assert (entry.state, entry.image_arn, entry.error_code) == (RowStatus.SUCCEEDED, "arn:a", "")

    # A done row is never downgraded by a late report for the same token ...
    journal.record(result("a", RowStatus.FAILED, error_code="InternalError"))
    journal.record(result("a", RowStatus.SKIPPED))
    await journal.flush()
    entry = journal.get("a", "1.0.0")
    assert entry is not None
    assert entry.state is RowStatus.SUCCEEDED

    # ... but a changed row (new token, after --force) starts a new token clock.
    clock.advance(80.0)  # wall 200
    await journal.mark_in_flight(
        row=1, name="a", semantic_version="1.0.0", client_token="tok-2", attempt=1
    )
    entry = journal.get("a", "1.0.0")
    assert entry is not None
    assert (entry.state, entry.client_token, entry.first_sent_at) == (
        RowStatus.IN_FLIGHT,
        "tok-2",
        200.0,
    )
    await journal.aclose()


async def test_skipped_and_resumed_results_do_not_overwrite(path: Path) -> None:
    journal = open_journal(path)
    await mark(journal, "a")
    journal.record(result("a", RowStatus.SKIPPED))
    journal.record(result("b", RowStatus.SKIPPED, row=2))
    journal.record(result("c", RowStatus.FAILED, row=3, resumed=True))
    await journal.flush()
    assert raw_row(path, "a") == ("in_flight", "tok", 1, "", "", pytest.approx(time.time(), abs=60))
    entry_b = journal.get("b", "1.0.0")
    assert entry_b is not None
    assert entry_b.state is RowStatus.SKIPPED
    assert journal.get("c", "1.0.0") is None
    await journal.aclose()


async def test_entry_to_result_round_trip(path: Path) -> None:
    journal = open_journal(path)
    journal.record(result("a", RowStatus.EXISTS, row=4, image_arn="arn:a", request_id="r1"))
    await journal.flush()
    entry = journal.get("a", "1.0.0")
    assert isinstance(entry, JournalEntry)
    carried = entry.to_result(resumed=True)
    assert carried == result(
        "a", RowStatus.EXISTS, row=4, image_arn="arn:a", request_id="r1", resumed=True
    )
    await journal.aclose()


# ------------------------------------------------------------------ reading for status/report


async def test_counts_errors_last_update_and_entries_in_row_order(path: Path) -> None:
    clock = FakeClock(wall_start=50.0)
    journal = open_journal(path, clock=clock)
    assert journal.last_update() is None
    outcomes = [
        (5, "e", RowStatus.FAILED, "AccessDenied"),
        (1, "a", RowStatus.SUCCEEDED, ""),
        (3, "c", RowStatus.FAILED, "Throttling"),
        (2, "b", RowStatus.FAILED, "Throttling"),
        (4, "d", RowStatus.INVALID, "InvalidName"),
    ]
    for row, name, status, code in outcomes:
        clock.advance(1)
        journal.record(result(name, status, row=row, error_code=code))
    await journal.flush()

    counts = journal.counts()
    assert counts[RowStatus.FAILED] == 3
    assert counts[RowStatus.SUCCEEDED] == 1
    assert counts[RowStatus.INVALID] == 1
    assert counts[RowStatus.IN_FLIGHT] == 0
    assert set(counts) == set(RowStatus)
    assert journal.errors_by_code() == {"Throttling": 2, "AccessDenied": 1}
    assert list(journal.errors_by_code()) == ["Throttling", "AccessDenied"]
    assert journal.last_update() == 55.0
    assert [e.name for e in journal.entries(page=2)] == ["a", "b", "c", "d", "e"]
    await journal.aclose()


async def test_readonly_journal_reads_but_refuses_writes(path: Path) -> None:
    journal = open_journal(path)
    journal.record(result("a", RowStatus.SUCCEEDED))
    await journal.aclose()

    readonly = SqliteJournal.open_readonly(path)
    assert readonly.counts()[RowStatus.SUCCEEDED] == 1
    with pytest.raises(JournalError, match="read-only"):
        await mark(readonly, "b")
    with pytest.raises(JournalError, match="read-only"):
        readonly.update_header(manifest_fingerprint="x", settings={})
    readonly.close()


# ------------------------------------------------------------------ diff


async def test_diff_reports_changed_added_and_removed(path: Path) -> None:
    journal = open_journal(path)
    for row, name in enumerate(["a", "b", "c"], start=1):
        journal.record(result(name, RowStatus.SUCCEEDED, row=row, token=f"tok-{name}"))
    await journal.flush()

    same = journal.diff(
        [(1, "a", "1.0.0", "tok-a"), (2, "b", "1.0.0", "tok-b")] * 1 + [(3, "c", "1.0.0", "tok-c")]
    )
    assert same.is_empty
    assert same.describe() == []

    diff = journal.diff(
        iter([(1, "a", "1.0.0", "tok-a"), (2, "b", "1.0.0", "NEW"), (4, "d", "1.0.0", "tok-d")])
    )
    assert not diff.is_empty
    assert diff.changed == [(2, "b", "1.0.0")]
    assert diff.added == [(4, "d", "1.0.0")]
    assert diff.removed == [(3, "c", "1.0.0")]
    assert (diff.n_changed, diff.n_added, diff.n_removed) == (1, 1, 1)
    text = "\n".join(diff.describe())
    assert "1 row changed" in text
    assert "row 4: d 1.0.0" in text
    assert "row 3: c 1.0.0" in text
    await journal.aclose()


async def test_diff_of_a_large_manifest_truncates_lists_but_counts_all(path: Path) -> None:
    journal = open_journal(path)
    diff = journal.diff(((i, f"img-{i}", "1.0.0", "t") for i in range(12_000)), keep=5)
    assert diff.n_added == 12_000
    assert diff.added == [(i, f"img-{i}", "1.0.0") for i in range(5)]
    lines = diff.describe(limit=3)
    assert lines[0] == "12000 rows added:"
    assert lines[-1] == "  ... and 11997 more"
    await journal.aclose()


# ------------------------------------------------------------------ fault injection


async def test_fault_hook_fails_the_batch_and_every_later_write(path: Path) -> None:
    def hook(commit_number: int) -> None:
        if commit_number == 2:
            raise OSError("disk on fire")

    journal = open_journal(path, fault_hook=hook)
    await mark(journal, "a")
    journal.record(result("a", RowStatus.SUCCEEDED, image_arn="arn:a"))
    with pytest.raises(JournalError, match="disk on fire"):
        await mark(journal, "b", row=2)
    with pytest.raises(JournalError):
        journal.record(result("c", RowStatus.SUCCEEDED, row=3))
    await journal.aclose()
    # The failed batch is rolled back as a whole; the first commit stands.
    assert raw_row(path, "a") is not None
    assert raw_row(path, "a")[0] == "in_flight"  # type: ignore[index]
    assert raw_row(path, "b") is None


def test_crash_between_sent_and_recorded_loses_only_the_outcome(path: Path) -> None:
    script = f"""
import anyio
from pathlib import Path
from ibimport.journal import SqliteJournal, exit_after_commits
from ibimport.domain.results import RowResult, RowStatus

async def main() -> None:
    journal = SqliteJournal.open(
        Path({str(path)!r}), manifest_path="m.csv", manifest_fingerprint="fp",
        settings={{}}, fault_hook=exit_after_commits(1),
    )
    await journal.mark_in_flight(
        row=1, name="a", semantic_version="1.0.0", client_token="tok", attempt=1
    )
    journal.record(RowResult(1, "a", "1.0.0", RowStatus.SUCCEEDED, client_token="tok"))
    await journal.flush()
    raise SystemExit("the fault hook should have ended the process")

anyio.run(main)
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 137, done.stderr
    journal = SqliteJournal.open_readonly(path)
    entry = journal.get("a", "1.0.0")
    assert entry is not None
    assert (entry.state, entry.client_token) == (RowStatus.IN_FLIGHT, "tok")
    journal.close()


# ------------------------------------------------------------------ protocol


async def test_both_journals_satisfy_the_protocol(path: Path) -> None:
    null = NullJournal()
    assert isinstance(null, Journal)
    async with null.running():
        await null.mark_in_flight(
            row=1, name="a", semantic_version="1.0.0", client_token="t", attempt=1
        )
        null.record(result("a", RowStatus.SUCCEEDED))
    await null.flush()
    assert null.get("a", "1.0.0") is None
    await null.aclose()

    journal = open_journal(path)
    assert isinstance(journal, Journal)
    await journal.aclose()


async def test_checkpoints_keep_the_wal_bounded(path: Path) -> None:
    """Automatic checkpoints are off (they would fsync on the event loop); the journal's
    own checkpoints in a thread must still stop the WAL from growing with every commit."""
    journal = open_journal(path)
    wal = path.with_name(path.name + "-wal")
    for i in range(2_000):  # outside running(): one commit per mark
        await mark(journal, f"vm-{i}", row=i + 1)
        if i % 200 == 199 and journal._checkpointer is not None:
            await anyio.to_thread.run_sync(journal._checkpointer.join)
    assert journal.commits >= 2_000
    size = wal.stat().st_size
    journal.close()
    assert size < 3 * 1024 * 1024, f"WAL grew to {size} bytes"
    assert raw_row(path, "vm-1999") is not None
