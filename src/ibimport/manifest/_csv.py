"""The CSV format: a header row, then one task per record.

Tags come from a ``tags`` cell (a JSON object) and from ``tag:KEY`` columns; an empty
cell is an absent field. A record is bounded in bytes like any other row, and a ragged
or unreadable record is one invalid row, not the end of the file.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from typing import Any, BinaryIO, Final

from ibimport.domain.apimodel import import_vm_image_rules
from ibimport.domain.request import FIELDS
from ibimport.errors import ManifestError
from ibimport.manifest._json import DECODER, DupKeys
from ibimport.manifest._lines import MAX_ROW_BYTES, Lines, RowTooLarge
from ibimport.manifest._validate import (
    ROW_FIELD,
    Checker,
    FieldError,
    ManifestRow,
    invalid,
    oversize,
    shorten,
    unknown_rule,
)

#: csv.field_size_limit while reading; the largest valid cell (a full tags column) is ~20 KiB.
MAX_CSV_FIELD: Final = 128 * 1024

#: Columns every CSV header must have: the service's required fields, but clientToken,
#: which ibimport derives when a row gives none.
_REQUIRED_COLUMNS: Final = import_vm_image_rules().required - {"clientToken", "vmImportTaskId"}
#: Where a row's image comes from: an EC2 import task, or its disks (one column of these).
_SOURCE_COLUMNS: Final = ("vmImportTaskId", "diskImage", "diskContainers")

_TAGS_CELL_RULE: Final = 'must be a JSON object of tag keys to values, like {"Env": "prod"}'


def _csv_error(exc: csv.Error) -> str:
    """csv's message, with the case of a bare CR explained in the user's terms."""
    if "new-line character seen in unquoted field" in str(exc):
        return "a carriage return (CR) inside an unquoted cell (lines ended by CR alone?)"
    if "field larger than field limit" in str(exc):
        return f"a cell is larger than {MAX_CSV_FIELD // 1024} KiB"
    return str(exc)


def read_csv(f: BinaryIO, checker: Checker, label: str) -> Iterator[ManifestRow]:
    """A header row, then one task per record; tags from a ``tags`` cell and ``tag:`` columns."""
    csv.field_size_limit(MAX_CSV_FIELD)
    lines = Lines(f, label, record_limit=MAX_ROW_BYTES)
    reader = csv.reader(lines)
    while True:
        try:
            header = next(reader)
        except StopIteration:
            raise ManifestError(f"{label}: empty: no header row") from None
        except RowTooLarge as exc:
            raise ManifestError(f"{label}: the header row cannot be read: {exc}") from None
        except csv.Error as exc:
            raise ManifestError(
                f"{label}: the header row cannot be read: {_csv_error(exc)}"
            ) from None
        if any(cell.strip() for cell in header):
            break
    columns = _csv_columns(header, label)
    present = {key for kind, key in columns if kind == "field"}
    missing = [field for field in FIELDS if field in _REQUIRED_COLUMNS and field not in present]
    if present.isdisjoint(_SOURCE_COLUMNS):
        missing.append("vmImportTaskId (or diskImage, or diskContainers)")
    if missing:  # once, for the header, not once per row
        names, them = (missing[0], "it") if len(missing) == 1 else (" and ".join(missing), "them")
        raise ManifestError(
            f"{label}: the header has no {names} column{'s' if them == 'them' else ''}; "
            f"every row needs {them}"
        )
    width = len(columns)
    layout = _Layout(columns)
    row = 0
    while True:
        lines.record_bytes = 0
        lines.record_ascii = True
        lines.record_nul = False
        try:
            cells = next(reader)
        except StopIteration:
            return
        except RowTooLarge:
            row += 1
            yield oversize(row)
            continue
        except csv.Error as exc:
            row += 1
            rule = f"unreadable CSV: {_csv_error(exc)} (line {lines.lineno})"
            yield invalid(row, ROW_FIELD, rule, "")
            continue
        if not any(cells):
            continue  # a blank line, or a spreadsheet's empty row of commas
        row += 1
        if checker.skips(row):
            continue  # another partition's row: parsed, not built or validated
        if len(cells) != width:
            if len(cells) > width and not any(cells[width:]):
                cells = cells[:width]
            else:
                rule = f"has {len(cells)} cells but the header has {width} (line {lines.lineno})"
                yield invalid(row, ROW_FIELD, rule, "")
                continue
        if lines.record_nul or not layout.plain(cells):
            yield _csv_row(row, columns, cells, checker, ascii_source=lines.record_ascii)
        else:
            yield layout.row(row, cells, checker, ascii_source=lines.record_ascii)


class _Layout:
    """Where each kind of column is, so a plain record (no NUL, nothing in an unknown or
    headerless column: nearly every record) is built without a loop over its cells.

    It builds the same raw row as ``_csv_row``, which handles every other record.
    """

    def __init__(self, columns: list[tuple[str, str]]) -> None:
        self.fields = [(i, key) for i, (kind, key) in enumerate(columns) if kind == "field"]
        self.tags = [(i, key) for i, (kind, key) in enumerate(columns) if kind == "tag"]
        found = [i for i, (kind, _) in enumerate(columns) if kind == "tags"]
        self.tags_json = found[0] if found else None
        self._others = [i for i, (kind, _) in enumerate(columns) if kind in ("unknown", "blank")]

    def plain(self, cells: list[str]) -> bool:
        """Nothing in an unknown or headerless column (the reader checked NULs)."""
        return not self._others or not any(cells[i] for i in self._others)

    def row(
        self, row: int, cells: list[str], checker: Checker, *, ascii_source: bool
    ) -> ManifestRow:
        raw: dict[str, Any] = {key: cells[i] for i, key in self.fields if cells[i]}
        errors: list[FieldError] = []
        tag_cols = {key: cells[i] for i, key in self.tags if cells[i]} if self.tags else None
        tag_json = None
        if self.tags_json is not None:
            cell = cells[self.tags_json]
            if cell:
                tag_json = _tags_cell(cell, errors)
                if "\\u" in cell:
                    ascii_source = False  # an escape may decode to text that is not ASCII
        _merge_tags(raw, tag_json, tag_cols, errors)
        return checker.check(row, raw, errors, ascii_source=ascii_source)


def _csv_row(
    row: int,
    columns: list[tuple[str, str]],
    cells: list[str],
    checker: Checker,
    *,
    ascii_source: bool = False,
) -> ManifestRow:
    raw: dict[str, Any] = {}
    errors: list[FieldError] = []
    tag_cols: dict[str, str] | None = None
    tag_json: dict[str, Any] | None = None
    for (kind, key), cell in zip(columns, cells, strict=True):
        if not cell:
            continue
        if "\x00" in cell:
            field = f"tag:{key}" if kind == "tag" else key or ROW_FIELD
            errors.append(FieldError(field, "must not contain NUL characters", shorten(cell)))
        elif kind == "field":
            raw[key] = cell
        elif kind == "tag":
            if tag_cols is None:
                tag_cols = {}
            tag_cols[key] = cell
        elif kind == "tags":
            tag_json = _tags_cell(cell, errors)
            if "\\u" in cell:
                ascii_source = False  # an escape may decode to text that is not ASCII
        elif kind == "unknown":
            errors.append(FieldError(shorten(key, 40), unknown_rule(key), shorten(cell)))
        else:
            errors.append(FieldError(key, "has a value but no column header", shorten(cell)))
    _merge_tags(raw, tag_json, tag_cols, errors)
    return checker.check(row, raw, errors, ascii_source=ascii_source)


def _merge_tags(
    raw: dict[str, Any],
    tag_json: dict[str, Any] | None,
    tag_cols: dict[str, str] | None,
    errors: list[FieldError],
) -> None:
    """The row's tags: the tags cell's and the ``tag:`` columns', which must agree."""
    if tag_json is not None and tag_cols:
        for key, value in tag_cols.items():
            other = tag_json.get(key)
            if other is not None and other != value:
                errors.append(
                    FieldError(
                        f"tag:{shorten(key, 40)}",
                        "differs between the tags column and its tag: column",
                        shorten(value),
                    )
                )
        raw["tags"] = {**tag_json, **tag_cols}
    elif tag_json is not None:
        raw["tags"] = tag_json
    elif tag_cols:
        raw["tags"] = tag_cols


