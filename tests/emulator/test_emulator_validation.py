"""ImportVmImage validation: every field's constraint, phrased and shaped as AWS does."""

from __future__ import annotations

import json
from typing import Any

import pytest
from botocore.exceptions import ClientError
from emulator_support import AUTHORIZATION, import_params, raw_request

from ibimport.domain.apimodel import (
    IMAGE_NAME_SHAPE,
    VERSION_NODE_MAX,
    import_vm_image_rules,
    service_model,
)
from ibimport.emulator import EmulatorServer

RULES = import_vm_image_rules()


def _error(client: Any, params: dict[str, Any]) -> ClientError:
    with pytest.raises(ClientError) as caught:
        client.import_vm_image(**params)
    return caught.value


@pytest.mark.parametrize(
    ("field", "value", "constraint"),
    [
        ("name", "", "Member must have length greater than or equal to 1"),
        ("name", "n" * 1025, "Member must have length less than or equal to 1024"),
        ("description", "d" * 1025, "Member must have length less than or equal to 1024"),
        ("semanticVersion", "1.0", "Member must satisfy regular expression pattern"),
        ("semanticVersion", "v1.0.0", "Member must satisfy regular expression pattern"),
        (
            "semanticVersion",
            f"1.{VERSION_NODE_MAX + 1}.0",
            f"less than or equal to {VERSION_NODE_MAX}",
        ),
        ("platform", "linux", "Member must satisfy enum value set: [Windows, Linux, macOS]"),
        ("osVersion", "", "Member must have length greater than or equal to 1"),
        ("vmImportTaskId", "", "Member must have length greater than or equal to 1"),
        ("clientToken", "", "Member must have length greater than or equal to 1"),
        ("clientToken", "t" * 65, "Member must have length less than or equal to 64"),
        ("tags", {f"k{i}": "v" for i in range(51)}, "less than or equal to 50"),
        ("tags", {"aws:owner": "me"}, "Map keys must satisfy constraint"),
        ("tags", {"k" * 129: "v"}, "Map keys must satisfy constraint"),
        ("tags", {"k": "v" * 257}, "Map value must satisfy constraint"),
        ("name", 42, "Member must be a string"),
    ],
)
def test_each_field_is_checked_with_the_service_constraint(
    client: Any, field: str, value: object, constraint: str
) -> None:
    error = _error(client, import_params(**{field: value}))
    response = error.response
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert response["Error"]["Code"] == "InvalidParameterValueException"
    assert response["ResponseMetadata"]["HTTPHeaders"]["x-amzn-errortype"] == (
        "InvalidParameterValueException"
    )
    message = response["Error"]["Message"]
    assert message.startswith("1 validation error detected: Value ")
    assert f"at '{field}' failed to satisfy constraint: " in message
    assert constraint in message


def test_log_group_name_is_checked_at_its_nested_path(client: Any) -> None:
    params = import_params(loggingConfiguration={"logGroupName": "bad name!"})
    message = _error(client, params).response["Error"]["Message"]
    assert "at 'loggingConfiguration.logGroupName'" in message
    assert "regular expression pattern" in message


# botocore fills in a missing clientToken itself (idempotencyToken), so that one goes raw.
@pytest.mark.parametrize("field", sorted(RULES.required - {"clientToken"}))
def test_a_missing_required_member_is_named(client: Any, field: str) -> None:
    params = import_params()
    del params[field]
    message = _error(client, params).response["Error"]["Message"]
    assert message == (
        f"1 validation error detected: Value null at '{field}' failed to satisfy constraint: "
        "Member must not be null"
    )


def test_a_missing_client_token_is_named_over_raw_http(server: EmulatorServer) -> None:
    params = import_params()
    del params["clientToken"]
    status, headers, body = raw_request(
        server.url,
        "PUT",
        "/ImportVmImage",
        body=json.dumps(params).encode(),
        headers={"Authorization": AUTHORIZATION, "Content-Type": "application/json"},
    )
    assert status == 400
    assert headers["x-amzn-ErrorType"] == "InvalidParameterValueException"
    assert "Value null at 'clientToken' failed to satisfy constraint" in body["message"]


def test_a_body_that_is_not_json_is_a_serialization_error(server: EmulatorServer) -> None:
    status, headers, body = raw_request(
        server.url,
        "PUT",
        "/ImportVmImage",
        body=b"{not json",
        headers={"Authorization": AUTHORIZATION},
    )
    assert (status, headers["x-amzn-ErrorType"]) == (400, "SerializationException")
    assert body["message"]


def test_all_violations_are_reported_at_once(client: Any) -> None:
    params = import_params(name="", semanticVersion="1", platform="BeOS")
    message = _error(client, params).response["Error"]["Message"]
    assert message.startswith("3 validation errors detected: ")
    assert message.count("; Value ") == 2


def test_limits_that_are_exactly_met_are_accepted(client: Any, server: EmulatorServer) -> None:
    client.import_vm_image(
        **import_params(
            name="n" * 128,  # an image's name is a ResourceName: at most 128
            semanticVersion=f"{VERSION_NODE_MAX}.0.{VERSION_NODE_MAX}",
            clientToken="t" * 64,
            tags={f"k{i}": "v" * 256 for i in range(50)},
            loggingConfiguration={"logGroupName": "/aws/imagebuilder/web"},
        )
    )
    assert server.stats()["images"] == 1


def test_a_rejected_request_creates_nothing(client: Any, server: EmulatorServer) -> None:
    _error(client, import_params(platform="Plan9"))
    stats = server.stats()
    assert stats["images"] == 0
    assert stats["requests"]["ImportVmImage"] == 1
    assert stats["errors"] == {"InvalidParameterValueException": 1}


@pytest.mark.parametrize(
    "name",
    ["web01.corp.example.com", "db/02", "ab", " leading-space", "trailing-space ", "n" * 129],
)
def test_a_name_no_image_may_have_is_refused(
    client: Any, server: EmulatorServer, name: str
) -> None:
    # The image's name is a ResourceName (current model), stricter than the request's rule.
    response = _error(client, import_params(name=name)).response
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert response["Error"]["Code"] == "InvalidParameterValueException"
    assert response["Error"]["Message"] == (
        f"1 validation error detected: Value '{name}' at 'name' failed to satisfy constraint: "
        "Member must satisfy regular expression pattern: "
        + service_model()["shapes"][IMAGE_NAME_SHAPE]["pattern"]
    )
    assert server.stats()["images"] == 0


@pytest.mark.parametrize("name", ["Web 01", "web_01", "WEB-01", "a b", "x" * 128])
def test_names_within_the_rule_are_accepted(client: Any, name: str) -> None:
    assert client.import_vm_image(**import_params(name=name))["imageArn"]


def test_a_log_group_outside_the_image_builder_namespace_is_refused(
    client: Any, server: EmulatorServer
) -> None:
    params = import_params(loggingConfiguration={"logGroupName": "/var/log/imports"})
    response = _error(client, params).response
    assert response["Error"]["Code"] == "InvalidParameterValueException"
    assert response["Error"]["Message"] == (
        "1 validation error detected: Value '/var/log/imports' at "
        "'loggingConfiguration.logGroupName' failed to satisfy constraint: "
        "Member must be within the /aws/imagebuilder/ namespace"
    )
    assert server.stats()["images"] == 0
    params = import_params(loggingConfiguration={"logGroupName": "/aws/imagebuilder/wave-3"})
    assert client.import_vm_image(**params)["imageArn"]
