"""EC2 ImportImage, CancelImportTask and DescribeImportImageTasks over HTTP (issue 19).

Real boto3 ``ec2``, ``s3`` and ``imagebuilder`` clients share one endpoint; the emulator
runs on the fake clock, so a task's whole course is walked by moving time. Each test
reads what a wave's client would read: the task's status and message, the refusals, the
counters of ``/_emulator/stats``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from emulator_support import NO_RETRIES, FakeClock, import_params, raw_answers

from ibimport.emulator import EmulatorServer
from ibimport.emulator.ec2.lifecycle import CANCELLED_MESSAGE, draw_fate

Start = Callable[..., EmulatorServer]
ACCOUNT, OTHER_ACCOUNT = "111111111111", "222222222222"
REGION, OTHER_REGION = "eu-west-1", "us-west-2"
BUCKET = "wave-disks"
MEAN_S = 100.0
DENIED_403 = (
    "ClientError: Disk validation failed "
    "[We do not have access to the given resource. Reason 403 Forbidden]"
)


def _client(
    service: str,
    url: str,
    *,
    region: str = REGION,
    account: str = ACCOUNT,
    config: Config = NO_RETRIES,
) -> Any:
    return boto3.client(
        service,
        endpoint_url=url,
        region_name=region,
        aws_access_key_id=account,  # a 12-digit key acts in that account
        aws_secret_access_key="secret",
        config=config,
    )


class Wave:
    """One account's clients in one Region, with a bucket of disks."""

    def __init__(self, url: str, *, region: str = REGION, account: str = ACCOUNT) -> None:
        self.ec2 = _client("ec2", url, region=region, account=account)
        self.s3 = _client("s3", url, region=region, account=account)
        self.imagebuilder = _client("imagebuilder", url, region=region, account=account)
        self.region = region

    def bucket(self, name: str = BUCKET) -> None:
        config = {} if self.region == "us-east-1" else {"LocationConstraint": self.region}
        self.s3.create_bucket(Bucket=name, CreateBucketConfiguration=config)

    def disk(self, key: str, *, bucket: str = BUCKET) -> dict[str, Any]:
        """Put a tiny disk image and return its DiskContainer."""
        self.s3.put_object(Bucket=bucket, Key=key, Body=b"disk image " + key.encode())
        return container(key, bucket=bucket)

    def start(self, *disks: dict[str, Any], **members: Any) -> dict[str, Any]:
        answer: dict[str, Any] = self.ec2.import_image(DiskContainers=list(disks), **members)
        return answer

    def task(self, task_id: str) -> dict[str, Any]:
        [task] = self.ec2.describe_import_image_tasks(ImportTaskIds=[task_id])["ImportImageTasks"]
        return task  # type: ignore[no-any-return]


def container(key: str, *, bucket: str = BUCKET) -> dict[str, Any]:
    return {"Format": "vmdk", "UserBucket": {"S3Bucket": bucket, "S3Key": key}}


def tags(**pairs: str) -> list[dict[str, Any]]:
    return [
        {
            "ResourceType": "import-image-task",
            "Tags": [{"Key": k.replace("_", ":"), "Value": v} for k, v in pairs.items()],
        }
    ]


def _import_stats(server: EmulatorServer, region: str = REGION) -> dict[str, Any]:
    stats: dict[str, Any] = server.stats()["regions"][region]["importTasks"]
    return stats


@pytest.fixture
def wave_server(start_emulator: Start) -> EmulatorServer:
    """No declared tasks (AWS's default): only what ImportImage starts exists."""
    return start_emulator(task_mix=None, task_duration_s=MEAN_S, task_slots=3, seed=11)


@pytest.fixture
def wave(wave_server: EmulatorServer) -> Wave:
    wave = Wave(wave_server.url)
    wave.bucket()
    return wave


def _course(wave: Wave, task_id: str, clock: FakeClock) -> list[tuple[str, str | None, str | None]]:
    """Every distinct (Status, StatusMessage, Progress) a task shows until it ends, polling
    at half its ``deleting`` time, a two-hundredth of the mean (bounded: 10 means)."""
    seen: list[tuple[str, str | None, str | None]] = []
    for _ in range(2000):
        task = wave.task(task_id)
        moment = (task["Status"], task.get("StatusMessage"), task.get("Progress"))
        if not seen or seen[-1] != moment:
            seen.append(moment)
        if task["Status"] in ("completed", "deleted"):
            return seen
        clock.advance(MEAN_S / 200)
    raise AssertionError(f"the task never ended: {seen}")


