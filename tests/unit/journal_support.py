"""What the journal's tests share: a journal opened for a test manifest, raw reads, rows."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from ibimport.domain.results import RowResult, RowStatus
from ibimport.journal import SqliteJournal

SETTINGS = {"region": "us-east-1", "concurrency": 16}


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
