"""Issue 12 against the emulator over HTTP: import tasks checked in batches before the
import (``preflight``), every image followed to its final state after it (``run --wait``,
``wait JOURNAL``), with the real CLI and real aioboto3 clients."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from integration_support import (
    REGION,
    invoke,
    make_tasks,
    read_report,
    read_results,
    run_args,
    stats,
    write_csv,
)

from ibimport.emulator import EmulatorServer

Start = Callable[..., EmulatorServer]


def _manifest(tmp_path: Path, n: int, *, ids: dict[int, str] | None = None) -> Path:
    tasks = make_tasks(n)
    for i, task in enumerate(tasks):
        task["vmImportTaskId"] = (ids or {}).get(i, f"import-ami-{i:017d}")
    return write_csv(tmp_path / "wave.csv", tasks)


def _tasks_file(tmp_path: Path, n: int, special: list[dict[str, object]]) -> Path:
    tasks: list[dict[str, object]] = [
        {"ImportTaskId": f"import-ami-{i:017d}", "Status": "completed"} for i in range(n)
    ]
    tasks += special
    path = tmp_path / "tasks.json"
    path.write_text(json.dumps(tasks))
    return path


def _requests(url: str, operation: str) -> int:
    return int(stats(url)["requests"].get(operation, 0))


ACTIVE = "import-ami-active00000000001"[:28]
DELETED = "import-ami-deleted0000000001"[:28]
MISSING = "import-ami-missing0000000001"[:28]


def test_preflight_classifies_each_task_in_batches(start_emulator: Start, tmp_path: Path) -> None:
    special = [
        {"ImportTaskId": ACTIVE, "Status": "active", "Progress": "42", "CompletesAfterS": 600},
        {
            "ImportTaskId": DELETED,
            "Status": "deleted",
            "StatusMessage": "ClientError: Unknown OS / Missing OS files",
        },
    ]
    server = start_emulator(import_tasks=_tasks_file(tmp_path, 250, special))
    manifest = _manifest(tmp_path, 250, ids={10: ACTIVE, 120: DELETED, 230: MISSING})
    results = tmp_path / "tasks.csv"
    found = invoke(
        "preflight", manifest, "--endpoint-url", server.url, "--region", REGION,
        "--results", results, "--json",
    )  # fmt: skip
    assert found.exit_code == 1, found.output
    document = json.loads(found.stdout)
    assert document["totals"] == {
        "rows": 250, "ready": 247, "pending": 1, "failed": 1, "unknown": 1, "unchecked": 0,
    }  # fmt: skip
    rows = {int(r["name"].removeprefix("vm-")): r for r in read_results(results)}
    assert rows[10]["taskStatus"] == "pending"
    assert rows[10]["taskProgress"] == "42"
    assert rows[120]["taskStatus"] == "failed"
    assert rows[120]["taskMessage"] == "ClientError: Unknown OS / Missing OS files"
    assert rows[230]["taskStatus"] == "unknown"
    assert "InvalidConversionTaskId.Malformed" in rows[230]["taskMessage"]
    assert rows[0]["taskStatus"] == "ready"
    # 3 batches of at most 100 IDs; the one of 50 with the unknown ID is halved until that
    # ID stands alone (6 halvings, 2 calls each): EC2's message is never read (issue 21).
    calls = _requests(server.url, "DescribeImportImageTasks")
    assert calls == document["calls"] == 3 + 2 * 6


def test_preflight_of_ready_rows_exits_0(start_emulator: Start, tmp_path: Path) -> None:
    server = start_emulator()  # the fixture's --task-mix completed=1: every task completed
    manifest = _manifest(tmp_path, 120)
    found = invoke("preflight", manifest, "--endpoint-url", server.url, "--region", REGION)
    assert found.exit_code == 0, found.output
    assert "120 ready" in found.output
    assert _requests(server.url, "DescribeImportImageTasks") == 2


def test_preflight_slows_down_when_ec2_throttles(start_emulator: Start, tmp_path: Path) -> None:
    server = start_emulator(ec2_rate=4.0, burst=1)
    manifest = _manifest(tmp_path, 800)
    found = invoke(
        "preflight", manifest, "--endpoint-url", server.url, "--region", REGION, "--json"
    )
    assert found.exit_code == 0, found.output
    document = json.loads(found.stdout)
    assert document["totals"]["ready"] == 800
    assert stats(server.url)["throttled"] > 0
    assert document["throttled"] > 0
    assert document["calls"] == _requests(server.url, "DescribeImportImageTasks")


def test_run_wait_follows_every_image_in_batches(start_emulator: Start, tmp_path: Path) -> None:
    server = start_emulator(available_after_s=1.0)
    manifest = _manifest(tmp_path, 150)
    done = invoke(*run_args(manifest, server.url, "--wait", "--poll-interval", "0.3"))
    assert done.exit_code == 0, done.output
    assert "150 AVAILABLE" in done.output
    results = read_results(tmp_path / "wave.results.csv")
    assert {r["imageStatus"] for r in results} == {"AVAILABLE"}
    report = read_report(tmp_path / "wave.report.json")
    assert report["imageStatus"] == {"AVAILABLE": 150}
    # A per-image waiter makes 150 GetImage calls a round; batched, a round of 150
    # outstanding images costs ceil(150 / 100) listing calls.
    assert _requests(server.url, "GetImage") == 0
    lists = _requests(server.url, "ListImageBuildVersions") - 1  # the reconcile listing
    rounds = lists / math.ceil(150 / 100)
    assert 1 <= rounds <= 8, lists


def test_failed_task_reason_reaches_the_results(start_emulator: Start, tmp_path: Path) -> None:
    special = [
        {
            "ImportTaskId": DELETED,
            "Status": "deleted",
            "StatusMessage": "ClientError: Unknown OS / Missing OS files",
        }
    ]
    server = start_emulator(import_tasks=_tasks_file(tmp_path, 3, special))
    manifest = _manifest(tmp_path, 4, ids={3: DELETED})
    done = invoke(*run_args(manifest, server.url, "--wait", "--poll-interval", "0.1"))
    assert done.exit_code == 1, done.output
    rows = {r["name"]: r for r in read_results(tmp_path / "wave.results.csv")}
    failed = rows["vm-0003"]
    assert failed["status"] == "succeeded"  # the import call succeeded; its image did not
    assert failed["imageStatus"] == "FAILED"
    assert "Unknown OS / Missing OS files" in failed["imageStatusReason"]
    assert {rows[f"vm-000{i}"]["imageStatus"] for i in range(3)} == {"AVAILABLE"}


def test_wait_times_out_then_a_later_wait_resumes(start_emulator: Start, tmp_path: Path) -> None:
    server = start_emulator(available_after_s=2.0)
    manifest = _manifest(tmp_path, 30)
    first = invoke(
        *run_args(manifest, server.url, "--wait", "--wait-timeout", "0.3", "--poll-interval", "0.1")
    )
    assert first.exit_code == 1, first.output
    assert "30 TIMED_OUT" in first.output
    rows = read_results(tmp_path / "wave.results.csv")
    assert {r["imageStatus"] for r in rows} == {"TIMED_OUT"}
    journal = tmp_path / "wave.journal"
    again = invoke(
        "wait", journal, "--endpoint-url", server.url, "--region", REGION,
        "--poll-interval", "0.5", "--wait-timeout", "20",
    )  # fmt: skip
    assert again.exit_code == 0, again.output
    rows = read_results(tmp_path / "wave.results.csv")
    assert {r["imageStatus"] for r in rows} == {"AVAILABLE"}
    assert read_report(tmp_path / "wave.report.json")["imageStatus"] == {"AVAILABLE": 30}
    # Settled images are not asked again: a third wait makes no status call at all.
    before = _requests(server.url, "ListImageBuildVersions") + _requests(server.url, "GetImage")
    third = invoke("wait", journal, "--endpoint-url", server.url, "--region", REGION)
    assert third.exit_code == 0, third.output
    after = _requests(server.url, "ListImageBuildVersions") + _requests(server.url, "GetImage")
    assert after == before


def test_run_wait_writes_each_output_once_after_the_wait(
    start_emulator: Start, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = start_emulator(available_after_s=0.3)
    manifest = _manifest(tmp_path, 20)
    placed: list[str] = []
    replace = os.replace

    def counted(src: str | Path, dst: str | Path) -> None:
        placed.append(Path(dst).name)
        replace(src, dst)

    monkeypatch.setattr(os, "replace", counted)
    done = invoke(*run_args(manifest, server.url, "--wait", "--poll-interval", "0.1"))

    assert done.exit_code == 0, done.output
    assert placed.count("wave.results.csv") == 1
    assert placed.count("wave.report.json") == 1
    results = read_results(tmp_path / "wave.results.csv")
    assert [int(r["row"]) for r in results] == list(range(1, 21))
    assert {r["imageStatus"] for r in results} == {"AVAILABLE"}
    report = read_report(tmp_path / "wave.report.json")
    assert report["imageStatus"] == {"AVAILABLE": 20}
    assert report["totals"]["succeeded"] == 20
    assert report["existingImages"]["calls"] >= 1  # the run's own figures are kept
