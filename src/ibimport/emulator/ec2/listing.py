"""DescribeImportImageTasks' listing: its filters, a task as it answers it, and its pages.

A page token is a place in the unfiltered lists (the declared tasks, then the ones started
in the account and Region), so a page never skips a task whose state changed since the
last page; the filters hold for named tasks too. The current EC2 model documents only the
``task-state`` filter; ``tag:KEY`` and ``tag-key`` are EC2's usual tag filters (whether
EC2 honours them on this call is not documented: a guess). No HTTP here.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ibimport.emulator.ec2.lifecycle import TaskState
from ibimport.emulator.exceptions import InvalidParameterValue

__all__ = ["STATE_FILTER", "STATE_FILTER_VALUES", "DescribedTask", "TagFilter", "page"]

#: The filter DescribeImportImageTasks takes, and its values (current EC2 model's docs).
STATE_FILTER = "task-state"
STATE_FILTER_VALUES = frozenset({"active", "completed", "deleting", "deleted"})

_Task = TypeVar("_Task")


@dataclass(frozen=True, slots=True)
class TagFilter:
    """DescribeImportImageTasks' tag filters: ``tag:KEY`` values and ``tag-key`` keys."""

    values: Mapping[str, frozenset[str]] = field(default_factory=dict)
    keys: frozenset[str] | None = None

    def matches(self, tags: Mapping[str, str]) -> bool:
        """Every filter holds (each filter's values are alternatives)."""
        if self.keys is not None and self.keys.isdisjoint(tags):
            return False
        return all(tags.get(key) in wanted for key, wanted in self.values.items())

    def __bool__(self) -> bool:
        return bool(self.values) or self.keys is not None


@dataclass(frozen=True, slots=True, kw_only=True)
class DescribedTask:
    """A task as DescribeImportImageTasks answers it at one moment."""

    task_id: str
    status: TaskState
    message: str | None
    progress: str | None
    image_id: str | None
    #: ImportImage's members it echoes (description, platform, snapshotDetailSet...).
    echo: Mapping[str, Any] = field(default_factory=dict)
    tags: Mapping[str, str] = field(default_factory=dict)


def page(
    parts: Sequence[Sequence[_Task]],
    describe: Callable[[_Task], DescribedTask | None],
    *,
    states: frozenset[str] | None,
    tags: TagFilter | None,
    max_results: int | None,
    next_token: str | None,
) -> tuple[list[DescribedTask], str | None]:
    """One page of the tasks of ``parts`` in order, each as ``describe`` shows it (None: no
    longer listed), that pass the filters; and the token of the next page, if any."""
    part, index = _decode_token(next_token, [len(p) for p in parts])
    found: list[DescribedTask] = []
    for number in range(part, len(parts)):
        items = parts[number]
        for position in range(index if number == part else 0, len(items)):
            row = describe(items[position])
            if row is None:
                continue
            if states is not None and row.status.value not in states:
                continue
            if tags and not tags.matches(row.tags):
                continue
            if max_results is not None and len(found) == max_results:
                return found, _encode_token(number, position)
            found.append(row)
    return found, None


def _encode_token(part: int, index: int) -> str:
    return base64.urlsafe_b64encode(f"tasks:{part}:{index}".encode()).decode()


def _decode_token(token: str | None, lengths: list[int]) -> tuple[int, int]:
    if token is None:
        return 0, 0
    try:
        kind, part, index = base64.urlsafe_b64decode(token.encode()).decode().split(":")
        where = (int(part), int(index))
    except (binascii.Error, UnicodeDecodeError, ValueError):
        where, kind = (-1, -1), ""
    if kind != "tasks" or not (0 <= where[0] < len(lengths) and 0 <= where[1] <= lengths[where[0]]):
        raise InvalidParameterValue(f"The value ({token}) for parameter NextToken is invalid.")
    return where
