"""S3's REST-XML operations a wave needs: CreateBucket, PutObject, HeadObject, HeadBucket,
GetBucketLocation, ListObjectsV2, ListBuckets.

Enough for ``aws s3 cp`` of a small file, ``aws s3 ls`` and boto3's ``s3`` client
pointed at the emulator's endpoint (path style). Members, their wire names and the
answers' shapes are the current S3 model's (``CreateBucketConfiguration/
LocationConstraint``, ``list-type=2``, ``continuation-token``, ``encoding-type=url``:
keys then travel percent-encoded, as botocore decodes them). Not served: GetObject,
multipart uploads (``aws s3 cp`` of files over 8 MB), copies, deletes; they answer
NotImplemented.
"""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from email.utils import formatdate
from urllib.parse import quote

from ibimport.emulator.exceptions import (
    AccessDenied,
    AccessDeniedException,
    CallRateLimitExceededException,
    ExpiredToken,
    ExpiredTokenException,
    IncompleteSignatureException,
    InternalError,
    InvalidAccessKeyId,
    InvalidArgument,
    InvalidSignatureException,
    MissingAuthenticationTokenException,
    NotImplementedOperation,
    ServiceError,
    ServiceException,
    ServiceUnavailableException,
    SignatureDoesNotMatch,
    SlowDown,
    UnrecognizedClientException,
)
from ibimport.emulator.query import element
from ibimport.emulator.restxml import Answer, Handler, RestXmlCall, RestXmlService
from ibimport.emulator.s3.models import BODY_CAP, DEFAULT_REGION, MAX_KEYS, Buckets, S3Object

__all__ = ["S3"]

XMLNS = "http://s3.amazonaws.com/doc/2006-03-01/"
_XML = {"Content-Type": "application/xml"}


def _date(epoch: float) -> str:
    """S3's XML timestamps: ISO 8601 UTC with milliseconds."""
    millis = int(epoch * 1000) % 1000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch)) + f".{millis:03d}Z"


def _bucket(call: RestXmlCall) -> str:
    if call.bucket is None:
        raise InvalidArgument("The request names no bucket.")
    return call.bucket


def create_bucket(buckets: Buckets, call: RestXmlCall) -> Answer:
    """PUT /BUCKET, with an optional CreateBucketConfiguration naming its Region."""
    constraint = None
    if call.body:
        try:
            root = ET.fromstring(call.body)
        except ET.ParseError:
            raise InvalidArgument("The XML you provided was not well-formed.") from None
        found = root.find(f"{{{XMLNS}}}LocationConstraint")
        if found is None:
            found = root.find("LocationConstraint")
        constraint = (found.text or None) if found is not None else None
    bucket = buckets.create_bucket(call.scope, _bucket(call), constraint)
    return Answer(200, {"Location": f"/{bucket.name}"})


def put_object(buckets: Buckets, call: RestXmlCall) -> Answer:
    """PUT /BUCKET/KEY: the object's size, ETag and (if small) body are kept."""
    if "x-amz-copy-source" in call.headers:
        raise NotImplementedOperation()
    stored = buckets.put_object(
        call.scope,
        _bucket(call),
        call.key or "",
        size=call.size,
        md5=call.md5,
        body=call.body,
        content_type=call.headers.get("Content-Type") or "binary/octet-stream",
    )
    headers = {"ETag": stored.etag}
    for name, value in call.headers.items():
        if name.lower().startswith("x-amz-checksum-"):
            headers[name] = value  # echoed: the emulator does not check it
    return Answer(200, headers)


def _object_headers(stored: S3Object) -> dict[str, str]:
    return {
        "Content-Length": str(stored.size),
        "Content-Type": stored.content_type,
        "ETag": stored.etag,
        "Last-Modified": formatdate(stored.modified, usegmt=True),
        "Accept-Ranges": "bytes",
    }


def head_object(buckets: Buckets, call: RestXmlCall) -> Answer:
    """HEAD /BUCKET/KEY: size and ETag, no body."""
    return Answer(
        200, _object_headers(buckets.head_object(call.scope, _bucket(call), call.key or ""))
    )


def head_bucket(buckets: Buckets, call: RestXmlCall) -> Answer:
    """HEAD /BUCKET: 200 if it is the caller's, with its Region."""
    bucket = buckets.head_bucket(call.scope, _bucket(call))
    return Answer(200, {"x-amz-bucket-region": bucket.region})


def get_bucket_location(buckets: Buckets, call: RestXmlCall) -> Answer:
    """GET /BUCKET?location: the Region; empty for us-east-1 (the model: "null")."""
    region = buckets.location(call.scope, _bucket(call))
    text = "" if region == DEFAULT_REGION else region
    body = (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<LocationConstraint xmlns="{XMLNS}">'
        f"{text}</LocationConstraint>"
    )
    return Answer(200, dict(_XML), body.encode())


