"""``--json`` for scripts: exactly one JSON document on stdout, everything for people on stderr.

The real CLI (typer's runner, stdout and stderr apart; a child process where a real file
descriptor matters) against a real emulator.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from integration_support import (
    import_requests,
    invoke,
    make_tasks,
    read_report,
    read_results,
    run_args,
    write_csv,
)

from ibimport.emulator import EmulatorServer


def _one_document(stdout: str) -> Any:
    """stdout holds one JSON document and nothing else (json.loads refuses extra data)."""
    return json.loads(stdout)


def test_run_json_prints_the_report_on_stdout_and_the_summary_on_stderr(
    tmp_path: Path, emulator: EmulatorServer
) -> None:
    manifest = write_csv(tmp_path / "wave.csv", make_tasks(12))
    result = invoke(*run_args(manifest, emulator.url, "--json"))

    assert result.exit_code == 0, result.output
    document = _one_document(result.stdout)
    assert document == read_report(tmp_path / "wave.report.json")
    assert document["totals"]["succeeded"] == 12
    assert "succeeded" in result.stderr
    assert "report" in result.stderr


def test_report_dash_writes_the_report_to_stdout_and_no_file(
    tmp_path: Path, emulator: EmulatorServer
) -> None:
    manifest = write_csv(tmp_path / "wave.csv", make_tasks(6))
    result = invoke(*run_args(manifest, emulator.url, "--report", "-"))

    assert result.exit_code == 0, result.output
    assert _one_document(result.stdout)["totals"]["succeeded"] == 6
    assert not (tmp_path / "-").exists()
    assert not (tmp_path / "wave.report.json").exists()
    assert len(read_results(tmp_path / "wave.results.csv")) == 6


def test_validate_status_and_report_json(tmp_path: Path, emulator: EmulatorServer) -> None:
    tasks = make_tasks(5)
    tasks[2]["platform"] = "Win2019"
    manifest = write_csv(tmp_path / "wave.csv", tasks)

    checked = invoke("validate", manifest, "--json")
    assert checked.exit_code == 2
    found = _one_document(checked.stdout)
    assert found["rows"] == 5
    assert found["invalid"] == 1
    assert found["errors"] == [
        {"row": 3, "field": "platform", "rule": "must be one of Windows, Linux, macOS",
         "value": "Win2019"}
    ]  # fmt: skip
    assert "row 3: platform" in checked.stderr

    ran = invoke(*run_args(manifest, emulator.url, "--skip-invalid", "--json"))
    assert ran.exit_code == 1, ran.output  # one row invalid: not every row done
    journal = tmp_path / "wave.journal"

    shown = invoke("status", journal, "--json")
    assert shown.exit_code == 0
    status = _one_document(shown.stdout)
    assert status["rows"] == {"succeeded": 4, "invalid": 1}
    assert status["rerun"] == {"skip": 4, "resend": 0, "retry": 0, "recheck": 0}
    assert status["updated_at"][-6] in "+-"  # a time with its timezone

    rebuilt = invoke("report", journal, "--json")
    assert rebuilt.exit_code == 0
    report = _one_document(rebuilt.stdout)
    assert report["totals"]["succeeded"] == 4
    assert report == read_report(tmp_path / "wave.report.json")


def test_an_error_under_json_is_still_one_document(tmp_path: Path) -> None:
    result = invoke("status", tmp_path / "missing.journal", "--json")
    assert result.exit_code == 2  # the path given is no journal: a usage error
    document = _one_document(result.stdout)
    assert document["exit_code"] == 2
    assert "no journal at" in document["error"]
    assert "error:" in result.stderr


def _child(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-m", "ibimport", *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_report_to_a_link_to_stdout_writes_through_it(
    tmp_path: Path, emulator: EmulatorServer
) -> None:
    # What /dev/stdout is on Linux (a link to /proc/self/fd/1), without touching /dev itself.
    stdout_link = tmp_path / "stdout"
    stdout_link.symlink_to("/proc/self/fd/1")
    manifest = write_csv(tmp_path / "wave.csv", make_tasks(4))
    done = _child(*run_args(manifest, emulator.url, "--report", stdout_link), cwd=tmp_path)

    assert done.returncode == 0, done.stderr
    assert '"succeeded": 4' in done.stdout
    assert stdout_link.is_symlink(), "the link was replaced by a regular file"
    assert os.readlink(stdout_link) == "/proc/self/fd/1"


def test_outputs_through_a_link_and_into_a_fifo(tmp_path: Path, emulator: EmulatorServer) -> None:
    target = tmp_path / "kept" / "report.json"
    target.parent.mkdir()
    target.write_text("old", encoding="utf-8")
    link = tmp_path / "report-link.json"
    link.symlink_to(target)
    fifo = tmp_path / "results.fifo"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()), daemon=True)
    reader.start()
    manifest = write_csv(tmp_path / "wave.csv", make_tasks(3))

    result = invoke(*run_args(manifest, emulator.url, "--report", link, "--results", fifo))
    reader.join(timeout=30)

    assert result.exit_code == 0, result.output
    assert link.is_symlink()
    assert json.loads(target.read_text("utf-8"))["totals"]["rows"] == 3
    assert fifo.is_fifo()
    lines = received[0].decode("utf-8").splitlines()
    assert lines[0].startswith("row,name,semanticVersion,status")
    assert len(lines) == 4
    assert import_requests(emulator.url) == 3
