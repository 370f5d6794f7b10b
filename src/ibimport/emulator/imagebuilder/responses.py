"""Image Builder's REST-JSON wire format: parse requests, serialise answers and errors.

Each operation handler turns one HTTP request (already authenticated and metered by
``server``) into JSON bytes, delegating every decision to ``models``. Errors travel as
``exceptions.ServiceError`` and are rendered once, by ``rest.render_error``, in the shape
botocore parses: HTTP status, ``x-amzn-ErrorType`` header and a JSON ``message``.
Adding an operation is a handler here, its route in ``OPERATIONS`` and its behaviour in
``models``; ``IMAGEBUILDER`` is what the server's table of services knows of it.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from ibimport.domain.apimodel import LIST_PAGE_DEFAULT, LIST_PAGE_MAX, service_model
from ibimport.emulator.exceptions import (
    InvalidPaginationTokenException,
    InvalidParameterValueException,
    InvalidRequestException,
    SerializationException,
)
from ibimport.emulator.imagebuilder.builds import ImageBuild, format_date
from ibimport.emulator.imagebuilder.models import ImageBuilderBackend
from ibimport.emulator.imagebuilder.validation import (
    check_version_arn,
    parse_filters,
    validate_import_request,
    violation,
)
from ibimport.emulator.rest import Call, Handler, RestService

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_loads = json.loads
_GET_IMAGE_ARN = re.compile(
    service_model()["shapes"]["ImageVersionArnOrBuildVersionArn"]["pattern"]
)
_OWNERS = tuple(service_model()["shapes"]["Ownership"]["enum"])
_BUILD_ARN = re.compile(service_model()["shapes"]["ImageBuildVersionArn"]["pattern"])
# ClientToken: 1-36 characters (model).
_TOKEN_MAX = 36


def _json_body(call: Call) -> dict[str, Any]:
    if not call.body:
        return {}
    try:
        body = _loads(call.body)
    except ValueError:
        raise SerializationException("The request body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise SerializationException("Start of structure or map found where not expected.")
    return body


def import_vm_image(backend: ImageBuilderBackend, call: Call) -> bytes:
    """PUT /ImportVmImage."""
    params = validate_import_request(_json_body(call))
    outcome = backend.import_vm_image(call.scope, params)
    return _dumps(
        {
            "requestId": call.request_id,
            "imageArn": outcome.image_arn,
            "clientToken": outcome.client_token,
        }
    ).encode()


def get_image(backend: ImageBuilderBackend, call: Call) -> bytes:
    """GET /GetImage?imageBuildVersionArn=..."""
    arn = call.query.get("imageBuildVersionArn")
    if arn is None:
        raise InvalidParameterValueException.of(
            [violation("imageBuildVersionArn", None, constraint="Member must not be null")]
        )
    if _GET_IMAGE_ARN.match(arn) is None:
        pattern = f"Member must satisfy regular expression pattern: {_GET_IMAGE_ARN.pattern}"
        raise InvalidParameterValueException.of(
            [violation("imageBuildVersionArn", arn, constraint=pattern)]
        )
    build = backend.get_image(call.scope, arn)
    image = _describe(backend, build, call.scope.region)
    del image["owner"]  # Image, unlike ImageSummary, has no owner member
    image["enhancedImageMetadataEnabled"] = False
    return _dumps(
        {
            "requestId": call.request_id,
            "image": image,
            "latestVersionReferences": _latest_version_references(build.version_arn),
        }
    ).encode()


def _latest_version_references(version_arn: str) -> dict[str, str]:
    """The current model's wildcard ARNs "for the latest version overall, and for the
    latest versions within the same major, minor, and patch levels" of this image."""
    image_arn, _, version = version_arn.rpartition("/")
    major, minor, patch = version.split(".")
    return {
        "latestVersionArn": f"{image_arn}/x.x.x",
        "latestMajorVersionArn": f"{image_arn}/{major}.x.x",
        "latestMinorVersionArn": f"{image_arn}/{major}.{minor}.x",
        "latestPatchVersionArn": f"{image_arn}/{major}.{minor}.{patch}",
    }


def cancel_image_creation(backend: ImageBuilderBackend, call: Call) -> bytes:
    """PUT /CancelImageCreation: the build stops and becomes CANCELLED."""
    body = _json_body(call)
    arn = body.get("imageBuildVersionArn")
    token = body.get("clientToken")
    problems = []
    if not isinstance(arn, str) or _BUILD_ARN.match(arn) is None:
        pattern = f"Member must satisfy regular expression pattern: {_BUILD_ARN.pattern}"
        problems.append(violation("imageBuildVersionArn", arn, constraint=pattern))
    if not isinstance(token, str) or not 1 <= len(token) <= _TOKEN_MAX:
        length = f"Member must have length between 1 and {_TOKEN_MAX}"
        problems.append(violation("clientToken", token, constraint=length))
    if problems or not isinstance(arn, str) or not isinstance(token, str):
        raise InvalidParameterValueException.of(problems)
    backend.cancel_image_creation(call.scope, arn, client_token=token)
    answer = {"requestId": call.request_id, "clientToken": token, "imageBuildVersionArn": arn}
    return _dumps(answer).encode()


