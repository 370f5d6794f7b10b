"""S3, IAM GetRole and Service Quotas on the emulator's one endpoint (issue 19).

Real boto3 ``s3``, ``iam`` and ``service-quotas`` clients, with nothing but
``endpoint_url`` pointed at the emulator (botocore sends S3 path style to an IP address).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from emulator_support import NO_RETRIES, FakeClock

from ibimport.emulator import EmulatorServer
from ibimport.emulator.defaults import LOCAL_ACCESS_KEY_ID, LOCAL_SECRET_ACCESS_KEY
from ibimport.emulator.servicequotas.models import IMPORT_TASKS_QUOTA_CODE

Start = Callable[..., EmulatorServer]
ACCOUNT, OTHER_ACCOUNT = "111111111111", "222222222222"
AWS_CLI = os.environ.get("IBIMPORT_AWS_CLI")


def _client(
    service: str,
    url: str,
    *,
    region: str = "eu-west-1",
    key: str = ACCOUNT,
    secret: str = "secret",
    config: Config = NO_RETRIES,
) -> Any:
    return boto3.client(
        service,
        endpoint_url=url,
        region_name=region,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        config=config,
    )


def _code(caught: pytest.ExceptionInfo[ClientError]) -> str:
    return str(caught.value.response["Error"]["Code"])


def test_s3_round_trip(server: EmulatorServer) -> None:
    s3 = _client("s3", server.url)
    s3.create_bucket(
        Bucket="wave-disks", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
    )
    body = b"a disk image, a few bytes long"
    put = s3.put_object(Bucket="wave-disks", Key="vm 1/disk-1.vmdk", Body=body)
    head = s3.head_object(Bucket="wave-disks", Key="vm 1/disk-1.vmdk")
    assert head["ContentLength"] == len(body)
    assert head["ETag"] == put["ETag"] == f'"{hashlib.md5(body).hexdigest()}"'  # S3's rule
    assert s3.get_bucket_location(Bucket="wave-disks")["LocationConstraint"] == "eu-west-1"
    [listed] = s3.list_objects_v2(Bucket="wave-disks")["Contents"]
    assert (listed["Key"], listed["Size"], listed["ETag"]) == (
        "vm 1/disk-1.vmdk",
        len(body),
        put["ETag"],
    )
    assert [b["Name"] for b in s3.list_buckets()["Buckets"]] == ["wave-disks"]
    with pytest.raises(ClientError) as caught:
        s3.head_object(Bucket="wave-disks", Key="vm 1/other.vmdk")
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    with pytest.raises(ClientError) as caught:
        s3.list_objects_v2(Bucket="no-such-bucket")
    assert _code(caught) == "NoSuchBucket"
    assert server.stats()["requests"]["PutObject"] == 1


def test_list_objects_v2_pages_and_rolls_up_prefixes(server: EmulatorServer) -> None:
    s3 = _client("s3", server.url, region="us-east-1")
    s3.create_bucket(Bucket="disks")
    keys = [f"vm-{n:02d}/disk-{d}.vmdk" for n in range(7) for d in (1, 2)] + ["readme.txt"]
    for key in keys:
        s3.put_object(Bucket="disks", Key=key, Body=b"x")
    pages = s3.get_paginator("list_objects_v2").paginate(
        Bucket="disks", PaginationConfig={"PageSize": 4}
    )
    seen = [[o["Key"] for o in page.get("Contents", [])] for page in pages]
    assert [len(page) for page in seen] == [4, 4, 4, 3]
    assert [key for page in seen for key in page] == sorted(keys)
    rolled = s3.list_objects_v2(Bucket="disks", Delimiter="/", MaxKeys=5)
    assert [o["Key"] for o in rolled["Contents"]] == ["readme.txt"]  # 'r' sorts before 'v'
    assert [p["Prefix"] for p in rolled["CommonPrefixes"]] == [f"vm-{n:02d}/" for n in range(4)]
    rest = s3.list_objects_v2(
        Bucket="disks", Delimiter="/", ContinuationToken=rolled["NextContinuationToken"]
    )
    assert [p["Prefix"] for p in rest["CommonPrefixes"]] == ["vm-04/", "vm-05/", "vm-06/"]
    assert "Contents" not in rest
    under = s3.list_objects_v2(Bucket="disks", Prefix="vm-03/")
    assert [o["Key"] for o in under["Contents"]] == ["vm-03/disk-1.vmdk", "vm-03/disk-2.vmdk"]
    # us-east-1's buckets have no LocationConstraint (the model: null).
    assert s3.get_bucket_location(Bucket="disks").get("LocationConstraint") is None


def test_bucket_names_are_one_namespace_and_a_bucket_is_its_owners(
    server: EmulatorServer,
) -> None:
    mine = _client("s3", server.url)
    theirs = _client("s3", server.url, key=OTHER_ACCOUNT)
    where = {"LocationConstraint": "eu-west-1"}
    mine.create_bucket(Bucket="shared-name", CreateBucketConfiguration=where)
    with pytest.raises(ClientError) as caught:
        theirs.create_bucket(Bucket="shared-name", CreateBucketConfiguration=where)
    assert _code(caught) == "BucketAlreadyExists"
    with pytest.raises(ClientError) as caught:
        mine.create_bucket(Bucket="shared-name", CreateBucketConfiguration=where)
    assert _code(caught) == "BucketAlreadyOwnedByYou"
    with pytest.raises(ClientError) as caught:
        theirs.put_object(Bucket="shared-name", Key="k", Body=b"x")
    assert _code(caught) == "AccessDenied"
    with pytest.raises(ClientError) as caught:
        mine.create_bucket(Bucket="Not_A_Bucket", CreateBucketConfiguration=where)
    assert _code(caught) == "InvalidBucketName"


def test_create_bucket_refuses_a_region_the_endpoint_is_not(server: EmulatorServer) -> None:
    west = _client("s3", server.url, region="eu-west-1")
    with pytest.raises(ClientError) as caught:
        west.create_bucket(Bucket="nowhere")
    assert _code(caught) == "IllegalLocationConstraintException"
    assert "unspecified location constraint is incompatible" in str(caught.value)
    with pytest.raises(ClientError) as caught:
        west.create_bucket(
            Bucket="elsewhere", CreateBucketConfiguration={"LocationConstraint": "us-west-2"}
        )
    assert "us-west-2 location constraint is incompatible" in str(caught.value)
    east = _client("s3", server.url, region="us-east-1")
    east.create_bucket(Bucket="from-east", CreateBucketConfiguration={"LocationConstraint": "EU"})
    assert west.get_bucket_location(Bucket="from-east")["LocationConstraint"] == "eu-west-1"


def test_iam_get_role_answers_the_vmimport_role_and_its_trust(
    start_emulator: Start,
) -> None:
    iam = _client("iam", start_emulator().url)
    role = iam.get_role(RoleName="vmimport")["Role"]
    assert role["Arn"] == f"arn:aws:iam::{ACCOUNT}:role/vmimport"
    [statement] = role["AssumeRolePolicyDocument"]["Statement"]
    assert statement["Principal"] == {"Service": "vmie.amazonaws.com"}
    assert statement["Action"] == "sts:AssumeRole"
    with pytest.raises(ClientError) as caught:
        iam.get_role(RoleName="another-role")
    assert _code(caught) == "NoSuchEntity"
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    without = _client("iam", start_emulator(vmimport_role=False).url)
    with pytest.raises(ClientError) as caught:
        without.get_role(RoleName="vmimport")
    assert (
        caught.value.response["Error"]["Message"] == "The role with name vmimport cannot be found."
    )


def test_service_quotas_answer_the_import_task_slots(start_emulator: Start) -> None:
    quotas = _client("service-quotas", start_emulator(task_slots=7).url)
    quota = quotas.get_service_quota(
        ServiceCode="vmimportexport", QuotaCode=IMPORT_TASKS_QUOTA_CODE
    )
    assert quota["Quota"]["Value"] == 7.0
    assert quota["Quota"]["ServiceCode"] == "vmimportexport"
    [listed] = quotas.list_service_quotas(ServiceCode="vmimportexport")["Quotas"]
    assert listed["QuotaCode"] == IMPORT_TASKS_QUOTA_CODE
    with pytest.raises(ClientError) as caught:
        quotas.get_service_quota(ServiceCode="vmimportexport", QuotaCode="L-00000000")
    assert _code(caught) == "NoSuchResourceException"
    with pytest.raises(ClientError) as caught:
        quotas.get_service_quota(ServiceCode="ec2", QuotaCode=IMPORT_TASKS_QUOTA_CODE)
    assert _code(caught) == "NoSuchResourceException"


def test_deny_refuses_each_service_in_its_own_words(start_emulator: Start) -> None:
    server = start_emulator(
        deny=(f"{ACCOUNT}=s3:PutObject,iam:GetRole,servicequotas:*,ec2:ImportImage",)
    )
    s3 = _client("s3", server.url)
    s3.create_bucket(Bucket="b-1", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    with pytest.raises(ClientError) as caught:
        s3.put_object(Bucket="b-1", Key="k", Body=b"x")
    assert (_code(caught), caught.value.response["ResponseMetadata"]["HTTPStatusCode"]) == (
        "AccessDenied",
        403,
    )
    with pytest.raises(ClientError) as caught:
        _client("iam", server.url).get_role(RoleName="vmimport")
    assert _code(caught) == "AccessDenied"
    with pytest.raises(ClientError) as caught:
        _client("service-quotas", server.url).list_service_quotas(ServiceCode="vmimportexport")
    assert _code(caught) == "AccessDeniedException"
    with pytest.raises(ClientError) as caught:
        _client("ec2", server.url).import_image(
            DiskContainers=[{"Url": "s3://b-1/k", "Format": "RAW"}]
        )
    assert _code(caught) == "UnauthorizedOperation"


def test_signatures_are_verified_for_every_new_service(
    start_emulator: Start, clock: FakeClock
) -> None:
    clock.now = time.time()  # the signing time must be within 5 minutes of the emulator's
    server = start_emulator(verify_signatures=True, regions=("eu-west-1",))
    good = {"key": LOCAL_ACCESS_KEY_ID, "secret": LOCAL_SECRET_ACCESS_KEY}
    s3 = _client("s3", server.url, **good)
    s3.create_bucket(Bucket="signed", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    s3.put_object(Bucket="signed", Key="dir with spaces/disk+1.vmdk", Body=b"signed body")
    assert s3.list_objects_v2(Bucket="signed")["KeyCount"] == 1
    assert _client("iam", server.url, **good).get_role(RoleName="vmimport")["Role"]
    quotas = _client("service-quotas", server.url, **good)
    assert quotas.list_service_quotas(ServiceCode="vmimportexport")["Quotas"]
    ec2 = _client("ec2", server.url, **good)
    started = ec2.import_image(
        DiskContainers=[{"Url": "s3://signed/dir with spaces/disk+1.vmdk", "Format": "VMDK"}]
    )
    assert started["Status"] == "active"
    forged = {"key": LOCAL_ACCESS_KEY_ID, "secret": "not-the-secret"}
    with pytest.raises(ClientError) as caught:
        _client("s3", server.url, **forged).put_object(Bucket="signed", Key="k", Body=b"x")
    assert _code(caught) == "SignatureDoesNotMatch"
    with pytest.raises(ClientError) as caught:
        _client("service-quotas", server.url, **forged).list_service_quotas(
            ServiceCode="vmimportexport"
        )
    assert _code(caught) == "InvalidSignatureException"
    with pytest.raises(ClientError) as caught:
        _client("iam", server.url, **forged).get_role(RoleName="vmimport")
    assert _code(caught) == "SignatureDoesNotMatch"


def test_a_body_that_is_not_what_was_signed_is_refused(server: EmulatorServer) -> None:
    s3 = _client("s3", server.url, region="us-east-1")
    s3.create_bucket(Bucket="b-2")

    def tamper(request: Any, **_: Any) -> None:
        request.body = b"something else"
        request.headers["Content-Length"] = str(len(request.body))

    s3.meta.events.register("before-send.s3.PutObject", tamper)
    with pytest.raises(ClientError) as caught:
        s3.put_object(Bucket="b-2", Key="k", Body=b"the signed body")
    assert _code(caught) == "XAmzContentSHA256Mismatch"


@pytest.mark.skipif(not AWS_CLI, reason="IBIMPORT_AWS_CLI (path to aws) is not set")
def test_aws_s3_cp_and_ls_against_the_emulator(server: EmulatorServer, tmp_path: Path) -> None:
    disk = tmp_path / "disk.vmdk"
    disk.write_bytes(b"a disk image")
    env = {
        "PATH": os.environ.get("PATH", ""),
        "AWS_ACCESS_KEY_ID": ACCOUNT,
        "AWS_SECRET_ACCESS_KEY": "secret",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": server.url,
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
    }
    assert AWS_CLI is not None
    for args in (
        ["s3", "mb", "s3://cli-disks"],
        ["s3", "cp", str(disk), "s3://cli-disks/vm/disk.vmdk"],
    ):
        subprocess.run([AWS_CLI, *args], env=env, check=True, capture_output=True, timeout=60)
    listed = subprocess.run(
        [AWS_CLI, "s3", "ls", "s3://cli-disks/vm/"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    assert "disk.vmdk" in listed
    assert " 12 " in listed
