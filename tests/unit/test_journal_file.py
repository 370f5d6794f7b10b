"""The journal's file: one writer at a time; corrupt, foreign and newer files refused."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
from journal_support import open_journal, result

from ibimport.domain.results import RowStatus
from ibimport.errors import JournalError
from ibimport.journal import SCHEMA_VERSION, SqliteJournal


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "images.journal"


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


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
async def test_unwritable_journal_is_refused_with_a_way_forward(path: Path) -> None:
    open_journal(path).close()
    os.chmod(path, 0o444)
    message = refusal(path, lambda: open_journal(path))
    assert "another --journal path" in message


def test_a_second_writer_is_refused_while_the_first_holds_the_journal(tmp_path: Path) -> None:
    path = tmp_path / "wave.journal"
    first = SqliteJournal.open(path, manifest_path="m.csv", manifest_fingerprint="f", settings={})
    with pytest.raises(JournalError, match="another ibimport run is using the journal"):
        SqliteJournal.open(path, manifest_path="m.csv", manifest_fingerprint="f", settings={})
    first.close()
    again = SqliteJournal.open(path, manifest_path="m.csv", manifest_fingerprint="f", settings={})
    assert not again.is_new
    again.close()
