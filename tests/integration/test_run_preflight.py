"""``run --preflight`` and ``--wait-for-tasks`` against the emulator over HTTP (issue 12):
only rows whose EC2 import task is ready are sent, the others end ``blocked`` with the
reason, are checked again on a re-run, and (waiting) are sent as their task completes."""

from __future__ import annotations

import csv
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

from integration_support import (
    import_requests,
    invoke,
    make_tasks,
    read_results,
    run_args,
    write_csv,
)
from integration_support import stats as emulator_stats

from ibimport.emulator import EmulatorServer

Start = Callable[..., EmulatorServer]

ACTIVE = "import-ami-0active0000000001"[:28]
SLOW = "import-ami-0slow00000000001"[:28]
DELETED = "import-ami-0deleted00000001"[:28]
MISSING = "import-ami-0missing00000001"[:28]


def _manifest(tmp_path: Path, n: int, ids: dict[int, str]) -> Path:
    tasks = make_tasks(n)
    for i, task in enumerate(tasks):
        task["vmImportTaskId"] = ids.get(i, f"import-ami-{i:017d}")
    return write_csv(tmp_path / "wave.csv", tasks)


def _tasks_file(tmp_path: Path, n: int, special: list[dict[str, object]]) -> Path:
    tasks: list[dict[str, object]] = [
        {"ImportTaskId": f"import-ami-{i:017d}", "Status": "completed"} for i in range(n)
    ]
    path = tmp_path / "tasks.json"
    path.write_text(json.dumps(tasks + special))
    return path


def _describes(url: str) -> int:
    return int(emulator_stats(url)["requests"].get("DescribeImportImageTasks", 0))


def _journal_rows(path: Path) -> dict[str, tuple[str, str, str]]:
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return {
            name: (state, code, message)
            for name, state, code, message in conn.execute(
                "SELECT name, state, error_code, error_message FROM rows"
            )
        }
    finally:
        conn.close()


SPECIAL: list[dict[str, object]] = [
    {"ImportTaskId": ACTIVE, "Status": "active", "Progress": "42", "CompletesAfterS": 600},
    {
        "ImportTaskId": DELETED,
        "Status": "deleted",
        "StatusMessage": "ClientError: Unknown OS / Missing OS files",
    },
]


def test_run_preflight_sends_only_ready_rows(start_emulator: Start, tmp_path: Path) -> None:
    server = start_emulator(import_tasks=_tasks_file(tmp_path, 250, SPECIAL))
    manifest = _manifest(tmp_path, 250, {10: ACTIVE, 120: DELETED, 230: MISSING})
    done = invoke(*run_args(manifest, server.url, "--preflight"))
    assert done.exit_code == 1, done.output  # some rows blocked
    assert import_requests(server.url) == 247
    # 3 batches of at most 100 IDs; the one of 50 with the unknown ID is halved until that
    # ID stands alone (6 halvings, 2 calls each): EC2's message is never read (issue 21).
    assert _describes(server.url) == 3 + 2 * 6
    rows = {r["name"]: r for r in read_results(tmp_path / "wave.results.csv")}
    assert rows["vm-0010"]["status"] == "blocked"
    assert rows["vm-0010"]["errorCode"] == "TaskPending"
    assert "42% converted" in rows["vm-0010"]["errorMessage"]
    assert rows["vm-0120"]["errorCode"] == "TaskFailed"
    assert "Unknown OS / Missing OS files" in rows["vm-0120"]["errorMessage"]
    assert rows["vm-0230"]["errorCode"] == "TaskNotFound"
    assert MISSING in rows["vm-0230"]["errorMessage"]
    assert sum(r["status"] == "succeeded" for r in rows.values()) == 247
    journal = _journal_rows(tmp_path / "wave.journal")
    assert journal["vm-0010"][:2] == ("blocked", "TaskPending")
    assert journal["vm-0000"][0] == "succeeded"
    report = json.loads((tmp_path / "wave.report.json").read_text())
    assert report["totals"]["blocked"] == 3, report["totals"]

    # A re-run checks only the blocked rows' tasks again (one call) and sends none of
    # the done rows; the tasks are still not ready, so the rows stay blocked.
    again = invoke(*run_args(manifest, server.url, "--preflight"))
    assert again.exit_code == 1, again.output
    assert import_requests(server.url) == 247
    # (the batch of 3 with the unknown ID: 1 call, then 2 halvings of 2 calls)
    assert _describes(server.url) - (3 + 2 * 6) <= 5
    assert _journal_rows(tmp_path / "wave.journal")["vm-0120"][0] == "blocked"

    # Without --preflight a re-run sends them (the service then fails their images).
    last = invoke(*run_args(manifest, server.url))
    assert last.exit_code == 0, last.output
    assert import_requests(server.url) == 250


