"""Error translation at the client boundary (narrow unit tests; no HTTP)."""

from __future__ import annotations

import botocore.exceptions as bce
import pytest

from ibimport.aws.boundary import translate_error
from ibimport.aws.client import ClientSettings, botocore_config
from ibimport.errors import ApiError, TransportError


def test_client_error_keeps_aws_code_message_status_and_request_id() -> None:
    error = bce.ClientError(
        {
            "Error": {"Code": "CallRateLimitExceededException", "Message": "slow down"},
            "ResponseMetadata": {"HTTPStatusCode": 429, "RequestId": "req-1"},
        },
        "ImportVmImage",
    )
    translated = translate_error(error)
    assert isinstance(translated, ApiError)
    assert (translated.code, translated.message, translated.status, translated.request_id) == (
        "CallRateLimitExceededException",
        "slow down",
        429,
        "req-1",
    )


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (bce.NoCredentialsError(), "NoCredentials"),
        (bce.ConnectTimeoutError(endpoint_url="http://x"), "ConnectTimeout"),
        (bce.ReadTimeoutError(endpoint_url="http://x"), "ReadTimeout"),
        (bce.EndpointConnectionError(endpoint_url="http://x"), "EndpointConnectionError"),
        (bce.ConnectionClosedError(endpoint_url="http://x"), "ConnectionClosed"),
        (ConnectionResetError("reset by peer"), "ConnectionError"),
        (TimeoutError(), "ReadTimeout"),
    ],
)
def test_transport_failures_become_transport_errors(error: Exception, code: str) -> None:
    translated = translate_error(error)
    assert isinstance(translated, TransportError)
    assert translated.code == code
    assert "\n" not in translated.message


def test_botocore_retries_are_off_and_pool_fits_concurrency() -> None:
    config = botocore_config(ClientSettings(max_pool_connections=256))
    assert config.retries == {"total_max_attempts": 1, "mode": "standard"}
    assert config.max_pool_connections == 256
