"""AWS's query protocol, which EC2 and STS speak on the same endpoint as Image Builder.

A query call is a form-encoded ``POST /`` with ``Action`` and ``Version``; its answer is
XML. This module parses the form (numbered lists such as ``ImportTaskId.N`` and
``Filter.N.Name``/``Filter.N.Value.M``) and writes XML elements; ``ec2.responses`` and
``sts.responses`` hold each service's operations, error shape and error codes, and
``server`` picks the service from the Action (or, for an unknown one, the credential
scope's service).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl
from xml.sax.saxutils import escape

from ibimport.emulator.core import Scope
from ibimport.emulator.exceptions import ServiceError

__all__ = [
    "QueryCall",
    "QueryService",
    "element",
    "filters",
    "is_query",
    "numbered",
    "parse_form",
]

FORM = "application/x-www-form-urlencoded"
# EC2 documents Filter.N.Name / Filter.N.Value.M; for DescribeImportImageTasks botocore
# sends Filters.N.Name / Filters.N.Value.M (the member has no locationName): both are read.
_FILTER = re.compile(r"^Filters?\.([0-9]+)\.(Name|Values?\.([0-9]+))$")


@dataclass(frozen=True, slots=True, kw_only=True)
class QueryCall:
    """One authenticated query call: whose it is, where, and its form parameters."""

    scope: Scope
    request_id: str
    params: Mapping[str, str]
    access_key: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class QueryService:
    """What the server needs to know of one query-protocol service."""

    #: The SigV4 signing name its calls are scoped to.
    signing_name: str
    #: Whether ``--verify-signatures`` checks the scope's region (STS is global).
    regional: bool
    #: Action -> handler(target, call); the server passes the service's own model.
    actions: Mapping[str, Callable[[Any, QueryCall], bytes]]
    #: The error this service answers for one the shared layers raised (auth, quota).
    translate: Callable[[ServiceError], ServiceError]
    #: Status and XML body of an error answer.
    render_error: Callable[[ServiceError, str], tuple[int, bytes]]
    #: The error for an Action it does not serve.
    unknown_action: Callable[[str], ServiceError]


def is_query(method: str, path: str, content_type: str) -> bool:
    """Whether a request is a query-protocol call (a form POST to ``/``)."""
    return method == "POST" and path == "/" and content_type.startswith(FORM)


def parse_form(body: bytes) -> dict[str, str]:
    """The form's parameters; a name given twice keeps its last value."""
    return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))


def numbered(params: Mapping[str, str], prefix: str) -> list[str]:
    """The values of ``PREFIX.1``, ``PREFIX.2``, ... in the order of their numbers."""
    items = []
    start = prefix + "."
    for name, value in params.items():
        if name.startswith(start) and name[len(start) :].isdigit():
            items.append((int(name[len(start) :]), value))
    return [value for _, value in sorted(items)]


def filters(params: Mapping[str, str]) -> dict[str, list[str]]:
    """``Filter.N.Name`` and its ``Filter.N.Value.M`` (or ``Filters.N...``) as {name: values}."""
    names: dict[int, str] = {}
    values: dict[int, list[tuple[int, str]]] = {}
    for key, value in params.items():
        found = _FILTER.match(key)
        if found is None:
            continue
        n = int(found.group(1))
        if found.group(2) == "Name":
            names[n] = value
        else:
            values.setdefault(n, []).append((int(found.group(3)), value))
    return {names[n]: [v for _, v in sorted(values.get(n, []))] for n in sorted(names)}


def element(tag: str, text: str | int | None) -> str:
    """``<tag>text</tag>`` with the text escaped; nothing for None."""
    if text is None:
        return ""
    return f"<{tag}>{escape(str(text))}</{tag}>"
