"""Service Quotas' JSON 1.1 protocol: GetServiceQuota and ListServiceQuotas.

Members and their patterns from the current model (``ServiceCode`` and ``QuotaCode``:
``[a-zA-Z][a-zA-Z0-9-]{1,63}`` / ``{1,128}``); errors are the model's codes
(``NoSuchResourceException``, ``IllegalArgumentException``, ``AccessDeniedException``,
``ServiceException``, ``TooManyRequestsException``), their words the emulator's.
"""

from __future__ import annotations

import re
from typing import Any

from ibimport.emulator.awsjson import JsonCall, JsonService
from ibimport.emulator.exceptions import (
    CallRateLimitExceededException,
    IllegalArgumentException,
    ServiceError,
    ServiceException,
    ServiceUnavailableException,
    TooManyRequestsException,
    UnknownOperationException,
)
from ibimport.emulator.servicequotas.models import Quotas

__all__ = ["SERVICE_QUOTAS", "get_service_quota", "list_service_quotas"]

_SERVICE_CODE = re.compile(r"^[a-zA-Z][a-zA-Z0-9-]{1,63}$")
_QUOTA_CODE = re.compile(r"^[a-zA-Z][a-zA-Z0-9-]{1,128}$")


def _code(members: dict[str, Any] | Any, name: str, pattern: re.Pattern[str]) -> str:
    value = members.get(name)
    if not isinstance(value, str) or pattern.match(value) is None:
        raise IllegalArgumentException(f"{name} must match {pattern.pattern}, got {value!r}.")
    return value


def get_service_quota(quotas: Quotas, call: JsonCall) -> dict[str, Any]:
    """ServiceQuotasV20190624.GetServiceQuota."""
    service = _code(call.members, "ServiceCode", _SERVICE_CODE)
    quota = _code(call.members, "QuotaCode", _QUOTA_CODE)
    return {"Quota": quotas.get(call.scope, service, quota)}


def list_service_quotas(quotas: Quotas, call: JsonCall) -> dict[str, Any]:
    """ServiceQuotasV20190624.ListServiceQuotas: one page holds them all."""
    service = _code(call.members, "ServiceCode", _SERVICE_CODE)
    return {"Quotas": quotas.list(call.scope, service)}


def translate(exc: ServiceError) -> ServiceError:
    """The answer Service Quotas gives where the shared layers raised Image Builder's."""
    if isinstance(exc, CallRateLimitExceededException):
        return TooManyRequestsException()
    if isinstance(exc, ServiceUnavailableException):
        return ServiceException()
    return exc


SERVICE_QUOTAS = JsonService(
    signing_name="servicequotas",
    target_prefix="ServiceQuotasV20190624",
    operations={
        "GetServiceQuota": get_service_quota,
        "ListServiceQuotas": list_service_quotas,
    },
    translate=translate,
    unknown_operation=lambda name: UnknownOperationException(f"Unknown operation {name}."),
)
