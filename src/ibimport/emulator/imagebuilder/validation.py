"""The service's checks of a request's parameters, worded as AWS words them.

ImportVmImage's members against apimodel's rules (the ones the manifest checks too, so
the two cannot drift), list filters and version ARNs; each problem is a "Value ... at
'path' failed to satisfy constraint: ..." line, and every problem of a request is
reported together in one ``InvalidParameterValueException``, as the service does.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from ibimport.domain.apimodel import (
    IMAGE_NAME_SHAPE,
    IMPORT_LOG_GROUP_PREFIX,
    REQUEST_FIELDS,
    ImportVmImageRules,
    StringRule,
    Violation,
    import_vm_image_rules,
    log_group_problem,
    name_problem,
    service_model,
)
from ibimport.emulator.exceptions import (
    InvalidParameterValueException,
    InvalidRequestException,
    SerializationException,
)

__all__ = ["check_version_arn", "parse_filters", "validate_import_request", "violation"]

# Version ARNs from the model's ImageVersionArn shape.
_VERSION_ARN = re.compile(
    r"^arn:aws[^:]*:imagebuilder:[^:]+:(?:[0-9]{12}|aws(?:-[a-z-]+)?):image/[a-z0-9-_]+/"
    r"[0-9]+\.[0-9]+\.[0-9]+$"
)
_FILTER_NAMES = frozenset({"name", "version", "platform", "osVersion", "type"})
# The image name rule's words in AWS's validator form (the rule itself is apimodel's).
_NAME_CONSTRAINT = (
    "Member must satisfy regular expression pattern: "
    + service_model()["shapes"][IMAGE_NAME_SHAPE]["pattern"]
)


def violation(path: str, value: object, *, constraint: str) -> str:
    """One violation in AWS's words; ``None`` is a missing member."""
    shown = "null" if value is None else f"'{_java_repr(value)}'"
    return f"Value {shown} at '{path}' failed to satisfy constraint: {constraint}"


def _java_repr(value: object) -> str:
    # AWS echoes a map as Java prints it: {k=v, k2=v2}.
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}={v}" for k, v in value.items()) + "}"
    return str(value)


def validate_import_request(body: object) -> dict[str, Any]:
    """Check an ImportVmImage body against the service model; return the known members.

    Every violation is reported at once, as AWS does, so a caller fixes a row in one go.
    """
    if not isinstance(body, dict):
        raise SerializationException("Start of structure or map found where not expected.")
    rules = import_vm_image_rules()
    problems: list[str] = []
    params: dict[str, Any] = {}
    for name in REQUEST_FIELDS:
        value = body.get(name)
        if value is None:
            if name in rules.required:
                problems.append(violation(name, None, constraint="Member must not be null"))
            continue
        params[name] = value
        if name == "semanticVersion":
            found: Violation | None = rules.check_semantic_version(value)
        elif name == "tags":
            problems.extend(_tag_problems(value, rules))
            continue
        elif name == "loggingConfiguration":
            problems.extend(_logging_problems(value, rules.log_group_name))
            continue
        else:
            found = rules.fields[name].check(value)
        if found is not None:
            problems.append(violation(name, value, constraint=found.aws_constraint))
        elif name == "name" and name_problem(value) is not None:
            # The image's name is a ResourceName (current model), stricter than the
            # request's NonEmptyString.
            problems.append(violation(name, value, constraint=_NAME_CONSTRAINT))
    if problems:
        raise InvalidParameterValueException.of(problems)
    return params


def _tag_problems(tags: object, rules: ImportVmImageRules) -> Iterator[str]:
    if not isinstance(tags, dict):
        yield violation("tags", tags, constraint="Member must be a map")
        return
    low, high = rules.tags_min, rules.tags_max
    if len(tags) < low:
        yield violation(
            "tags", tags, constraint=f"Member must have length greater than or equal to {low}"
        )
    if len(tags) > high:
        yield violation(
            "tags", tags, constraint=f"Member must have length less than or equal to {high}"
        )
    key_rule, value_rule = rules.tag_key, rules.tag_value
    key_problems = [v.aws_constraint for k in tags if (v := key_rule.check(k)) is not None]
    value_problems = [
        v.aws_constraint for val in tags.values() if (v := value_rule.check(val)) is not None
    ]
    if key_problems:
        shown = ", ".join(dict.fromkeys(key_problems))
        yield violation("tags", tags, constraint=f"Map keys must satisfy constraint: [{shown}]")
    if value_problems:
        shown = ", ".join(dict.fromkeys(value_problems))
        yield violation("tags", tags, constraint=f"Map value must satisfy constraint: [{shown}]")


def _logging_problems(config: object, rule: StringRule) -> Iterator[str]:
    if not isinstance(config, dict):
        yield violation("loggingConfiguration", config, constraint="Member must be a structure")
        return
    name = config.get("logGroupName")
    if name is None:
        return
    if (found := rule.check(name)) is not None:
        yield violation("loggingConfiguration.logGroupName", name, constraint=found.aws_constraint)
    elif log_group_problem(name) is not None:  # ImportVmImage only (current model)
        yield violation(
            "loggingConfiguration.logGroupName",
            name,
            constraint=f"Member must be within the {IMPORT_LOG_GROUP_PREFIX} namespace",
        )


def parse_filters(raw: object) -> dict[str, frozenset[str]]:
    """Turn a FilterList into name -> accepted values, checking it as the model says."""
    if raw is None:
        return {}
    if not isinstance(raw, list) or not 1 <= len(raw) <= 10:
        raise InvalidParameterValueException.of(
            [violation("filters", raw, constraint="Member must have length between 1 and 10")]
        )
    filters: dict[str, frozenset[str]] = {}
    for item in raw:
        name = item.get("name") if isinstance(item, dict) else None
        values = item.get("values") if isinstance(item, dict) else None
        if name not in _FILTER_NAMES:
            raise InvalidRequestException(f"The filter name {name!r} is not supported.")
        if not isinstance(values, list) or not 1 <= len(values) <= 10:
            raise InvalidParameterValueException.of(
                [
                    violation(
                        "filters.values",
                        values,
                        constraint="Member must have length between 1 and 10",
                    )
                ]
            )
        filters[name] = frozenset(str(v) for v in values)
    return filters


def check_version_arn(arn: object, path: str) -> str:
    """A version ARN as ListImageBuildVersions requires it."""
    if not isinstance(arn, str) or _VERSION_ARN.match(arn) is None:
        raise InvalidParameterValueException.of(
            [
                violation(
                    path,
                    arn,
                    constraint="Member must satisfy regular expression pattern: "
                    + _VERSION_ARN.pattern,
                )
            ]
        )
    return arn
