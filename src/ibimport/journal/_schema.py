"""The journal's tables, its identity (``application_id``) and its version (``user_version``).

A journal of a newer version is refused, never rewritten (``_file``); an older one is
upgraded in place by ``upgrade`` when opened for writing (read-only, it is read as it
is). Schema 2 added the ``runs`` table: one row per run of the batch, so the report keeps
every run's figures across processes (a resumed run used to overwrite the first one's).
Schema 3 added the ``followups`` table (issue 12): what was learnt about a row after or
before its import, its image's final state (``wait``) and its EC2 import task (``preflight``).
Schema 4 added each row's partition (``account``, ``region``: where it was imported), so
results rebuilt from journals alone (``report``, the merge of shards) still name it.
Schema 5 added the ``stages`` table (each row's passage through each stage: start, end,
attempts, outcome; issue 18) and each run's end (``runs.ended_at``), so a report draws a
timeline, per-stage durations and the runs' stops and resumes from journals alone.
Schema 6 added the ``tasks`` table (issue 19): each row's EC2 import task (ImportImage),
its token, states and AMI, kept beyond EC2's 7 days of task history.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from typing import Any

from ibimport.domain.results import RowStatus
from ibimport.journal._model import JournalEntry

__all__ = [
    "APPLICATION_ID",
    "COLUMNS",
    "FIRST_SCHEMA_VERSION",
    "GET_SQL",
    "SCHEMA_VERSION",
    "STAGE_SQL",
    "TASK_COLUMNS",
    "TASK_SQL",
    "dump_settings",
    "entry",
    "lay_out",
    "upgrade",
]

#: ``PRAGMA application_id`` of an ibimport journal: "IBJN" in ASCII.
APPLICATION_ID = 0x49424A4E
#: ``PRAGMA user_version`` of the schema below; a newer journal is refused.
SCHEMA_VERSION = 6
#: The oldest schema ``upgrade`` knows; anything older is damaged.
FIRST_SCHEMA_VERSION = 1

#: Schema 2: each run's figures (``RunStats.run_figures``) as JSON, oldest first.
_RUNS = """
CREATE TABLE runs (
    id INTEGER PRIMARY KEY,
    started_at REAL NOT NULL,
    figures TEXT NOT NULL
)
"""

#: Schema 3: per row (its identity), the image's final state and reason as ``wait`` learnt
#: them (``rowstate.ImageStatus``), and its import task as the task check classified it
#: (``importtasks.TaskState``, EC2's progress and message). Empty text: not learnt yet.
_FOLLOWUPS = """
CREATE TABLE IF NOT EXISTS followups (
    name TEXT NOT NULL,
    semantic_version TEXT NOT NULL,
    image_status TEXT NOT NULL DEFAULT '',
    image_reason TEXT NOT NULL DEFAULT '',
    task_status TEXT NOT NULL DEFAULT '',
    task_progress TEXT NOT NULL DEFAULT '',
    task_message TEXT NOT NULL DEFAULT '',
    updated_at REAL NOT NULL,
    PRIMARY KEY (name, semantic_version)
)
"""

#: Schema 4: where each row was imported; empty until its outcome is recorded.
_PLACES = (
    "ALTER TABLE rows ADD COLUMN account TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE rows ADD COLUMN region TEXT NOT NULL DEFAULT ''",
)

#: Schema 5: per row (its identity) and stage, the latest passage through the stage. Times
#: are wall-clock; ``ended_at`` NULL while the row is (or was, when killed) in the stage.
_STAGES = """
CREATE TABLE IF NOT EXISTS stages (
    name TEXT NOT NULL,
    semantic_version TEXT NOT NULL,
    stage TEXT NOT NULL,
    started_at REAL NOT NULL,
    ended_at REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    outcome TEXT NOT NULL DEFAULT '',
    error_code TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (name, semantic_version, stage)
) WITHOUT ROWID
"""
_RUN_ENDS = "ALTER TABLE runs ADD COLUMN ended_at REAL"

#: Schema 6: per row (its identity), its latest EC2 import task.
_TASKS = """
CREATE TABLE IF NOT EXISTS tasks (
    name TEXT NOT NULL,
    semantic_version TEXT NOT NULL,
    task_id TEXT NOT NULL,
    client_token TEXT NOT NULL,
    generation INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL,
    progress TEXT NOT NULL DEFAULT '',
    message TEXT NOT NULL DEFAULT '',
    image_id TEXT NOT NULL DEFAULT '',
    started_at REAL,
    ended_at REAL,
    account TEXT NOT NULL DEFAULT '',
    region TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (name, semantic_version)
) WITHOUT ROWID
"""
#: One statement for a task's every change (its row's latest task replaces an older one).
TASK_SQL = """
INSERT INTO tasks (name, semantic_version, task_id, client_token, generation, status,
                   progress, message, image_id, started_at, ended_at, account, region)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (name, semantic_version) DO UPDATE SET
    task_id = excluded.task_id, client_token = excluded.client_token,
    generation = excluded.generation, status = excluded.status,
    progress = excluded.progress, message = excluded.message, image_id = excluded.image_id,
    started_at = COALESCE(excluded.started_at, tasks.started_at),
    ended_at = excluded.ended_at, account = excluded.account, region = excluded.region
