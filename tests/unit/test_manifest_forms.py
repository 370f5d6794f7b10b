"""The manifest's other spellings and mistakes (issue 14): each accepted or named once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ibimport.domain.tokens import client_token
from ibimport.errors import ManifestError
from ibimport.manifest import ManifestRow, read_manifest

TASK = {
    "name": "web-01",
    "semanticVersion": "1.0.0",
    "platform": "Linux",
    "vmImportTaskId": "import-ami-0abc",
}
GROUP = "/aws/imagebuilder/migration"


def _rows(tmp_path: Path, text: str, suffix: str) -> list[ManifestRow]:
    path = tmp_path / f"m.{suffix}"
    path.write_text(text, encoding="utf-8")
    return list(read_manifest(path))


def test_the_apis_nested_logging_configuration_is_the_flat_column(tmp_path: Path) -> None:
    nested = {**TASK, "loggingConfiguration": {"logGroupName": GROUP}}
    (from_nested,) = _rows(tmp_path, json.dumps(nested) + "\n", "jsonl")
    (from_flat,) = _rows(tmp_path, json.dumps({**TASK, "logGroupName": GROUP}) + "\n", "jsonl")
    csv_text = "name,semanticVersion,platform,vmImportTaskId,logGroupName\n"
    csv_text += f"web-01,1.0.0,Linux,import-ami-0abc,{GROUP}\n"
    (from_csv,) = _rows(tmp_path, csv_text, "csv")
    assert from_nested.task is not None
    assert from_flat.task is not None
    assert from_csv.task is not None
    assert from_nested.task == from_flat.task
    assert from_nested.task.api_params()["loggingConfiguration"] == {"logGroupName": GROUP}
    assert client_token(from_nested.task) == client_token(from_flat.task)
    assert client_token(from_csv.task) == client_token(from_flat.task)


@pytest.mark.parametrize(
    ("logging", "says"),
    [
        ("/aws/imagebuilder/x", "loggingConfiguration: must be an object"),
        ({"logGroup": GROUP}, "loggingConfiguration.logGroup: unknown field"),
    ],
)
def test_a_malformed_logging_configuration_is_named(
    tmp_path: Path, logging: object, says: str
) -> None:
    (row,) = _rows(tmp_path, json.dumps({**TASK, "loggingConfiguration": logging}) + "\n", "jsonl")
    assert row.task is None
    assert any(says in line for line in row.describe()), row.describe()


def test_two_different_log_groups_for_one_row_are_refused(tmp_path: Path) -> None:
    both = {**TASK, "logGroupName": GROUP, "loggingConfiguration": {"logGroupName": GROUP + "2"}}
    (row,) = _rows(tmp_path, json.dumps(both) + "\n", "jsonl")
    assert row.task is None
    assert "logGroupName: is given twice" in row.describe()[0]


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ('[{"name": "web-01",\n  "semanticVersion" "1.0.0"}]', "line 2, column 21"),
        ('[{"name": "web-01", "platform": "Li', "line 1, column 33"),
    ],
)
def test_invalid_json_is_reported_with_line_and_column(
    tmp_path: Path, text: str, where: str
) -> None:
    with pytest.raises(ManifestError, match="invalid JSON") as refused:
        _rows(tmp_path, text, "json")
    assert where in str(refused.value)


def test_a_truncated_single_object_is_invalid_json_not_an_unknown_key(tmp_path: Path) -> None:
    with pytest.raises(ManifestError) as refused:
        _rows(tmp_path, '{"name": "web-01", "semanticVersion": "1.0', "json")
    assert "invalid JSON" in str(refused.value)
    assert "unknown top-level key" not in str(refused.value)
    with pytest.raises(ManifestError, match=r"unknown top-level key 'name'.*array"):
        _rows(tmp_path, json.dumps(TASK), "json")  # complete, but a task outside an array


def test_a_missing_required_csv_column_is_reported_once_for_the_header(tmp_path: Path) -> None:
    text = "name,platform\n" + "".join(f"web-{i:02d},Linux\n" for i in range(50))
    with pytest.raises(ManifestError) as refused:
        _rows(tmp_path, text, "csv")
    message = str(refused.value)
    assert (
        "the header has no semanticVersion and vmImportTaskId (or diskImage, or diskContainers)"
        " columns" in message
    )
    assert message.count("semanticVersion") == 1
