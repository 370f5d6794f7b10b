"""The ImportVmImage constraints, read from the service model that botocore ships.

The manifest validator and the emulator both check requests against these rules, so
the two can never drift apart from each other or from the service. A few rules are
not in botocore's model, or were relaxed by the service after the model bundled with
the botocore that aiobotocore pins; those are listed once, in ``_CURRENT_SERVICE``.
"""

from __future__ import annotations

import re
import sys
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any, NamedTuple

import botocore.loaders

SERVICE = "imagebuilder"
OPERATION = "ImportVmImage"

#: Image Builder documents each semanticVersion node as 0..2^30-1; the model has only a regex.
VERSION_NODE_MAX = 1_073_741_823

# Rules of the current service that older bundled models state differently.
# ClientToken grew from 36 to 64 characters; TagKey's pattern was widened.
_CURRENT_SERVICE: dict[str, dict[str, Any]] = {
    "ClientToken": {"max": 64},
    "TagKey": {"pattern": r"^(?!aws:)[a-zA-Z0-9\s_.:/=+\-@]*$"},
}

#: The request members a manifest row maps onto, in API order.
REQUEST_FIELDS = (
    "name",
    "semanticVersion",
    "description",
    "platform",
    "osVersion",
    "vmImportTaskId",
    "tags",
    "clientToken",
    "loggingConfiguration",
)


@dataclass(frozen=True, slots=True)
class Violation:
    """Why one value broke one rule, phrased for our users and as AWS phrases it."""

    rule: str
    aws_constraint: str


@dataclass(frozen=True, slots=True)
class StringRule:
    """A string shape's length, pattern and enum constraints."""

    shape: str
    min_len: int | None = None
    max_len: int | None = None
    pattern: str | None = None
    enum: tuple[str, ...] | None = None

    def check(self, value: object) -> Violation | None:
        """Return the first rule ``value`` breaks, or None when it satisfies them all."""
        if not isinstance(value, str):
            return Violation("must be a string", "Member must be a string")
        if self.min_len is not None and len(value) < self.min_len:
            return Violation(
                f"must be at least {self.min_len} characters",
                f"Member must have length greater than or equal to {self.min_len}",
            )
        if self.max_len is not None and len(value) > self.max_len:
            return Violation(
                f"must be at most {self.max_len} characters",
                f"Member must have length less than or equal to {self.max_len}",
            )
        if self.enum is not None and value not in self.enum:
            return Violation(
                f"must be one of {', '.join(self.enum)}",
                f"Member must satisfy enum value set: [{', '.join(self.enum)}]",
            )
        # fullmatch, not search: Python's "$" would also accept a trailing newline.
        if self.pattern is not None and _compiled(self.pattern).fullmatch(value) is None:
            return Violation(
                f"must match {self.pattern}",
                f"Member must satisfy regular expression pattern: {self.pattern}",
            )
        return None


@dataclass(frozen=True, slots=True)
class ImportVmImageRules:
    """Every constraint on an ImportVmImage request."""

    required: frozenset[str]
    fields: dict[str, StringRule]
    log_group_name: StringRule
    tags_min: int
    tags_max: int
    tag_key: StringRule
    tag_value: StringRule

    def check_semantic_version(self, value: object) -> Violation | None:
        """Check the pattern, then each node's documented range."""
        violation = self.fields["semanticVersion"].check(value)
        if violation is not None or not isinstance(value, str):
            return violation
        return check_version_nodes(value)


_NODE_DIGITS = len(str(VERSION_NODE_MAX))
# No run of _NODE_DIGITS digits: every node is shorter than VERSION_NODE_MAX, so in range.
_LONG_NODE = re.compile(f"[0-9]{{{_NODE_DIGITS}}}")
_NODE_VIOLATION = Violation(
    f"each version node must be between 0 and {VERSION_NODE_MAX}",
    f"Member must have each version node less than or equal to {VERSION_NODE_MAX}",
)


def check_version_nodes(value: str) -> Violation | None:
    """The node range rule alone, for a value that already matches the version pattern.

    The manifest checks the pattern itself (through pydantic) and needs only this part;
    most versions have short nodes, so one regex search answers them.
    """
    if _LONG_NODE.search(value) is None:
        return None
    if any(_node_too_large(node) for node in value.split(".")):
        return _NODE_VIOLATION
    return None


def _node_too_large(node: str) -> bool:
    """Compare by length first: int() of a 5,000-digit node raises instead of answering."""
    digits = node.lstrip("0")
    return len(digits) > _NODE_DIGITS or int(digits or "0") > VERSION_NODE_MAX


@cache
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _string_rule(shapes: dict[str, Any], shape_name: str) -> StringRule:
    shape = {**shapes[shape_name], **_CURRENT_SERVICE.get(shape_name, {})}
    enum = shape.get("enum")
    return StringRule(
        shape=shape_name,
        min_len=shape.get("min"),
        max_len=shape.get("max"),
        pattern=shape.get("pattern"),
        enum=tuple(enum) if enum else None,
    )


@cache
def service_model() -> dict[str, Any]:
    """The raw Image Builder service model bundled with the installed botocore."""
    model: dict[str, Any] = botocore.loaders.Loader().load_service_model(SERVICE, "service-2")
    return model


