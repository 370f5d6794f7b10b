"""ImportImage's request read from EC2's form and checked before a task starts; the shape of
the task IDs the other calls (and ``--import-tasks``) name.

Member names and nesting are the current EC2 model's ImportImageRequest as botocore
sends it (``DiskContainer.N.UserBucket.S3Bucket``, ``TagSpecification.N.Tag.M.Key``...).
Where each rule comes from:

- The model: ``BootMode`` is one of its enum and ``uefi-preferred`` "isn't supported for
  importing images"; ``KmsKeyId`` needs ``Encrypted``; the valid values its documentation
  lists for ``Format`` (OVA, VHD, VHDX, VMDK, RAW), ``Architecture``, ``Platform``,
  ``LicenseType`` and ``Hypervisor``; a disk is a ``Url``, a ``UserBucket`` or a
  ``SnapshotId``; tags are for ``import-image-task``; a tag key has at most 127
  characters and may not begin with ``aws:``, a value at most 256.
- AWS docs: a ClientToken has at most 64 ASCII characters (EC2's "Ensuring idempotency");
  at most 50 tags on a resource (EC2's tag restrictions); at most 21 disks (the VM
  Import/Export guide, as issue 19 reads it).
- The emulator's own: the error codes where EC2 documents none for the rule, and every
  message's words.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from ibimport.emulator.exceptions import (
    InvalidParameter,
    InvalidParameterValue,
    MissingParameter,
)

__all__ = [
    "DEFAULT_ROLE",
    "TASK_ID",
    "Disk",
    "ImportImageRequest",
    "check_task_id",
    "read_import_image",
    "structures",
]

#: The service role ImportImage uses unless RoleName names another (model).
DEFAULT_ROLE = "vmimport"
FORMATS = ("OVA", "VHD", "VHDX", "VMDK", "RAW")
ARCHITECTURES = ("i386", "x86_64", "arm64")
PLATFORMS = ("Windows", "Linux")
LICENSE_TYPES = ("AWS", "BYOL")
HYPERVISORS = ("xen",)
BOOT_MODES = ("legacy-bios", "uefi", "uefi-preferred")
MAX_DISKS = 21
MAX_TAGS = 50
TOKEN_MAX = 64
TAG_RESOURCE = "import-image-task"
# Not part of the request a ClientToken is bound to.
_NOT_BOUND = frozenset({"Action", "Version", "ClientToken", "DryRun"})
# https://BUCKET.s3[.-]REGION.amazonaws.com/KEY and https://s3[.-]REGION.amazonaws.com/BUCKET/KEY
_VIRTUAL_HOST = re.compile(r"^(?P<bucket>.+)\.s3[.-](?:[a-z0-9-]+\.)?amazonaws\.com(?:\.cn)?$")
#: An ImportImage task ID: "import-ami-" and 8 (older) or 17 lowercase letters and digits.
TASK_ID = re.compile(r"^import-ami-[0-9a-z]{8,17}$")


def check_task_id(task_id: str) -> None:
    """Raise EC2's InvalidParameterValue unless ``task_id`` is shaped like an import task's."""
    if not TASK_ID.match(task_id):
        raise InvalidParameterValue(
            f"Value ({task_id}) for parameter ImportTaskId is invalid. Expected: 'import-ami-...'."
        )


@dataclass(frozen=True, slots=True)
class Disk:
    """One disk container: where its image is (an S3 object or a snapshot) and its format."""

    bucket: str | None
    key: str | None
    snapshot_id: str | None
    format: str | None
    url: str | None = None

    @property
    def ref(self) -> str:
        """``s3://bucket/key``, or the snapshot ID: the disk's identity."""
        if self.bucket is not None:
            return f"s3://{self.bucket}/{self.key}"
        return self.snapshot_id or self.url or ""


@dataclass(frozen=True, slots=True, kw_only=True)
class ImportImageRequest:
    """A checked ImportImage request."""

    disks: tuple[Disk, ...]
    role: str
    client_token: str | None
    dry_run: bool
    tags: dict[str, str]
    #: The parameters a ClientToken is bound to, as sent.
    bound: dict[str, str]
    #: The members DescribeImportImageTasks echoes back (its names).
    echo: dict[str, str]


def structures(params: Mapping[str, str], prefix: str) -> list[dict[str, str]]:
    """``PREFIX.N.REST=value`` as one {REST: value} per N, in the order of the Ns."""
    found: dict[int, dict[str, str]] = {}
    start = prefix + "."
    for name, value in params.items():
        if not name.startswith(start):
            continue
        number, _, rest = name[len(start) :].partition(".")
        if number.isdigit() and rest:
            found.setdefault(int(number), {})[rest] = value
    return [found[n] for n in sorted(found)]


def _one_of(name: str, value: str | None, allowed: tuple[str, ...], *, fold: bool = False) -> str:
    if value is None:
        return ""
    matched = [a for a in allowed if (a.lower() == value.lower() if fold else a == value)]
    if not matched:
        raise InvalidParameterValue(
            f"Value ({value}) for parameter {name} is invalid. "
            f"Expected one of: {', '.join(allowed)}."
        )
    return matched[0]


