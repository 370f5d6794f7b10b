"""``SqliteJournal``: the embedded journal, one SQLite file in WAL mode.

Durability model. A row is recorded ``in_flight`` and committed *before* its first call
(``mark_in_flight`` returns only once that commit is done); outcomes (``record``) are
buffered and written by the next group commit (``_group_commit``). A commit runs on the
event loop: with WAL and synchronous=NORMAL it only hands pages to the OS; the fsyncs
happen in checkpoints, which run every few hundred commits in a thread of their own. A
crash therefore loses at most the uncommitted batch of outcomes, which is harmless: those
rows are still ``in_flight`` in the journal and are re-sent with the same clientToken.

The class is made of its parts: the connections and their locks (``_connections``), the
reads (``_reads``), what was learnt after the import (``_followups``) and each row's EC2
import task (``_tasks``); here are the opening and closing, the writes of a run (by group
commit) and the writes made at once (the rows before the run, the listing's findings,
``--force``'s header and tokens).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from contextlib import asynccontextmanager
from itertools import groupby
from pathlib import Path
from typing import Any

import anyio

from ibimport.domain.results import RowResult, RowStatus
from ibimport.domain.stages import StageName
from ibimport.errors import JournalError
from ibimport.flow.clock import Clock, SystemClock
from ibimport.journal._connections import FaultHook
from ibimport.journal._file import close_all, connect, open_readable, open_writable, unusable
from ibimport.journal._followups import JournalFollowups
from ibimport.journal._group_commit import GroupCommit, Op
from ibimport.journal._reads import JournalReads
from ibimport.journal._schema import STAGE_SQL, dump_settings
from ibimport.journal._tasks import JournalTasks
from ibimport.journal._transitions import MARK_SQL, PENDING_SQL, RECORD_SQL

__all__ = ["SqliteJournal"]

_MARK, _RECORD, _STAGE = 0, 1, 2  # an Op's kind: the statement it runs
_SQL_BY_KIND = (MARK_SQL, RECORD_SQL, STAGE_SQL)
_CHECKPOINT_EVERY = 200  # commits between checkpoints: a WAL of a few MB at most


class SqliteJournal(JournalReads, JournalFollowups, JournalTasks):
    """The embedded journal: one SQLite file in WAL mode, written by group commit."""

    is_new: bool

    def __init__(
        self,
        path: Path,
        *,
        writer: sqlite3.Connection | None,
        reader: sqlite3.Connection,
        is_new: bool,
        max_delay: float,
        max_batch: int,
        fault_hook: FaultHook | None,
        clock: Clock,
    ) -> None:
        """Use ``open`` or ``open_readonly``; this only wires the parts together."""
        super().__init__(path, writer=writer, reader=reader, fault_hook=fault_hook, clock=clock)
        self.is_new = is_new
        self.has_history = not is_new
        #: The journal holds every row of this run's manifest: ``record_pending`` wrote
        #: them, or preflight found it written for the same batch fingerprint.
        self.pending_recorded = False
        self._group = GroupCommit(
            self._write_ops, clock=clock, max_delay=max_delay, max_batch=max_batch
        )
        self._lock_fd: int | None = None
        self._checkpointer: threading.Thread | None = None
        self._checkpointed_at = 0
        #: Number of row operations committed so far.
        self.ops_committed = 0

    # ----------------------------------------------------------------- opening

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        manifest_path: str,
        manifest_fingerprint: str,
        settings: Mapping[str, Any],
        max_delay: float = 0.002,
        max_batch: int = 512,
        fault_hook: FaultHook | None = None,
        clock: Clock | None = None,
    ) -> SqliteJournal:
        """Create the journal at ``path``, or open the one there for resuming.

        The manifest and settings are written only into a new journal; an existing one
        keeps its header (compare ``header`` and ``diff``, then ``update_header`` on
        ``--force``). Raises ``JournalError`` for anything unusable, saying what to do.
        ``clock`` (the system clock unless given) stamps rows and paces group commits.
        """
        if max_delay < 0 or max_batch < 1:
            raise ValueError("max_delay must be >= 0 and max_batch >= 1")
        path = Path(path)
        clock = clock or SystemClock()
        lock, writer, reader, is_new = open_writable(
            path,
            manifest_path=manifest_path,
            manifest_fingerprint=manifest_fingerprint,
            settings=settings,
            created_at=clock.wall(),
        )
        try:
            journal = cls(
                path,
                writer=writer,
                reader=reader,
                is_new=is_new,
                max_delay=max_delay,
                max_batch=max_batch,
                fault_hook=fault_hook,
                clock=clock,
            )
        except BaseException as exc:
            close_all(lock, writer, reader)
            if isinstance(exc, sqlite3.Error):
                raise unusable(path, exc) from exc
            raise
        journal._lock_fd = lock
        return journal

    @classmethod
    def open_readonly(cls, path: Path) -> SqliteJournal:
        """Open an existing journal for reading (``ibimport status`` / ``report``)."""
        path = Path(path)
        reader = open_readable(path)
        try:
            return cls(
                path,
                writer=None,
                reader=reader,
                is_new=False,
                max_delay=0.0,
                max_batch=1,
                fault_hook=None,
                clock=SystemClock(),
            )
        except BaseException as exc:
            close_all(None, reader)
            if isinstance(exc, sqlite3.Error):
                raise unusable(path, exc) from exc
            raise

    # ----------------------------------------------------------------- writing

    def adopt_tokens(self, rows: Iterable[tuple[int, str, str, str]]) -> int:
        """Under ``--force``: rows (row, name, version, token) whose token changed become
        ``pending`` under their new token, in one transaction; returns how many.

        A changed row is another request for the same image: it is sent (the listing a
        forced run takes first finds a standing build of it: ``exists``), never carried
        over as done under the old content, and its results show its new token. A row
        whose image FAILED and is fixed in the manifest (a new ``vmImportTaskId``) is how
        a migration recovers: it is imported again, a new build beside the failed one.
        """
        now = self._clock.wall()
        changed = 0
        with self._commit() as conn:
            for row, name, version, token in rows:
                adopted = conn.execute(
                    "UPDATE rows SET row = ?, client_token = ?, state = 'pending',"
                    " first_sent_at = NULL, error_code = '', error_message = '', updated_at = ?"
                    " WHERE name = ? AND semantic_version = ? AND client_token != ?",
                    (row, token, now, name, version, token),
                ).rowcount
                if adopted:
                    changed += 1
                    # What a wait learnt was of the old request's image: the new one's is
                    # not known yet, and a later wait follows it.
                    conn.execute(
                        "UPDATE followups SET image_status = '', image_reason = ''"
                        " WHERE name = ? AND semantic_version = ?",
                        (name, version),
                    )
        return changed

    def update_header(
        self,
        *,
        manifest_fingerprint: str,
        settings: Mapping[str, Any],
        manifest_path: str | None = None,
    ) -> None:
        """Adopt the current manifest and settings (after the user chose ``--force``)."""
        with self._writing() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute(
                    "UPDATE run SET manifest_fingerprint = ?, settings = ?, "
                    "manifest_path = COALESCE(?, manifest_path) WHERE id = 1",
                    (manifest_fingerprint, dump_settings(settings), manifest_path),
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        self.header = self._read_header()

    async def record_existing(
        self,
        arn_for: Callable[[str, str], str | None],
        *,
        belongs: Callable[[int], bool] | None,
        partition: str,
        listed_at: float | None = None,
    ) -> int:
        """Commit, at once, ``exists`` (with the ARN ``arn_for`` finds) for every row of the
        partition not yet done whose image already has a build (``succeeded`` for a row
        sent before without a known outcome: its call landed), and remember the partition
        as reconciled; returns how many rows were found. ``listed_at``: when the listing
        started (wall clock), to record the ``existing`` stage of the rows it found.

        Called once a complete listing is taken and before the partition's first import,
        so a run stopped before reaching such a row (Ctrl-C, SIGTERM, kill -9) leaves it
        ``exists`` in the journal and a resume never sends it: the listing is not taken
        again by a resume of a partition it already covered. The scan reads the journal
        in a worker thread (a million rows take seconds); the write is one short
        transaction, after which the partition counts as reconciled.
        """
        self._ensure_writable()
        found = await anyio.to_thread.run_sync(self._existing_rows, arn_for, belongs)
        settings = dict(self.header.settings)
        settings["reconciled"] = sorted({*settings.get("reconciled", ()), partition})
        now = self._clock.wall()
        with self._commit() as conn:
            # A row sent before without a known outcome (in_flight) whose build is listed:
            # its call landed. Any other row found: its image was already there.
            conn.executemany(
                "UPDATE rows SET state = CASE WHEN state = 'in_flight'"
                " AND first_sent_at IS NOT NULL THEN 'succeeded' ELSE 'exists' END,"
                " image_arn = ?, error_code = '', error_message = '', updated_at = ?"
                " WHERE name = ? AND semantic_version = ?",
                ((arn, now, name, version) for name, version, arn in found),
            )
            if listed_at is not None:
                outcome = RowStatus.EXISTS.value
                conn.executemany(
                    STAGE_SQL,
                    (
                        (name, version, StageName.EXISTING.value, listed_at, now, 1, outcome, "")
                        for name, version, _ in found
                    ),
                )
            conn.execute("UPDATE run SET settings = ? WHERE id = 1", (dump_settings(settings),))
        self.ops_committed += len(found)
        self.header = self._read_header()
        return len(found)

    def _existing_rows(
        self, arn_for: Callable[[str, str], str | None], belongs: Callable[[int], bool] | None
    ) -> list[tuple[str, str, str]]:
        """(name, version, ARN) of the unsettled rows whose image ``arn_for`` finds."""
        found: list[tuple[str, str, str]] = []
        for row in self.entries():
            if row.state.is_done or (belongs is not None and not belongs(row.row)):
                continue
            arn = arn_for(row.name, row.semantic_version)
            if arn is not None:
                found.append((row.name, row.semantic_version, arn))
        return found

    def record_run(
        self, *, started_at: float, figures: Mapping[str, Any], ended_at: float | None = None
    ) -> None:
        """Keep one run's figures and its span (wall clock; ``ended_at`` now unless given),
        so the report of a later run still shows them.

        Its own small transaction, outside the group commit (and its fault hook), once the
        run's rows are flushed.
        """
        ended = self._clock.wall() if ended_at is None else ended_at
        with self._writing() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute(
                    "INSERT INTO runs (started_at, ended_at, figures) VALUES (?, ?, ?)",
                    (started_at, ended, json.dumps(dict(figures), sort_keys=True)),
                )
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Run the group-commit flusher for the duration of the block, then flush.

        The body's own exception is re-raised unchanged (not wrapped in an
        ExceptionGroup); the final flush is shielded so an interrupted run still
        records what it finished.
        """
        if self._group.running:
            raise RuntimeError("journal.running() is already active")
        self._ensure_writable()
        body_failed = False
        try:
            async with self._group.flushing():
                try:
                    yield
                except BaseException:
                    body_failed = True
                    raise
        finally:
            with anyio.CancelScope(shield=True):
                try:
                    await self.flush()
                except JournalError:
                    if not body_failed:
                        raise

    async def mark_in_flight(
        self, *, row: int, name: str, semantic_version: str, client_token: str, attempt: int
    ) -> None:
        """Record that the row is about to be sent; returns once that is committed."""
        self._ensure_writable()
        now = self._clock.wall()
        await self._group.add_and_wait(
            (_MARK, (name, semantic_version, row, client_token, attempt, now, now))
        )
        if self._broken is not None:
            raise self._broken

    def record(self, result: RowResult) -> None:
        """Buffer a row's outcome; the next group commit writes it."""
        if result.resumed:
            return  # carried over from the journal itself: nothing new to write
        self._ensure_writable()
        self._group.add(
            (
                _RECORD,
                (
                    result.name,
                    result.semantic_version,
                    result.row,
                    result.client_token,
                    result.status.value,
                    result.attempts,
                    result.image_arn,
                    result.request_id,
                    result.error_code,
                    result.error_message,
                    self._clock.wall(),
                    result.account,
                    result.region,
                ),
            )
        )

    def stage_started(self, identity: tuple[str, str], stage: StageName, *, at: float) -> None:
        """Buffer: the row (name, semantic_version) entered ``stage`` at ``at`` (wall clock).

        Committed with the next group commit: with ``mark_in_flight``'s own when it comes
        just before it. Entering a stage again (a resume) restarts its record.
        """
        self._ensure_writable()
        name, version = identity
        self._group.add((_STAGE, (name, version, stage.value, at, None, 0, "", "")))

    def stage_ended(
        self,
        identity: tuple[str, str],
        stage: StageName,
        *,
        at: float,
        attempts: int,
        outcome: str,
        error_code: str = "",
        started_at: float | None = None,
    ) -> None:
        """Buffer: the row left ``stage`` at ``at`` after ``attempts`` calls, with ``outcome``
        (the stage's own word: a row status, an image status, a task state).

        The recorded start is kept; ``started_at`` is used only when none was recorded.
        """
        self._ensure_writable()
        name, version = identity
        begun = at if started_at is None else started_at
        self._group.add(
            (_STAGE, (name, version, stage.value, begun, at, attempts, str(outcome), error_code))
        )

    def record_pending(self, rows: Iterable[tuple[int, str, str, str]]) -> int:
        """Record ``(row, name, semantic_version, client_token)`` rows ``pending``, at once.

        For the pass that reads the manifest before the run (synchronous: no event loop
        yet), so a fresh journal holds every row before the first call without a second
        pass. One transaction, streamed from ``rows``: all of them or, if ``rows`` raises,
        none. Rows the journal already knows keep their state. Counts as one commit (the
        fault hook sees it). Returns how many rows were given.
        """
        self._ensure_writable()
        if self._group.running or self._group.pending:
            raise RuntimeError("record_pending() is for before the run, with nothing buffered")
        given = 0
        now = self._clock.wall()

        def values() -> Iterator[tuple[object, ...]]:
            nonlocal given
            for row, name, semantic_version, client_token in rows:
                given += 1
                yield (name, semantic_version, row, client_token, now)

        # Not through _write_batch: an error of ``rows`` (an unreadable manifest) is the
        # caller's to report as it is, and leaves the journal usable (and discardable).
        with self._commit() as conn:
            conn.executemany(PENDING_SQL, values())
        self.ops_committed += given
        self.pending_recorded = True
        return given

    async def flush(self) -> None:
        """Commit everything buffered so far."""
        if self._writer is None or self._closed:
            return
        await self._group.commit()
        if self._broken is not None:
            raise self._broken

    async def aclose(self) -> None:
        """Flush (unless the journal already failed) and close the file."""
        if self._closed:
            return
        try:
            if self._broken is None:
                await self.flush()
        finally:
            self.close()

    def discard(self) -> None:
        """Close, and delete the files if this run created the journal and sent nothing.

        A run refused before its first call (invalid manifest, unreadable file) leaves no
        journal behind, so the next attempt starts clean instead of resuming nothing.
        """
        self.close()
        if not self.is_new:
            return
        for suffix in ("", "-wal", "-shm", ".lock"):
            self.path.with_name(self.path.name + suffix).unlink(missing_ok=True)

    def close(self) -> None:
        """Close without flushing: for read-only journals, or after ``aclose`` failed."""
        if self._closed:
            return
        self._closed = True
        if self._checkpointer is not None:
            self._checkpointer.join()
        with self._read_lock:
            self._reader.close()
        if self._writer is not None:
            with self._write_lock:
                self._writer.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    # ----------------------------------------------------------------- internals

    def _write_ops(self, ops: list[Op]) -> None:
        """The group commit's writer: one batch, then a checkpoint when one is due."""
        if self._broken is None:
            self._write_batch(ops)
            self._maybe_checkpoint()

    def _maybe_checkpoint(self) -> None:
        """Every ``_CHECKPOINT_EVERY`` commits, copy the WAL into the database in a thread.

        Automatic checkpoints are off on the writer (they would run inside a commit, on
        the event loop, with an fsync); a PASSIVE checkpoint on a connection of its own
        never blocks the writer, and keeps the WAL from growing without bound.
        """
        if self.commits - self._checkpointed_at < _CHECKPOINT_EVERY:
            return
        if self._checkpointer is not None and self._checkpointer.is_alive():
            return
        self._checkpointed_at = self.commits
        self._checkpointer = threading.Thread(
            target=self._checkpoint, name="ibimport-journal-checkpoint", daemon=True
        )
        self._checkpointer.start()

    def _checkpoint(self) -> None:
        try:
            conn = connect(self.path, readonly=False)
            try:
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            finally:
                conn.close()
        except sqlite3.Error:
            pass  # a missed checkpoint only lets the WAL grow until the next one

    def _write_batch(self, ops: list[Op]) -> None:
        """Write one batch in a single transaction."""
        # StageName records touch only their own table: written after the rows' statements (which
        # keep their order), in one statement, however they interleave with them.
        stages = [params for kind, params in ops if kind == _STAGE]
        rows = [op for op in ops if op[0] != _STAGE] if stages else ops
        try:
            with self._commit() as conn:
                for kind, group in groupby(rows, key=lambda op: op[0]):
                    conn.executemany(_SQL_BY_KIND[kind], [params for _, params in group])
                if stages:
                    conn.executemany(STAGE_SQL, stages)
        except JournalError as exc:
            self._broken = exc
            raise
        except Exception as exc:
            self._broken = JournalError(
                f"cannot write the journal {self.path}: {exc}; the batch stops here. "
                "Fix the cause (disk full? file moved?) and run the same command again "
                "to resume from what was recorded"
            )
            raise self._broken from exc
        self.ops_committed += len(ops)
