"""Manifest reading and validation: every rule, every format, hostile input."""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from ibimport.domain.apimodel import VERSION_NODE_MAX, import_vm_image_rules
from ibimport.domain.tokens import client_token
from ibimport.errors import ConfigError, ManifestError
from ibimport.manifest import (
    MAX_CSV_FIELD,
    MAX_ROW_BYTES,
    ROW_FIELD,
    FieldError,
    ImageRequest,
    ManifestFormat,
    ManifestRow,
    detect_format,
    manifest_fingerprint,
    parse_tag_option,
    read_manifest,
)
from ibimport.manifest._validate import SAME_IMAGE

RULES = import_vm_image_rules()
# An image name is a ResourceName (3 to 128 characters), stricter than the request's own
# shape (up to 1024): see apimodel.name_problem.
NAME_MIN, NAME_MAX = 3, 128
NAME_RULE = "an image name is 3 to 128 letters, digits, hyphens, underscores and inner spaces"
LOG_PREFIX = "/aws/imagebuilder/"
LOG_GROUP = LOG_PREFIX + "migration"
DESC_MAX = RULES.fields["description"].max_len or 0
TOKEN_MAX = RULES.fields["clientToken"].max_len or 0
LOG_MAX = RULES.log_group_name.max_len or 0
KEY_MAX = RULES.tag_key.max_len or 0
VALUE_MAX = RULES.tag_value.max_len or 0

VALID: dict[str, Any] = {
    "name": "web-frontend-03",
    "semanticVersion": "1.0.0",
    "platform": "Linux",
    "vmImportTaskId": "import-ami-0abc1234def567890",
}
HEADER = "name,semanticVersion,platform,vmImportTaskId"
CSV_ROW = "web-frontend-03,1.0.0,Linux,import-ami-0abc1234def567890"


def write(tmp_path: Path, content: str | bytes, ext: str) -> Path:
    path = tmp_path / f"manifest.{ext}"
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def read(tmp_path: Path, content: str | bytes, ext: str, **kwargs: Any) -> list[ManifestRow]:
    return list(read_manifest(write(tmp_path, content, ext), **kwargs))


def jsonl(tmp_path: Path, *tasks: Any, **kwargs: Any) -> list[ManifestRow]:
    text = "".join((t if isinstance(t, str) else json.dumps(t)) + "\n" for t in tasks)
    return read(tmp_path, text, "jsonl", **kwargs)


def one(tmp_path: Path, **fields: Any) -> ManifestRow:
    """The row of a one-task JSONL manifest: VALID with ``fields`` changed (None deletes)."""
    task = {**VALID, **fields}
    task = {k: v for k, v in task.items() if v is not None}
    [row] = jsonl(tmp_path, task)
    return row


def rules(row: ManifestRow) -> set[tuple[str, str]]:
    return {(e.field, e.rule) for e in row.errors}


# --- the model and its constraints --------------------------------------------------


def test_valid_row_gives_a_frozen_task_with_api_params(tmp_path: Path) -> None:
    row = one(tmp_path, description="d", osVersion="Ubuntu 22.04", logGroupName=LOG_GROUP)
    assert row.errors == ()
    assert row.task is not None
    assert (row.row, row.name, row.semantic_version) == (1, "web-frontend-03", "1.0.0")
    assert row.task.api_params() == {
        **VALID,
        "description": "d",
        "osVersion": "Ubuntu 22.04",
        "loggingConfiguration": {"logGroupName": LOG_GROUP},
    }
    with pytest.raises(ValidationError):
        row.task.name = "other"


