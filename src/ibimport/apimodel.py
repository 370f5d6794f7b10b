"""The ImportVmImage constraints, read from the service model that botocore ships.

The manifest validator and the emulator both check requests against these rules, so
the two can never drift apart from each other or from the service. A few rules are
not in botocore's model, or were relaxed by the service after the model bundled with
the botocore that aiobotocore pins; those are listed once, in ``_CURRENT_SERVICE``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from typing import Any

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
