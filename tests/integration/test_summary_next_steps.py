"""Issue 23 item 10: the summary says what to do next, through the real CLI against the
emulator: the rows and images to look at with their codes, the commands that resume the
batch and follow its images; ``report`` under its own title; an all-``exists`` run
claims no import speed; ``run --json`` on an invalid manifest carries the row errors."""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Callable
from pathlib import Path

import pytest
from integration_support import invoke, make_tasks, run_args, write_csv

from ibimport.emulator import EmulatorServer

Start = Callable[..., EmulatorServer]


@pytest.fixture(autouse=True)
def _here(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)


def _manifest(tmp_path: Path, n: int, ids: dict[int, str] | None = None) -> Path:
    tasks = make_tasks(n)
    for i, task in enumerate(tasks):
        task["vmImportTaskId"] = (ids or {}).get(i, f"import-ami-{i:017d}")
    return write_csv(tmp_path / "wave.csv", tasks)


def _tasks(tmp_path: Path, n: int, special: list[dict[str, object]]) -> Path:
    tasks: list[dict[str, object]] = [
        {"ImportTaskId": f"import-ami-{i:017d}", "Status": "completed"} for i in range(n)
    ]
    path = tmp_path / "tasks.json"
    path.write_text(json.dumps(tasks + special))
    return path


MISSING = "import-ami-0missing00000001"
SLOW = "import-ami-0slow00000000001"


def test_blocked_rows_and_timed_out_images_come_with_what_to_do(
    start_emulator: Start, tmp_path: Path
) -> None:
    special = [{"ImportTaskId": SLOW, "Status": "active", "CompletesAfterS": 1.0}]
    server = start_emulator(import_tasks=_tasks(tmp_path, 4, special))
    manifest = _manifest(tmp_path, 6, {4: SLOW, 5: MISSING})
    ran = invoke(
        *run_args(manifest, server.url, "--wait", "--wait-timeout", "0.3", "--poll-interval", "0.1")
    )
    assert ran.exit_code == 1, ran.output
    lines = ran.output.splitlines()
    # Without --preflight the missing task's image FAILS and the slow one's times out.
    assert "images not AVAILABLE, the first:" in ran.output
    assert any("row 6" in line and "FAILED" in line for line in lines), ran.output
    assert any("row 5" in line and "TIMED_OUT" in line for line in lines), ran.output
    follow = lines[lines.index("follow the images still being built with:") + 1]
    assert shlex.split(follow) == ["ibimport", "wait", str(tmp_path / "wave.journal")]

    blocked = invoke(*run_args(manifest, server.url, "--preflight", "--journal", "b.journal"))
    assert blocked.exit_code == 1, blocked.output
    # The images already there are exists; the missing task's row is blocked (and the
    # slow one's too while its task is still converting).
    assert re.search(r"^[12] rows? failed or blocked, the first:$", blocked.output, re.M)
    assert re.search(r"^  row 6 vm-0005 \S+: blocked TaskNotFound$", blocked.output, re.M)
    resume = blocked.output.splitlines()
    command = resume[
        resume.index("the same command resumes the batch (done rows are not sent again):") + 1
    ]
    words = shlex.split(command)
    assert words[:3] == ["ibimport", "run", str(manifest)]
    assert "--preflight" in words
    assert words[words.index("--journal") + 1] == "b.journal"


def test_report_has_its_own_title_and_an_all_exists_run_claims_no_speed(
    start_emulator: Start, tmp_path: Path
) -> None:
    server = start_emulator()
    manifest = _manifest(tmp_path, 5)
    assert invoke(*run_args(manifest, server.url)).exit_code == 0
    again = invoke(*run_args(manifest, server.url, "--journal", "second.journal"))
    assert again.exit_code == 0, again.output
    assert "nothing imported this run" in again.output
    assert "rows/s imported" not in again.output

    rebuilt = invoke("report", tmp_path / "wave.journal")
    assert rebuilt.exit_code == 0, rebuilt.output
    assert rebuilt.output.splitlines()[0] == "ibimport report"


def test_run_json_on_an_invalid_manifest_carries_the_row_errors(
    start_emulator: Start, tmp_path: Path
) -> None:
    server = start_emulator()
    tasks = make_tasks(3)
    tasks[1]["platform"] = "Win2019"
    manifest = write_csv(tmp_path / "wave.csv", tasks)
    ran = invoke(*run_args(manifest, server.url, "--json"))
    assert ran.exit_code == 2
    document = json.loads(ran.stdout)
    assert any("row 2: platform" in line for line in document["rows"]), document
