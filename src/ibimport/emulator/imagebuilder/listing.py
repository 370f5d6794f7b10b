"""Image Builder's lists: ListImages and ListImageBuildVersions a page at a time, their
filters, and the build a version or wildcard ARN names for GetImage.

Plain functions over one account's ``RegionState`` in one Region: its lists are
append-only, so a page token is an index into them (``paging``). A build younger than
``--list-delay-s`` is not listed yet (``listed``). No HTTP here.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from ibimport.emulator.imagebuilder.builds import ImageBuild, RegionState
from ibimport.emulator.imagebuilder.paging import Pager, decode_page_token

__all__ = ["build_versions", "image_versions", "latest_available"]

# A GetImage ARN naming a version, or a wildcard one (x.x.x, 1.x.x, 1.2.x), split into the
# image's ARN and the three nodes; a build ARN does not match (current model).
_VERSION_OR_WILDCARD_ARN = re.compile(
    r"^(arn:aws[^:]*:imagebuilder:[^:]+:[^:]+:image/[a-z0-9-_]+)/"
    r"([0-9]+|x)\.([0-9]+|x)\.([0-9]+|x)$"
)


def image_versions(
    state: RegionState | None,
    *,
    filters: dict[str, frozenset[str]],
    max_results: int,
    next_token: str | None,
    by_name: bool,
    pager: Pager,
    listed: Callable[[ImageBuild], bool],
) -> tuple[list[tuple[str, list[ImageBuild]]], str | None]:
    """One page of image versions matching every filter, each as (ARN, its builds).

    ``by_name`` (current model): one entry per image, its newest listed version
    matching the filters, under the image's ``x.x.x`` ARN (the model's "versionless"
    ARN; which version stands for the name is the emulator's guess).
    """
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
                if listed(by_version[v][0]) and _matches(by_version[v][0], filters)
            ]
            if versions:
                newest[i] = max(versions, key=_version_key)
            return bool(versions)

        start = decode_page_token(next_token, len(state.image_arns))
        indexes, token = pager.page(
            range(start, len(state.image_arns)), keep_image, max_results=max_results
        )
        return [(f"{state.image_arns[i]}/x.x.x", by_version[newest[i]]) for i in indexes], token
    versions = state.versions
    start = decode_page_token(next_token, len(versions))
    indexes, token = pager.page(
        range(start, len(versions)),
        lambda i: listed(first := by_version[versions[i]][0]) and _matches(first, filters),
        max_results=max_results,
    )
    return [(versions[i], by_version[versions[i]]) for i in indexes], token


def build_versions(
    state: RegionState | None,
    version_arn: str | None,
    *,
    filters: dict[str, frozenset[str]],
    max_results: int,
    next_token: str | None,
    pager: Pager,
    listed: Callable[[ImageBuild], bool],
) -> tuple[list[ImageBuild], str | None]:
    """One page of the builds of one image version, or of every build in the account
    and region without ``version_arn`` (current model), filtered before paging.

    A version that does not exist is an empty list, not 404 (current model).
    """
    builds: list[ImageBuild] = []
    if state is not None:
        if version_arn is None:
            builds = state.all_builds
        else:
            builds = state.builds_by_version.get(version_arn, [])
    start = decode_page_token(next_token, len(builds))
    indexes, token = pager.page(
        range(start, len(builds)),
        lambda i: listed(builds[i]) and _matches(builds[i], filters),
        max_results=max_results,
    )
    return [builds[i] for i in indexes], token


def latest_available(
    state: RegionState, arn: str, *, status_of: Callable[[ImageBuild], str]
) -> ImageBuild | None:
    """The latest AVAILABLE build a version or wildcard ARN (``1.0.0``, ``1.x.x``,
    ``x.x.x``) names, as the current model's ImageVersionArnOrBuildVersionArn describes;
    None if the ARN is no such ARN or names no AVAILABLE build."""
    wanted = _VERSION_OR_WILDCARD_ARN.match(arn)
    if wanted is None:
        return None
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
            if status_of(build) == "AVAILABLE":
                key = (*version, build.build)
                if best is None or key > best_key:
                    best, best_key = build, key
                break
    return best


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
