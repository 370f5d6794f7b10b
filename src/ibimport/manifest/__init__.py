"""Reading and validating import manifests (CSV, JSON, JSON Lines) as a stream of rows.

A manifest can hold a million tasks, so rows are read, decoded and validated one at a
time and handed out as :class:`ManifestRow`; only a compact digest of each row's
identity (name + semanticVersion) is kept, to find repeats. A row that breaks a rule
becomes an invalid row naming the field and the rule; only a file that cannot be read
at all (not UTF-8, broken JSON structure, unknown format) raises ``ManifestError``.
The rules are the ImportVmImage constraints of :mod:`ibimport.domain.apimodel`.

Absent means absent everywhere: an empty CSV cell, a missing JSON key, a JSON ``null``
and a JSON ``""`` are the same thing, so a task reads the same from every format.

Inside: ``_lines`` (bytes to bounded text lines), ``_csv`` and ``_json`` (each format's
syntax to raw rows), ``_validate`` (raw rows to ManifestRows, shared by every format).
"""

from __future__ import annotations

import hashlib
import os
import stat
import sys
from collections.abc import Callable, Iterator, Mapping
from enum import StrEnum
from pathlib import Path
from typing import BinaryIO, Final

from ibimport.domain.request import ImageRequest
from ibimport.errors import ConfigError, ManifestError
from ibimport.manifest._csv import MAX_CSV_FIELD, read_csv
from ibimport.manifest._json import read_json, read_jsonl
from ibimport.manifest._lines import MAX_ROW_BYTES
from ibimport.manifest._validate import (
    ROW_FIELD,
    Checker,
    FieldError,
    ManifestRow,
    check_tags,
    shorten,
)

__all__ = [
    "MAX_CSV_FIELD",
    "MAX_ROW_BYTES",
    "ROW_FIELD",
    "FieldError",
    "ImageRequest",
    "ManifestFormat",
    "ManifestRow",
    "SourceKind",
    "detect_format",
    "manifest_fingerprint",
    "parse_tag_option",
    "read_manifest",
    "source_kind",
]


class ManifestFormat(StrEnum):
    """The manifest file formats, named as ``--format`` spells them."""

    CSV = "csv"
    JSON = "json"
    JSONL = "jsonl"


_EXTENSIONS: Final = {
    ".csv": ManifestFormat.CSV,
    ".json": ManifestFormat.JSON,
    ".jsonl": ManifestFormat.JSONL,
    ".ndjson": ManifestFormat.JSONL,
}

_Reader = Callable[[BinaryIO, Checker, str], Iterator[ManifestRow]]

_READERS: Final[dict[ManifestFormat, _Reader]] = {
    ManifestFormat.CSV: read_csv,
    ManifestFormat.JSON: read_json,
    ManifestFormat.JSONL: read_jsonl,
}


def detect_format(path: str | Path) -> ManifestFormat:
    """The format a manifest's extension names (.csv, .json, .jsonl or .ndjson)."""
    suffix = Path(path).suffix.lower()
    try:
        return _EXTENSIONS[suffix]
    except KeyError:
        raise ManifestError(
            f"{path}: cannot tell the format from the extension {suffix!r}; "
            "use .csv, .json, .jsonl or .ndjson, or give --format"
        ) from None


