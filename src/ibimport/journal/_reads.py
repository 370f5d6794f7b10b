"""Reading the journal: one row, every row a page at a time, the counts, the runs, the diff.

Each read takes the reader connection under its lock (``JournalConnections._reading``),
so a read never waits behind a commit and shows committed state only. A journal of an
older schema, opened read-only, is read as it is: what it has no table for is empty.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator
from typing import Any

from ibimport.domain.results import RowStatus
from ibimport.errors import JournalError
from ibimport.journal._connections import JournalConnections
from ibimport.journal._diff import manifest_diff
from ibimport.journal._file import unusable
from ibimport.journal._model import JournalEntry, ManifestDiff, RunBand, StageRecord
from ibimport.journal._records import run_bands, stage_page
from ibimport.journal._schema import COLUMNS, GET_SQL, entry

__all__ = ["JournalReads"]


class JournalReads(JournalConnections):
    """The journal's committed rows, stages and runs, as ``status``, ``report`` and a resume
    read them."""

    def get(self, name: str, semantic_version: str) -> JournalEntry | None:
        """The committed state of one row, or None if the journal has never seen it."""
        # Called for every row when a big run resumes, so it skips the helpers.
        if self._closed:
            raise JournalError(f"the journal {self.path} is closed")
        try:
            with self._read_lock:
                found = self._reader.execute(GET_SQL, (name, semantic_version)).fetchone()
        except sqlite3.Error as exc:
            raise unusable(self.path, exc) from exc
        return None if found is None else entry(found)

    def entries(self, *, page: int = 1000, after_row: int = 0) -> Iterator[JournalEntry]:
        """Every row (from ``after_row`` on) in row order, a page at a time (bounded memory)."""
        after: tuple[int, str, str] | None = (after_row, "", "") if after_row else None
        # A journal older than schema 4, read as it is, has no partition columns.
        columns = COLUMNS + (", account, region" if self.header.schema_version >= 4 else "")
        while True:
            with self._reading() as conn:
                if after is None:
                    found = conn.execute(
                        f"SELECT {columns} FROM rows ORDER BY row, name, semantic_version LIMIT ?",
                        (page,),
                    ).fetchall()
                else:
                    found = conn.execute(
                        f"SELECT {columns} FROM rows "
                        "WHERE (row, name, semantic_version) > (?, ?, ?) "
                        "ORDER BY row, name, semantic_version LIMIT ?",
                        (*after, page),
                    ).fetchall()
            for values in found:
                yield entry(values)
            if len(found) < page:
                return
            last = found[-1]
            after = (last[0], last[1], last[2])

    def counts(self) -> dict[RowStatus, int]:
        """Rows per state; every state is present, zero if no row is in it."""
        result = dict.fromkeys(RowStatus, 0)
        with self._reading() as conn:
            for state, count in conn.execute("SELECT state, COUNT(*) FROM rows GROUP BY state"):
                result[RowStatus(state)] = count
        return result

    def errors_by_code(self) -> dict[str, int]:
        """Failed rows per last error code, most frequent first."""
        with self._reading() as conn:
            found = conn.execute(
                "SELECT error_code, COUNT(*) AS n FROM rows WHERE state = 'failed' "
                "GROUP BY error_code ORDER BY n DESC, error_code"
            ).fetchall()
        return {code: count for code, count in found}

    def last_update(self) -> float | None:
        """Wall-clock time of the latest row change, None if no row was journalled."""
        with self._reading() as conn:
            (latest,) = conn.execute("SELECT MAX(updated_at) FROM rows").fetchone()
        return None if latest is None else float(latest)

    def reconciled(self, partition: str) -> bool:
        """Whether this partition's rows were checked against a complete listing of its
        builds and what it found was committed (``record_existing``)."""
        return partition in self.header.settings.get("reconciled", ())

    def runs(self) -> list[dict[str, Any]]:
        """Every earlier run's figures (``record_run``), oldest first.

        A journal of schema 1 opened read-only has no ``runs`` table: no runs recorded.
        """
        with self._reading() as conn:
            try:
                found = conn.execute("SELECT figures FROM runs ORDER BY id").fetchall()
            except sqlite3.OperationalError:
                return []
        return [json.loads(figures) for (figures,) in found]

    def run_bands(self) -> list[RunBand]:
        """When each run started and ended (wall clock), oldest first: a report's bands of
        stops and resumes. Runs recorded before schema 5 have no end."""
        with self._reading() as conn:
            return run_bands(conn)

    def stage_records(self, *, page: int = 1000) -> Iterator[StageRecord]:
        """Every row's stages, by row identity then stage, a page at a time (bounded memory).

        A journal older than schema 5, read as it is, has none.
        """
        after = ("", "", "")
        while True:
            with self._reading() as conn:
                found = stage_page(conn, after=after, page=page)
            yield from found
            if len(found) < page:
                return
            last = found[-1]
            after = (last.name, last.semantic_version, last.stage.value)

    def diff(self, rows: Iterable[tuple[int, str, str, str]], *, keep: int = 1000) -> ManifestDiff:
        """Compare the current manifest's ``(row, name, version, token)`` with the journal.

        Same identity with another token is *changed*; unknown to the journal is *added*;
        journalled but not in ``rows`` is *removed*. ``rows`` is streamed into a temporary
        table, so memory stays bounded whatever the manifest's size.
        """
        with self._reading() as conn:
            return manifest_diff(conn, rows, keep=keep)
