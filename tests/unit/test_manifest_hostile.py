"""Hostile manifests: whatever a file holds, a clear per-row error or a clean ManifestError.

``test_manifest`` feeds arbitrary bytes, text and JSON structures; here each kind of
hostility gets a property of its own with an exact expectation (wrong encodings say
"not UTF-8", a ragged row names its cell count, a duplicate key names the key, a number
names the field), plus size and depth bounds measured in time and memory, and the CLI:
``validate`` and ``run`` exit 2 with one message and never a traceback.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import os
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner, Result

from ibimport.cli import app
from ibimport.errors import ManifestError
from ibimport.manifest import MAX_ROW_BYTES, ROW_FIELD, ManifestFormat, ManifestRow, read_manifest

PROPERTY = settings(max_examples=60, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
VALID: dict[str, Any] = {
    "name": "web-frontend-03",
    "semanticVersion": "1.0.0",
    "platform": "Linux",
    "vmImportTaskId": "import-ami-0abc1234def567890",
}
HEADER = list(VALID)
STRING_FIELDS = [*VALID, "description", "osVersion", "clientToken", "logGroupName"]


def rows_of(data: bytes, fmt: str) -> list[ManifestRow]:
    """Every row; the only exception allowed out is ManifestError (the caller expects it)."""
    rows = list(read_manifest("-", fmt=ManifestFormat(fmt), stdin=io.BytesIO(data)))
    for row in rows:
        assert (row.task is None) == bool(row.errors)
        for line in row.describe():
            line.encode("utf-8")
    return rows


def outcome(data: bytes, fmt: str) -> list[ManifestRow] | ManifestError:
    """The rows, or the ManifestError that refused the file."""
    try:
        return rows_of(data, fmt)
    except ManifestError as exc:
        return exc


def task(n: int, **fields: Any) -> dict[str, Any]:
    return {**VALID, "name": f"vm-{n}", **fields}


def jsonl(tasks: list[Any]) -> bytes:
    return "".join(json.dumps(t) + "\n" for t in tasks).encode()


def csv_bytes(table: list[list[str]]) -> bytes:
    out = io.StringIO()
    csv.writer(out).writerows(table)
    return out.getvalue().encode()


def manifest_text(fmt: str, names: list[str]) -> str:
    tasks = [task(n, name=name) for n, name in enumerate(names)]
    if fmt == "csv":
        return csv_bytes([HEADER, *([t[k] for k in HEADER] for t in tasks)]).decode()
    if fmt == "json":
        return json.dumps(tasks, ensure_ascii=False)
    return "".join(json.dumps(t, ensure_ascii=False) + "\n" for t in tasks)


FORMATS = pytest.mark.parametrize("fmt", ["csv", "json", "jsonl"])
_printable = st.characters(blacklist_categories=("Cs", "Cc"))
_ascii_names = st.text(st.characters(min_codepoint=0x41, max_codepoint=0x7A), min_size=1)


# --- encodings -----------------------------------------------------------------------------


@FORMATS
@PROPERTY
@given(names=st.lists(_ascii_names, min_size=1, max_size=4), bom=st.booleans(), le=st.booleans())
def test_utf16_is_refused_as_not_utf8(fmt: str, names: list[str], bom: bool, le: bool) -> None:
    data = manifest_text(fmt, names).encode("utf-16-le" if le else "utf-16-be")
    if bom:
        data = (codecs.BOM_UTF16_LE if le else codecs.BOM_UTF16_BE) + data
    with pytest.raises(ManifestError, match="not UTF-8"):
        rows_of(data, fmt)


@FORMATS
@PROPERTY
@given(
    names=st.lists(_ascii_names, min_size=1, max_size=4),
    accent=st.characters(min_codepoint=0x80, max_codepoint=0xFF),
    where=st.integers(min_value=0),
)
def test_latin1_is_refused_as_not_utf8_naming_the_byte(
    fmt: str, names: list[str], accent: str, where: int
) -> None:
    index = where % len(names)
    names[index] = names[index] + accent + "x"  # an isolated high byte is never UTF-8
    data = manifest_text(fmt, names).encode("latin-1")
    with pytest.raises(ManifestError, match=f"not UTF-8: byte 0x{ord(accent):02X} at byte offset"):
        rows_of(data, fmt)


@FORMATS
@PROPERTY
@given(names=st.lists(st.text(_printable, min_size=1, max_size=20), min_size=1, max_size=4))
def test_utf8_with_a_bom_reads_like_without(fmt: str, names: list[str]) -> None:
    names = [f"{n}-{name}" for n, name in enumerate(names)]
    text = manifest_text(fmt, names).encode("utf-8")
    plain, with_bom = outcome(text, fmt), outcome(b"\xef\xbb\xbf" + text, fmt)
    if isinstance(plain, ManifestError):
        assert str(with_bom) == str(plain)
    else:
        assert with_bom == plain


# --- CSV -----------------------------------------------------------------------------------


@PROPERTY
@given(widths=st.lists(st.integers(min_value=0, max_value=9), min_size=1, max_size=12))
def test_ragged_csv_rows_are_row_errors_naming_the_cell_count(widths: list[int]) -> None:
    body = [[f"c{n}-{i}" for i in range(width)] for n, width in enumerate(widths)]
    rows = rows_of(csv_bytes([HEADER, *body]), "csv")
    records = [cells for cells in body if any(cells)]
    assert len(rows) == len(records)
    for row, cells in zip(rows, records, strict=True):
        if len(cells) != len(HEADER):
            assert row.errors[0].field == ROW_FIELD
            assert row.errors[0].rule.startswith(f"has {len(cells)} cells but the header has 4")


@PROPERTY
@given(
    n=st.integers(min_value=1, max_value=6),
    victim=st.integers(min_value=0),
    column=st.sampled_from(HEADER),
    at=st.integers(min_value=0, max_value=40),
)
def test_a_nul_in_a_csv_cell_is_that_rows_error(n: int, victim: int, column: str, at: int) -> None:
    tasks = [task(i) for i in range(n)]
    target = victim % n
    value = tasks[target][column]
    tasks[target][column] = value[:at] + "\x00" + value[at:]
    rows = rows_of(csv_bytes([HEADER, *([t[k] for k in HEADER] for t in tasks)]), "csv")
    assert [r.row for r in rows if r.task is None] == [target + 1]
    assert (column, "must not contain NUL characters") in {
        (e.field, e.rule) for e in rows[target].errors
    }


# --- JSON and JSON Lines -------------------------------------------------------------------


@PROPERTY
@given(
    n=st.integers(min_value=1, max_value=8),
    broken=st.integers(min_value=0),
    cut=st.integers(min_value=1, max_value=60),
)
def test_one_broken_jsonl_line_is_one_invalid_row(n: int, broken: int, cut: int) -> None:
    lines = [json.dumps(task(i)) for i in range(n)]
    target = broken % n
    lines[target] = lines[target][: min(cut, len(lines[target]) - 1)]
    rows = rows_of("".join(line + "\n" for line in lines).encode(), "jsonl")
    assert [r.row for r in rows] == list(range(1, n + 1))
    assert [r.row for r in rows if r.task is None] == [target + 1]
    assert rows[target].errors[0].rule.startswith("invalid JSON")


@pytest.mark.parametrize("fmt", ["json", "jsonl"])
@PROPERTY
@given(key=st.sampled_from([*STRING_FIELDS, "tags", "x"]), second=st.text(max_size=10))
def test_duplicate_keys_name_the_key(fmt: str, key: str, second: str) -> None:
    body = json.dumps(VALID)[:-1] + f", {json.dumps(key)}: 1, {json.dumps(key)}: "
    body += json.dumps(second) + "}"
    data = ("[" + body + "]" if fmt == "json" else body + "\n").encode()
    [row] = rows_of(data, fmt)
    assert (key, "is given more than once") in {(e.field, e.rule) for e in row.errors}


@pytest.mark.parametrize("fmt", ["json", "jsonl"])
@PROPERTY
@given(
    field=st.sampled_from(STRING_FIELDS),
    value=st.integers() | st.floats() | st.booleans() | st.lists(st.integers(), max_size=2),
)
def test_a_number_where_a_string_belongs_names_the_field(
    fmt: str, field: str, value: object
) -> None:
    assume(value != [])  # an empty list is "absent"-like for no field; still an error below
    data = json.dumps([{**VALID, field: value}] if fmt == "json" else {**VALID, field: value})
    [row] = rows_of((data + "\n").encode(), fmt)
    assert row.task is None
    assert (field, "must be a string") in {(e.field, e.rule) for e in row.errors}


def _nested(depth: int, kind: str) -> str:
    if kind == "array":
        return "[" * depth + "]" * depth
    if kind == "object":
        return '{"a":' * depth + "1" + "}" * depth
    return "[" * depth  # never closed


@pytest.mark.parametrize("fmt", ["json", "jsonl"])
@pytest.mark.parametrize("kind", ["array", "object", "open"])
@pytest.mark.parametrize("where", ["task", "tags", "defaults"])
@pytest.mark.parametrize("depth", [10, 1_000, 100_000])
def test_deep_nesting_is_refused_cleanly(fmt: str, kind: str, where: str, depth: int) -> None:
    nested = _nested(depth, kind)
    item = nested if where == "task" else json.dumps(VALID)[:-1] + ', "tags": ' + nested + "}"
    if fmt == "json":
        text = "[" + item + "]"
        if where == "defaults":
            text = '{"defaults": {"tags": ' + nested + '}, "tasks": [' + json.dumps(VALID) + "]}"
    else:
        text = item + "\n" + json.dumps(task(2)) + "\n"
    started = time.monotonic()
    rows = outcome(text.encode(), fmt)
    if isinstance(rows, ManifestError):
        assert fmt == "json"
        message = str(rows)
        assert "nested too deeply" in message or "invalid JSON" in message or "tags" in message
    else:
        assert rows
        assert rows[0].task is None
        if fmt == "jsonl":
            assert rows[-1].task is not None  # the next line is still read
    assert time.monotonic() - started < 2


# --- size: time and memory stay bounded ------------------------------------------------


BIG = 16 * MAX_ROW_BYTES


def _huge_inputs() -> Iterator[tuple[str, str, bytes]]:
    header = ",".join(HEADER).encode() + b"\n"
    good_csv = b"vm-9,1.0.0,Linux,import-ami-1\n"
    yield "csv cell", "csv", header + b"x" * BIG + b",1.0.0,Linux,i\n" + good_csv
    yield "csv line without end", "csv", header + b"y" * BIG
    line = b"z" * 999 + b"\n"
    yield "csv quoted cell never closed", "csv", header + b'"' + line * (BIG // len(line))
    yield "csv header", "csv", b"h" * BIG + b"\n" + good_csv
    yield "csv many columns", "csv", header + b"," * BIG + b"\n" + good_csv
    yield "jsonl line", "jsonl", b'{"name": "' + b"n" * BIG + b'"}\n' + jsonl([task(1)])
    yield "jsonl whitespace", "jsonl", b" " * BIG + b"\n" + jsonl([task(1)])
    yield "json string", "json", b'["' + b"s" * BIG + b'"]'
    yield "json key", "json", b'{"' + b"k" * BIG + b'": 1}'
    yield "json whitespace", "json", b"[" + b" " * BIG + b"]"
    yield "json number", "json", b"[" + b"9" * BIG + b"]"
    yield "jsonl number", "jsonl", b'{"name": ' + b"9" * BIG + b"}\n" + jsonl([task(1)])


@pytest.mark.parametrize(
    ("label", "fmt", "data"), [pytest.param(*case, id=case[0]) for case in _huge_inputs()]
)
def test_enormous_fields_and_lines_use_bounded_time_and_memory(
    label: str, fmt: str, data: bytes
) -> None:
    source = io.BytesIO(data)
    tracemalloc.start()
    started = time.monotonic()
    refused: ManifestError | None = None
    try:
        for row in read_manifest("-", fmt=ManifestFormat(fmt), stdin=source):
            assert row.task is None or row.name.startswith("vm-")
    except ManifestError as exc:
        refused = exc
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    if refused is not None:
        assert "larger than" in str(refused) or "invalid JSON" in str(refused), str(refused)
    assert time.monotonic() - started < 10
    # The input is 16 MiB; reading it holds a few rows' worth (1 MiB each), never all of it.
    assert peak < 8 * MAX_ROW_BYTES, f"{label}: peak {peak / 1e6:.1f} MB"


# --- through the CLI ---------------------------------------------------------------------


def invoke(*args: str | Path) -> Result:
    """The real typer app in-process; the umask the CLI sets is restored afterwards."""
    umask = os.umask(0o022)
    os.umask(umask)
    try:
        return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)
    finally:
        os.umask(umask)


HOSTILE_FILES: dict[str, tuple[str, bytes, str]] = {
    "utf-16": ("csv", manifest_text("csv", ["a"]).encode("utf-16"), "not UTF-8"),
    "utf-16 without BOM": ("jsonl", manifest_text("jsonl", ["a"]).encode("utf-16-le"), "UTF-8"),
    "latin-1": ("json", manifest_text("json", ["café"]).encode("latin-1"), "not UTF-8"),
    "binary": ("jsonl", bytes(range(256)) * 4, "not UTF-8"),
    "empty csv": ("csv", b"", "no header row"),
    "empty json": ("json", b"", "the file is empty"),
    "deep json": ("json", b"[" * 200_000, "nested too deeply"),
    "broken json": ("json", b'[{"name": "a",', "invalid JSON"),
    "huge csv header": ("csv", b"h" * (2 * MAX_ROW_BYTES), "larger than 1 MiB"),
    "cr line endings": ("csv", manifest_text("csv", ["a"]).replace("\r\n", "\r").encode(), "CR"),
    "duplicate columns": ("csv", b"name,name\na,b\n", "appears more than once"),
    "nul header": ("csv", b"name,\x00x\n", "NUL"),
    "ragged rows": ("csv", csv_bytes([HEADER, ["a", "b"]]), "has 2 cells but the header has 4"),
    "a number for a name": ("jsonl", jsonl([{**VALID, "name": 7}]), "name: must be a string"),
    "duplicate keys": ("json", b'[{"name": "a", "name": "b"}]', "name: is given more than once"),
}


@pytest.mark.parametrize("command", ["validate", "run"])
@pytest.mark.parametrize("case", list(HOSTILE_FILES))
def test_the_cli_refuses_hostile_files_with_exit_2_and_no_traceback(
    tmp_path: Path, command: str, case: str
) -> None:
    fmt, data, message = HOSTILE_FILES[case]
    path = tmp_path / f"manifest.{fmt}"
    path.write_bytes(data)
    args: list[str | Path] = [command, path]
    if command == "run":
        args += ["--endpoint-url", "http://127.0.0.1:9", "--region", "us-east-1"]
        args += ["--progress", "off"]
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert message in " ".join(result.output.split()), result.output
    assert not list(tmp_path.glob("*.report.json"))  # nothing was run