@pytest.mark.parametrize(
    ("fields", "field", "rule"),
    [
        ({"name": None}, "name", "is required"),
        ({"name": "x" * (NAME_MAX + 1)}, "name", f"it must be at most {NAME_MAX} characters"),
        ({"name": "x" * (NAME_MIN - 1)}, "name", f"it must be at least {NAME_MIN} characters"),
        ({"semanticVersion": None}, "semanticVersion", "is required"),
        ({"semanticVersion": "1.0"}, "semanticVersion", "must match ^[0-9]+\\.[0-9]+\\.[0-9]+$"),
        (
            {"semanticVersion": "1.0.0\n"},
            "semanticVersion",
            "must match ^[0-9]+\\.[0-9]+\\.[0-9]+$",
        ),
        ({"semanticVersion": "v1.0.0"}, "semanticVersion", "must match ^[0-9]+\\.[0-9]+\\.[0-9]+$"),
        (
            {"semanticVersion": f"1.0.{VERSION_NODE_MAX + 1}"},
            "semanticVersion",
            f"each version node must be between 0 and {VERSION_NODE_MAX}",
        ),
        (
            {"semanticVersion": "1.0." + "9" * 5000},  # int() would refuse this many digits
            "semanticVersion",
            f"each version node must be between 0 and {VERSION_NODE_MAX}",
        ),
        ({"description": "x" * (DESC_MAX + 1)}, "description", "must be at most 1024 characters"),
        ({"platform": None}, "platform", "is required"),
        ({"platform": "linux"}, "platform", "must be one of Windows, Linux, macOS"),
        ({"platform": "Linux "}, "platform", "must be one of Windows, Linux, macOS"),
        ({"vmImportTaskId": None}, "vmImportTaskId", "is required"),
        ({"vmImportTaskId": "i" * 1025}, "vmImportTaskId", "must be at most 1024 characters"),
        ({"clientToken": "t" * (TOKEN_MAX + 1)}, "clientToken", "must be at most 64 characters"),
        (
            {"logGroupName": "has space"},
            "logGroupName",
            f"must match {RULES.log_group_name.pattern}",
        ),
        ({"logGroupName": "a" * (LOG_MAX + 1)}, "logGroupName", "must be at most 512 characters"),
        ({"name": 5}, "name", "must be a string"),
        ({"semanticVersion": 1.0}, "semanticVersion", "must be a string"),
        ({"platform": True}, "platform", "must be a string"),
        ({"osVersion": ["Ubuntu"]}, "osVersion", "must be a string"),
        ({"description": "\ud800"}, "description", "must be valid Unicode"),
        ({"tags": ["Env"]}, "tags", "must be an object of tag keys to string values"),
        ({"tags": {"Env": 1}}, "tag:Env", "value must be a string"),
        ({"tags": {"aws:owner": "me"}}, "tag:aws:owner", "key must not start with aws: (reserved)"),
        ({"tags": {"bad#key": "v"}}, "tag:bad#key", f"key must match {RULES.tag_key.pattern}"),
        (
            {"tags": {"k" * (KEY_MAX + 1): "v"}},
            "tag:" + "k" * 39 + "…",
            "key must be at most 128 characters",
        ),
        (
            {"tags": {"Env": "v" * (VALUE_MAX + 1)}},
            "tag:Env",
            "value must be at most 256 characters",
        ),
        (
            {"tags": {f"k{i}": "v" for i in range(RULES.tags_max + 1)}},
            "tags",
            "must have at most 50 tags",
        ),
    ],
)
def test_each_constraint(tmp_path: Path, fields: dict[str, Any], field: str, rule: str) -> None:
    row = one(tmp_path, **fields)
    assert row.task is None
    assert any(e.field == field and e.rule.startswith(rule) for e in row.errors), row.describe()


def test_lone_surrogate_in_a_tag_key_is_a_printable_error(tmp_path: Path) -> None:
    row = one(tmp_path, tags={"\udc00": "v"})
    [error] = row.errors
    assert error.field.startswith("tag:")
    assert error.rule == "key must be valid Unicode (it holds a lone surrogate escape)"
    row.describe()[0].encode("utf-8")


@pytest.mark.parametrize(
    "fields",
    [
        {"name": "x" * NAME_MAX},
        {"name": "x" * NAME_MIN},
        {"name": "Web 01_a-B"},  # inner space, underscore, hyphen, both cases
        {"description": "x" * DESC_MAX},
        {"semanticVersion": f"{VERSION_NODE_MAX}.0.{VERSION_NODE_MAX}"},
        {"semanticVersion": f"0.0.000{VERSION_NODE_MAX}"},  # leading zeros do not count
        {"clientToken": "t" * TOKEN_MAX},
        {"logGroupName": LOG_PREFIX + "a" * (LOG_MAX - len(LOG_PREFIX))},
        {"osVersion": "x"},
        {"tags": {f"k{i}": "v" for i in range(RULES.tags_max)}},
        {"tags": {"k" * KEY_MAX: "v" * VALUE_MAX, "Empty": ""}},
        {"tags": {"With space_.:/=+-@": "ok"}},
        {"platform": "macOS"},
    ],
)
def test_values_at_the_limits_are_valid(tmp_path: Path, fields: dict[str, Any]) -> None:
    row = one(tmp_path, **fields)
    assert row.errors == ()
    assert row.task is not None


def test_fqdn_name_is_refused_naming_the_dot_and_suggesting_a_name(tmp_path: Path) -> None:
    row = one(tmp_path, name="web01.corp.example.com")
    assert row.task is None
    assert rules(row) == {
        ("name", f"'.' at position 6 is not allowed: {NAME_RULE}; try 'web01-corp-example-com'")
    }
    assert one(tmp_path, name="web01-corp-example-com").task is not None  # the suggestion fits


@pytest.mark.parametrize(
    ("name", "why", "suggestion"),
    [
        ("ab", f"it must be at least {NAME_MIN} characters", None),
        ("x" * (NAME_MAX + 1), f"it must be at most {NAME_MAX} characters", "x" * NAME_MAX),
        (" web-01", "it must not start or end with a space", "web-01"),
        ("web-01 ", "it must not start or end with a space", "web-01"),
    ],
)
def test_name_outside_the_resource_name_rule_is_refused(
    tmp_path: Path, name: str, why: str, suggestion: str | None
) -> None:
    row = one(tmp_path, name=name)
    assert row.task is None
    tail = f"; try {suggestion!r}" if suggestion else ""
    assert rules(row) == {("name", f"{why}: {NAME_RULE}{tail}")}


@pytest.mark.parametrize("log_group", ["/a/b", "/ibimport/migration", "/aws/imagebuilder"])
def test_log_group_outside_aws_imagebuilder_is_refused(tmp_path: Path, log_group: str) -> None:
    row = one(tmp_path, logGroupName=log_group)
    assert row.task is None
    assert rules(row) == {
        (
            "logGroupName",
            "must be within /aws/imagebuilder/ (ImportVmImage's log groups live there)",
        )
    }


