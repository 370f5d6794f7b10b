"""Error classification and backoff: pure functions, so plain tables and properties."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ibimport.errors import ApiError, CallError, TransportError
from ibimport.flow.retry import (
    THROTTLING_CODES,
    Backoff,
    Disposition,
    FatalDetector,
    OutageDetector,
    classify,
)

T, R, P, F = (
    Disposition.THROTTLED,
    Disposition.RETRY,
    Disposition.PERMANENT,
    Disposition.FATAL,
)


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        # throttling: by status or by code, whatever the other says
        ("CallRateLimitExceededException", 429, T),
        ("CallRateLimitExceededException", None, T),
        ("ThrottlingException", 400, T),
        ("TooManyRequestsException", 429, T),
        ("Throttling", 400, T),
        ("RequestLimitExceeded", 503, T),
        ("SlowDown", 503, T),
        ("SomethingNew", 429, T),
        # transient server faults
        ("ServiceException", 500, R),
        ("ServiceException", None, R),
        ("ServiceUnavailableException", 503, R),
        ("InternalFailure", 500, R),
        ("SomethingNew", 500, R),
        ("BadGateway", 502, R),
        ("SomethingNew", 503, R),
        ("GatewayTimeout", 504, R),
        # credentials and permissions fail every call
        ("UnrecognizedClientException", 400, F),
        ("InvalidClientTokenId", 403, F),
        ("SignatureDoesNotMatch", 403, F),
        ("AccessDeniedException", 403, F),
        ("AccessDeniedException", 400, F),
        ("ExpiredTokenException", 400, F),
        ("MissingAuthenticationTokenException", 403, F),
        ("IncompleteSignature", 400, F),
        ("AuthFailure", 401, F),
        ("ForbiddenException", 403, F),
        ("SomethingNew", 403, F),
        # the row's own problem
        ("IdempotentParameterMismatchException", 400, P),
        ("InvalidParameterValueException", 400, P),
        ("InvalidParameterException", 400, P),
        ("ResourceAlreadyExistsException", 400, P),
        ("ResourceNotFoundException", 404, P),
        ("ServiceQuotaExceededException", 402, P),
        ("ValidationException", 400, P),
        ("ClientException", 400, P),
        ("NotImplemented", 501, P),
        ("SomethingNew", None, P),
    ],
)
def test_classify_api_errors(code: str, status: int | None, expected: Disposition) -> None:
    assert classify(ApiError(code, "msg", status=status, request_id="r-1")) is expected


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("ConnectionError", R),
        ("ConnectionClosed", R),
        ("ReadTimeout", R),
        ("ConnectTimeout", R),
        ("EndpointConnectionError", R),  # per call; FatalDetector decides about the batch
        ("SomethingNew", R),
        ("NoCredentials", F),
    ],
)
def test_classify_transport_errors(code: str, expected: Disposition) -> None:
    assert classify(TransportError(code, "msg")) is expected


def test_every_throttling_code_throttles_as_a_plain_call_error() -> None:
    for code in THROTTLING_CODES:
        assert classify(CallError(code, "msg", status=400)) is T


def test_backoff_defaults() -> None:
    backoff = Backoff()
    assert (backoff.base_s, backoff.cap_s, backoff.max_attempts) == (0.1, 20.0, 8)


def test_backoff_ceiling_doubles_then_caps() -> None:
    backoff = Backoff(base_s=0.1, cap_s=1.0)
    assert [backoff.ceiling(a) for a in range(1, 7)] == pytest.approx(
        [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    )
    assert backoff.ceiling(10_000) == 1.0


@given(
    attempt=st.integers(min_value=1, max_value=200),
    seed=st.integers(min_value=0, max_value=2**32),
    base=st.floats(min_value=0.001, max_value=5.0),
)
def test_backoff_delay_is_full_jitter_within_bounds(attempt: int, seed: int, base: float) -> None:
    backoff = Backoff(base_s=base, cap_s=20.0)
    delay = backoff.delay(attempt, random.Random(seed))
    assert 0.0 <= delay <= min(20.0, base * 2.0 ** min(attempt - 1, 64))


def test_backoff_delay_spreads_over_the_whole_range() -> None:
    backoff = Backoff(base_s=1.0, cap_s=20.0)
    rng = random.Random(7)
    delays = [backoff.delay(3, rng) for _ in range(2000)]  # ceiling 4.0
    assert max(delays) <= 4.0
    assert min(delays) < 0.1
    assert max(delays) > 3.9
    assert sum(delays) / len(delays) == pytest.approx(2.0, abs=0.15)


def test_backoff_should_retry_counts_attempts_made() -> None:
    backoff = Backoff(max_attempts=3)
    assert [backoff.should_retry(a) for a in (1, 2, 3, 4)] == [True, True, False, False]
    assert not Backoff(max_attempts=1).should_retry(1)


@pytest.mark.parametrize(
    "kwargs", [{"base_s": 0.0}, {"base_s": 2.0, "cap_s": 1.0}, {"max_attempts": 0}]
)
def test_backoff_rejects_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="Backoff"):
        Backoff(**kwargs)  # type: ignore[arg-type]


def test_fatal_detector_stops_after_a_streak_of_unreachable_before_any_success() -> None:
    detector = FatalDetector(3)
    unreachable = TransportError("EndpointConnectionError", "could not connect")
    assert [detector.failure(unreachable) for _ in range(3)] == [False, False, True]


def test_fatal_detector_streak_is_per_kind() -> None:
    detector = FatalDetector(2)
    assert not detector.failure(TransportError("EndpointConnectionError", "x"))
    assert not detector.failure(TransportError("ConnectTimeout", "x"))
    assert detector.failure(TransportError("ConnectTimeout", "x"))


def test_fatal_detector_never_fires_once_the_endpoint_answered() -> None:
    detector = FatalDetector(2)
    assert not detector.failure(TransportError("ReadTimeout", "x"))  # not an "unreachable" kind
    detector.success()
    for _ in range(10):
        assert not detector.failure(TransportError("EndpointConnectionError", "x"))


def test_fatal_detector_an_api_error_proves_the_endpoint_reachable() -> None:
    detector = FatalDetector(2)
    assert not detector.failure(TransportError("EndpointConnectionError", "x"))
    assert not detector.failure(ApiError("ServiceException", "x", status=500))
    assert not detector.failure(TransportError("EndpointConnectionError", "x"))
    assert not detector.failure(TransportError("EndpointConnectionError", "x"))


def test_outage_detector_stops_after_a_streak_without_an_answer_for_long_enough() -> None:
    detector = OutageDetector(3, quiet_s=10.0)
    timeout = TransportError("ReadTimeout", "Read timeout on endpoint URL")
    assert not detector.failure(timeout, now=100.0)
    assert not detector.failure(TransportError("ConnectTimeout", "x"), now=101.0)
    assert not detector.failure(timeout, now=105.0), "a streak, but not quiet for 10 s yet"
    assert detector.failure(timeout, now=110.0)
    assert "4 calls in a row got no answer" in detector.message(timeout)


def test_outage_detector_any_answer_resets_it() -> None:
    detector = OutageDetector(2, quiet_s=0.0)
    assert not detector.failure(TransportError("ReadTimeout", "x"), now=0.0)
    assert not detector.failure(ApiError("CallRateLimitExceededException", "x", status=429), now=1)
    assert not detector.failure(TransportError("ReadTimeout", "x"), now=2.0)
    detector.answered()
    assert not detector.failure(TransportError("ReadTimeout", "x"), now=3.0)
    assert detector.failure(TransportError("EndpointConnectionError", "x"), now=4.0)


def test_outage_detector_ignores_resets_which_a_flaky_path_produces() -> None:
    detector = OutageDetector(2, quiet_s=0.0)
    for second in range(10):
        assert not detector.failure(TransportError("ConnectionError", "reset"), now=second)
