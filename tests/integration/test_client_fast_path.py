"""The client's fast path (fixed User-Agent, no per-call checks) still sends correct requests.

Each request the client sends is captured on its way out and its SigV4 signature
recomputed independently with botocore's own signer; the emulator also checks signatures
itself (``verify_signatures``) as the service would.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from ibimport.aws.client import ClientSettings, open_client
from ibimport.aws.fastpath import USER_AGENT
from ibimport.aws.signing import SIGNATURE_VERSION
from ibimport.emulator import EmulatorConfig, EmulatorServer
from ibimport.errors import ApiError

KEY, SECRET = "AKIDIBIMPORTFASTPATH", "fast-path-secret"
PARAMS = {
    "name": "fast-path-vm",
    "semanticVersion": "1.2.3",
    "platform": "Linux",
    "osVersion": "Ubuntu 22.04",
    "vmImportTaskId": "import-ami-0123456789abcdef0",
    "tags": {"Wave": "1"},
}


def _settings(url: str) -> ClientSettings:
    return ClientSettings(
        region="us-east-1", endpoint_url=url, access_key_id=KEY, secret_access_key=SECRET
    )


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _expected_signature(request: Any, signed_headers: set[str]) -> str:
    """What the service computes: SigV4 over the headers the request says it signed."""
    headers = {k: _text(v) for k, v in request.headers.items() if k.lower() in signed_headers}
    body = request.body if isinstance(request.body, bytes) else (request.body or b"")
    fresh = AWSRequest(method=request.method, url=request.url, headers=headers, data=body)
    fresh.context["timestamp"] = headers["X-Amz-Date"]
    signer = SigV4Auth(Credentials(KEY, SECRET), "imagebuilder", "us-east-1")
    canonical = signer.canonical_request(fresh)
    return signer.signature(signer.string_to_sign(fresh, canonical), fresh)


async def test_fast_path_requests_are_signed_correctly_and_accepted(
    emulator: EmulatorServer,
) -> None:
    sent: list[Any] = []
    signers: list[str] = []
    async with open_client(_settings(emulator.url)) as client:
        client._client.meta.events.register(
            "before-send.imagebuilder", lambda request, **_: sent.append(request)
        )
        client._client.meta.events.register(
            "before-sign.imagebuilder",
            lambda signature_version, **_: signers.append(signature_version),
        )
        for n in range(3):  # more than one call: nothing cached may go stale
            answer = await client.import_vm_image(
                {**PARAMS, "semanticVersion": f"1.2.{n}"}, client_token=f"fast-path-token-{n}"
            )
            assert answer.image_arn.endswith(f"/fast-path-vm/1.2.{n}/1")
            assert answer.client_token == f"fast-path-token-{n}"
    assert len(sent) == 3
    assert signers == [SIGNATURE_VERSION] * 3  # the reusing signer, not botocore's default
    for request in sent:
        authorization = _text(request.headers["Authorization"])
        assert f"Credential={KEY}/" in authorization
        assert "/us-east-1/imagebuilder/aws4_request" in authorization
        found = re.search(r"SignedHeaders=([a-z0-9;-]+), Signature=([0-9a-f]{64})", authorization)
        assert found is not None
        signed = set(found.group(1).split(";"))
        assert {"host", "x-amz-date"} <= signed
        assert found.group(2) == _expected_signature(request, signed)
        assert _text(request.headers["User-Agent"]).startswith(USER_AGENT)


async def test_fast_path_still_translates_service_errors(aws_credentials: None) -> None:
    with EmulatorServer(EmulatorConfig(rate=1, burst=1)) as server:
        async with open_client(_settings(server.url)) as client:
            await client.import_vm_image(PARAMS, client_token="errors-1")
            with pytest.raises(ApiError) as throttled:
                await client.import_vm_image(
                    {**PARAMS, "semanticVersion": "1.2.4"}, client_token="errors-2"
                )
    assert throttled.value.code == "CallRateLimitExceededException"
    assert throttled.value.status == 429


async def test_fast_path_lets_the_service_reject_bad_parameters(emulator: EmulatorServer) -> None:
    # parameter_validation is off: the manifest checks rows, the service has the last word.
    async with open_client(_settings(emulator.url)) as client:
        with pytest.raises(ApiError) as rejected:
            await client.import_vm_image(
                {**PARAMS, "semanticVersion": "not-a-version"}, client_token="bad-1"
            )
    assert rejected.value.status == 400
    assert rejected.value.code


async def test_botocore_never_retries_behind_our_back(aws_credentials: None) -> None:
    # Our limiter must see every attempt; botocore's retry handler is gone, not just capped.
    with EmulatorServer(EmulatorConfig(fault_rate=1.0, drop_share=0.0, seed=3)) as server:
        async with open_client(_settings(server.url)) as client:
            with pytest.raises(ApiError) as failed:
                await client.import_vm_image(PARAMS, client_token="no-hidden-retry")
        assert failed.value.status in (500, 503)
        assert server.stats()["requests"]["ImportVmImage"] == 1


async def test_endpoint_rules_run_once_per_operation(emulator: EmulatorServer) -> None:
    async with open_client(_settings(emulator.url)) as client:
        provider = client._client._ruleset_resolver._provider
        resolve = provider.resolve_endpoint
        resolved: list[dict[str, Any]] = []

        def counting(**params: Any) -> Any:
            resolved.append(params)
            return resolve(**params)

        provider.resolve_endpoint = counting
        for n in range(4):
            answer = await client.import_vm_image(
                {**PARAMS, "semanticVersion": f"2.0.{n}"}, client_token=f"endpoint-{n}"
            )
            assert answer.image_arn.endswith(f"/2.0.{n}/1")
        page = await client.list_builds(next_token=None)
        assert any(b.arn.endswith("/fast-path-vm/2.0.1/1") for b in page.builds)
    assert len(resolved) == 2, "once for ImportVmImage, once for ListImageBuildVersions"
    assert all(p.get("Endpoint") == emulator.url for p in resolved)


async def test_the_service_accepts_the_reusing_signers_signatures(
    aws_credentials: None,
) -> None:
    config = EmulatorConfig(verify_signatures=True, access_key_id=KEY, secret_access_key=SECRET)
    with EmulatorServer(config) as server:
        async with open_client(_settings(server.url)) as client:
            for n in range(3):
                answer = await client.import_vm_image(
                    {**PARAMS, "semanticVersion": f"3.0.{n}"}, client_token=f"verified-{n}"
                )
                assert answer.image_arn.endswith(f"/3.0.{n}/1")
            page = await client.list_builds(next_token=None)
            assert any(b.arn.endswith("/fast-path-vm/3.0.2/1") for b in page.builds)
        wrong = ClientSettings(
            region="us-east-1",
            endpoint_url=server.url,
            access_key_id=KEY,
            secret_access_key="not-the-secret",
        )
        async with open_client(wrong) as client:
            with pytest.raises(ApiError) as refused:
                await client.import_vm_image(PARAMS, client_token="verified-wrong")
    assert refused.value.code == "InvalidSignatureException"