def test_unknown_field_is_an_error_with_a_suggestion(tmp_path: Path) -> None:
    row = one(tmp_path, platform=None, platfrom="Linux")
    assert rules(row) == {
        ("platfrom", "unknown field (did you mean platform?)"),
        ("platform", "is required"),
    }
    assert one(tmp_path, Name="x").errors[0].rule == "unknown field (did you mean name?)"
    assert one(tmp_path, zzz="x").errors[0].rule.startswith("unknown field (expected one of name,")


def test_describe_names_row_field_rule_and_shortened_value(tmp_path: Path) -> None:
    rows = jsonl(tmp_path, VALID, {**VALID, "name": "vm-b", "platform": "Win\x1b[31m" + "x" * 100})
    [line] = rows[1].describe()
    assert line.startswith(r"row 2: platform: must be one of Windows, Linux, macOS (Win\x1b[31mxxx")
    assert line.endswith("…)")
    assert "\x1b" not in line
    assert one(tmp_path, name=None).describe() == ["row 1: name: is required"]


def test_invalid_rows_keep_a_best_effort_identity(tmp_path: Path) -> None:
    row = one(tmp_path, platform="Solaris")
    assert (row.name, row.semantic_version, row.task) == ("web-frontend-03", "1.0.0", None)
    assert one(tmp_path, name=7).name == ""


# --- absent values --------------------------------------------------------------------


def test_null_and_empty_json_values_are_absent(tmp_path: Path) -> None:
    row = one(tmp_path, description="", osVersion=None, tags={})
    [explicit] = jsonl(tmp_path, {**VALID, "description": None, "logGroupName": ""})
    assert row.task is not None
    assert explicit.task is not None
    assert row.task.description is None
    assert client_token(row.task) == client_token(ImageRequest(**VALID))
    assert client_token(explicit.task) == client_token(row.task)


def test_empty_csv_cell_is_absent_like_a_missing_json_key(tmp_path: Path) -> None:
    [from_csv] = read(
        tmp_path,
        f"{HEADER},description,osVersion,tag:Env,tags,clientToken\n{CSV_ROW},,,,,\n",
        "csv",
    )
    [from_jsonl] = jsonl(tmp_path, VALID)
    assert from_csv.task is not None
    assert from_jsonl.task is not None
    assert from_csv.task == from_jsonl.task
    assert from_csv.task.tags == {}


# --- CSV ------------------------------------------------------------------------------------


def test_csv_tags_from_tag_columns_and_a_tags_json_column(tmp_path: Path) -> None:
    text = f'{HEADER},tag:Env,tags,tag:Wave\n{CSV_ROW},prod,"{{""Team"": ""x""}}",3\n'
    [row] = read(tmp_path, text, "csv")
    assert row.task is not None
    assert row.task.tags == {"Env": "prod", "Team": "x", "Wave": "3"}


def test_csv_tag_given_twice_with_different_values_is_an_error(tmp_path: Path) -> None:
    text = f'{HEADER},tag:Env,tags\n{CSV_ROW},prod,"{{""Env"": ""dev""}}"\n'
    [row] = read(tmp_path, text, "csv")
    assert rules(row) == {("tag:Env", "differs between the tags column and its tag: column")}


@pytest.mark.parametrize(
    "cell", ['"Env=prod"', '"[1]"', '"{""a"": ""1"", ""a"": ""2""}"', '"' + "[" * 5000 + '"']
)
def test_csv_bad_tags_cell_is_a_row_error(tmp_path: Path, cell: str) -> None:
    rows = read(tmp_path, f"{HEADER},tags\n{CSV_ROW},{cell}\nvm-b,1.0.0,Linux,i-1,\n", "csv")
    assert rows[0].task is None
    assert rows[0].errors[0].field in ("tags", "tag:a")
    assert rows[1].task is not None


def test_csv_unknown_column_errs_only_where_it_holds_data(tmp_path: Path) -> None:
    text = (
        f"{HEADER},notes,platfrom\n{CSV_ROW},,\n"
        "vm-b,1.0.0,Linux,i-1,,Linux\nvm-c,1.0.0,Linux,i-2,hi,\n"
    )
    rows = read(tmp_path, text, "csv")
    assert rows[0].task is not None
    assert rules(rows[1]) == {("platfrom", "unknown field (did you mean platform?)")}
    assert rows[2].errors[0].field == "notes"


def test_csv_header_is_stripped_and_checked(tmp_path: Path) -> None:
    [row] = read(tmp_path, " name , semanticVersion,platform,vmImportTaskId\n" + CSV_ROW, "csv")
    assert row.task is not None
    with pytest.raises(ManifestError, match="appears more than once"):
        read(tmp_path, f"{HEADER},name\n", "csv")
    with pytest.raises(ManifestError, match="needs a tag key"):
        read(tmp_path, f"{HEADER},tag:\n", "csv")
    with pytest.raises(ManifestError, match="no header row"):
        read(tmp_path, "\n\n", "csv")
    assert read(tmp_path, HEADER + "\n", "csv") == []


