"""STS's query protocol (AssumeRole, GetCallerIdentity): profiles with ``role_arn`` work locally.

A boto3 profile with ``role_arn`` and ``source_profile`` calls AssumeRole on the STS
endpoint (``AWS_ENDPOINT_URL_STS``, or the profile's ``endpoint_url``); pointed at the
emulator, it gets credentials whose calls land in the role's account. The answer is
``AssumeRoleResponse/AssumeRoleResult/{Credentials,AssumedRoleUser}`` and
``ResponseMetadata/RequestId``; errors are STS's ``ErrorResponse`` shape. STS is global:
``--verify-signatures`` does not check the region a call to it is scoped to.
"""

from __future__ import annotations

import time

from ibimport.emulator.exceptions import (
    AccessDenied,
    AccessDeniedException,
    ExpiredToken,
    ExpiredTokenException,
    IncompleteSignature,
    IncompleteSignatureException,
    InvalidAction,
    InvalidClientTokenId,
    InvalidSignatureException,
    ServiceError,
    SignatureDoesNotMatch,
    UnrecognizedClientException,
)
from ibimport.emulator.query import QueryCall, QueryService, element
from ibimport.emulator.sts.models import Identities

__all__ = ["STS", "assume_role", "get_caller_identity", "render_error"]

XMLNS = "https://sts.amazonaws.com/doc/2011-06-15/"


def assume_role(identities: Identities, call: QueryCall) -> bytes:
    """POST / Action=AssumeRole."""
    params = call.params
    issued = identities.assume_role(
        role_arn=params.get("RoleArn"),
        session_name=params.get("RoleSessionName"),
        duration_s=params.get("DurationSeconds"),
        caller_arn=identities.arn_of(call.access_key, call.scope.account),
    )
    key = issued.key
    expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(key.expires or 0))
    role_id = "AROA" + key.access_key_id[4:]
    body = (
        f'<AssumeRoleResponse xmlns="{XMLNS}"><AssumeRoleResult>'
        "<Credentials>"
        + element("AccessKeyId", key.access_key_id)
        + element("SecretAccessKey", key.secret_access_key)
        + element("SessionToken", key.session_token)
        + element("Expiration", expires)
        + "</Credentials><AssumedRoleUser>"
        + element("AssumedRoleId", f"{role_id}:{issued.session_name}")
        + element("Arn", issued.assumed_role_arn)
        + "</AssumedRoleUser></AssumeRoleResult><ResponseMetadata>"
        + element("RequestId", call.request_id)
        + "</ResponseMetadata></AssumeRoleResponse>"
    )
    return body.encode()


def get_caller_identity(identities: Identities, call: QueryCall) -> bytes:
    """POST / Action=GetCallerIdentity: the account a caller's calls land in.

    ibimport asks it once per profile to name each partition's account.
    """
    account = call.scope.account
    arn = identities.arn_of(call.access_key, account)
    body = (
        f'<GetCallerIdentityResponse xmlns="{XMLNS}"><GetCallerIdentityResult>'
        + element("Arn", arn)
        + element("UserId", call.access_key)
        + element("Account", account)
        + "</GetCallerIdentityResult><ResponseMetadata>"
        + element("RequestId", call.request_id)
        + "</ResponseMetadata></GetCallerIdentityResponse>"
    )
    return body.encode()


def translate(exc: ServiceError) -> ServiceError:
    """The answer STS gives where the shared layers raised Image Builder's error."""
    if isinstance(exc, AccessDeniedException):
        return AccessDenied(exc.message)
    if isinstance(exc, UnrecognizedClientException):
        return InvalidClientTokenId()
    if isinstance(exc, InvalidSignatureException):
        return SignatureDoesNotMatch(exc.message)
    if isinstance(exc, IncompleteSignatureException):
        return IncompleteSignature(exc.message)
    if isinstance(exc, ExpiredTokenException):
        return ExpiredToken()
    return exc


def render_error(exc: ServiceError, request_id: str) -> tuple[int, bytes]:
    """STS's error shape: ``ErrorResponse/Error/{Type,Code,Message}`` and ``RequestId``."""
    kind = "Sender" if exc.status < 500 else "Receiver"
    body = (
        f'<ErrorResponse xmlns="{XMLNS}"><Error>'
        + element("Type", kind)
        + element("Code", exc.code)
        + element("Message", exc.message)
        + "</Error>"
        + element("RequestId", request_id)
        + "</ErrorResponse>"
    )
    return exc.status, body.encode()


STS = QueryService(
    signing_name="sts",
    regional=False,
    actions={"AssumeRole": assume_role, "GetCallerIdentity": get_caller_identity},
    translate=translate,
    render_error=render_error,
    unknown_action=lambda action: InvalidAction(f"Could not find operation {action}"),
)
