"""Issue 23 items 1 and 2: the commands that come after a run take what they need from
its journal (``wait JOURNAL`` needs no flag, ``status`` prints the command that resumes),
and a resume given other options is explained option by option, through the real CLI
against the emulator over HTTP."""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable
from pathlib import Path

import pytest
from integration_support import import_requests, invoke, make_tasks, read_results, write_csv

from ibimport.emulator import EmulatorServer

Start = Callable[..., EmulatorServer]
REGION = "eu-west-1"  # not the environment's: the journal has to say it


@pytest.fixture(autouse=True)
def _no_region_in_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


def _run(manifest: Path, url: str, *extra: str) -> list[str | Path]:
    return ["run", manifest, "--endpoint-url", url, "--region", REGION, "--progress", "off", *extra]


def _manifest(tmp_path: Path, n: int, ids: dict[int, str] | None = None) -> Path:
    tasks = make_tasks(n)
    for i, task in enumerate(tasks):
        task["vmImportTaskId"] = (ids or {}).get(i, f"import-ami-{i:017d}")
    return write_csv(tmp_path / "wave.csv", tasks)


def _resume_command(output: str) -> list[str]:
    line = next(line for line in output.splitlines() if "ibimport run" in line)
    words = shlex.split(line.strip().removeprefix("resume").strip())
    assert words[:2] == ["ibimport", "run"]
    return words[1:]


def test_wait_needs_no_flag_the_journal_says_where(start_emulator: Start, tmp_path: Path) -> None:
    server = start_emulator(available_after_s=0.5, region=REGION)
    manifest = _manifest(tmp_path, 20)
    assert invoke(*_run(manifest, server.url, "--tag", "wave=3")).exit_code == 0

    waited = invoke("wait", tmp_path / "wave.journal", "--poll-interval", "0.2")

    assert waited.exit_code == 0, waited.output
    assert "20 AVAILABLE" in waited.output
    assert {r["imageStatus"] for r in read_results(tmp_path / "wave.results.csv")} == {"AVAILABLE"}


def test_a_resume_without_its_tag_is_explained_by_option(
    start_emulator: Start, tmp_path: Path
) -> None:
    server = start_emulator(region=REGION)
    manifest = _manifest(tmp_path, 30)
    assert invoke(*_run(manifest, server.url, "--tag", "wave=3")).exit_code == 0
    sent = import_requests(server.url)

    forgot = invoke(*_run(manifest, server.url))

    assert forgot.exit_code == 2, forgot.output
    assert "--tag wave=3 was given when the journal was written and is missing now" in (
        forgot.output
    )
    assert "rows changed" not in forgot.output
    assert "pass --force" not in forgot.output
    again = _resume_command(forgot.output)
    assert again[again.index("--tag") + 1] == "wave=3"
    assert import_requests(server.url) == sent
    # The command it prints resumes the batch: nothing left to send, exit 0.
    resumed = invoke(*again, "--progress", "off")
    assert resumed.exit_code == 0, resumed.output
    assert import_requests(server.url) == sent

    other = invoke(*_run(manifest, server.url, "--tag", "wave=4", "--json"))
    assert other.exit_code == 2
    document = json.loads(other.stdout)
    assert document["options"] == [
        "--tag wave=4 is given now; the journal was written with --tag wave=3"
    ]
    assert "--tag wave=3" in document["resume_command"]


def _tasks_file(tmp_path: Path, n: int, special: list[dict[str, object]]) -> Path:
    tasks: list[dict[str, object]] = [
        {"ImportTaskId": f"import-ami-{i:017d}", "Status": "completed"} for i in range(n)
    ]
    path = tmp_path / "tasks.json"
    path.write_text(json.dumps(tasks + special))
    return path


ACTIVE = "import-ami-0active000000001"
DELETED = "import-ami-0deleted00000001"
MISSING = "import-ami-0missing00000001"


def test_status_counts_blocked_rows_by_reason_and_prints_the_resume_command(
    start_emulator: Start, tmp_path: Path
) -> None:
    special = [
        {"ImportTaskId": ACTIVE, "Status": "active", "Progress": "40", "CompletesAfterS": 600},
        {"ImportTaskId": DELETED, "Status": "deleted", "StatusMessage": "ClientError: no OS"},
    ]
    server = start_emulator(import_tasks=_tasks_file(tmp_path, 6, special), region=REGION)
    ids = {6: ACTIVE, 7: DELETED, 8: MISSING, 9: ACTIVE.replace("1", "2")}
    manifest = _manifest(tmp_path, 10, ids)
    first = invoke(*_run(manifest, server.url, "--preflight", "--tag", "wave=1"))
    assert first.exit_code == 1, first.output

    shown = invoke("status", tmp_path / "wave.journal")

    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    blocked = next(line for line in lines if line.startswith("blocked"))
    assert blocked.split()[1] == "4"
    for reason in ("TaskPending 1", "TaskFailed 1", "TaskNotFound 2"):
        assert reason in blocked, blocked
    assert any("row 8" in line and "TaskFailed" in line for line in lines), shown.output
    assert "check the import task of 4 blocked rows again (with --preflight)" in shown.output
    resume = _resume_command(shown.output)
    assert resume[resume.index("--tag") + 1] == "wave=1"
    assert "--preflight" in resume
    assert resume[resume.index("--region") + 1] == REGION
    document = json.loads(invoke("status", tmp_path / "wave.journal", "--json").stdout)
    assert document["blocked_by_code"] == {"TaskNotFound": 2, "TaskFailed": 1, "TaskPending": 1}
    assert shlex.split(document["resume_command"])[1:] == resume


def test_status_shows_failed_and_timed_out_images_and_how_to_follow_them(
    start_emulator: Start, tmp_path: Path
) -> None:
    special = [
        {"ImportTaskId": ACTIVE, "Status": "active", "CompletesAfterS": 1.5},
        {"ImportTaskId": DELETED, "Status": "deleted", "StatusMessage": "ClientError: no OS"},
    ]
    server = start_emulator(import_tasks=_tasks_file(tmp_path, 3, special), region=REGION)
    manifest = _manifest(tmp_path, 5, {3: ACTIVE, 4: DELETED})
    first = invoke(
        *_run(manifest, server.url, "--wait", "--wait-timeout", "0.5", "--poll-interval", "0.1")
    )
    assert first.exit_code == 1, first.output

    shown = invoke("status", tmp_path / "wave.journal")

    assert shown.exit_code == 0, shown.output
    assert "images    3 AVAILABLE, 1 FAILED, 1 TIMED_OUT" in shown.output
    assert any(
        "row 5" in line and "FAILED" in line and "no OS" in line
        for line in shown.output.splitlines()
    ), shown.output
    assert "leave 1 image FAILED as they are" in shown.output
    follow = next(line for line in shown.output.splitlines() if line.startswith("follow"))
    words = shlex.split(follow.removeprefix("follow"))
    assert words == ["ibimport", "wait", str(tmp_path / "wave.journal")]
    # That command, as printed: the timed-out image is followed to AVAILABLE.
    waited = invoke(*words[1:], "--poll-interval", "0.2")
    assert waited.exit_code == 1, waited.output  # the FAILED one stays FAILED
    rows = {r["name"]: r["imageStatus"] for r in read_results(tmp_path / "wave.results.csv")}
    assert rows["vm-0003"] == "AVAILABLE"
