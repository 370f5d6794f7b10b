"""Each row's EC2 import task (schema 6's ``tasks`` table): kept beyond EC2's 7 days of
task history, so a resume follows, adopts or starts again the task of every row; and the
rows whose task ``ibimport cancel`` cancelled.

A task started is committed at once, never buffered: a crash after ImportImage answered
must not forget the task it started.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable

from ibimport.journal._connections import JournalConnections
from ibimport.journal._group_commit import GroupCommit
from ibimport.journal._model import TaskRecord, TaskStatus
from ibimport.journal._schema import TASK_COLUMNS, TASK_SQL
from ibimport.journal._transitions import CANCEL_SQL

__all__ = ["JournalTasks"]


class JournalTasks(JournalConnections):
    """Each row's latest EC2 import task, read and written."""

    #: The journal's group commit (``SqliteJournal``): what it holds is committed first.
    _group: GroupCommit

    def task_records(self) -> dict[tuple[str, str], TaskRecord]:
        """Each row's latest EC2 import task (schema 6), by row identity (none before)."""
        with self._reading() as conn:
            try:
                found = conn.execute(f"SELECT {TASK_COLUMNS} FROM tasks").fetchall()
            except sqlite3.OperationalError:
                return {}
        records = {}
        for name, version, task_id, token, gen, status, *rest in found:
            records[name, version] = TaskRecord(
                name, version, task_id, token, gen, TaskStatus(status), *rest
            )
        return records

    def record_task(self, record: TaskRecord) -> None:
        """Commit a row's EC2 import task at once: a task started is never forgotten (the
        row's buffered stage records go first, in order)."""
        self._ensure_writable()
        self._group.commit_now()
        if self._broken is not None:
            raise self._broken
        with self._commit() as conn:
            conn.execute(
                TASK_SQL,
                (
                    record.name,
                    record.semantic_version,
                    record.task_id,
                    record.client_token,
                    record.generation,
                    record.status.value,
                    record.progress,
                    record.message,
                    record.image_id,
                    record.started_at,
                    record.ended_at,
                    record.account,
                    record.region,
                ),
            )

    def record_cancelled(self, rows: Iterable[tuple[str, str, str, str]]) -> int:
        """Commit (name, semantic_version, errorCode, errorMessage) rows ``cancelled`` at
        once (``ibimport cancel``; done rows keep their state); returns how many changed."""
        self._ensure_writable()
        self._group.commit_now()
        if self._broken is not None:
            raise self._broken
        now = self._clock.wall()
        changed = 0
        with self._commit() as conn:
            for name, version, code, message in rows:
                changed += conn.execute(CANCEL_SQL, (code, message, now, name, version)).rowcount
        return changed
