"""One selection pass under every command (issue 18; issue 23 items 3, 4, 5), through the
real CLI against the emulator: which rows, in which partition and shard, every path
checked, before anything is read or sent."""

from __future__ import annotations

import csv
import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from integration_support import (
    expected_tokens,
    invoke,
    make_tasks,
    read_report,
    read_results,
    run_args,
    stats,
    write_csv,
)

from ibimport.emulator import EmulatorServer

REGIONS = ("us-east-1", "eu-west-1")


def _regional(path: Path, n: int, *, task_ids: dict[int, str] | None = None) -> Path:
    """``n`` rows, alternately in each of REGIONS (a ``region`` column)."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        fields = ["name", "semanticVersion", "platform", "vmImportTaskId", "region"]
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        for i, task in enumerate(make_tasks(n)):
            row = {k: task[k] for k in fields[:-1]}
            row["vmImportTaskId"] = (task_ids or {}).get(i, f"import-ami-{i:017d}")
            writer.writerow({**row, "region": REGIONS[i % 2]})
    return path


def _tasks_file(tmp_path: Path, n: int) -> Path:
    path = tmp_path / "tasks.json"
    tasks = [{"ImportTaskId": f"import-ami-{i:017d}", "Status": "completed"} for i in range(n)]
    path.write_text(json.dumps(tasks), encoding="utf-8")
    return path


def _planned(stdout: str) -> list[dict[str, str]]:
    lines = stdout.splitlines()
    header = lines[0].split("\t")
    return [dict(zip(header, line.split("\t"), strict=True)) for line in lines[1:]]


def test_a_two_region_dry_run_after_the_import_says_every_row_exists(
    start_emulator: Any, tmp_path: Path
) -> None:
    server: EmulatorServer = start_emulator()
    manifest = _regional(tmp_path / "wave.csv", 12)
    ran = invoke("run", manifest, "--endpoint-url", server.url, "--progress", "off")
    assert ran.exit_code == 0, ran.output
    sent = stats(server.url)["requests"]["ImportVmImage"]

    planned = invoke(
        "run", manifest, "--endpoint-url", server.url, "--progress", "off", "--dry-run", "--json"
    )

    assert planned.exit_code == 0, planned.output
    document = json.loads(planned.stdout)
    assert document["totals"] == {"rows": 12, "new": 0, "exists": 12, "invalid": 0}
    assert document["looked_up_existing"] is True
    # Each row found in its own Region's listing (an ARN names its Region).
    assert [r["imageArn"].split(":")[3] for r in document["rows"]] == [
        REGIONS[i % 2] for i in range(12)
    ]
    assert stats(server.url)["requests"]["ImportVmImage"] == sent


def test_a_dry_run_honours_the_shard(tmp_path: Path, emulator: EmulatorServer) -> None:
    manifest = write_csv(tmp_path / "wave.csv", make_tasks(40))
    shards = []
    for k in range(2):
        done = invoke(*run_args(manifest, emulator.url, "--dry-run", "--shard", f"{k}/2"))
        assert done.exit_code == 0, done.output
        shards.append(_planned(done.stdout))
        assert f"dry run: {len(shards[-1])} rows" in done.stderr

    rows = [[int(r["row"]) for r in shard] for shard in shards]
    assert all(rows), "a 40-row manifest in 2 shards leaves neither empty"
    assert not set(rows[0]) & set(rows[1])
    assert sorted(rows[0] + rows[1]) == list(range(1, 41))
    tokens = expected_tokens(manifest)
    assert all(tokens[r["name"], r["semanticVersion"]] == r["clientToken"] for r in shards[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wave.csv"]


@pytest.mark.parametrize("alias", ["same", "hard link"])
def test_preflight_results_that_are_the_manifest_are_refused_before_anything_is_read(
    tmp_path: Path, emulator: EmulatorServer, alias: str
) -> None:
    manifest = write_csv(tmp_path / "wave.csv", make_tasks(5))
    before = manifest.read_bytes()
    results = manifest
    if alias == "hard link":
        results = tmp_path / "tasks.csv"
        os.link(manifest, results)

    refused = invoke("preflight", manifest, "--endpoint-url", emulator.url, "--results", results)

    assert refused.exit_code == 2, refused.output
    assert "is the same file as" in refused.stderr
    assert manifest.read_bytes() == before
    assert "DescribeImportImageTasks" not in stats(emulator.url)["requests"]


def test_preflight_follows_each_rows_region_without_a_region_option(
    start_emulator: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_DEFAULT_REGION")  # no default Region: only the rows name one
    server: EmulatorServer = start_emulator(import_tasks=_tasks_file(tmp_path, 10))
    manifest = _regional(tmp_path / "wave.csv", 10)

    found = invoke("preflight", manifest, "--endpoint-url", server.url, "--json")

    assert found.exit_code == 0, found.output
    assert json.loads(found.stdout)["totals"]["ready"] == 10
    regions = server.stats()["regions"]
    for region in REGIONS:  # each Region's EC2 asked about its own rows only
        assert regions[region]["requests"]["DescribeImportImageTasks"] == 1


def test_preflight_says_of_each_unknown_task_only_its_own_id(
    start_emulator: Any, tmp_path: Path
) -> None:
    missing = {3: "import-ami-0missing00000003", 7: "import-ami-0missing00000007"}
    server: EmulatorServer = start_emulator(import_tasks=_tasks_file(tmp_path, 10))
    manifest = write_csv(
        tmp_path / "wave.csv",
        [
            {**task, "vmImportTaskId": missing.get(i, f"import-ami-{i:017d}")}
            for i, task in enumerate(make_tasks(10))
        ],
    )
    results = tmp_path / "tasks.csv"

    found = invoke(
        "preflight", manifest, "--endpoint-url", server.url, "--region", "us-east-1",
        "--results", results,
    )  # fmt: skip

    assert found.exit_code == 1, found.output
    rows = read_results(results)
    unknown = [r for r in rows if r["taskStatus"] == "unknown"]
    assert sorted(r["vmImportTaskId"] for r in unknown) == sorted(missing.values())
    for r in unknown:
        others = set(missing.values()) - {r["vmImportTaskId"]}
        assert r["vmImportTaskId"] in r["taskMessage"], r
        assert not any(other in r["taskMessage"] for other in others), r


def test_a_resume_with_nothing_to_do_sends_nothing_and_carries_every_row(
    tmp_path: Path, emulator: EmulatorServer
) -> None:
    manifest = write_csv(tmp_path / "wave.csv", make_tasks(30))
    first = invoke(*run_args(manifest, emulator.url))
    assert first.exit_code == 0, first.output
    results = tmp_path / "wave.results.csv"
    imported = read_results(results)
    results.unlink()
    sent = stats(emulator.url)["requests"]

    again = invoke(*run_args(manifest, emulator.url))

    assert again.exit_code == 0, again.output
    assert stats(emulator.url)["requests"] == sent, "nothing asked of the service"
    assert read_results(results) == imported
    report = read_report(tmp_path / "wave.report.json")
    assert report["resumed"] == 30
    assert report["calls"] == 0
    assert Counter(r["status"] for r in imported) == {"succeeded": 30}
    assert len(report["runs"]) == 2
