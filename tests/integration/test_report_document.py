"""The report document from journals alone, stage times included (issue 18, for issue 20's
HTML report): a real run against the emulator, then the document read from its journal."""

from __future__ import annotations

from pathlib import Path

from integration_support import invoke, make_tasks, read_report, run_args, write_csv

from ibimport.domain.stages import StageName
from ibimport.emulator import EmulatorServer
from ibimport.journal import StageRecord
from ibimport.report.document import report_document, stage_summaries, timeline


def test_the_document_is_the_json_report_plus_each_stage_s_times(
    tmp_path: Path, emulator: EmulatorServer
) -> None:
    manifest = write_csv(tmp_path / "wave.csv", make_tasks(12))
    done = invoke(*run_args(manifest, emulator.url))
    assert done.exit_code == 0, done.output
    journal = tmp_path / "wave.journal"
    rebuilt = invoke("report", journal)
    assert rebuilt.exit_code == 0, rebuilt.output
    written = read_report(tmp_path / "wave.report.json")

    document = report_document([journal])

    assert {k: v for k, v in document.items() if k in written} == written
    imports = document["stages"]["import"]
    assert (imports["rows"], imports["open"]) == (12, 0)
    assert imports["outcomes"] == {"succeeded": 12}
    assert imports["attempts"] == 12
    assert 0.0 < imports["duration_s"]["p50"] <= imports["duration_s"]["max"]
    assert len(imports["slowest"]) == 10
    assert sum(document["timeline"]["stages"]["import"]["ended"]) == 12
    (band,) = document["runBands"]
    assert band["ended_at"] >= band["started_at"]
    assert band["interrupted"] is False


def _record(stage: StageName, started: float, ended: float | None, outcome: str) -> StageRecord:
    return StageRecord("vm", "1.0.0", stage, started, ended, 1, outcome, "")


def test_bins_are_chosen_from_the_span_and_failures_marked() -> None:
    two_minutes = [_record(StageName.IMPORT, 0.0, 120.0, "failed")]
    assert timeline(two_minutes)["bin_s"] == 1
    two_days = [_record(StageName.IMAGE_WAIT, 0.0, 2 * 86400.0, "AVAILABLE")]
    found = timeline(two_days)
    assert found["bin_s"] == 900
    assert found["bins"] <= 240
    assert timeline(two_minutes)["stages"]["import"]["failed"][-1] == 1
    summary = stage_summaries([*two_days, _record(StageName.IMPORT, 5.0, None, "")])
    assert list(summary) == ["import", "image_wait"]  # pipeline order
    assert summary["import"]["open"] == 1
