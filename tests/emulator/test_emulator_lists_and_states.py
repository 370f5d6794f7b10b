"""Issue 21 gaps 4 and 5 with real boto3 clients: lists as unkind as the model allows
(short pages, new builds listed late) and the image states of the current model."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError
from emulator_support import RAW, FakeClock, import_params, raw_answers

from ibimport.emulator import EmulatorServer

Start = Callable[..., EmulatorServer]
ARN = "arn:aws:imagebuilder:us-east-1:123456789012:image/web-server-{n}/1.0.0"


def _all_builds(client: Any, **kwargs: Any) -> tuple[list[str], list[int]]:
    arns: list[str] = []
    sizes: list[int] = []
    for page in client.get_paginator("list_image_build_versions").paginate(
        PaginationConfig={"PageSize": 10}, **kwargs
    ):
        sizes.append(len(page["imageSummaryList"]))
        arns += [summary["arn"] for summary in page["imageSummaryList"]]
    return arns, sizes


def test_short_pages_still_list_every_build_once(
    start_emulator: Start, make_client: Callable[..., Any]
) -> None:
    server = start_emulator(short_pages=0.8, seed=5)
    client = make_client(server.url, config=RAW)
    for n in range(1, 36):
        client.import_vm_image(**import_params(n))
    arns, sizes = _all_builds(client)
    assert sorted(arns) == sorted(f"{ARN.format(n=n)}/1" for n in range(1, 36))
    assert any(0 < size < 10 for size in sizes[:-1])  # a short page that was not the last
    assert server.stats()["shortPages"] > 0
    versions = [
        v["arn"]
        for p in client.get_paginator("list_images").paginate()
        for v in p["imageVersionList"]
    ]
    assert len(versions) == len(set(versions)) == 35


def test_a_new_build_is_listed_only_after_the_list_delay(
    start_emulator: Start, make_client: Callable[..., Any], clock: FakeClock
) -> None:
    server = start_emulator(list_delay_s=120.0)
    client = make_client(server.url)
    arn = client.import_vm_image(**import_params())["imageArn"]
    assert client.list_image_build_versions()["imageSummaryList"] == []
    assert client.list_images()["imageVersionList"] == []
    assert client.get_image(imageBuildVersionArn=arn)["image"]["arn"] == arn  # found at once
    clock.advance(120.0)
    [listed] = client.list_image_build_versions()["imageSummaryList"]
    assert listed["arn"] == arn


def test_cancel_image_creation_ends_a_build_and_is_idempotent(
    start_emulator: Start, make_client: Callable[..., Any], clock: FakeClock
) -> None:
    server = start_emulator(available_after_s=10.0)
    client = make_client(server.url)
    arn = client.import_vm_image(**import_params())["imageArn"]
    answer = client.cancel_image_creation(imageBuildVersionArn=arn, clientToken="c1")
    assert (answer["imageBuildVersionArn"], answer["clientToken"]) == (arn, "c1")
    assert client.cancel_image_creation(imageBuildVersionArn=arn, clientToken="c1")
    clock.advance(60.0)
    state = client.get_image(imageBuildVersionArn=arn)["image"]["state"]
    assert state["status"] == "CANCELLED"
    other = client.import_vm_image(**import_params(2))["imageArn"]
    with pytest.raises(ClientError) as caught:
        client.cancel_image_creation(imageBuildVersionArn=other, clientToken="c1")
    assert caught.value.response["Error"]["Code"] == "IdempotentParameterMismatchException"
    clock.advance(60.0)  # the other one is AVAILABLE now: a final state cannot be cancelled
    with pytest.raises(ClientError) as caught:
        client.cancel_image_creation(imageBuildVersionArn=other, clientToken="c2")
    assert caught.value.response["Error"]["Code"] == "InvalidRequestException"
    with pytest.raises(ClientError) as caught:
        client.cancel_image_creation(imageBuildVersionArn=f"{ARN.format(n=9)}/1", clientToken="c3")
    assert caught.value.response["Error"]["Code"] == "ResourceNotFoundException"


def test_get_image_has_latest_version_references(
    start_emulator: Start, make_client: Callable[..., Any]
) -> None:
    client = make_client(start_emulator().url)
    raw = raw_answers(client)
    arn = client.import_vm_image(**import_params(semanticVersion="2.5.1"))["imageArn"]
    client.get_image(imageBuildVersionArn=arn)
    image = "arn:aws:imagebuilder:us-east-1:123456789012:image/web-server-1"
    assert raw[-1]["latestVersionReferences"] == {
        "latestVersionArn": f"{image}/x.x.x",
        "latestMajorVersionArn": f"{image}/2.x.x",
        "latestMinorVersionArn": f"{image}/2.5.x",
        "latestPatchVersionArn": f"{image}/2.5.1",
    }


def test_list_images_by_name_aggregates_versions_and_refuses_a_version_filter(
    start_emulator: Start, make_client: Callable[..., Any]
) -> None:
    client = make_client(start_emulator().url, config=RAW)
    for n, version in ((1, "1.0.0"), (1, "1.2.0"), (2, "1.0.0")):
        client.import_vm_image(
            **import_params(n, semanticVersion=version, clientToken=f"t-{n}-{version}")
        )
    assert len(client.list_images()["imageVersionList"]) == 3
    by_name = client.list_images(byName=True)["imageVersionList"]
    assert [(v["arn"].rsplit("/", 2)[-2:], v["version"]) for v in by_name] == [
        (["web-server-1", "x.x.x"], "1.2.0"),
        (["web-server-2", "x.x.x"], "1.0.0"),
    ]
    with pytest.raises(ClientError) as caught:
        client.list_images(byName=True, filters=[{"name": "version", "values": ["1.0.0"]}])
    assert caught.value.response["Error"]["Code"] == "InvalidRequestException"
