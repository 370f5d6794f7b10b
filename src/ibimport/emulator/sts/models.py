"""Who a caller is: the account an access key acts in, and STS's temporary credentials.

Image Builder's resources and quotas belong to an (account, region). The region comes
from a call's credential scope (``auth.caller``); the account from its access key, looked
up here in turn: credentials this emulator issued through ``AssumeRole`` (the role's
account), the ``--accounts`` file, a key that is itself 12 digits (tests), else
``--account-id``. With ``--verify-signatures`` the keys ``known`` returns are the only
ones accepted. AssumeRole grants only the roles ``--accounts`` declares, for at most
their ``MaxSessionDuration`` (IAM's name and range, default one hour), as STS does
for a role whose trust policy does not name the caller. No HTTP here; ``sts.responses``
speaks STS's query protocol.
"""

from __future__ import annotations

import json
import re
import secrets
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ibimport.emulator.auth import Credentials
from ibimport.emulator.config import is_account_id
from ibimport.emulator.core import Clock, Scope
from ibimport.emulator.exceptions import AccessDenied, ValidationError
from ibimport.errors import ConfigError

__all__ = ["Accounts", "Identities", "TemporaryCredentials", "load_accounts"]

# From STS's model (AssumeRoleRequest): RoleArn is an arnType of 20-2048 characters,
# RoleSessionName a roleSessionNameType of 2-64 of [\w+=,.@-], DurationSeconds 900-43200.
_ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::([0-9]{12}):role/([\w+=,.@/-]{1,512})$")
_SESSION_NAME = re.compile(r"^[\w+=,.@-]{2,64}$")
DURATION_MIN_S, DURATION_MAX_S, DURATION_DEFAULT_S = 900, 43200, 3600
# IAM's Role.MaxSessionDuration: 3600-43200 seconds, 3600 when not set.
ROLE_MAX_SESSION_MIN_S, ROLE_MAX_SESSION_DEFAULT_S = 3600, 3600
#: STS's words when DurationSeconds is beyond the role's MaxSessionDuration.
DURATION_EXCEEDS = "The requested DurationSeconds exceeds the MaxSessionDuration set for this role."
_KEY_CHARS = string.ascii_uppercase + string.digits


@dataclass(frozen=True, slots=True, kw_only=True)
class TemporaryCredentials:
    """What AssumeRole hands out: a key pair and token acting in the role's account."""

    key: Credentials
    account: str
    role_arn: str
    session_name: str

    @property
    def assumed_role_arn(self) -> str:
        """``arn:aws:sts::ACCOUNT:assumed-role/ROLE/SESSION``, as STS names the session."""
        role = self.role_arn.rpartition(":role/")[2].rpartition("/")[2]
        return f"arn:aws:sts::{self.account}:assumed-role/{role}/{self.session_name}"


@dataclass(frozen=True, slots=True)
class Accounts:
    """``--accounts``: each access key's account, and the roles AssumeRole grants."""

    keys: dict[str, str] = field(default_factory=dict)
    #: Role ARN -> its MaxSessionDuration in seconds.
    roles: dict[str, int] = field(default_factory=dict)