def _s3_location(url: str) -> tuple[str, str] | None:
    """The bucket and key an ``s3://`` or S3 ``https://`` URL names, else None."""
    parts = urlsplit(url)
    path = unquote(parts.path)
    if parts.scheme == "s3" and parts.netloc and path.lstrip("/"):
        return parts.netloc, path.lstrip("/")
    if parts.scheme == "https" and parts.hostname:
        virtual = _VIRTUAL_HOST.match(parts.hostname)
        if virtual is not None and path.lstrip("/"):
            return virtual.group("bucket"), path.lstrip("/")
        bucket, _, key = path.lstrip("/").partition("/")
        if bucket and key:
            return bucket, key
    return None


def _disk(number: int, container: Mapping[str, str]) -> Disk:
    where = f"DiskContainer.{number}"
    disk_format = container.get("Format")
    if disk_format is not None:
        disk_format = _one_of(f"{where}.Format", disk_format, FORMATS, fold=True)
    url = container.get("Url")
    bucket, key = container.get("UserBucket.S3Bucket"), container.get("UserBucket.S3Key")
    snapshot = container.get("SnapshotId")
    sources = sum(x is not None for x in (url, bucket or key, snapshot))
    if sources != 1:
        raise InvalidParameter(
            f"{where}: give exactly one of Url, UserBucket (S3Bucket and S3Key) or SnapshotId."
        )
    if url is not None:
        located = _s3_location(url)
        if located is None:
            raise InvalidParameterValue(f"Value ({url}) for parameter {where}.Url is invalid.")
        return Disk(located[0], located[1], None, disk_format, url)
    if bucket is not None or key is not None:
        if not bucket or not key:
            raise MissingParameter(f"{where}.UserBucket needs both S3Bucket and S3Key.")
        return Disk(bucket, key, None, disk_format)
    return Disk(None, None, snapshot, disk_format)


def _tags(params: Mapping[str, str]) -> dict[str, str]:
    tags: dict[str, str] = {}
    for number, spec in enumerate(structures(params, "TagSpecification"), start=1):
        resource = spec.get("ResourceType")
        if resource != TAG_RESOURCE:
            raise InvalidParameterValue(
                f"'{resource}' is not a valid taggable resource type for this operation."
            )
        for tag in structures({k: v for k, v in spec.items()}, "Tag"):
            key, value = tag.get("Key", ""), tag.get("Value", "")
            if not key or len(key) > 127 or key.lower().startswith("aws:"):
                raise InvalidParameterValue(
                    f"TagSpecification.{number}: tag key {key!r} must have 1 to 127 characters "
                    "and may not begin with aws:."
                )
            if len(value) > 256:
                raise InvalidParameterValue(
                    f"TagSpecification.{number}: the value of tag {key!r} is over 256 characters."
                )
            tags[key] = value
    if len(tags) > MAX_TAGS:
        raise InvalidParameterValue(f"A resource can have at most {MAX_TAGS} tags.")
    return tags


def read_import_image(params: Mapping[str, str]) -> ImportImageRequest:
    """The request in ``params``, or the error EC2 answers to the first rule it breaks."""
    containers = structures(params, "DiskContainer")
    if not containers:
        raise MissingParameter("The request must contain the parameter DiskContainer.")
    if len(containers) > MAX_DISKS:
        raise InvalidParameter(
            f"An import can have at most {MAX_DISKS} disk containers, got {len(containers)}."
        )
    disks = tuple(_disk(n, c) for n, c in enumerate(containers, start=1))
    token = params.get("ClientToken")
    if token is not None and not (1 <= len(token) <= TOKEN_MAX and token.isascii()):
        raise InvalidParameterValue(
            f"Value ({token}) for parameter ClientToken is invalid. "
            f"It must be 1 to {TOKEN_MAX} ASCII characters."
        )
    boot_mode = _one_of("BootMode", params.get("BootMode"), BOOT_MODES)
    if boot_mode == "uefi-preferred":
        raise InvalidParameter("The uefi-preferred boot mode isn't supported for importing images.")
    encrypted = params.get("Encrypted", "false").lower() == "true"
    if params.get("KmsKeyId") and not encrypted:
        raise InvalidParameter("KmsKeyId can be specified only when Encrypted is true.")
    echo = {
        "description": params.get("Description", ""),
        "architecture": _one_of("Architecture", params.get("Architecture"), ARCHITECTURES),
        "platform": _one_of("Platform", params.get("Platform"), PLATFORMS),
        "licenseType": _one_of("LicenseType", params.get("LicenseType"), LICENSE_TYPES),
        "hypervisor": _one_of("Hypervisor", params.get("Hypervisor"), HYPERVISORS),
        "usageOperation": params.get("UsageOperation", ""),
        "bootMode": boot_mode,
        "encrypted": "true" if encrypted else "",
        "kmsKeyId": params.get("KmsKeyId", ""),
    }
    return ImportImageRequest(
        disks=disks,
        role=params.get("RoleName") or DEFAULT_ROLE,
        client_token=token,
        dry_run=params.get("DryRun", "").lower() == "true",
        tags=_tags(params),
        bound={k: v for k, v in params.items() if k not in _NOT_BOUND},
        echo={k: v for k, v in echo.items() if v},
    )
