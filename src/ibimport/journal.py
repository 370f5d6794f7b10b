"""The journal that makes a run resumable: one SQLite file recording every row's state.

The runner talks to it through the small ``Journal`` protocol, so another store (a shared
database for several machines) can be added later without touching the runner.

Durability model. A row is recorded ``in_flight`` and committed *before* its first call
(``mark_in_flight`` returns only once that commit is done); outcomes (``record``) are
buffered and written by the next commit. Commits are grouped: every caller appends to the
batch that is forming, and one flusher task commits it, at most once per ``max_delay``
(sooner when ``max_batch`` long). A commit runs on the event loop: with WAL and
synchronous=NORMAL it only hands pages to the OS; the fsyncs happen in checkpoints, which
run every few hundred commits in a thread of their own. A crash therefore loses at most
the uncommitted batch of outcomes, which is harmless: those rows are still ``in_flight``
in the journal and are re-sent with the same clientToken.

Concurrency. Two connections: a writer used only under ``_write_lock`` (by the flusher on
the event loop, or synchronously for header updates) and a reader used under
``_read_lock`` by ``get``/``counts``/``entries``/``diff``. WAL lets the reader see the last
committed state while the writer commits, so ``get`` never blocks behind a commit.
``get`` shows committed state only: ``await flush()`` first to read your own writes.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from itertools import groupby, islice
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import anyio
import anyio.abc

from ibimport.errors import JournalError
from ibimport.results import RowResult, RowStatus

__all__ = [
    "APPLICATION_ID",
    "SCHEMA_VERSION",
    "FaultHook",
    "Journal",
    "JournalEntry",
    "ManifestDiff",
    "NullJournal",
    "RunHeader",
    "SqliteJournal",
    "exit_after_commits",
]

#: ``PRAGMA application_id`` of an ibimport journal: "IBJN" in ASCII.
APPLICATION_ID = 0x49424A4E
#: ``PRAGMA user_version``: bump it (and add a migration in ``_migrate``) when the schema changes.
SCHEMA_VERSION = 1

#: Called in the writer thread with the 1-based number of the commit about to happen, after
#: the batch's statements and before COMMIT. Raising aborts that commit (the journal then
#: refuses further writes); ``os._exit`` simulates a crash between "sent" and "recorded".
FaultHook = Callable[[int], None]

_SQLITE_MAGIC = b"SQLite format 3\x00"
_DONE_STATES = (RowStatus.SUCCEEDED.value, RowStatus.EXISTS.value)

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

# In JournalEntry's field order: _entry() builds entries positionally.
_COLUMNS = (
    "row, name, semantic_version, client_token, state, attempts, image_arn, request_id,"
    " error_code, error_message, first_sent_at, updated_at"
)
_GET_SQL = f"SELECT {_COLUMNS} FROM rows WHERE name = ? AND semantic_version = ?"
_STATUS = {status.value: status for status in RowStatus}

# first_sent_at is when this clientToken was first sent (the token-TTL clock): kept while
# the token stays the same, restarted when the row's content (and so its token) changed.
_MARK_SQL = """
INSERT INTO rows (name, semantic_version, row, client_token, state, attempts,
                  first_sent_at, updated_at)
VALUES (?, ?, ?, ?, 'in_flight', ?, ?, ?)
ON CONFLICT (name, semantic_version) DO UPDATE SET
    row = excluded.row,
    client_token = excluded.client_token,
    state = 'in_flight',
    attempts = excluded.attempts,
    first_sent_at = CASE
        WHEN rows.client_token = excluded.client_token AND rows.first_sent_at IS NOT NULL
        THEN rows.first_sent_at ELSE excluded.first_sent_at END,
    updated_at = excluded.updated_at
"""

# An outcome never downgrades a done row sent with the same token (a late or duplicate
# report must not make a resume send it again), and "skipped"/"pending" carry no news
# about a row the journal already knows, so they only insert.
_RECORD_SQL = f"""
INSERT INTO rows (name, semantic_version, row, client_token, state, attempts, image_arn,
                  request_id, error_code, error_message, first_sent_at, updated_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?)
