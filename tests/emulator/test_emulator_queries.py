"""GetImage, ListImages and ListImageBuildVersions over imported images."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError
from emulator_support import FakeClock, import_params

from ibimport.emulator import EmulatorServer


def test_get_image_describes_an_imported_build(client: Any) -> None:
    arn = client.import_vm_image(**import_params(osVersion="Windows Server 2022"))["imageArn"]
    image = client.get_image(imageBuildVersionArn=arn)["image"]
    assert image["arn"] == arn
    assert image["name"] == "web-server-1"
    assert image["version"] == "1.0.0/1"
    assert image["platform"] == "Linux"
    assert image["osVersion"] == "Windows Server 2022"
    assert image["tags"] == {"wave": "1"}
    assert (image["buildType"], image["imageSource"], image["type"]) == (
        "IMPORT",
        "IMPORTED",
        "AMI",
    )
    assert image["state"]["status"] == "AVAILABLE"
    assert image["dateCreated"].endswith("Z")


def test_image_state_moves_from_pending_to_available(
    make_client: Callable[..., Any],
    start_emulator: Callable[..., EmulatorServer],
    clock: FakeClock,
) -> None:
    client = make_client(start_emulator(available_after_s=100).url)
    arn = client.import_vm_image(**import_params())["imageArn"]
    seen = []
    for step in (0, 30, 69, 2):
        clock.advance(step)
        seen.append(client.get_image(imageBuildVersionArn=arn)["image"]["state"]["status"])
    assert seen == ["PENDING", "CREATING", "CREATING", "AVAILABLE"]


def test_an_unknown_arn_is_not_found(client: Any) -> None:
    with pytest.raises(ClientError) as caught:
        client.get_image(
            imageBuildVersionArn="arn:aws:imagebuilder:us-east-1:123456789012:image/nope/1.0.0/1"
        )
    error = caught.value.response
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 404
    assert error["Error"]["Code"] == "ResourceNotFoundException"


def test_list_images_pages_by_25_with_one_entry_per_version(client: Any) -> None:
    for n in range(60):
        client.import_vm_image(**import_params(n))
    client.import_vm_image(**import_params(0, clientToken="second-build"))
    first = client.list_images()
    assert len(first["imageVersionList"]) == 25
    assert "nextToken" in first
    pages = list(client.get_paginator("list_images").paginate())
    names = [v["name"] for page in pages for v in page["imageVersionList"]]
    assert [len(page["imageVersionList"]) for page in pages] == [25, 25, 10]
    assert sorted(names) == sorted(f"web-server-{n}" for n in range(60))
    assert "nextToken" not in pages[-1]
    entry = pages[0]["imageVersionList"][0]
    assert entry["arn"].endswith("/1.0.0")
    assert entry["owner"] == "123456789012"


def test_list_images_honours_max_results_and_filters(client: Any) -> None:
    for n in range(7):
        platform = "Windows" if n % 2 else "Linux"
        client.import_vm_image(**import_params(n, platform=platform))
    client.import_vm_image(**import_params(9, semanticVersion="2.0.0"))
    page = client.list_images(maxResults=3)
    assert len(page["imageVersionList"]) == 3
    windows = client.list_images(filters=[{"name": "platform", "values": ["Windows"]}])
    assert sorted(v["name"] for v in windows["imageVersionList"]) == [
        "web-server-1",
        "web-server-3",
        "web-server-5",
    ]
    by_name = client.list_images(
        filters=[
            {"name": "name", "values": ["web-server-9"]},
            {"name": "version", "values": ["2.0.0"]},
        ]
    )
    assert [v["version"] for v in by_name["imageVersionList"]] == ["2.0.0"]


def test_list_images_rejects_a_bad_page_size_and_token(client: Any) -> None:
    with pytest.raises(ClientError) as caught:
        client.list_images(maxResults=26)
    assert "at 'maxResults'" in caught.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as caught:
        client.list_images(nextToken="garbage")
    assert caught.value.response["Error"]["Code"] == "InvalidPaginationTokenException"


def test_list_image_build_versions_lists_every_build(client: Any) -> None:
    for n in range(30):
        client.import_vm_image(**import_params(clientToken=f"build-{n}"))
    version_arn = "arn:aws:imagebuilder:us-east-1:123456789012:image/web-server-1/1.0.0"
    pages = list(
        client.get_paginator("list_image_build_versions").paginate(imageVersionArn=version_arn)
    )
    summaries = [s for page in pages for s in page["imageSummaryList"]]
    assert [len(page["imageSummaryList"]) for page in pages] == [25, 5]
    assert [s["version"] for s in summaries] == [f"1.0.0/{n}" for n in range(1, 31)]
    assert summaries[0]["state"]["status"] == "AVAILABLE"
    assert summaries[0]["owner"] == "123456789012"


def test_list_image_build_versions_of_an_unknown_version_is_not_found(client: Any) -> None:
    with pytest.raises(ClientError) as caught:
        client.list_image_build_versions(
            imageVersionArn="arn:aws:imagebuilder:us-east-1:123456789012:image/nope/1.0.0"
        )
    assert caught.value.response["Error"]["Code"] == "ResourceNotFoundException"
