"""Writing files so that a crash never leaves half of one, and nobody else can read them."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO


@contextlib.contextmanager
def atomic_private_file(path: Path) -> Iterator[IO[str]]:
    """A text file that appears at ``path`` whole or not at all, mode 0600.

    Written to a sibling temp file (mkstemp creates it 0600), fsynced, then ``os.replace``d,
    so a crash never leaves a half-written file and never widens an existing file's mode.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o600)
        with open(fd, "w", encoding="utf-8", errors="replace", newline="") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