def test_csv_ragged_rows_are_row_errors(tmp_path: Path) -> None:
    text = f"{HEADER}\n{CSV_ROW},extra\nvm-b,1.0.0\nvm-c,1.0.0,Linux,i-2,,\n"
    rows = read(tmp_path, text, "csv")
    assert rules(rows[0]) == {(ROW_FIELD, "has 5 cells but the header has 4 (line 2)")}
    assert rules(rows[1]) == {(ROW_FIELD, "has 2 cells but the header has 4 (line 3)")}
    assert rows[2].task is not None  # trailing empty cells, as spreadsheets write them


def test_csv_value_in_a_column_without_header(tmp_path: Path) -> None:
    rows = read(tmp_path, f"{HEADER},\n{CSV_ROW},\nvm-b,1.0.0,Linux,i-2,x\n", "csv")
    assert rows[0].task is not None
    assert rules(rows[1]) == {("column 5", "has a value but no column header")}


def test_csv_row_numbers_count_tasks_not_lines(tmp_path: Path) -> None:
    text = (
        f'{HEADER},description\n\n{CSV_ROW},"two\nlines"\n'
        ",,,,\nvm-b,1.0.0,Linux,i-2,\nvm-c,1.0,Linux,i-3,\n"
    )
    rows = read(tmp_path, text, "csv")
    assert [r.row for r in rows] == [1, 2, 3]
    assert rows[0].task is not None
    assert rows[0].task.description == "two\nlines"
    assert rows[2].describe() == [
        r"row 3: semanticVersion: must match ^[0-9]+\.[0-9]+\.[0-9]+$ (1.0)"
    ]


def test_csv_nul_in_a_cell_is_a_row_error(tmp_path: Path) -> None:
    rows = read(tmp_path, f"{HEADER}\nweb\x00,1.0.0,Linux,i-1\n{CSV_ROW}\n", "csv")
    assert rules(rows[0]) == {
        ("name", "must not contain NUL characters"),
        ("name", "is required"),
    }
    assert rows[1].task is not None


def test_csv_field_over_the_limit_is_a_row_error_and_reading_goes_on(tmp_path: Path) -> None:
    huge = "x" * (MAX_CSV_FIELD + 1)
    text = f'{HEADER},description\n{CSV_ROW},"{huge}"\nvm-b,1.0.0,Linux,i-2,\n'
    rows = read(tmp_path, text, "csv")
    assert rows[0].errors[0].field == ROW_FIELD
    assert "a cell is larger than 128 KiB" in rows[0].errors[0].rule
    assert rows[1].task is not None


def test_csv_record_over_the_row_limit_is_a_row_error(tmp_path: Path) -> None:
    big = ",".join(["x" * 1000] * (MAX_ROW_BYTES // 1000 + 10))
    rows = read(tmp_path, f"{HEADER}\n{big}\n{CSV_ROW}\n", "csv")
    assert rules(rows[0]) == {(ROW_FIELD, "is larger than 1 MiB")}
    assert rows[1].task is not None
    assert [r.row for r in rows] == [1, 2]


def test_csv_unclosed_quote_neither_hangs_nor_raises(tmp_path: Path) -> None:
    rows = read(tmp_path, f'{HEADER}\n"web,1.0.0,Linux,i-1\n' + "a,b,c,d\n" * 50, "csv")
    assert all(r.task is None for r in rows)


# --- JSON Lines --------------------------------------------------------------------------


def test_jsonl_broken_line_is_one_invalid_row(tmp_path: Path) -> None:
    rows = jsonl(tmp_path, VALID, '{"name": "vm-b", broken', "", "   ", {**VALID, "name": "vm-c"})
    assert [r.row for r in rows] == [1, 2, 3]
    assert rows[0].task is not None
    assert rows[2].task is not None
    [error] = rows[1].errors
    assert error.field == ROW_FIELD
    assert error.rule.startswith("invalid JSON: Expecting property name")
    assert error.rule.endswith("(line 2)")


@pytest.mark.parametrize(
    ("line", "rule"),
    [
        ("[" * 100_000, "invalid JSON: nested too deeply"),
        ("1" * 5000, "invalid JSON: a number has more than 4300 digits"),
        ('"just a string"', "must be a JSON object (a task)"),
        ("[1, 2]", "must be a JSON object (a task)"),
        ("null", "must be a JSON object (a task)"),
        ('{"a": 1} {"b": 2}', "invalid JSON: Extra data"),
    ],
)
def test_jsonl_hostile_lines_are_row_errors(tmp_path: Path, line: str, rule: str) -> None:
    rows = jsonl(tmp_path, line, VALID)
    assert rows[0].errors[0].rule.startswith(rule), rows[0].describe()
    assert rows[1].task is not None


def test_jsonl_duplicate_keys_are_errors(tmp_path: Path) -> None:
    line = json.dumps(VALID)[:-1] + ', "name": "other", "tags": {"a": "1", "a": "2"}}'
    [row] = jsonl(tmp_path, line)
    assert rules(row) == {("name", "is given more than once"), ("tag:a", "is given more than once")}


def test_jsonl_line_over_the_limit_is_a_row_error(tmp_path: Path) -> None:
    rows = jsonl(tmp_path, {**VALID, "description": "x" * MAX_ROW_BYTES}, {**VALID, "name": "vm-b"})
    assert rules(rows[0]) == {(ROW_FIELD, "is larger than 1 MiB")}
    assert rows[1].task is not None


# --- JSON ---------------------------------------------------------------------------------


def test_json_array(tmp_path: Path) -> None:
    rows = read(tmp_path, json.dumps([VALID, {**VALID, "name": "vm-b"}, 5]), "json")
    assert [r.task is not None for r in rows] == [True, True, False]
    assert rows[2].describe() == ["row 3: (row): must be a JSON object (a task) (5)"]
    assert read(tmp_path, " [ ] ", "json") == []


def test_json_defaults_are_merged_under_each_task(tmp_path: Path) -> None:
    doc = {
        "defaults": {
            "platform": "Windows",
            "osVersion": "Windows 2019",
            "tags": {"Env": "prod", "W": "1"},
        },
        "tasks": [
            {"name": "vm-a", "semanticVersion": "1.0.0", "vmImportTaskId": "i-1"},
            {
                "name": "vm-b",
                "semanticVersion": "1.0.0",
                "vmImportTaskId": "i-2",
                "platform": "Linux",
                "osVersion": None,
                "tags": {"Env": "dev"},
            },
        ],
    }
    a, b = read(tmp_path, json.dumps(doc), "json")
    assert a.task is not None
    assert b.task is not None
    assert (a.task.platform, a.task.osVersion, a.task.tags) == (
        "Windows",
        "Windows 2019",
        {"Env": "prod", "W": "1"},
    )
    assert (b.task.platform, b.task.osVersion, b.task.tags) == (
        "Linux",
        "Windows 2019",
        {"Env": "dev", "W": "1"},
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"tasks": [], "defaults": {}}', "'defaults' must come before 'tasks'"),
        ('{"defaults": {}}', "no 'tasks' array"),
        ('{"tasks": {}}', "'tasks' must be an array"),
        ('{"task": []}', "unknown top-level key 'task'"),
        ('{"defaults": {"platfrom": "Linux"}, "tasks": []}', "did you mean platform"),
        ('{"defaults": {"clientToken": "t"}, "tasks": []}', "cannot set clientToken"),
        ('{"defaults": [], "tasks": []}', "'defaults' must be an object"),
        ('{"defaults": {"tags": ["a"]}, "tasks": []}', "tags must be an object"),
        ('{"tasks": [], "tasks": []}', "appears more than once"),
        ("", "the file is empty"),
        ('"tasks"', "expected a JSON array of tasks"),
        ("[{}, ", "invalid JSON in task 2"),
        ("[{} {}]", "expected ',' or ']' after task 1"),
        ("[{},]", "trailing comma after task 1"),
        ("[{}] x", "unexpected data after the end"),
        ("[" * 100_000, "task 1 is nested too deeply"),
        ("[" + "1" * 5000 + "]", "a number has more than 4300 digits"),
    ],
)
def test_json_structure_errors_are_manifest_errors(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ManifestError, match=message.replace("[", r"\[").replace("(", r"\(")):
        read(tmp_path, text, "json")


