"""The emulator's state and behaviour: images, builds and client tokens, with no HTTP.

One ``ImageBuilderBackend`` per server instance holds a ``RegionState`` per (account,
region), as Image Builder scopes resources: it imports (a build, or the one a clientToken
already made), cancels, counts, and keeps its state for ``--state``. A build and the state
it shows on the clock are ``builds``; the lists and GetImage's wildcard ARNs ``listing``.
Every time-dependent rule (token lifetime, image state) reads the injected clock, so tests
move time instead of sleeping. Errors are the ``exceptions`` classes, which ``responses``
renders in AWS's error shape.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ibimport.domain.apimodel import image_identity
from ibimport.emulator.core import Clock, Companion, Scope
from ibimport.emulator.exceptions import (
    IdempotentParameterMismatchException,
    InvalidRequestException,
    ResourceNotFoundException,
)
from ibimport.emulator.imagebuilder.builds import (
    CANCELLED_REASON,
    FINAL_STATUSES,
    BuildKind,
    BuildState,
    ImageBuild,
    RegionState,
    TaskOutcome,
    TokenRecord,
    build_state,
)
from ibimport.emulator.imagebuilder.listing import (
    build_versions,
    image_versions,
    latest_available,
)
from ibimport.emulator.imagebuilder.paging import Pager

__all__ = ["STATE_FORMAT", "ImageBuilderBackend", "ImportOutcome"]

STATE_FORMAT = 1
_TASK_COMPLETED = TaskOutcome(completed_at=-float("inf"), failure=None)
#: A version whose builds are all in these statuses has no build standing.
_NOT_STANDING = frozenset({"FAILED", "CANCELLED"})


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
        task_outcome: Callable[[Scope, str], TaskOutcome] = lambda _scope, _id: _TASK_COMPLETED,
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
        """The build's state now (``builds.build_state``: the image follows its import
        task). CancelImageCreation makes it CANCELLED from then on (at once: AWS says only
        that it is asynchronous)."""
        if build.cancelled_at is not None:
            return BuildState("CANCELLED", CANCELLED_REASON)
        scope = Scope(build.owner, build.arn.split(":", 4)[3])
        outcome = self.task_outcome(scope, build.vm_import_task_id)
        return build_state(
            build, outcome, now=self.clock(), available_after_s=self.available_after_s
        )

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
            latest = latest_available(state, arn, status_of=self.status_of)
            if latest is not None:
                return latest
        raise ResourceNotFoundException(f"Resource {arn} does not exist.")

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
        return image_versions(
            self.regions.get(scope),
            filters=filters,
            max_results=max_results,
            next_token=next_token,
            by_name=by_name,
            pager=self.pager,
            listed=self.listed,
        )

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
        return build_versions(
            self.regions.get(scope),
            version_arn,
            filters=filters,
            max_results=max_results,
            next_token=next_token,
            pager=self.pager,
            listed=self.listed,
        )

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