def test_a_task_runs_its_course_to_completed_with_an_ami(wave: Wave, clock: FakeClock) -> None:
    started = wave.start(wave.disk("vm-1/disk1.vmdk"), Description="vm-1", Platform="Linux")
    assert (started["Status"], started["StatusMessage"], started["Progress"]) == (
        "active",
        "pending",
        "1",
    )
    assert started["ImportTaskId"].startswith("import-ami-")
    assert started["Description"] == "vm-1"
    [detail] = started["SnapshotDetails"]
    assert detail["UserBucket"] == {"S3Bucket": BUCKET, "S3Key": "vm-1/disk1.vmdk"}
    assert detail["Format"] == "VMDK"
    course = _course(wave, started["ImportTaskId"], clock)
    assert course == [
        ("active", "pending", "1"),
        ("active", "converting", "19"),
        ("active", "booting", "39"),
        ("active", "preparing ami", "57"),
        ("completed", None, None),
    ]
    done = wave.task(started["ImportTaskId"])
    assert done["ImageId"].startswith("ami-")
    assert len(done["ImageId"]) == 21


@pytest.mark.parametrize(
    ("failure", "message"),
    [
        ("unsupported-kernel", "ClientError: Unsupported kernel version "),
        (
            "disk-validation",
            "ClientError: Disk validation failed [Unsupported specified file format]",
        ),
        ("first-boot", "FirstBootFailure: This import request failed because the instance failed"),
    ],
)
def test_each_failure_ends_deleted_with_ec2s_words(
    start_emulator: Start, clock: FakeClock, failure: str, message: str
) -> None:
    server = start_emulator(task_duration_s=MEAN_S, task_failure_mix=f"{failure}=1")
    wave = Wave(server.url)
    wave.bucket()
    task_id = wave.start(wave.disk("vm-1.vmdk"))["ImportTaskId"]
    course = _course(wave, task_id, clock)
    deleting = [m for m in course if m[0] == "deleting"]
    assert deleting
    assert deleting[0][1] is not None
    assert deleting[0][1].startswith(message)
    status, last_message, progress = course[-1]
    assert status == "deleted"
    assert progress is None
    assert last_message is not None
    assert last_message.startswith(message)
    assert "ImageId" not in wave.task(task_id)
    assert _import_stats(server)["deleted"] == 1