def test_json_syntax_error_names_the_line(tmp_path: Path) -> None:
    text = (
        "[\n"
        + ",\n".join(json.dumps({**VALID, "name": f"vm-{i}"}) for i in range(3))
        + ",\n{oops}\n]"
    )
    with pytest.raises(ManifestError, match=r"invalid JSON in task 4: .* \(line 5, column 2\)"):
        read(tmp_path, text, "json")


def test_json_streams_across_chunks_including_a_split_number(tmp_path: Path) -> None:
    tasks = [{**VALID, "name": f"vm-{i}", "description": "d" * 500} for i in range(400)]
    body = ",".join(json.dumps(t) for t in tasks)
    # a bare number straddling the 64 KiB chunk boundary must be read whole
    pad = 64 * 1024 - len("[") - 3
    text = "[" + " " * pad + "123456," + body + "]"
    rows = read(tmp_path, text, "json")
    assert len(rows) == 401
    assert rows[0].errors[0].value == "123456"
    assert all(r.task is not None for r in rows[1:])
    assert rows[-1].name == "vm-399"


def test_json_element_over_the_row_limit_is_refused(tmp_path: Path) -> None:
    text = json.dumps([VALID, {**VALID, "description": "x" * (MAX_ROW_BYTES + 10)}])
    with pytest.raises(ManifestError, match="task 2 is larger than 1 MiB"):
        read(tmp_path, text, "json")


def test_json_duplicate_keys_are_errors(tmp_path: Path) -> None:
    text = "[" + json.dumps(VALID)[:-1] + ', "platform": "Windows"}]'
    [row] = read(tmp_path, text, "json")
    assert rules(row) == {("platform", "is given more than once")}


# --- encodings --------------------------------------------------------------------------------

FORMATS = [
    ("csv", f"{HEADER}\n{CSV_ROW}\n"),
    ("jsonl", json.dumps(VALID) + "\n"),
    ("json", json.dumps([VALID])),
]


@pytest.mark.parametrize(("ext", "text"), FORMATS)
def test_utf8_with_bom_is_read(tmp_path: Path, ext: str, text: str) -> None:
    [row] = read(tmp_path, codecs.BOM_UTF8 + text.encode(), ext)
    assert row.task is not None
    assert row.name == "web-frontend-03"


@pytest.mark.parametrize(("ext", "text"), FORMATS)
@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-32"])
def test_utf16_and_utf32_are_refused(tmp_path: Path, ext: str, text: str, encoding: str) -> None:
    with pytest.raises(ManifestError, match="not UTF-8"):
        read(tmp_path, text.encode(encoding), ext)


