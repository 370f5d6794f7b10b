"""A row's EC2 VM import (``ImportImage``): its disks, its options and their rules.

A manifest row names either the EC2 import task its image comes from (``vmImportTaskId``)
or the disks to import (``diskImage`` for one, ``diskContainers`` for several); with disks,
ibimport starts the task itself (``stages.taskstart``). This module turns a row's disk
fields into the ImportImage request, states the rules it must meet, and names what
makes two rows the same VM (their disk objects).

Where each rule comes from:

- The current EC2 model (botocore 1.4x, ec2 2016-11-15, ``ImportImageRequest`` and
  ``ImageDiskContainer``): the members and their names; ``BootMode`` is one of
  ``BootModeValues`` and "``uefi-preferred`` isn't supported for importing images";
  "if a ``KmsKeyId`` is specified, the ``Encrypted`` flag must also be set"; the valid
  values its documentation lists for ``Format`` (OVA, VHD, VHDX, VMDK, RAW),
  ``Architecture`` (i386, x86_64), ``LicenseType`` (AWS, BYOL), ``Platform``; a disk is
  a ``Url`` (https or s3), a ``UserBucket`` or a ``SnapshotId``; ``RoleName`` defaults to
  ``vmimport``; tags go on ``import-image-task``.
- The VM Import/Export guide: at most 21 disks per import; arm64 beside the model's two
  architectures; ``.img`` files are raw images.
- IAM's and S3's naming rules (their guides): a role name is 1 to 64 of ``\\w+=,.@-``; a
  bucket name is 3 to 63 lowercase letters, digits, dots and hyphens.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import unquote, urlsplit

__all__ = [
    "ARCHITECTURES",
    "BOOT_MODES",
    "DEFAULT_ROLE",
    "DISK_FIELDS",
    "FORMATS",
    "IMPORT_OPTION_FIELDS",
    "LICENSE_TYPES",
    "MAX_DISKS",
    "TASK_TAG_IMAGE",
    "TASK_TAG_TOKEN",
    "DiskRef",
    "disk_containers",
    "disk_refs",
    "format_of",
    "import_image_params",
    "import_problems",
    "parse_import_options",
    "parse_s3_url",
]

#: The service role ImportImage uses unless ``RoleName`` names another (model).
DEFAULT_ROLE: Final = "vmimport"
#: ``ImageDiskContainer.Format``'s valid values (model documentation).
FORMATS: Final = ("OVA", "VHD", "VHDX", "VMDK", "RAW")
#: ``Architecture``: the model's i386 and x86_64, and arm64 (VM Import/Export guide).
ARCHITECTURES: Final = ("i386", "x86_64", "arm64")
LICENSE_TYPES: Final = ("AWS", "BYOL")
#: ``BootModeValues`` (model enum); ``uefi-preferred`` is refused for imports (model doc).
BOOT_MODES: Final = ("legacy-bios", "uefi", "uefi-preferred")
#: Disks per import (VM Import/Export guide).
MAX_DISKS: Final = 21
#: A disk image's format by its file extension (``.img`` is a raw image).
EXTENSION_FORMATS: Final = {
    ".ova": "OVA",
    ".vmdk": "VMDK",
    ".vhd": "VHD",
    ".vhdx": "VHDX",
    ".raw": "RAW",
    ".img": "RAW",
}
#: The tags ibimport puts on every task it starts: the row's image identity and the
#: task's ClientToken, so a task is found again by its row (a lost journal, another machine).
TASK_TAG_IMAGE: Final = "ibimport:image"
TASK_TAG_TOKEN: Final = "ibimport:token"

#: The row fields that give the disks (one of them, or ``vmImportTaskId``).
DISK_FIELDS: Final = ("diskImage", "diskFormat", "diskContainers")
#: The row fields that are ImportImage options (a JSON manifest's ``defaults`` and the
#: command line may give them for every row).
IMPORT_OPTION_FIELDS: Final = (
    "licenseType",
    "usageOperation",
    "bootMode",
    "architecture",
    "encrypted",
    "kmsKeyId",
    "roleName",
    "importDescription",
)

_BUCKET: Final = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_ROLE: Final = re.compile(r"^[\w+=,.@-]{1,64}$")
_SNAPSHOT: Final = re.compile(r"^snap-[0-9a-f]{8,17}$")
# https://BUCKET.s3[.-]REGION.amazonaws.com/KEY and https://s3[.-]REGION.amazonaws.com/BUCKET/KEY
_VIRTUAL_HOST: Final = re.compile(r"^(?P<bucket>.+)\.s3[.-](?:[a-z0-9-]+\.)?amazonaws\.com$")
_CONTAINER_KEYS: Final = ("Description", "DeviceName", "Format", "Url", "UserBucket", "SnapshotId")


@dataclass(frozen=True, slots=True)
class DiskRef:
    """One disk of an import: its S3 object (bucket, key), or a snapshot or URL alone."""

    bucket: str | None
    key: str | None
    other: str | None = None  # a snapshot ID, or an https URL that names no S3 object

    @property
    def ref(self) -> str:
        """``s3://bucket/key`` (or the snapshot or URL): what makes two rows one VM."""
        return f"s3://{self.bucket}/{self.key}" if self.bucket is not None else self.other or ""


