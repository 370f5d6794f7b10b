"""The error boundary: whatever botocore or aiohttp raises becomes ``ibimport.errors`` here.

So the stages and the retry policy reason about AWS error codes (``ApiError``) and a few
transport codes (``TransportError``), never about library exception classes. What the
service says is printed to terminals and files: its control characters are escaped.
"""

from __future__ import annotations

import botocore.exceptions as bce

from ibimport.errors import ApiError, TransportError

__all__ = ["one_line", "printable", "translate_error"]


def translate_error(error: BaseException) -> ApiError | TransportError:
    """Map a botocore/aiohttp exception onto our hierarchy. Messages never carry secrets."""
    if isinstance(error, bce.ClientError):
        err = error.response.get("Error", {})
        meta = error.response.get("ResponseMetadata", {})
        return ApiError(
            printable(str(err.get("Code") or "Unknown")),
            printable(str(err.get("Message") or error)),
            status=meta.get("HTTPStatusCode"),
            request_id=printable(str(meta["RequestId"])) if meta.get("RequestId") else None,
        )
    kinds: tuple[tuple[type[BaseException], str], ...] = (
        (bce.NoCredentialsError, "NoCredentials"),
        (bce.PartialCredentialsError, "NoCredentials"),
        (bce.ConnectTimeoutError, "ConnectTimeout"),
        (bce.ReadTimeoutError, "ReadTimeout"),
        (bce.EndpointConnectionError, "EndpointConnectionError"),
        (bce.ConnectionClosedError, "ConnectionClosed"),
        (bce.ResponseStreamingError, "ConnectionClosed"),
        (bce.IncompleteReadError, "ConnectionClosed"),
        (bce.HTTPClientError, "ConnectionError"),
        (bce.ParamValidationError, "ParamValidation"),
        (TimeoutError, "ReadTimeout"),
        (ConnectionError, "ConnectionError"),
        (OSError, "ConnectionError"),
    )
    for kind, code in kinds:
        if isinstance(error, kind):
            return TransportError(code, one_line(error))
    return TransportError(type(error).__name__, one_line(error))


def printable(text: str) -> str:
    """Control characters escaped: what the service says is printed to terminals and files."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def one_line(error: BaseException) -> str:
    """An exception's text on one line, at most 500 characters (its class if it has none)."""
    return " ".join(str(error).split())[:500] or type(error).__name__
