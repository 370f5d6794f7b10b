"""A manifest read from a pipe, copied to a private temporary file: a batch reads it twice."""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from ibimport.errors import (
    ManifestError,
)
from ibimport.manifest import (
    ManifestFormat,
)

#: How many invalid rows preflight keeps to show; the count is always exact.


#: The most ``spooled_stdin`` copies by default (``ibimport run --max-stdin-mib``).
MAX_SPOOL_BYTES = 1 << 30
_SPOOL_CHUNK = 1 << 20


@contextmanager
def spooled_stdin(
    fmt: ManifestFormat,
    *,
    source: BinaryIO | None = None,
    label: str = "stdin",
    max_bytes: int | None = None,
) -> Iterator[Path]:
    """Copy stdin (or ``source``, a FIFO) to a private temp file: a batch reads it twice.

    At most ``max_bytes`` (an endless pipe would fill the disk): past it, or when the disk
    fills, ``ManifestError``. The temp folder is removed on every way out (SIGTERM too,
    which the CLI turns into KeyboardInterrupt).
    """
    src = source if source is not None else sys.stdin.buffer
    max_bytes = MAX_SPOOL_BYTES if max_bytes is None else max_bytes
    with tempfile.TemporaryDirectory(prefix="ibimport-") as tmp:
        path = Path(tmp) / ("stdin." + fmt.value)
        try:
            with open(path, "wb") as out:
                copied = 0
                while chunk := src.read(_SPOOL_CHUNK):
                    copied += len(chunk)
                    if copied > max_bytes:
                        raise ManifestError(
                            f"{label} holds more than {max_bytes / (1 << 20):g} MiB, the most "
                            "a manifest read from a pipe may have (--max-stdin-mib); "
                            "save it to a file and give that"
                        )
                    out.write(chunk)
        except OSError as exc:
            raise ManifestError(
                f"cannot copy {label} to a temporary file in {tempfile.gettempdir()}: "
                f"{exc.strerror or exc}"
            ) from None
        yield path
