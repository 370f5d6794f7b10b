"""Who a request says it is from, and AWS Signature Version 4 verification.

``caller`` reads the access key and region from the Authorization header (every call
needs one, as on AWS). ``verify``, for ``--verify-signatures``, recomputes the signature
from what the server received (method, path, query, the headers the client says it
signed, the body) with the secret of the access key the client names, and compares in
constant time; it also refuses a credential scoped to a region the server does not
serve and a signing time more than five minutes off the server's clock, as AWS does.
Which keys exist, and the session token and expiry of temporary ones, is the caller's
lookup (``sts.models.Identities.known``); the signing service is the protocol's
(``imagebuilder``, or ``ec2``/``sts`` for the query protocol on the same endpoint).
Written from the SigV4 specification rather than with botocore's signer, so the check is
independent of the client it checks. Errors are the ones AWS's REST-JSON front end
answers, all HTTP 403.
"""

from __future__ import annotations

import calendar
import hashlib
import hmac
import re
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import quote, unquote

from ibimport.emulator.config import is_account_id
from ibimport.emulator.core import Scope
from ibimport.emulator.exceptions import (
    ExpiredTokenException,
    IncompleteSignatureException,
    InvalidSignatureException,
    MissingAuthenticationTokenException,
    UnrecognizedClientException,
)

__all__ = ["SIGNATURE_SKEW_S", "Credentials", "caller", "scope_of", "signing_service", "verify"]

_ALGORITHM = "AWS4-HMAC-SHA256"
_PARAMETER = re.compile(r"(Credential|SignedHeaders|Signature)=([^,\s]*)")
_AMZ_DATE = re.compile(r"^[0-9]{8}T[0-9]{6}Z$")
_AMZ_DATE_FORMAT = "%Y%m%dT%H%M%SZ"
#: How far a signing time may be from the server's clock, either way (AWS: 5 minutes).
SIGNATURE_SKEW_S = 300
_HEX_SIGNATURE = re.compile(r"^[0-9a-f]{64}$")
# "AWS4-HMAC-SHA256 Credential=AKID/20240101/us-east-1/imagebuilder/aws4_request, ..."
_CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/[^/,\s]+/([^/,\s]+)/")
_SCOPE_SERVICE = re.compile(r"Credential=[^/,\s]+/[^/,\s]+/[^/,\s]+/([^/,\s]+)/")


@dataclass(frozen=True, slots=True)
class Credentials:
    """An access key the emulator recognises when it verifies signatures, with its secret
    (and, for temporary credentials, the session token and when they expire)."""

    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)
    #: Epoch seconds from which the key is refused (temporary credentials only).
    expires: float | None = None


def signing_service(authorization: str | None) -> str | None:
    """The service a request's credential scope names (``ec2``, ``sts``), if it has one."""
    found = _SCOPE_SERVICE.search(authorization or "")
    return found.group(1) if found else None


def caller(authorization: str | None) -> tuple[str, str]:
    """The access key and region a request is signed with, read without checking them.

    Raises what AWS answers to a request without an Authorization header, or whose
    header names no credential.
    """
    if authorization is None:
        raise MissingAuthenticationTokenException()
    credential = _CREDENTIAL.search(authorization)
    if credential is None:
        raise IncompleteSignatureException("Authorization header requires 'Credential' parameter.")
    access_key, region = credential.groups()
    return access_key, region


def scope_of(access_key: str, region: str, *, default_account: str) -> Scope:
    """Where a caller's call acts: a 12-digit access key names its account, as in tests."""
    return Scope(access_key if is_account_id(access_key) else default_account, region)


