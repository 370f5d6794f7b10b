"""Who may call what: ``--deny``, the emulator's stand-in for IAM policies.

A rule names an access key, or a role (its ARN or its name) whose AssumeRole sessions it
covers, and the actions refused to it: ``ImportVmImage``, ``imagebuilder:GetImage``,
``ec2:*``, ``*``. A refused call gets Image Builder's ``AccessDeniedException`` in IAM's
words (``User: ARN is not authorized to perform: SERVICE:ACTION because no
identity-based policy allows the SERVICE:ACTION action``, as IAM's troubleshooting guide
quotes it); each query service translates it into its own code (EC2
``UnauthorizedOperation``, STS ``AccessDenied``). Everything not denied is allowed.
"""

from __future__ import annotations

from collections.abc import Mapping

from ibimport.emulator.exceptions import AccessDeniedException

__all__ = ["Permissions"]


class Permissions:
    """The ``--deny`` rules of one emulator."""

    def __init__(self, denials: Mapping[str, frozenset[str]]) -> None:
        self._denials = dict(denials)

    def __bool__(self) -> bool:
        return bool(self._denials)

    def check(
        self, *, service: str, action: str, access_key: str, role_arn: str | None, caller_arn: str
    ) -> None:
        """Raise ``AccessDeniedException`` if a rule refuses ``action`` to this caller."""
        who = [access_key]
        if role_arn is not None:
            who += [role_arn, role_arn.rpartition("/")[2]]
        wanted = {action, f"{service}:{action}", "*", f"{service}:*"}
        for name in who:
            refused = self._denials.get(name)
            if refused is not None and not refused.isdisjoint(wanted):
                qualified = f"{service}:{action}"
                raise AccessDeniedException(
                    f"User: {caller_arn} is not authorized to perform: {qualified} because "
                    f"no identity-based policy allows the {qualified} action"
                )
