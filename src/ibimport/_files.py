"""Writing files so that a crash never leaves half of one, and nobody else can read them.

Also the checks every command makes on its paths before anything is read or sent
(``check_paths``), the special files written through without ever blocking for good
(``open_through``), and the removal of what a killed run left half-written
(``remove_leftovers``): all are about files, not about batches, so they live here.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import select
import stat
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO

from ibimport.errors import ConfigError, OutputError

__all__ = [
    "atomic_private_file",
    "check_paths",
    "inside_folder",
    "is_special",
    "open_through",
    "output_error",
    "remove_leftovers",
]

#: How long a write to a FIFO, pipe or terminal may wait for its reader to make room
#: before the write is given up: a reader that stopped reading never hangs a command.
THROUGH_PATIENCE_S = 30.0
#: How long opening a FIFO waits for a reader to appear (then: "nobody reads it").
READER_WAIT_S = 3.0


def is_special(path: Path) -> bool:
    """An existing file that is not a regular one (a device, FIFO or socket), links followed.

    Such a file is written through, never replaced: ``--report /dev/stdout`` must reach
    standard output, not turn ``/dev/stdout`` into a regular file.
    """
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    return not stat.S_ISREG(mode) and not stat.S_ISDIR(mode)


def output_error(path: Path, error: OSError) -> OutputError:
    """An output that could not be written, in one line that names it (never ``None``)."""
    reason = error.strerror or str(error) or type(error).__name__
    if error.errno == errno.ENOENT and not path.parent.is_dir():
        reason = f"its folder {path.parent} no longer exists"
    return OutputError(f"cannot write {path}: {reason}")


class _Patient(io.RawIOBase):
    """A non-blocking descriptor written as a blocking one, for at most ``patience_s``
    without progress: a FIFO whose reader stopped reading ends in an error, not a hang."""

    def __init__(self, fd: int, *, label: str, patience_s: float) -> None:
        self._fd = fd
        self._label = label
        self._patience_s = patience_s

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._fd

    def write(self, data: object) -> int:
        view = memoryview(data)  # type: ignore[arg-type]
        while True:
            try:
                return os.write(self._fd, view)
            except BlockingIOError:
                _, ready, _ = select.select([], [self._fd], [], self._patience_s)
                if not ready:
                    raise OSError(
                        errno.ETIMEDOUT,
                        f"its reader read nothing for {self._patience_s:.0f} s",
                        self._label,
                    ) from None

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)
        super().close()


def open_through(
    path: Path, *, patience_s: float = THROUGH_PATIENCE_S, reader_wait_s: float = READER_WAIT_S
) -> IO[bytes]:
    """A device, FIFO or pipe opened for writing without ever blocking for good.

    ``open()`` of a FIFO nobody reads blocks until a reader comes, out of reach of the
    signals that should stop the process; opened non-blocking it fails at once (ENXIO), so
    a reader is waited for only ``reader_wait_s``; each write then waits for room only
    ``patience_s``. Errors are ``OutputError``, one line naming the path.
    """
    waited = 0.0
    while True:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            break
        except OSError as error:
            if error.errno != errno.ENXIO:
                raise output_error(path, error) from None
            if waited >= reader_wait_s:
                raise OutputError(
                    f"cannot write {path}: it is a FIFO nobody reads (waited "
                    f"{reader_wait_s:.0f} s for a reader); give a file, or start its reader first"
                ) from None
            select.select([], [], [], 0.1)
            waited += 0.1
    return io.BufferedWriter(_Patient(fd, label=str(path), patience_s=patience_s))


@contextlib.contextmanager
def atomic_private_file(path: Path) -> Iterator[IO[str]]:
    """A text file that appears at ``path`` whole or not at all, mode 0600.

    Written to a sibling temp file (mkstemp creates it 0600), fsynced, then ``os.replace``d,
    so a crash never leaves a half-written file and never widens an existing file's mode.
    A symlink is followed (the link stays, its target is replaced); a device or FIFO is
    written through (``open_through``). A failure to write is ``OutputError``.
    """
    if is_special(path):
        try:
            with io.TextIOWrapper(
                open_through(path), encoding="utf-8", errors="replace", newline=""
            ) as through:
                yield through
        except OSError as error:
            raise output_error(path, error) from None
        return
    target = path.resolve() if path.is_symlink() else path
    try:
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as error:
        raise output_error(target, error) from None
    try:
        os.fchmod(fd, 0o600)
        with open(fd, "w", encoding="utf-8", errors="replace", newline="") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException as error:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(error, OSError):
            raise output_error(target, error) from None
        raise


def _identity(path: Path) -> tuple[object, ...]:
    """What makes two paths the same file: device and inode if it exists, else the real path."""
    try:
        found = path.stat()
    except OSError:
        return ("path", str(path.resolve()))
    return ("inode", found.st_dev, found.st_ino)


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def check_paths(
    *,
    inputs: Mapping[str, Path],
    outputs: Mapping[str, Path],
    stores: Mapping[str, Path] | None = None,
) -> None:
    """Refuse, before anything is read or sent, paths a command cannot use safely.

    No two of them may be one file (links resolved; device and inode compared where the
    file exists): a report written over the manifest or the journal destroys it. An output
    may not be a folder, and its folder must exist and be writable (a device or FIFO is
    written through, so only it must be writable). ``stores`` (the journal) are written and
    read back: they must be regular files or not exist yet. Each mapping maps the option
    that named a path (``--report``) to the path.
    """
    stores = stores or {}
    seen: dict[tuple[object, ...], str] = {}
    for option, path in [*inputs.items(), *stores.items(), *outputs.items()]:
        key = _identity(path)
        if key in seen:
            raise ConfigError(
                f"{option} {path} is the same file as {seen[key]}; give each its own path"
            )
        seen[key] = f"{option} {path}"
    for option, path in stores.items():
        with contextlib.suppress(OSError):
            mode = path.stat().st_mode
            if not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):
                raise ConfigError(
                    f"{option} {path} is {_kind(mode)}; a journal is a file (SQLite), "
                    "give a file path"
                )
    for option, path in {**stores, **outputs}.items():
        if path.is_dir():
            raise ConfigError(f"{option} {path} is a folder; give a file path")
        if is_special(path):
            if not os.access(path, os.W_OK):
                raise ConfigError(f"{option} {path} is not writable")
            continue
        folder = (path.resolve() if path.is_symlink() else path).parent
        if not folder.is_dir():
            raise ConfigError(
                f"{option} {path}: the folder {folder} does not exist; create it first"
            )
        if not os.access(folder, os.W_OK | os.X_OK):
            raise ConfigError(f"{option} {path}: the folder {folder} is not writable")
        if path.exists() and not os.access(path, os.W_OK):
            raise ConfigError(f"{option} {path} is not writable")


def inside_folder(path: Path, folder: Path) -> bool:
    """Whether ``path`` (links resolved) is directly in ``folder`` (links resolved).

    A journal is data (shard journals come from other machines): the paths it records are
    written only inside its own folder unless a person names them on the command line.
    """
    return path.resolve().parent == folder.resolve()


def remove_leftovers(path: Path) -> None:
    """Remove what a killed run left beside ``path``: its temp files (``.NAME.*.tmp`` etc.).

    Called with the journal's lock held (or with no journal at all), so no live run of
    this batch is writing them.
    """
    folder = path.parent
    for pattern in (f".{path.name}.*.tmp", f".{path.name}.*.new", f".{path.name}.*.sort.sqlite"):
        for leftover in folder.glob(pattern):
            with contextlib.suppress(OSError):
                if leftover.is_file() and not leftover.is_symlink():
                    leftover.unlink()
