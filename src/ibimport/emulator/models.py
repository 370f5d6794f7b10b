"""The emulator's state and behaviour: images, builds and client tokens, with no HTTP.

One ``ImageBuilderBackend`` per server instance holds a ``RegionState`` per (account,
region), as Image Builder scopes resources. Every time-dependent rule (token lifetime,
image state) reads the injected clock, so tests move time instead of sleeping.
Errors are the ``exceptions`` classes, which ``responses`` renders in AWS's error shape.
"""

from __future__ import annotations

import base64
import binascii
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ibimport.apimodel import (
    REQUEST_FIELDS,
    ImportVmImageRules,
    StringRule,
    Violation,
    import_vm_image_rules,
)
from ibimport.emulator.exceptions import (
    IdempotentParameterMismatchException,
    InvalidPaginationTokenException,
    InvalidParameterValueException,
    InvalidRequestException,
    ResourceNotFoundException,
    SerializationException,
)

#: Reads the current wall-clock time in seconds; tests pass a fake one.
Clock = Callable[[], float]

PAGE_MAX = 25
STATE_FORMAT = 1

# Version ARNs from the model's ImageVersionArn / ImageVersionArnOrBuildVersionArn shapes.
_VERSION_ARN = re.compile(
    r"^arn:aws[^:]*:imagebuilder:[^:]+:(?:[0-9]{12}|aws(?:-[a-z-]+)?):image/[a-z0-9-_]+/"
    r"[0-9]+\.[0-9]+\.[0-9]+$"
)
# An ARN's resource name is lowercase; characters its pattern forbids become hyphens.
_ARN_NAME_FORBIDDEN = re.compile(r"[^a-z0-9_-]")
_FILTER_NAMES = frozenset({"name", "version", "platform", "osVersion", "type"})


class Scope(NamedTuple):
    """Where a call acts: Image Builder keeps resources per account and region."""

    account: str
    region: str


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
    if name is not None and (found := rule.check(name)) is not None:
        yield violation("loggingConfiguration.logGroupName", name, constraint=found.aws_constraint)