@pytest.mark.parametrize(("ext", "text"), FORMATS)
def test_latin1_is_refused_naming_offset_and_line(tmp_path: Path, ext: str, text: str) -> None:
    data = text.replace("web-frontend", "café").encode("latin-1")
    offset = data.index(b"\xe9")
    line = data[:offset].count(b"\n") + 1
    with pytest.raises(ManifestError) as info:
        read(tmp_path, data, ext)
    assert f"not UTF-8: byte 0xE9 at byte offset {offset} (line {line})" in str(info.value)


def test_non_utf8_deep_in_a_streamed_json_names_the_right_offset(tmp_path: Path) -> None:
    head = "[" + ",\n".join(json.dumps({**VALID, "name": f"vm-{i}"}) for i in range(2000)) + ",\n"
    data = head.encode() + b'{"name": "caf\xe9"}]'
    with pytest.raises(ManifestError) as info:
        list(read_manifest(write(tmp_path, data, "json")))
    assert f"byte offset {len(head) + 13} (line 2001)" in str(info.value)


# --- sources, formats, options ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("a.csv", "csv"),
        ("a.CSV", "csv"),
        ("a.json", "json"),
        ("x/a.jsonl", "jsonl"),
        ("a.ndjson", "jsonl"),
    ],
)
def test_detect_format(name: str, fmt: str) -> None:
    assert detect_format(name) is ManifestFormat(fmt)


def test_unknown_extension_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="cannot tell the format"):
        detect_format("a.txt")
    with pytest.raises(ManifestError, match="cannot read"):
        read_manifest(tmp_path / "missing.csv")  # raised at call time, not at first row
    (tmp_path / "d.csv").mkdir()
    with pytest.raises(ManifestError, match="is a directory"):
        read_manifest(tmp_path / "d.csv")


def test_explicit_format_overrides_the_extension(tmp_path: Path) -> None:
    path = write(tmp_path, json.dumps(VALID) + "\n", "txt")
    [row] = read_manifest(path, fmt=ManifestFormat.JSONL)
    assert row.task is not None


@pytest.mark.parametrize(("ext", "text"), FORMATS)
def test_stdin(ext: str, text: str) -> None:
    [row] = read_manifest("-", fmt=ManifestFormat(ext), stdin=io.BytesIO(text.encode()))
    assert row.task is not None
    with pytest.raises(ManifestError, match="needs its format"):
        read_manifest("-", stdin=io.BytesIO(text.encode()))


class _Endless(io.RawIOBase):
    """A source that never ends: reading a manifest must still yield rows one by one."""

    def __init__(self, head: bytes, item: bytes) -> None:
        self._buf = head
        self._item = item

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while len(self._buf) < len(b):
            self._buf += self._item
        n = len(b)
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


@pytest.mark.parametrize(
    ("fmt", "head", "item"),
    [
        ("csv", f"{HEADER}\n".encode(), b"vm-n,1.0.0,Linux,i-1\n"),
        ("jsonl", b"", json.dumps({**VALID, "name": "vm-n"}).encode() + b"\n"),
        ("json", b"[", json.dumps({**VALID, "name": "vm-n"}).encode() + b","),
    ],
)
def test_reading_streams(fmt: str, head: bytes, item: bytes) -> None:
    stream = io.BufferedReader(_Endless(head, item))
    rows = read_manifest("-", fmt=ManifestFormat(fmt), stdin=stream)
    first = [next(rows) for _ in range(5)]
    assert [r.row for r in first] == [1, 2, 3, 4, 5]
    assert first[0].task is not None
    assert rules(first[1]) == {("name", "duplicate of row 1 " + SAME_IMAGE)}


def test_extra_tags_are_added_and_count_toward_the_limit(tmp_path: Path) -> None:
    many = {f"k{i}": "v" for i in range(RULES.tags_max - 1)}
    rows = jsonl(
        tmp_path,
        VALID,
        {**VALID, "name": "vm-b", "tags": {"Wave": "3"}},
        {**VALID, "name": "vm-c", "tags": {"Wave": "2"}},
        {**VALID, "name": "vm-d", "tags": many},
        extra_tags={"Wave": "3", "Batch": "x"},
    )
    assert rows[0].task is not None
    assert rows[0].task.tags == {"Wave": "3", "Batch": "x"}
    assert rows[1].task is not None
    assert rules(rows[2]) == {("tag:Wave", "conflicts with --tag Wave=3")}
    assert rules(rows[3]) == {("tags", "must have at most 50 tags")}


def test_extra_tags_apply_to_csv_too(tmp_path: Path) -> None:
    [row] = read(tmp_path, f"{HEADER}\n{CSV_ROW}\n", "csv", extra_tags={"Wave": "3"})
    assert row.task is not None
    assert row.task.tags == {"Wave": "3"}


