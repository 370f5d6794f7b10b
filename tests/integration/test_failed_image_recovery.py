"""The recovery of a row whose image FAILED (issue 22, item 5).

Two paths: fix the row (a new ``vmImportTaskId``) and re-run with ``--force``: the changed
row is sent under its new token, a new build beside the failed one; or re-run with
``--retry-failed-images``: every row whose image failed is imported again under a token of
its own. Either way nothing else is sent again, and the results show the new tokens.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from integration_support import invoke, make_tasks, read_results, run_args, stats, write_csv

from ibimport.emulator import EmulatorServer

DECLARED = [f"import-ami-{i:017x}" for i in range(1, 6)]
UNKNOWN = "import-ami-0badbadbadbadbad0"


def _emulator(start: Callable[..., EmulatorServer], tmp_path: Path) -> EmulatorServer:
    tasks = tmp_path / "tasks.json"
    tasks.write_text(
        json.dumps([{"ImportTaskId": t, "Status": "completed"} for t in DECLARED]),
        encoding="utf-8",
    )
    return start(import_tasks=tasks, available_after_s=0.2)


def _manifest(path: Path, task_ids: list[str]) -> Path:
    tasks = make_tasks(len(task_ids))
    return write_csv(
        path, [{**t, "vmImportTaskId": i} for t, i in zip(tasks, task_ids, strict=True)]
    )


def _run(manifest: Path, url: str, *extra: str) -> Any:
    return invoke(*run_args(manifest, url, "--wait", "--poll-interval", "0.2", *extra))


def _rows(tmp_path: Path) -> list[dict[str, str]]:
    return read_results(tmp_path / "wave.results.csv")


def test_a_failed_image_fixed_in_the_manifest_is_imported_again_under_force(
    start_emulator: Callable[..., EmulatorServer], tmp_path: Path
) -> None:
    server = _emulator(start_emulator, tmp_path)
    manifest = _manifest(tmp_path / "wave.csv", [DECLARED[0], UNKNOWN, DECLARED[2]])
    first = _run(manifest, server.url)
    assert first.exit_code == 1, first.output
    before = _rows(tmp_path)
    assert [r["imageStatus"] for r in before] == ["AVAILABLE", "FAILED", "AVAILABLE"]

    _manifest(manifest, [DECLARED[0], DECLARED[1], DECLARED[2]])  # row 2 fixed
    refused = _run(manifest, server.url)
    assert refused.exit_code == 2, refused.output  # a changed row needs --force
    fixed = _run(manifest, server.url, "--force")

    assert fixed.exit_code == 0, fixed.output
    after = _rows(tmp_path)
    assert [r["imageStatus"] for r in after] == ["AVAILABLE"] * 3
    assert after[1]["clientToken"] != before[1]["clientToken"]  # its new token
    assert after[1]["imageArn"].endswith("/2")  # a new build beside the failed one
    assert [after[i]["clientToken"] for i in (0, 2)] == [before[i]["clientToken"] for i in (0, 2)]
    counters = stats(server.url)
    assert counters["requests"]["ImportVmImage"] == 4  # the other rows were not sent again
    assert counters["duplicateBuilds"] == 0
    assert counters["reimportsOverFailed"] == 1


def test_retry_failed_images_imports_each_failed_image_again_once_per_run(
    start_emulator: Callable[..., EmulatorServer], tmp_path: Path
) -> None:
    server = _emulator(start_emulator, tmp_path)
    manifest = _manifest(tmp_path / "wave.csv", [DECLARED[0], UNKNOWN])
    assert _run(manifest, server.url).exit_code == 1
    before = _rows(tmp_path)
    assert [r["imageStatus"] for r in before] == ["AVAILABLE", "FAILED"]

    plain = _run(manifest, server.url)  # without the option a failed image is left alone
    assert plain.exit_code == 1, plain.output
    assert stats(server.url)["requests"]["ImportVmImage"] == 2

    again = _run(manifest, server.url, "--retry-failed-images")

    assert again.exit_code == 1, again.output  # its task is still unknown: FAILED again
    after = _rows(tmp_path)
    assert after[1]["clientToken"] != before[1]["clientToken"]
    assert after[1]["imageArn"].endswith("/2")
    assert after[1]["imageStatus"] == "FAILED"
    assert after[0] == before[0] | {"status": after[0]["status"]}
    counters = stats(server.url)
    assert counters["requests"]["ImportVmImage"] == 3  # only the failed row, once
    assert counters["duplicateBuilds"] == 0
    # The same command again imports it again (a third build): each run, once.
    assert _run(manifest, server.url, "--retry-failed-images").exit_code == 1
    assert _rows(tmp_path)[1]["imageArn"].endswith("/3")
    assert stats(server.url)["requests"]["ImportVmImage"] == 4
