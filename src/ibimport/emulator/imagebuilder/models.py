"""The emulator's state and behaviour: images, builds and client tokens, with no HTTP.

One ``ImageBuilderBackend`` per server instance holds a ``RegionState`` per (account,
region), as Image Builder scopes resources. Every time-dependent rule (token lifetime,
image state) reads the injected clock, so tests move time instead of sleeping.
Errors are the ``exceptions`` classes, which ``responses`` renders in AWS's error shape.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NamedTuple

from ibimport.domain.apimodel import (
    IMAGE_NAME_SHAPE,
    image_identity,
    service_model,
)
from ibimport.emulator.core import Clock, Companion, Scope
from ibimport.emulator.exceptions import (
    IdempotentParameterMismatchException,
    InvalidRequestException,
    ResourceNotFoundException,
)
from ibimport.emulator.imagebuilder.paging import Pager, decode_page_token

STATE_FORMAT = 1

# Version ARNs from the model's ImageVersionArn / ImageVersionArnOrBuildVersionArn shapes.
_VERSION_ARN = re.compile(
    r"^arn:aws[^:]*:imagebuilder:[^:]+:(?:[0-9]{12}|aws(?:-[a-z-]+)?):image/[a-z0-9-_]+/"
    r"[0-9]+\.[0-9]+\.[0-9]+$"
)
# A GetImage ARN naming a version, or a wildcard one (x.x.x, 1.x.x, 1.2.x), split into the
# image's ARN and the three nodes; a build ARN does not match (current model).
_VERSION_OR_WILDCARD_ARN = re.compile(
    r"^(arn:aws[^:]*:imagebuilder:[^:]+:[^:]+:image/[a-z0-9-_]+)/"
    r"([0-9]+|x)\.([0-9]+|x)\.([0-9]+|x)$"
)
_FILTER_NAMES = frozenset({"name", "version", "platform", "osVersion", "type"})
# The image name rule's words in AWS's validator form (the rule itself is apimodel's).
_NAME_CONSTRAINT = (
    "Member must satisfy regular expression pattern: "
    + service_model()["shapes"][IMAGE_NAME_SHAPE]["pattern"]
)


class TaskOutcome(NamedTuple):
    """What an image learns of its EC2 import task (``ec2.models``): when the task
    completed (``-inf``: before anything; None: never) or why it failed."""

    completed_at: float | None
    failure: str | None


_TASK_COMPLETED = TaskOutcome(completed_at=-float("inf"), failure=None)


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
_NOT_STANDING = frozenset({"FAILED", "CANCELLED"})
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


@dataclass(frozen=True, slots=True, kw_only=True)
class ImportOutcome:
    """The answer to an ImportVmImage call and whether it was a replay."""

    image_arn: str
    client_token: str
    replay: bool


class ImageBuilderBackend:
    """Image Builder's import-related behaviour for all accounts and regions of one server."""

    def __init__(
        self,
        *,
        clock: Clock = time.time,
        token_ttl_s: float = 86400.0,
        available_after_s: float = 0.0,
        task_outcome: Callable[[str], TaskOutcome] = lambda _task_id: _TASK_COMPLETED,
        list_delay_s: float = 0.0,
        pager: Pager | None = None,
    ) -> None:
        self.clock = clock
        self.token_ttl_s = token_ttl_s
        self.available_after_s = available_after_s
        #: A new build appears in the lists this long after it is created (``--list-delay-s``).
        self.list_delay_s = list_delay_s
        self.pager = pager or Pager()
        #: Image Builder reads an image's EC2 import task as the caller (``ec2.models``).
        self.task_outcome = task_outcome
        #: Saved, loaded and reset with the images, under their names.
        self.companions: dict[str, Companion] = {}
        self.regions: dict[Scope, RegionState] = {}
        self.images = 0
        self.duplicate_builds = 0
        self.reimports_over_failed = 0
        self.idempotent_replays = 0
        self.images_by_region: dict[str, int] = {}
        self.duplicates_by_region: dict[str, int] = {}
        self.reimports_by_region: dict[str, int] = {}
        self._dirty = False

    @property
    def dirty(self) -> bool:
        """Whether anything changed since whoever persists the state last cleared it."""
        return self._dirty or any(c.dirty for c in self.companions.values())

    @dirty.setter
    def dirty(self, value: bool) -> None:
        self._dirty = value
        if not value:
            for companion in self.companions.values():
                companion.dirty = False

    def reset(self) -> None:
        """Forget every image, token and counter (and what the companions hold)."""
        self.regions.clear()
        self.images = self.duplicate_builds = self.idempotent_replays = 0
        self.reimports_over_failed = 0
        self.images_by_region.clear()
        self.duplicates_by_region.clear()
        self.reimports_by_region.clear()
        self.pager.reset()
        for companion in self.companions.values():
            companion.reset()
        self.dirty = True

    def _count(self, region: str, kind: BuildKind) -> None:
        self.images_by_region[region] = self.images_by_region.get(region, 0) + 1
        if kind is BuildKind.DUPLICATE:
            self.duplicates_by_region[region] = self.duplicates_by_region.get(region, 0) + 1
        elif kind is BuildKind.REIMPORT:
            self.reimports_by_region[region] = self.reimports_by_region.get(region, 0) + 1

    def _region(self, scope: Scope) -> RegionState:
        state = self.regions.get(scope)
        if state is None:
            state = self.regions[scope] = RegionState()
        return state

    def import_vm_image(self, scope: Scope, params: dict[str, Any]) -> ImportOutcome:
        """Create a build, or replay the one this clientToken already made.

        ``params`` are validated request members. A token is bound to the request it came
        with for ``token_ttl_s``; afterwards it is forgotten and creates a new build.
        """
        now = self.clock()
        account, region = scope
        state = self._region(scope)
        token: str = params["clientToken"]
        request = {k: v for k, v in params.items() if k != "clientToken"}
        tokens = state.tokens
        _expire_tokens(tokens, now)
        record = tokens.get(token)
        if record is not None:
            if record.request != request:
                raise IdempotentParameterMismatchException(
                    f"The client token {token} was used with different request parameters."
                )
            self.idempotent_replays += 1
            return ImportOutcome(image_arn=record.image_arn, client_token=token, replay=True)

        name: str = params["name"]
        version: str = params["semanticVersion"]
        # One image per identity (normalised name + version): "Web 01", "WEB-01" and
        # "web_01" are builds of .../image/web-01/<version>, each keeping its own name.
        identity = image_identity(name, version)
        version_arn = (
            f"arn:aws:imagebuilder:{region}:{account}:image/"
            f"{identity.name}/{identity.semantic_version}"
        )
        siblings = state.builds_by_version.get(version_arn, ())
        build_no = len(siblings) + 1
        kind = BuildKind.FIRST
        if siblings:
            standing = any(self.state_of(b).status not in _NOT_STANDING for b in siblings)
            kind = BuildKind.DUPLICATE if standing else BuildKind.REIMPORT
        build = ImageBuild(
            arn=f"{version_arn}/{build_no}",
            version_arn=version_arn,
            name=name,
            version=version,
            build=build_no,
            platform=params["platform"],
            os_version=params.get("osVersion"),
            description=params.get("description"),
            vm_import_task_id=params["vmImportTaskId"],
            tags=dict(params.get("tags") or {}),
            logging=params.get("loggingConfiguration"),
            owner=account,
            created=now,
            kind=kind,
        )
        state.add(build)
        if kind is BuildKind.DUPLICATE:
            self.duplicate_builds += 1
        elif kind is BuildKind.REIMPORT:
            self.reimports_over_failed += 1
        self._count(region, kind)
        tokens[token] = TokenRecord(
            request=request, image_arn=build.arn, expires=now + self.token_ttl_s
        )
        self.images += 1
        self.dirty = True
        return ImportOutcome(image_arn=build.arn, client_token=token, replay=False)

    def status_of(self, build: ImageBuild) -> str:
        """The build's ``state.status`` now (see ``state_of``)."""
        return self.state_of(build).status

    def state_of(self, build: ImageBuild) -> BuildState:
        """The build's state now; the image follows its import task.

        From when both the build exists and its task completed: PENDING for the first fifth
        of ``available_after_s``, then CREATING, then AVAILABLE (PENDING while the task is
        active). A task that failed (deleted) or does not exist: PENDING, CREATING, then
        FAILED with the reason and ``failureContext.imageStatus`` CREATING, two fifths in,
        as Image Builder finds out only when it reads the task. CancelImageCreation makes
        it CANCELLED from then on (at once: AWS says only that it is asynchronous).
        """
        if build.cancelled_at is not None:
            return BuildState("CANCELLED", CANCELLED_REASON)
        outcome = self.task_outcome(build.vm_import_task_id)
        after = self.available_after_s
        now = self.clock()
        if outcome.completed_at is None:
            elapsed = now - build.created
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

    def cancel_image_creation(self, scope: Scope, arn: str, *, client_token: str) -> None:
        """Stop a build that has not ended; a clientToken makes a retry answer the same.

        Refusing a build that ended is the model's rule ("only ... images in a
        non-terminal state"); the error's code and words are the emulator's guess.
        """
        state = self.regions.get(scope)
        build = None if state is None else state.builds.get(arn)
        if state is None or build is None:
            raise ResourceNotFoundException(f"Resource {arn} does not exist.")
        cancelled = state.cancel_tokens.get(client_token)
        if cancelled is not None:
            if cancelled != arn:
                raise IdempotentParameterMismatchException(
                    f"The client token {client_token} was used with different request parameters."
                )
            return
        status = self.status_of(build)
        if status in FINAL_STATUSES:
            raise InvalidRequestException(
                f"The image {arn} cannot be cancelled because its status is {status}."
            )
        build.cancelled_at = self.clock()
        state.cancel_tokens[client_token] = arn
        self.dirty = True

    def listed(self, build: ImageBuild) -> bool:
        """Whether the lists show the build yet (``list_delay_s`` after its creation)."""
        return self.list_delay_s <= 0 or self.clock() - build.created >= self.list_delay_s

    def get_image(self, scope: Scope, arn: str) -> ImageBuild:
        """The build an ARN names, in any state; a version or wildcard ARN (``1.0.0``,
        ``1.x.x``, ``x.x.x``) names the latest matching build that is AVAILABLE, as the
        current model's ImageVersionArnOrBuildVersionArn describes."""
        state = self.regions.get(scope)
        if state is not None:
            build = state.builds.get(arn)
            if build is not None:
                return build
            wanted = _VERSION_OR_WILDCARD_ARN.match(arn)
            if wanted is not None:
                latest = self._latest_available(state, wanted)
                if latest is not None:
                    return latest
        raise ResourceNotFoundException(f"Resource {arn} does not exist.")

    def _latest_available(self, state: RegionState, wanted: re.Match[str]) -> ImageBuild | None:
        image_arn, *nodes = wanted.groups()
        best: ImageBuild | None = None
        best_key: tuple[int, ...] = ()
        for version_arn in state.versions_by_image.get(image_arn, ()):
            builds = state.builds_by_version[version_arn]
            version = tuple(int(node) for node in builds[0].version.split("."))
            pairs = zip(nodes, version, strict=True)
            if any(want != "x" and int(want) != have for want, have in pairs):
                continue
            for build in reversed(builds):  # the newest build that is AVAILABLE
                if self.status_of(build) == "AVAILABLE":
                    key = (*version, build.build)
                    if best is None or key > best_key:
                        best, best_key = build, key
                    break
        return best

    def list_images(
        self,
        scope: Scope,
        *,
        filters: dict[str, frozenset[str]],
        max_results: int,
        next_token: str | None,
        by_name: bool = False,
    ) -> tuple[list[tuple[str, list[ImageBuild]]], str | None]:
        """One page of image versions matching every filter, each as (ARN, its builds).

        ``by_name`` (current model): one entry per image, its newest listed version
        matching the filters, under the image's ``x.x.x`` ARN (the model's "versionless"
        ARN; which version stands for the name is the emulator's guess).
        """
        state = self.regions.get(scope)
        if state is None:
            decode_page_token(next_token, 0)
            return [], None
        by_version = state.builds_by_version
        if by_name:
            newest: dict[int, str] = {}

            def keep_image(i: int) -> bool:
                versions = [
                    v
                    for v in state.versions_by_image[state.image_arns[i]]
                    if self.listed(by_version[v][0]) and _matches(by_version[v][0], filters)
                ]
                if versions:
                    newest[i] = max(versions, key=_version_key)
                return bool(versions)

            start = decode_page_token(next_token, len(state.image_arns))
            indexes, token = self.pager.page(
                range(start, len(state.image_arns)), keep_image, max_results=max_results
            )
            return [(f"{state.image_arns[i]}/x.x.x", by_version[newest[i]]) for i in indexes], token
        versions = state.versions
        start = decode_page_token(next_token, len(versions))
        indexes, token = self.pager.page(
            range(start, len(versions)),
            lambda i: self.listed(first := by_version[versions[i]][0]) and _matches(first, filters),
            max_results=max_results,
        )
        return [(versions[i], by_version[versions[i]]) for i in indexes], token

    def list_image_build_versions(
        self,
        scope: Scope,
        version_arn: str | None,
        *,
        filters: dict[str, frozenset[str]],
        max_results: int,
        next_token: str | None,
    ) -> tuple[list[ImageBuild], str | None]:
        """One page of the builds of one image version, or of every build in the account
        and region without ``version_arn`` (current model), filtered before paging.

        A version that does not exist is an empty list, not 404 (current model). A build
        younger than ``list_delay_s`` is not listed yet.
        """
        state = self.regions.get(scope)
        builds: list[ImageBuild] = []
        if state is not None:
            if version_arn is None:
                builds = state.all_builds
            else:
                builds = state.builds_by_version.get(version_arn, [])
        start = decode_page_token(next_token, len(builds))
        indexes, token = self.pager.page(
            range(start, len(builds)),
            lambda i: self.listed(builds[i]) and _matches(builds[i], filters),
            max_results=max_results,
        )
        return [builds[i] for i in indexes], token

    def to_state(self) -> dict[str, Any]:
        """A JSON-ready snapshot of everything, for ``--state``."""
        return {
            "format": STATE_FORMAT,
            "counters": {
                "images": self.images,
                "duplicateBuilds": self.duplicate_builds,
                "reimportsOverFailed": self.reimports_over_failed,
                "idempotentReplays": self.idempotent_replays,
            },
            "regions": [
                {
                    "account": account,
                    "region": region,
                    # In creation order: loading them in turn rebuilds every index as it was.
                    "builds": [b.to_state() for b in state.all_builds],
                    "cancelTokens": state.cancel_tokens,
                    "tokens": [
                        {
                            "token": t,
                            "request": r.request,
                            "imageArn": r.image_arn,
                            "expires": r.expires,
                        }
                        for t, r in state.tokens.items()
                    ],
                }
                for (account, region), state in self.regions.items()
            ],
            **{name: c.to_state() for name, c in self.companions.items()},
        }

    def load_state(self, data: dict[str, Any]) -> None:
        """Replace everything with a snapshot from ``to_state``."""
        if data.get("format") != STATE_FORMAT:
            raise ValueError(f"unsupported emulator state format {data.get('format')!r}")
        self.reset()
        counters = data.get("counters", {})
        self.images = int(counters.get("images", 0))
        self.duplicate_builds = int(counters.get("duplicateBuilds", 0))
        self.reimports_over_failed = int(counters.get("reimportsOverFailed", 0))
        self.idempotent_replays = int(counters.get("idempotentReplays", 0))
        for entry in data.get("regions", []):
            state = self._region(Scope(entry["account"], entry["region"]))
            for raw in entry.get("builds", []):
                build = ImageBuild.from_state(raw)
                state.add(build)
                self._count(entry["region"], build.kind)
            state.cancel_tokens.update(entry.get("cancelTokens") or {})
            for raw in sorted(entry.get("tokens", []), key=lambda t: float(t["expires"])):
                state.tokens[raw["token"]] = TokenRecord(
                    request=raw["request"], image_arn=raw["imageArn"], expires=float(raw["expires"])
                )
        for name, companion in self.companions.items():
            if name in data:
                companion.load_state(data[name])
        self.dirty = False


def _expire_tokens(tokens: dict[str, TokenRecord], now: float) -> None:
    while tokens:
        oldest = next(iter(tokens))
        if tokens[oldest].expires > now:
            return
        del tokens[oldest]


def _kind_before_issue_22(build: int) -> str:
    return BuildKind.FIRST.value if build == 1 else BuildKind.DUPLICATE.value


def _version_key(version_arn: str) -> tuple[int, ...]:
    return tuple(int(node) for node in version_arn.rpartition("/")[2].split("."))


def _matches(build: ImageBuild, filters: dict[str, frozenset[str]]) -> bool:
    for name, values in filters.items():
        if name == "name":
            actual: str | None = build.name
        elif name == "version":
            actual = build.version
        elif name == "platform":
            actual = build.platform
        elif name == "osVersion":
            actual = build.os_version
        else:
            actual = "AMI"
        if actual not in values:
            return False
    return True
