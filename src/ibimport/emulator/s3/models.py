"""S3's buckets and objects, as much of them as a migration wave needs; no HTTP here.

Bucket names are one namespace for every account and Region (S3's rule); a bucket
belongs to the account that created it and lives in one Region. Only its owner may use
it (the emulator has no bucket policies: another account is refused, as S3 refuses a
caller no policy allows). An object keeps its size, ETag (the MD5 of its body, S3's rule
for a single-part upload) and, up to ``body_cap`` bytes, its body; a disk image in a
rehearsal is a few bytes. ImportImage finds its disks here (``locate``).
Where each rule comes from: the names and their checks (3-63 characters of lowercase
letters, digits, dots and hyphens, a letter or digit at each end, not an IP address),
CreateBucket's Region rules and their words, the ``EU`` alias for eu-west-1 and
ListObjectsV2's paging (1,000 keys at most, in key order) are S3's documented behaviour;
that us-east-1 answers 200 to a second CreateBucket by the owner is S3's legacy rule.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from typing import Any

from ibimport.emulator.core import Clock, Scope
from ibimport.emulator.exceptions import (
    AccessDenied,
    BucketAlreadyExists,
    BucketAlreadyOwnedByYou,
    IllegalLocationConstraintException,
    InvalidArgument,
    InvalidBucketName,
    NoSuchBucket,
    NoSuchKey,
)

__all__ = ["BODY_CAP", "Bucket", "Buckets", "Listing", "Location", "S3Object"]

#: Object bodies are kept up to this size (1 MiB); larger ones only their size and ETag.
BODY_CAP = 1 << 20
#: What ListObjectsV2 answers at most (and by default) per page.
MAX_KEYS = 1000
#: The Region whose endpoint creates a bucket without a LocationConstraint.
DEFAULT_REGION = "us-east-1"
_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_IP = re.compile(r"^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$")
_ACCESS_DENIED = "Access Denied"


@dataclass(slots=True, kw_only=True)
class S3Object:
    """One object: its size, ETag, when it was written, and its body if kept."""

    key: str
    size: int
    etag: str
    modified: float
    content_type: str
    body: bytes | None = None


@dataclass(slots=True, kw_only=True)
class Bucket:
    """One bucket: whose, where, and its objects by key."""

    name: str
    owner: str
    region: str
    created: float
    objects: dict[str, S3Object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Location:
    """Where a disk object is, as ImportImage sees it (``ec2.models.DiskLocation``)."""

    region: str | None
    readable: bool
    size: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Listing:
    """One ListObjectsV2 page."""

    objects: list[S3Object]
    prefixes: list[str]
    next_token: str | None


def check_bucket_name(name: str) -> None:
    """Raise InvalidBucketName unless ``name`` follows S3's naming rules."""
    if not _NAME.match(name) or ".." in name or _IP.match(name):
        raise InvalidBucketName()


