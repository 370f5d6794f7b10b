"""One ImportVmImage request as a value: ``ImageRequest``, its fields, and the text form it holds.

Every format the manifest reads becomes an ``ImageRequest``; the runner sends its
``api_params()`` and ``tokens`` derives the clientToken from the same parameters, so
what is sent and what the token names cannot differ. Text is held in Unicode NFC, the
form both are built from. The constraints come from :mod:`ibimport.domain.apimodel`.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Annotated, Any, Final

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints
from pydantic_core import PydanticCustomError

from ibimport.domain.apimodel import (
    PROFILE_PATTERN,
    REGION_PATTERN,
    REQUEST_FIELDS,
    StringRule,
    check_version_nodes,
    image_identity,
    import_vm_image_rules,
    log_group_problem,
    name_problem,
)
from ibimport.domain.diskimport import (
    DISK_FIELDS,
    IMPORT_OPTION_FIELDS,
    DiskRef,
    disk_containers,
    disk_refs,
    import_image_params,
)

__all__ = ["FIELDS", "PARTITION_FIELDS", "ImageRequest", "nfc"]

_RULES: Final = import_vm_image_rules()

#: Where a row is imported, beside what is imported: not request members, so neither sent
#: nor part of the clientToken (``tokens`` derives it from ``api_params``).
PARTITION_FIELDS: Final = ("region", "profile")
#: The task's field names: the API's own, with logGroupName lifted out of loggingConfiguration,
#: then the partition's.
FIELDS: Final = (
    *("logGroupName" if name == "loggingConfiguration" else name for name in REQUEST_FIELDS),
    *DISK_FIELDS,
    *IMPORT_OPTION_FIELDS,
    *PARTITION_FIELDS,
)


def nfc(value: Any) -> Any:
    """Normalise every string (keys too) to NFC, so composed and decomposed forms agree.

    The one normaliser: the manifest reads rows through it, so what is sent is what the
    token was derived from.
    """
    if isinstance(value, str):
        return unicodedata.normalize("NFC", value)
    if isinstance(value, dict):
        return {nfc(k): nfc(v) for k, v in value.items()}
    if isinstance(value, list):  # diskContainers
        return [nfc(v) for v in value]
    return value


def _pattern(rule: StringRule) -> str | None:
    """The rule's pattern (or enum) as a whole-value Python regex."""
    if rule.enum:
        return "^(?:" + "|".join(re.escape(value) for value in rule.enum) + r")\Z"
    if rule.pattern is None:
        return None
    # The service matches the whole value; Python's `$` would also accept a final "\n".
    if rule.pattern.endswith("$") and not rule.pattern.endswith("\\$"):
        return rule.pattern[:-1] + r"\Z"
    return rule.pattern


def _constraints(rule: StringRule) -> StringConstraints:
    return StringConstraints(
        min_length=rule.min_len, max_length=rule.max_len, pattern=_pattern(rule)
    )


def _check_version_nodes(value: str) -> str:
    """apimodel's node range rule, as a pydantic error (runs after the pattern matched)."""
    violation = check_version_nodes(value)
    if violation is not None:
        raise PydanticCustomError("version_node", violation.rule)
    return value


def _check_image_name(value: str) -> str:
    """The current model's rule for the name an imported image gets (``apimodel.name_problem``)."""
    problem = name_problem(value)
    if problem is not None:
        raise PydanticCustomError("image_name", problem)
    return value


def _check_import_log_group(value: str) -> str:
    problem = log_group_problem(value)
    if problem is not None:
        raise PydanticCustomError("log_group", problem)
    return value


_F = _RULES.fields
# The name's rule is the image name's (stricter than the request shape's 1 to 1024).
_Name = Annotated[str, AfterValidator(_check_image_name)]
_Version = Annotated[str, _constraints(_F["semanticVersion"]), AfterValidator(_check_version_nodes)]
_Description = Annotated[str, _constraints(_F["description"])]
_Platform = Annotated[str, _constraints(_F["platform"])]
_OsVersion = Annotated[str, _constraints(_F["osVersion"])]
_TaskId = Annotated[str, _constraints(_F["vmImportTaskId"])]
_Token = Annotated[str, _constraints(_F["clientToken"])]
_LogGroup = Annotated[
    str, _constraints(_RULES.log_group_name), AfterValidator(_check_import_log_group)
]


