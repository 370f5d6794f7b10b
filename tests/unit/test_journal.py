"""The SQLite journal: durability of in-flight marks, group commit, resume data, bad files."""

from __future__ import annotations

import functools
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ibimport.errors import JournalError
from ibimport.journal import (
    APPLICATION_ID,
    SCHEMA_VERSION,
    Journal,
    JournalEntry,
    NullJournal,
    SqliteJournal,
)
from ibimport.results import RowResult, RowStatus

SETTINGS = {"region": "us-east-1", "concurrency": 16}


class FakeClock:
    """Wall clock the tests move by hand (the journal's timestamps are wall-clock)."""

    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def open_journal(path: Path, **kwargs: object) -> SqliteJournal:
    return SqliteJournal.open(
        path,
        manifest_path="images.csv",
        manifest_fingerprint="fp-1",
        settings=SETTINGS,
        **kwargs,  # type: ignore[arg-type]
    )


def raw_row(path: Path, name: str, version: str = "1.0.0") -> tuple[object, ...] | None:
    """The row as another process would see it: a fresh connection, committed data only."""
    conn = sqlite3.connect(path)
    try:
        found: tuple[object, ...] | None = conn.execute(
            "SELECT state, client_token, attempts, image_arn, error_code, first_sent_at "
            "FROM rows WHERE name = ? AND semantic_version = ?",
            (name, version),
        ).fetchone()
        return found
    finally:
        conn.close()


def result(
    name: str,
    status: RowStatus,
    *,
    row: int = 1,
    token: str = "tok",
    **fields: object,
) -> RowResult:
    return RowResult(
        row=row,
        name=name,
        semantic_version="1.0.0",
        status=status,
        client_token=token,
        **fields,  # type: ignore[arg-type]
    )


async def mark(journal: SqliteJournal, name: str, *, row: int = 1, token: str = "tok") -> None:
    await journal.mark_in_flight(
        row=row, name=name, semantic_version="1.0.0", client_token=token, attempt=1
    )


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "images.journal"


# ------------------------------------------------------------------ create / reopen


async def test_new_journal_is_identified_and_in_wal_mode(path: Path) -> None:
    journal = open_journal(path, clock=FakeClock(42.0))
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


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
async def test_unwritable_journal_is_refused_with_a_way_forward(path: Path) -> None:
    open_journal(path).close()
    os.chmod(path, 0o444)
    message = refusal(path, lambda: open_journal(path))
    assert "another --journal path" in message


# ------------------------------------------------------------------ durability, group commit


async def test_mark_is_committed_before_it_returns_without_running(path: Path) -> None:
    journal = open_journal(path, clock=FakeClock(7.0))
    await journal.mark_in_flight(
        row=3, name="a", semantic_version="1.0.0", client_token="tok-a", attempt=2
    )
    assert raw_row(path, "a") == ("in_flight", "tok-a", 2, "", "", 7.0)
    await journal.aclose()


async def test_mark_is_committed_before_it_returns_inside_running(path: Path) -> None:
    journal = open_journal(path, max_delay=0.01)
    seen: list[tuple[object, ...] | None] = []

    async def worker(i: int) -> None:
        await mark(journal, f"img-{i}", row=i, token=f"t{i}")
        seen.append(raw_row(path, f"img-{i}"))

    async with journal.running(), anyio.create_task_group() as tg:
        for i in range(20):
            tg.start_soon(worker, i)
    assert len(seen) == 20
    assert all(found is not None and found[0] == "in_flight" for found in seen)
    await journal.aclose()


async def test_concurrent_marks_share_few_commits(path: Path) -> None:
    journal = open_journal(path, max_delay=0.02, max_batch=10_000)
    async with journal.running(), anyio.create_task_group() as tg:
        for i in range(500):
            tg.start_soon(mark, journal, f"img-{i}")
    assert journal.ops_committed == 500
    assert journal.commits <= 5
    assert journal.counts()[RowStatus.IN_FLIGHT] == 500
    await journal.aclose()


async def test_full_batch_commits_without_waiting_for_the_delay(path: Path) -> None:
    journal = open_journal(path, max_delay=30.0, max_batch=50)
    async with journal.running():
        await mark(journal, "first")  # the next commit may only come 30 s later ...
        with anyio.fail_after(5):  # ... unless a batch fills up
            async with anyio.create_task_group() as tg:
                for i in range(50):
                    tg.start_soon(mark, journal, f"img-{i}")
                    await anyio.lowlevel.checkpoint()  # arrive one by one; the flusher waits
    assert journal.commits == 2
    await journal.aclose()


async def test_a_lone_mark_does_not_wait_for_the_commit_window(path: Path) -> None:
    journal = open_journal(path, max_delay=30.0)
    async with journal.running():
        with anyio.fail_after(5):
            await mark(journal, "a")
        assert raw_row(path, "a") is not None
    await journal.aclose()