def _max_keys(value: str | None) -> int:
    if value is None:
        return MAX_KEYS
    try:
        number = int(value)
    except ValueError:
        raise InvalidArgument("Provided max-keys not an integer or within integer range") from None
    if number < 0:
        raise InvalidArgument("Argument maxKeys must be an integer between 0 and 2147483647")
    return min(number, MAX_KEYS)


def list_objects_v2(buckets: Buckets, call: RestXmlCall) -> Answer:
    """GET /BUCKET?list-type=2: one page of keys in key order."""
    query = call.query
    encode = query.get("encoding-type") == "url"

    def text(tag: str, value: str | None) -> str:
        if value is None:
            return ""
        return element(tag, quote(value, safe="/") if encode else value)

    prefix = query.get("prefix", "")
    delimiter = query.get("delimiter") or None
    max_keys = _max_keys(query.get("max-keys"))
    page = buckets.list_objects(
        call.scope,
        _bucket(call),
        prefix=prefix,
        delimiter=delimiter,
        start_after=query.get("start-after"),
        token=query.get("continuation-token"),
        max_keys=max_keys,
    )
    contents = "".join(
        "<Contents>"
        + text("Key", o.key)
        + element("LastModified", _date(o.modified))
        + element("ETag", o.etag)
        + element("Size", o.size)
        + element("StorageClass", "STANDARD")
        + "</Contents>"
        for o in page.objects
    )
    prefixes = "".join(
        f"<CommonPrefixes>{text('Prefix', p)}</CommonPrefixes>" for p in page.prefixes
    )
    body = (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<ListBucketResult xmlns="{XMLNS}">'
        + element("Name", call.bucket)
        + text("Prefix", prefix)
        + text("Delimiter", delimiter)
        + text("StartAfter", query.get("start-after"))
        + element("ContinuationToken", query.get("continuation-token"))
        + element("NextContinuationToken", page.next_token)
        + element("KeyCount", len(page.objects) + len(page.prefixes))
        + element("MaxKeys", max_keys)
        + element("EncodingType", "url" if encode else None)
        + element("IsTruncated", "true" if page.next_token else "false")
        + contents
        + prefixes
        + "</ListBucketResult>"
    )
    return Answer(200, dict(_XML), body.encode())


def list_buckets(buckets: Buckets, call: RestXmlCall) -> Answer:
    """GET /: the caller's buckets."""
    items = "".join(
        "<Bucket>"
        + element("Name", b.name)
        + element("CreationDate", _date(b.created))
        + element("BucketRegion", b.region)
        + "</Bucket>"
        for b in buckets.list_buckets(call.scope)
    )
    body = (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<ListAllMyBucketsResult xmlns="{XMLNS}">'
        + f"<Owner>{element('ID', call.scope.account)}</Owner>"
        + f"<Buckets>{items}</Buckets></ListAllMyBucketsResult>"
    )
    return Answer(200, dict(_XML), body.encode())


def route(
    method: str, bucket: str | None, key: str | None, query: Mapping[str, str]
) -> tuple[str, Handler]:
    """The operation a request names, or NotImplemented for one the emulator lacks."""
    if bucket is None:
        if method == "GET":
            return "ListBuckets", list_buckets
    elif key is None:
        if method == "PUT" and not query:
            return "CreateBucket", create_bucket
        if method == "HEAD":
            return "HeadBucket", head_bucket
        if method == "GET" and "location" in query:
            return "GetBucketLocation", get_bucket_location
        if method == "GET" and query.get("list-type") == "2":
            return "ListObjectsV2", list_objects_v2
    else:
        if method == "PUT" and not query:
            return "PutObject", put_object
        if method == "HEAD":
            return "HeadObject", head_object
    raise NotImplementedOperation()


def translate(exc: ServiceError) -> ServiceError:
    """The answer S3 gives where the shared layers raised Image Builder's error."""
    if isinstance(exc, AccessDeniedException | MissingAuthenticationTokenException):
        return AccessDenied("Access Denied")
    if isinstance(exc, UnrecognizedClientException):
        return InvalidAccessKeyId()
    if isinstance(exc, InvalidSignatureException | IncompleteSignatureException):
        return SignatureDoesNotMatch(exc.message)
    if isinstance(exc, ExpiredTokenException):
        return ExpiredToken()
    if isinstance(exc, CallRateLimitExceededException | ServiceUnavailableException):
        return SlowDown()
    if isinstance(exc, ServiceException):
        return InternalError("We encountered an internal error. Please try again.")
    return exc


S3 = RestXmlService(signing_name="s3", route=route, translate=translate, body_cap=BODY_CAP)

#: The IAM action each operation needs, where its name is not the operation's (``--deny``).
IAM_ACTIONS = {
    "HeadObject": "GetObject",
    "HeadBucket": "ListBucket",
    "ListObjectsV2": "ListBucket",
    "ListBuckets": "ListAllMyBuckets",
}
