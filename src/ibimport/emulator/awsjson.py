"""AWS's JSON 1.1 protocol, which Service Quotas speaks on the same endpoint as Image Builder.

A call is a ``POST /`` whose ``X-Amz-Target`` header names the service's target prefix
and the operation (``ServiceQuotasV20190624.GetServiceQuota``) with its members as a JSON
body (``application/x-amz-json-1.1``); an error is the HTTP status and
``{"__type": CODE, "message": ...}``, the shape botocore's json parser reads. The server
finds the service by the target's prefix.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ibimport.emulator.core import Scope
from ibimport.emulator.exceptions import SerializationException, ServiceError

__all__ = ["JsonCall", "JsonService", "parse_body", "render_error"]

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


@dataclass(frozen=True, slots=True, kw_only=True)
class JsonCall:
    """One authenticated JSON 1.1 call: whose it is, where, and its members."""

    scope: Scope
    request_id: str
    members: Mapping[str, Any]
    access_key: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class JsonService:
    """What the server needs to know of one JSON 1.1 service."""

    signing_name: str
    #: ``X-Amz-Target``'s part before the dot.
    target_prefix: str
    #: Operation -> handler(backend, call) returning the answer's members.
    operations: Mapping[str, Callable[[Any, JsonCall], dict[str, Any]]]
    #: The error this service answers for one the shared layers raised (auth, quota).
    translate: Callable[[ServiceError], ServiceError]
    #: The error for an operation it does not serve.
    unknown_operation: Callable[[str], ServiceError]


def parse_body(body: bytes) -> dict[str, Any]:
    """The call's members; an empty body is none."""
    if not body:
        return {}
    try:
        members = json.loads(body)
    except ValueError:
        raise SerializationException("The request body is not valid JSON.") from None
    if not isinstance(members, dict):
        raise SerializationException("Start of structure or map found where not expected.")
    return members


def render(members: Mapping[str, Any]) -> bytes:
    """An answer's body."""
    return _dumps(members).encode()


def render_error(exc: ServiceError) -> tuple[int, bytes]:
    """Status and body of a JSON 1.1 error answer."""
    return exc.status, _dumps({"__type": exc.code, "message": exc.message}).encode()
