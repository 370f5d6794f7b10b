"""The AWS errors the emulator answers with: one class per error code, as moto has them.

A class's name is its code (``x-amzn-ErrorType``), its ``status`` the HTTP status, and
its ``default_message`` the words AWS uses when the message never varies. Models, the
signature check and the server raise them; one serialiser per protocol turns one into
an answer (``rest.render_error``, ``ec2.responses`` and ``sts.responses``' own), so
adding an error is adding a class here.

    ServiceError
    ├── InvalidParameterValueException      400  a request member broke the model
    ├── SerializationException              400  the body is not a JSON object
    ├── InvalidRequestException             400  e.g. an unsupported filter name
    ├── InvalidPaginationTokenException     400
    ├── IdempotentParameterMismatchException 400 a clientToken reused with other members
    ├── MissingAuthenticationTokenException 403  no Authorization header
    ├── IncompleteSignatureException        403  an Authorization header AWS cannot parse
    ├── InvalidSignatureException           403  the signature does not match, is out of
    │                                            its time window or scoped to another region
    ├── UnrecognizedClientException         403  unknown access key or session token
    ├── ExpiredTokenException               403  temporary credentials past Expiration
    ├── AccessDeniedException               403  --deny
    ├── ResourceNotFoundException           404
    ├── UnknownOperationException           404  no operation at that route
    ├── RequestEntityTooLargeException      413  a body beyond the front end's limit
    ├── CallRateLimitExceededException      429  the per-operation quota
    ├── ServiceException                    500  an injected fault
    └── ServiceUnavailableException         503  an injected fault

EC2's query protocol (``ec2.responses``, rendered as EC2's XML) has its own codes:

    ServiceError
    ├── InvalidParameterValue               400  a malformed task ID, MaxResults or filter
    ├── InvalidConversionTaskIdMalformed    400  InvalidConversionTaskId.Malformed: no such task
    ├── InvalidAction                       400  an Action the emulator does not serve
    ├── AuthFailure                         401  any signature or key problem
    ├── UnauthorizedOperation               403  --deny
    ├── DryRunOperation                     412  DryRun=true and the call would succeed
    ├── InternalError                       500  an injected fault
    └── RequestLimitExceeded / Unavailable  503  the EC2 quota / an injected fault

and so has STS's (``sts.responses``): ValidationError (400), AccessDenied,
InvalidClientTokenId, SignatureDoesNotMatch, IncompleteSignature, ExpiredToken (403).
"""

from __future__ import annotations

from typing import ClassVar

#: What AWS answers to a signature that does not match.
BAD_SIGNATURE = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your AWS Secret Access Key and signing method. "
    "Consult the service documentation for details."
)
#: What AWS answers to an access key or session token it does not know.
UNKNOWN_KEY = "The security token included in the request is invalid."


class ServiceError(Exception):
    """An AWS error answer; subclasses name the code and the HTTP status."""

    status: ClassVar[int] = 400
    default_message: ClassVar[str | None] = None
    #: The code when it is not the class's name (EC2's dotted codes).
    aws_code: ClassVar[str | None] = None

    def __init__(self, message: str | None = None) -> None:
        text = message if message is not None else self.default_message
        if text is None:
            raise TypeError(f"{type(self).__name__} needs a message")
        super().__init__(f"{self.code}: {text}")
        self.message = text

    @property
    def code(self) -> str:
        """The error code AWS puts in ``x-amzn-ErrorType``: the class's name."""
        return self.aws_code or type(self).__name__


class InvalidParameterValueException(ServiceError):
    """Image Builder's answer to a request that breaks the service model's constraints."""

    @classmethod
    def of(cls, violations: list[str]) -> InvalidParameterValueException:
        """Phrase violations exactly as AWS's request validator does, all at once."""
        count = len(violations)
        noun = "error" if count == 1 else "errors"
        return cls(f"{count} validation {noun} detected: {'; '.join(violations)}")


class SerializationException(ServiceError):
    """The body is not JSON, or not the structure the operation takes."""


class InvalidRequestException(ServiceError):
    """A well-formed request the service refuses (e.g. an unsupported filter name)."""


class InvalidPaginationTokenException(ServiceError):
    """A nextToken this emulator did not hand out."""

    default_message = "The pagination token is invalid."


class IdempotentParameterMismatchException(ServiceError):
    """A clientToken seen before, with other request members."""


class MissingAuthenticationTokenException(ServiceError):
    """A request with no Authorization header at all."""

    status = 403
    default_message = "Missing Authentication Token"


