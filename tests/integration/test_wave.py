"""Rows with disks against the real emulator: ibimport starts each VM's EC2 import task
(ImportImage), keeps the slots full, pipelines into Image Builder, and resumes (issue 19).

Tasks take about a second (``task_duration_s``); the follower polls every 0.1 s.
"""

from __future__ import annotations

import csv
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import boto3
import pytest
from integration_support import REGION, stats

from ibimport import BatchConfig, ClientSettings, RunSettings, Shard, run_batch
from ibimport.emulator import EmulatorServer
from ibimport.engine.batch import BatchControl, BatchResult
from ibimport.engine.wave import TaskSlotSpec, TaskWave
from ibimport.journal import SqliteJournal, TaskStatus
from ibimport.report.html import write_html_report
from ibimport.stages.taskfollow import TaskFollowSettings

Start = Callable[..., EmulatorServer]
BUCKET = "wave-disks"


def _place_disks(server: EmulatorServer, n: int, *, missing: frozenset[int] = frozenset()) -> None:
    s3 = boto3.client("s3", endpoint_url=server.url, region_name=REGION)
    s3.create_bucket(Bucket=BUCKET)
    for i in range(n):
        if i not in missing:
            s3.put_object(Bucket=BUCKET, Key=f"vm-{i:04d}.vmdk", Body=b"disk")


def _manifest(path: Path, n: int, *, start: int = 0) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["name", "semanticVersion", "platform", "diskImage"])
        for i in range(start, n):
            writer.writerow([f"vm-{i:04d}", "1.0.0", "Linux", f"s3://{BUCKET}/vm-{i:04d}.vmdk"])
    return path


def _config(
    manifest: Path, server: EmulatorServer, *, journal: Path | None = None, **wave: Any
) -> BatchConfig:
    follow = TaskFollowSettings(
        poll_min_s=0.1,
        poll_max_s=0.3,
        stall_timeout_s=wave.pop("stall_timeout_s", None),
        task_timeout_s=wave.pop("task_timeout_s", None),
    )
    shard = wave.pop("shard", None)
    return BatchConfig(
        manifest=manifest,
        client=ClientSettings(region=REGION, endpoint_url=server.url),
        journal_path=journal or manifest.with_suffix(".journal"),
        run=RunSettings(backoff_base_s=0.01, backoff_cap_s=0.05),
        shard=shard,
        tasks=TaskWave(follow=follow, quota_retry_s=0.2, **wave),
    )


def _rows(result: BatchResult) -> dict[str, dict[str, str]]:
    with open(result.results_path, newline="", encoding="utf-8") as handle:
        return {row["name"]: row for row in csv.DictReader(handle)}


def _tasks(server: EmulatorServer) -> dict[str, Any]:
    found: dict[str, Any] = stats(server.url)["importTasks"]
    return found


def test_each_task_outcome_and_its_message_reach_the_results(
    start_emulator: Start, tmp_path: Path
) -> None:
    server = start_emulator(
        task_slots=4, task_duration_s=1.0, seed=3, task_failure_mix="first-boot=0.2"
    )
    _place_disks(server, 20, missing=frozenset({7}))
    result = anyio.run(run_batch, _config(_manifest(tmp_path / "w.csv", 20), server))
    rows = _rows(result)
    missing = rows["vm-0007"]
    assert missing["status"] == "failed"
    assert missing["errorCode"] == "TaskFailed"
    assert "ClientError: Disk validation failed" in missing["errorMessage"]
    assert "403 Forbidden" in missing["errorMessage"]
    assert "hint: the import role cannot read the disk object" in missing["errorMessage"]
    first_boot = [r for r in rows.values() if "FirstBootFailure" in r["errorMessage"]]
    assert first_boot, "the seeded mix fails some tasks at first boot"
    assert all(r["status"] == "failed" and "hint:" in r["errorMessage"] for r in first_boot)
    succeeded = [r for r in rows.values() if r["status"] == "succeeded"]
    assert len(succeeded) == 20 - 1 - len(first_boot)
    assert all(r["imageArn"] for r in succeeded)
    tasks = _tasks(server)
    assert tasks["started"] == 20
    assert tasks["duplicates"] == 0
    assert tasks["maxActive"] <= 4
    journal = SqliteJournal.open_readonly(result.journal_path or Path())
    records = journal.task_records()
    journal.close()
    assert len(records) == 20
    assert {r.status for r in records.values()} == {TaskStatus.COMPLETED, TaskStatus.DELETED}
    assert all(r.image_id.startswith("ami-") for r in records.values() if r.status.standing)
    # The report's figures of the partition's tasks: what the follower asked, in rounds.
    [figures] = result.report.to_json()["importTasks"]
    assert (figures["region"], figures["quota"], figures["started"]) == (REGION, 4, 20)
    assert figures["maxActive"] <= 4
    assert figures["statusCalls"] == stats(server.url)["requests"]["DescribeImportImageTasks"] - 2
    assert 0 < figures["callsPerTaskPerRound"] <= 1  # every active task in one call a round