def test_invalid_extra_tag_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="aws:"):
        read_manifest(write(tmp_path, "", "jsonl"), extra_tags={"aws:x": "1"})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Wave=3", ("Wave", "3")),
        ("a=b=c", ("a", "b=c")),
        ("Note=", ("Note", "")),
        ("Cost Center=1", ("Cost Center", "1")),
    ],
)
def test_parse_tag_option(text: str, expected: tuple[str, str]) -> None:
    assert parse_tag_option(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("novalue", "expects KEY=VALUE"),
        ("=x", "expects KEY=VALUE"),
        ("aws:x=1", "must not start with aws:"),
        ("a#b=1", "key must match"),
        ("k=" + "v" * 257, "value must be at most 256 characters"),
    ],
)
def test_parse_tag_option_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_tag_option(text)


def test_manifest_fingerprint(tmp_path: Path) -> None:
    data = (f"{HEADER}\n" + f"{CSV_ROW}\n" * 50_000).encode()
    path = write(tmp_path, data, "csv")
    assert manifest_fingerprint(path) == hashlib.sha256(data).hexdigest()
    with pytest.raises(ManifestError):
        manifest_fingerprint("-")
    with pytest.raises(ManifestError):
        manifest_fingerprint(tmp_path / "missing.csv")


# --- duplicates ------------------------------------------------------------------------


def test_repeat_of_name_and_version_is_the_invalid_row(tmp_path: Path) -> None:
    rows = jsonl(
        tmp_path,
        VALID,
        {**VALID, "semanticVersion": "1.0.1"},
        {**VALID, "name": "other"},
        {**VALID, "vmImportTaskId": "i-different"},
    )
    assert [r.task is not None for r in rows] == [True, True, True, False]
    assert rows[3].describe() == [
        "row 4: name: duplicate of row 1 " + SAME_IMAGE + " (web-frontend-03 1.0.0)"
    ]


def test_names_differing_in_case_spaces_or_underscores_are_one_image(tmp_path: Path) -> None:
    rows = jsonl(
        tmp_path,
        {**VALID, "name": "Web 01"},
        {**VALID, "name": "WEB-01", "vmImportTaskId": "i-2"},
        {**VALID, "name": "web_01", "vmImportTaskId": "i-3"},
        {**VALID, "name": "web-01", "semanticVersion": "1.0.1", "vmImportTaskId": "i-4"},
    )
    assert [r.task is not None for r in rows] == [True, False, False, True]
    assert rows[1].describe() == [
        "row 2: name: duplicate of row 1 " + SAME_IMAGE + " (WEB-01 1.0.0)"
    ]
    assert rows[2].describe() == [
        "row 3: name: duplicate of row 1 " + SAME_IMAGE + " (web_01 1.0.0)"
    ]
    assert rows[3].errors == ()


def test_duplicates_found_across_many_rows(tmp_path: Path) -> None:
    # crosses several growths of the identity table
    lines = [json.dumps({**VALID, "name": f"vm-{i}"}) for i in range(20_000)]
    lines += [json.dumps({**VALID, "name": f"vm-{i}"}) for i in (0, 4_097, 19_999)]
    rows = read(tmp_path, "\n".join(lines), "jsonl")
    bad = {r.row: r.errors[0].rule for r in rows if r.errors}
    assert bad == {
        20_001: "duplicate of row 1 " + SAME_IMAGE,
        20_002: "duplicate of row 4098 " + SAME_IMAGE,
        20_003: "duplicate of row 20000 " + SAME_IMAGE,
    }


def test_field_error_and_row_are_frozen() -> None:
    error = FieldError("name", "is required", "")
    with pytest.raises(AttributeError):
        error.rule = "x"  # type: ignore[misc]


# --- hostile input, property-based -----------------------------------------------------------

HOSTILE = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _drain(source: bytes, fmt: str) -> None:
    """Only ManifestRows or a ManifestError may come out; anything else fails the test."""
    try:
        for row in read_manifest("-", fmt=ManifestFormat(fmt), stdin=io.BytesIO(source)):
            assert isinstance(row, ManifestRow)
            assert (row.task is None) == bool(row.errors)
            for line in row.describe():
                line.encode("utf-8")  # printable, no lone surrogates
            row.name.encode("utf-8")
    except ManifestError:
        pass


@pytest.mark.parametrize("fmt", ["csv", "json", "jsonl"])
@HOSTILE
@given(data=st.binary(max_size=400))
def test_any_bytes(fmt: str, data: bytes) -> None:
    _drain(data, fmt)


@pytest.mark.parametrize("fmt", ["csv", "json", "jsonl"])
@HOSTILE
@given(text=st.text(alphabet=st.characters(codec="utf-8"), max_size=300))
def test_any_text(fmt: str, text: str) -> None:
    _drain(text.encode("utf-8"), fmt)


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
_field_names = st.sampled_from(
    [*VALID, "description", "osVersion", "tags", "clientToken", "logGroupName", "x"]
)
_tasks = st.dictionaries(
    _field_names, _json_values | st.sampled_from(list(VALID.values())), max_size=9
)


@HOSTILE
@given(tasks=st.lists(_tasks | _json_values, max_size=6), defaults=st.none() | _tasks)
def test_any_json_structures(tasks: list[Any], defaults: dict[str, Any] | None) -> None:
    lines = "\n".join(json.dumps(t) for t in tasks).encode()
    _drain(lines, "jsonl")
    doc = tasks if defaults is None else {"defaults": defaults, "tasks": tasks}
    _drain(json.dumps(doc).encode(), "json")


