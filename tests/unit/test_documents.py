"""The output documents' models and their renderers (``report.documents``), from inputs:
the keys and values each renderer must give for what it was handed, no golden files."""

from __future__ import annotations

import csv
import json
import stat
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from ibimport.domain.results import RowResult, RowStatus
from ibimport.errors import IbimportError
from ibimport.manifest import ManifestRow, read_manifest
from ibimport.report import RunStats
from ibimport.report.documents import (
    DRY_RUN_COLUMNS,
    RESULTS_COLUMNS,
    TASK_RESULTS_COLUMNS,
    DryRunDocument,
    PartialWave,
    PlannedRow,
    PlannedStatus,
    RunReport,
    TaskPreflight,
    TaskRow,
    result_cells,
    validate_rows,
)
from ibimport.stages.taskcheck import TaskCheck, TaskState

ARN = "arn:aws:imagebuilder:eu-west-1:210987654321:image/vm-1/1.0.0/1"


def _report(**optional: object) -> RunReport:
    return RunReport(
        totals={"rows": 3, "succeeded": 2, "failed": 1},
        calls=5,
        retries=2,
        throttled=1,
        elapsed_s=1.5,
        throughput_per_s=1.333,
        latency_ms={"p50": 1.0, "p95": 2.0, "p99": 3.0, "max": 4.0},
        errors_by_code={"ThrottlingException": 1},
        resumed=0,
        interrupted=False,
        runs=({"calls": 5},),
        batch={"runs": 1, "calls": 5},
        **optional,  # type: ignore[arg-type]
    )


# --- the run report -----------------------------------------------------------------


def test_the_run_report_has_its_keys_in_order_and_no_optional_key_it_was_not_given() -> None:
    document = _report().to_json()
    assert list(document) == [
        "totals", "calls", "retries", "throttled", "elapsed_s", "throughput_per_s",
        "latency_ms", "errors_by_code", "resumed", "interrupted", "runs", "batch",
    ]  # fmt: skip
    assert document["totals"] == {"rows": 3, "succeeded": 2, "failed": 1}
    assert document["runs"] == [{"calls": 5}]
    assert document["interrupted"] is False


def test_the_run_report_adds_each_optional_key_after_the_others_when_given() -> None:
    one = {"account": "1", "region": "us-east-1"}
    two = {"account": "2", "region": "eu-west-1"}
    document = _report(
        existing_images={"calls": 2.0, "builds": 7.0},
        partitions=(one, two),
        client_cpu_share=0.25,
        image_status={"AVAILABLE": 2},
        partial=PartialWave(journals=2, missing=("missing shard 2/3",)),
    ).to_json()
    assert list(document)[-5:] == [
        "existingImages", "partitions", "clientCpuShare", "imageStatus", "partial",
    ]  # fmt: skip
    assert document["partitions"] == [one, two]
    assert document["partial"] == {"journals": 2, "missing": ["missing shard 2/3"]}
    assert document["clientCpuShare"] == 0.25
    json.dumps(document)  # serialisable as is


def test_one_partition_is_not_listed_as_partitions() -> None:
    assert "partitions" not in _report(partitions=({"account": "1"},)).to_json()


def test_a_report_rebuilt_from_journals_takes_the_latest_runs_figures() -> None:
    stats = RunStats()  # never watched a run: figures come from the runs given
    stats.on_row_done(
        RowResult(row=1, name="a", semantic_version="1.0.0", status=RowStatus.SUCCEEDED)
    )
    latest = {"calls": 9, "retries": 3, "throttled": 2, "elapsed_s": 4.0, "interrupted": True}
    report = stats.to_report(earlier_runs=[{"calls": 1}, latest])
    assert (report.calls, report.retries, report.throttled) == (9, 3, 2)
    assert report.elapsed_s == 4.0
    assert report.interrupted is True
    assert report.batch["calls"] == 10
    assert report.totals["succeeded"] == 1


# --- the results CSV ----------------------------------------------------------------


