"""The quotas Service Quotas reports: VM Import/Export's concurrent import tasks.

Service Quotas lists VM Import/Export's quotas under the service code ``vmimportexport``
(issue 19). The quota's value is ``--task-slots``, the same number ImportImage enforces.
Its code and name are the emulator's guess: AWS's quota code for concurrent image import
tasks could not be checked here, so a client should find the quota through
ListServiceQuotas (served too) or take the code as configuration rather than trust this
one. No HTTP here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ibimport.emulator.core import Scope
from ibimport.emulator.exceptions import NoSuchResourceException

__all__ = ["IMPORT_TASKS_QUOTA_CODE", "SERVICE_CODE", "Quotas"]

SERVICE_CODE = "vmimportexport"
SERVICE_NAME = "VM Import/Export"
#: The emulator's guess at the quota code (an AWS-shaped ``L-`` and eight characters).
IMPORT_TASKS_QUOTA_CODE = "L-EMU1MP0"
IMPORT_TASKS_QUOTA_NAME = "Concurrent import image tasks"


@dataclass(frozen=True, slots=True, kw_only=True)
class Quota:
    """One quota as GetServiceQuota describes it."""

    code: str
    name: str
    value: float
    description: str


class Quotas:
    """The quotas of every account and Region (the same in each)."""

    def __init__(self, *, task_slots: int) -> None:
        self._quotas = {
            (SERVICE_CODE, IMPORT_TASKS_QUOTA_CODE): Quota(
                code=IMPORT_TASKS_QUOTA_CODE,
                name=IMPORT_TASKS_QUOTA_NAME,
                value=float(task_slots),
                description="The maximum number of import image tasks that can be active "
                "at once in this account and Region.",
            )
        }

    def get(self, scope: Scope, service_code: str, quota_code: str) -> dict[str, Any]:
        """The quota as the model's ServiceQuota structure, or NoSuchResourceException."""
        quota = self._quotas.get((service_code, quota_code))
        if quota is None:
            raise NoSuchResourceException("The specified resource does not exist.")
        return _described(scope, service_code, quota)

    def list(self, scope: Scope, service_code: str) -> list[dict[str, Any]]:
        """Every quota of a service; NoSuchResourceException for a service with none."""
        found = [
            _described(scope, service_code, quota)
            for (service, _), quota in self._quotas.items()
            if service == service_code
        ]
        if not found:
            raise NoSuchResourceException("The specified resource does not exist.")
        return found


def _described(scope: Scope, service_code: str, quota: Quota) -> dict[str, Any]:
    return {
        "ServiceCode": service_code,
        "ServiceName": SERVICE_NAME,
        "QuotaArn": (
            f"arn:aws:servicequotas:{scope.region}:{scope.account}:{service_code}/{quota.code}"
        ),
        "QuotaCode": quota.code,
        "QuotaName": quota.name,
        "Value": quota.value,
        "Unit": "None",
        "Adjustable": True,
        "GlobalQuota": False,
        "QuotaAppliedAtLevel": "ACCOUNT",
        "Description": quota.description,
    }