def test_wait_for_tasks_sends_rows_as_their_task_completes(
    start_emulator: Start, tmp_path: Path
) -> None:
    special: list[dict[str, object]] = [
        {"ImportTaskId": ACTIVE, "Status": "active", "Progress": "10", "CompletesAfterS": 1.0},
        {"ImportTaskId": SLOW, "Status": "active", "Progress": "5", "CompletesAfterS": 600},
    ]
    server = start_emulator(import_tasks=_tasks_file(tmp_path, 40, special))
    manifest = _manifest(tmp_path, 40, {0: ACTIVE, 1: SLOW})
    done = invoke(
        *run_args(
            manifest, server.url, "--preflight", "--wait-for-tasks",
            "--task-timeout", "3", "--poll-interval", "0.2", "--concurrency", "1",
        )
    )  # fmt: skip
    assert done.exit_code == 1, done.output  # vm-0001's task never completed
    rows = {r["name"]: r for r in read_results(tmp_path / "wave.results.csv")}
    assert rows["vm-0000"]["status"] == "succeeded"  # sent once its task completed
    assert rows["vm-0001"]["status"] == "blocked"
    assert rows["vm-0001"]["errorCode"] == "TaskPending"
    assert import_requests(server.url) == 39
    # The waiting rows held no worker: with one call in flight the 38 ready rows were all
    # sent before the first pending task completed, so the first image built is vm-0002's.
    conn = sqlite3.connect(f"{(tmp_path / 'wave.journal').resolve().as_uri()}?mode=ro", uri=True)
    order = [n for (n,) in conn.execute("SELECT name FROM rows ORDER BY updated_at")]
    conn.close()
    assert order.index("vm-0000") > order.index("vm-0039"), order
    # Each polling round asks about every pending task in one call.
    assert _describes(server.url) <= 1 + 12


def test_wait_for_tasks_needs_preflight(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path, 2, {})
    refused = invoke("run", manifest, "--local", "--wait-for-tasks", "--progress", "off")
    assert refused.exit_code == 2, refused.output
    assert "--wait-for-tasks needs --preflight" in refused.output


def test_each_partition_is_checked_and_followed_with_its_own_client(
    start_emulator: Start, tmp_path: Path
) -> None:
    server = start_emulator(available_after_s=0.5)
    tasks = make_tasks(30)
    manifest = tmp_path / "wave.csv"
    with open(manifest, "w", newline="", encoding="utf-8") as handle:
        fields = ["name", "semanticVersion", "platform", "vmImportTaskId", "region"]
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        for i, task in enumerate(tasks):
            row = {k: task[k] for k in fields[:4]}
            writer.writerow({**row, "region": "us-east-1" if i % 3 else "eu-west-1"})
    done = invoke(
        "run", manifest, "--endpoint-url", server.url, "--region", "us-east-1",
        "--progress", "off", "--preflight", "--wait", "--poll-interval", "0.2",
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    regions = server.stats()["regions"]
    for region, n in (("us-east-1", 20), ("eu-west-1", 10)):
        asked = regions[region]["requests"]
        assert asked.get("DescribeImportImageTasks") == 1, (region, asked)
        assert asked.get("ListImageBuildVersions", 0) >= 2, (region, asked)  # reconcile, wait
        assert regions[region]["images"] == n
    rows = read_results(tmp_path / "wave.results.csv")
    assert {r["imageStatus"] for r in rows} == {"AVAILABLE"}
