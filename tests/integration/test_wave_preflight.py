"""Preflight of rows with disks against the emulator (issue 19): each disk object exists
(S3 HeadObject, its size), its bucket is in the import Region (GetBucketLocation), the
import role exists and trusts vmie.amazonaws.com (IAM GetRole; "could not check" where
denied), and the slots free; read-only. ``run --preflight`` blocks the rows that would
fail and starts no task for them.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import boto3
from integration_support import ACCESS_KEY, REGION, invoke, read_results, stats

from ibimport.emulator import EmulatorServer

Start = Callable[..., EmulatorServer]
BUCKET = "preflight-disks"
ELSEWHERE = "preflight-disks-eu"


def _s3(server: EmulatorServer, region: str = REGION) -> object:
    return boto3.client("s3", endpoint_url=server.url, region_name=region)


def _wave(
    server: EmulatorServer,
    path: Path,
    n: int,
    *,
    missing: frozenset[int] = frozenset(),
    elsewhere: frozenset[int] = frozenset(),
) -> Path:
    """``n`` rows with disks: ``missing`` never put, ``elsewhere`` in a bucket in eu-west-1."""
    s3 = boto3.client("s3", endpoint_url=server.url, region_name=REGION)
    s3.create_bucket(Bucket=BUCKET)
    if elsewhere:
        eu = boto3.client("s3", endpoint_url=server.url, region_name="eu-west-1")
        eu.create_bucket(
            Bucket=ELSEWHERE, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
        )
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["name", "semanticVersion", "platform", "diskImage"])
        for i in range(n):
            bucket = ELSEWHERE if i in elsewhere else BUCKET
            if i not in missing:
                s3.put_object(Bucket=bucket, Key=f"vm-{i:02d}.vmdk", Body=b"x" * (1000 + i))
            writer.writerow([f"vm-{i:02d}", "1.0.0", "Linux", f"s3://{bucket}/vm-{i:02d}.vmdk"])
    return path


def _preflight(server: EmulatorServer, manifest: Path, *extra: str) -> tuple[int, dict, Path]:  # type: ignore[type-arg]
    results = manifest.with_suffix(".tasks.csv")
    found = invoke(
        "preflight", manifest, "--endpoint-url", server.url, "--region", REGION,
        "--results", results, "--json", *extra,
    )  # fmt: skip
    return found.exit_code, json.loads(found.stdout), results


def test_ready_disks_are_sized_and_the_free_slots_counted(
    start_emulator: Start, tmp_path: Path
) -> None:
    server = start_emulator(task_slots=7)
    manifest = _wave(server, tmp_path / "w.csv", 5)
    # A task of another tool already holds one of the account's slots.
    ec2 = boto3.client("ec2", endpoint_url=server.url, region_name=REGION)
    ec2.import_image(DiskContainers=[{"Url": f"s3://{BUCKET}/vm-00.vmdk"}])
    before = stats(server.url)["importTasks"]["started"]
    code, document, results = _preflight(server, manifest)
    assert code == 0, document
    assert document["totals"]["ready"] == 5
    rows = {r["name"]: r for r in read_results(results)}
    assert rows["vm-03"]["diskBytes"] == "1003"
    assert rows["vm-03"]["taskStatus"] == "ready"
    assert rows["vm-03"]["taskMessage"] == "1003 B of disks"
    [slots] = document["slots"]
    assert (slots["quota"], slots["quotaSource"]) == (7, "Service Quotas")
    assert (slots["active"], slots["free"]) == (1, 6)
    requests = stats(server.url)["requests"]
    assert requests.get("HeadObject", 0) == 5
    assert requests.get("GetBucketLocation", 0) == 1  # one bucket, asked once
    assert requests.get("GetRole", 0) == 1  # one role, asked once
    assert stats(server.url)["importTasks"]["started"] == before  # read-only


def test_a_missing_disk_object_fails_its_row_only(start_emulator: Start, tmp_path: Path) -> None:
    server = start_emulator()
    manifest = _wave(server, tmp_path / "w.csv", 4, missing=frozenset({2}))
    code, document, results = _preflight(server, manifest)
    assert code == 1
    assert document["totals"]["failed"] == 1
    assert document["totals"]["ready"] == 3
    rows = {r["name"]: r for r in read_results(results)}
    assert rows["vm-02"]["taskStatus"] == "failed"
    assert rows["vm-02"]["taskMessage"] == f"s3://{BUCKET}/vm-02.vmdk does not exist"
    assert rows["vm-02"]["diskBytes"] == ""


def test_a_bucket_in_another_region_is_named_with_its_region(
    start_emulator: Start, tmp_path: Path
) -> None:
    server = start_emulator()
    manifest = _wave(server, tmp_path / "w.csv", 3, elsewhere=frozenset({1}))
    code, _, results = _preflight(server, manifest)
    assert code == 1
    rows = {r["name"]: r for r in read_results(results)}
    assert rows["vm-01"]["taskStatus"] == "failed"
    assert rows["vm-01"]["taskMessage"] == (
        f"bucket {ELSEWHERE} is in eu-west-1, not in the import Region {REGION}"
    )
    assert rows["vm-00"]["taskStatus"] == "ready"


def test_without_the_vmimport_role_every_disk_row_fails(
    start_emulator: Start, tmp_path: Path
) -> None:
    server = start_emulator(vmimport_role=False)
    manifest = _wave(server, tmp_path / "w.csv", 3)
    code, document, results = _preflight(server, manifest)
    assert code == 1
    assert document["totals"]["failed"] == 3
    messages = {r["taskMessage"] for r in read_results(results)}
    assert messages == {"the import role vmimport does not exist"}


def test_a_role_given_by_import_option_is_the_one_checked(
    start_emulator: Start, tmp_path: Path
) -> None:
    server = start_emulator()
    manifest = _wave(server, tmp_path / "w.csv", 2)
    code, _, results = _preflight(server, manifest, "--import-option", "roleName=wave-import")
    assert code == 1  # the emulator's accounts have only the vmimport role
    messages = {r["taskMessage"] for r in read_results(results)}
    assert messages == {"the import role wave-import does not exist"}


def test_a_denied_get_role_is_could_not_check_never_a_failure(
    start_emulator: Start, tmp_path: Path
) -> None:
    server = start_emulator(deny=(f"{ACCESS_KEY}=iam:GetRole",))
    manifest = _wave(server, tmp_path / "w.csv", 3, missing=frozenset({0}))
    code, document, results = _preflight(server, manifest)
    assert code == 1  # the missing object still fails its row
    assert document["totals"]["unchecked"] == 2
    rows = {r["name"]: r for r in read_results(results)}
    assert rows["vm-01"]["taskStatus"] == "unchecked"
    assert rows["vm-01"]["taskMessage"].startswith(
        "could not check the import role vmimport (AccessDenied: "
    )
    assert rows["vm-01"]["diskBytes"] == "1001"  # what could be checked was


def test_run_preflight_blocks_the_rows_that_would_fail_and_starts_no_task_for_them(
    start_emulator: Start, tmp_path: Path
) -> None:
    server = start_emulator(task_slots=4, task_duration_s=0.3, seed=3)
    manifest = _wave(server, tmp_path / "w.csv", 6, missing=frozenset({1}), elsewhere={4})
    ran = invoke(
        "run", manifest, "--endpoint-url", server.url, "--region", REGION, "--progress", "off",
        "--preflight", "--poll-interval", "0.1s",
    )  # fmt: skip
    assert ran.exit_code == 1, ran.output
    rows = {r["name"]: r for r in read_results(tmp_path / "w.results.csv")}
    assert (rows["vm-01"]["status"], rows["vm-01"]["errorCode"]) == ("blocked", "DiskNotFound")
    assert (rows["vm-04"]["status"], rows["vm-04"]["errorCode"]) == ("blocked", "DiskNotLocal")
    assert {rows[f"vm-0{i}"]["status"] for i in (0, 2, 3, 5)} == {"succeeded"}
    tasks = stats(server.url)["importTasks"]
    assert tasks["started"] == 4  # none for the blocked rows
    assert tasks["deleted"] == 0
