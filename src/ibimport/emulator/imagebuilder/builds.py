"""One build of an imported image: what it records, the state it shows at any moment, and
where one account keeps its builds in one Region.

An image follows its EC2 import task (``TaskOutcome``, which ``ec2.models`` answers): its
state at any moment is a pure function of the clock, the build and that outcome
(``build_state``), so tests move a fake clock instead of waiting. ``RegionState``'s lists
are append-only, so a page token can be an index into them (``listing``). No HTTP here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NamedTuple

__all__ = [
    "CANCELLED_REASON",
    "FINAL_STATUSES",
    "BuildKind",
    "BuildState",
    "ImageBuild",
    "RegionState",
    "TaskOutcome",
    "TokenRecord",
    "build_state",
    "format_date",
]


class TaskOutcome(NamedTuple):
    """What an image learns of its EC2 import task (``ec2.models``): when the task
    completed (``-inf``: before anything; None: never), or why it failed and when
    (``-inf``: before anything)."""

    completed_at: float | None
    failure: str | None
    failed_at: float = -float("inf")


def format_date(epoch: float) -> str:
    """Image Builder's DateTime strings: ISO 8601 UTC with milliseconds."""
    millis = int(epoch * 1000) % 1000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch)) + f".{millis:03d}Z"


class BuildKind(StrEnum):
    """What a new build is beside its version's earlier builds."""

    FIRST = "first"
    #: Beside a build that stands (AVAILABLE or on its way): what ibimport exists to prevent.
    DUPLICATE = "duplicate"
    #: Over builds that all FAILED or were CANCELLED: the documented recovery.
    REIMPORT = "reimport"


#: The statuses an import ends in (current model): nothing changes an image after them.
FINAL_STATUSES = frozenset({"AVAILABLE", "FAILED", "CANCELLED"})
#: The emulator's own words and stage for a failed import: AWS documents neither.
CANCELLED_REASON = "Image creation was cancelled by CancelImageCreation."
_FAILED_AT = "CREATING"


@dataclass(frozen=True, slots=True)
class BuildState:
    """An image's ``state`` now: status, reason, and ``failureContext`` once FAILED."""

    status: str
    reason: str | None = None
    failure_context: dict[str, Any] | None = None


@dataclass(slots=True, kw_only=True)
class ImageBuild:
    """One build of an imported image: what GetImage and ListImageBuildVersions describe."""

    arn: str
    version_arn: str
    name: str
    version: str
    build: int
    platform: str
    os_version: str | None
    description: str | None
    vm_import_task_id: str
    tags: dict[str, str]
    logging: dict[str, Any] | None
    owner: str
    created: float
    kind: BuildKind = field(default_factory=lambda: BuildKind.FIRST)
    #: When CancelImageCreation stopped it (None: never).
    cancelled_at: float | None = None

    def to_state(self) -> dict[str, Any]:
        """This build as the state file stores it."""
        return {
            "kind": self.kind.value,
            "cancelledAt": self.cancelled_at,
            "arn": self.arn,
            "versionArn": self.version_arn,
            "name": self.name,
            "version": self.version,
            "build": self.build,
            "platform": self.platform,
            "osVersion": self.os_version,
            "description": self.description,
            "vmImportTaskId": self.vm_import_task_id,
            "tags": self.tags,
            "logging": self.logging,
            "owner": self.owner,
            "created": self.created,
        }

    @classmethod
    def from_state(cls, data: dict[str, Any]) -> ImageBuild:
        """A build read back from the state file."""
        return cls(
            arn=data["arn"],
            version_arn=data["versionArn"],
            name=data["name"],
            version=data["version"],
            build=int(data["build"]),
            platform=data["platform"],
            os_version=data.get("osVersion"),
            description=data.get("description"),
            vm_import_task_id=data["vmImportTaskId"],
            tags=dict(data.get("tags") or {}),
            logging=data.get("logging"),
            owner=data["owner"],
            created=float(data["created"]),
            # A state file from before issue 22 knows only first and later builds.
            kind=BuildKind(
                data.get("kind") or ("first" if int(data["build"]) == 1 else "duplicate")
            ),
            cancelled_at=data.get("cancelledAt"),
        )


def build_state(
    build: ImageBuild, outcome: TaskOutcome, *, now: float, available_after_s: float
) -> BuildState:
    """The state at ``now`` of a build not cancelled; the image follows its import task.

    From when both the build exists and its task completed: PENDING for the first fifth
    of ``available_after_s``, then CREATING, then AVAILABLE (PENDING while the task is
    active). A task that failed (deleted) or does not exist: from when both the build
    exists and the task ended, PENDING, CREATING, then FAILED with the task's message
    as the reason and ``failureContext.imageStatus`` CREATING, two fifths in, as Image
    Builder finds out only when it reads the task.
    """
    after = available_after_s
    if outcome.completed_at is None:
        failed = max(build.created, outcome.failed_at)
        if now < failed:
            return BuildState("PENDING")
        elapsed = now - failed
        if after > 0 and elapsed < 2 * after / 5:
            return BuildState("PENDING" if elapsed < after / 5 else "CREATING")
        reason = outcome.failure or "The import task failed."
        return BuildState("FAILED", reason, {"imageStatus": _FAILED_AT})
    start = max(build.created, outcome.completed_at)
    if now < start:
        return BuildState("PENDING")
    elapsed = now - start
    if after <= 0 or elapsed >= after:
        return BuildState("AVAILABLE")
    return BuildState("PENDING" if elapsed < after / 5 else "CREATING")


@dataclass(slots=True, kw_only=True)
class TokenRecord:
    """What a clientToken promised: the request it came with and the image it made."""

    request: dict[str, Any]
    image_arn: str
    expires: float


@dataclass(slots=True)
class RegionState:
    """Everything one account owns in one region."""

    # Version ARN -> its builds, in creation order; the lists of versions and of all
    # builds are append-only so that a page token can be an index into them.
    builds_by_version: dict[str, list[ImageBuild]] = field(default_factory=dict)
    versions: list[str] = field(default_factory=list)
    all_builds: list[ImageBuild] = field(default_factory=list)
    builds: dict[str, ImageBuild] = field(default_factory=dict)
    # Image ARN (".../image/<name>") -> its version ARNs, for wildcard GetImage.
    versions_by_image: dict[str, list[str]] = field(default_factory=dict)
    # Image ARNs in creation order (append-only: ListImages byName pages it).
    image_arns: list[str] = field(default_factory=list)
    # Insertion order is expiry order (one TTL for all), so expired tokens are a prefix.
    tokens: dict[str, TokenRecord] = field(default_factory=dict)
    # CancelImageCreation's clientTokens -> the build ARN each cancelled.
    cancel_tokens: dict[str, str] = field(default_factory=dict)

    def add(self, build: ImageBuild) -> None:
        """Record a build."""
        siblings = self.builds_by_version.get(build.version_arn)
        if siblings is None:
            siblings = self.builds_by_version[build.version_arn] = []
            self.versions.append(build.version_arn)
            image_arn = build.version_arn.rpartition("/")[0]
            if image_arn not in self.versions_by_image:
                self.image_arns.append(image_arn)
            self.versions_by_image.setdefault(image_arn, []).append(build.version_arn)
        siblings.append(build)
        self.all_builds.append(build)
        self.builds[build.arn] = build
