"""EC2's DescribeImportImageTasks on the emulator's endpoint, and images that follow their task.

A real boto3 ``ec2`` client and a real ``imagebuilder`` client share one endpoint URL.
Tasks come from ``--import-tasks`` or ``--task-mix``; without either none exists (the
fixture passes ``--task-mix completed=1`` unless a test says otherwise); an image built
from a task goes PENDING, CREATING, AVAILABLE once the task completed, and FAILED with
the task's reason and a failureContext when it failed or does not exist.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from emulator_support import NO_RETRIES, FakeClock, import_params, raw_answers

from ibimport.emulator import EmulatorServer
from ibimport.errors import ConfigError

Start = Callable[..., EmulatorServer]
TASKS = [
    {"ImportTaskId": "import-ami-0000000000000000a", "Status": "completed"},
    {
        "ImportTaskId": "import-ami-0000000000000000b",
        "Status": "active",
        "StatusMessage": "converting",
        "Progress": "42",
        "CompletesAfterS": 100,
    },
    {
        "ImportTaskId": "import-ami-0000000000000000c",
        "Status": "deleted",
        "StatusMessage": "ClientError: Unknown OS / Missing OS files",
    },
]
GOOD, ACTIVE, DELETED = (t["ImportTaskId"] for t in TASKS)
MISSING = "import-ami-0000000000000000f"


def _ec2(url: str, *, region: str = "us-east-1", key: str = "AKIDIBIMPORTTEST") -> Any:
    return boto3.client(
        "ec2",
        endpoint_url=url,
        region_name=region,
        aws_access_key_id=key,
        aws_secret_access_key="secret",
        config=NO_RETRIES,
    )


def _imagebuilder(url: str) -> Any:
    return boto3.client(
        "imagebuilder",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="AKIDIBIMPORTTEST",
        aws_secret_access_key="secret",
        config=NO_RETRIES,
    )


@pytest.fixture
def tasks_file(tmp_path: Path) -> Path:
    path = tmp_path / "tasks.json"
    path.write_text(json.dumps(TASKS))
    return path


def test_describe_answers_each_listed_task_in_ec2s_shape(
    start_emulator: Start, tasks_file: Path, clock: FakeClock
) -> None:
    ec2 = _ec2(start_emulator(import_tasks=tasks_file).url)
    answer = ec2.describe_import_image_tasks(ImportTaskIds=[GOOD, ACTIVE, DELETED])
    tasks = {t["ImportTaskId"]: t for t in answer["ImportImageTasks"]}
    assert list(tasks) == [GOOD, ACTIVE, DELETED]
    assert tasks[GOOD]["Status"] == "completed"
    assert tasks[GOOD]["ImageId"].startswith("ami-")
    assert "Progress" not in tasks[GOOD]
    assert (tasks[ACTIVE]["Status"], tasks[ACTIVE]["Progress"]) == ("active", "42")
    assert tasks[ACTIVE]["StatusMessage"] == "converting"
    assert tasks[DELETED]["Status"] == "deleted"
    assert tasks[DELETED]["StatusMessage"] == "ClientError: Unknown OS / Missing OS files"
    assert answer["ResponseMetadata"]["RequestId"]
    assert "NextToken" not in answer
    clock.advance(100)
    [done] = ec2.describe_import_image_tasks(ImportTaskIds=[ACTIVE])["ImportImageTasks"]
    assert done["Status"] == "completed"


def test_an_unknown_id_fails_the_whole_call_without_naming_it(
    start_emulator: Start, tasks_file: Path
) -> None:
    """EC2's code for it, and its error-code reference's description, which names no ID
    (see ``InvalidConversionTaskIdMalformed``): a client cannot tell which ID it was."""
    ec2 = _ec2(start_emulator(import_tasks=tasks_file).url)
    with pytest.raises(ClientError) as caught:
        ec2.describe_import_image_tasks(ImportTaskIds=[GOOD, MISSING])
    error = caught.value.response
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert error["Error"]["Code"] == "InvalidConversionTaskId.Malformed"
    assert MISSING not in error["Error"]["Message"]
    assert GOOD not in error["Error"]["Message"]
    assert error["ResponseMetadata"]["RequestId"]


def test_without_tasks_declared_no_task_exists_and_its_image_fails(
    start_emulator: Start, clock: FakeClock
) -> None:
    """Issue 21 gap 1: the default is AWS's: an ID nobody issued is unknown to EC2, and the
    image built from it FAILS (PENDING, CREATING, then FAILED with failureContext)."""
    server = start_emulator(task_mix=None, available_after_s=10.0)
    with pytest.raises(ClientError) as caught:
        _ec2(server.url).describe_import_image_tasks(ImportTaskIds=[GOOD])
    assert caught.value.response["Error"]["Code"] == "InvalidConversionTaskId.Malformed"
    client = _imagebuilder(server.url)
    raw = raw_answers(client)
    arn = client.import_vm_image(**import_params(vmImportTaskId=GOOD))["imageArn"]
    assert client.get_image(imageBuildVersionArn=arn)["image"]["state"] == {"status": "PENDING"}
    clock.advance(3.0)
    assert client.get_image(imageBuildVersionArn=arn)["image"]["state"] == {"status": "CREATING"}
    clock.advance(2.0)
    state = client.get_image(imageBuildVersionArn=arn)["image"]["state"]
    assert state["status"] == "FAILED"
    assert GOOD in state["reason"]
    assert raw[-1]["image"]["state"]["failureContext"] == {"imageStatus": "CREATING"}


def test_task_mix_completed_keeps_every_task_done(start_emulator: Start) -> None:
    server = start_emulator(task_mix="completed=1")
    [task] = _ec2(server.url).describe_import_image_tasks(ImportTaskIds=[GOOD])["ImportImageTasks"]
    assert task["Status"] == "completed"
    client = _imagebuilder(server.url)
    arn = client.import_vm_image(**import_params(vmImportTaskId=MISSING))["imageArn"]
    assert client.get_image(imageBuildVersionArn=arn)["image"]["state"]["status"] == "AVAILABLE"


def test_a_malformed_id_is_an_invalid_parameter_value(start_emulator: Start) -> None:
    ec2 = _ec2(start_emulator().url)
    with pytest.raises(ClientError) as caught:
        ec2.describe_import_image_tasks(ImportTaskIds=["ami-12345678"])
    assert caught.value.response["Error"]["Code"] == "InvalidParameterValue"
    assert "ami-12345678" in caught.value.response["Error"]["Message"]


def test_filters_and_pages(start_emulator: Start, tasks_file: Path) -> None:
    ec2 = _ec2(start_emulator(import_tasks=tasks_file).url)
    first = ec2.describe_import_image_tasks(MaxResults=2)
    assert [t["ImportTaskId"] for t in first["ImportImageTasks"]] == [GOOD, ACTIVE]
    rest = ec2.describe_import_image_tasks(MaxResults=2, NextToken=first["NextToken"])
    assert [t["ImportTaskId"] for t in rest["ImportImageTasks"]] == [DELETED]
    assert "NextToken" not in rest
    pages = ec2.get_paginator("describe_import_image_tasks").paginate(
        Filters=[{"Name": "task-state", "Values": ["active", "deleted"]}],
        PaginationConfig={"PageSize": 1},
    )
    assert [t["ImportTaskId"] for p in pages for t in p["ImportImageTasks"]] == [ACTIVE, DELETED]
    with pytest.raises(ClientError) as caught:
        ec2.describe_import_image_tasks(Filters=[{"Name": "colour", "Values": ["red"]}])
    assert caught.value.response["Error"]["Code"] == "InvalidParameterValue"
    with pytest.raises(ClientError) as caught:
        ec2.describe_import_image_tasks(DryRun=True)
    assert caught.value.response["Error"]["Code"] == "DryRunOperation"


def test_without_a_task_source_every_id_is_a_completed_task(start_emulator: Start) -> None:
    ec2 = _ec2(start_emulator().url)
    [task] = ec2.describe_import_image_tasks(ImportTaskIds=[MISSING])["ImportImageTasks"]
    assert task["Status"] == "completed"


def test_a_task_mix_is_seeded_and_holds_its_shares(start_emulator: Start) -> None:
    mix = "completed=0.5,active=0.2,deleted=0.2,missing=0.1"
    ids = [f"import-ami-{n:017x}" for n in range(400)]
    seen: list[dict[str, str]] = []
    for _ in range(2):
        ec2 = _ec2(start_emulator(task_mix=mix, seed=7).url)
        statuses = {}
        for task_id in ids:
            try:
                [task] = ec2.describe_import_image_tasks(ImportTaskIds=[task_id])[
                    "ImportImageTasks"
                ]
                statuses[task_id] = task["Status"]
            except ClientError as exc:
                statuses[task_id] = exc.response["Error"]["Code"]
        seen.append(statuses)
    assert seen[0] == seen[1]  # the same seed, the same task for each ID
    counts = {s: list(seen[0].values()).count(s) for s in ("completed", "active", "deleted")}
    counts["missing"] = list(seen[0].values()).count("InvalidConversionTaskId.Malformed")
    assert sum(counts.values()) == len(ids)
    assert 160 <= counts["completed"] <= 240
    assert 50 <= counts["active"] <= 110
    assert 50 <= counts["deleted"] <= 110
    assert 15 <= counts["missing"] <= 65


def test_images_follow_their_tasks(
    start_emulator: Start, tasks_file: Path, clock: FakeClock
) -> None:
    server = start_emulator(import_tasks=tasks_file, available_after_s=50)
    client = _imagebuilder(server.url)
    arns = {
        task_id: client.import_vm_image(**import_params(n, vmImportTaskId=task_id))["imageArn"]
        for n, task_id in enumerate((GOOD, ACTIVE, DELETED, MISSING))
    }

    def states() -> dict[str, tuple[str, str | None]]:
        answer = {}
        for task_id, arn in arns.items():
            state = client.get_image(imageBuildVersionArn=arn)["image"]["state"]
            answer[task_id] = (state["status"], state.get("reason"))
        return answer

    assert {s for s, _ in states().values()} == {"PENDING"}  # an unknown task is accepted
    clock.advance(20)
    now = states()
    assert now[GOOD] == ("CREATING", None)
    assert now[ACTIVE] == ("PENDING", None)
    assert now[DELETED] == ("FAILED", "ClientError: Unknown OS / Missing OS files")
    assert now[MISSING] == ("FAILED", f"The import task {MISSING} does not exist.")
    clock.advance(40)
    assert states()[GOOD] == ("AVAILABLE", None)
    assert states()[ACTIVE] == ("PENDING", None)  # its task completes at 100 s
    clock.advance(45)  # 105 s: 5 s into its 50, the first fifth of which is PENDING
    assert states()[ACTIVE] == ("PENDING", None)
    clock.advance(10)
    assert states()[ACTIVE] == ("CREATING", None)
    clock.advance(35)
    assert states()[ACTIVE] == ("AVAILABLE", None)
    listed = client.list_image_build_versions()["imageSummaryList"]
    assert sorted(b["state"]["status"] for b in listed) == [
        "AVAILABLE",
        "AVAILABLE",
        "FAILED",
        "FAILED",
    ]


def test_state_keeps_the_tasks_start_across_a_restart(
    start_emulator: Start, tasks_file: Path, clock: FakeClock, tmp_path: Path
) -> None:
    state = tmp_path / "state.json"
    first = start_emulator(import_tasks=tasks_file, state_file=state)
    clock.advance(60)
    first.stop()
    second = start_emulator(import_tasks=tasks_file, state_file=state)
    ec2 = _ec2(second.url)
    clock.advance(41)  # 101 s after the first start: the active task completed
    [task] = ec2.describe_import_image_tasks(ImportTaskIds=[ACTIVE])["ImportImageTasks"]
    assert task["Status"] == "completed"


def test_ec2_throttles_with_its_own_rate(start_emulator: Start) -> None:
    server = start_emulator(ec2_rate=2, rate=100)
    ec2 = _ec2(server.url)
    for _ in range(2):
        ec2.describe_import_image_tasks(ImportTaskIds=[GOOD])
    with pytest.raises(ClientError) as caught:
        ec2.describe_import_image_tasks(ImportTaskIds=[GOOD])
    error = caught.value.response
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 503
    assert error["Error"]["Code"] == "RequestLimitExceeded"
    _imagebuilder(server.url).list_images()  # Image Builder's quota is its own
    stats = server.stats()
    assert stats["throttled"] == 1
    assert stats["requests"]["DescribeImportImageTasks"] == 3
    assert stats["errors"]["RequestLimitExceeded"] == 1


def test_an_unknown_action_is_ec2s_invalid_action(start_emulator: Start) -> None:
    ec2 = _ec2(start_emulator().url)
    with pytest.raises(ClientError) as caught:
        ec2.describe_instances()
    assert caught.value.response["Error"]["Code"] == "InvalidAction"


def test_a_bad_tasks_file_is_refused_naming_the_entry(
    start_emulator: Start, tmp_path: Path
) -> None:
    path = tmp_path / "tasks.json"
    path.write_text(json.dumps([TASKS[0], {"ImportTaskId": GOOD, "Status": "done"}]))
    with pytest.raises(ConfigError, match=r"task 2: Status: must be one of completed"):
        start_emulator(import_tasks=path)