def test_a_failure_mix_is_seeded_and_holds_its_shares() -> None:
    mix = {"unsupported-kernel": 0.2, "disk-validation": 0.1, "first-boot": 0.1}
    fates = [
        draw_fate("7", (f"s3://b/vm-{n}.vmdk",), mean_s=MEAN_S, failures=mix) for n in range(2000)
    ]
    again = [
        draw_fate("7", (f"s3://b/vm-{n}.vmdk",), mean_s=MEAN_S, failures=mix) for n in range(2000)
    ]
    assert fates == again
    counts = {name: sum(f.failure == name for f in fates) for name in mix}
    assert 330 <= counts["unsupported-kernel"] <= 470
    assert 140 <= counts["disk-validation"] <= 260
    assert 140 <= counts["first-boot"] <= 260
    durations = sorted(f.duration_s for f in fates)
    assert 0.93 * MEAN_S <= sum(durations) / len(durations) <= 1.07 * MEAN_S
    assert durations[-20] > 2.0 * MEAN_S  # a long tail: the slowest 1% over twice the mean
    assert durations[len(durations) // 2] < MEAN_S  # most are quicker than the mean


@pytest.mark.parametrize("where", ["missing-key", "missing-bucket", "another-accounts-bucket"])
def test_a_disk_the_role_cannot_read_fails_validation_with_403(
    wave_server: EmulatorServer, wave: Wave, clock: FakeClock, where: str
) -> None:
    disk = container("vm-1/none.vmdk")
    if where == "missing-bucket":
        disk = container("vm-1.vmdk", bucket="no-such-bucket")
    elif where == "another-accounts-bucket":
        other = Wave(wave_server.url, account=OTHER_ACCOUNT)
        other.bucket("theirs")
        disk = other.disk("vm-1.vmdk", bucket="theirs")
    task_id = wave.start(disk)["ImportTaskId"]  # accepted: EC2 finds out while validating
    course = _course(wave, task_id, clock)
    assert course[0] == ("active", "pending", "1")
    assert course[-1] == ("deleted", DENIED_403, None)
    assert all(m[1] in ("pending", DENIED_403) for m in course)  # it fails while validating


def test_a_bucket_in_another_region_is_refused(wave_server: EmulatorServer) -> None:
    west = Wave(wave_server.url, region=OTHER_REGION)
    west.bucket("west-disks")
    disk = west.disk("vm-1.vmdk", bucket="west-disks")
    with pytest.raises(ClientError) as caught:
        Wave(wave_server.url).start(disk)
    error = caught.value.response["Error"]
    assert error["Code"] == "InvalidParameter"
    assert error["Message"] == (
        f"The given S3 object is not local to the region. The object must be located in {REGION}."
    )
    assert _import_stats(wave_server)["started"] == 0


def test_without_the_service_role_import_image_is_refused(
    start_emulator: Start,
) -> None:
    server = start_emulator(vmimport_role=False)
    wave = Wave(server.url)
    wave.bucket()
    with pytest.raises(ClientError) as caught:
        wave.start(wave.disk("vm-1.vmdk"))
    error = caught.value.response["Error"]
    assert error["Code"] == "InvalidParameter"
    assert error["Message"] == (
        "The service role vmimport does not exist or does not have sufficient permissions "
        "for the service to continue"
    )
    with pytest.raises(ClientError) as caught:
        Wave(start_emulator().url).start(container("x.vmdk"), RoleName="my-import-role")
    assert "The service role my-import-role does not exist" in str(caught.value)


def test_beyond_the_slots_import_image_answers_resource_limit_exceeded(
    wave_server: EmulatorServer, wave: Wave, clock: FakeClock
) -> None:
    ids = [wave.start(wave.disk(f"vm-{n}.vmdk"))["ImportTaskId"] for n in range(3)]
    with pytest.raises(ClientError) as caught:
        wave.start(wave.disk("vm-3.vmdk"))
    error = caught.value.response
    assert error["Error"]["Code"] == "ResourceLimitExceeded"
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 400
    # Another account, or another Region, has slots of its own.
    other = Wave(wave_server.url, account=OTHER_ACCOUNT)
    other.bucket("other-disks")
    other.start(other.disk("vm-0.vmdk", bucket="other-disks"))
    wave.ec2.cancel_import_task(ImportTaskId=ids[0])  # a cancel frees its slot at once
    fourth = wave.start(wave.disk("vm-3.vmdk"))["ImportTaskId"]
    stats = _import_stats(wave_server)
    assert stats["quotaRefusals"] == 1
    assert stats["maxActive"] == 3
    assert stats["started"] == 5
    by_account = wave_server.stats()["regions"][REGION]["importTasksByAccount"]
    assert by_account[ACCOUNT]["maxActive"] == 3
    assert by_account[OTHER_ACCOUNT]["maxActive"] == 1
    assert wave.task(fourth)["Status"] == "active"


def test_a_client_token_replays_its_task_and_refuses_other_parameters(
    wave_server: EmulatorServer, wave: Wave
) -> None:
    disk = wave.disk("vm-1.vmdk")
    first = wave.start(disk, ClientToken="vm-1-token", TagSpecifications=tags(ibimport_vm="vm-1"))
    again = wave.start(disk, ClientToken="vm-1-token", TagSpecifications=tags(ibimport_vm="vm-1"))
    assert again["ImportTaskId"] == first["ImportTaskId"]
    with pytest.raises(ClientError) as caught:
        wave.start(disk, ClientToken="vm-1-token", Description="other parameters")
    assert caught.value.response["Error"]["Code"] == "IdempotentParameterMismatch"
    stats = _import_stats(wave_server)
    assert (stats["started"], stats["replays"], stats["duplicates"]) == (1, 1, 0)


def test_a_second_task_for_the_same_disks_is_counted_a_duplicate(
    wave_server: EmulatorServer, wave: Wave, clock: FakeClock
) -> None:
    disk = wave.disk("vm-1.vmdk")
    first = wave.start(disk, ClientToken="a")["ImportTaskId"]
    wave.start(disk)  # no token: EC2 cannot tell, a second import of the VM starts
    assert _import_stats(wave_server)["duplicates"] == 1
    wave.ec2.cancel_import_task(ImportTaskId=first)
    clock.advance(MEAN_S)  # both ended: one cancelled, one completed
    wave.start(disk)  # the completed one still stands for the VM
    assert _import_stats(wave_server)["duplicates"] == 2


def test_a_cancelled_task_goes_deleting_then_deleted(
    wave_server: EmulatorServer, wave: Wave, clock: FakeClock
) -> None:
    task_id = wave.start(wave.disk("vm-1.vmdk"))["ImportTaskId"]
    clock.advance(MEAN_S / 10)
    answer = wave.ec2.cancel_import_task(ImportTaskId=task_id, CancelReason="wave stopped")
    assert (answer["ImportTaskId"], answer["PreviousState"], answer["State"]) == (
        task_id,
        "active",
        "deleting",
    )
    task = wave.task(task_id)
    assert (task["Status"], task["StatusMessage"]) == ("deleting", CANCELLED_MESSAGE)
    with pytest.raises(ClientError) as caught:
        wave.ec2.cancel_import_task(ImportTaskId=task_id)
    assert caught.value.response["Error"]["Code"] == "IncorrectState"
    clock.advance(MEAN_S / 100 + 0.01)  # deleting lasts a hundredth of the mean
    assert wave.task(task_id)["Status"] == "deleted"
    stats = _import_stats(wave_server)
    assert (stats["cancelled"], stats["deleted"], stats["active"]) == (1, 0, 0)
    with pytest.raises(ClientError) as caught:
        wave.ec2.cancel_import_task(ImportTaskId="import-ami-0123456789abcdef0")
    assert caught.value.response["Error"]["Code"] == "InvalidConversionTaskId.Malformed"


def test_tag_filters_select_and_pages_never_skip_a_task_that_changed(
    wave: Wave, clock: FakeClock
) -> None:
    ids = []
    for n in range(3):
        started = wave.start(
            wave.disk(f"vm-{n}.vmdk"),
            TagSpecifications=tags(ibimport_vm=f"vm-{n}", ibimport_wave="w1"),
        )
        ids.append(started["ImportTaskId"])
    ec2 = wave.ec2

    def listed(**members: Any) -> list[str]:
        pages = ec2.get_paginator("describe_import_image_tasks").paginate(**members)
        return [t["ImportTaskId"] for page in pages for t in page["ImportImageTasks"]]

    assert listed(Filters=[{"Name": "tag:ibimport:vm", "Values": ["vm-1"]}]) == [ids[1]]
    assert listed(Filters=[{"Name": "tag:ibimport:vm", "Values": ["vm-0", "vm-2"]}]) == [
        ids[0],
        ids[2],
    ]
    assert listed(Filters=[{"Name": "tag-key", "Values": ["ibimport:wave"]}]) == ids
    assert listed(Filters=[{"Name": "tag-key", "Values": ["other"]}]) == []
    both = [
        {"Name": "tag:ibimport:wave", "Values": ["w1"]},
        {"Name": "task-state", "Values": ["active"]},
    ]
    assert listed(Filters=both) == ids
    tagged = ec2.describe_import_image_tasks(ImportTaskIds=[ids[0]])["ImportImageTasks"][0]
    assert {t["Key"]: t["Value"] for t in tagged["Tags"]} == {
        "ibimport:vm": "vm-0",
        "ibimport:wave": "w1",
    }
    # A page token is a place in the list: the tasks that completed between the pages
    # drop out of an active-only listing, and none of the others is skipped.
    first = ec2.describe_import_image_tasks(
        Filters=[{"Name": "task-state", "Values": ["active"]}], MaxResults=1
    )
    assert [t["ImportTaskId"] for t in first["ImportImageTasks"]] == [ids[0]]
    wave.ec2.cancel_import_task(ImportTaskId=ids[0])
    rest = ec2.describe_import_image_tasks(
        Filters=[{"Name": "task-state", "Values": ["active"]}],
        MaxResults=5,
        NextToken=first["NextToken"],
    )
    assert [t["ImportTaskId"] for t in rest["ImportImageTasks"]] == ids[1:]
    assert "NextToken" not in rest


def test_tasks_are_listed_for_seven_days_in_their_own_account_and_region(
    wave_server: EmulatorServer, wave: Wave, clock: FakeClock
) -> None:
    task_id = wave.start(wave.disk("vm-1.vmdk"))["ImportTaskId"]
    other_account = Wave(wave_server.url, account=OTHER_ACCOUNT)
    other_region = Wave(wave_server.url, region=OTHER_REGION)
    for stranger in (other_account, other_region):
        assert stranger.ec2.describe_import_image_tasks()["ImportImageTasks"] == []
        with pytest.raises(ClientError) as caught:
            stranger.task(task_id)
        assert caught.value.response["Error"]["Code"] == "InvalidConversionTaskId.Malformed"
    assert _course(wave, task_id, clock)[-1][0] == "completed"  # within MEAN_S / 200
    clock.advance(7 * 86400 - MEAN_S / 200)
    assert wave.task(task_id)["Status"] == "completed"  # it ended less than 7 days ago
    clock.advance(MEAN_S / 200)
    assert wave.ec2.describe_import_image_tasks()["ImportImageTasks"] == []
    with pytest.raises(ClientError):
        wave.task(task_id)
    assert _import_stats(wave_server)["completed"] == 1  # the counters still know it


def test_an_image_follows_its_task_to_available_or_failed(
    start_emulator: Start, clock: FakeClock
) -> None:
    server = start_emulator(
        task_duration_s=MEAN_S, task_failure_mix="first-boot=0.5", seed=3, available_after_s=10
    )
    wave = Wave(server.url)
    wave.bucket()
    builds = {}
    for n in range(12):
        task = wave.start(wave.disk(f"vm-{n}.vmdk"))["ImportTaskId"]
        params = import_params(n, vmImportTaskId=task)
        builds[task] = wave.imagebuilder.import_vm_image(**params)["imageArn"]
    raw = raw_answers(wave.imagebuilder)

    def image(arn: str) -> dict[str, Any]:
        state: dict[str, Any] = wave.imagebuilder.get_image(imageBuildVersionArn=arn)["image"][
            "state"
        ]
        return state

    assert {image(arn)["status"] for arn in builds.values()} == {"PENDING"}
    for _ in range(400):  # bounded: 40 means
        tasks = {task: wave.task(task) for task in builds}
        if all(t["Status"] in ("completed", "deleted") for t in tasks.values()):
            break
        for task, arn in builds.items():
            if tasks[task]["Status"] == "active":
                assert image(arn)["status"] == "PENDING", task
        clock.advance(MEAN_S / 10)
    clock.advance(10)
    outcomes = set()
    for task, arn in builds.items():
        ended = wave.task(task)
        state = image(arn)
        if ended["Status"] == "completed":
            assert state == {"status": "AVAILABLE"}
        else:
            assert state["status"] == "FAILED"
            assert state["reason"] == ended["StatusMessage"]
            assert state["reason"].startswith("FirstBootFailure: ")
            assert raw[-1]["image"]["state"]["failureContext"] == {"imageStatus": "CREATING"}
        outcomes.add(ended["Status"])
    assert outcomes == {"completed", "deleted"}
    # Another account's image naming the task does not follow it: the ID is not its own.
    stranger = Wave(server.url, account=OTHER_ACCOUNT).imagebuilder
    task = next(iter(builds))
    arn = stranger.import_vm_image(**import_params(99, vmImportTaskId=task))["imageArn"]
    clock.advance(10)
    [build] = [
        b for b in stranger.list_image_build_versions()["imageSummaryList"] if b["arn"] == arn
    ]
    assert build["state"]["status"] == "AVAILABLE"  # the fixture's --task-mix completed=1


@pytest.mark.parametrize(
    ("members", "code", "words"),
    [
        ({"BootMode": "uefi-preferred"}, "InvalidParameter", "uefi-preferred"),
        ({"KmsKeyId": "alias/disks"}, "InvalidParameter", "Encrypted"),
        ({"Architecture": "sparc"}, "InvalidParameterValue", "Architecture"),
        (
            {
                "TagSpecifications": [
                    {"ResourceType": "image", "Tags": [{"Key": "a", "Value": "b"}]}
                ]
            },
            "InvalidParameterValue",
            "'image' is not a valid taggable resource type",
        ),
        ({"ClientToken": "x" * 65}, "InvalidParameterValue", "ClientToken"),
    ],
)
def test_a_request_ec2_refuses_names_its_rule(
    wave: Wave, members: dict[str, Any], code: str, words: str
) -> None:
    with pytest.raises(ClientError) as caught:
        wave.start(container("vm-1.vmdk"), **members)
    error = caught.value.response["Error"]
    assert error["Code"] == code
    assert words in error["Message"]


def test_disks_given_as_urls_and_a_bad_format(wave: Wave, clock: FakeClock) -> None:
    wave.disk("vm-1/a.vmdk")
    wave.disk("vm-1/b.vmdk")
    started = wave.start(
        {"Format": "VMDK", "Url": f"s3://{BUCKET}/vm-1/a.vmdk"},
        {"Format": "vmdk", "Url": f"https://{BUCKET}.s3.{REGION}.amazonaws.com/vm-1/b.vmdk"},
    )
    clock.advance(10 * MEAN_S)
    assert wave.task(started["ImportTaskId"])["Status"] == "completed"
    with pytest.raises(ClientError) as caught:
        wave.start({"Format": "qcow2", "Url": f"s3://{BUCKET}/vm-1/a.vmdk"})
    assert "Format" in caught.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as caught:
        wave.ec2.import_image()
    assert caught.value.response["Error"]["Code"] == "MissingParameter"


def test_dry_run_checks_everything_and_starts_nothing(
    wave_server: EmulatorServer, wave: Wave
) -> None:
    with pytest.raises(ClientError) as caught:
        wave.start(wave.disk("vm-1.vmdk"), DryRun=True)
    assert caught.value.response["Error"]["Code"] == "DryRunOperation"
    assert _import_stats(wave_server)["started"] == 0


def test_busy_slot_seconds_count_the_time_tasks_held_slots(
    wave_server: EmulatorServer, wave: Wave, clock: FakeClock
) -> None:
    first = wave.start(wave.disk("vm-1.vmdk"))["ImportTaskId"]
    clock.advance(4.0)
    second = wave.start(wave.disk("vm-2.vmdk"))["ImportTaskId"]
    clock.advance(1.0)
    wave.ec2.cancel_import_task(ImportTaskId=first)
    wave.ec2.cancel_import_task(ImportTaskId=second)
    clock.advance(50.0)
    stats = _import_stats(wave_server)
    assert stats["busySlotSeconds"] == pytest.approx(5.0 + 1.0)
    assert (stats["active"], stats["cancelled"], stats["maxActive"]) == (0, 2, 2)
    assert wave_server.stats()["importTasks"]["busySlotSeconds"] == pytest.approx(6.0)


def test_state_keeps_started_tasks_tokens_and_disks_across_a_restart(
    start_emulator: Start, clock: FakeClock, tmp_path: Path
) -> None:
    state = tmp_path / "state.json"
    knobs = {"task_duration_s": MEAN_S, "state_file": state, "seed": 5}
    first = start_emulator(**knobs)
    wave = Wave(first.url)
    wave.bucket()
    disk = wave.disk("vm-1.vmdk")
    task_id = wave.start(disk, ClientToken="vm-1", TagSpecifications=tags(k="v"))["ImportTaskId"]
    first.stop()
    second = start_emulator(**knobs)
    wave = Wave(second.url)
    assert (
        wave.start(disk, ClientToken="vm-1", TagSpecifications=tags(k="v"))["ImportTaskId"]
        == task_id
    )
    assert wave.s3.head_object(Bucket=BUCKET, Key="vm-1.vmdk")["ContentLength"] > 0
    clock.advance(10 * MEAN_S)
    assert wave.task(task_id)["Status"] == "completed"
    stats = _import_stats(second)
    assert (stats["started"], stats["replays"], stats["duplicates"]) == (1, 1, 0)


def test_the_existing_task_sources_still_answer_beside_started_tasks(
    start_emulator: Start, wave_server: EmulatorServer
) -> None:
    """``--task-mix`` tasks are made up on sight and listed before the started ones."""
    server = start_emulator(task_mix="completed=1", task_duration_s=MEAN_S)
    wave = Wave(server.url)
    wave.bucket()
    declared = "import-ami-0000000000000abcd"
    assert wave.task(declared)["Status"] == "completed"
    started = wave.start(wave.disk("vm-1.vmdk"))["ImportTaskId"]
    listed = [t["ImportTaskId"] for t in wave.ec2.describe_import_image_tasks()["ImportImageTasks"]]
    assert listed == [declared, started]