"""
TASK_COLUMNS = (
    "name, semantic_version, task_id, client_token, generation, status, progress, message,"
    " image_id, started_at, ended_at, account, region"
)

#: One statement for both ends of a stage: a start (``ended_at`` NULL) restarts the stage;
#: an end keeps the recorded start (or takes the one given, if the start was never
#: recorded) and sets the rest.
STAGE_SQL = """
INSERT INTO stages (name, semantic_version, stage, started_at, ended_at, attempts, outcome,
                    error_code)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (name, semantic_version, stage) DO UPDATE SET
    started_at = CASE WHEN excluded.ended_at IS NULL THEN excluded.started_at
                      ELSE stages.started_at END,
    ended_at = excluded.ended_at,
    attempts = excluded.attempts,
    outcome = excluded.outcome,
    error_code = excluded.error_code
"""

_SCHEMA = """
CREATE TABLE run (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    manifest_path TEXT NOT NULL,
    manifest_fingerprint TEXT NOT NULL,
    settings TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE rows (
    name TEXT NOT NULL,
    semantic_version TEXT NOT NULL,
    row INTEGER NOT NULL,
    client_token TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    image_arn TEXT NOT NULL DEFAULT '',
    request_id TEXT NOT NULL DEFAULT '',
    error_code TEXT NOT NULL DEFAULT '',
    error_message TEXT NOT NULL DEFAULT '',
    first_sent_at REAL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (name, semantic_version)
);
CREATE INDEX rows_in_order ON rows (row, name, semantic_version);
"""
_SCHEMA += _RUNS.strip() + ";\n"
_SCHEMA += _FOLLOWUPS.strip() + ";\n"
_SCHEMA += _STAGES.strip() + ";\n"
_SCHEMA += _TASKS.strip() + ";\n"

# In JournalEntry's field order: entry() builds entries positionally.
COLUMNS = (
    "row, name, semantic_version, client_token, state, attempts, image_arn, request_id,"
    " error_code, error_message, first_sent_at, updated_at"
)
GET_SQL = f"SELECT {COLUMNS} FROM rows WHERE name = ? AND semantic_version = ?"
_STATUS = {status.value: status for status in RowStatus}


def lay_out(
    conn: sqlite3.Connection,
    manifest_path: str,
    manifest_fingerprint: str,
    settings: Mapping[str, Any],
    created_at: float,
) -> None:
    """Lay out a new journal in one transaction: a crash leaves nothing or all of it."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                conn.execute(statement)
        for statement in (*_PLACES, _RUN_ENDS):
            conn.execute(statement)
        conn.execute(
            "INSERT INTO run VALUES (1, ?, ?, ?, ?)",
            (manifest_path, manifest_fingerprint, dump_settings(settings), created_at),
        )
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def upgrade(conn: sqlite3.Connection, version: int) -> None:
    """Bring a journal of an older schema up to ``SCHEMA_VERSION`` in one transaction."""
    if version >= SCHEMA_VERSION:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        if version < 2:
            conn.execute(_RUNS)
        if version < 3:
            conn.execute(_FOLLOWUPS)
        if version < 4:
            for statement in _PLACES:
                conn.execute(statement)
        if version < 5:
            conn.execute(_STAGES)
            conn.execute(_RUN_ENDS)
        if version < 6:
            conn.execute(_TASKS)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def dump_settings(settings: Mapping[str, Any]) -> str:
    return json.dumps(dict(settings), sort_keys=True, default=str)


def entry(values: tuple[Any, ...]) -> JournalEntry:
    """A ``rows`` row, selected as ``COLUMNS``, as a ``JournalEntry``."""
    row, name, version, token, state, attempts, arn, request_id, code, message, first, upd = values[
        :12
    ]
    account, region = values[12:14] if len(values) >= 14 else ("", "")
    return JournalEntry(
        row,
        name,
        version,
        token,
        _STATUS[state],
        attempts,
        arn,
        request_id,
        code,
        message,
        first,
        upd,
        account,
        region,
    )