def format_date(epoch: float) -> str:
    """Image Builder's DateTime strings: ISO 8601 UTC with milliseconds."""
    millis = int(epoch * 1000) % 1000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch)) + f".{millis:03d}Z"


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

    def to_state(self) -> dict[str, Any]:
        """This build as the state file stores it."""
        return {
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

    # Version ARN -> its builds, in creation order; the list of versions is append-only
    # so that a page token can be an index into it.
    builds_by_version: dict[str, list[ImageBuild]] = field(default_factory=dict)
    versions: list[str] = field(default_factory=list)
    builds: dict[str, ImageBuild] = field(default_factory=dict)
    # Insertion order is expiry order (one TTL for all), so expired tokens are a prefix.
    tokens: dict[str, TokenRecord] = field(default_factory=dict)


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
    ) -> None:
        self.clock = clock
        self.token_ttl_s = token_ttl_s
        self.available_after_s = available_after_s
        self.regions: dict[Scope, RegionState] = {}
        self.images = 0
        self.duplicate_builds = 0
        self.idempotent_replays = 0
        #: Set on every change, cleared by whoever persists the state.
        self.dirty = False

    def reset(self) -> None:
        """Forget every image, token and counter."""
        self.regions.clear()
        self.images = self.duplicate_builds = self.idempotent_replays = 0
        self.dirty = True

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
        arn_name = _ARN_NAME_FORBIDDEN.sub("-", name.lower())
        version_arn = f"arn:aws:imagebuilder:{region}:{account}:image/{arn_name}/{version}"
        siblings = state.builds_by_version.get(version_arn)
        if siblings is None:
            siblings = state.builds_by_version[version_arn] = []
            state.versions.append(version_arn)
        elif siblings:
            self.duplicate_builds += 1
        build_no = len(siblings) + 1
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
        )
        siblings.append(build)
        state.builds[build.arn] = build
        tokens[token] = TokenRecord(
            request=request, image_arn=build.arn, expires=now + self.token_ttl_s
        )
        self.images += 1
        self.dirty = True
        return ImportOutcome(image_arn=build.arn, client_token=token, replay=False)

    def status_of(self, build: ImageBuild) -> str:
        """PENDING for the first fifth of ``available_after_s``, then CREATING, then AVAILABLE."""
        after = self.available_after_s
        if after <= 0:
            return "AVAILABLE"
        elapsed = self.clock() - build.created
        if elapsed >= after:
            return "AVAILABLE"
        return "PENDING" if elapsed < after / 5 else "CREATING"

    def get_image(self, scope: Scope, arn: str) -> ImageBuild:
        """The build an ARN names; a version ARN names its latest build."""
        state = self.regions.get(scope)
        if state is not None:
            build = state.builds.get(arn)
            if build is not None:
                return build
            builds = state.builds_by_version.get(arn)
            if builds:
                return builds[-1]
        raise ResourceNotFoundException(f"Resource {arn} does not exist.")

    def list_images(
        self,
        scope: Scope,
        *,
        filters: dict[str, frozenset[str]],
        max_results: int,
        next_token: str | None,
    ) -> tuple[list[list[ImageBuild]], str | None]:
        """One page of image versions (each given as its builds) matching every filter."""
        state = self.regions.get(scope)
        if state is None:
            decode_page_token(next_token, 0)
            return [], None
        versions = state.versions
        by_version = state.builds_by_version
        start = decode_page_token(next_token, len(versions))
        indexes, token = _page(
            range(start, len(versions)),
            lambda i: _matches(by_version[versions[i]][0], filters),
            max_results=max_results,
        )
        return [by_version[versions[i]] for i in indexes], token

    def list_image_build_versions(
        self,
        scope: Scope,
        version_arn: str,
        *,
        max_results: int,
        next_token: str | None,
    ) -> tuple[list[ImageBuild], str | None]:
        """One page of the builds of one image version; 404 if the version does not exist."""
        state = self.regions.get(scope)
        builds = state.builds_by_version.get(version_arn) if state is not None else None
        if not builds:
            raise ResourceNotFoundException(f"Resource {version_arn} does not exist.")
        start = decode_page_token(next_token, len(builds))
        indexes, token = _page(range(start, len(builds)), lambda _: True, max_results=max_results)
        return [builds[i] for i in indexes], token

    def to_state(self) -> dict[str, Any]:
        """A JSON-ready snapshot of everything, for ``--state``."""
        return {
            "format": STATE_FORMAT,
            "counters": {
                "images": self.images,
                "duplicateBuilds": self.duplicate_builds,
                "idempotentReplays": self.idempotent_replays,
            },
            "regions": [
                {
                    "account": account,
                    "region": region,
                    "builds": [
                        b.to_state() for arn in state.versions for b in state.builds_by_version[arn]
                    ],
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
        }

    def load_state(self, data: dict[str, Any]) -> None:
        """Replace everything with a snapshot from ``to_state``."""
        if data.get("format") != STATE_FORMAT:
            raise ValueError(f"unsupported emulator state format {data.get('format')!r}")
        self.reset()
        counters = data.get("counters", {})
        self.images = int(counters.get("images", 0))
        self.duplicate_builds = int(counters.get("duplicateBuilds", 0))
        self.idempotent_replays = int(counters.get("idempotentReplays", 0))
        for entry in data.get("regions", []):
            state = self._region(Scope(entry["account"], entry["region"]))
            for raw in entry.get("builds", []):
                build = ImageBuild.from_state(raw)
                siblings = state.builds_by_version.get(build.version_arn)
                if siblings is None:
                    siblings = state.builds_by_version[build.version_arn] = []
                    state.versions.append(build.version_arn)
                siblings.append(build)
                state.builds[build.arn] = build
            for raw in sorted(entry.get("tokens", []), key=lambda t: float(t["expires"])):
                state.tokens[raw["token"]] = TokenRecord(
                    request=raw["request"], image_arn=raw["imageArn"], expires=float(raw["expires"])
                )
        self.dirty = False


def _expire_tokens(tokens: dict[str, TokenRecord], now: float) -> None:
    while tokens:
        oldest = next(iter(tokens))
        if tokens[oldest].expires > now:
            return
        del tokens[oldest]


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


def _page(
    indexes: range, keep: Callable[[int], bool], *, max_results: int
) -> tuple[list[int], str | None]:
    """Take up to ``max_results`` kept indexes; the token points at the next kept one."""
    taken: list[int] = []
    for i in indexes:
        if not keep(i):
            continue
        if len(taken) == max_results:
            return taken, encode_page_token(i)
        taken.append(i)
    return taken, None


def encode_page_token(index: int) -> str:
    """An opaque nextToken; it is an index because the lists it pages are append-only."""
    return base64.urlsafe_b64encode(f"ibimport-emulator:{index}".encode()).decode()


def decode_page_token(token: str | None, limit: int) -> int:
    """The index a nextToken points at; garbage is InvalidPaginationTokenException."""
    if token is None:
        return 0
    try:
        prefix, _, index = base64.urlsafe_b64decode(token.encode()).decode().partition(":")
        start = int(index)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        start = -1
        prefix = ""
    if prefix != "ibimport-emulator" or not 0 <= start <= limit:
        raise InvalidPaginationTokenException()
    return start


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
