"""AWS's REST-JSON protocol, which Image Builder speaks: a route per operation, JSON errors.

An operation is a method and a path (``PUT /ImportVmImage``); its members travel in the
JSON body or the query string; an error is the HTTP status, the code in
``x-amzn-ErrorType`` and ``{"message": ...}``, the shape botocore's rest-json parser reads.
A service's ``responses`` module describes itself as a ``RestService``; ``server`` finds
the operation from the route. ``query`` is the same for EC2's and STS's query protocol.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ibimport.emulator.core import Scope
from ibimport.emulator.exceptions import ServiceError

__all__ = ["Call", "Handler", "RestService", "render_error"]

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


@dataclass(frozen=True, slots=True, kw_only=True)
class Call:
    """One authenticated API request: whose it is, where, and what it carries."""

    scope: Scope
    request_id: str
    body: bytes
    query: Mapping[str, str]
    access_key: str = ""


#: handler(backend, call) -> the answer's JSON body; the server passes the service's backend.
Handler = Callable[[Any, Call], bytes]


def render_error(exc: ServiceError) -> tuple[int, str, bytes]:
    """Status, x-amzn-ErrorType and body of a REST-JSON error answer."""
    return exc.status, exc.code, _dumps({"message": exc.message}).encode()


@dataclass(frozen=True, slots=True, kw_only=True)
class RestService:
    """What the server needs to know of one REST-JSON service."""

    #: The SigV4 signing name its calls are scoped to (and its backend's key).
    signing_name: str
    #: Route (method, path) -> (operation name, handler).
    operations: Mapping[tuple[str, str], tuple[str, Handler]]
