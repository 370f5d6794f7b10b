"""What the selection pass saw of each manifest row, so that the second read is held to it.

A batch reads its manifest twice: the selection pass validates (and journals) every row,
then the run streams it again. A file changed in between (truncated, rewritten, appended to) must
not send a row the selection never saw, such as one spliced from two lines. ``RowPrints``
keeps 8 bytes per row (8 MB for a million rows): a digest of the row's clientToken, or 0
for an invalid row; ``checked`` passes the run's rows through and stops at the first row
that differs, or at an early end, with ``FatalBatchError``.
"""

from __future__ import annotations

import hashlib
from array import array
from collections.abc import Iterable, Iterator

from ibimport.domain.tokens import client_token
from ibimport.errors import FatalBatchError, ManifestError
from ibimport.manifest import ManifestRow

__all__ = ["RowPrints"]

_INVALID = 0


def _print(token: str | None) -> int:
    if token is None:
        return _INVALID
    return int.from_bytes(hashlib.blake2b(token.encode(), digest_size=8).digest()) | 1


def _changed(what: str) -> FatalBatchError:
    return FatalBatchError(
        f"the manifest changed under the run: {what}; no row the run did not check first was "
        "sent. Put the manifest back as it was, or let the run finish first, then run the "
        "same command again"
    )


class RowPrints:
    """Each row's token digest, by row number, as the selection pass read it."""

    def __init__(self) -> None:
        self._prints = array("Q")

    def __len__(self) -> int:
        return len(self._prints)

    def add(self, row: int, token: str | None) -> None:
        """The selection read ``row`` (numbered from 1) with this clientToken (None: invalid)."""
        while len(self._prints) < row - 1:
            self._prints.append(_INVALID)  # a number no row had is never matched
        if len(self._prints) >= row:
            raise ValueError(f"row {row} was added twice")
        self._prints.append(_print(token))

    def checked(
        self, rows: Iterable[ManifestRow], *, salt: str, last_row: int | None = None
    ) -> Iterator[ManifestRow]:
        """``rows``, while they are the rows the selection read; FatalBatchError at the first not.

        Each valid row comes out carrying the token derived to compare it
        (``ManifestRow.client_token``), so the runner does not derive it again.
        ``last_row``: the last row the read should reach, when it reads only some rows
        (one partition's); by default the last row the selection read.
        """
        prints = self._prints
        last = 0
        try:
            for manifest_row in rows:
                row = manifest_row.row
                task = manifest_row.task
                token = client_token(task, salt=salt) if task is not None else None
                if row > len(prints):
                    raise _changed(f"row {row} was not there when the run started")
                if prints[row - 1] != _print(token):
                    raise _changed(f"row {row} is not the row it was when the run started")
                last = row
                if token is None:
                    yield manifest_row
                    continue
                yield ManifestRow(
                    row, task, (), manifest_row.name, manifest_row.semantic_version, token
                )
        except ManifestError as exc:
            raise _changed(str(exc)) from None
        expected = len(prints) if last_row is None else last_row
        if last < expected:
            raise _changed(f"it now ends after row {last} of {len(prints)}")