def verify(
    *,
    known: Callable[[str], Credentials | None],
    service: str,
    method: str,
    raw_path: str,
    headers: Mapping[str, str],
    header_values: Callable[[str], Iterable[str]],
    body: bytes,
    regions: Collection[str] | None,
    now: float,
) -> None:
    """Raise the error AWS would answer unless the request is signed by a key ``known``
    returns, for ``service``.

    ``raw_path`` is the request target as sent (path and query, still percent-encoded);
    ``header_values(name)`` returns every value of a header, in the order received.
    ``regions`` are the ones the server serves (None: any, as for global STS); ``now`` its
    clock (epoch seconds), which a signing time may differ from by at most
    ``SIGNATURE_SKEW_S``.
    """
    authorization = headers.get("Authorization", "")
    algorithm, _, rest = authorization.partition(" ")
    if algorithm != _ALGORITHM:
        raise IncompleteSignatureException(f"Unsupported authorization type: {algorithm or 'none'}")
    parameters = dict(_PARAMETER.findall(rest))
    for name in ("Credential", "SignedHeaders", "Signature"):
        if name not in parameters:
            raise IncompleteSignatureException(f"Authorization header requires '{name}' parameter.")
    scope = parameters["Credential"].split("/")
    if len(scope) != 5 or scope[4] != "aws4_request":
        raise IncompleteSignatureException(
            "Credential must have exactly 5 slash-delimited elements, e.g. "
            "keyid/date/region/service/term."
        )
    access_key, day, scope_region, scope_service, _ = scope
    amz_date = headers.get("X-Amz-Date", "")
    if not _AMZ_DATE.match(amz_date):
        raise IncompleteSignatureException(
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header."
        )
    # The key is checked before the signature, as AWS does: an unknown key says so.
    credentials = known(access_key)
    if credentials is None:
        raise UnrecognizedClientException()
    token = headers.get("X-Amz-Security-Token")
    if (token is None) != (credentials.session_token is None) or not hmac.compare_digest(
        (token or "").encode(), (credentials.session_token or "").encode()
    ):
        # A session token the emulator never issued, or temporary keys without theirs.
        raise UnrecognizedClientException()
    if credentials.expires is not None and now >= credentials.expires:
        raise ExpiredTokenException()
    if scope_service != service:
        raise InvalidSignatureException(
            f"Credential should be scoped to correct service: '{service}'. "
        )
    if regions is not None and scope_region not in regions:
        raise InvalidSignatureException(
            f"Credential should be scoped to a valid region, not '{scope_region}'. "
        )
    if day != amz_date[:8]:
        raise InvalidSignatureException(
            f"Date in Credential scope does not match YYYYMMDD from ISO-8601 version of "
            f"date from HTTP: '{day}' != '{amz_date[:8]}', from '{amz_date}'."
        )
    _check_signing_time(amz_date, now)
    signed = parameters["SignedHeaders"].split(";")
    if "host" not in signed:
        raise InvalidSignatureException("'Host' must be a 'SignedHeader' in the AWS Authorization.")
    path, _, query = raw_path.partition("?")
    canonical = "\n".join(
        [
            method.upper(),
            quote(path or "/", safe="/~"),
            _canonical_query(query),
            "".join(f"{name}:{_trim_all(header_values(name))}\n" for name in signed),
            parameters["SignedHeaders"],
            hashlib.sha256(body).hexdigest(),
        ]
    )
    string_to_sign = "\n".join(
        [
            _ALGORITHM,
            amz_date,
            f"{day}/{scope_region}/{scope_service}/aws4_request",
            hashlib.sha256(canonical.encode("utf-8")).hexdigest(),
        ]
    )
    key = ("AWS4" + credentials.secret_access_key).encode("utf-8")
    for part in (day, scope_region, scope_service, "aws4_request"):
        key = hmac.new(key, part.encode("utf-8"), hashlib.sha256).digest()
    expected = hmac.new(key, string_to_sign.encode("utf-8"), hashlib.sha256).hexdigest()
    given = parameters["Signature"]
    if not _HEX_SIGNATURE.match(given) or not hmac.compare_digest(
        expected.encode("ascii"), given.encode("ascii")
    ):
        raise InvalidSignatureException()


def _check_signing_time(amz_date: str, now: float) -> None:
    """AWS refuses a signature made more than five minutes before or after its clock."""
    try:
        signed = calendar.timegm(time.strptime(amz_date, _AMZ_DATE_FORMAT))
    except ValueError:  # the shape matched, the date does not exist (month 13, say)
        raise IncompleteSignatureException(
            f"Date must be in ISO-8601 'basic format'. Got '{amz_date}'."
        ) from None
    minutes = SIGNATURE_SKEW_S // 60
    if signed < now - SIGNATURE_SKEW_S:
        raise InvalidSignatureException(
            f"Signature expired: {amz_date} is now earlier than "
            f"{_amz(now - SIGNATURE_SKEW_S)} ({_amz(now)} - {minutes} min.)"
        )
    if signed > now + SIGNATURE_SKEW_S:
        raise InvalidSignatureException(
            f"Signature not yet current: {amz_date} is still later than "
            f"{_amz(now + SIGNATURE_SKEW_S)} ({_amz(now)} + {minutes} min.)"
        )


def _amz(epoch: float) -> str:
    return time.strftime(_AMZ_DATE_FORMAT, time.gmtime(epoch))


def _canonical_query(query: str) -> str:
    """Each name and value decoded, re-encoded with RFC 3986's unreserved set, then sorted."""
    if not query:
        return ""
    pairs = []
    for item in query.split("&"):
        name, _, value = item.partition("=")
        pairs.append((quote(unquote(name), safe="-_.~"), quote(unquote(value), safe="-_.~")))
    return "&".join(f"{name}={value}" for name, value in sorted(pairs))


def _trim_all(values: Iterable[str]) -> str:
    """Header values joined by commas, each with its runs of spaces collapsed."""
    return ",".join(" ".join(value.split()) for value in values)
