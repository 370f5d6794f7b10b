"""Some rows of a manifest copied out in its own format and columns (``--failed-manifest``).

The rows are numbered as the readers number them (the same line reader, blank lines and
records skipped the same way), so row N here is the row the journal calls N; each copied
row's name and semanticVersion are checked against the journal's, so a manifest edited
since is refused rather than copied wrongly. A CSV keeps
its header and its cells; a JSON Lines file its lines, byte for byte; a JSON manifest its
``defaults`` and each chosen task (written again from its decoded value). The copy is
streamed: a million-row manifest is never held in memory.
"""

from __future__ import annotations

import csv
import json
import unicodedata
from collections.abc import Mapping
from typing import IO, BinaryIO

from ibimport.errors import ManifestError
from ibimport.manifest import ManifestFormat
from ibimport.manifest._csv import MAX_CSV_FIELD
from ibimport.manifest._json import _JsonText
from ibimport.manifest._lines import MAX_ROW_BYTES, Lines, RowTooLarge

__all__ = ["copy_rows"]


#: Row number -> the (name, semanticVersion) the journal holds for it.
Wanted = Mapping[int, tuple[str, str]]


def copy_rows(
    source: BinaryIO, out: IO[str], *, fmt: ManifestFormat, rows: Wanted, label: str
) -> int:
    """Write the manifest's header (if any) and the rows in ``rows``; how many were copied.

    ``ManifestError`` if a row is not the one the journal names (the manifest was edited).
    """
    if fmt is ManifestFormat.CSV:
        return _csv_rows(source, out, rows, label)
    if fmt is ManifestFormat.JSONL:
        return _jsonl_rows(source, out, rows, label)
    return _json_rows(source, out, rows, label)


def _same(row: int, rows: Wanted, task: object, label: str) -> None:
    """Refuse to copy a row that is not the one the journal recorded under its number."""
    name, version = (
        ("", "")
        if not isinstance(task, Mapping)
        else (task.get("name"), task.get("semanticVersion"))
    )
    if not rows[row][0]:
        return  # an invalid row may have no name: nothing to hold it to
    found = tuple(unicodedata.normalize("NFC", str(v or "")).strip() for v in (name, version))
    if found != rows[row]:
        raise ManifestError(
            f"{label}: row {row} is {found[0]} {found[1]} but the journal's row {row} is "
            f"{rows[row][0]} {rows[row][1]}: the manifest changed since the run"
        )


def _csv_rows(source: BinaryIO, out: IO[str], rows: Wanted, label: str) -> int:
    csv.field_size_limit(MAX_CSV_FIELD)
    lines = Lines(source, label, record_limit=MAX_ROW_BYTES)
    reader = csv.reader(lines)
    writer = csv.writer(out, lineterminator="\n")
    header: list[str] | None = None
    columns: list[str] = []
    row = copied = 0
    while True:
        lines.record_bytes = 0
        try:
            cells = next(reader)
        except StopIteration:
            return copied
        except (RowTooLarge, csv.Error):
            if header is None:
                raise ManifestError(f"{label}: the header row cannot be read") from None
            row += 1  # an unreadable record is a row (an invalid one): it cannot be copied
            continue
        if header is None:
            if any(cell.strip() for cell in cells):
                header = cells
                columns = [cell.strip() for cell in header]
                writer.writerow(header)
            continue
        if not any(cells):
            continue
        row += 1
        if row in rows:
            _same(row, rows, dict(zip(columns, cells, strict=False)), label)
            writer.writerow(cells)
            copied += 1


def _jsonl_rows(source: BinaryIO, out: IO[str], rows: Wanted, label: str) -> int:
    lines = Lines(source, label)
    row = copied = 0
    while True:
        try:
            text = next(lines)
        except StopIteration:
            return copied
        except RowTooLarge:
            row += 1
            continue
        if not text or text.isspace():
            continue
        row += 1
        if row in rows:
            try:
                task = json.loads(text)
            except ValueError:
                task = None
            _same(row, rows, task, label)
            out.write(text if text.endswith("\n") else text + "\n")
            copied += 1


def _json_rows(source: BinaryIO, out: IO[str], rows: Wanted, label: str) -> int:
    """An array stays an array; an object keeps its ``defaults`` and its ``tasks``."""
    js = _JsonText(source, label)
    first = js.peek()
    if first == "[":
        js.pos += 1
        out.write("[")
        copied = _json_tasks(js, out, rows)
        out.write("\n]\n")
        return copied
    if first != "{":
        raise js.error("expected a JSON array of tasks or an object with 'defaults' and 'tasks'")
    js.pos += 1
    defaults: object = None
    while js.peek() == '"':
        key = js.value("a key")
        if js.peek() != ":":
            raise js.expected("':' after a key")
        js.pos += 1
        char = js.peek()
        if key == "tasks" and char == "[":
            js.pos += 1
            out.write("{\n")
            if defaults is not None:
                out.write(f' "defaults": {json.dumps(defaults, ensure_ascii=False)},\n')
            out.write(' "tasks": [')
            copied = _json_tasks(js, out, rows)
            out.write("\n ]\n}\n")
            return copied
        value = js.value(f"the value of {key!r}")
        if key == "defaults":
            defaults = value
        if js.peek() == ",":
            js.pos += 1
    raise js.error("the top-level object has no 'tasks' array")


def _json_tasks(js: _JsonText, out: IO[str], rows: Wanted) -> int:
    row = copied = 0
    if js.peek() == "]":
        js.pos += 1
        return 0
    while True:
        row += 1
        js.peek()  # past the whitespace before the task
        task = js.value(f"task {row}")
        if row in rows:
            _same(row, rows, task, js.label)
            out.write(("," if copied else "") + "\n  " + json.dumps(task, ensure_ascii=False))
            copied += 1
        char = js.peek()
        js.pos += 1
        if char != ",":
            return copied