def test_a_results_line_neutralises_outside_text_and_reads_the_account_of_the_arn() -> None:
    result = RowResult(
        row=7,
        name="-dash",
        semantic_version="1.0.0",
        status=RowStatus.IN_FLIGHT,
        image_arn=ARN,
        error_message="=HYPERLINK()",
        attempts=3,
        region="eu-west-1",
    )
    cells = dict(zip(RESULTS_COLUMNS, result_cells(result), strict=True))
    assert cells["row"] == "7"
    assert cells["name"] == "'-dash"
    assert cells["status"] == "skipped"  # in_flight is not a reported state
    assert cells["errorMessage"] == "'=HYPERLINK()"
    assert cells["attempts"] == "3"
    assert cells["account"] == "210987654321"
    assert cells["region"] == "eu-west-1"


def test_a_results_line_keeps_the_account_it_was_given() -> None:
    result = RowResult(
        row=1, name="a", semantic_version="1.0.0", status=RowStatus.EXISTS, account="1" * 12
    )
    assert result_cells(result)[RESULTS_COLUMNS.index("account")] == "1" * 12


# --- the dry run --------------------------------------------------------------------


def _planned() -> list[PlannedRow]:
    return [
        PlannedRow(1, "vm-é", "1.0.0", "tok-1", PlannedStatus.NEW),
        PlannedRow(2, "vm-2", "1.0.0", "tok-2", PlannedStatus.EXISTS, image_arn=ARN),
        PlannedRow(3, "", "", "", PlannedStatus.INVALID, errors=("row 3: name: required",)),
    ]


class _Streamed:
    """Rows handed out one at a time, counted as they go (as ``BatchPlan.rows`` does)."""

    def __init__(self, rows: list[PlannedRow]) -> None:
        self.rows = rows
        self.handed = 0
        self.totals: Counter[PlannedStatus] = Counter()

    def __iter__(self) -> Iterator[PlannedRow]:
        for row in self.rows:
            self.handed += 1
            self.totals[row.status] += 1
            yield row


def test_the_dry_run_json_is_the_whole_document_json_would_write_and_counts_last() -> None:
    rows = _Streamed(_planned())
    text = "".join(DryRunDocument(looked_up=True, rows=rows, totals=rows.totals).json_chunks())
    expected = {
        "dry_run": True,
        "looked_up_existing": True,
        "rows": [
            {"row": 1, "name": "vm-é", "semanticVersion": "1.0.0", "clientToken": "tok-1",
             "action": "new"},
            {"row": 2, "name": "vm-2", "semanticVersion": "1.0.0", "clientToken": "tok-2",
             "action": "exists", "imageArn": ARN},
            {"row": 3, "name": "", "semanticVersion": "", "clientToken": "", "action": "invalid",
             "errors": ["row 3: name: required"]},
        ],
        "totals": {"rows": 3, "new": 1, "exists": 1, "invalid": 1},
    }  # fmt: skip
    assert text == json.dumps(expected, indent=2, ensure_ascii=False) + "\n"


def test_the_dry_run_json_streams_a_row_per_chunk() -> None:
    rows = _Streamed(_planned())
    chunks = DryRunDocument(looked_up=False, rows=rows, totals=rows.totals).json_chunks()
    head = next(chunks) + next(chunks)
    assert '"looked_up_existing": false' in head
    assert rows.handed == 0
    assert '"row": 1' in next(chunks)
    assert rows.handed == 1


def test_a_dry_run_of_no_rows_is_still_one_document() -> None:
    document = DryRunDocument(looked_up=False, rows=[], totals={})
    parsed = json.loads("".join(document.json_chunks()))
    assert parsed["rows"] == []
    assert parsed["totals"] == {"rows": 0, "new": 0, "exists": 0, "invalid": 0}


def test_the_dry_run_lines_are_tab_separated_with_a_dash_for_no_token() -> None:
    rows = _Streamed(_planned())
    lines = list(DryRunDocument(looked_up=True, rows=rows, totals=rows.totals).tsv_lines())
    assert lines[0].split("\t") == list(DRY_RUN_COLUMNS)
    assert lines[1].split("\t") == ["1", "vm-é", "1.0.0", "tok-1", "new"]
    assert lines[3].split("\t") == ["3", "", "", "-", "invalid"]


