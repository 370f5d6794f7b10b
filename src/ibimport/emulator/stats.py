"""What ``GET /_emulator/stats`` reports: the requests counted, and what the services did.

The exactly-once tests assert on the service's own figures (images, duplicate builds,
replayed tokens, import tasks), in all and per Region; request handling only counts
(``RequestCounts``), and the document is put together here.
"""

from __future__ import annotations

from typing import Any

from ibimport.emulator.ec2.models import ImportTasks
from ibimport.emulator.faults import Faults
from ibimport.emulator.imagebuilder.models import ImageBuilderBackend

__all__ = ["RequestCounts", "stats_document"]


class RequestCounts:
    """Requests by operation (in all and per Region) and error answers by code."""

    __slots__ = ("by_region", "errors", "requests")

    def __init__(self) -> None:
        self.requests: dict[str, int] = {}
        self.by_region: dict[str, dict[str, int]] = {}
        self.errors: dict[str, int] = {}

    def request(self, name: str, region: str) -> None:
        """One call of operation ``name`` in ``region``: the hot path of every request."""
        requests = self.requests
        requests[name] = requests.get(name, 0) + 1
        by_region = self.by_region.get(region)
        if by_region is None:
            by_region = self.by_region[region] = {}
        by_region[name] = by_region.get(name, 0) + 1

    def error(self, code: str) -> None:
        """One error answered with ``code``."""
        self.errors[code] = self.errors.get(code, 0) + 1

    def clear(self) -> None:
        """Start counting again from nothing."""
        self.requests.clear()
        self.by_region.clear()
        self.errors.clear()


def stats_document(
    counts: RequestCounts, *, backend: ImageBuilderBackend, faults: Faults, tasks: ImportTasks
) -> dict[str, Any]:
    """The counters ``GET /_emulator/stats`` reports."""
    return {
        "requests": dict(counts.requests),
        "throttled": faults.throttled,
        "faults": faults.faults,
        "dropped": faults.dropped,
        "droppedBefore": faults.dropped_before,
        "truncated": faults.truncated,
        "slowed": faults.slowed,
        "errors": dict(counts.errors),
        "images": backend.images,
        "duplicateBuilds": backend.duplicate_builds,
        "reimportsOverFailed": backend.reimports_over_failed,
        "idempotentReplays": backend.idempotent_replays,
        "shortPages": backend.pager.short_pages,
        "importTasks": _sum_import_stats([tasks.import_stats(scope) for scope in tasks.imports]),
        "regions": _region_stats(counts, backend=backend, faults=faults, tasks=tasks),
    }


def _region_stats(
    counts: RequestCounts, *, backend: ImageBuilderBackend, faults: Faults, tasks: ImportTasks
) -> dict[str, dict[str, Any]]:
    """Per region: requests by operation, throttled calls, images, duplicate builds,
    and the import tasks ImportImage started (summed over accounts, and by account)."""
    by_region: dict[str, dict[str, dict[str, float | int]]] = {}
    for scope in tasks.imports:
        stats = tasks.import_stats(scope)
        by_region.setdefault(scope.region, {})[scope.account] = stats
    regions = set(counts.by_region) | set(backend.images_by_region) | set(by_region)
    return {
        region: {
            "requests": dict(counts.by_region.get(region, {})),
            "throttled": faults.throttled_by_region.get(region, 0),
            "images": backend.images_by_region.get(region, 0),
            "duplicateBuilds": backend.duplicates_by_region.get(region, 0),
            "reimportsOverFailed": backend.reimports_by_region.get(region, 0),
            "importTasks": _sum_import_stats(list(by_region.get(region, {}).values())),
            "importTasksByAccount": by_region.get(region, {}),
        }
        for region in sorted(regions)
    }


def _sum_import_stats(each: list[dict[str, float | int]]) -> dict[str, float | int]:
    """The import-task counters of several accounts (or Regions) together; ``maxActive``
    is the largest one's, as the slots are each account's in each Region."""
    keys = (
        "started", "replays", "duplicates", "active", "maxActive", "quotaRefusals",
        "completed", "deleted", "cancelled", "busySlotSeconds",
    )  # fmt: skip
    total: dict[str, float | int] = {key: 0 for key in keys}
    for stats in each:
        for key in keys:
            if key == "maxActive":
                total[key] = max(total[key], stats[key])
            else:
                total[key] += stats[key]
    total["busySlotSeconds"] = round(total["busySlotSeconds"], 3)
    return total