class Buckets:
    """Every bucket of one emulator (S3's one namespace)."""

    def __init__(self, *, clock: Clock, body_cap: int = BODY_CAP) -> None:
        self.clock = clock
        self.body_cap = body_cap
        self.buckets: dict[str, Bucket] = {}
        self.dirty = False

    def _owned(self, scope: Scope, name: str) -> Bucket:
        bucket = self.buckets.get(name)
        if bucket is None:
            raise NoSuchBucket()
        if bucket.owner != scope.account:
            raise AccessDenied(_ACCESS_DENIED)
        return bucket

    def create_bucket(self, scope: Scope, name: str, constraint: str | None) -> Bucket:
        """Create a bucket in ``constraint``'s Region (none: us-east-1).

        An endpoint other than us-east-1's creates buckets only in its own Region.
        """
        check_bucket_name(name)
        region = "eu-west-1" if constraint == "EU" else constraint or DEFAULT_REGION
        if scope.region != DEFAULT_REGION and region != scope.region:
            told = "unspecified" if constraint is None else constraint
            raise IllegalLocationConstraintException(
                f"The {told} location constraint is incompatible for the region specific "
                "endpoint this request was sent to."
            )
        existing = self.buckets.get(name)
        if existing is not None:
            if existing.owner != scope.account:
                raise BucketAlreadyExists()
            if existing.region != DEFAULT_REGION:
                raise BucketAlreadyOwnedByYou()
            return existing
        bucket = self.buckets[name] = Bucket(
            name=name, owner=scope.account, region=region, created=self.clock()
        )
        self.dirty = True
        return bucket

    def head_bucket(self, scope: Scope, name: str) -> Bucket:
        """The bucket, if it exists and is the caller's."""
        return self._owned(scope, name)

    def location(self, scope: Scope, name: str) -> str:
        """The bucket's Region."""
        return self._owned(scope, name).region

    def put_object(
        self,
        scope: Scope,
        name: str,
        key: str,
        *,
        size: int,
        md5: str,
        body: bytes | None,
        content_type: str,
    ) -> S3Object:
        """Write an object (a second write replaces the first, as S3's does)."""
        bucket = self._owned(scope, name)
        if not key or len(key.encode()) > 1024:
            raise InvalidArgument("Object keys have 1 to 1024 bytes.")
        stored = S3Object(
            key=key,
            size=size,
            etag=f'"{md5}"',
            modified=self.clock(),
            content_type=content_type,
            body=body if body is not None and len(body) <= self.body_cap else None,
        )
        bucket.objects[key] = stored
        self.dirty = True
        return stored

    def head_object(self, scope: Scope, name: str, key: str) -> S3Object:
        """The object's metadata."""
        found = self._owned(scope, name).objects.get(key)
        if found is None:
            raise NoSuchKey()
        return found

    def list_objects(
        self,
        scope: Scope,
        name: str,
        *,
        prefix: str = "",
        delimiter: str | None = None,
        start_after: str | None = None,
        token: str | None = None,
        max_keys: int = MAX_KEYS,
    ) -> Listing:
        """One page of keys after ``token`` (or ``start_after``), in key order; with a
        delimiter, the keys below a common prefix roll up into it (one entry each)."""
        bucket = self._owned(scope, name)
        after = _decode_token(token) if token is not None else start_after or ""
        objects: list[S3Object] = []
        prefixes: list[str] = []
        last = ""
        for key in sorted(k for k in bucket.objects if k.startswith(prefix) and k > after):
            rolled = None
            if delimiter:
                cut = key.find(delimiter, len(prefix))
                if cut >= 0:
                    rolled = key[: cut + len(delimiter)]
            if rolled is not None and prefixes and prefixes[-1] == rolled:
                last = key
                continue
            if len(objects) + len(prefixes) == max_keys:
                return Listing(objects=objects, prefixes=prefixes, next_token=_encode_token(last))
            if rolled is not None:
                prefixes.append(rolled)
            else:
                objects.append(bucket.objects[key])
            last = key
        return Listing(objects=objects, prefixes=prefixes, next_token=None)

    def list_buckets(self, scope: Scope) -> list[Bucket]:
        """The caller's buckets, by name."""
        return sorted(
            (b for b in self.buckets.values() if b.owner == scope.account), key=lambda b: b.name
        )

    def locate(self, bucket: str, key: str, *, account: str) -> Location:
        """Where ImportImage's disk is: the bucket's Region, and whether ``account``'s
        service role may read the object (it exists, in a bucket of that account)."""
        found = self.buckets.get(bucket)
        if found is None:
            return Location(None, False, None)
        stored = found.objects.get(key)
        if stored is None or found.owner != account:
            return Location(found.region, False, None)
        return Location(found.region, True, stored.size)

    def reset(self) -> None:
        """Forget every bucket."""
        self.buckets.clear()
        self.dirty = True

    def to_state(self) -> dict[str, Any]:
        """Buckets and objects (bodies as base64) for ``--state``."""
        return {
            "buckets": [
                {
                    "name": b.name,
                    "owner": b.owner,
                    "region": b.region,
                    "created": b.created,
                    "objects": [
                        {
                            "key": o.key,
                            "size": o.size,
                            "etag": o.etag,
                            "modified": o.modified,
                            "contentType": o.content_type,
                            "body": None
                            if o.body is None
                            else base64.b64encode(o.body).decode("ascii"),
                        }
                        for o in b.objects.values()
                    ],
                }
                for b in self.buckets.values()
            ]
        }

    def load_state(self, data: dict[str, Any]) -> None:
        """Take back the buckets and objects ``to_state`` wrote."""
        self.buckets.clear()
        for raw in data.get("buckets", []):
            bucket = self.buckets[raw["name"]] = Bucket(
                name=raw["name"],
                owner=raw["owner"],
                region=raw["region"],
                created=float(raw["created"]),
            )
            for obj in raw.get("objects", []):
                body = obj.get("body")
                bucket.objects[obj["key"]] = S3Object(
                    key=obj["key"],
                    size=int(obj["size"]),
                    etag=obj["etag"],
                    modified=float(obj["modified"]),
                    content_type=obj.get("contentType") or "binary/octet-stream",
                    body=None if body is None else base64.b64decode(body),
                )


def _encode_token(key: str) -> str:
    return base64.urlsafe_b64encode(key.encode()).decode()


def _decode_token(token: str) -> str:
    try:
        return base64.urlsafe_b64decode(token.encode()).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidArgument("The continuation token provided is incorrect") from None