def _tags_cell(cell: str, errors: list[FieldError]) -> dict[str, Any] | None:
    try:
        tags = DECODER.decode(cell)
    except (ValueError, RecursionError):
        errors.append(FieldError("tags", _TAGS_CELL_RULE, shorten(cell)))
        return None
    if not isinstance(tags, dict):
        errors.append(FieldError("tags", _TAGS_CELL_RULE, shorten(cell)))
        return None
    if type(tags) is DupKeys:
        errors.extend(
            FieldError(f"tag:{shorten(k, 40)}", "is given more than once", "")
            for k in tags.duplicates
        )
        tags = dict(tags)
    return tags


def _csv_columns(header: list[str], label: str) -> list[tuple[str, str]]:
    """Classify each header cell: ("field", name), ("tag", key), ("tags", ""), ("unknown", text)
    or ("blank", "column N"); repeated columns make the file ambiguous, so ManifestError."""
    columns: list[tuple[str, str]] = []
    seen: set[tuple[str, str]] = set()  # a set: a header may have 100,000 cells
    for index, cell in enumerate(header, start=1):
        text = cell.strip()
        if "\x00" in text:
            raise ManifestError(f"{label}: the header has a NUL character in column {index}")
        if text == "tags":
            column = ("tags", "")
        elif text in FIELDS:
            column = ("field", text)
        elif text.startswith("tag:"):
            if not text[4:]:
                raise ManifestError(
                    f"{label}: column {index}: 'tag:' needs a tag key, like tag:Env"
                )
            column = ("tag", text[4:])
        elif text:
            column = ("unknown", text)
        else:
            column = ("blank", f"column {index}")
        if column[0] != "blank":
            if column in seen:
                raise ManifestError(f"{label}: column {shorten(text)!r} appears more than once")
            seen.add(column)
        columns.append(column)
    return columns