@cache
def import_vm_image_rules() -> ImportVmImageRules:
    """Derive the ImportVmImage rules once per process from botocore's service model."""
    shapes: dict[str, Any] = service_model()["shapes"]
    request = shapes[service_model()["operations"][OPERATION]["input"]["shape"]]
    members = request["members"]
    fields = {
        name: _string_rule(shapes, members[name]["shape"])
        for name in REQUEST_FIELDS
        if name not in ("tags", "loggingConfiguration")
    }
    logging_shape = shapes[members["loggingConfiguration"]["shape"]]
    tag_map = shapes[members["tags"]["shape"]]
    return ImportVmImageRules(
        required=frozenset(request.get("required", ())),
        fields=fields,
        log_group_name=_string_rule(shapes, logging_shape["members"]["logGroupName"]["shape"]),
        tags_min=int(tag_map.get("min", 0)),
        tags_max=int(tag_map["max"]),
        tag_key=_string_rule(shapes, tag_map["key"]["shape"]),
        tag_value=_string_rule(shapes, tag_map["value"]["shape"]),
    )


# --- An image's identity, and the names an image may have (current service model) --------
#
# From the current model (botocore 1.44.8, ImportVmImage ``name``): "Image Builder generates
# the image ARN from a normalized form of the name, so names that differ only in case,
# spaces, or underscores count as the same name. If an image with the same name and
# semantic version already exists in your account in the same Region, the import creates
# a new build version for it." The resulting Image's ``name`` is a ``ResourceName``, and
# "for ImportVmImage, the log group name must be within the /aws/imagebuilder/ namespace".

#: The shape of an Image's name; an imported image gets the request's name.
IMAGE_NAME_SHAPE = "ResourceName"
#: Where an ImportVmImage log group must live (current model).
IMPORT_LOG_GROUP_PREFIX = "/aws/imagebuilder/"
#: List pages: 25 by default; the current model raised RestrictedInteger's max from 25 to 100.
LIST_PAGE_DEFAULT = 25
LIST_PAGE_MAX = 100

_NOT_NAME_CHARACTER = re.compile(r"[^-_A-Za-z0-9 ]")


class ImageIdentity(NamedTuple):
    """What makes two imports the same image in one account and Region."""

    name: str  # normalised: see ``normalised_name``
    semantic_version: str


def normalised_name(name: str) -> str:
    """The form of a name the service derives the ARN from: lowercase, spaces and
    underscores as hyphens (the form that appears in ``.../image/<name>/...``)."""
    return name.lower().replace(" ", "-").replace("_", "-")


def image_identity(name: str, semantic_version: str) -> ImageIdentity:
    """The one definition of "the same image": used by the manifest's duplicate check, the
    emulator's ARNs and build numbering, and the lookups that find an existing build."""
    return ImageIdentity(normalised_name(name), semantic_version)


def name_problem(name: str) -> str | None:
    """Why no image may have this name, in words a person can act on, or None if it fits.

    The rule is the ``ResourceName`` pattern: 3 to 128 letters, digits, hyphens,
    underscores, with spaces only inside. VM inventories are full of FQDNs, so the message
    names the first character that breaks it and suggests a name that would fit.
    """
    if _image_name_check()(name):
        return None
    bad = _NOT_NAME_CHARACTER.search(name)
    if bad is not None:
        why = f"{bad.group()!r} at position {bad.start() + 1} is not allowed"
    elif len(name) < 3:
        why = "it must be at least 3 characters"
    elif len(name) > 128:
        why = "it must be at most 128 characters"
    else:
        why = "it must not start or end with a space"
    text = (
        f"{why}: an image name is 3 to 128 letters, digits, hyphens, underscores and inner spaces"
    )
    suggestion = suggested_name(name)
    return f"{text}; try {suggestion!r}" if suggestion else text


def suggested_name(name: str) -> str | None:
    """A name close to ``name`` that the rule accepts, or None if nothing sensible is left."""
    # Accents dropped first (Café -> Cafe), then what is left that no name may hold.
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    fitted = _NOT_NAME_CHARACTER.sub("-", ascii_name).strip()[:128].strip()
    fitted = re.sub(r"-{2,}", "-", fitted).strip("-") or ""
    if len(fitted) < 3 or _image_name_rule().check(fitted) is not None:
        return None
    return fitted


def log_group_problem(log_group_name: str) -> str | None:
    """The current model's ImportVmImage-only rule; the pattern is checked with the others."""
    if log_group_name.startswith(IMPORT_LOG_GROUP_PREFIX):
        return None
    return f"must be within {IMPORT_LOG_GROUP_PREFIX} (ImportVmImage's log groups live there)"


@cache
def _image_name_rule() -> StringRule:
    return _string_rule(service_model()["shapes"], IMAGE_NAME_SHAPE)


@cache
def _image_name_check() -> Callable[[str], bool]:
    """``_image_name_rule().check(name) is None``, the rule's parts bound once (every row
    of a manifest is checked against it)."""
    rule = _image_name_rule()
    low, high = rule.min_len or 0, rule.max_len or sys.maxsize
    match = _compiled(rule.pattern).fullmatch if rule.pattern is not None else None
    assert rule.enum is None  # a name is no enum: the bound form has no enum test

    def fits(name: str) -> bool:
        return low <= len(name) <= high and (match is None or match(name) is not None)

    return fits


# --- Where an image is imported ------------------------------------------------------------

#: An AWS Region's name (us-east-1, eu-central-2, us-gov-west-1, cn-north-1), as botocore's
#: partitions spell them; a manifest row's ``region`` is checked against it.
REGION_PATTERN = r"^[a-z]{2,4}(-[a-z]+)+-[0-9]{1,2}$"
#: A profile name in the AWS config file: any text without spaces or brackets.
PROFILE_PATTERN = r"^[^\s\[\]]{1,128}$"