def parse_s3_url(url: str) -> tuple[str, str] | None:
    """(bucket, key) of an ``s3://bucket/key`` URL (or an S3 https URL), else None."""
    parts = urlsplit(url)
    path = unquote(parts.path).lstrip("/")
    if parts.scheme == "s3":
        if parts.netloc and path and _BUCKET.match(parts.netloc):
            return parts.netloc, path
        return None
    if parts.scheme == "https" and parts.hostname:
        virtual = _VIRTUAL_HOST.match(parts.hostname)
        if virtual is not None and path:
            return virtual.group("bucket"), path
        if parts.hostname.startswith("s3") and parts.hostname.endswith("amazonaws.com"):
            bucket, _, key = path.partition("/")
            if bucket and key:
                return bucket, key
    return None


def format_of(key: str) -> str | None:
    """A disk image's format by its extension (``.ova .vmdk .vhd .vhdx .raw .img``)."""
    dot = key.rfind(".")
    return EXTENSION_FORMATS.get(key[dot:].lower()) if dot >= 0 else None


def _container_problem(number: int, item: object) -> str | None:
    where = f"disk {number}"
    if not isinstance(item, dict):
        return f'{where}: must be an object like {{"Url": "s3://bucket/disk.vmdk"}}'
    unknown = [k for k in item if k not in _CONTAINER_KEYS]
    if unknown:
        return f"{where}: unknown member {unknown[0]!r} (expected {', '.join(_CONTAINER_KEYS)})"
    for key in ("Description", "DeviceName", "Format", "Url", "SnapshotId"):
        if key in item and not isinstance(item[key], str):
            return f"{where}: {key} must be a string"
    sources = [k for k in ("Url", "UserBucket", "SnapshotId") if item.get(k)]
    if len(sources) != 1:
        return f"{where}: give exactly one of Url, UserBucket or SnapshotId"
    fmt = item.get("Format")
    if fmt is not None and fmt.upper() not in FORMATS:
        return f"{where}: Format must be one of {', '.join(FORMATS)}"
    object_key: str | None = None
    if sources[0] == "Url":
        located = parse_s3_url(item["Url"])
        if located is None and not item["Url"].startswith("https://"):
            return f"{where}: Url must be s3://bucket/key or an https URL"
        object_key = located[1] if located else None
    elif sources[0] == "UserBucket":
        bucket = item["UserBucket"]
        if (
            not isinstance(bucket, dict)
            or set(bucket) != {"S3Bucket", "S3Key"}
            or not all(isinstance(v, str) and v for v in bucket.values())
        ):
            return f'{where}: UserBucket must be {{"S3Bucket": ..., "S3Key": ...}}'
        if not _BUCKET.match(bucket["S3Bucket"]):
            return f"{where}: UserBucket.S3Bucket is not a valid bucket name"
        object_key = bucket["S3Key"]
    elif not _SNAPSHOT.match(item["SnapshotId"]):
        return f"{where}: SnapshotId must look like snap-0123456789abcdef0"
    if fmt is None and object_key is not None and format_of(object_key) is None:
        return (
            f"{where}: Format is needed: its key's extension is none of "
            f"{' '.join(EXTENSION_FORMATS)}"
        )
    return None


