"""clientToken idempotency and build numbering, as Image Builder documents them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError
from emulator_support import FakeClock, import_params

from ibimport.emulator import EmulatorServer

ARN = "arn:aws:imagebuilder:us-east-1:123456789012:image/web-server-1/1.0.0"


def test_the_answer_names_the_build_and_echoes_the_token(client: Any) -> None:
    answer = client.import_vm_image(**import_params(name="Web-Server-1"))
    assert answer["imageArn"] == f"{ARN}/1"
    assert answer["clientToken"] == "token-1"
    assert answer["requestId"]
    assert answer["ResponseMetadata"]["RequestId"] == answer["requestId"]


def test_same_token_same_parameters_replays_the_original(
    client: Any, server: EmulatorServer
) -> None:
    first = client.import_vm_image(**import_params())
    again = client.import_vm_image(**import_params())
    assert again["imageArn"] == first["imageArn"]
    assert again["clientToken"] == first["clientToken"]
    stats = server.stats()
    assert (stats["images"], stats["idempotentReplays"], stats["duplicateBuilds"]) == (1, 1, 0)


def test_same_token_different_parameters_is_a_mismatch(client: Any, server: EmulatorServer) -> None:
    client.import_vm_image(**import_params())
    with pytest.raises(ClientError) as caught:
        client.import_vm_image(**import_params(tags={"wave": "2"}))
    error = caught.value.response
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert error["Error"]["Code"] == "IdempotentParameterMismatchException"
    assert server.stats()["images"] == 1


def test_a_new_token_for_the_same_image_creates_the_next_build(
    client: Any, server: EmulatorServer
) -> None:
    arns = [
        client.import_vm_image(**import_params(clientToken=f"token-{n}"))["imageArn"]
        for n in range(3)
    ]
    assert arns == [f"{ARN}/1", f"{ARN}/2", f"{ARN}/3"]
    stats = server.stats()
    assert (stats["images"], stats["duplicateBuilds"]) == (3, 2)


def test_a_token_is_forgotten_after_its_ttl(
    make_client: Callable[..., Any],
    start_emulator: Callable[..., EmulatorServer],
    clock: FakeClock,
) -> None:
    server = start_emulator(token_ttl_s=600)
    client = make_client(server.url)
    client.import_vm_image(**import_params())
    clock.advance(599)
    assert client.import_vm_image(**import_params())["imageArn"] == f"{ARN}/1"
    clock.advance(2)
    assert client.import_vm_image(**import_params())["imageArn"] == f"{ARN}/2"
    assert server.stats()["duplicateBuilds"] == 1


def test_state_is_separate_per_account_and_region(
    make_client: Callable[..., Any], server: EmulatorServer
) -> None:
    default = make_client(server.url)
    other_account = make_client(server.url, access_key="210987654321")
    default.import_vm_image(**import_params())
    answer = other_account.import_vm_image(**import_params())
    assert answer["imageArn"] == ARN.replace("123456789012", "210987654321") + "/1"
    assert server.stats()["idempotentReplays"] == 0
    with pytest.raises(ClientError) as caught:
        other_account.get_image(imageBuildVersionArn=f"{ARN}/1")
    assert caught.value.response["Error"]["Code"] == "ResourceNotFoundException"


def test_the_signing_region_scopes_the_image(boto_session: Any, server: EmulatorServer) -> None:
    client = boto_session.client("imagebuilder", endpoint_url=server.url, region_name="eu-west-1")
    answer = client.import_vm_image(**import_params())
    assert answer["imageArn"].startswith("arn:aws:imagebuilder:eu-west-1:123456789012:image/")
