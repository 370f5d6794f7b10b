"""Whole migrations (issue 13): many accounts and Regions in one run, and shards.

One emulator serves every partition: the Region comes from each call's SigV4 scope, the
account from its access key (12-digit keys are accounts; STS AssumeRole issues keys in the
role's account). Real boto3/aioboto3 clients, over HTTP.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from integration_support import invoke, make_tasks, read_report, read_results

from ibimport.emulator import EmulatorServer

REGIONS = ("us-east-1", "eu-west-1", "ap-southeast-2")


def _regional_manifest(path: Path, counts: dict[str, int], **extra: str) -> Path:
    tasks = make_tasks(sum(counts.values()))
    regions = [region for region, n in counts.items() for _ in range(n)]
    with open(path, "w", newline="", encoding="utf-8") as handle:
        fields = ["name", "semanticVersion", "platform", "vmImportTaskId", "region", *extra]
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        for task, region in zip(tasks, regions, strict=True):
            row = {k: task[k] for k in ("name", "semanticVersion", "platform", "vmImportTaskId")}
            writer.writerow({**row, "region": region, **extra})
    return path


def _args(manifest: Path, url: str, *extra: str | Path) -> list[str | Path]:
    return ["run", manifest, "--endpoint-url", url, "--progress", "off", *extra]


def test_each_region_gets_its_own_partition_limiter_and_images(
    start_emulator: Any, tmp_path: Path
) -> None:
    server: EmulatorServer = start_emulator(
        rate_per_region=("us-east-1=40", "eu-west-1=20", "ap-southeast-2=10"), burst=5
    )
    counts = {"us-east-1": 80, "eu-west-1": 40, "ap-southeast-2": 20}
    manifest = _regional_manifest(tmp_path / "wave.csv", counts)

    # Each Region told its own quota: one limiter per partition paces each at its own
    # rate (one shared limiter at 40/s would throttle the 10/s Region on most calls). The
    # adaptive pace per partition is measured in benchmarks/partitions.py.
    rates = [f"--rate={region}={rate}" for region, rate in (("us-east-1", 40), ("eu-west-1", 20),
             ("ap-southeast-2", 10))]  # fmt: skip
    result = invoke(*_args(manifest, server.url, "--region", "us-east-1", *rates))

    assert result.exit_code == 0, result.output
    regions = server.stats()["regions"]
    for region, n in counts.items():
        assert regions[region]["images"] == n
        assert regions[region]["duplicateBuilds"] == 0
        assert regions[region]["throttled"] <= 2, (region, regions[region])
    rows = read_results(tmp_path / "wave.results.csv")
    assert Counter(r["region"] for r in rows) == counts
    assert {r["account"] for r in rows} == {"123456789012"}
    assert all(r["imageArn"].split(":")[3] == r["region"] for r in rows)
    report = read_report(tmp_path / "wave.report.json")
    assert {p["region"]: p["succeeded"] for p in report["partitions"]} == counts


def test_a_partition_that_cannot_work_stops_only_its_own_rows(
    start_emulator: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "aws-config"
    config.write_text("[default]\nregion = us-east-1\n", encoding="utf-8")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    server: EmulatorServer = start_emulator()
    tasks = make_tasks(30)
    manifest = tmp_path / "wave.csv"
    with open(manifest, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["name", "semanticVersion", "platform", "vmImportTaskId", "profile"])
        for i, task in enumerate(tasks):
            profile = "no-such-profile" if i % 3 == 0 else ""
            writer.writerow(
                [task["name"], task["semanticVersion"], "Linux", task["vmImportTaskId"], profile]
            )

    result = invoke(*_args(manifest, server.url))

    assert result.exit_code == 3, result.output
    assert "no-such-profile" in " ".join(result.output.split())
    rows = read_results(tmp_path / "wave.results.csv")
    done = [r for r in rows if r["status"] == "succeeded"]
    cut = [r for r in rows if r["status"] == "skipped"]
    assert len(done) == 20
    assert len(cut) == 10
    assert all("no-such-profile" in r["errorMessage"] for r in cut)
    assert server.stats()["images"] == 20


def test_two_accounts_chosen_by_profile_land_in_their_own_accounts(
    start_emulator: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Profile "a" holds its own keys; profile "b" assumes a role in another account through
    # the emulator's STS (role_arn + source_profile), as a cross-account migration does.
    credentials = tmp_path / "credentials"
    credentials.write_text(
        "[a]\naws_access_key_id = 111111111111\naws_secret_access_key = s\n"
        "[base]\naws_access_key_id = 333333333333\naws_secret_access_key = s\n",
        encoding="utf-8",
    )
    roles = tmp_path / "roles.json"  # the only role the emulator's AssumeRole grants
    roles.write_text('{"arn:aws:iam::222222222222:role/migrate": {}}', encoding="utf-8")
    server: EmulatorServer = start_emulator(accounts=roles)
    config = tmp_path / "config"
    config.write_text(
        "[profile a]\nregion = eu-west-1\n"
        "[profile b]\nregion = eu-west-1\n"
        "role_arn = arn:aws:iam::222222222222:role/migrate\nsource_profile = base\n",
        encoding="utf-8",
    )
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", server.url)
    tasks = make_tasks(20)
    manifest = tmp_path / "wave.csv"
    with open(manifest, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["name", "semanticVersion", "platform", "vmImportTaskId", "profile"])
        for i, task in enumerate(tasks):
            profile = "a" if i % 2 else "b"
            writer.writerow(
                [task["name"], task["semanticVersion"], "Linux", task["vmImportTaskId"], profile]
            )

    result = invoke(*_args(manifest, server.url, "--region", "eu-west-1"))

    assert result.exit_code == 0, result.output
    rows = read_results(tmp_path / "wave.results.csv")
    by_account = Counter(r["account"] for r in rows)
    assert by_account == {"111111111111": 10, "222222222222": 10}
    for r in rows:
        assert r["imageArn"].split(":")[4] == r["account"]
    report = read_report(tmp_path / "wave.report.json")
    assert sorted(p["account"] for p in report["partitions"]) == ["111111111111", "222222222222"]


def _shard_env(extra: dict[str, str]) -> dict[str, str]:
    return {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1", **extra}  # fmt: skip


def test_shards_run_at_once_import_each_row_once_and_merge_into_a_single_runs_report(
    start_emulator: Any, tmp_path: Path
) -> None:
    server: EmulatorServer = start_emulator()
    manifest = _regional_manifest(tmp_path / "wave.csv", {"us-east-1": 3000, "eu-west-1": 1000})
    base = [sys.executable, "-m", "ibimport", "run", str(manifest), "--endpoint-url",
            server.url, "--progress", "off", "--concurrency", "32"]  # fmt: skip
    children = [
        subprocess.Popen(
            [*base, "--shard", f"{k}/4"],
            env=_shard_env({}),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for k in (0, 1, 2)
    ]
    # The fourth takes its index as a Kubernetes Indexed Job gives it.
    children.append(
        subprocess.Popen(
            [*base, "--shard-count", "4"],
            env=_shard_env({"JOB_COMPLETION_INDEX": "3"}),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
    )
    for child in children:
        output, _ = child.communicate(timeout=120)
        assert child.returncode == 0, output.decode()
    journals = sorted(tmp_path.glob("wave.shard-*-of-4.journal"))
    assert len(journals) == 4
    stats = server.stats()
    assert stats["images"] == 4000
    assert stats["duplicateBuilds"] == 0
    shard_rows = [read_results(tmp_path / f"wave.shard-{k}-of-4.results.csv") for k in range(4)]
    assert all(rows for rows in shard_rows), "every shard got some rows"
    seen = Counter(r["row"] for rows in shard_rows for r in rows if r["status"] == "succeeded")
    assert len(seen) == 4000
    assert set(seen.values()) == {1}

    merged = invoke("report", *journals, "--report", tmp_path / "merged.json",
                    "--results", tmp_path / "merged.csv")  # fmt: skip
    assert merged.exit_code == 0, merged.output
    single_server: EmulatorServer = start_emulator()
    alone = tmp_path / "alone"
    alone.mkdir()
    single = _regional_manifest(alone / "wave.csv", {"us-east-1": 3000, "eu-west-1": 1000})
    assert invoke(*_args(single, single_server.url, "--region", "us-east-1")).exit_code == 0

    def comparable(path: Path) -> list[dict[str, str]]:
        keep = ("row", "name", "semanticVersion", "status", "clientToken", "region", "account")
        return [{k: r[k] for k in keep} for r in read_results(path)]

    assert comparable(tmp_path / "merged.csv") == comparable(alone / "wave.results.csv")
    merged_report = json.loads((tmp_path / "merged.json").read_text())
    assert merged_report["totals"] == read_report(alone / "wave.report.json")["totals"]


def test_wait_journal_follows_each_partitions_images_with_its_own_client(
    start_emulator: Any, tmp_path: Path
) -> None:
    server: EmulatorServer = start_emulator(available_after_s=1.0)
    counts = {"us-east-1": 12, "eu-west-1": 8}
    manifest = _regional_manifest(tmp_path / "wave.csv", counts)
    assert invoke(*_args(manifest, server.url, "--region", "us-east-1")).exit_code == 0

    result = invoke("wait", tmp_path / "wave.journal", "--endpoint-url", server.url,
                    "--region", "us-east-1", "--poll-interval", "0.3",
                    "--wait-timeout", "30")  # fmt: skip

    assert result.exit_code == 0, result.output
    rows = read_results(tmp_path / "wave.results.csv")
    assert {r["imageStatus"] for r in rows} == {"AVAILABLE"}
    assert Counter(r["region"] for r in rows) == counts
    # Each Region's images were read in that Region (its own signed client).
    regions = server.stats()["regions"]
    for region in counts:
        reads = regions[region]["requests"]
        assert reads.get("ListImageBuildVersions", 0) + reads.get("GetImage", 0) > 0, region
