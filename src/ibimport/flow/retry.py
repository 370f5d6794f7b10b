"""What to do after a failed call, and how long to wait before trying again.

Pure: no I/O and no clock. ``classify`` maps a ``CallError`` (already translated from
botocore by ``ibimport.aws.boundary``) to a ``Disposition``; ``Backoff`` gives full-jitter delays.
Retrying is safe because every attempt of a row carries the same clientToken.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from ibimport.errors import CallError, TransportError

__all__ = [
    "DENIED_CODES",
    "FATAL_CODES",
    "NO_ANSWER_CODES",
    "QUOTA_CODES",
    "REFUSED_CREDENTIAL_CODES",
    "RETRYABLE_CODES",
    "RETRYABLE_STATUSES",
    "THROTTLING_CODES",
    "UNREACHABLE_CODES",
    "Backoff",
    "Disposition",
    "FatalDetector",
    "OutageDetector",
    "classify",
    "fatal_message",
]


class Disposition(StrEnum):
    """How the runner treats a failed call."""

    THROTTLED = "throttled"  # slow the limiter, then retry
    RETRY = "retry"  # transient: retry after a backoff
    PERMANENT = "permanent"  # this row fails; the batch goes on
    FATAL = "fatal"  # every call would fail the same way: stop the batch
    #: A resource quota is full (EC2's active import tasks): back-pressure, never a row's
    #: failure; the caller's meter shrinks and the call waits for room (``flow.slots``).
    BACKPRESSURE = "backpressure"


# botocore's standard-retry throttling list, minus LimitExceededException and
# TransactionInProgressException (elsewhere those mean a resource limit or a conflict),
# plus Image Builder's own CallRateLimitExceededException.
THROTTLING_CODES: frozenset[str] = frozenset(
    {
        "CallRateLimitExceededException",
        "ThrottlingException",
        "ThrottledException",
        "TooManyRequestsException",
        "Throttling",
        "RequestThrottled",
        "RequestThrottledException",
        "RequestLimitExceeded",
        "SlowDown",
        "BandwidthLimitExceeded",
        "ProvisionedThroughputExceededException",
        "EC2ThrottledException",
        "PriorRequestNotComplete",
    }
)

# A quota of resources held over time is full, not a rate: EC2 refuses ImportImage with one
# of these when the account's active import tasks reach the quota (issue 19: keep both).
# Waiting for one of our own tasks to end, not a backoff, is what makes room.
QUOTA_CODES: frozenset[str] = frozenset({"ResourceLimitExceeded", "ResourceCountLimitExceeded"})

# Server-side or in-transit faults that a later identical attempt may not meet.
RETRYABLE_CODES: frozenset[str] = frozenset(
    {
        "ServiceException",  # Image Builder's HTTP 500
        "ServiceUnavailableException",
        "ServiceUnavailable",
        "InternalFailure",
        "InternalError",
        "InternalServerError",
        "InternalServerException",
        "InternalServiceException",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)
RETRYABLE_STATUSES: frozenset[int] = frozenset({500, 502, 503, 504})

# The service refuses the caller's credentials themselves (not a permission): the fix is
# another key, secret, session token or system clock.
REFUSED_CREDENTIAL_CODES: frozenset[str] = frozenset(
    {
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "InvalidSignatureException",
        "IncompleteSignature",
        "IncompleteSignatureException",
        "ExpiredTokenException",
        "ExpiredToken",
        "RequestExpired",
        "AuthFailure",
    }
)

# The caller's credentials are good but a policy refuses it this action (each service's
# word for it). A preflight says "could not check" for these rather than failing.
DENIED_CODES: frozenset[str] = frozenset(
    {
        "AccessDeniedException",
        "AccessDenied",
        "ForbiddenException",
        "UnauthorizedOperation",
    }
)

# Credential, signature and permission faults: they fail every call, so retrying a
# thousand rows only produces a thousand identical failures.
FATAL_CODES: frozenset[str] = (
    REFUSED_CREDENTIAL_CODES
    | DENIED_CODES
    | frozenset(
        {
            "OptInRequired",
            "MissingAuthenticationTokenException",
            "MissingAuthenticationToken",
            # TransportError codes from ibimport.aws.boundary: no usable credentials at all.
            "NoCredentials",
            "CredentialRetrievalError",
        }
    )
)

# Transport codes that mean "the endpoint cannot be reached" rather than "this attempt broke".
UNREACHABLE_CODES: frozenset[str] = frozenset(
    {"EndpointConnectionError", "ConnectTimeout", "ConnectionError"}
)


def classify(error: CallError) -> Disposition:
    """Decide what a failed call means for its row and for the batch.

    Order matters: credential faults win over everything (an expired token fails every
    call), throttling wins over the status (S3's SlowDown is a 503), then transient faults,
    then any other 4xx (or unknown) is the row's own problem.
    """
    code, status = error.code, error.status
    if code in FATAL_CODES:
        return Disposition.FATAL
    if status == 429 or code in THROTTLING_CODES:
        return Disposition.THROTTLED
    if code in QUOTA_CODES:
        return Disposition.BACKPRESSURE
    if isinstance(error, TransportError):
        return Disposition.RETRY
    if code in RETRYABLE_CODES or status in RETRYABLE_STATUSES:
        return Disposition.RETRY
    if status == 403:
        return Disposition.FATAL
    return Disposition.PERMANENT


def fatal_message(error: CallError) -> str:
    """The one line a batch stopped by ``error`` (classified FATAL) tells a person."""
    if error.code == "NoCredentials":
        return "no usable AWS credentials: " + error.message
    if error.code in REFUSED_CREDENTIAL_CODES:
        return (
            f"the AWS credentials were refused: {error.code}: {error.message} "
            "(check the access key, secret key and session token in use, whether they "
            "expired, the profile, and the system clock)"
        )
    return (
        f"every call would fail: {error.code}: {error.message} "
        "(check the credentials, the region and the IAM policy in the README)"
    )


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with full jitter (AWS's recommendation: spreads retries evenly).

    ``attempt`` counts attempts already made, from 1.
    """

    base_s: float = 0.1
    cap_s: float = 20.0
    max_attempts: int = 8

    def __post_init__(self) -> None:
        if not self.base_s > 0 or not self.cap_s >= self.base_s:
            raise ValueError("Backoff needs 0 < base_s <= cap_s")
        if self.max_attempts < 1:
            raise ValueError("Backoff needs max_attempts >= 1")

    def ceiling(self, attempt: int) -> float:
        """The largest delay after ``attempt`` attempts: min(cap, base * 2**(attempt-1))."""
        exponent = min(max(attempt, 1) - 1, 64)  # 2**64 * base is far past any cap
        return min(self.cap_s, self.base_s * 2.0**exponent)

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Seconds to wait before the next attempt: uniform(0, ceiling(attempt))."""
        return rng.uniform(0.0, self.ceiling(attempt))

    def should_retry(self, attempt: int) -> bool:
        """Whether another attempt is allowed after ``attempt`` attempts."""
        return attempt < self.max_attempts


class FatalDetector:
    """Tells the runner when repeated "unreachable" transport failures mean stop.

    One EndpointConnectionError is retried like any transport fault; ``threshold`` of them
    in a row of the same kind, before any call has ever succeeded, means the endpoint is
    wrong or down for everyone, and the batch should stop with one message. Once a call has
    succeeded the endpoint is known good and later outages are left to per-row retries.
    """

    def __init__(self, threshold: int = 5, *, codes: Iterable[str] = UNREACHABLE_CODES) -> None:
        if threshold < 1:
            raise ValueError("threshold must be >= 1")
        self._threshold = threshold
        self._codes = frozenset(codes)
        self._seen_success = False
        self._streak_code: str | None = None
        self._streak = 0

    def success(self) -> None:
        """A call got an answer from the service (any answer, even an error)."""
        self._seen_success = True
        self._streak_code, self._streak = None, 0

    def failure(self, error: CallError) -> bool:
        """Record a failed call; True if the batch should stop now."""
        if self._seen_success:
            return False
        if not isinstance(error, TransportError) or error.code not in self._codes:
            # the service answered: the endpoint is reachable
            self.success()
            return False
        if error.code == self._streak_code:
            self._streak += 1
        else:
            self._streak_code, self._streak = error.code, 1
        return self._streak >= self._threshold


# Transport codes that mean "no answer came back at all": a stopped, hung or unreachable
# service. (A reset, ConnectionError, is left out: a flaky path drops single connections.)
NO_ANSWER_CODES: frozenset[str] = frozenset(
    {"ReadTimeout", "ConnectTimeout", "EndpointConnectionError"}
)


class OutageDetector:
    """Tells the runner when a service that answered before has stopped answering.

    ``FatalDetector`` gives up on an endpoint that never answered; this one covers the
    service that hangs mid-batch (stopped, overloaded, a black-holed route), where per-row
    retries would spend ``--max-attempts`` read timeouts on every row: hours at the
    defaults. The batch stops once ``threshold`` calls in a row, across rows, got no
    answer (timed out or could not connect) and no answer has come for ``quiet_s`` since
    the first of them. Any answer, even an error, resets it. ``now`` is monotonic seconds.
    """

    def __init__(self, threshold: int = 32, *, quiet_s: float = 10.0) -> None:
        if threshold < 1 or quiet_s < 0:
            raise ValueError("OutageDetector needs threshold >= 1 and quiet_s >= 0")
        self.threshold = threshold
        self.quiet_s = quiet_s
        self.streak = 0
        self._since: float | None = None

    def answered(self) -> None:
        """A call got an answer from the service (any answer, even an error)."""
        self.streak, self._since = 0, None

    def failure(self, error: CallError, *, now: float) -> bool:
        """Record a failed call at ``now``; True if the batch should stop now."""
        if not isinstance(error, TransportError) or error.code not in NO_ANSWER_CODES:
            self.answered()
            return False
        if self._since is None:
            self._since = now
        self.streak += 1
        return self.streak >= self.threshold and now - self._since >= self.quiet_s

    def message(self, error: CallError) -> str:
        """The one line a batch stopped by an outage tells a person."""
        return (
            f"the Image Builder endpoint stopped answering: {self.streak} calls in a row got "
            f"no answer (last: {error.code}: {error.message}); every row is resumable: "
            "run the same command again once the service answers"
        )