def list_images(backend: ImageBuilderBackend, call: Call) -> bytes:
    """POST /ListImages: one entry per image version."""
    body = _json_body(call)
    owner = body.get("owner", "Self")
    if owner not in _OWNERS:
        enum = f"Member must satisfy enum value set: [{', '.join(_OWNERS)}]"
        raise InvalidParameterValueException.of([violation("owner", owner, constraint=enum)])
    filters = parse_filters(body.get("filters"))
    by_name = body.get("byName", False)
    if not isinstance(by_name, bool):
        raise SerializationException("byName must be a boolean.")
    if by_name and "version" in filters:
        # The current model: "You can't combine this option with the version filter."
        raise InvalidRequestException("You can't combine byName with the version filter.")
    max_results = _max_results(body.get("maxResults"))
    next_token = _next_token(body.get("nextToken"))
    if owner != "Self":
        versions: list[tuple[str, list[ImageBuild]]] = []
        token = None
    else:
        versions, token = backend.list_images(
            call.scope,
            filters=filters,
            max_results=max_results,
            next_token=next_token,
            by_name=by_name,
        )
    items = [
        {
            "arn": arn,
            "name": builds[0].name,
            "type": "AMI",
            "version": builds[0].version,
            "platform": builds[0].platform,
            **({"osVersion": builds[0].os_version} if builds[0].os_version else {}),
            "owner": builds[0].owner,
            "dateCreated": format_date(builds[0].created),
            "buildType": "IMPORT",
            "imageSource": "IMPORTED",
        }
        for arn, builds in versions
    ]
    answer: dict[str, Any] = {"requestId": call.request_id, "imageVersionList": items}
    if token is not None:
        answer["nextToken"] = token
    return _dumps(answer).encode()


def list_image_build_versions(backend: ImageBuilderBackend, call: Call) -> bytes:
    """POST /ListImageBuildVersions: the builds of one image version, or (current model:
    ``imageVersionArn`` is optional) every build in the account and region."""
    body = _json_body(call)
    version_arn = body.get("imageVersionArn")
    if version_arn is not None:
        check_version_arn(version_arn, "imageVersionArn")
    builds, token = backend.list_image_build_versions(
        call.scope,
        version_arn,
        filters=parse_filters(body.get("filters")),
        max_results=_max_results(body.get("maxResults")),
        next_token=_next_token(body.get("nextToken")),
    )
    summaries = [_describe(backend, build, call.scope.region) for build in builds]
    answer: dict[str, Any] = {"requestId": call.request_id, "imageSummaryList": summaries}
    if token is not None:
        answer["nextToken"] = token
    return _dumps(answer).encode()


def _max_results(value: object) -> int:
    """RestrictedInteger: 1 to 100 in the current model (25 in the pinned one), default 25."""
    if value is None:
        return LIST_PAGE_DEFAULT
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidParameterValueException.of(
            [violation("maxResults", value, constraint="Member must be an integer")]
        )
    if value < 1:
        constraint = "Member must have value greater than or equal to 1"
    elif value > LIST_PAGE_MAX:
        constraint = f"Member must have value less than or equal to {LIST_PAGE_MAX}"
    else:
        return value
    raise InvalidParameterValueException.of([violation("maxResults", value, constraint=constraint)])


def _next_token(value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise InvalidPaginationTokenException()


def _describe(backend: ImageBuilderBackend, build: ImageBuild, region: str) -> dict[str, Any]:
    """The Image / ImageSummary members an imported build has."""
    now = backend.state_of(build)
    status = now.status
    state: dict[str, Any] = {"status": status}
    if now.reason is not None:
        state["reason"] = now.reason
    if now.failure_context is not None:
        state["failureContext"] = now.failure_context
    image: dict[str, Any] = {
        "arn": build.arn,
        "type": "AMI",
        "name": build.name,
        "version": f"{build.version}/{build.build}",
        "platform": build.platform,
        "state": state,
        "owner": build.owner,
        "dateCreated": format_date(build.created),
        "tags": build.tags,
        "buildType": "IMPORT",
        "imageSource": "IMPORTED",
    }
    if build.os_version:
        image["osVersion"] = build.os_version
    if build.logging:
        image["loggingConfiguration"] = build.logging
    if status == "AVAILABLE":
        ami = "ami-" + hashlib.sha256(build.arn.encode()).hexdigest()[:17]
        image["outputResources"] = {
            "amis": [
                {
                    "region": region,
                    "image": ami,
                    "name": f"{build.name} {build.version}/{build.build}",
                    "accountId": build.owner,
                }
            ]
        }
    return image


#: Route (method, path) -> (operation name, handler).
OPERATIONS: dict[tuple[str, str], tuple[str, Handler]] = {
    ("PUT", "/ImportVmImage"): ("ImportVmImage", import_vm_image),
    ("GET", "/GetImage"): ("GetImage", get_image),
    ("PUT", "/CancelImageCreation"): ("CancelImageCreation", cancel_image_creation),
    ("POST", "/ListImages"): ("ListImages", list_images),
    ("POST", "/ListImageBuildVersions"): ("ListImageBuildVersions", list_image_build_versions),
}

IMAGEBUILDER = RestService(signing_name="imagebuilder", operations=OPERATIONS)