async def test_flusher_is_idle_without_work_and_commits_records_by_itself(path: Path) -> None:
    journal = open_journal(path, max_delay=0.005)
    async with journal.running():
        await anyio.sleep(0.05)
        assert journal.commits == 0
        journal.record(result("a", RowStatus.SUCCEEDED, image_arn="arn:a"))
        with anyio.fail_after(2):
            # Polls another connection: there is no event to wait for from outside.
            while raw_row(path, "a") is None:  # noqa: ASYNC110
                await anyio.sleep(0.005)
        assert journal.commits == 1
    await journal.aclose()


async def test_record_is_buffered_until_flush(path: Path) -> None:
    journal = open_journal(path)
    journal.record(result("a", RowStatus.SUCCEEDED, image_arn="arn:a", attempts=1))
    assert journal.get("a", "1.0.0") is None
    await journal.flush()
    entry = journal.get("a", "1.0.0")
    assert entry is not None
    assert entry.state is RowStatus.SUCCEEDED
    assert entry.image_arn == "arn:a"
    await journal.aclose()


async def test_running_flushes_on_exit_and_reraises_the_body_error_unwrapped(path: Path) -> None:
    journal = open_journal(path, max_delay=60.0)

    async def interrupted_run() -> None:
        async with journal.running():
            journal.record(result("a", RowStatus.FAILED, error_code="ValidationException"))
            raise KeyError("boom")

    with pytest.raises(KeyError, match="boom"):
        await interrupted_run()
    assert raw_row(path, "a") is not None
    await journal.aclose()


async def test_a_commit_under_way_when_running_ends_is_not_lost(path: Path) -> None:
    journal = open_journal(path)
    async with journal.running():
        journal.record(result("a", RowStatus.SUCCEEDED))
        await anyio.lowlevel.checkpoint()  # the flusher takes the batch, then is cancelled
    entry = journal.get("a", "1.0.0")
    assert entry is not None
    assert entry.state is RowStatus.SUCCEEDED
    await journal.aclose()


async def test_get_does_not_wait_for_a_commit_in_progress(path: Path) -> None:
    journal = open_journal(path)
    await mark(journal, "a")
    # Holding the writer's lock is what a long commit in the worker thread looks like.
    with journal._write_lock:
        done = threading.Event()

        def read() -> None:
            journal.get("a", "1.0.0")
            done.set()

        thread = threading.Thread(target=read)
        thread.start()
        assert done.wait(2), "get() blocked behind the writer"
        thread.join()
    await journal.aclose()


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
    clock = FakeClock(100.0)
    journal = open_journal(path, clock=clock)

    await journal.mark_in_flight(
        row=1, name="a", semantic_version="1.0.0", client_token="tok", attempt=1
    )
    clock.now = 110.0
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
    clock.now = 120.0
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
    clock.now = 200.0
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
    clock = FakeClock(50.0)
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
        clock.now += 1
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


# ------------------------------------------------------------------ unusable files


def refusal(path: Path, call: Callable[[], object]) -> str:
    """The JournalError's message, which must name the file; the path is elided so that
    the test's own directory name cannot satisfy a match."""
    with pytest.raises(JournalError) as info:
        call()
    message = str(info.value)
    assert str(path) in message
    return message.replace(str(path), "<journal>")


def fill_and_checkpoint(path: Path, rows: int = 2000) -> int:
    """A journal whose rows all live in the main file; returns its size."""

    async def fill() -> None:
        journal = open_journal(path)
        for i in range(rows):
            journal.record(result(f"img-{i:05}", RowStatus.SUCCEEDED, row=i, image_arn="a" * 150))
        await journal.aclose()

    anyio.run(fill)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return path.stat().st_size


def test_random_bytes_are_refused_with_a_way_forward(path: Path) -> None:
    path.write_bytes(os.urandom(8192))
    message = refusal(path, lambda: open_journal(path))
    assert "not an ibimport journal" in message
    assert "another --journal path" in message


def test_garbled_sqlite_file_is_refused(path: Path) -> None:
    open_journal(path).close()
    data = bytearray(path.read_bytes())
    data[100:] = os.urandom(len(data) - 100)  # keep the SQLite header, garble the rest
    path.write_bytes(bytes(data))
    message = refusal(path, lambda: open_journal(path))
    assert "damaged" in message
    assert "another --journal path" in message


