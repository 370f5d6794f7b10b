"""``ibimport validate`` and ``run`` on bad manifests: every bad row named, nothing sent."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from integration_support import (
    import_requests,
    invoke,
    make_tasks,
    read_report,
    read_results,
    run_args,
    stats,
    write_csv,
    write_jsonl,
)

from ibimport.emulator import EmulatorServer

StartEmulator = Callable[..., EmulatorServer]
INVALID_CSV = Path(__file__).resolve().parents[2] / "manifests" / "invalid.csv"


def _with_bad_rows(path: Path) -> Path:
    """20 valid rows with three broken ones among them (rows 4, 9 and 15)."""
    tasks = make_tasks(20, seed=9)
    tasks[3]["semanticVersion"] = "1.0"
    tasks[8]["platform"] = "Win2019"
    tasks[14]["tags"] = {"aws:owner": "me"}
    return write_csv(path, tasks)


def test_validate_names_every_bad_row_and_exits_2() -> None:
    result = invoke("validate", INVALID_CSV)

    assert result.exit_code == 2
    out = " ".join(result.output.split())  # rich may wrap long lines
    for expected in (
        "row 2: semanticVersion:",
        "row 3: platform: must be one of Windows, Linux, macOS (Win2019)",
        "row 4: vmImportTaskId: is required",
        "row 6: tag:aws:owner:",
        "row 7: platfrom: unknown field (did you mean platform?)",
        "row 8: name: duplicate of row 1",
        "row 10: description:",
        "row 11:",
    ):
        assert expected in out, expected
    assert "row 1:" not in out
    assert "11 rows, 10 invalid" in out


def test_validate_a_good_manifest_exits_0(tmp_path: Path) -> None:
    result = invoke("validate", write_jsonl(tmp_path / "ok.jsonl", make_tasks(30)))

    assert result.exit_code == 0, result.output
    assert "30 rows, 0 invalid" in result.output


def test_validate_reads_stdin_with_format_and_refuses_it_without(tmp_path: Path) -> None:
    text = _with_bad_rows(tmp_path / "m.csv").read_text(encoding="utf-8")

    piped = invoke("validate", "-", "--format", "csv", input=text)
    unknown = invoke("validate", "-", input=text)

    assert piped.exit_code == 2
    assert "row 4: semanticVersion:" in piped.output
    assert "20 rows, 3 invalid" in piped.output
    assert unknown.exit_code == 2
    assert "--format" in unknown.output


def test_run_refuses_an_invalid_manifest_before_sending_anything(
    start_emulator: StartEmulator, tmp_path: Path
) -> None:
    server = start_emulator()
    manifest = _with_bad_rows(tmp_path / "m.csv")

    result = invoke(*run_args(manifest, server.url))

    assert result.exit_code == 2
    out = " ".join(result.output.split())
    assert "row 4: semanticVersion: must match" in out
    assert "row 9: platform: must be one of Windows, Linux, macOS (Win2019)" in out
    assert "row 15: tag:aws:owner: key must not start with aws:" in out
    assert "3 of 20 rows invalid" in out
    assert "nothing was sent" in out
    assert stats(server.url)["requests"] == {}
    assert not (tmp_path / "m.report.json").exists()


def test_skip_invalid_imports_the_valid_rows_and_records_the_others(
    start_emulator: StartEmulator, tmp_path: Path
) -> None:
    server = start_emulator()
    manifest = _with_bad_rows(tmp_path / "m.csv")

    result = invoke(*run_args(manifest, server.url, "--skip-invalid"))

    assert result.exit_code == 1, result.output  # not every row was imported
    results = read_results(tmp_path / "m.results.csv")
    invalid = {int(r["row"]): r for r in results if r["status"] == "invalid"}
    assert sorted(invalid) == [4, 9, 15]
    assert "semanticVersion" in invalid[4]["errorMessage"]
    assert "platform" in invalid[9]["errorMessage"]
    assert all(r["imageArn"] == "" and r["attempts"] == "0" for r in invalid.values())
    assert {r["status"] for r in results if int(r["row"]) not in invalid} == {"succeeded"}
    totals = read_report(tmp_path / "m.report.json")["totals"]
    assert totals["invalid"] == 3
    assert totals["succeeded"] == 17
    assert import_requests(server.url) == 17
    assert stats(server.url)["images"] == 17


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_run_reads_the_manifest_from_stdin(
    start_emulator: StartEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str
) -> None:
    server = start_emulator()
    tasks = make_tasks(25, seed=4)
    source = (write_jsonl if fmt == "jsonl" else write_csv)(tmp_path / f"m.{fmt}", tasks)
    monkeypatch.chdir(tmp_path)

    result = invoke(
        *run_args(Path("-"), server.url, "--format", fmt), input=source.read_text("utf-8")
    )

    assert result.exit_code == 0, result.output
    # outputs go to the working directory, named for stdin
    results = read_results(tmp_path / "ibimport-stdin.results.csv")
    assert [r["name"] for r in results] == [t["name"] for t in tasks]
    assert {r["status"] for r in results} == {"succeeded"}
    assert stats(server.url)["images"] == 25


def test_run_from_stdin_needs_format(start_emulator: StartEmulator) -> None:
    server = start_emulator()

    result = invoke(*run_args(Path("-"), server.url), input="name\n")

    assert result.exit_code == 2
    assert "--format" in result.output
    assert stats(server.url)["requests"] == {}
