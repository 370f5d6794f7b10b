"""The resubmit manifest's copy: the chosen rows, numbered as the readers number them."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from ibimport.errors import ManifestError
from ibimport.manifest import ManifestFormat, read_manifest
from ibimport.manifest.resubmit import copy_rows


def _copy(path: Path, fmt: ManifestFormat, rows: set[int]) -> tuple[str, int]:
    wanted = {m.row: (m.name, m.semantic_version) for m in read_manifest(path) if m.row in rows}
    out = io.StringIO()
    with open(path, "rb") as source:
        copied = copy_rows(source, out, fmt=fmt, rows=wanted, label=str(path))
    return out.getvalue(), copied


def _task(i: int) -> dict[str, str]:
    return {
        "name": f"vm-{i}",
        "semanticVersion": "1.0.0",
        "platform": "Linux",
        "vmImportTaskId": f"import-ami-{i:017x}",
    }


def test_a_csv_keeps_its_header_and_cells_and_skips_blank_lines_as_the_reader_does(
    tmp_path: Path,
) -> None:
    manifest = tmp_path / "wave.csv"
    manifest.write_text(
        "\ufeffname,semanticVersion,platform,vmImportTaskId,description,tag:Env\n"
        "\n"
        'vm-1,1.0.0,Linux,import-ami-00000000000000001,"two\nlines, and a comma",prod\n'
        ",,,,,\n"
        "vm-2,1.0.0,Linux,import-ami-00000000000000002,,dev\n"
        "vm-3,1.0.0,Linux,import-ami-00000000000000003,=SUM(A1),\n",
        encoding="utf-8",
    )

    text, copied = _copy(manifest, ManifestFormat.CSV, {1, 3})

    assert copied == 2
    copy = tmp_path / "copy.csv"
    copy.write_text(text, encoding="utf-8")
    again = list(read_manifest(copy))
    assert [(m.name, m.task is not None) for m in again] == [("vm-1", True), ("vm-3", True)]
    assert again[0].task is not None
    assert again[0].task.description == "two\nlines, and a comma"
    assert again[0].task.tags == {"Env": "prod"}
    assert (
        text.splitlines()[0] == "name,semanticVersion,platform,vmImportTaskId,description,tag:Env"
    )


def test_json_lines_are_copied_byte_for_byte(tmp_path: Path) -> None:
    lines = [json.dumps(_task(i), ensure_ascii=False) for i in range(1, 5)]
    lines[1] = lines[1].replace("vm-2", "vm-2", 1) + "   "
    manifest = tmp_path / "wave.jsonl"
    manifest.write_text(lines[0] + "\n\n" + "\n".join(lines[1:]) + "\n", encoding="utf-8")

    text, copied = _copy(manifest, ManifestFormat.JSONL, {2, 4})

    assert copied == 2
    assert text == lines[1] + "\n" + lines[3] + "\n"


def test_a_json_manifest_keeps_its_defaults_and_its_shape(tmp_path: Path) -> None:
    tasks = [{k: v for k, v in _task(i).items() if k != "platform"} for i in range(1, 4)]
    manifest = tmp_path / "wave.json"
    manifest.write_text(
        json.dumps({"defaults": {"platform": "Windows", "tags": {"Wave": "7"}}, "tasks": tasks}),
        encoding="utf-8",
    )

    text, copied = _copy(manifest, ManifestFormat.JSON, {2})

    assert copied == 1
    document = json.loads(text)
    assert document == {
        "defaults": {"platform": "Windows", "tags": {"Wave": "7"}},
        "tasks": [tasks[1]],
    }
    array = tmp_path / "array.json"
    array.write_text(json.dumps([_task(i) for i in range(1, 4)]), encoding="utf-8")
    text, _ = _copy(array, ManifestFormat.JSON, {1, 3})
    assert json.loads(text) == [_task(1), _task(3)]


def test_a_row_that_is_not_the_journals_any_more_is_refused(tmp_path: Path) -> None:
    manifest = tmp_path / "wave.jsonl"
    manifest.write_text("\n".join(json.dumps(_task(i)) for i in range(1, 4)) + "\n")

    with open(manifest, "rb") as source, pytest.raises(ManifestError, match="row 2 is vm-2"):
        copy_rows(
            source,
            io.StringIO(),
            fmt=ManifestFormat.JSONL,
            rows={2: ("vm-9", "1.0.0")},
            label=str(manifest),
        )
