"""What the journal learnt of a row after its import (schema 3's ``followups`` table).

The image's status a wait found and the EC2 import task's status the task check found,
each written at once (not by group commit) so a killed wait or check resumes with only
what is still outstanding; read back by ``wait``, the report and ``--retry-failed-images``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable

from ibimport.domain.rowstate import ImageStatus
from ibimport.journal._connections import JournalConnections
from ibimport.journal._group_commit import GroupCommit
from ibimport.journal._model import Followup

__all__ = ["JournalFollowups"]

#: Image statuses ``--retry-failed-images`` imports again (``ImageStatus.reimportable``).
_REIMPORTABLE = frozenset(status.value for status in ImageStatus if status.reimportable)


class JournalFollowups(JournalConnections):
    """Each row's image and task statuses as learnt after the import."""

    #: The journal's group commit (``SqliteJournal``): what it holds is committed first.
    _group: GroupCommit

    def followups(self) -> dict[tuple[str, str], Followup]:
        """What ``wait`` and the task check learnt, by row identity (schema 3).

        A journal of an older schema opened read-only has no ``followups`` table: nothing.
        """
        with self._reading() as conn:
            try:
                found = conn.execute(
                    "SELECT name, semantic_version, image_status, image_reason, task_status,"
                    " task_progress, task_message FROM followups"
                ).fetchall()
            except sqlite3.OperationalError:
                return {}
        return {(name, version): Followup(*rest) for name, version, *rest in found}

    def reimportable_images(self) -> set[tuple[str, str]]:
        """Rows (name, semantic_version) whose image a wait found FAILED, CANCELLED or
        DELETED: what ``--retry-failed-images`` imports again."""
        return {
            identity
            for identity, followup in self.followups().items()
            if followup.image_status in _REIMPORTABLE
        }

    def record_image_statuses(self, images: Iterable[tuple[str, str, str, str]]) -> None:
        """Commit (name, semantic_version, image status, reason) for rows, in one transaction.

        Written at once, not by group commit: a wait records each round as it ends, so a
        killed wait resumes following only the images still outstanding. What is buffered
        (the round's stage records) is committed first.
        """
        self._ensure_writable()
        self._group.commit_now()
        if self._broken is not None:
            raise self._broken
        now = self._clock.wall()
        with self._commit() as conn:
            conn.executemany(
                "INSERT INTO followups (name, semantic_version, image_status, image_reason,"
                " updated_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT (name, semantic_version)"
                " DO UPDATE SET image_status = excluded.image_status,"
                " image_reason = excluded.image_reason, updated_at = excluded.updated_at",
                ((name, version, status, reason, now) for name, version, status, reason in images),
            )

    def record_task_checks(self, tasks: Iterable[tuple[str, str, str, str, str]]) -> None:
        """Commit (name, semantic_version, task status, progress, message) for rows."""
        self._ensure_writable()
        now = self._clock.wall()
        with self._commit() as conn:
            conn.executemany(
                "INSERT INTO followups (name, semantic_version, task_status, task_progress,"
                " task_message, updated_at) VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (name, semantic_version) DO UPDATE SET"
                " task_status = excluded.task_status, task_progress = excluded.task_progress,"
                " task_message = excluded.task_message, updated_at = excluded.updated_at",
                ((*task, now) for task in tasks),
            )