def parse_tag_option(text: str) -> tuple[str, str]:
    """Parse one ``--tag KEY=VALUE``; ValueError says what is wrong with it."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ValueError(f"--tag expects KEY=VALUE, got {shorten(text)!r}")
    problems = check_tags({key: value})
    if problems:
        raise ValueError(f"--tag {shorten(text)!r}: {problems[0]}")
    return key, value


class SourceKind(StrEnum):
    """What a manifest path names: a file reads any number of times, a FIFO once."""

    FILE = "file"
    FIFO = "fifo"


_NOT_A_MANIFEST: Final = (
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISDIR, "a directory"),
)


def source_kind(path: str | Path) -> SourceKind:
    """Whether ``path`` is a regular file or a FIFO; ManifestError names anything else.

    A device (``/dev/zero``), a socket or a directory is refused for what it is, not
    reported as missing; links are followed.
    """
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise ManifestError(f"{path}: cannot read: {exc.strerror}") from None
    if stat.S_ISFIFO(mode):
        return SourceKind.FIFO
    for test, what in _NOT_A_MANIFEST:
        if test(mode):
            raise ManifestError(f"{path}: is {what}, not a manifest file")
    return SourceKind.FILE


def _is_stdin(source: str | Path) -> bool:
    return isinstance(source, str) and source == "-"


def read_manifest(
    source: str | Path,
    *,
    fmt: ManifestFormat | None = None,
    extra_tags: Mapping[str, str] | None = None,
    stdin: BinaryIO | None = None,
    only: Callable[[int], bool] | None = None,
    duplicates: dict[int, int] | None = None,
    import_defaults: Mapping[str, object] | None = None,
) -> Iterator[ManifestRow]:
    """Stream a manifest's rows, validated, one at a time ("-" reads stdin; fmt required).

    Problems of a source as a whole (format, missing file, bad --tag) raise here;
    problems found while reading (not UTF-8, broken JSON structure) raise
    ManifestError from the iterator; a bad row is an invalid ManifestRow.

    ``only``: the rows (by number) to validate and yield; the others are only parsed.
    ``duplicates``: an empty dict is filled with each repeated row's first row; a filled
    one tells a read of ``only`` some rows the repeats it cannot see.
    ``import_defaults``: ImportImage options (``domain.diskimport.IMPORT_OPTION_FIELDS``)
    for every row with disks that does not give its own (the command line's).
    """
    tags = dict(extra_tags or {})
    problems = check_tags(tags)
    if problems:
        raise ConfigError(f"--tag: {problems[0]}")
    if _is_stdin(source):
        if fmt is None:
            raise ManifestError("reading a manifest from stdin (-) needs its format (--format)")
        label = "<stdin>"
    else:
        source_kind(source)  # a device or a folder is named for what it is, first
        fmt = ManifestFormat(fmt) if fmt is not None else detect_format(source)
        label = str(source)
    checker = Checker(tags, only=only, duplicates=duplicates, import_defaults=import_defaults)
    return _rows(source, fmt, tags, stdin, label, checker)


def _rows(
    source: str | Path,
    fmt: ManifestFormat,
    extra_tags: dict[str, str],
    stdin: BinaryIO | None,
    label: str,
    checker: Checker,
) -> Iterator[ManifestRow]:
    reader = _READERS[fmt]
    if checker.filtered:
        yield from (
            r for r in _unfiltered(source, reader, checker, stdin, label) if checker.wants(r)
        )
        return
    yield from _unfiltered(source, reader, checker, stdin, label)


def _unfiltered(
    source: str | Path,
    reader: _Reader,
    checker: Checker,
    stdin: BinaryIO | None,
    label: str,
) -> Iterator[ManifestRow]:
    if _is_stdin(source):
        yield from reader(stdin if stdin is not None else sys.stdin.buffer, checker, label)
        return
    try:
        f = open(source, "rb")  # noqa: SIM115 - closed below, also when the caller stops early
    except OSError as exc:
        raise ManifestError(f"{label}: cannot read: {exc.strerror}") from None
    with f:
        try:
            yield from reader(f, checker, label)
        except OSError as exc:
            raise ManifestError(f"{label}: read failed: {exc.strerror or exc}") from None


def manifest_fingerprint(source: str | Path) -> str:
    """SHA-256 (hex) of the manifest's bytes, so a resumed run can tell the file changed."""
    if _is_stdin(source):
        raise ManifestError("a manifest read from stdin has no fingerprint; give a file")
    try:
        with open(source, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except OSError as exc:
        raise ManifestError(f"{source}: cannot read: {exc.strerror}") from None