def import_problems(fields: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(field, rule) for each ImportImage rule a row's fields break (see the module doc).

    ``fields``: the row's values by field name, absent fields missing; ``vmImportTaskId``
    and the disk fields are each other's alternatives.
    """
    problems: list[tuple[str, str]] = []
    image, containers = fields.get("diskImage"), fields.get("diskContainers")
    sources = [f for f in ("vmImportTaskId", "diskImage", "diskContainers") if f in fields]
    if not sources:
        problems.append(("vmImportTaskId", "is required (or diskImage, or diskContainers)"))
    elif len(sources) > 1:
        problems.append(
            (
                sources[1],
                f"give one of vmImportTaskId, diskImage, diskContainers, not {sources[0]} too",
            )
        )
    if "diskFormat" in fields and image is None:
        problems.append(("diskFormat", "goes with diskImage"))
    if image is not None:
        located = parse_s3_url(image) if isinstance(image, str) else None
        if located is None or not image.startswith("s3://"):
            problems.append(("diskImage", "must be an s3://bucket/key URL"))
        fmt = fields.get("diskFormat")
        if fmt is not None:
            if not isinstance(fmt, str) or fmt.upper() not in FORMATS:
                problems.append(("diskFormat", f"must be one of {', '.join(FORMATS)}"))
        elif located is not None and format_of(located[1]) is None:
            problems.append(
                (
                    "diskImage",
                    f"its format is not known from the extension (one of "
                    f"{' '.join(EXTENSION_FORMATS)}): give diskFormat",
                )
            )
    if containers is not None:
        if not isinstance(containers, list) or not containers:
            problems.append(("diskContainers", "must be a non-empty JSON list of disk containers"))
        elif len(containers) > MAX_DISKS:
            problems.append(("diskContainers", f"must have at most {MAX_DISKS} disks"))
        else:
            for number, item in enumerate(containers, start=1):
                problem = _container_problem(number, item)
                if problem is not None:
                    problems.append(("diskContainers", problem))
                    break
    has_disks = image is not None or containers is not None
    options = [f for f in IMPORT_OPTION_FIELDS if f in fields]
    if options and not has_disks and "vmImportTaskId" in fields:
        problems.append(
            (options[0], "is an ImportImage option: it goes with diskImage or diskContainers")
        )
    problems.extend(_option_problems(fields))
    return problems


def _enum(fields: Mapping[str, Any], name: str, allowed: Sequence[str]) -> tuple[str, str] | None:
    value = fields.get(name)
    if value is not None and value not in allowed:
        return name, f"must be one of {', '.join(allowed)}"
    return None


def _option_problems(fields: Mapping[str, Any]) -> list[tuple[str, str]]:
    problems = [
        p
        for p in (
            _enum(fields, "licenseType", LICENSE_TYPES),
            _enum(fields, "architecture", ARCHITECTURES),
            _enum(fields, "bootMode", BOOT_MODES),
        )
        if p is not None
    ]
    if fields.get("bootMode") == "uefi-preferred":
        problems.append(
            ("bootMode", "uefi-preferred is not supported for imports (legacy-bios or uefi)")
        )
    encrypted = fields.get("encrypted")
    if encrypted is not None and not isinstance(encrypted, bool):
        problems.append(("encrypted", "must be true or false"))
    if fields.get("kmsKeyId") is not None and encrypted is not True:
        problems.append(("kmsKeyId", "needs encrypted = true"))
    role = fields.get("roleName")
    if role is not None and not (isinstance(role, str) and _ROLE.match(role)):
        problems.append(
            ("roleName", "must be an IAM role name: 1 to 64 of letters, digits, +=,.@_-")
        )
    for name in ("usageOperation", "kmsKeyId", "importDescription"):
        value = fields.get(name)
        if value is not None and not (isinstance(value, str) and 0 < len(value) <= 2048):
            problems.append((name, "must be text of at most 2048 characters"))
    return problems


def disk_containers(
    disk_image: str | None, disk_format: str | None, containers: Any
) -> list[dict[str, Any]]:
    """The ``DiskContainers`` member as sent: one ``Url`` container for a ``diskImage``
    (its format from ``diskFormat`` or the extension), or the row's list, formats upper-cased."""
    if disk_image is not None:
        located = parse_s3_url(disk_image)
        fmt = disk_format or (format_of(located[1]) if located else None)
        container: dict[str, Any] = {"Url": disk_image}
        if fmt:
            container["Format"] = fmt.upper()
        return [container]
    out = []
    for item in containers or ():
        item = dict(item)
        if isinstance(item.get("Format"), str):
            item["Format"] = item["Format"].upper()
        elif item.get("UserBucket") or item.get("Url"):
            key = (
                item["UserBucket"]["S3Key"]
                if item.get("UserBucket")
                else (parse_s3_url(item["Url"]) or ("", ""))[1]
            )
            fmt = format_of(key)
            if fmt:
                item["Format"] = fmt
        out.append(item)
    return out


def disk_refs(containers: Sequence[Mapping[str, Any]]) -> list[DiskRef]:
    """Each disk's object (or snapshot, or URL): for duplicates, preflight and the task's tags."""
    refs = []
    for item in containers:
        if item.get("UserBucket"):
            bucket = item["UserBucket"]
            refs.append(DiskRef(bucket["S3Bucket"], bucket["S3Key"]))
        elif item.get("Url"):
            located = parse_s3_url(item["Url"])
            refs.append(DiskRef(*located) if located else DiskRef(None, None, item["Url"]))
        else:
            refs.append(DiskRef(None, None, str(item.get("SnapshotId", ""))))
    return refs


def import_image_params(
    containers: Sequence[Mapping[str, Any]],
    options: Mapping[str, Any],
    *,
    platform: str | None,
) -> dict[str, Any]:
    """ImportImage's members (botocore's names) but ClientToken and TagSpecifications."""
    params: dict[str, Any] = {"DiskContainers": [dict(c) for c in containers]}
    names = {
        "licenseType": "LicenseType",
        "usageOperation": "UsageOperation",
        "bootMode": "BootMode",
        "architecture": "Architecture",
        "encrypted": "Encrypted",
        "kmsKeyId": "KmsKeyId",
        "importDescription": "Description",
    }
    for field, member in names.items():
        if options.get(field) is not None:
            params[member] = options[field]
    params["RoleName"] = options.get("roleName") or DEFAULT_ROLE
    if platform is not None:
        params["Platform"] = platform
    return params


def decode_containers(text: str) -> Any:
    """A CSV cell's ``diskContainers`` JSON; ValueError if it is not JSON."""
    return json.loads(text)


def parse_import_options(values: Sequence[str]) -> dict[str, str | bool]:
    """``--import-option KEY=VALUE`` (repeated) as defaults for every row with disks;
    ValueError names the option and the rule it breaks."""
    options: dict[str, str | bool] = {}
    for text in values:
        key, sep, value = text.partition("=")
        if not sep or key not in IMPORT_OPTION_FIELDS:
            raise ValueError(
                f"--import-option {text!r}: expected KEY=VALUE with KEY one of "
                f"{', '.join(IMPORT_OPTION_FIELDS)}"
            )
        parsed: str | bool = value
        if key == "encrypted":
            if value.lower() not in ("true", "false"):
                raise ValueError(f"--import-option {text!r}: encrypted must be true or false")
            parsed = value.lower() == "true"
        for field, rule in _option_problems({key: parsed}):
            if field == key:
                raise ValueError(f"--import-option {text!r}: {key} {rule}")
        options[key] = parsed
    if "kmsKeyId" in options and options.get("encrypted") is not True:
        raise ValueError("--import-option kmsKeyId=...: needs --import-option encrypted=true")
    return options