# --- preflight ----------------------------------------------------------------------


def _checked() -> TaskPreflight:
    return TaskPreflight(
        rows=(
            TaskRow(1, "vm-1", "1.0.0", TaskCheck("import-ami-1", TaskState.READY)),
            TaskRow(2, "@vm", "1.0.0", TaskCheck("import-ami-2", TaskState.PENDING, "42")),
            TaskRow(3, "vm-3", "1.0.0", TaskCheck("import-ami-3", TaskState.FAILED, "", "=x")),
        ),
        calls=4,
        throttled=1,
    )


def test_the_task_check_json_counts_every_state_and_lists_each_row() -> None:
    document = _checked().to_json()
    assert list(document) == ["totals", "calls", "throttled", "slots", "rows"]
    assert document["slots"] == []  # no row with disks: no partition's slots asked
    assert document["totals"] == {
        "rows": 3, "ready": 1, "pending": 1, "failed": 1, "unknown": 0, "unchecked": 0,
    }  # fmt: skip
    assert (document["calls"], document["throttled"]) == (4, 1)
    assert document["rows"][1] == {
        "row": 2, "name": "@vm", "semanticVersion": "1.0.0", "vmImportTaskId": "import-ami-2",
        "taskStatus": "pending", "taskProgress": "42", "taskMessage": "", "diskBytes": None,
    }  # fmt: skip


def test_the_task_check_lines_show_a_dash_for_nothing_and_never_neutralise() -> None:
    lines = list(_checked().tsv_lines())
    assert lines[0].split("\t") == list(TASK_RESULTS_COLUMNS)
    assert lines[1].split("\t")[-3:] == ["-", "-", "-"]  # progress, message, diskBytes
    assert lines[2].split("\t")[1] == "@vm"
    assert lines[3].split("\t")[-2] == "=x"


def test_the_task_csv_is_private_and_neutralises_outside_text(tmp_path: Path) -> None:
    path = tmp_path / "tasks.csv"
    checked = _checked()
    checked.write_csv(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with open(path, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["row"] for r in rows] == ["1", "2", "3"]
    assert rows[1]["name"] == "'@vm"
    assert rows[1]["taskProgress"] == "42"
    assert rows[2]["taskMessage"] == "'=x"
    assert rows[2]["taskStatus"] == "failed"
    assert not checked.all_ready
    assert TaskPreflight(rows=checked.rows[:1]).all_ready


def test_a_task_csv_that_cannot_be_written_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(IbimportError, match=r"cannot write .*tasks\.csv"):
        _checked().write_csv(tmp_path / "missing" / "tasks.csv")


# --- validate -----------------------------------------------------------------------


def _manifest_rows(tmp_path: Path) -> list[ManifestRow]:
    path = tmp_path / "wave.csv"
    path.write_text(
        "name,semanticVersion,platform,vmImportTaskId\n"
        "vm-1,1.0.0,Linux,import-ami-00000000000000001\n"
        "vm-2,1.0,Linux,import-ami-00000000000000002\n"
        "vm-3,1.0.0,Win2019,import-ami-00000000000000003\n",
        encoding="utf-8",
    )
    return list(read_manifest(path))


def test_validation_counts_rows_and_tells_each_invalid_row_as_it_comes(tmp_path: Path) -> None:
    seen: list[int] = []
    checked = validate_rows(_manifest_rows(tmp_path), on_invalid=lambda r: seen.append(r.row))
    assert (checked.rows, checked.invalid) == (3, 2)
    assert seen == [2, 3]
    document = checked.to_json()
    assert list(document) == ["rows", "invalid", "errors"]
    assert [(e["row"], e["field"]) for e in document["errors"]] == [
        (2, "semanticVersion"),
        (3, "platform"),
    ]
    assert document["errors"][1]["value"] == "Win2019"


def test_validation_without_the_errors_keeps_only_the_counts(tmp_path: Path) -> None:
    checked = validate_rows(_manifest_rows(tmp_path), keep_errors=False)
    assert (checked.rows, checked.invalid, checked.errors) == (3, 2, ())
