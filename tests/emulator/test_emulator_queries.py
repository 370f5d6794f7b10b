"""GetImage, ListImages and ListImageBuildVersions over imported images."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError
from emulator_support import RAW, FakeClock, import_params

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


@pytest.mark.parametrize("operation", ["list_images", "list_image_build_versions"])
@pytest.mark.parametrize(
    ("size", "constraint"),
    [
        (101, "Member must have value less than or equal to 100"),
        (0, "Member must have value greater than or equal to 1"),
    ],
)
def test_a_page_size_outside_1_to_100_is_refused(
    client: Any, operation: str, size: int, constraint: str
) -> None:
    with pytest.raises(ClientError) as caught:
        getattr(client, operation)(maxResults=size)
    error = caught.value.response
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert error["Error"]["Code"] == "InvalidParameterValueException"
    assert error["Error"]["Message"] == (
        f"1 validation error detected: Value '{size}' at 'maxResults' failed to satisfy "
        f"constraint: {constraint}"
    )


def test_list_images_rejects_a_bad_token(client: Any) -> None:
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


def test_list_image_build_versions_of_an_unknown_version_is_empty(client: Any) -> None:
    # Current model: "an empty list rather than a ResourceNotFoundException error".
    client.import_vm_image(**import_params())
    page = client.list_image_build_versions(
        imageVersionArn="arn:aws:imagebuilder:us-east-1:123456789012:image/nope/1.0.0"
    )
    assert page["imageSummaryList"] == []
    assert "nextToken" not in page


def test_list_pages_go_up_to_100(client: Any) -> None:
    for n in range(130):
        client.import_vm_image(**import_params(n))
    first = client.list_images(maxResults=100)
    assert len(first["imageVersionList"]) == 100
    rest = client.list_images(maxResults=100, nextToken=first["nextToken"])
    assert (len(rest["imageVersionList"]), "nextToken" in rest) == (30, False)
    builds = client.list_image_build_versions(maxResults=100)
    assert len(builds["imageSummaryList"]) == 100
    assert len(client.list_image_build_versions()["imageSummaryList"]) == 25  # the default


def test_list_image_build_versions_without_an_arn_lists_every_build(
    make_client: Callable[..., Any],
    start_emulator: Callable[..., EmulatorServer],
    clock: FakeClock,
) -> None:
    # Current model: "If you don't specify it, Image Builder returns build versions for
    # all of the images in your account" -- each with its state.
    client = make_client(start_emulator(available_after_s=100).url, config=RAW)
    for n in range(3):
        client.import_vm_image(**import_params(n))
    clock.advance(100)
    client.import_vm_image(**import_params(0, clientToken="second-build"))
    other = make_client(client.meta.endpoint_url, config=RAW, access_key="210987654321")
    other.import_vm_image(**import_params(9))  # another account's build is not listed
    pages = list(client.get_paginator("list_image_build_versions").paginate(
        PaginationConfig={"PageSize": 2}
    ))  # fmt: skip
    summaries = [s for page in pages for s in page["imageSummaryList"]]
    assert [len(page["imageSummaryList"]) for page in pages] == [2, 2]
    assert [(s["name"], s["version"], s["state"]["status"]) for s in summaries] == [
        ("web-server-0", "1.0.0/1", "AVAILABLE"),
        ("web-server-1", "1.0.0/1", "AVAILABLE"),
        ("web-server-2", "1.0.0/1", "AVAILABLE"),
        ("web-server-0", "1.0.0/2", "PENDING"),
    ]
    assert all(s["owner"] == "123456789012" for s in summaries)


def test_list_image_build_versions_filters_before_paging(client: Any) -> None:
    for n in range(12):
        platform = "Windows" if n % 3 == 0 else "Linux"
        client.import_vm_image(**import_params(clientToken=f"b-{n}", platform=platform))
    version_arn = "arn:aws:imagebuilder:us-east-1:123456789012:image/web-server-1/1.0.0"
    windows = [{"name": "platform", "values": ["Windows"]}]
    for arn in ({"imageVersionArn": version_arn}, {}):
        first = client.list_image_build_versions(**arn, filters=windows, maxResults=2)
        # Paged after filtering, a page is full: two Windows builds, not the Windows ones
        # among the first two builds.
        assert [s["version"] for s in first["imageSummaryList"]] == ["1.0.0/1", "1.0.0/4"]
        rest = client.list_image_build_versions(
            **arn, filters=windows, maxResults=2, nextToken=first["nextToken"]
        )
        assert [s["version"] for s in rest["imageSummaryList"]] == ["1.0.0/7", "1.0.0/10"]
        assert "nextToken" not in rest
    by_version = client.list_image_build_versions(
        filters=[{"name": "version", "values": ["1.0.0"]}, {"name": "type", "values": ["AMI"]}]
    )
    assert len(by_version["imageSummaryList"]) == 12


WEB = "arn:aws:imagebuilder:us-east-1:123456789012:image/web-01"


def test_get_image_resolves_a_version_or_wildcard_arn_to_the_latest_build(client: Any) -> None:
    for n, version in enumerate(["1.0.0", "1.2.0", "1.10.0", "1.2.3", "2.0.0", "1.0.0"]):
        client.import_vm_image(**import_params(n, name="Web 01", semanticVersion=version))
    client.import_vm_image(**import_params(9, name="web-02", semanticVersion="9.0.0"))

    def resolved(version: str) -> str:
        image = client.get_image(imageBuildVersionArn=f"{WEB}/{version}")["image"]
        assert image["name"] == "Web 01"
        return str(image["arn"]).removeprefix(WEB + "/")

    assert resolved("x.x.x") == "2.0.0/1"
    assert resolved("1.x.x") == "1.10.0/1"  # nodes compare as numbers, not text
    assert resolved("1.2.x") == "1.2.3/1"
    assert resolved("x.x.0") == "2.0.0/1"
    assert resolved("1.0.0") == "1.0.0/2"
    for missing in ("3.x.x", "1.3.x", "1.0.1"):
        with pytest.raises(ClientError) as caught:
            client.get_image(imageBuildVersionArn=f"{WEB}/{missing}")
        assert caught.value.response["Error"]["Code"] == "ResourceNotFoundException"


def test_a_version_arn_resolves_only_to_an_available_build(
    make_client: Callable[..., Any],
    start_emulator: Callable[..., EmulatorServer],
    clock: FakeClock,
) -> None:
    # Current model: "resolves to the latest matching build version that has reached
    # AVAILABLE status ... To get an image in any other state, specify the full build
    # version ARN."
    client = make_client(start_emulator(available_after_s=100).url, config=RAW)
    first = client.import_vm_image(**import_params(1, name="web-01"))["imageArn"]
    with pytest.raises(ClientError) as caught:
        client.get_image(imageBuildVersionArn=f"{WEB}/1.0.0")
    assert caught.value.response["Error"]["Code"] == "ResourceNotFoundException"
    assert client.get_image(imageBuildVersionArn=first)["image"]["state"]["status"] == "PENDING"
    clock.advance(100)
    second = client.import_vm_image(**import_params(2, name="web-01"))["imageArn"]
    for arn in (f"{WEB}/1.0.0", f"{WEB}/x.x.x"):
        assert client.get_image(imageBuildVersionArn=arn)["image"]["arn"] == first
    clock.advance(100)
    assert client.get_image(imageBuildVersionArn=f"{WEB}/1.x.x")["image"]["arn"] == second
