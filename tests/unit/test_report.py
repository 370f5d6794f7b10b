"""RunStats from scripted events, the JSON report, the results CSV and the summary table."""

from __future__ import annotations

import csv
import io
import json
import os
import stat
import tracemalloc
from pathlib import Path

import pytest
from rich.console import Console

from ibimport import report
from ibimport.cli.rendering import summary_table
from ibimport.domain.results import RowResult, RowStatus
from ibimport.engine.events import CallEvent, CallOutcome
from ibimport.report import (
    RESULTS_COLUMNS,
    ResultsWriter,
    RunStats,
    neutralise_cell,
    write_report,
)


def _result(row: int, status: RowStatus = RowStatus.SUCCEEDED, **kw: object) -> RowResult:
    return RowResult(row=row, name=f"image-{row}", semantic_version="1.0.0", status=status, **kw)  # type: ignore[arg-type]


def _call(
    row: int,
    attempt: int = 1,
    *,
    ms: float = 100.0,
    outcome: CallOutcome = CallOutcome.OK,
    code: str = "",
) -> CallEvent:
    return CallEvent(
        row=row, attempt=attempt, latency_s=ms / 1000, outcome=outcome, error_code=code
    )


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _scripted_run() -> RunStats:
    """Six rows: 1 straight success, 2 throttled twice then ok, 3 permanent failure,
    4 exists after a 503, 5 invalid (never sent), 6 resumed from an earlier run, 7 skipped."""
    stats = RunStats()
    stats.on_start(total_rows=7)
    stats.on_row_done(_result(6, RowStatus.SUCCEEDED, resumed=True))
    stats.on_row_done(_result(5, RowStatus.INVALID))
    stats.on_call(_call(1))
    stats.on_call(_call(2, 1, outcome=CallOutcome.THROTTLED, code="ThrottlingException"))
    stats.on_call(_call(3, 1, outcome=CallOutcome.PERMANENT, code="InvalidParameterException"))
    stats.on_row_done(_result(1))
    stats.on_row_done(_result(3, RowStatus.FAILED))
    stats.on_call(_call(2, 2, outcome=CallOutcome.THROTTLED, code="ThrottlingException"))
    stats.on_call(_call(4, 1, outcome=CallOutcome.RETRYABLE, code="ServiceUnavailable"))
    stats.on_call(_call(2, 3))
    stats.on_row_done(_result(2))
    stats.on_call(_call(4, 2, outcome=CallOutcome.RETRYABLE))  # a connection reset: no code
    stats.on_call(_call(4, 3))
    stats.on_row_done(_result(4, RowStatus.EXISTS))
    stats.on_row_done(_result(7, RowStatus.SKIPPED))
    stats.on_finish(elapsed_s=2.0, interrupted=True)
    return stats


def test_stats_count_totals_calls_retries_and_errors() -> None:
    stats = _scripted_run()
    assert stats.totals == {
        RowStatus.SUCCEEDED: 3,
        RowStatus.EXISTS: 1,
        RowStatus.FAILED: 1,
        RowStatus.INVALID: 1,
        RowStatus.SKIPPED: 1,
    }
    assert stats.calls == 8
    assert stats.retries == 4  # 8 calls over 4 rows attempted (1, 2, 3, 4)
    assert stats.throttled == 2
    assert stats.resumed == 1
    assert stats.errors_by_code == {
        "ThrottlingException": 2,
        "InvalidParameterException": 1,
        "ServiceUnavailable": 1,
        "retryable": 1,
    }
    assert stats.elapsed_s == 2.0
    assert stats.interrupted is True


def test_report_has_the_documented_keys_and_values() -> None:
    report = _scripted_run().to_report().to_json()
    assert report["totals"] == {
        "rows": 7,
        "succeeded": 3,
        "exists": 1,
        "failed": 1,
        "blocked": 0,
        "cancelled": 0,
        "invalid": 1,
        "skipped": 1,
    }
    assert report["calls"] == 8
    assert report["retries"] == 4
    assert report["throttled"] == 2
    assert report["elapsed_s"] == 2.0
    # rows 1, 2 (succeeded) and 4 (exists) this run; row 6 was resumed and does not count
    assert report["throughput_per_s"] == pytest.approx(1.5)
    assert set(report["latency_ms"]) == {"p50", "p95", "p99", "max"}
    assert report["latency_ms"]["max"] == pytest.approx(100.0)
    assert list(report["errors_by_code"]) == [
        "ThrottlingException",
        "InvalidParameterException",
        "ServiceUnavailable",
        "retryable",
    ]
    assert report["resumed"] == 1
    assert report["interrupted"] is True
    json.dumps(report)  # serialisable as is


def test_row_still_in_flight_at_the_end_counts_as_skipped() -> None:
    stats = RunStats()
    stats.on_row_done(_result(1, RowStatus.IN_FLIGHT))
    assert stats.to_report().to_json()["totals"]["skipped"] == 1


