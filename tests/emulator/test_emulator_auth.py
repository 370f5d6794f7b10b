"""Authentication: every call must be signed; ``--verify-signatures`` checks the signature.

Checks are answered as AWS's REST-JSON front end answers. Real boto3 and aioboto3
clients sign; the emulator recomputes. Good credentials pass on every operation (GET
with a query string, PUT and POST with bodies); a wrong secret, an unknown key, a
tampered body or a session token the emulator never issued get 403; so does a call
that is not signed at all.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Callable
from typing import Any

import aioboto3
import pytest
from botocore import UNSIGNED
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError
from emulator_support import NO_RETRIES, FakeClock, import_params, raw_request

from ibimport.emulator import EmulatorConfig, EmulatorProcess, EmulatorServer
from ibimport.emulator.auth import SIGNATURE_SKEW_S
from ibimport.emulator.exceptions import BAD_SIGNATURE, UNKNOWN_KEY

KEY, SECRET = "AKIDIBIMPORTTEST", "ibimport-test-secret"
Start = Callable[..., EmulatorServer]


@pytest.fixture
def verifying(start_emulator: Start, clock: FakeClock) -> EmulatorServer:
    clock.now = time.time()  # clients sign with the real time; the check reads this clock
    return start_emulator(verify_signatures=True, access_key_id=KEY, secret_access_key=SECRET)


def _client(
    url: str,
    *,
    key: str = KEY,
    secret: str = SECRET,
    token: str | None = None,
    region: str = "us-east-1",
) -> Any:
    import boto3

    return boto3.client(
        "imagebuilder",
        endpoint_url=url,
        region_name=region,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        aws_session_token=token,
        config=NO_RETRIES,
    )


def _error(call: Callable[[], Any]) -> tuple[int, str, str]:
    with pytest.raises(ClientError) as caught:
        call()
    response = caught.value.response
    return (
        response["ResponseMetadata"]["HTTPStatusCode"],
        response["Error"]["Code"],
        response["Error"]["Message"],
    )


def test_good_credentials_pass_on_every_operation(verifying: EmulatorServer) -> None:
    client = _client(verifying.url)
    arn = client.import_vm_image(**import_params(1, name="Web Server_01"))["imageArn"]
    assert client.get_image(imageBuildVersionArn=arn)["image"]["arn"] == arn
    versions = client.list_images(
        owner="Self", filters=[{"name": "name", "values": ["Web Server_01"]}]
    )["imageVersionList"]
    assert len(versions) == 1
    page = client.list_image_build_versions(imageVersionArn=versions[0]["arn"])
    assert [s["arn"] for s in page["imageSummaryList"]] == [arn]
    assert verifying.stats()["errors"] == {}


async def test_aioboto3_signatures_pass_too(verifying: EmulatorServer) -> None:
    session = aioboto3.Session(
        aws_access_key_id=KEY, aws_secret_access_key=SECRET, region_name="us-east-1"
    )
    async with session.client(
        "imagebuilder", endpoint_url=verifying.url, config=NO_RETRIES
    ) as client:
        answer = await client.import_vm_image(**import_params(2, description="ünïcode, ok"))
        assert answer["imageArn"]


def test_a_wrong_secret_is_an_invalid_signature(verifying: EmulatorServer) -> None:
    client = _client(verifying.url, secret="not-the-secret")
    assert _error(lambda: client.import_vm_image(**import_params())) == (
        403,
        "InvalidSignatureException",
        BAD_SIGNATURE,
    )
    assert _error(lambda: client.list_images())[1] == "InvalidSignatureException"
    assert verifying.stats()["images"] == 0


def test_an_unknown_access_key_is_unrecognized(verifying: EmulatorServer) -> None:
    client = _client(verifying.url, key="AKIDSOMEONEELSE00000")
    assert _error(lambda: client.import_vm_image(**import_params())) == (
        403,
        "UnrecognizedClientException",
        UNKNOWN_KEY,
    )
    assert verifying.stats()["images"] == 0


def test_a_session_token_the_emulator_never_issued_is_unrecognized(
    verifying: EmulatorServer,
) -> None:
    client = _client(verifying.url, token="FwoGZXIvYXdzEXAMPLE")
    assert _error(lambda: client.list_images())[:2] == (403, "UnrecognizedClientException")


def _signed(url: str, body: bytes, *, secret: str = SECRET) -> dict[str, str]:
    request = AWSRequest(
        method="PUT",
        url=url + "/ImportVmImage",
        data=body,
        headers={"Content-Type": "application/json"},
    )
    SigV4Auth(Credentials(KEY, secret), "imagebuilder", "us-east-1").add_auth(request)
    return dict(request.headers.items())


def test_a_tampered_body_or_header_fails_and_has_no_effect(verifying: EmulatorServer) -> None:
    body = json.dumps(import_params()).encode()
    headers = _signed(verifying.url, body)
    tampered = body.replace(b"web-server-1", b"web-server-2")
    status, answer_headers, _ = raw_request(
        verifying.url, "PUT", "/ImportVmImage", body=tampered, headers=headers
    )
    assert (status, answer_headers["x-amzn-ErrorType"]) == (403, "InvalidSignatureException")
    later = {**headers, "X-Amz-Date": "20200101T000000Z"}
    status, _, _ = raw_request(verifying.url, "PUT", "/ImportVmImage", body=body, headers=later)
    assert status == 403
    assert verifying.stats()["images"] == 0
    status, _, answer = raw_request(
        verifying.url, "PUT", "/ImportVmImage", body=body, headers=headers
    )
    assert status == 200, answer
    assert verifying.stats()["images"] == 1


@pytest.mark.parametrize(
    ("authorization", "message"),
    [
        ("AWS4-HMAC-SHA256 Credential=AKIDIBIMPORTTEST/20250101/us-east-1/imagebuilder/"
         "aws4_request, SignedHeaders=host;x-amz-date", "requires 'Signature' parameter"),
        ("AWS4-HMAC-SHA256 Credential=AKIDIBIMPORTTEST/us-east-1/imagebuilder/aws4_request, "
         "SignedHeaders=host, Signature=" + "0" * 64, "5 slash-delimited elements"),
        ("AWS4-HMAC-SHA256 Credential=AKIDIBIMPORTTEST/20250101/us-east-1/imagebuilder/"
         "aws4_request, SignedHeaders=host, Signature=" + "0" * 64, "X-Amz-Date"),
    ],
)  # fmt: skip
def test_an_incomplete_signature_is_refused(
    verifying: EmulatorServer, authorization: str, message: str
) -> None:
    status, headers, body = raw_request(
        verifying.url, "GET", "/GetImage?imageBuildVersionArn=x",
        headers={"Authorization": authorization},
    )  # fmt: skip
    assert (status, headers["x-amzn-ErrorType"]) == (403, "IncompleteSignatureException")
    assert message in body["message"]


def test_verification_is_off_by_default(start_emulator: Start) -> None:
    server = start_emulator()
    client = _client(server.url, key="AKIDANYTHING", secret="anything")
    assert client.import_vm_image(**import_params())["imageArn"]


def test_the_default_pair_is_the_one_run_local_signs_with(
    start_emulator: Start, clock: FakeClock
) -> None:
    clock.now = time.time()
    server = start_emulator(verify_signatures=True)
    config = EmulatorConfig()
    client = _client(server.url, key=config.access_key_id, secret=config.secret_access_key)
    assert client.list_images()["imageVersionList"] == []
    assert config.secret_access_key not in repr(config)


def test_the_command_verifies_with_the_secret_from_the_environment() -> None:
    config = EmulatorConfig(verify_signatures=True, access_key_id=KEY, secret_access_key=SECRET)
    with EmulatorProcess(config) as process:
        assert _client(process.url).list_images()["imageVersionList"] == []
        assert _error(lambda: _client(process.url, secret="wrong").list_images())[0] == 403
        command = subprocess.run(
            ["ps", "-o", "args=", "-p", str(process.pid)], capture_output=True, text=True
        )
        assert SECRET not in command.stdout  # the secret is not on the command line


def test_an_unsigned_request_is_refused_with_403(server: EmulatorServer) -> None:
    status, headers, body = raw_request(
        server.url, "PUT", "/ImportVmImage", body=json.dumps(import_params()).encode()
    )
    assert status == 403
    assert headers["x-amzn-ErrorType"] == "MissingAuthenticationTokenException"
    assert body == {"message": "Missing Authentication Token"}
    status, headers, _ = raw_request(
        server.url, "GET", "/GetImage?imageBuildVersionArn=x", headers={"Authorization": "Bearer x"}
    )
    assert (status, headers["x-amzn-ErrorType"]) == (403, "IncompleteSignatureException")
    assert server.stats()["images"] == 0


def test_an_unsigned_boto3_client_is_refused(
    make_client: Callable[..., Any], server: EmulatorServer
) -> None:
    client = make_client(server.url, config=Config(signature_version=UNSIGNED))
    with pytest.raises(ClientError) as caught:
        client.import_vm_image(**import_params())
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_a_region_the_emulator_does_not_serve_is_refused(verifying: EmulatorServer) -> None:
    client = _client(verifying.url, region="eu-west-1")
    assert _error(lambda: client.import_vm_image(**import_params())) == (
        403,
        "InvalidSignatureException",
        "Credential should be scoped to a valid region, not 'eu-west-1'. ",
    )
    assert verifying.stats()["images"] == 0


def test_the_region_knob_is_the_region_served(start_emulator: Start, clock: FakeClock) -> None:
    clock.now = time.time()
    server = start_emulator(
        verify_signatures=True, access_key_id=KEY, secret_access_key=SECRET, region="eu-west-1"
    )
    arn = _client(server.url, region="eu-west-1").import_vm_image(**import_params())["imageArn"]
    assert arn.startswith("arn:aws:imagebuilder:eu-west-1:")
    assert _error(lambda: _client(server.url).list_images())[1] == "InvalidSignatureException"


def test_without_verification_any_region_is_answered(start_emulator: Start) -> None:
    server = start_emulator()
    for region in ("eu-west-1", "ap-southeast-2"):
        arn = _client(server.url, region=region).import_vm_image(**import_params())["imageArn"]
        assert arn.startswith(f"arn:aws:imagebuilder:{region}:")
    assert server.stats()["images"] == 2  # one per region: state is kept per region


_STAMP = r"([0-9]{8}T[0-9]{6}Z)"


def _stamp(epoch: float) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(epoch))


def test_a_signature_older_than_five_minutes_is_expired(
    verifying: EmulatorServer, clock: FakeClock
) -> None:
    client = _client(verifying.url)
    clock.advance(SIGNATURE_SKEW_S + 60)  # the emulator's clock runs ahead of the signer's
    status, code, message = _error(lambda: client.import_vm_image(**import_params()))
    assert (status, code) == (403, "InvalidSignatureException")
    found = re.fullmatch(
        f"Signature expired: {_STAMP} is now earlier than {_STAMP} \\({_STAMP} - 5 min\\.\\)",
        message,
    )
    assert found is not None, message
    signed, earliest, now = found.groups()
    assert (earliest, now) == (_stamp(clock.now - SIGNATURE_SKEW_S), _stamp(clock.now))
    assert signed < earliest
    assert verifying.stats()["images"] == 0


def test_a_signature_more_than_five_minutes_ahead_is_not_yet_current(
    verifying: EmulatorServer, clock: FakeClock
) -> None:
    client = _client(verifying.url)
    clock.advance(-(SIGNATURE_SKEW_S + 60))
    status, code, message = _error(lambda: client.list_images())
    assert (status, code) == (403, "InvalidSignatureException")
    found = re.fullmatch(
        f"Signature not yet current: {_STAMP} is still later than {_STAMP} "
        f"\\({_STAMP} \\+ 5 min\\.\\)",
        message,
    )
    assert found is not None, message
    assert found.group(3) == _stamp(clock.now)


def test_a_signature_within_five_minutes_passes(
    verifying: EmulatorServer, clock: FakeClock
) -> None:
    client = _client(verifying.url)
    clock.advance(SIGNATURE_SKEW_S - 30)
    assert client.import_vm_image(**import_params())["imageArn"]
    clock.advance(-2 * (SIGNATURE_SKEW_S - 30))
    assert client.list_images()["imageVersionList"]