def test_a_damaged_page_deep_in_the_file_is_found_at_open(path: Path) -> None:
    size = fill_and_checkpoint(path)
    page = 4096
    middle = (size // 2) // page * page
    with path.open("r+b") as file:
        file.seek(middle)
        file.write(os.urandom(page))
    assert "damaged" in refusal(path, lambda: open_journal(path))
    assert "damaged" in refusal(path, lambda: SqliteJournal.open_readonly(path))


def test_truncated_journal_is_refused(path: Path) -> None:
    size = fill_and_checkpoint(path)
    assert size > 100_000
    with path.open("r+b") as file:
        file.truncate(size // 2)
    assert "damaged" in refusal(path, lambda: open_journal(path))
    assert "damaged" in refusal(path, lambda: SqliteJournal.open_readonly(path))


def test_empty_file_is_not_silently_restarted(path: Path) -> None:
    path.write_bytes(b"")
    message = refusal(path, lambda: open_journal(path))
    assert "<journal> is empty" in message
    assert "another --journal path" in message
    assert path.stat().st_size == 0


def test_foreign_sqlite_database_is_refused_and_left_untouched(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE things (x)")
    conn.commit()
    conn.close()
    message = refusal(path, lambda: open_journal(path))
    assert "SQLite database but not an ibimport journal" in message
    assert "SQLite database but not an ibimport journal" in refusal(
        path, lambda: SqliteJournal.open_readonly(path)
    )
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    conn.close()


def test_journal_of_a_newer_schema_is_refused(path: Path) -> None:
    open_journal(path).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    message = refusal(path, lambda: open_journal(path))
    assert f"newer ibimport (schema {SCHEMA_VERSION + 1}" in message
    assert "upgrade ibimport or use another --journal path" in message


def test_readonly_open_of_a_missing_file_is_refused(path: Path) -> None:
    assert "no journal at <journal>" in refusal(path, lambda: SqliteJournal.open_readonly(path))
    assert not path.exists()


def test_journal_in_a_missing_directory_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "nope" / "images.journal"
    assert "does not exist" in refusal(path, lambda: open_journal(path))


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
from ibimport.results import RowResult, RowStatus

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


# ------------------------------------------------------------------ batching preserves order

_NAMES = ("a", "b", "c")
_TOKENS = ("t1", "t2")
_OUTCOMES = (RowStatus.SUCCEEDED, RowStatus.EXISTS, RowStatus.FAILED, RowStatus.SKIPPED)
_op = st.one_of(
    st.tuples(st.just("mark"), st.sampled_from(_NAMES), st.sampled_from(_TOKENS)),
    st.tuples(st.sampled_from(_OUTCOMES), st.sampled_from(_NAMES), st.sampled_from(_TOKENS)),
    st.tuples(st.just("flush"), st.just(""), st.just("")),
)


def _model(ops: list[tuple[object, str, str]]) -> dict[str, tuple[RowStatus, str, int]]:
    """The row rules, one operation at a time: (state, token, attempts) per name."""
    rows: dict[str, tuple[RowStatus, str, int]] = {}
    for i, (kind, name, token) in enumerate(ops):
        old = rows.get(name)
        if kind == "flush":
            continue
        if kind == "mark":
            rows[name] = (RowStatus.IN_FLIGHT, token, i)
        elif kind is RowStatus.SKIPPED:
            rows.setdefault(name, (RowStatus.SKIPPED, token, i))
        elif old is not None and old[0].is_done and old[1] == token and not kind.is_done:  # type: ignore[attr-defined]
            continue
        else:
            rows[name] = (kind, token, i)  # type: ignore[assignment]
    return rows


@settings(max_examples=40, deadline=None)
@given(ops=st.lists(_op, max_size=30))
def test_grouped_commits_apply_operations_in_order(
    tmp_path_factory: pytest.TempPathFactory, ops: list[tuple[object, str, str]]
) -> None:
    path = tmp_path_factory.mktemp("journal") / "j.db"

    async def play() -> dict[str, tuple[RowStatus, str, int]]:
        journal = open_journal(path, max_delay=0.001)
        async with journal.running(), anyio.create_task_group() as tg:
            for i, (kind, name, token) in enumerate(ops):
                if kind == "mark":
                    # Started, not awaited: later operations join the same batch.
                    tg.start_soon(
                        functools.partial(
                            journal.mark_in_flight,
                            row=1,
                            name=name,
                            semantic_version="1.0.0",
                            client_token=token,
                            attempt=i,
                        )
                    )
                    await anyio.lowlevel.checkpoint()
                elif kind == "flush":
                    await journal.flush()
                else:
                    journal.record(result(name, kind, token=token, attempts=i))  # type: ignore[arg-type]
        found = {e.name: (e.state, e.client_token, e.attempts) for e in journal.entries()}
        await journal.aclose()
        return found

    assert anyio.run(play) == _model(ops)


def test_a_second_writer_is_refused_while_the_first_holds_the_journal(tmp_path: Path) -> None:
    path = tmp_path / "wave.journal"
    first = SqliteJournal.open(path, manifest_path="m.csv", manifest_fingerprint="f", settings={})
    with pytest.raises(JournalError, match="another ibimport run is using the journal"):
        SqliteJournal.open(path, manifest_path="m.csv", manifest_fingerprint="f", settings={})
    first.close()
    again = SqliteJournal.open(path, manifest_path="m.csv", manifest_fingerprint="f", settings={})
    assert not again.is_new
    again.close()


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