def load_accounts(path: Path) -> Accounts:
    """Read ``--accounts``: access key id -> 12-digit account id, and role ARN ->
    ``{"MaxSessionDuration": S}``; a bad entry is named."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read --accounts {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"--accounts {path}: must be a JSON object of access key -> account")
    accounts = Accounts()
    for key, value in data.items():
        if _ROLE_ARN.match(key):
            accounts.roles[key] = _max_session(path, key, value)
        elif isinstance(value, str) and is_account_id(value):
            accounts.keys[key] = value
        else:
            raise ConfigError(f"--accounts {path}: {key}: the account must be 12 digits")
    return accounts


def _max_session(path: Path, role: str, value: object) -> int:
    where = f"--accounts {path}: {role}"
    if not isinstance(value, dict) or set(value) - {"MaxSessionDuration"}:
        raise ConfigError(f'{where}: must be {{"MaxSessionDuration": seconds}} or {{}}')
    seconds = value.get("MaxSessionDuration", ROLE_MAX_SESSION_DEFAULT_S)
    if (
        not isinstance(seconds, int)
        or isinstance(seconds, bool)
        or not ROLE_MAX_SESSION_MIN_S <= seconds <= DURATION_MAX_S
    ):
        raise ConfigError(
            f"{where}: MaxSessionDuration must be {ROLE_MAX_SESSION_MIN_S}-{DURATION_MAX_S} "
            f"seconds, got {seconds!r}"
        )
    return seconds


class Identities:
    """Every access key's account, and the temporary credentials AssumeRole issued."""

    def __init__(
        self,
        *,
        default_account: str,
        accounts: Mapping[str, str],
        roles: Mapping[str, int] | None = None,
        base: Credentials,
        clock: Clock,
    ) -> None:
        self.default_account = default_account
        self.accounts = dict(accounts)
        #: Role ARN -> MaxSessionDuration: the roles AssumeRole grants.
        self.roles = dict(roles or {})
        self.base = base
        self.clock = clock
        self.issued: dict[str, TemporaryCredentials] = {}
        #: Set on every change, cleared by whoever persists the state.
        self.dirty = False

    def scope_of(self, access_key: str, region: str) -> Scope:
        """Where a call signed with ``access_key`` for ``region`` acts."""
        issued = self.issued.get(access_key)
        if issued is not None:
            return Scope(issued.account, region)
        account = self.accounts.get(access_key)
        if account is None:
            account = access_key if is_account_id(access_key) else self.default_account
        return Scope(account, region)

    def arn_of(self, access_key: str, account: str) -> str:
        """Who signs with ``access_key``: its assumed-role session, else the account's user."""
        issued = self.issued.get(access_key)
        if issued is not None:
            return issued.assumed_role_arn
        return f"arn:aws:iam::{account}:user/emulator"

    def role_of(self, access_key: str) -> str | None:
        """The role ARN a key's session was issued for, if it is one AssumeRole issued."""
        issued = self.issued.get(access_key)
        return None if issued is None else issued.role_arn

    def known(self, access_key: str) -> Credentials | None:
        """The key and secret ``--verify-signatures`` checks a signature against, if any.

        The configured key, every ``--accounts`` key (with the configured secret) and the
        temporary credentials issued here.
        """
        issued = self.issued.get(access_key)
        if issued is not None:
            return issued.key
        if access_key == self.base.access_key_id:
            return self.base
        if access_key in self.accounts:
            return Credentials(access_key, self.base.secret_access_key)
        return None

    def assume_role(
        self, *, role_arn: object, session_name: object, duration_s: object, caller_arn: str
    ) -> TemporaryCredentials:
        """Issue credentials acting in the account a declared role's ARN names.

        A well-formed request for a role ``--accounts`` does not declare is AccessDenied
        (what STS answers when the role's trust policy does not allow the caller, or the
        role does not exist); a duration beyond the role's maximum is STS's
        ValidationError.
        """
        problems = []
        role = _ROLE_ARN.match(role_arn) if isinstance(role_arn, str) else None
        if role is None:
            problems.append(_violation("roleArn", role_arn, "Member must be an IAM role ARN"))
        if not isinstance(session_name, str) or not _SESSION_NAME.match(session_name):
            problems.append(
                _violation(
                    "roleSessionName",
                    session_name,
                    r"Member must satisfy regular expression pattern: [\w+=,.@-]{2,64}",
                )
            )
        duration = DURATION_DEFAULT_S
        if duration_s is not None:
            try:
                duration = int(str(duration_s))
            except ValueError:
                duration = -1
            if not DURATION_MIN_S <= duration <= DURATION_MAX_S:
                problems.append(
                    _violation(
                        "durationSeconds",
                        duration_s,
                        f"Member must be between {DURATION_MIN_S} and {DURATION_MAX_S}",
                    )
                )
        if problems or role is None or not isinstance(session_name, str):
            noun = "error" if len(problems) == 1 else "errors"
            detail = "; ".join(problems)
            raise ValidationError(f"{len(problems)} validation {noun} detected: {detail}")
        max_session = self.roles.get(role.group(0))
        if max_session is None:
            raise AccessDenied(
                f"User: {caller_arn} is not authorized to perform: sts:AssumeRole "
                f"on resource: {role.group(0)}"
            )
        if duration > max_session:
            raise ValidationError(DURATION_EXCEEDS)
        key = Credentials(
            "ASIA" + "".join(secrets.choice(_KEY_CHARS) for _ in range(16)),
            secrets.token_urlsafe(30),
            session_token=secrets.token_urlsafe(96),
            expires=self.clock() + duration,
        )
        issued = TemporaryCredentials(
            key=key, account=role.group(1), role_arn=role.group(0), session_name=session_name
        )
        self._expire()
        self.issued[key.access_key_id] = issued
        self.dirty = True
        return issued

    def _expire(self) -> None:
        now = self.clock()
        for access_key in [k for k, c in self.issued.items() if (c.key.expires or 0) <= now]:
            del self.issued[access_key]

    def reset(self) -> None:
        """Forget every issued credential."""
        self.issued.clear()
        self.dirty = True

    def to_state(self) -> list[dict[str, Any]]:
        """The issued credentials, for ``--state``: a restart keeps clients' sessions."""
        return [
            {
                "accessKeyId": c.key.access_key_id,
                "secretAccessKey": c.key.secret_access_key,
                "sessionToken": c.key.session_token,
                "expires": c.key.expires,
                "account": c.account,
                "roleArn": c.role_arn,
                "sessionName": c.session_name,
            }
            for c in self.issued.values()
        ]

    def load_state(self, data: list[dict[str, Any]]) -> None:
        """Take back what ``to_state`` wrote."""
        for raw in data:
            key = Credentials(
                raw["accessKeyId"],
                raw["secretAccessKey"],
                session_token=raw["sessionToken"],
                expires=float(raw["expires"]),
            )
            self.issued[key.access_key_id] = TemporaryCredentials(
                key=key,
                account=raw["account"],
                role_arn=raw["roleArn"],
                session_name=raw["sessionName"],
            )
        self._expire()


def _violation(member: str, value: object, constraint: str) -> str:
    shown = "null" if value is None else f"'{value}'"
    return f"Value {shown} at '{member}' failed to satisfy constraint: {constraint}"