def test_empty_run_reports_zeros_without_dividing_by_zero() -> None:
    report = RunStats().to_report().to_json()
    assert report["throughput_per_s"] == 0.0
    assert report["latency_ms"] == {"p50": 0.0, "p95": 0.0, "p99": 0.0, "max": 0.0}
    assert report["totals"]["rows"] == 0


def test_latency_percentiles_of_a_uniform_distribution() -> None:
    stats = RunStats()
    for ms in range(1000, 0, -1):  # 1..1000 ms, fed in descending order
        stats.on_call(_call(ms, ms=float(ms)))
    pct = stats.latency_percentiles()
    assert pct["p50"] == pytest.approx(500, rel=0.01)
    assert pct["p95"] == pytest.approx(950, rel=0.01)
    assert pct["p99"] == pytest.approx(990, rel=0.01)
    assert pct["max"] == pytest.approx(1000)


@pytest.mark.parametrize(("slow", "p99"), [(10, 10.0), (11, 2000.0)])
def test_p99_is_nearest_rank(slow: int, p99: float) -> None:
    """With 1000 calls, p99 is the 990th smallest: fast while at most 10 calls are slow."""
    stats = RunStats()
    for i in range(1000 - slow):
        stats.on_call(_call(i, ms=10.0))
    for i in range(slow):
        stats.on_call(_call(10_000 + i, ms=2000.0))
    pct = stats.latency_percentiles()
    assert pct["p50"] == pytest.approx(10.0, rel=0.01)
    assert pct["p99"] == pytest.approx(p99, rel=0.01)
    assert pct["max"] == pytest.approx(2000.0)


def test_write_report_is_json_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "report.json"
    report = _scripted_run().to_report().to_json()
    write_report(path, report)
    assert json.loads(path.read_text(encoding="utf-8")) == report
    assert _mode(path) == 0o600


def test_write_report_replaces_a_wide_open_file_and_leaves_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "report.json"
    path.write_text("old")
    path.chmod(0o666)
    write_report(path, {"calls": 1})
    assert json.loads(path.read_text()) == {"calls": 1}
    assert _mode(path) == 0o600
    assert os.listdir(tmp_path) == ["report.json"]


def test_write_report_is_atomic_when_serialising_fails(tmp_path: Path) -> None:
    path = tmp_path / "report.json"
    write_report(path, {"calls": 1})
    with pytest.raises(TypeError):
        write_report(path, {"calls": 2, "bad": object()})
    assert json.loads(path.read_text()) == {"calls": 1}  # the old report, whole
    assert os.listdir(tmp_path) == ["report.json"]


@pytest.mark.parametrize("lead", ["=", "+", "-", "@", "\t", "\r"])
def test_neutralise_prefixes_each_formula_trigger(lead: str) -> None:
    value = f'{lead}HYPERLINK("http://x")'
    assert neutralise_cell(value) == "'" + value


@pytest.mark.parametrize("value", ["", "web-01", "1.0.0", "a=b", " =1", "'quoted", "ami-123"])
def test_neutralise_leaves_safe_values_alone(value: str) -> None:
    assert neutralise_cell(value) == value


def test_negative_number_is_neutralised_too() -> None:
    assert neutralise_cell("-1") == "'-1"


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames or ()) == RESULTS_COLUMNS
        return list(reader)