def test_a_task_past_task_timeout_fails_its_row_and_after_task_sends_no_import(
    start_emulator: Start, tmp_path: Path
) -> None:
    server = start_emulator(task_slots=5, task_duration_s=30.0, seed=1)
    _place_disks(server, 3)
    config = _config(_manifest(tmp_path / "w.csv", 3), server, task_timeout_s=0.5, after_task=True)
    result = anyio.run(run_batch, config)
    rows = _rows(result)
    assert {r["errorCode"] for r in rows.values()} == {"TaskTimedOut"}
    assert "--task-timeout" in rows["vm-0000"]["errorMessage"]
    assert stats(server.url)["requests"].get("ImportVmImage", 0) == 0  # --after-task


def test_the_quota_error_is_back_pressure_never_a_failure(
    start_emulator: Start, tmp_path: Path
) -> None:
    server = start_emulator(task_slots=3, task_duration_s=0.5, seed=5)
    _place_disks(server, 15)
    # Told 10 slots where the account has 3: ImportImage answers ResourceLimitExceeded.
    config = _config(_manifest(tmp_path / "w.csv", 15), server, slots=TaskSlotSpec(10))
    result = anyio.run(run_batch, config)
    assert result.stats.totals["succeeded"] == 15
    tasks = _tasks(server)
    assert tasks["quotaRefusals"] > 0
    assert tasks["started"] == 15
    assert tasks["duplicates"] == 0
    assert tasks["maxActive"] <= 3


def test_two_shards_of_one_partition_share_the_slots_through_the_service(
    start_emulator: Start, tmp_path: Path
) -> None:
    server = start_emulator(task_slots=4, task_duration_s=0.5, seed=9)
    _place_disks(server, 24)
    manifest = _manifest(tmp_path / "w.csv", 24)

    async def both() -> list[BatchResult]:
        results: list[BatchResult] = []

        async def shard(k: int) -> None:
            config = _config(
                manifest,
                server,
                journal=tmp_path / f"w.{k}.journal",
                shard=Shard(k, 2),
            )
            results.append(await run_batch(config))

        async with anyio.create_task_group() as group:
            group.start_soon(shard, 0)
            group.start_soon(shard, 1)
        return results

    results = anyio.run(both)
    assert sum(r.stats.totals["succeeded"] for r in results) == 24
    tasks = _tasks(server)
    assert tasks["maxActive"] <= 4
    assert tasks["started"] == 24
    assert tasks["duplicates"] == 0


