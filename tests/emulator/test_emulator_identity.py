"""One image per identity: names equal once normalised are builds of one image.

The current model (ImportVmImage ``name``): "Image Builder generates the image ARN from a
normalized form of the name, so names that differ only in case, spaces, or underscores
count as the same name." Each build keeps the name as it was written.
"""

from __future__ import annotations

from typing import Any

from emulator_support import import_params

from ibimport.domain.apimodel import image_identity
from ibimport.emulator import EmulatorServer

IMAGE = "arn:aws:imagebuilder:us-east-1:123456789012:image/web-01"


def test_names_equal_once_normalised_are_builds_of_one_image(
    client: Any, server: EmulatorServer
) -> None:
    written = ["Web 01", "WEB-01", "web_01"]
    arns = [
        client.import_vm_image(**import_params(n, name=name))["imageArn"]
        for n, name in enumerate(written)
    ]
    assert arns == [f"{IMAGE}/1.0.0/{build}" for build in (1, 2, 3)]
    assert {image_identity(name, "1.0.0").name for name in written} == {"web-01"}
    assert server.stats()["duplicateBuilds"] == 2
    assert [client.get_image(imageBuildVersionArn=a)["image"]["name"] for a in arns] == written
    builds = client.list_image_build_versions(imageVersionArn=f"{IMAGE}/1.0.0")
    assert [s["name"] for s in builds["imageSummaryList"]] == written
    versions = client.list_images()["imageVersionList"]
    assert [v["arn"] for v in versions] == [f"{IMAGE}/1.0.0"]


def test_build_numbers_are_counted_per_identity(client: Any, server: EmulatorServer) -> None:
    first = client.import_vm_image(**import_params(1, name="Web 01"))["imageArn"]
    other_version = client.import_vm_image(
        **import_params(2, name="web_01", semanticVersion="2.0.0")
    )["imageArn"]
    other_name = client.import_vm_image(**import_params(3, name="Web 02"))["imageArn"]
    assert (first, other_version, other_name) == (
        f"{IMAGE}/1.0.0/1",
        f"{IMAGE}/2.0.0/1",
        "arn:aws:imagebuilder:us-east-1:123456789012:image/web-02/1.0.0/1",
    )
    assert server.stats()["duplicateBuilds"] == 0


def test_a_replayed_token_is_not_a_second_build_of_the_identity(
    client: Any, server: EmulatorServer
) -> None:
    params = import_params(name="Web_01")
    assert client.import_vm_image(**params)["imageArn"] == f"{IMAGE}/1.0.0/1"
    assert client.import_vm_image(**params)["imageArn"] == f"{IMAGE}/1.0.0/1"
    stats = server.stats()
    assert (stats["images"], stats["duplicateBuilds"], stats["idempotentReplays"]) == (1, 0, 1)
