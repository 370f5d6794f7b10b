"""Writing files so that a crash never leaves half of one, and nobody else can read them.

Also the checks a batch makes on its paths before anything is sent (``check_paths``) and
the removal of what a killed run left half-written (``remove_leftovers``): both are about
files, not about batches, so they live here.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO

from ibimport.errors import ConfigError

__all__ = ["atomic_private_file", "check_paths", "is_special", "remove_leftovers"]


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


@contextlib.contextmanager
def atomic_private_file(path: Path) -> Iterator[IO[str]]:
    """A text file that appears at ``path`` whole or not at all, mode 0600.

    Written to a sibling temp file (mkstemp creates it 0600), fsynced, then ``os.replace``d,
    so a crash never leaves a half-written file and never widens an existing file's mode.
    A symlink is followed (the link stays, its target is replaced); a device or FIFO is
    written through.
    """
    if is_special(path):
        with open(path, "w", encoding="utf-8", errors="replace", newline="") as through:
            yield through
        return
    target = path.resolve() if path.is_symlink() else path
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o600)
        with open(fd, "w", encoding="utf-8", errors="replace", newline="") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _identity(path: Path) -> tuple[object, ...]:
    """What makes two paths the same file: device and inode if it exists, else the real path."""
    try:
        found = path.stat()
    except OSError:
        return ("path", str(path.resolve()))
    return ("inode", found.st_dev, found.st_ino)


def check_paths(*, inputs: Mapping[str, Path], outputs: Mapping[str, Path]) -> None:
    """Refuse, before anything is read or sent, paths a batch cannot use safely.

    No two of them may be one file (links resolved; device and inode compared where the
    file exists): a report written over the manifest or the journal destroys it. An output
    may not be a folder, and its folder must exist and be writable (a device or FIFO is
    written through, so only it must be writable). ``inputs`` and ``outputs`` map the
    option that named each path (``--report``) to the path.
    """
    seen: dict[tuple[object, ...], str] = {}
    for option, path in [*inputs.items(), *outputs.items()]:
        key = _identity(path)
        if key in seen:
            raise ConfigError(
                f"{option} {path} is the same file as {seen[key]}; give each its own path"
            )
        seen[key] = f"{option} {path}"
    for option, path in outputs.items():
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