def test_results_csv_columns_values_and_neutralisation(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    with ResultsWriter(path) as writer:
        writer.write(
            _result(
                2,
                RowStatus.FAILED,
                attempts=3,
                error_code="InvalidParameterException",
                error_message='=cmd|" /C calc"!A0\nsecond line',
                request_id="req-2",
                client_token="tok-2",
            )
        )
        writer.on_row_done(
            _result(1, image_arn="arn:aws:imagebuilder:x", attempts=1, client_token="tok-1")
        )
    rows = _read_csv(path)
    assert [r["row"] for r in rows] == ["1", "2"]
    assert rows[0] == {
        "row": "1",
        "name": "image-1",
        "semanticVersion": "1.0.0",
        "status": "succeeded",
        "imageArn": "arn:aws:imagebuilder:x",
        "clientToken": "tok-1",
        "attempts": "1",
        "errorCode": "",
        "errorMessage": "",
        "requestId": "",
        "imageStatus": "",
        "imageStatusReason": "",
        "account": "",
        "region": "",
    }
    assert rows[1]["status"] == "failed"
    assert rows[1]["errorMessage"] == '\'=cmd|" /C calc"!A0\nsecond line'
    assert rows[1]["attempts"] == "3"


def test_results_replace_an_existing_file_whole_and_0600_only_at_close(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    path.write_text("complete")
    path.chmod(0o644)
    writer = ResultsWriter(path)
    (beside,) = (p for p in tmp_path.iterdir() if p != path)  # before any row: a folder
    assert _mode(beside) == 0o600  # that cannot take the file fails before the run
    writer.write(_result(2))
    writer.write(_result(1))
    assert path.read_text() == "complete"  # a kill now leaves the complete file whole
    writer.close()
    assert _mode(path) == 0o600  # the sorted rewrite keeps it private
    assert os.listdir(tmp_path) == ["results.csv"]  # no scratch or temp files left
    with path.open() as written:
        assert [r["row"] for r in csv.DictReader(written)] == ["1", "2"]


def test_discarded_results_leave_the_file_in_place_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    path.write_text("complete")
    writer = ResultsWriter(path)
    writer.write(_result(1))
    writer.discard()
    assert path.read_text() == "complete"
    assert os.listdir(tmp_path) == ["results.csv"]


def test_results_writer_fails_at_construction_on_unwritable_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        ResultsWriter(tmp_path / "missing-dir" / "results.csv")


def test_results_written_in_reverse_come_out_sorted_with_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    n = 20_000
    tracemalloc.start()
    try:
        with ResultsWriter(path) as writer:
            for row in range(n, 0, -1):
                # a distinct ~350-byte message per row: ~7 MB of strings if all were held at once
                message = f"{row:06d}" + "x" * 300
                writer.write(_result(row, RowStatus.FAILED, error_message=message))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 3 * 1024 * 1024, peak
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        next(reader)
        rows = [int(cells[0]) for cells in reader]
    assert rows == list(range(1, n + 1))


@pytest.mark.parametrize("in_memory_up_to", [0, 1 << 30], ids=["on-disk index", "in memory"])
def test_both_sorts_give_the_same_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, in_memory_up_to: int
) -> None:
    monkeypatch.setattr(report, "_SORT_IN_MEMORY_BYTES", in_memory_up_to)
    path = tmp_path / "results.csv"
    with ResultsWriter(path) as writer:
        for row in (3, 1, 2):
            message = f'row {row}: "quoted", comma\nsecond line'
            writer.write(_result(row, RowStatus.FAILED, error_message=message))
        writer.write(_result(1))  # written twice: the last result wins
    assert [(r["row"], r["status"]) for r in _read_csv(path)] == [
        ("1", "succeeded"),
        ("2", "failed"),
        ("3", "failed"),
    ]
    assert _read_csv(path)[2]["errorMessage"] == 'row 3: "quoted", comma\nsecond line'
    assert _mode(path) == 0o600
    assert os.listdir(tmp_path) == ["results.csv"]


def test_a_row_written_twice_keeps_its_last_result(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    with ResultsWriter(path) as writer:
        writer.write(_result(1, RowStatus.FAILED))
        writer.write(_result(2))
        writer.write(_result(1, RowStatus.SUCCEEDED))
    assert [(r["row"], r["status"]) for r in _read_csv(path)] == [
        ("1", "succeeded"),
        ("2", "succeeded"),
    ]


def test_results_in_order_and_close_is_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    writer = ResultsWriter(path)
    for row in (1, 2, 5):
        writer.write(_result(row))
    writer.close()
    writer.close()
    assert [r["row"] for r in _read_csv(path)] == ["1", "2", "5"]
    with pytest.raises(ValueError, match="closed"):
        writer.write(_result(6))


def test_summary_table_shows_the_figures(tmp_path: Path) -> None:
    stats = _scripted_run()
    console = Console(record=True, width=100, file=io.StringIO())
    console.print(
        summary_table(
            stats, report_path=tmp_path / "r[bold].json", results_path=tmp_path / "results.csv"
        )
    )
    text = console.export_text()
    assert "interrupted" in text
    for label, figure in [
        ("rows", "7"),
        ("succeeded", "3"),
        ("exists", "1"),
        ("failed", "1"),
        ("invalid", "1"),
        ("skipped", "1"),
        ("resumed", "1"),
        ("calls", "8"),
    ]:
        line = next(line for line in text.splitlines() if line.strip().startswith(label))
        assert figure in line.split()
    assert "4 retries, 2 throttled" in text
    assert "1.5 rows/s" in text
    assert "ThrottlingException" in text
    assert "0:00:02" in text
    assert "r[bold].json" in text  # paths are shown literally, not as markup
    assert "results.csv" in text
    assert "call errors" in text  # calls, labelled apart from the rows' "failed"
    assert "failed calls" not in text


def test_summary_wording_is_singular_for_one_and_times_carry_their_timezone() -> None:
    stats = RunStats()
    stats.on_start(total_rows=1)
    stats.started_at = 1_700_000_000.0
    stats.on_call(_call(1, outcome=CallOutcome.RETRYABLE, code="ServiceException"))
    stats.on_call(_call(1, 2))
    stats.on_row_done(_result(1))
    console = Console(record=True, width=100, file=io.StringIO())
    console.print(summary_table(stats, report_path=None, results_path=None))
    text = console.export_text()
    assert "1 retry," in text
    assert "1 retries" not in text
    started = next(line for line in text.splitlines() if line.startswith("started"))
    assert started.rstrip()[-6] in "+-", started  # e.g. 2023-11-14 22:13:20+00:00


def test_a_summary_without_calls_shows_no_latency() -> None:
    console = Console(record=True, width=100, file=io.StringIO())
    console.print(summary_table(RunStats(), report_path=None, results_path=None))
    assert "latency" not in console.export_text()


def test_the_report_lists_earlier_runs_then_this_one_and_sums_the_batch() -> None:
    earlier = {
        "calls": 7,
        "retries": 2,
        "throttled": 1,
        "elapsed_s": 1.5,
        "interrupted": True,
        "errors_by_code": {"ThrottlingException": 1},
    }
    stats = _scripted_run()
    stats.started_at = 1_700_000_000.0
    report = stats.to_report(earlier_runs=[earlier]).to_json()
    assert [run["calls"] for run in report["runs"]] == [7, 8]
    this_run = report["runs"][1]
    assert this_run["started_at"][-6] in "+-"
    assert this_run["interrupted"] is True
    assert this_run["latency_ms"] == report["latency_ms"]
    assert report["batch"]["runs"] == 2
    assert report["batch"]["calls"] == 15
    assert report["batch"]["interrupted_runs"] == 2
    assert report["batch"]["errors_by_code"]["ThrottlingException"] == 3
    assert report["calls"] == 8  # the top level is this run's


def test_a_rebuilt_report_takes_its_figures_from_the_latest_recorded_run() -> None:
    stats = RunStats()  # rebuilt from a journal: no run watched
    stats.on_row_done(_result(1))
    latest = {
        "calls": 3,
        "retries": 1,
        "throttled": 0,
        "elapsed_s": 2.0,
        "interrupted": True,
        "latency_ms": {"p50": 5.0},
        "errors_by_code": {},
    }
    report = stats.to_report(earlier_runs=[{"calls": 9}, latest]).to_json()
    assert report["interrupted"] is True  # `report` after a Ctrl-C says so
    assert report["calls"] == 3
    assert report["latency_ms"] == {"p50": 5.0}
    assert report["batch"]["calls"] == 12
    assert len(report["runs"]) == 2


@pytest.mark.parametrize(
    ("share", "elapsed_s", "shown"),
    [(0.95, 30.0, True), (0.5, 30.0, False), (0.95, 1.0, False), (None, 30.0, False)],
)
def test_the_summary_says_when_the_clients_cpu_was_the_limit(
    share: float | None, elapsed_s: float, shown: bool
) -> None:
    stats = RunStats()
    stats.on_start(total_rows=1)
    stats.on_call(_call(1))
    stats.on_row_done(_result(1))
    stats.on_finish(elapsed_s=elapsed_s, interrupted=False)
    stats.client_cpu_share = share
    console = Console(record=True, width=120, file=io.StringIO())
    console.print(summary_table(stats, report_path=None, results_path=None))
    assert ("not the service's quotas, limited this run" in console.export_text()) is shown
    assert ("clientCpuShare" in stats.to_report().to_json()) is (share is not None)


def test_the_summary_lists_each_partition_of_a_batch_of_several() -> None:
    stats = RunStats()
    stats.partitions = [
        {"account": "111111111111", "region": "eu-west-1", "rows": 3, "calls_per_s": 2.5,
         "throttled": 1, "failed": 1, "skipped": 0},
        {"account": "222222222222", "region": "us-east-1", "rows": 4, "calls_per_s": 4.0,
         "throttled": 0, "failed": 0, "skipped": 2},
    ]  # fmt: skip
    console = Console(record=True, width=120, file=io.StringIO())
    console.print(summary_table(stats, report_path=None, results_path=None))
    text = console.export_text()
    assert "111111111111/eu-west-1: 2.5 calls/s, 1 throttle, 1 not done" in text
    assert "222222222222/us-east-1: 4.0 calls/s, 0 throttles, 2 not done" in text
    assert stats.to_report().to_json()["partitions"] == stats.partitions


def test_a_row_with_disks_makes_two_requests_and_only_retries_count_as_retries() -> None:
    stats = RunStats()
    stats.on_start(total_rows=1)
    stats.on_call(_call(1))  # ImportImage
    stats.on_call(_call(1, outcome=CallOutcome.RETRYABLE, code="ServiceException"))
    stats.on_call(_call(1, 2))  # ImportVmImage's second attempt
    stats.on_row_done(_result(1))
    assert (stats.calls, stats.retries, stats.rows_attempted) == (3, 1, 1)
