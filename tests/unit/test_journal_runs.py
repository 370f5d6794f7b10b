"""Schema 2's ``runs`` table: every run's figures kept, and schema-1 journals still open."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from journal_support import open_journal

from ibimport.journal import SCHEMA_VERSION, SqliteJournal


def _as_schema_1(path: Path) -> None:
    """What a journal written before the ``runs`` table (and what came after) looks like."""
    conn = sqlite3.connect(path)
    conn.execute("DROP TABLE runs")
    conn.execute("DROP TABLE followups")  # schema 3
    conn.execute("ALTER TABLE rows DROP COLUMN account")  # schema 4
    conn.execute("ALTER TABLE rows DROP COLUMN region")
    conn.execute("DROP TABLE stages")  # schema 5
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()


def _version(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        return int(version)
    finally:
        conn.close()


async def test_runs_are_kept_oldest_first_across_openings(tmp_path: Path) -> None:
    path = tmp_path / "images.journal"
    journal = open_journal(path)
    assert journal.runs() == []
    journal.record_run(started_at=1.0, figures={"calls": 10, "interrupted": True})
    await journal.aclose()

    again = open_journal(path)
    again.record_run(started_at=2.0, figures={"calls": 3, "interrupted": False})
    await again.aclose()

    reader = SqliteJournal.open_readonly(path)
    try:
        assert reader.runs() == [
            {"calls": 10, "interrupted": True},
            {"calls": 3, "interrupted": False},
        ]
    finally:
        reader.close()


async def test_a_schema_1_journal_is_read_as_is_and_upgraded_when_written(
    tmp_path: Path,
) -> None:
    path = tmp_path / "images.journal"
    await open_journal(path).aclose()
    _as_schema_1(path)

    reader = SqliteJournal.open_readonly(path)
    try:
        assert reader.runs() == []  # no table, no runs: not an error
    finally:
        reader.close()
    assert _version(path) == 1, "a read-only open changes nothing"

    writer = open_journal(path)
    assert not writer.is_new
    writer.record_run(started_at=5.0, figures={"calls": 1})
    await writer.aclose()
    assert _version(path) == SCHEMA_VERSION >= 2
    reader = SqliteJournal.open_readonly(path)
    try:
        assert reader.runs() == [{"calls": 1}]
    finally:
        reader.close()
