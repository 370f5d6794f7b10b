"""Bytes to text: the one bounded line reader, and the errors of a file that is not UTF-8.

A hostile manifest can hold a line of gigabytes, so no line is ever read whole past
``MAX_ROW_BYTES``: the rest of it is skipped and the caller is told, so one oversized
row becomes one invalid row. A line that goes on past ``MAX_SKIP_BYTES`` (a device, a
binary file, an endless pipe) ends the reading there with ``ManifestError``. Encoding
problems are whole-file problems (``ManifestError``) and name the byte offset and line,
so the user can find them.
"""

from __future__ import annotations

import codecs
from typing import BinaryIO, Final

from ibimport.errors import ManifestError

#: A row (a JSON Lines line, a CSV record, a JSON array element) larger than this is
#: refused; the largest valid task is well under 100 KiB.
MAX_ROW_BYTES: Final = 1 << 20
CHUNK: Final = 64 * 1024
#: An oversized line is skipped up to here; past it the input is refused as a whole.
MAX_SKIP_BYTES: Final = 16 * MAX_ROW_BYTES


class RowTooLarge(Exception):
    """A line or record grew past MAX_ROW_BYTES; the rest of its line was skipped."""


class Lines:
    """A file's lines as text, each line's content at most ``MAX_ROW_BYTES``.

    ``record_limit``: also refuse once the bytes read since ``record_bytes`` was last set
    to 0 (newlines included) pass it; a CSV record may span lines, a JSON Lines row may not.
    """

    def __init__(self, f: BinaryIO, label: str, *, record_limit: int | None = None) -> None:
        self._readline = f.readline
        self._label = label
        self._record_limit = record_limit
        self.lineno = 0
        self._offset = 0
        self.record_bytes = 0
        #: Whether every line since ``record_bytes`` was last reset was ASCII (so NFC
        #: already), and whether one held a NUL: the caller resets the three together.
        self.record_ascii = True
        self.record_nul = False

    def __iter__(self) -> Lines:
        return self

    def __next__(self) -> str:
        data = self._readline(MAX_ROW_BYTES + 1)
        if not data:
            raise StopIteration
        self.lineno += 1
        start = self._offset
        self._offset += len(data)
        # The file's first bytes are checked first: a NUL start (UTF-16, /dev/zero) is
        # refused at once, before any oversized first line is skipped.
        skip = start_of_file(data, self._label) if self.lineno == 1 else 0
        if len(data) > MAX_ROW_BYTES and not data.endswith(b"\n"):
            self._skip_line()
            raise RowTooLarge(self._too_large())
        if not data.isascii():
            self.record_ascii = False
        if b"\x00" in data:
            self.record_nul = True
        if self._record_limit is not None:
            self.record_bytes += len(data)
            if self.record_bytes > self._record_limit:
                raise RowTooLarge(self._too_large())  # the line was read to its end
        try:
            return data[skip:].decode("utf-8") if skip else data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise not_utf8(self._label, exc, offset=start + skip, line=self.lineno) from None

    def _skip_line(self) -> None:
        """Read past the rest of an oversized line, a chunk at a time, up to MAX_SKIP_BYTES."""
        skipped = 0
        while True:
            data = self._readline(CHUNK)
            if not data:
                return
            self._offset += len(data)
            if data.endswith(b"\n"):
                return
            skipped += len(data)
            if skipped > MAX_SKIP_BYTES:
                raise ManifestError(
                    f"{self._label}: line {self.lineno} goes on past "
                    f"{MAX_SKIP_BYTES // (1 << 20)} MiB without a line break: not a manifest; "
                    "stopped reading"
                )

    def _too_large(self) -> str:
        return f"line {self.lineno} is larger than {MAX_ROW_BYTES // (1 << 20)} MiB"


def start_of_file(data: bytes, label: str) -> int:
    """Length of a UTF-8 BOM to skip; ManifestError for UTF-16/32 and other non-UTF-8 starts."""
    if data.startswith(codecs.BOM_UTF8):
        return len(codecs.BOM_UTF8)
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise ManifestError(
            f"{label}: not UTF-8: the file starts with a UTF-16 byte-order mark; save it as UTF-8"
        )
    line = data.split(b"\n", 1)[0]
    nul = line.find(b"\x00")
    if nul >= 0:
        raise ManifestError(
            f"{label}: not UTF-8: NUL byte at byte offset {nul} (line 1); "
            "is it UTF-16? save it as UTF-8"
        )
    return 0


def not_utf8(label: str, exc: UnicodeDecodeError, *, offset: int, line: int) -> ManifestError:
    """``offset``: the file offset of ``exc.object[0]``; ``line``: its line number."""
    bad = exc.object[exc.start : exc.start + 1].hex().upper()
    line += exc.object[: exc.start].count(b"\n")
    return ManifestError(
        f"{label}: not UTF-8: byte 0x{bad} at byte offset {offset + exc.start} (line {line}); "
        "save the file as UTF-8"
    )
