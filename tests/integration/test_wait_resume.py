"""A wait killed mid-way resumes where it was (issue 12): ``run --wait`` in a child process
is SIGKILLed once some images settled; ``ibimport wait JOURNAL`` then follows only the
images still outstanding, and leaves the settled ones' journalled states untouched."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from resume_support import (
    Children,
    Emulator,
    kill9,
    run_args,
    task_row,
    wait_for,
    write_manifest,
)

from ibimport.emulator import EmulatorConfig


def _followups(journal: Path) -> dict[str, tuple[str, float]]:
    if not journal.exists():
        return {}
    try:
        conn = sqlite3.connect(f"{journal.resolve().as_uri()}?mode=ro", uri=True, timeout=1.0)
        try:
            return {
                name: (status, updated)
                for name, status, updated in conn.execute(
                    "SELECT name, image_status, updated_at FROM followups WHERE image_status != ''"
                )
            }
        finally:
            conn.close()
    except sqlite3.Error:
        return {}  # not created yet


def test_a_killed_wait_resumes_with_only_the_outstanding_images(
    children: Children, tmp_path: Path
) -> None:
    rows = [task_row(i) for i in range(20)]
    # Half the tasks completed long ago (their images settle at once); the other half
    # complete 4 s after the emulator starts, so their images are outstanding at the kill.
    tasks = [
        {"ImportTaskId": r["vmImportTaskId"], "Status": "completed"}
        if i % 2 == 0
        else {"ImportTaskId": r["vmImportTaskId"], "Status": "active", "CompletesAfterS": 4}
        for i, r in enumerate(rows)
    ]
    tasks_file = tmp_path / "tasks.json"
    tasks_file.write_text(json.dumps(tasks))
    manifest = write_manifest(tmp_path / "wave.csv", rows)
    journal = tmp_path / "wave.journal"
    config = EmulatorConfig(import_tasks=tasks_file, available_after_s=0.3)
    with Emulator(config) as emulator:
        child = children.start(
            *run_args(manifest, emulator.url, "--wait", "--poll-interval", "0.1")
        )
        settled = wait_for(
            lambda: (found := _followups(journal)) and len(found) >= 10 and found,
            timeout=20,
            what="the ready half of the images settled",
        )
        assert child.running(), child.stderr_text()
        kill9(child)
        before = _followups(journal)
        assert len(before) == 10, before
        assert {status for status, _ in before.values()} == {"AVAILABLE"}
        assert set(settled) == set(before)

        finished = children.run(
            "wait", str(journal), "--endpoint-url", emulator.url,
            "--region", "us-east-1", "--poll-interval", "0.2", "--wait-timeout", "30",
        )  # fmt: skip
        assert finished.returncode == 0, finished.stderr
        after = _followups(journal)
        assert len(after) == 20
        assert {status for status, _ in after.values()} == {"AVAILABLE"}
        # The images settled before the kill were not learnt (nor written) again.
        assert {name: after[name] for name in before} == before
