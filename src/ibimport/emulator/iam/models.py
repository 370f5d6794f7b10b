"""The IAM roles the emulator knows: each account's ``vmimport`` service role, or none.

ImportImage assumes a service role (``vmimport`` unless RoleName names another) that
trusts ``vmie.amazonaws.com`` (the VM Import/Export guide's trust policy); ibimport's
preflight reads it with GetRole. Every account has that one role unless
``--no-vmimport-role``; no other role exists (the emulator's simplification). IAM is
global: a role belongs to an account, not a Region. No HTTP here.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from ibimport.emulator.ec2.validation import DEFAULT_ROLE
from ibimport.emulator.exceptions import NoSuchEntity

__all__ = ["TRUST_POLICY", "Role", "Roles"]

#: The trust policy the VM Import/Export guide gives the vmimport role.
TRUST_POLICY: dict[str, Any] = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": {"Service": "vmie.amazonaws.com"},
            "Action": "sts:AssumeRole",
            "Condition": {"StringEquals": {"sts:Externalid": "vmimport"}},
        }
    ],
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Role:
    """One role as GetRole describes it."""

    account: str
    name: str
    trust_policy: dict[str, Any]
    #: When the emulator says it was made (epoch seconds).
    created: float

    @property
    def arn(self) -> str:
        """``arn:aws:iam::ACCOUNT:role/NAME``."""
        return f"arn:aws:iam::{self.account}:role/{self.name}"

    @property
    def role_id(self) -> str:
        """IAM's unique ID of a role: ``AROA`` and 17 more characters."""
        digest = hashlib.sha256(self.arn.encode()).hexdigest().upper()
        return "AROA" + digest[:17]


class Roles:
    """Which roles exist, for IAM's GetRole and for ImportImage (``ec2.models.RoleBook``)."""

    def __init__(self, *, vmimport: bool, created: float) -> None:
        self.vmimport = vmimport
        self.created = created

    def has_role(self, account: str, name: str) -> bool:
        """Whether ``account`` has a role of that name."""
        return self.vmimport and name == DEFAULT_ROLE

    def get_role(self, account: str, name: str) -> Role:
        """The role, or IAM's NoSuchEntity in IAM's words."""
        if not self.has_role(account, name):
            raise NoSuchEntity(f"The role with name {name} cannot be found.")
        return Role(account=account, name=name, trust_policy=TRUST_POLICY, created=self.created)
