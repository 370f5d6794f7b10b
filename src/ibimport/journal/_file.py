"""The journal's file: one writer at a time, and a refusal for anything that is no journal.

Every refusal is a ``JournalError`` that names the file and says what to do: a corrupt,
truncated, foreign or newer journal is never silently restarted from zero.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import os
import shutil
import sqlite3
import stat
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from ibimport.domain.results import RowStatus
from ibimport.errors import JournalBusy, JournalError
from ibimport.journal._schema import (
    APPLICATION_ID,
    FIRST_SCHEMA_VERSION,
    SCHEMA_VERSION,
    lay_out,
    upgrade,
)

__all__ = ["close_all", "connect", "idle", "open_readable", "open_writable", "unusable"]

_SQLITE_MAGIC = b"SQLite format 3\x00"
_KNOWN_STATES = frozenset(status.value for status in RowStatus)


def open_writable(
    path: Path,
    *,
    manifest_path: str,
    manifest_fingerprint: str,
    settings: Mapping[str, Any],
    created_at: float,
) -> tuple[int, sqlite3.Connection, sqlite3.Connection, bool]:
    """Lock the journal, check it, create it if need be, and connect a writer and a reader.

    Returns ``(lock, writer, reader, is_new)``; hold ``lock`` (a descriptor) as long as the
    writer. A new journal gets the manifest and settings as its header.
    """
    exists = check_file(path, must_exist=False)
    writer = reader = None
    lock = lock_exclusively(path)
    try:
        if not exists:
            create_aside(path, manifest_path, manifest_fingerprint, settings, created_at)
        writer = connect(path, readonly=False)
        is_new = not exists or is_blank(writer)
        if exists and not is_new:
            # Before anything is changed: never switch a foreign database to WAL.
            validate(writer, path)
        configure_writer(writer, path)
        if exists and not is_new:
            (version,) = writer.execute("PRAGMA user_version").fetchone()
            upgrade(writer, version)
        if exists and is_new:
            lay_out(writer, manifest_path, manifest_fingerprint, settings, created_at)
        reader = connect(path, readonly=False)
    except BaseException as exc:
        close_all(lock, writer, reader)
        if isinstance(exc, sqlite3.Error):
            raise unusable(path, exc) from exc
        raise
    return lock, writer, reader, is_new


def open_readable(path: Path) -> sqlite3.Connection:
    """Connect read-only to an existing journal, after the same checks as for writing."""
    check_file(path, must_exist=True)
    reader = None
    try:
        reader = connect(_readable_copy(path), readonly=True)
        if is_blank(reader):
            raise JournalError(
                f"{path} is an empty SQLite database, not an ibimport journal; "
                "check the path (the journal of a run is the --journal it was given)"
            )
        validate(reader, path)
    except BaseException as exc:
        close_all(None, reader)
        if isinstance(exc, sqlite3.Error):
            raise unusable(path, exc) from exc
        raise
    return reader


def _readable_copy(path: Path) -> Path:
    """``path``, or a private copy of it when its folder is read-only.

    A reader of a WAL journal needs its ``-shm`` file, which SQLite cannot create in a
    read-only folder (a journal copied from another machine, a read-only mount): it reads
    a copy of the journal and its WAL instead, removed when the process ends.
    """
    if os.access(path.parent, os.W_OK | os.X_OK):
        return path
    folder = Path(tempfile.mkdtemp(prefix="ibimport-journal-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    copy = folder / path.name
    try:
        shutil.copyfile(path, copy)
        wal = path.with_name(path.name + "-wal")
        if wal.exists():
            shutil.copyfile(wal, copy.with_name(copy.name + "-wal"))
    except OSError as exc:
        raise JournalError(f"cannot read the journal {path}: {exc.strerror or exc}") from None
    return copy


def close_all(lock: int | None, *conns: sqlite3.Connection | None) -> None:
    """Undo an open that failed half-way: release the lock, close the connections."""
    if lock is not None:
        os.close(lock)
    for conn in conns:
        if conn is not None:
            conn.close()


def lock_exclusively(path: Path) -> int:
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
        raise JournalBusy(
            f"another ibimport run is using the journal {path}; wait for it to finish, "
            "or give this run another --journal"
        ) from None
    return fd


@contextlib.contextmanager
def idle(path: Path) -> Iterator[bool]:
    """Whether no run is using the journal at ``path`` (its lock held meanwhile, if free).

    For readers that would tidy what a killed run left beside its outputs: never while a
    live run may be writing them. A journal without a lock file never had a writer.
    """
    lock_path = path.with_name(path.name + ".lock")
    try:
        fd = os.open(lock_path, os.O_RDWR)
    except FileNotFoundError:
        yield True
        return
    except OSError:
        yield False
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def check_file(path: Path, *, must_exist: bool) -> bool:
    """Reject what is plainly not a journal before SQLite sees it; True if the file exists.

    Reading the header here (before any connection) is safe: closing another descriptor
    of an open SQLite file would drop that connection's POSIX locks.
    """
    try:
        mode = path.stat().st_mode
        if not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):
            # Opening a FIFO would wait for a writer, forever: refused for what it is.
            raise JournalError(f"{path} is not a journal: not a regular file (a FIFO or device)")
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


def connect(path: Path, *, readonly: bool) -> sqlite3.Connection:
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


def configure_writer(conn: sqlite3.Connection, path: Path) -> None:
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


def is_blank(conn: sqlite3.Connection) -> bool:
    """A valid SQLite file with nothing in it (e.g. a creation interrupted before commit)."""
    (app_id,) = conn.execute("PRAGMA application_id").fetchone()
    (tables,) = conn.execute("SELECT COUNT(*) FROM sqlite_schema").fetchone()
    return bool(app_id == 0 and tables == 0)


def validate(conn: sqlite3.Connection, path: Path) -> None:
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
    if version < FIRST_SCHEMA_VERSION:  # anything older than the first schema is damaged
        raise JournalError(
            f"the journal {path} has an unknown schema version {version}; move it aside or "
            "pass another --journal path"
        )
    states = {state for (state,) in conn.execute("SELECT DISTINCT state FROM rows")}
    unknown = sorted(states - _KNOWN_STATES, key=str)
    if unknown:
        raise JournalError(
            f"the journal {path} has rows in a state this ibimport does not know "
            f"({', '.join(repr(s) for s in unknown[:3])}): written by a newer ibimport, or "
            "edited; upgrade ibimport, or move it aside and pass another --journal path"
        )
    (check,) = conn.execute("PRAGMA quick_check(1)").fetchone()
    if check != "ok":
        raise JournalError(
            f"the journal {path} is damaged ({check}); move it aside or pass another "
            "--journal path (rows already imported will then be found by their clientToken)"
        )


def create_aside(
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
            lay_out(conn, manifest_path, manifest_fingerprint, settings, created_at)
        finally:
            conn.close()
        os.replace(temporary, path)
    except BaseException as exc:
        temporary.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise JournalError(f"cannot create the journal {path}: {exc.strerror}") from None
        raise


def unusable(path: Path, exc: sqlite3.Error) -> JournalError:
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
