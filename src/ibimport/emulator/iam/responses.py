"""IAM's query protocol for GetRole: the role and its trust policy, or NoSuchEntity.

The answer is ``GetRoleResponse/GetRoleResult/Role`` with the model's members (``Path``,
``RoleName``, ``RoleId``, ``Arn``, ``CreateDate``, ``AssumeRolePolicyDocument``,
``MaxSessionDuration``) and ``ResponseMetadata/RequestId``; the policy document is
URL-encoded JSON, as IAM sends it (boto3 decodes it). Errors are the ``ErrorResponse``
shape IAM shares with STS. IAM is global: ``--verify-signatures`` checks no region, and
its calls are not metered.
"""

from __future__ import annotations

import json
import time
from urllib.parse import quote

from ibimport.emulator.exceptions import (
    AccessDenied,
    AccessDeniedException,
    InvalidAction,
    ServiceError,
    ServiceException,
    ServiceFailure,
    ServiceUnavailableException,
    ValidationError,
)
from ibimport.emulator.iam.models import Roles
from ibimport.emulator.query import QueryCall, QueryService, element
from ibimport.emulator.sts.responses import render_error as render_sts_error
from ibimport.emulator.sts.responses import translate as translate_sts

__all__ = ["IAM", "get_role"]

XMLNS = "https://iam.amazonaws.com/doc/2010-05-08/"


def get_role(roles: Roles, call: QueryCall) -> bytes:
    """POST / Action=GetRole."""
    name = call.params.get("RoleName")
    if not name:
        raise ValidationError(
            "1 validation error detected: Value null at 'roleName' failed "
            "to satisfy constraint: Member must not be null"
        )
    role = roles.get_role(call.scope.account, name)
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(role.created))
    body = (
        f'<GetRoleResponse xmlns="{XMLNS}"><GetRoleResult><Role>'
        + element("Path", "/")
        + element("RoleName", role.name)
        + element("RoleId", role.role_id)
        + element("Arn", role.arn)
        + element("CreateDate", created)
        + element("AssumeRolePolicyDocument", quote(json.dumps(role.trust_policy)))
        + element("MaxSessionDuration", 3600)
        + "</Role></GetRoleResult><ResponseMetadata>"
        + element("RequestId", call.request_id)
        + "</ResponseMetadata></GetRoleResponse>"
    )
    return body.encode()


def translate(exc: ServiceError) -> ServiceError:
    """The answer IAM gives where the shared layers raised Image Builder's error."""
    if isinstance(exc, AccessDeniedException):
        return AccessDenied(exc.message)
    if isinstance(exc, ServiceException | ServiceUnavailableException):
        return ServiceFailure()
    return translate_sts(exc)


IAM = QueryService(
    signing_name="iam",
    regional=False,
    actions={"GetRole": get_role},
    translate=translate,
    render_error=lambda exc, request_id: render_sts_error(exc, request_id, xmlns=XMLNS),
    unknown_action=lambda action: InvalidAction(f"Could not find operation {action}"),
)
