"""A disk-image wave killed with SIGKILL at random moments, then resumed (issue 19).

The real CLI runs as a child process against an emulator in another process (whose tasks
go on while the importer is dead), with ``--wait``, so a kill can land while tasks are
started, while rows wait for their task, while ImportVmImage is sent or while the images
are followed. The kill points are drawn from a seed and each is bounded in time. After the
last run, from the service's side: one EC2 import task per VM (none started twice, none
replayed into a second), one build per image, every image AVAILABLE.
"""

from __future__ import annotations

import csv
import random
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import boto3
import pytest
from integration_support import REGION, read_results
from resume_support import (
    Child,
    Children,
    Emulator,
    journal_counts,
    kill9,
    run_args,
    wait_for,
)

from ibimport.emulator import EmulatorConfig

VMS = 30
SLOTS = 6
BUCKET = "wave-kill-disks"
#: The wave's own options: tasks followed every 0.1 s, images polled as often.
WAVE = ("--task-slots", str(SLOTS), "--poll-interval", "0.1s", "--wait", "--wait-timeout", "60s")


@pytest.fixture(scope="module")
def wave_emulator() -> Iterator[Emulator]:
    """Tasks of about a second (seeded spread), SLOTS of them per account and Region."""
    with Emulator(
        EmulatorConfig(task_slots=SLOTS, task_duration_s=1.0, seed=19, latency_ms=5.0)
    ) as emulator:
        yield emulator


@pytest.fixture
def emulator(wave_emulator: Emulator) -> Emulator:
    wave_emulator.reset()
    return wave_emulator


def _wave(emulator: Emulator, workdir: Path) -> Path:
    """VMS disk objects in the emulator's S3 and the manifest that names them."""
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
            s3.put_object(Bucket=BUCKET, Key=f"vm-{i:03d}.vmdk", Body=b"disk")
            writer.writerow([f"vm-{i:03d}", "1.0.0", "Linux", f"s3://{BUCKET}/vm-{i:03d}.vmdk"])
    s3.close()
    return manifest


def _tasks_journalled(journal: Path) -> int:
    """Import tasks the journal holds (0 while it cannot be read yet)."""
    if not journal.exists():
        return 0
    try:
        conn = sqlite3.connect(f"{journal.resolve().as_uri()}?mode=ro", uri=True, timeout=1.0)
    except sqlite3.Error:
        return 0
    try:
        (count,) = conn.execute("SELECT COUNT(*) FROM tasks").fetchone()
        return int(count)
    except sqlite3.Error:
        return 0
    finally:
        conn.close()


def _kill_points(seed: int, count: int) -> list[tuple[str, int, float]]:
    """``count`` moments to kill at: (what to wait for, how many, then how long to sleep).

    ``tasks`` k: the journal holds k tasks (the start stage at work); ``succeeded`` k: k
    rows done (imports sent, tasks ending); ``started`` k: the service started k tasks
    (some maybe not journalled yet). A point the wave passed already kills a run as it
    starts, once its delay is over.
    """
    rng = random.Random(seed)
    points = []
    for _ in range(count):
        what = rng.choice(("tasks", "succeeded", "started"))
        points.append((what, rng.randint(1, VMS), rng.uniform(0.0, 0.4)))
    return points


def _reached(what: str, k: int, *, emulator: Emulator, journal: Path) -> Callable[[], bool]:
    def probe() -> bool:
        if what == "tasks":
            return _tasks_journalled(journal) >= k
        if what == "succeeded":
            return journal_counts(journal).get("succeeded", 0) >= k
        return int(emulator.stats()["importTasks"]["started"]) >= k

    return probe


def _kill_at(child: Child, probe: Callable[[], bool], delay_s: float) -> bool:
    """SIGKILL once ``probe`` holds (and ``delay_s`` later); False: the run ended first."""

    def reached() -> bool | None:
        return probe() or not child.running() or None

    wait_for(reached, timeout=30, what="the kill point", interval=0.005)
    time.sleep(delay_s)
    if not child.running():
        return False
    kill9(child)
    return True


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_wave_killed_at_random_moments_resumes_to_one_task_and_one_build_per_vm(
    emulator: Emulator, children: Children, tmp_path: Path, seed: int
) -> None:
    manifest = _wave(emulator, tmp_path)
    journal = tmp_path / "m.journal"
    args = run_args(manifest, emulator.url, *WAVE)
    kills = 0
    for what, k, delay_s in _kill_points(seed, count=4):
        child = children.start(*args)
        if _kill_at(child, _reached(what, k, emulator=emulator, journal=journal), delay_s):
            kills += 1
        else:
            child.wait()
    assert kills >= 1, "no kill landed: the points lie past the end of the wave"

    last = children.run(*args)
    last.assert_clean()
    assert last.returncode == 0, last.stderr

    tasks = emulator.stats()["importTasks"]
    assert tasks["duplicates"] == 0
    assert tasks["started"] == VMS  # one task per VM, however many runs asked
    assert tasks["maxActive"] <= SLOTS
    assert tasks["completed"] == VMS
    stats = emulator.stats()
    assert stats["duplicateBuilds"] == 0
    assert stats["images"] == VMS
    results = read_results(tmp_path / "m.results.csv")
    assert {r["status"] for r in results} == {"succeeded"}
    assert {r["imageStatus"] for r in results} == {"AVAILABLE"}
    assert len({r["imageArn"] for r in results}) == VMS
    builds = emulator.builds_per_row([r["name"] for r in results])
    assert set(builds.values()) == {1}, {k: v for k, v in builds.items() if v != 1}
    assert journal_counts(journal) == {"succeeded": VMS}
    assert _tasks_journalled(journal) == VMS
