"""Where the outputs go: the journal's own paths for ``report``, every run kept, no leftovers.

The real CLI against a real emulator.
"""

from __future__ import annotations

from pathlib import Path

from integration_support import (
    invoke,
    make_tasks,
    read_report,
    read_results,
    run_args,
    write_csv,
)

from ibimport.emulator import EmulatorServer


def test_report_rewrites_the_outputs_its_run_used_not_the_ones_beside_the_manifest(
    tmp_path: Path, emulator: EmulatorServer
) -> None:
    manifest = write_csv(tmp_path / "wave.csv", make_tasks(8))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    journal, report, results = (
        elsewhere / "w.journal",
        elsewhere / "r.json",
        elsewhere / "r.csv",
    )
    ran = invoke(
        *run_args(manifest, emulator.url, "--journal", journal, "--report", report),
        "--results",
        results,
    )
    assert ran.exit_code == 0, ran.output
    # Another run's outputs beside the manifest must survive `report` of this journal.
    beside = tmp_path / "wave.report.json"
    beside.write_text("another run's report", encoding="utf-8")
    report.unlink()
    results.unlink()

    rebuilt = invoke("report", journal)

    assert rebuilt.exit_code == 0, rebuilt.output
    assert beside.read_text(encoding="utf-8") == "another run's report"
    assert read_report(report)["totals"]["succeeded"] == 8
    assert [r["status"] for r in read_results(results)] == ["succeeded"] * 8


def test_the_report_keeps_every_run_of_the_batch(tmp_path: Path, emulator: EmulatorServer) -> None:
    tasks = make_tasks(6)
    tasks[4]["platform"] = "Win2019"  # invalid: the first run skips it
    manifest = write_csv(tmp_path / "wave.csv", tasks)
    first = invoke(*run_args(manifest, emulator.url, "--skip-invalid"))
    assert first.exit_code == 1, first.output
    second = invoke(*run_args(manifest, emulator.url, "--skip-invalid"))
    assert second.exit_code == 1, second.output

    report = read_report(tmp_path / "wave.report.json")
    runs = report["runs"]
    assert [run["calls"] for run in runs] == [5, 0]  # the resumed run sent nothing
    assert runs[0]["latency_ms"]["max"] > 0, "the first run's figures survive the second"
    for run in runs:
        assert run["started_at"][-6] in "+-", "times carry their timezone"
        assert set(run) >= {"elapsed_s", "retries", "throttled", "errors_by_code"}
        assert run["interrupted"] is False
    assert report["batch"]["runs"] == 2
    assert report["batch"]["calls"] == 5
    assert report["calls"] == 0  # the top-level figures are the latest run's
    assert report["totals"] == {
        "rows": 6,
        "succeeded": 5,
        "exists": 0,
        "failed": 0,
        "blocked": 0,
        "cancelled": 0,
        "invalid": 1,
        "skipped": 0,
    }

    rebuilt = invoke("report", tmp_path / "wave.journal", "--report", "-")
    assert rebuilt.exit_code == 0, rebuilt.output
    assert '"runs": 2' in rebuilt.stdout


def test_a_run_removes_what_a_killed_run_left_half_written(
    tmp_path: Path, emulator: EmulatorServer
) -> None:
    manifest = write_csv(tmp_path / "wave.csv", make_tasks(3))
    leftovers = [
        tmp_path / ".wave.journal.4242.new",
        tmp_path / ".wave.results.csv.k3j_x1.tmp",
        tmp_path / ".wave.report.json.q9z2.tmp",
        tmp_path / ".wave.results.csv.abc.sort.sqlite",
    ]
    for path in leftovers:
        path.write_bytes(b"half")
    unrelated = tmp_path / ".other.results.csv.x.tmp"
    unrelated.write_bytes(b"not ours")

    result = invoke(*run_args(manifest, emulator.url))

    assert result.exit_code == 0, result.output
    assert [p.name for p in leftovers if p.exists()] == []
    assert unrelated.exists(), "only this batch's leftovers are removed"