def test_a_lost_journal_adopts_its_tasks_by_tag(start_emulator: Start, tmp_path: Path) -> None:
    server = start_emulator(task_slots=20, task_duration_s=3.0, seed=2)
    _place_disks(server, 10)
    manifest = _manifest(tmp_path / "w.csv", 10)
    control = BatchControl()

    async def stopped_once_started() -> BatchResult:
        async with anyio.create_task_group() as group:

            async def stop_when_started() -> None:
                while _tasks(server)["started"] < 10:  # noqa: ASYNC110 - another process's counter
                    await anyio.sleep(0.05)
                control.request_stop()

            group.start_soon(stop_when_started)
            # --after-task: stopped while every row waits for its task, nothing imported.
            config = _config(manifest, server, after_task=True)
            result = await run_batch(config, control=control)
            group.cancel_scope.cancel()
        return result

    first = anyio.run(stopped_once_started)
    assert first.outcome.interrupted
    assert stats(server.url)["requests"].get("ImportVmImage", 0) == 0
    # The journal is lost (another machine, a deleted folder): the tasks are found by tag.
    for path in tmp_path.glob("w.journal*"):
        path.unlink()
    second = anyio.run(run_batch, _config(manifest, server))
    assert second.stats.totals["succeeded"] == 10
    tasks = _tasks(server)
    assert tasks["started"] == 10
    assert tasks["duplicates"] == 0
    assert stats(server.url)["duplicateBuilds"] == 0


def test_a_resume_after_failures_starts_a_new_task_only_for_the_failed_rows(
    start_emulator: Start, tmp_path: Path
) -> None:
    server = start_emulator(task_slots=5, task_duration_s=0.5, seed=4)
    _place_disks(server, 6, missing=frozenset({2}))
    manifest = _manifest(tmp_path / "w.csv", 6)
    first = anyio.run(run_batch, _config(manifest, server))
    assert _rows(first)["vm-0002"]["status"] == "failed"
    s3 = boto3.client("s3", endpoint_url=server.url, region_name=REGION)
    s3.put_object(Bucket=BUCKET, Key="vm-0002.vmdk", Body=b"disk")  # fixed, then re-run
    second = anyio.run(run_batch, _config(manifest, server))
    assert {r["status"] for r in _rows(second).values()} == {"succeeded"}
    tasks = _tasks(server)
    assert tasks["started"] == 7  # one more, for the row whose task failed
    assert tasks["duplicates"] == 0
    shutil.rmtree(tmp_path / "unused", ignore_errors=True)


def test_a_mixed_manifest_imports_task_rows_and_disk_rows(
    start_emulator: Start, tmp_path: Path
) -> None:
    server = start_emulator(task_slots=5, task_duration_s=0.5, seed=6)
    _place_disks(server, 3)
    manifest = tmp_path / "mixed.csv"
    with open(manifest, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["name", "semanticVersion", "platform", "vmImportTaskId", "diskImage"])
        writer.writerow(["old-vm", "1.0.0", "Linux", "import-ami-0123456789abcdef0", ""])
        for i in range(3):
            writer.writerow([f"vm-{i:04d}", "1.0.0", "Linux", "", f"s3://{BUCKET}/vm-{i:04d}.vmdk"])
    result = anyio.run(run_batch, _config(manifest, server))
    assert result.stats.totals["succeeded"] == 4
    assert _tasks(server)["started"] == 3


@pytest.mark.parametrize("role", [False])
def test_a_missing_service_role_stops_the_partition_with_one_message(
    start_emulator: Start, tmp_path: Path, role: bool
) -> None:
    server = start_emulator(task_slots=5, task_duration_s=0.5, vmimport_role=role)
    _place_disks(server, 4)
    result = anyio.run(run_batch, _config(_manifest(tmp_path / "w.csv", 4), server))
    assert result.outcome.fatal is not None
    assert "does not exist or does not have sufficient permissions" in str(result.outcome.fatal)
    assert result.stats.totals["failed"] == 0


def test_the_wave_report_draws_the_tasks_against_the_slots(
    start_emulator: Start, tmp_path: Path
) -> None:
    server = start_emulator(task_slots=3, task_duration_s=0.5, seed=5)
    _place_disks(server, 8)
    result = anyio.run(run_batch, _config(_manifest(tmp_path / "w.csv", 8), server))
    assert result.journal_path is not None
    html = tmp_path / "wave.html"

    write_html_report(html, [result.journal_path], report=result.report.to_json())

    page = html.read_text(encoding="utf-8")
    assert "EC2 import tasks active" in page  # the task stage's chart, from the journal
    assert "3 slots" in page  # against the partition's slots, as the run found them