class IncompleteSignatureException(ServiceError):
    """An Authorization header that lacks a part SigV4 needs."""

    status = 403


class InvalidSignatureException(ServiceError):
    """A SigV4 signature that does not match the request (``--verify-signatures``)."""

    status = 403
    default_message = BAD_SIGNATURE


class UnrecognizedClientException(ServiceError):
    """An access key or session token the emulator does not know (``--verify-signatures``)."""

    status = 403
    default_message = UNKNOWN_KEY


class ExpiredTokenException(ServiceError):
    """Temporary credentials (from the emulator's AssumeRole) past their Expiration."""

    status = 403
    default_message = "The security token included in the request is expired"


class AccessDeniedException(ServiceError):
    """Image Builder's access-denied answer (``--deny``), in IAM's words."""

    status = 403


class ResourceNotFoundException(ServiceError):
    """No image or image version at that ARN."""

    status = 404


class UnknownOperationException(ServiceError):
    """No operation at that method and path."""

    status = 404
    default_message = "Unknown operation."


class RequestEntityTooLargeException(ServiceError):
    """A body larger than the server reads; answered as JSON like every other error."""

    status = 413


class CallRateLimitExceededException(ServiceError):
    """The operation's quota (``--rate``/``--burst``) is spent."""

    status = 429


class ServiceException(ServiceError):
    """An injected internal error (``--fault-rate``)."""

    status = 500
    default_message = "An internal error occurred."


class ServiceUnavailableException(ServiceError):
    """An injected unavailability (``--fault-rate``)."""

    status = 503
    default_message = "The service is unavailable. Try again later."


# EC2 (query protocol). Codes and statuses as EC2's API reference lists them.


class InvalidParameterValue(ServiceError):
    """EC2: a parameter's value is not one EC2 takes (a malformed import task ID, say)."""


class InvalidConversionTaskIdMalformed(ServiceError):
    """EC2's answer to a call naming a well-formed import task ID it has no task for
    (expired or never existed), failing the whole call.

    What is known of it: the code is what EC2 answers in practice (OpenStack nodepool's
    AWS driver reads it as "the task no longer exists"); the message is the description
    EC2's error-code reference gives the code, which names no ID. Nobody documents which
    of several IDs was refused, so a client must not read it from the words.
    """

    aws_code = "InvalidConversionTaskId.Malformed"
    default_message = (
        "The specified conversion task ID (for instance or volume import) is malformed. "
        "Ensure that you've specified the ID in the form import-i-xxxxxxxx."
    )


class InvalidAction(ServiceError):
    """EC2: an Action this endpoint does not serve."""


class AuthFailure(ServiceError):
    """EC2's one answer to any credential or signature problem."""

    status = 401
    default_message = "AWS was not able to validate the provided access credentials"


class UnauthorizedOperation(ServiceError):
    """EC2's access-denied answer (``--deny``): 403, as EC2's error-code reference lists it."""

    status = 403
    default_message = "You are not authorized to perform this operation."


class DryRunOperation(ServiceError):
    """EC2's answer to DryRun=true when the call would have succeeded."""

    status = 412
    default_message = "Request would have succeeded, but DryRun flag is set."


class InternalError(ServiceError):
    """EC2: an injected internal error (``--fault-rate``)."""

    status = 500
    default_message = "An internal error has occurred"


class RequestLimitExceeded(ServiceError):
    """EC2's throttling answer (``--ec2-rate``), which botocore retries as throttling."""

    status = 503
    default_message = "Request limit exceeded."


class Unavailable(ServiceError):
    """EC2: an injected unavailability (``--fault-rate``)."""

    status = 503
    default_message = "The server is overloaded and can't handle the request."


# STS (query protocol).


class ValidationError(ServiceError):
    """STS: a member breaks the model (RoleArn, RoleSessionName, DurationSeconds)."""


class AccessDenied(ServiceError):
    """STS: the caller may not assume that role (``--accounts``) or call AssumeRole
    (``--deny``)."""

    status = 403


class InvalidClientTokenId(ServiceError):
    """STS: an access key it does not know."""

    status = 403
    default_message = UNKNOWN_KEY


class SignatureDoesNotMatch(ServiceError):
    """STS: a signature that does not match."""

    status = 403
    default_message = BAD_SIGNATURE


class IncompleteSignature(ServiceError):
    """STS: an Authorization header it cannot parse."""

    status = 403


class ExpiredToken(ServiceError):
    """Temporary credentials past their Expiration (``--verify-signatures``)."""

    status = 403
    default_message = "The security token included in the request is expired"
