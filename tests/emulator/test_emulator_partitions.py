"""Many partitions at once: accounts from access keys, regions from credential scopes,
a quota per region, per-region counters, and STS AssumeRole for ``role_arn`` profiles."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from emulator_support import NO_RETRIES, FakeClock, import_params

from ibimport.emulator import EmulatorServer

Start = Callable[..., EmulatorServer]
KEY, SECRET = "AKIDIBIMPORTTEST", "ibimport-test-secret"
OTHER_KEY = "AKIDSECONDACCOUNT"


def _client(url: str, *, region: str, key: str = KEY, service: str = "imagebuilder") -> Any:
    return boto3.client(
        service,
        endpoint_url=url,
        region_name=region,
        aws_access_key_id=key,
        aws_secret_access_key=SECRET,
        config=NO_RETRIES,
    )


@pytest.fixture
def accounts(tmp_path: Path) -> Path:
    path = tmp_path / "accounts.json"
    path.write_text(json.dumps({KEY: "111111111111", OTHER_KEY: "333333333333"}))
    return path


def test_each_account_and_region_is_its_own_partition(
    start_emulator: Start, accounts: Path
) -> None:
    server = start_emulator(accounts=accounts)
    east = _client(server.url, region="us-east-1")
    west = _client(server.url, region="eu-west-1")
    other = _client(server.url, region="eu-west-1", key=OTHER_KEY)
    default = _client(server.url, region="eu-west-1", key="AKIDNOTINTHEFILE")
    arns = [c.import_vm_image(**import_params())["imageArn"] for c in (east, west, other, default)]
    assert arns == [
        "arn:aws:imagebuilder:us-east-1:111111111111:image/web-server-1/1.0.0/1",
        "arn:aws:imagebuilder:eu-west-1:111111111111:image/web-server-1/1.0.0/1",
        "arn:aws:imagebuilder:eu-west-1:333333333333:image/web-server-1/1.0.0/1",
        "arn:aws:imagebuilder:eu-west-1:123456789012:image/web-server-1/1.0.0/1",
    ]
    for client, arn in zip((east, west, other, default), arns, strict=True):
        [build] = client.list_image_build_versions()["imageSummaryList"]
        assert build["arn"] == arn
    east.import_vm_image(**import_params(clientToken="a-second-build"))
    stats = server.stats()
    assert stats["images"] == 5
    assert stats["duplicateBuilds"] == 1
    assert stats["regions"] == {
        "eu-west-1": {
            "requests": {"ImportVmImage": 3, "ListImageBuildVersions": 3},
            "throttled": 0,
            "images": 3,
            "duplicateBuilds": 0,
            "reimportsOverFailed": 0,
        },
        "us-east-1": {
            "requests": {"ImportVmImage": 2, "ListImageBuildVersions": 1},
            "throttled": 0,
            "images": 2,
            "duplicateBuilds": 1,
            "reimportsOverFailed": 0,
        },
    }


def test_a_region_has_its_own_quota(start_emulator: Start) -> None:
    server = start_emulator(rate=5, rate_per_region=("eu-west-1=2",))
    west = _client(server.url, region="eu-west-1")
    east = _client(server.url, region="us-east-1")
    west.list_images()
    west.list_images()
    with pytest.raises(ClientError) as caught:
        west.list_images()
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 429
    for _ in range(5):
        east.list_images()  # the other region's bucket is untouched
    with pytest.raises(ClientError):
        east.list_images()
    regions = server.stats()["regions"]
    assert (regions["eu-west-1"]["throttled"], regions["us-east-1"]["throttled"]) == (1, 1)
    assert regions["eu-west-1"]["requests"] == {"ListImages": 3}


def test_two_accounts_in_one_region_do_not_share_a_quota(
    start_emulator: Start, accounts: Path
) -> None:
    server = start_emulator(rate=1, accounts=accounts)
    _client(server.url, region="us-east-1").list_images()
    _client(server.url, region="us-east-1", key=OTHER_KEY).list_images()
    assert server.stats()["throttled"] == 0


def test_verify_signatures_serves_the_listed_regions(
    start_emulator: Start, clock: FakeClock, accounts: Path
) -> None:
    clock.now = time.time()
    server = start_emulator(
        verify_signatures=True,
        access_key_id=KEY,
        secret_access_key=SECRET,
        accounts=accounts,
        regions=("eu-west-1",),
        rate_per_region=("ap-south-1=100",),
    )
    for region in ("us-east-1", "eu-west-1", "ap-south-1"):
        _client(server.url, region=region, key=OTHER_KEY).list_images()
    with pytest.raises(ClientError) as caught:
        _client(server.url, region="us-west-2").list_images()
    assert caught.value.response["Error"]["Code"] == "InvalidSignatureException"
    with pytest.raises(ClientError) as caught:
        _client(server.url, region="us-east-1", key="AKIDNOTINTHEFILE").list_images()
    assert caught.value.response["Error"]["Code"] == "UnrecognizedClientException"


def _roles(tmp_path: Path, roles: dict[str, Any]) -> Path:
    """An ``--accounts`` file declaring these roles (ARN -> {"MaxSessionDuration": S})."""
    path = tmp_path / "roles.json"
    path.write_text(json.dumps(roles))
    return path


def _role_profile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    config = tmp_path / "config"
    config.write_text(
        "[profile base]\nregion = eu-west-1\n\n"
        "[profile migrate]\nrole_arn = arn:aws:iam::222222222222:role/migrate\n"
        "source_profile = base\nregion = eu-west-1\n"
    )
    credentials = tmp_path / "credentials"
    credentials.write_text(f"[base]\naws_access_key_id = {KEY}\naws_secret_access_key = {SECRET}\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", url)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize("verifying", [False, True])
def test_a_role_arn_profile_lands_in_the_roles_account(
    start_emulator: Start,
    clock: FakeClock,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    verifying: bool,
) -> None:
    clock.now = time.time()
    server = start_emulator(
        verify_signatures=verifying,
        access_key_id=KEY,
        secret_access_key=SECRET,
        region="eu-west-1",
        accounts=_roles(tmp_path, {"arn:aws:iam::222222222222:role/migrate": {}}),
    )
    _role_profile(tmp_path, monkeypatch, server.url)
    session = boto3.session.Session(profile_name="migrate")
    frozen = session.get_credentials().get_frozen_credentials()
    assert frozen.access_key.startswith("ASIA")
    assert frozen.token
    client = session.client("imagebuilder", endpoint_url=server.url, config=NO_RETRIES)
    arn = client.import_vm_image(**import_params())["imageArn"]
    assert arn.startswith("arn:aws:imagebuilder:eu-west-1:222222222222:image/")
    assert server.stats()["requests"]["AssumeRole"] == 1
    if verifying:  # the temporary key verifies only with its own session token
        forged = boto3.client(
            "imagebuilder",
            endpoint_url=server.url,
            region_name="eu-west-1",
            aws_access_key_id=frozen.access_key,
            aws_secret_access_key=frozen.secret_key,
            aws_session_token="not-the-token",
            config=NO_RETRIES,
        )
        with pytest.raises(ClientError) as caught:
            forged.list_images()
        assert caught.value.response["Error"]["Code"] == "UnrecognizedClientException"
        clock.advance(3600)  # past the default DurationSeconds
        with pytest.raises(ClientError) as caught:
            client.list_images()
        assert caught.value.response["Error"]["Code"] == "ExpiredTokenException"


def test_assume_role_answers_sts_shapes_and_errors(
    start_emulator: Start, clock: FakeClock, tmp_path: Path
) -> None:
    clock.now = time.time()
    server = start_emulator(
        verify_signatures=True,
        access_key_id=KEY,
        secret_access_key=SECRET,
        accounts=_roles(tmp_path, {"arn:aws:iam::444444444444:role/path/ops": {}}),
    )
    sts = _client(server.url, region="us-east-1", service="sts")
    answer = sts.assume_role(
        RoleArn="arn:aws:iam::444444444444:role/path/ops", RoleSessionName="wave-3"
    )
    assert answer["AssumedRoleUser"]["Arn"] == "arn:aws:sts::444444444444:assumed-role/ops/wave-3"
    assert answer["Credentials"]["Expiration"].timestamp() == pytest.approx(clock.now + 3600, abs=2)
    with pytest.raises(ClientError) as caught:
        sts.assume_role(RoleArn="arn:aws:iam::444444444444:user/bob", RoleSessionName="a b!")
    error = caught.value.response["Error"]
    assert error["Code"] == "ValidationError"
    assert "roleArn" in error["Message"]
    assert "roleSessionName" in error["Message"]
    bad = boto3.client(
        "sts",
        endpoint_url=server.url,
        region_name="us-east-1",
        aws_access_key_id=KEY,
        aws_secret_access_key="wrong",
        config=NO_RETRIES,
    )
    with pytest.raises(ClientError) as caught:
        bad.assume_role(RoleArn="arn:aws:iam::444444444444:role/ops", RoleSessionName="ab")
    assert caught.value.response["Error"]["Code"] == "SignatureDoesNotMatch"
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_ec2_errors_under_verify_signatures_are_auth_failure(
    start_emulator: Start, clock: FakeClock
) -> None:
    clock.now = time.time()
    server = start_emulator(verify_signatures=True, access_key_id=KEY, secret_access_key=SECRET)
    ec2 = _client(server.url, region="us-east-1", service="ec2")
    ec2.describe_import_image_tasks(ImportTaskIds=["import-ami-0123456789abcdef0"])
    wrong = boto3.client(
        "ec2",
        endpoint_url=server.url,
        region_name="us-east-1",
        aws_access_key_id="AKIDUNKNOWN",
        aws_secret_access_key=SECRET,
        config=NO_RETRIES,
    )
    with pytest.raises(ClientError) as caught:
        wrong.describe_import_image_tasks()
    assert caught.value.response["Error"]["Code"] == "AuthFailure"
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 401


def test_get_caller_identity_names_the_account_of_the_key_or_the_assumed_role(
    start_emulator: Start, clock: FakeClock, tmp_path: Path
) -> None:
    clock.now = time.time()
    server = start_emulator(
        accounts=_roles(tmp_path, {"arn:aws:iam::444444444444:role/migrate": {}})
    )
    own = boto3.client(
        "sts",
        endpoint_url=server.url,
        region_name="eu-west-1",
        aws_access_key_id="111122223333",
        aws_secret_access_key="s",
        config=NO_RETRIES,
    )
    assert own.get_caller_identity()["Account"] == "111122223333"
    issued = own.assume_role(
        RoleArn="arn:aws:iam::444444444444:role/migrate", RoleSessionName="wave"
    )["Credentials"]
    assumed = boto3.client(
        "sts",
        endpoint_url=server.url,
        region_name="eu-west-1",
        aws_access_key_id=issued["AccessKeyId"],
        aws_secret_access_key=issued["SecretAccessKey"],
        aws_session_token=issued["SessionToken"],
        config=NO_RETRIES,
    )
    identity = assumed.get_caller_identity()
    assert identity["Account"] == "444444444444"
    assert identity["Arn"] == "arn:aws:sts::444444444444:assumed-role/migrate/wave"


def test_assume_role_grants_only_declared_roles_up_to_their_max_session(
    start_emulator: Start, clock: FakeClock, tmp_path: Path
) -> None:
    """Issue 21 gap 2: a role not in --accounts is AccessDenied (STS's code and words); a
    duration past the role's MaxSessionDuration is STS's ValidationError."""
    clock.now = time.time()
    long_role = "arn:aws:iam::444444444444:role/long"
    short_role = "arn:aws:iam::444444444444:role/short"
    server = start_emulator(
        accounts=_roles(tmp_path, {long_role: {"MaxSessionDuration": 7200}, short_role: {}})
    )
    sts = _client(server.url, region="us-east-1", service="sts")
    with pytest.raises(ClientError) as caught:
        sts.assume_role(RoleArn="arn:aws:iam::444444444444:role/other", RoleSessionName="w0")
    error = caught.value.response
    assert error["Error"]["Code"] == "AccessDenied"
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert "sts:AssumeRole" in error["Error"]["Message"]
    granted = sts.assume_role(RoleArn=long_role, RoleSessionName="w1", DurationSeconds=7200)
    assert granted["Credentials"]["Expiration"].timestamp() == pytest.approx(
        clock.now + 7200, abs=2
    )
    with pytest.raises(ClientError) as caught:
        sts.assume_role(RoleArn=short_role, RoleSessionName="w2", DurationSeconds=7200)
    assert caught.value.response["Error"]["Code"] == "ValidationError"
    assert "MaxSessionDuration" in caught.value.response["Error"]["Message"]


def test_denied_calls_get_each_services_own_access_denied_error(
    start_emulator: Start, clock: FakeClock, tmp_path: Path
) -> None:
    """Issue 21 gap 2: --deny by access key, and by role name for that role's sessions;
    everything else is allowed."""
    clock.now = time.time()
    role = "arn:aws:iam::444444444444:role/readonly"
    server = start_emulator(
        accounts=_roles(tmp_path, {role: {}}),
        deny=[f"{KEY}=ImportVmImage,ec2:DescribeImportImageTasks,AssumeRole", "readonly=*"],
    )
    denied = _client(server.url, region="us-east-1")
    with pytest.raises(ClientError) as caught:
        denied.import_vm_image(**import_params())
    error = caught.value.response
    assert (error["Error"]["Code"], error["ResponseMetadata"]["HTTPStatusCode"]) == (
        "AccessDeniedException",
        403,
    )
    assert "imagebuilder:ImportVmImage" in error["Error"]["Message"]
    denied.list_images()  # not denied
    with pytest.raises(ClientError) as caught:
        _client(server.url, region="us-east-1", service="ec2").describe_import_image_tasks()
    assert caught.value.response["Error"]["Code"] == "UnauthorizedOperation"
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    with pytest.raises(ClientError) as caught:
        _client(server.url, region="us-east-1", service="sts").assume_role(
            RoleArn=role, RoleSessionName="w0"
        )
    assert caught.value.response["Error"]["Code"] == "AccessDenied"
    other = _client(server.url, region="us-east-1", key=OTHER_KEY)
    other.import_vm_image(**import_params())  # another key is not denied
    issued = _client(server.url, region="us-east-1", key=OTHER_KEY, service="sts").assume_role(
        RoleArn=role, RoleSessionName="w0"
    )["Credentials"]
    session = boto3.client(
        "imagebuilder",
        endpoint_url=server.url,
        region_name="us-east-1",
        aws_access_key_id=issued["AccessKeyId"],
        aws_secret_access_key=issued["SecretAccessKey"],
        aws_session_token=issued["SessionToken"],
        config=NO_RETRIES,
    )
    with pytest.raises(ClientError) as caught:
        session.list_images()
    assert caught.value.response["Error"]["Code"] == "AccessDeniedException"
    assert "assumed-role/readonly/w0" in caught.value.response["Error"]["Message"]
    assert server.stats()["errors"]["AccessDeniedException"] == 2
