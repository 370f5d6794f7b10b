"""AWS's REST-XML protocol as S3 speaks it: a bucket and key in the path, XML answers.

S3 is found by its signing name (``s3`` in the credential scope) rather than by a route,
because its paths are the caller's: ``/BUCKET`` and ``/BUCKET/KEY`` (path style, what
botocore sends to an endpoint URL that is an IP address; ``BUCKET.localhost`` is read
too). The service's ``route`` names the operation from the method, bucket, key and
query; its handler answers a status, headers and a body. An error is XML
``<Error><Code/><Message/><RequestId/></Error>``, with no body for HEAD, as botocore's
s3 parser reads them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ibimport.emulator.core import Scope
from ibimport.emulator.exceptions import ServiceError
from ibimport.emulator.query import element

__all__ = ["Answer", "RestXmlCall", "RestXmlService", "bucket_and_key", "render_error"]

_VIRTUAL_HOST = re.compile(r"^(?P<bucket>[a-z0-9][a-z0-9.-]*)\.localhost(?::[0-9]+)?$")


@dataclass(frozen=True, slots=True, kw_only=True)
class RestXmlCall:
    """One authenticated S3 call: whose, where, what it names and carries."""

    scope: Scope
    request_id: str
    method: str
    bucket: str | None
    key: str | None
    query: Mapping[str, str]
    headers: Mapping[str, str]
    #: The body as kept (None past the service's cap), its size and MD5 (hex).
    body: bytes | None
    size: int
    md5: str
    access_key: str = ""


@dataclass(frozen=True, slots=True)
class Answer:
    """A REST-XML answer: status, headers and body."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


Handler = Callable[[Any, RestXmlCall], Answer]


@dataclass(frozen=True, slots=True, kw_only=True)
class RestXmlService:
    """What the server needs to know of one REST-XML service."""

    signing_name: str
    #: (method, bucket, key, query) -> (operation name, handler); raises for none.
    route: Callable[[str, str | None, str | None, Mapping[str, str]], tuple[str, Handler]]
    translate: Callable[[ServiceError], ServiceError]
    #: Bodies are kept up to this many bytes; beyond it only their size and digests.
    body_cap: int


def bucket_and_key(path: str, host: str | None) -> tuple[str | None, str | None]:
    """The bucket and key a (decoded) path names, path style or ``BUCKET.localhost``."""
    virtual = _VIRTUAL_HOST.match(host or "")
    if virtual is not None:
        key = path.lstrip("/")
        return virtual.group("bucket"), key or None
    bucket, _, key = path.lstrip("/").partition("/")
    return bucket or None, key or None


def render_error(exc: ServiceError, request_id: str, *, head: bool) -> Answer:
    """S3's error shape; HEAD answers carry no body."""
    headers = {"x-amz-request-id": request_id, "x-amz-id-2": request_id}
    if head:
        return Answer(exc.status, headers)
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n<Error>'
        + element("Code", exc.code)
        + element("Message", exc.message)
        + element("RequestId", request_id)
        + "</Error>"
    )
    return Answer(exc.status, {**headers, "Content-Type": "application/xml"}, body.encode())