@HOSTILE
@given(
    header=st.lists(
        st.sampled_from([*VALID, "tags", "tag:Env", "description", "", "zz"]) | st.text(max_size=6),
        max_size=8,
    ),
    body=st.lists(
        st.lists(st.text(max_size=12) | st.sampled_from(list(VALID.values())), max_size=9),
        max_size=6,
    ),
)
def test_any_csv_table(header: list[str], body: list[list[str]]) -> None:
    out = io.StringIO()
    csv.writer(out).writerows([header, *body])
    _drain(out.getvalue().encode("utf-8", "surrogatepass"), "csv")


# --- Unicode normal forms ---------------------------------------------------------------

_CAFE_NFC, _CAFE_NFD = "Caf\u00e9 d\u00e9mo", "Cafe\u0301 de\u0301mo"


def test_decomposed_text_is_read_composed_so_token_and_request_agree(tmp_path: Path) -> None:
    def task(text: str) -> dict[str, Any]:
        return {**VALID, "description": text, "osVersion": text, "tags": {"Site": text}}

    [composed] = read(tmp_path, json.dumps(task(_CAFE_NFC)) + "\n", "jsonl")
    [decomposed] = read(tmp_path, json.dumps(task(_CAFE_NFD)) + "\n", "jsonl")
    assert composed.task is not None
    assert decomposed.task is not None
    # The same request, not merely the same token: the service refuses a token it has seen
    # with other parameters.
    assert (
        decomposed.task.api_params()
        == composed.task.api_params()
        == task(_CAFE_NFC) | {"platform": "Linux"}
    )
    assert client_token(decomposed.task) == client_token(composed.task)


def test_names_equal_once_composed_are_refused_alike_and_are_duplicates(tmp_path: Path) -> None:
    # An image name can no longer hold "é"; both forms are refused with the same message
    # (the decomposed one is composed first, else it would name U+0301 at position 5),
    # and they are still one identity.
    rows = read(
        tmp_path,
        "".join(json.dumps({**VALID, "name": n}) + "\n" for n in (_CAFE_NFC, _CAFE_NFD)),
        "jsonl",
    )
    refused = f"'é' at position 4 is not allowed: {NAME_RULE}; try 'Cafe demo'"
    assert rows[0].task is None
    assert rules(rows[0]) == {("name", refused)}
    assert rows[1].task is None
    assert rules(rows[1]) == {("name", refused), ("name", "duplicate of row 1 " + SAME_IMAGE)}


def test_tag_keys_equal_once_composed_are_an_error_not_a_silent_merge(tmp_path: Path) -> None:
    [row] = read(
        tmp_path, json.dumps({**VALID, "tags": {_CAFE_NFC: "a", _CAFE_NFD: "b"}}) + "\n", "jsonl"
    )
    assert row.task is None
    # (Such a key breaks the TagKey pattern too; the merge must be reported all the same.)
    twice = [e for e in row.errors if "composed and decomposed" in e.rule]
    assert [e.field for e in twice] == [f"tag:{_CAFE_NFC}"]


def test_raw_utf8_and_tag_options_are_composed_too(tmp_path: Path) -> None:
    # Not only \u escapes: UTF-8 text as written, and --tag values merged into ASCII rows.
    raw_line = json.dumps({**VALID, "description": _CAFE_NFD}, ensure_ascii=False) + "\n"
    [written] = read(tmp_path, raw_line, "jsonl")
    assert written.task is not None
    assert written.task.description == _CAFE_NFC
    [tagged] = read(tmp_path, json.dumps(VALID) + "\n", "jsonl", extra_tags={"Site": _CAFE_NFD})
    assert tagged.task is not None
    assert tagged.task.tags == {"Site": _CAFE_NFC}


def test_a_tag_option_equal_once_composed_is_no_conflict(tmp_path: Path) -> None:
    line = json.dumps({**VALID, "tags": {"Site": _CAFE_NFD}}, ensure_ascii=False) + "\n"
    [row] = read(tmp_path, line, "jsonl", extra_tags={"Site": _CAFE_NFC})
    assert row.errors == ()
    assert row.task is not None
    assert row.task.tags == {"Site": _CAFE_NFC}


def test_a_read_of_some_rows_validates_only_those_and_knows_the_repeats_it_cannot_see(
    tmp_path: Path,
) -> None:
    path = tmp_path / "m.csv"
    path.write_text(
        "name,semanticVersion,platform,vmImportTaskId,region\n"
        "vm-a,1.0.0,Linux,import-ami-1,us-east-1\n"
        "vm-b,1.0.0,Linux,import-ami-2,eu-west-1\n"
        "VM_A,1.0.0,Linux,import-ami-3,eu-west-1\n"
        "vm-c,1.0.0,Linux,import-ami-4,eu-west-1\n",
        encoding="utf-8",
    )
    duplicates: dict[int, int] = {}
    everything = list(read_manifest(path, duplicates=duplicates))
    assert duplicates == {3: 1}
    assert [r.task is not None for r in everything] == [True, True, False, True]
    some = list(read_manifest(path, only=lambda n: n in (2, 3, 4), duplicates=duplicates))
    assert [r.row for r in some] == [2, 3, 4]
    assert some[1].task is None  # a repeat of row 1, which this read never sees
    assert "duplicate of row 1" in some[1].errors[0].rule
    assert some[0].task is not None
    assert some[0].task.region == "eu-west-1"
