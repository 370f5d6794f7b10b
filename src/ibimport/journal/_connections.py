"""The journal's two connections, the locks they are used under, and one write transaction.

Concurrency. A writer connection used only under ``_write_lock`` (by the group commit's
flusher on the event loop, or synchronously for a write made at once) and a reader used
under ``_read_lock`` by the reads (``_reads``). WAL lets the reader see the last committed
state while the writer commits, so ``get`` never blocks behind a commit; a read shows
committed state only (``await flush()`` first to read your own writes). Every SQLite
error leaves through here as a ``JournalError`` that says what to do. ``SqliteJournal``
and the parts it is made of (``_reads``, ``_followups``) build on ``JournalConnections``.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ibimport.errors import JournalError
from ibimport.flow.clock import Clock
from ibimport.journal._file import unusable
from ibimport.journal._model import RunHeader

__all__ = ["FaultHook", "JournalConnections", "exit_after_commits"]

#: Called in the writer thread with the 1-based number of the commit about to happen, after
#: the batch's statements and before COMMIT. Raising aborts that commit (the journal then
#: refuses further writes); ``os._exit`` simulates a crash between "sent" and "recorded".
FaultHook = Callable[[int], None]


def exit_after_commits(commits: int, *, exit_code: int = 137) -> FaultHook:
    """A fault hook that kills the process (no cleanup) instead of making commit ``commits+1``.

    Simulates a crash between "sent" and "recorded": the outcomes buffered in that batch
    are lost, the rows it marked were never sent.
    """

    def hook(commit_number: int) -> None:
        if commit_number > commits:
            os._exit(exit_code)

    return hook


class JournalConnections:
    """A journal's connections and their locks, its header, and whether it may still write."""

    header: RunHeader

    def __init__(
        self,
        path: Path,
        *,
        writer: sqlite3.Connection | None,
        reader: sqlite3.Connection,
        fault_hook: FaultHook | None,
        clock: Clock,
    ) -> None:
        """Take the connections ``_file`` opened; the header is read at once."""
        self.path = path
        self._writer = writer
        self._reader = reader
        self._write_lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._fault_hook = fault_hook
        self._clock = clock
        #: Set when a write failed: every later write raises it.
        self._broken: JournalError | None = None
        self._closed = False
        #: Number of commits of row batches made so far (for tests and benchmarks).
        self.commits = 0
        self.header = self._read_header()

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
            raise unusable(self._path, exc) from exc