ON CONFLICT (name, semantic_version) DO UPDATE SET
    row = excluded.row,
    client_token = excluded.client_token,
    state = excluded.state,
    attempts = excluded.attempts,
    image_arn = excluded.image_arn,
    request_id = excluded.request_id,
    error_code = excluded.error_code,
    error_message = excluded.error_message,
    first_sent_at = CASE WHEN rows.client_token = excluded.client_token
                         THEN rows.first_sent_at ELSE NULL END,
    updated_at = excluded.updated_at
WHERE excluded.state NOT IN ('skipped', 'pending')
  AND NOT (rows.state IN {_DONE_STATES!r} AND excluded.state NOT IN {_DONE_STATES!r}
           AND rows.client_token = excluded.client_token)
"""

# A fresh journal's rows before the run (``record_pending``): rows it knows keep their state.
_PENDING_SQL = """
INSERT INTO rows (name, semantic_version, row, client_token, state, updated_at)
VALUES (?, ?, ?, ?, 'pending', ?)
ON CONFLICT (name, semantic_version) DO NOTHING
"""

_MARK, _RECORD = 0, 1
_CHECKPOINT_EVERY = 200  # commits between checkpoints: a WAL of a few MB at most
_SQL_BY_KIND = (_MARK_SQL, _RECORD_SQL)
_Op = tuple[int, tuple[object, ...]]


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """What the journal knows about one row (identity: name + semantic_version)."""

    row: int
    name: str
    semantic_version: str
    client_token: str
    state: RowStatus
    attempts: int
    image_arn: str
    request_id: str
    error_code: str
    error_message: str
    #: Wall-clock time this clientToken was first sent; None if it never was.
    first_sent_at: float | None
    updated_at: float

    def to_result(self, *, resumed: bool = False) -> RowResult:
        """The row as a ``RowResult``; pass ``resumed=True`` for rows carried into a new run."""
        return RowResult(
            row=self.row,
            name=self.name,
            semantic_version=self.semantic_version,
            status=self.state,
            client_token=self.client_token,
            image_arn=self.image_arn,
            request_id=self.request_id,
            attempts=self.attempts,
            error_code=self.error_code,
            error_message=self.error_message,
            resumed=resumed,
        )


@dataclass(frozen=True, slots=True)
class RunHeader:
    """The run a journal belongs to: which manifest, with which settings."""

    manifest_path: str
    manifest_fingerprint: str
    settings: dict[str, Any]
    created_at: float
    schema_version: int


#: (row, name, semantic_version)
DiffRow = tuple[int, str, str]


@dataclass(frozen=True, slots=True)
class ManifestDiff:
    """How the current manifest differs from the one journalled.

    The lists hold at most ``keep`` rows each (in row order); the ``n_*`` counts are exact.
    """

    changed: list[DiffRow] = field(default_factory=list)
    added: list[DiffRow] = field(default_factory=list)
    removed: list[DiffRow] = field(default_factory=list)
    n_changed: int = 0
    n_added: int = 0
    n_removed: int = 0

    @property
    def is_empty(self) -> bool:
        """True when resuming with this manifest needs no ``--force``."""
        return not (self.n_changed or self.n_added or self.n_removed)

    def describe(self, limit: int = 10) -> list[str]:
        """Human lines explaining the difference, at most ``limit`` examples per kind."""
        lines: list[str] = []
        for what, rows, count in (
            (
                "changed (different content, so a different clientToken)",
                self.changed,
                self.n_changed,
            ),
            ("added", self.added, self.n_added),
            ("removed", self.removed, self.n_removed),
        ):
            if not count:
                continue
            lines.append(f"{count} row{'s' if count != 1 else ''} {what}:")
            shown = rows[:limit]
            lines.extend(f"  row {row}: {name} {version}" for row, name, version in shown)
            if count > len(shown):
                lines.append(f"  ... and {count - len(shown)} more")
        return lines


@runtime_checkable
class Journal(Protocol):
    """What the runner needs from a journal.

    Wrap the run in ``async with journal.running():`` so commits are grouped by a
    background flusher; without it every ``mark_in_flight`` commits on its own.
    """

    #: False when no earlier run wrote this journal: then ``get`` can only find rows this
    #: run wrote, and the runner skips the per-row lookup (about 5% of a row's CPU).
    has_history: bool

    def get(self, name: str, semantic_version: str) -> JournalEntry | None: ...

    def running(self) -> AbstractAsyncContextManager[None]: ...

    async def mark_in_flight(
        self, *, row: int, name: str, semantic_version: str, client_token: str, attempt: int
    ) -> None: ...

    def record(self, result: RowResult) -> None: ...

    async def flush(self) -> None: ...

    async def aclose(self) -> None: ...


class NullJournal:
    """A journal that remembers nothing: for ``--no-journal`` and benchmarks."""

    has_history = False

    def get(self, name: str, semantic_version: str) -> JournalEntry | None:
        return None

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        yield

    async def mark_in_flight(
        self, *, row: int, name: str, semantic_version: str, client_token: str, attempt: int
    ) -> None:
        return None

    def record(self, result: RowResult) -> None:
        return None

    async def flush(self) -> None:
        return None

    async def aclose(self) -> None:
        return None


def exit_after_commits(commits: int, *, exit_code: int = 137) -> FaultHook:
    """A fault hook that kills the process (no cleanup) instead of making commit ``commits+1``.

    Simulates a crash between "sent" and "recorded": the outcomes buffered in that batch
    are lost, the rows it marked were never sent.
    """

    def hook(commit_number: int) -> None:
        if commit_number > commits:
            os._exit(exit_code)

    return hook


class _Batch:
    """Operations committed together; ``done`` is set once they are (or failed to be)."""

    __slots__ = ("done", "full", "ops")

    def __init__(self) -> None:
        self.ops: list[_Op] = []
        self.done: anyio.Event | None = None
        self.full: anyio.Event | None = None


class SqliteJournal:
    """The embedded journal: one SQLite file in WAL mode, written by group commit."""

    header: RunHeader
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
        clock: Callable[[], float],
    ) -> None:
        """Use ``open`` or ``open_readonly``; this only wires the parts together."""
        self.path = path
        self.is_new = is_new
        self.has_history = not is_new
        #: The journal holds every row of this run's manifest: ``record_pending`` wrote
        #: them, or preflight found it written for the same batch fingerprint.
        self.pending_recorded = False
        self._writer = writer
        self._reader = reader
        self._write_lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._max_delay = max_delay
        self._max_batch = max_batch
        self._fault_hook = fault_hook
        self._clock = clock
        self._batch = _Batch()
        self._wake: anyio.Event | None = None
        self._running = False
        self._broken: JournalError | None = None
        self._closed = False
        self._lock_fd: int | None = None
        self._checkpointer: threading.Thread | None = None
        self._checkpointed_at = 0
        #: Number of commits of row batches made so far (for tests and benchmarks).
        self.commits = 0
        #: Number of row operations committed so far.
        self.ops_committed = 0
        self.header = self._read_header()

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
        clock: Callable[[], float] = time.time,
    ) -> SqliteJournal:
        """Create the journal at ``path``, or open the one there for resuming.

        The manifest and settings are written only into a new journal; an existing one
        keeps its header (compare ``header`` and ``diff``, then ``update_header`` on
        ``--force``). Raises ``JournalError`` for anything unusable, saying what to do.
        """
        if max_delay < 0 or max_batch < 1:
            raise ValueError("max_delay must be >= 0 and max_batch >= 1")
        path = Path(path)
        exists = _check_file(path, must_exist=False)
        writer = reader = None
        lock = _lock_exclusively(path)
        try:
            if not exists:
                _create_aside(path, manifest_path, manifest_fingerprint, settings, clock())
            writer = _connect(path, readonly=False)
            is_new = not exists or _is_blank(writer)
            if exists and not is_new:
                # Before anything is changed: never switch a foreign database to WAL.
                _validate(writer, path)
            _configure_writer(writer, path)
            if exists and is_new:
                _create(writer, manifest_path, manifest_fingerprint, settings, clock())
            reader = _connect(path, readonly=False)
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
            journal._lock_fd = lock
            return journal
        except BaseException as exc:
            os.close(lock)
            for conn in (writer, reader):
                if conn is not None:
                    conn.close()
            if isinstance(exc, sqlite3.Error):
                raise _unusable(path, exc) from exc
            raise

    @classmethod
    def open_readonly(cls, path: Path) -> SqliteJournal:
        """Open an existing journal for reading (``ibimport status`` / ``report``)."""
        path = Path(path)
        _check_file(path, must_exist=True)
        reader = None
        try:
            reader = _connect(path, readonly=True)
            if _is_blank(reader):
                raise JournalError(
                    f"{path} is an empty SQLite database, not an ibimport journal; "
                    "check the path (the journal of a run is the --journal it was given)"
                )
            _validate(reader, path)
            return cls(
                path,
                writer=None,
                reader=reader,
                is_new=False,
                max_delay=0.0,
                max_batch=1,
                fault_hook=None,
                clock=time.time,
            )
        except BaseException as exc:
            if reader is not None:
                reader.close()
            if isinstance(exc, sqlite3.Error):
                raise _unusable(path, exc) from exc
            raise

    # ----------------------------------------------------------------- reading

    def get(self, name: str, semantic_version: str) -> JournalEntry | None:
        """The committed state of one row, or None if the journal has never seen it."""
        # Called for every row when a big run resumes, so it skips the helpers.
        if self._closed:
            raise JournalError(f"the journal {self.path} is closed")
        try:
            with self._read_lock:
                found = self._reader.execute(_GET_SQL, (name, semantic_version)).fetchone()
        except sqlite3.Error as exc:
            raise _unusable(self.path, exc) from exc
        return None if found is None else _entry(found)

    def entries(self, *, page: int = 1000) -> Iterator[JournalEntry]:
        """Every row in row order, read a page at a time (bounded memory, no long lock)."""
        after: tuple[int, str, str] | None = None
        while True:
            with self._reading() as conn:
                if after is None:
                    found = conn.execute(
                        f"SELECT {_COLUMNS} FROM rows ORDER BY row, name, semantic_version LIMIT ?",
                        (page,),
                    ).fetchall()
                else:
                    found = conn.execute(
                        f"SELECT {_COLUMNS} FROM rows "
                        "WHERE (row, name, semantic_version) > (?, ?, ?) "
                        "ORDER BY row, name, semantic_version LIMIT ?",
                        (*after, page),
                    ).fetchall()
            for values in found:
                yield _entry(values)
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

    def diff(self, rows: Iterable[tuple[int, str, str, str]], *, keep: int = 1000) -> ManifestDiff:
        """Compare the current manifest's ``(row, name, version, token)`` with the journal.

        Same identity with another token is *changed*; unknown to the journal is *added*;
        journalled but not in ``rows`` is *removed*. ``rows`` is streamed into a temporary
        table, so memory stays bounded whatever the manifest's size.
        """
        with self._reading() as conn:
            conn.execute("DROP TABLE IF EXISTS temp.manifest")
            conn.execute(
                "CREATE TEMP TABLE manifest (row INTEGER NOT NULL, name TEXT NOT NULL, "
                "semantic_version TEXT NOT NULL, client_token TEXT NOT NULL, "
                "PRIMARY KEY (name, semantic_version))"
            )
            try:
                iterator = iter(rows)
                while chunk := list(islice(iterator, 5000)):
                    # A duplicate identity keeps its first row; the manifest reports it.
                    conn.executemany(
                        "INSERT OR IGNORE INTO temp.manifest VALUES (?, ?, ?, ?)", chunk
                    )
                changed = "FROM temp.manifest m JOIN main.rows r USING (name, semantic_version) "
                changed += "WHERE m.client_token <> r.client_token"
                added = "FROM temp.manifest m LEFT JOIN main.rows r USING (name, semantic_version) "
                added += "WHERE r.name IS NULL"
                removed = "FROM main.rows m LEFT JOIN temp.manifest t "
                removed += "USING (name, semantic_version) WHERE t.name IS NULL"
                lists: list[list[DiffRow]] = []
                totals: list[int] = []
                for where in (changed, added, removed):
                    (total,) = conn.execute(f"SELECT COUNT(*) {where}").fetchone()
                    found = conn.execute(
                        f"SELECT m.row, m.name, m.semantic_version {where} "
                        "ORDER BY m.row, m.name, m.semantic_version LIMIT ?",
                        (keep,),
                    ).fetchall()
                    totals.append(total)
                    lists.append([(r, n, v) for r, n, v in found])
            finally:
                conn.execute("DROP TABLE IF EXISTS temp.manifest")
        return ManifestDiff(
            changed=lists[0],
            added=lists[1],
            removed=lists[2],
            n_changed=totals[0],
            n_added=totals[1],
            n_removed=totals[2],
        )

    # ----------------------------------------------------------------- writing

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
                    (manifest_fingerprint, _dump_settings(settings), manifest_path),
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        self.header = self._read_header()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Run the group-commit flusher for the duration of the block, then flush.

        The body's own exception is re-raised unchanged (not wrapped in an
        ExceptionGroup); the final flush is shielded so an interrupted run still
        records what it finished.
        """
        if self._running:
            raise RuntimeError("journal.running() is already active")
        self._ensure_writable()
        caught: BaseException | None = None
        try:
            async with anyio.create_task_group() as tg:
                self._wake = anyio.Event()
                await tg.start(self._flush_loop)
                self._running = True
                try:
                    yield
                except BaseException as exc:
                    # Raised outside the task group below, so callers see it as is.
                    caught = exc
                finally:
                    self._running = False
                    tg.cancel_scope.cancel()
        finally:
            self._wake = None
            with anyio.CancelScope(shield=True):
                try:
                    await self.flush()
                except JournalError:
                    if caught is None:
                        raise
        if caught is not None:
            raise caught

    async def mark_in_flight(
        self, *, row: int, name: str, semantic_version: str, client_token: str, attempt: int
    ) -> None:
        """Record that the row is about to be sent; returns once that is committed."""
        self._ensure_writable()
        now = self._clock()
        batch = self._add((_MARK, (name, semantic_version, row, client_token, attempt, now, now)))
        if batch.done is None:
            batch.done = anyio.Event()
        done = batch.done
        if not self._running:
            await self._commit_batch()
        await done.wait()
        if self._broken is not None:
            raise self._broken

    def record(self, result: RowResult) -> None:
        """Buffer a row's outcome; the next group commit writes it."""
        if result.resumed:
            return  # carried over from the journal itself: nothing new to write
        self._ensure_writable()
        self._add(
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
                    self._clock(),
                ),
            )
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
        if self._running or self._batch.ops:
            raise RuntimeError("record_pending() is for before the run, with nothing buffered")
        given = 0
        now = self._clock()

        def values() -> Iterator[tuple[object, ...]]:
            nonlocal given
            for row, name, semantic_version, client_token in rows:
                given += 1
                yield (name, semantic_version, row, client_token, now)

        # Not through _write_batch: an error of ``rows`` (an unreadable manifest) is the
        # caller's to report as it is, and leaves the journal usable (and discardable).
        with self._commit() as conn:
            conn.executemany(_PENDING_SQL, values())
        self.ops_committed += given
        self.pending_recorded = True
        return given

    async def flush(self) -> None:
        """Commit everything buffered so far."""
        if self._writer is None or self._closed:
            return
        await self._commit_batch()
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

    def _add(self, op: _Op) -> _Batch:
        """Append to the forming batch and nudge the flusher: the per-row hot path."""
        batch = self._batch
        ops = batch.ops
        if not ops and self._wake is not None:
            self._wake.set()
        ops.append(op)
        if len(ops) >= self._max_batch and batch.full is not None:
            batch.full.set()
        return batch

    async def _flush_loop(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        """Commit the forming batch, at most one commit per ``max_delay`` (or when full).

        Pacing commits (rather than delaying each batch by ``max_delay``) keeps a lone
        mark's wait down to one commit while a busy run still shares each commit among
        everything that arrived in the last ``max_delay``.
        """
        task_status.started()
        last_commit = -self._max_delay
        while True:
            wake = self._wake
            assert wake is not None
            await wake.wait()  # idle: no spinning while nothing is buffered
            self._wake = anyio.Event()
            batch = self._batch
            if not batch.ops:
                continue
            delay = last_commit + self._max_delay - time.monotonic()
            if delay > 0 and len(batch.ops) < self._max_batch:
                batch.full = anyio.Event()
                with anyio.move_on_after(delay):
                    await batch.full.wait()
            last_commit = time.monotonic()
            await self._commit_batch()
            if self._batch.ops:
                self._wake.set()

    async def _commit_batch(self) -> None:
        """Commit the forming batch.

        Synchronous inside, on the event loop: no other task runs between swapping the
        batch out and writing it, so a cancelled flusher can never lose a batch and two
        commits never overlap. In WAL mode with synchronous=NORMAL a commit only hands
        pages to the OS (about 0.1 ms for a batch): cheaper than a thread hop, and the GIL
        hand-offs a thread costs slow every socket. The fsyncs are in the checkpoint,
        which runs in a thread of its own.
        """
        batch = self._batch
        if not batch.ops:
            return
        self._batch = _Batch()
        try:
            if self._broken is None:
                self._write_batch(batch.ops)
                self._maybe_checkpoint()
        except Exception:
            pass  # kept in self._broken: every waiter and later call raises it
        finally:
            if batch.done is not None:
                batch.done.set()

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
            conn = _connect(self.path, readonly=False)
            try:
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            finally:
                conn.close()
        except sqlite3.Error:
            pass  # a missed checkpoint only lets the WAL grow until the next one

    def _write_batch(self, ops: list[_Op]) -> None:
        """Write one batch in a single transaction."""
        try:
            with self._commit() as conn:
                for kind, group in groupby(ops, key=lambda op: op[0]):
                    conn.executemany(_SQL_BY_KIND[kind], [params for _, params in group])
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

    @contextmanager
    def _commit(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: committed (and counted) if the body returns, else rolled back.

        The fault hook runs after the body's statements and before COMMIT.
        """
        with self._writing() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                if self._fault_hook is not None:
                    self._fault_hook(self.commits + 1)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        self.commits += 1

    def _ensure_writable(self) -> None:
        if self._broken is not None:
            raise self._broken
        if self._writer is None:
            raise JournalError(f"the journal {self.path} was opened read-only")
        if self._closed:
            raise JournalError(f"the journal {self.path} is closed")

    def _reading(self) -> _Locked:
        if self._closed:
            raise JournalError(f"the journal {self.path} is closed")
        return _Locked(self._read_lock, self._reader, self.path)

    def _writing(self) -> _Locked:
        if self._writer is None:
            raise JournalError(f"the journal {self.path} was opened read-only")
        if self._closed:
            raise JournalError(f"the journal {self.path} is closed")
        return _Locked(self._write_lock, self._writer, self.path)

    def _read_header(self) -> RunHeader:
        with self._reading() as conn:
            found = conn.execute(
                "SELECT manifest_path, manifest_fingerprint, settings, created_at FROM run"
            ).fetchone()
            (version,) = conn.execute("PRAGMA user_version").fetchone()
        if found is None:
            raise JournalError(
                f"{self.path} has no run header (damaged journal); move it aside or pass "
                "another --journal path to start over"
            )
        path, fingerprint, settings, created_at = found
        return RunHeader(
            manifest_path=path,
            manifest_fingerprint=fingerprint,
            settings=json.loads(settings),
            created_at=created_at,
            schema_version=version,
        )


class _Locked:
    """``with`` a connection under its lock, translating SQLite errors to JournalError."""

    __slots__ = ("_conn", "_lock", "_path")

    def __init__(self, lock: threading.Lock, conn: sqlite3.Connection, path: Path) -> None:
        self._lock = lock
        self._conn = conn
        self._path = path

    def __enter__(self) -> sqlite3.Connection:
        self._lock.acquire()
        return self._conn

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        self._lock.release()
        if isinstance(exc, sqlite3.Error):
            raise _unusable(self._path, exc) from exc


# --------------------------------------------------------------------- file checks


def _lock_exclusively(path: Path) -> int:
    """Hold an advisory lock beside the journal: one writing run per journal at a time.

    Two runs sharing a journal would send every row twice (harmless to the service, with
    the same tokens, but wasteful and confusing). The kernel drops the lock when the
    process dies, so a kill -9 never leaves a stale lock behind.
    """
    lock_path = path.with_name(path.name + ".lock")
    try:
        fd = os.open(lock_path, os.O_CREAT | os.O_RDWR, 0o600)
    except OSError as exc:
        raise JournalError(f"cannot create the journal lock {lock_path}: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise JournalError(
            f"another ibimport run is using the journal {path}; wait for it to finish, "
            "or give this run another --journal"
        ) from None
    return fd


def _check_file(path: Path, *, must_exist: bool) -> bool:
    """Reject what is plainly not a journal before SQLite sees it; True if the file exists.

    Reading the header here (before any connection) is safe: closing another descriptor
    of an open SQLite file would drop that connection's POSIX locks.
    """
    try:
        with path.open("rb") as file:
            head = file.read(100)
    except FileNotFoundError:
        if must_exist:
            raise JournalError(
                f"no journal at {path}; a journal is created by `ibimport run` "
                "(next to the manifest unless --journal was given)"
            ) from None
        if not path.parent.is_dir():
            raise JournalError(
                f"cannot create the journal {path}: directory {path.parent} does not exist"
            ) from None
        return False
    except IsADirectoryError:
        raise JournalError(f"the journal path {path} is a directory; pass a file path") from None
    except OSError as exc:
        raise JournalError(f"cannot read the journal {path}: {exc.strerror or exc}") from None
    if not head:
        raise JournalError(
            f"the journal {path} is empty (truncated?); it cannot tell which rows were done. "
            "Move it aside (or pass another --journal path) to start a new journal"
        )
    if len(head) < 100 or not head.startswith(_SQLITE_MAGIC):
        raise JournalError(
            f"{path} is not an ibimport journal (not an SQLite database: corrupt, or the "
            "wrong file); move it aside or pass another --journal path"
        )
    return True


def _connect(path: Path, *, readonly: bool) -> sqlite3.Connection:
    if readonly:
        conn = sqlite3.connect(
            f"{path.resolve().as_uri()}?mode=ro",
            uri=True,
            isolation_level=None,
            check_same_thread=False,
        )
    else:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout = 5000")
    return conn


def _configure_writer(conn: sqlite3.Connection, path: Path) -> None:
    (mode,) = conn.execute("PRAGMA journal_mode = WAL").fetchone()
    if str(mode).lower() != "wal":
        raise JournalError(
            f"cannot use WAL mode for the journal {path} (network filesystem?); "
            "put --journal on a local disk"
        )
    # NORMAL in WAL: a commit is safe once it reaches the OS, so a killed process
    # (kill -9, OOM, crash) loses nothing committed; only a power loss or kernel crash
    # may lose the last commits before a checkpoint. That is harmless here (those rows
    # are re-sent with the same clientToken) and saves an fsync per commit.
    conn.execute("PRAGMA synchronous = NORMAL")
    # Checkpoints (the only fsyncs) run in their own thread: see _maybe_checkpoint.
    conn.execute("PRAGMA wal_autocheckpoint = 0")


def _is_blank(conn: sqlite3.Connection) -> bool:
    """A valid SQLite file with nothing in it (e.g. a creation interrupted before commit)."""
    (app_id,) = conn.execute("PRAGMA application_id").fetchone()
    (tables,) = conn.execute("SELECT COUNT(*) FROM sqlite_schema").fetchone()
    return bool(app_id == 0 and tables == 0)


def _validate(conn: sqlite3.Connection, path: Path) -> None:
    """Refuse foreign, newer and damaged files, each with a way forward."""
    (app_id,) = conn.execute("PRAGMA application_id").fetchone()
    if app_id != APPLICATION_ID:
        raise JournalError(
            f"{path} is an SQLite database but not an ibimport journal; "
            "pass another --journal path (or move that file aside)"
        )
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    if version > SCHEMA_VERSION:
        raise JournalError(
            f"the journal {path} was written by a newer ibimport (schema {version}; this one "
            f"reads up to {SCHEMA_VERSION}); upgrade ibimport or use another --journal path"
        )
    if version < SCHEMA_VERSION:
        _migrate(conn, path, version)
    (check,) = conn.execute("PRAGMA quick_check(1)").fetchone()
    if check != "ok":
        raise JournalError(
            f"the journal {path} is damaged ({check}); move it aside or pass another "
            "--journal path (rows already imported will then be found by their clientToken)"
        )


def _migrate(conn: sqlite3.Connection, path: Path, version: int) -> None:
    """Upgrade an older schema in place. Schema 1 is the first: anything older is damaged."""
    raise JournalError(
        f"the journal {path} has an unknown schema version {version}; move it aside or "
        "pass another --journal path"
    )


def _create(
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
        conn.execute(
            "INSERT INTO run VALUES (1, ?, ?, ?, ?)",
            (manifest_path, manifest_fingerprint, _dump_settings(settings), created_at),
        )
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _create_aside(
    path: Path,
    manifest_path: str,
    manifest_fingerprint: str,
    settings: Mapping[str, Any],
    created_at: float,
) -> None:
    """Lay out a new journal beside ``path``, then rename it into place.

    So a journal file that exists is always complete: a kill while creating it leaves no
    empty file at ``path`` (which the next run would have to refuse as truncated).
    """
    temporary = path.with_name(f".{path.name}.{os.getpid()}.new")
    try:
        # Private whatever the umask: SQLite gives the -wal and -shm files the same mode.
        os.close(os.open(temporary, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o600))
        os.chmod(temporary, 0o600)  # O_CREAT's mode does not apply to a leftover file
        conn = sqlite3.connect(temporary, isolation_level=None)
        try:
            _create(conn, manifest_path, manifest_fingerprint, settings, created_at)
        finally:
            conn.close()
        os.replace(temporary, path)
    except BaseException as exc:
        temporary.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise JournalError(f"cannot create the journal {path}: {exc.strerror}") from None
        raise


def _dump_settings(settings: Mapping[str, Any]) -> str:
    return json.dumps(dict(settings), sort_keys=True, default=str)


def _entry(values: tuple[Any, ...]) -> JournalEntry:
    row, name, version, token, state, attempts, arn, request_id, code, message, first, upd = values
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
    )


def _unusable(path: Path, exc: sqlite3.Error) -> JournalError:
    """Translate an SQLite error into what the user can do about it."""
    text = str(exc)
    if isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError):
        return JournalError(
            f"the journal {path} is damaged or not a journal ({text}); move it aside or pass "
            "another --journal path"
        )
    if "locked" in text or "busy" in text:
        return JournalError(
            f"the journal {path} is locked by another process ({text}); wait for the other "
            "ibimport run to finish, or pass another --journal path"
        )
    return JournalError(
        f"cannot use the journal {path}: {text}; check the file's permissions and the free "
        "disk space, or pass another --journal path"
    )
