"""``ibimport cancel JOURNAL`` through the real CLI against an emulator in another process:
the wave's active import tasks cancelled and journalled, their rows ``cancelled``; the
same run command then starts a new task for each of them and finishes the rest, with no
second task for any VM (issue 19).
"""

from __future__ import annotations

import csv
import json
import signal
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from integration_support import REGION, read_results
from resume_support import Children, Emulator, journal_counts, run_args, wait_for, wait_for_done

from ibimport.emulator import EmulatorConfig
from ibimport.journal import SqliteJournal, TaskStatus

VMS = 10
SLOTS = 4
BUCKET = "wave-cancel-disks"
WAVE = ("--task-slots", str(SLOTS), "--poll-interval", "0.1s")


@pytest.fixture(scope="module")
def wave_emulator() -> Iterator[Emulator]:
    """Tasks of about 4 s: long enough to be active when the cancel comes."""
    with Emulator(EmulatorConfig(task_slots=SLOTS, task_duration_s=4.0, seed=7)) as emulator:
        yield emulator


@pytest.fixture
def emulator(wave_emulator: Emulator) -> Emulator:
    wave_emulator.reset()
    return wave_emulator


def _wave(emulator: Emulator, workdir: Path) -> Path:
    s3 = boto3.client(
        "s3",
        endpoint_url=emulator.url,
        region_name=REGION,
        aws_access_key_id="AKIDIBIMPORTTEST",
        aws_secret_access_key="ibimport-test-secret",
    )
    s3.create_bucket(Bucket=BUCKET)
    manifest = workdir / "m.csv"
    with manifest.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["name", "semanticVersion", "platform", "diskImage"])
        for i in range(VMS):
            s3.put_object(Bucket=BUCKET, Key=f"vm-{i:02d}.vmdk", Body=b"disk")
            writer.writerow([f"vm-{i:02d}", "1.0.0", "Linux", f"s3://{BUCKET}/vm-{i:02d}.vmdk"])
    s3.close()
    return manifest


def _active_tasks(emulator: Emulator) -> int:
    return int(emulator.stats()["importTasks"]["active"])


def test_cancel_mid_wave_then_the_run_restarts_only_the_cancelled_rows(
    emulator: Emulator, children: Children, tmp_path: Path
) -> None:
    manifest = _wave(emulator, tmp_path)
    journal = tmp_path / "m.journal"
    args = run_args(manifest, emulator.url, *WAVE)

    first = children.start(*args)
    wait_for_done(journal, first, at_least=2)  # some rows done, their slots' next tasks active
    first.signal(signal.SIGTERM)
    stopped = first.wait()
    assert stopped.returncode == 130, stopped.stderr
    assert _active_tasks(emulator) > 0

    cancelled = children.run("cancel", str(journal), "--json")
    cancelled.assert_clean()
    assert cancelled.returncode == 0, cancelled.stderr
    answer = json.loads(cancelled.stdout)
    gone = [t for t in answer["tasks"] if t["outcome"] == "cancelled"]
    assert gone, answer
    assert all(t["outcome"] in ("cancelled", "ended") for t in answer["tasks"])
    tasks = emulator.stats()["importTasks"]
    assert tasks["cancelled"] == len(gone)
    assert _active_tasks(emulator) == 0
    assert answer["rowsCancelled"] == len(gone)
    assert journal_counts(journal).get("cancelled", 0) == len(gone)
    store = SqliteJournal.open_readonly(journal)
    records = store.task_records()
    store.close()
    assert {records[t["name"], "1.0.0"].status for t in gone} == {TaskStatus.CANCELLED}
    # The run's results were rewritten: the cancelled rows say so.
    rows = {r["name"]: r for r in read_results(tmp_path / "m.results.csv")}
    assert {rows[t["name"]]["status"] for t in gone} == {"cancelled"}
    assert {rows[t["name"]]["errorCode"] for t in gone} == {"TaskCancelled"}

    again = children.run("cancel", str(journal))
    assert again.returncode == 0, again.stderr
    assert "nothing to cancel" in again.stdout

    last = children.run(*args, "--wait", "--wait-timeout", "60s")
    last.assert_clean()
    assert last.returncode == 0, last.stderr
    tasks = emulator.stats()["importTasks"]
    assert tasks["duplicates"] == 0
    assert tasks["started"] == VMS + len(gone)  # a new task for each cancelled row only
    assert tasks["maxActive"] <= SLOTS
    assert emulator.stats()["duplicateBuilds"] == 0
    results = read_results(tmp_path / "m.results.csv")
    assert {r["status"] for r in results} == {"succeeded"}
    assert {r["imageStatus"] for r in results} == {"AVAILABLE"}
    assert journal_counts(journal) == {"succeeded": VMS}


def test_cancel_refuses_a_journal_a_run_is_using(
    emulator: Emulator, children: Children, tmp_path: Path
) -> None:
    manifest = _wave(emulator, tmp_path)
    journal = tmp_path / "m.journal"
    run = children.start(*run_args(manifest, emulator.url, *WAVE))
    wait_for(
        lambda: int(emulator.stats()["importTasks"]["started"]) > 0,
        timeout=30,
        what="the run's first task",
    )
    refused = children.run("cancel", str(journal))
    refused.assert_clean()
    assert refused.returncode == 2
    assert "stop it first" in refused.stderr
    assert emulator.stats()["importTasks"]["cancelled"] == 0
    run.kill()
