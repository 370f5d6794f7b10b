"""Reading the journal's records of time (schema 5): each row's stages and each run's span.

Plain functions over a connection, so ``SqliteJournal`` only holds the locks. A journal of
an older schema, read as it is, has no ``stages`` table and no ``runs.ended_at``.
"""

from __future__ import annotations

import json
import sqlite3

from ibimport.domain.stages import StageName
from ibimport.journal._model import RunBand, StageRecord

__all__ = ["run_bands", "stage_page"]

_STAGE_PAGE_SQL = (
    "SELECT name, semantic_version, stage, started_at, ended_at, attempts, outcome, error_code"
    " FROM stages WHERE (name, semantic_version, stage) > (?, ?, ?)"
    " ORDER BY name, semantic_version, stage LIMIT ?"
)


def stage_page(
    conn: sqlite3.Connection, *, after: tuple[str, str, str], page: int
) -> list[StageRecord]:
    """Up to ``page`` stage records after the key ``after`` (name, version, stage)."""
    try:
        found = conn.execute(_STAGE_PAGE_SQL, (*after, page)).fetchall()
    except sqlite3.OperationalError:  # no stages table: a journal older than schema 5
        return []
    return [
        StageRecord(name, version, StageName(stage), started, ended, attempts, outcome, code)
        for name, version, stage, started, ended, attempts, outcome, code in found
    ]


def run_bands(conn: sqlite3.Connection) -> list[RunBand]:
    """Each run's start and end, oldest first (no end before schema 5; none before 2)."""
    try:
        found = conn.execute(
            "SELECT started_at, ended_at, figures FROM runs ORDER BY id"
        ).fetchall()
    except sqlite3.OperationalError:
        try:
            found = [
                (started_at, None, figures)
                for started_at, figures in conn.execute(
                    "SELECT started_at, figures FROM runs ORDER BY id"
                )
            ]
        except sqlite3.OperationalError:
            return []
    bands = []
    for started_at, ended_at, figures in found:
        values = json.loads(figures)
        bands.append(
            RunBand(started_at, ended_at, bool(values.get("interrupted")), values.get("fatal"))
        )
    return bands