def _matching(pattern: str, rule: str) -> AfterValidator:
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        if compiled.fullmatch(value) is None:
            raise PydanticCustomError("partition", rule)
        return value

    return AfterValidator(check)


_Region = Annotated[
    str, _matching(REGION_PATTERN, "must be an AWS Region's name, such as eu-west-1")
]
_Profile = Annotated[
    str, _matching(PROFILE_PATTERN, "must be a profile name of the AWS config (no spaces)")
]
_TagKey = Annotated[str, _constraints(_RULES.tag_key)]
_TagValue = Annotated[str, _constraints(_RULES.tag_value)]
#: A tags mapping as a task holds it (the manifest also checks ``--tag`` values with it).
Tags = Annotated[dict[_TagKey, _TagValue], Field(max_length=_RULES.tags_max)]

_MODEL_CONFIG: Final = ConfigDict(
    strict=True, extra="forbid", frozen=True, regex_engine="python-re"
)


class ImageRequest(BaseModel):
    """One valid ImportVmImage request as the manifest gives it; field names are the API's.

    Strict: a number where a string belongs is an error, not silently converted.
    """

    model_config = _MODEL_CONFIG

    name: _Name
    semanticVersion: _Version
    description: _Description | None = None
    platform: _Platform
    osVersion: _OsVersion | None = None
    #: The EC2 import task the image comes from; None when the row gives its disks
    #: instead (``diskImage`` or ``diskContainers``: ibimport starts the task).
    vmImportTaskId: _TaskId | None = None
    tags: Tags = Field(default_factory=dict)
    clientToken: _Token | None = None
    logGroupName: _LogGroup | None = None
    #: The disks to import (``domain.diskimport``: its rules are checked by the manifest).
    diskImage: str | None = None
    diskFormat: str | None = None
    diskContainers: list[dict[str, Any]] | None = None
    #: ImportImage's options for a row with disks (``domain.diskimport``).
    licenseType: str | None = None
    usageOperation: str | None = None
    bootMode: str | None = None
    architecture: str | None = None
    encrypted: bool | None = None
    kmsKeyId: str | None = None
    roleName: str | None = None
    importDescription: str | None = None
    #: The AWS Region and config profile to import into; None: the command line's (or the
    #: AWS config's) default.
    region: _Region | None = None
    profile: _Profile | None = None

    @property
    def has_disks(self) -> bool:
        """The row gives its disks: ibimport starts its EC2 import task (ImportImage)."""
        return self.diskImage is not None or self.diskContainers is not None

    def image_tag(self) -> str:
        """The row's image identity as a tag value (``normalised-name/version``)."""
        identity = image_identity(self.name, self.semanticVersion)
        return f"{identity.name}/{identity.semantic_version}"

    def import_image_params(self) -> dict[str, Any]:
        """ImportImage's members for this row's disks (no ClientToken, no tags)."""
        containers = disk_containers(self.diskImage, self.diskFormat, self.diskContainers)
        options = {field: getattr(self, field) for field in IMPORT_OPTION_FIELDS}
        return import_image_params(containers, options, platform=self.platform)

    def disks(self) -> list[DiskRef]:
        """The disk objects this row imports (none for a row with ``vmImportTaskId``)."""
        if not self.has_disks:
            return []
        return disk_refs(disk_containers(self.diskImage, self.diskFormat, self.diskContainers))

    def api_params(self) -> dict[str, Any]:
        """The ImportVmImage request members except clientToken (the caller adds it)."""
        params: dict[str, Any] = {"name": self.name, "semanticVersion": self.semanticVersion}
        if self.description is not None:
            params["description"] = self.description
        params["platform"] = self.platform
        if self.osVersion is not None:
            params["osVersion"] = self.osVersion
        if self.vmImportTaskId is not None:  # a row with disks gets its task's, once started
            params["vmImportTaskId"] = self.vmImportTaskId
        if self.tags:
            params["tags"] = dict(self.tags)
        if self.logGroupName is not None:
            params["loggingConfiguration"] = {"logGroupName": self.logGroupName}
        return params
