"""The one retried-call loop (``flow.executor``) on a scripted call, in virtual time: what it
retries, how long it waits, what it counts, and when the partition's health stops it."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable

import pytest

from ibimport.errors import ApiError, CallError, TransportError
from ibimport.flow.executor import (
    Attempt,
    Attempts,
    CallExecutor,
    GaveUp,
    PartitionHealth,
    RetryPolicy,
)
from ibimport.flow.limiter import FixedRateLimiter
from ibimport.flow.retry import Backoff, Disposition
from ibimport.testing import FakeClock

SEED = 11


def _busy() -> ApiError:
    return ApiError("ServiceUnavailableException", "busy", status=503)


def _throttle() -> ApiError:
    return ApiError("CallRateLimitExceededException", "Rate exceeded", status=429)


def _no_connection() -> TransportError:
    return TransportError("EndpointConnectionError", "could not connect")


def _timeout() -> TransportError:
    return TransportError("ReadTimeout", "read timed out")


class OpenLimiter:
    """Lets every call through at once and remembers how each one ended."""

    def __init__(self) -> None:
        self.acquired = 0
        self.released: list[bool] = []

    async def acquire(self) -> None:
        self.acquired += 1

    def release(self, *, throttled: bool) -> None:
        self.released.append(throttled)


class Script:
    """A call that fails with ``failures`` in order, then answers; it remembers when each
    attempt started (virtual time) and may take ``latency_s`` of it."""

    def __init__(
        self, clock: FakeClock, failures: Iterable[CallError] = (), *, latency_s: float = 0.0
    ) -> None:
        self.clock = clock
        self.failures = list(failures)
        self.latency_s = latency_s
        self.started: list[float] = []

    async def __call__(self) -> str:
        self.started.append(self.clock.now())
        if self.latency_s:
            await self.clock.sleep(self.latency_s)
        if self.failures:
            raise self.failures.pop(0)
        return f"answer {len(self.started)}"


def _executor(
    clock: FakeClock,
    *,
    limiter: object | None = None,
    max_attempts: int = 8,
    max_throttled: int = 50,
    base_s: float = 0.1,
    health: PartitionHealth | None = None,
    on_attempt: Callable[[Attempt], None] | None = None,
) -> CallExecutor:
    return CallExecutor(
        limiter or OpenLimiter(),  # type: ignore[arg-type]
        clock=clock,
        policy=RetryPolicy(
            backoff=Backoff(base_s=base_s, cap_s=max(base_s, 20.0), max_attempts=max_attempts),
            max_throttled_attempts=max_throttled,
        ),
        health=health,
        rng=random.Random(SEED),
        on_attempt=on_attempt,
    )


def _delays(backoff: Backoff, attempts: Iterable[int]) -> list[float]:
    """The delays a ``random.Random(SEED)`` draws after each of ``attempts``."""
    rng = random.Random(SEED)
    return [backoff.delay(n, rng) for n in attempts]


async def test_a_transient_error_is_retried_after_the_backoff_in_virtual_time() -> None:
    clock = FakeClock()
    call = Script(clock, [_busy(), _busy(), _busy()])
    executor = _executor(clock)
    assert await executor.call(call) == "answer 4"
    waits = _delays(Backoff(base_s=0.1, cap_s=20.0), [1, 2, 3])
    assert all(wait > 0 for wait in waits)
    expected, at = [0.0], 0.0
    for wait in waits:
        at += wait
        expected.append(at)
    assert call.started == pytest.approx(expected)
    assert clock.now() == pytest.approx(sum(waits))
    assert (executor.calls, executor.throttled) == (4, 0)


async def test_transient_errors_give_up_when_the_attempts_are_spent() -> None:
    clock = FakeClock()
    call = Script(clock, [_busy()] * 10)
    executor = _executor(clock, max_attempts=3)
    with pytest.raises(GaveUp) as gave_up:
        await executor.call(call)
    assert len(call.started) == executor.calls == 3
    assert gave_up.value.disposition is Disposition.RETRY
    assert gave_up.value.fatal is None
    assert not gave_up.value.stopped
    assert gave_up.value.error.code == "ServiceUnavailableException"


async def test_throttles_have_their_own_budget_and_tell_the_limiter() -> None:
    clock = FakeClock()
    limiter = OpenLimiter()
    # Four throttles would spend a transient budget of two twice over: they do not count.
    call = Script(clock, [_throttle(), _throttle(), _throttle(), _busy(), _throttle()])
    executor = _executor(clock, limiter=limiter, max_attempts=2)
    attempts = Attempts()
    assert await executor.call(call, attempts=attempts) == "answer 6"
    assert (attempts.made, attempts.throttled) == (6, 4)
    assert executor.throttled == 4
    assert limiter.released == [True, True, True, False, True, False]
    assert limiter.acquired == 6


async def test_throttles_give_up_when_their_own_budget_is_spent() -> None:
    clock = FakeClock()
    call = Script(clock, [_throttle()] * 10)
    executor = _executor(clock, max_attempts=8, max_throttled=3)
    with pytest.raises(GaveUp) as gave_up:
        await executor.call(call)
    assert len(call.started) == 3
    assert gave_up.value.disposition is Disposition.THROTTLED
    assert not gave_up.value.in_doubt


async def test_a_throttle_slows_the_meter_the_next_attempt_waits_for() -> None:
    async def second_start(first: CallError | None) -> float:
        clock = FakeClock()
        call = Script(clock, [first] if first is not None else [])
        executor = _executor(
            clock, limiter=FixedRateLimiter(1, 10.0, clock=clock, backoff_factor=0.5), base_s=1e-9
        )
        await executor.call(call)  # takes the pacer's first slot at 0
        if first is None:
            await executor.call(call)
        return call.started[-1]

    unthrottled = await second_start(None)
    throttled = await second_start(_throttle())
    assert unthrottled == pytest.approx(0.1, abs=0.002)  # 10 a second
    assert throttled == pytest.approx(0.2, abs=0.002)  # the rate halved by the throttle


async def test_a_permanent_error_gives_up_at_once() -> None:
    clock = FakeClock()
    call = Script(clock, [ApiError("InvalidParameterValueException", "bad", status=400)])
    executor = _executor(clock)
    with pytest.raises(GaveUp) as gave_up:
        await executor.call(call)
    assert len(call.started) == 1
    assert clock.now() == 0.0  # no backoff
    assert gave_up.value.disposition is Disposition.PERMANENT
    assert gave_up.value.fatal is None
    assert not gave_up.value.in_doubt


async def test_stopping_gives_up_instead_of_retrying() -> None:
    clock = FakeClock()
    call = Script(clock, [_busy()] * 5)
    asked: list[int] = []

    def stopping() -> bool:
        asked.append(len(call.started))
        return len(call.started) >= 2

    with pytest.raises(GaveUp) as gave_up:
        await _executor(clock).call(call, stopping=stopping)
    assert len(call.started) == 2
    assert asked == [1, 2]  # asked after each failed attempt, before its backoff
    assert gave_up.value.stopped
    assert gave_up.value.fatal is None


async def test_stopping_is_not_asked_of_a_call_that_answered() -> None:
    clock = FakeClock()
    call = Script(clock)
    assert await _executor(clock).call(call, stopping=lambda: True) == "answer 1"


async def test_a_rows_attempts_survive_a_gave_up_and_carry_on_from_there() -> None:
    clock = FakeClock()
    executor = _executor(clock, max_attempts=3)
    attempts = Attempts()
    with pytest.raises(GaveUp):
        await executor.call(
            Script(clock, [_throttle(), _busy(), _busy(), _busy()]), attempts=attempts
        )
    assert (attempts.made, attempts.throttled) == (4, 1)
    # The same row's next call goes on counting (its result reports every attempt).
    assert await executor.call(Script(clock), attempts=attempts) == "answer 1"
    assert attempts.made == 5
    assert executor.calls == 5


async def test_every_attempt_is_told_once_with_its_number_and_how_it_ended() -> None:
    clock = FakeClock()
    told: list[Attempt] = []
    executor = _executor(clock, on_attempt=told.append)
    call = Script(clock, [_throttle(), _busy(), _timeout()], latency_s=0.25)
    await executor.call(call)
    assert len(told) == executor.calls == len(call.started) == 4
    assert [a.number for a in told] == [1, 2, 3, 4]
    assert [a.disposition for a in told] == [
        Disposition.THROTTLED,
        Disposition.RETRY,
        Disposition.RETRY,
        None,
    ]
    assert [a.error_code for a in told] == [
        "CallRateLimitExceededException",
        "ServiceUnavailableException",
        "ReadTimeout",
        "",
    ]
    assert all(a.latency_s == pytest.approx(0.25) for a in told)  # virtual, not wall


async def test_a_calls_own_listener_is_told_instead_of_the_executors() -> None:
    clock = FakeClock()
    default: list[Attempt] = []
    own: list[Attempt] = []
    executor = _executor(clock, on_attempt=default.append)
    with pytest.raises(GaveUp):
        await executor.call(Script(clock, [_busy()] * 9), on_attempt=own.append)
    assert default == []
    assert len(own) == executor.calls == 8


async def test_read_raises_the_last_call_error_itself() -> None:
    clock = FakeClock()
    last = _busy()
    with pytest.raises(ApiError) as raised:
        await _executor(clock, max_attempts=2).read(Script(clock, [_busy(), last]))
    assert raised.value is last
    assert await _executor(clock).read(Script(clock, [_busy()])) == "answer 2"


# ------------------------------------------------------------ the partition's health


async def test_an_endpoint_that_never_answered_is_unreachable_after_n_failures() -> None:
    clock = FakeClock()
    health = PartitionHealth(unreachable_after=3)
    call = Script(clock, [_no_connection()] * 10)
    with pytest.raises(GaveUp) as gave_up:
        await _executor(clock, health=health).call(call)
    assert len(call.started) == 3  # within a budget of 8
    assert gave_up.value.fatal is not None
    assert "cannot reach the Image Builder endpoint" in str(gave_up.value.fatal)
    assert gave_up.value.in_doubt


async def test_an_endpoint_that_answered_once_is_never_called_unreachable() -> None:
    clock = FakeClock()
    health = PartitionHealth(unreachable_after=3, outage_after=100)
    executor = _executor(clock, health=health, max_attempts=6)
    await executor.call(Script(clock))
    call = Script(clock, [_no_connection()] * 10)
    with pytest.raises(GaveUp) as gave_up:
        await executor.call(call)
    assert len(call.started) == 6  # the row's own budget ended it, not the endpoint rule
    assert gave_up.value.fatal is None
    assert gave_up.value.in_doubt


async def test_an_outage_needs_m_unanswered_calls_and_quiet_s_of_silence() -> None:
    clock = FakeClock()
    health = PartitionHealth(outage_after=3, outage_quiet_s=10.0)
    executor = _executor(clock, health=health, max_attempts=50, base_s=1e-9)
    await executor.call(Script(clock))  # the service answered once
    call = Script(clock, [_timeout()] * 50, latency_s=2.0)
    with pytest.raises(GaveUp) as gave_up:
        await executor.call(call)
    # The first timeout is seen at t=2; three in a row by t=6, but silence only reaches
    # 10 s at the sixth (t=12): the count alone does not stop the partition.
    assert len(call.started) == 6
    assert clock.now() == pytest.approx(12.0, abs=1e-6)
    assert gave_up.value.fatal is not None
    assert "stopped answering: 6 calls in a row" in str(gave_up.value.fatal)
    assert gave_up.value.in_doubt


async def test_an_answer_resets_the_outage_count() -> None:
    clock = FakeClock()
    health = PartitionHealth(outage_after=3, outage_quiet_s=0.0)
    executor = _executor(clock, health=health, base_s=1e-9)
    await executor.call(Script(clock, [_timeout(), _timeout()]))  # then an answer
    call = Script(clock, [_timeout(), _timeout(), _timeout()])
    with pytest.raises(GaveUp) as gave_up:
        await executor.call(call)
    assert len(call.started) == 3  # counted from the answer, not from the first timeout
    assert gave_up.value.fatal is not None


async def test_a_fatal_error_stops_the_partition_at_once() -> None:
    clock = FakeClock()
    call = Script(clock, [ApiError("AccessDeniedException", "no", status=403)] * 3)
    with pytest.raises(GaveUp) as gave_up:
        await _executor(clock).call(call)
    assert len(call.started) == 1
    assert gave_up.value.disposition is Disposition.FATAL
    assert gave_up.value.fatal is not None
    assert "every call would fail: AccessDeniedException" in str(gave_up.value.fatal)


async def test_one_health_counts_the_failures_of_every_executor_of_a_partition() -> None:
    async def trips(shared: bool) -> bool:
        clock = FakeClock()
        one = PartitionHealth(unreachable_after=4)
        imports = _executor(clock, health=one, max_attempts=2)
        lookups = _executor(
            clock, health=one if shared else PartitionHealth(unreachable_after=4), max_attempts=2
        )
        outcomes: list[GaveUp] = []
        for executor in (imports, lookups):
            with pytest.raises(GaveUp) as gave_up:
                await executor.call(Script(clock, [_no_connection()] * 2))
            outcomes.append(gave_up.value)
        assert outcomes[0].fatal is None  # two failures alone are not four
        return outcomes[1].fatal is not None

    assert await trips(shared=True)
    assert not await trips(shared=False)


async def test_an_answer_to_one_executor_keeps_the_other_from_calling_it_unreachable() -> None:
    clock = FakeClock()
    one = PartitionHealth(unreachable_after=2)
    imports = _executor(clock, health=one, max_attempts=5)
    lookups = _executor(clock, health=one)
    await lookups.call(Script(clock))
    call = Script(clock, [_no_connection()] * 10)
    with pytest.raises(GaveUp) as gave_up:
        await imports.call(call)
    assert gave_up.value.fatal is None
    assert len(call.started) == 5


@pytest.mark.parametrize(
    ("error", "in_doubt"),
    [
        (TransportError("ReadTimeout", "timed out"), True),
        (TransportError("ConnectTimeout", "timed out"), True),
        (TransportError("EndpointConnectionError", "no route"), True),
        (TransportError("ConnectionError", "reset by peer"), False),  # a flaky path, not silence
        (ApiError("ServiceException", "oops", status=500), False),  # an answer
    ],
)
async def test_a_call_is_in_doubt_only_when_its_last_attempt_got_no_answer(
    error: CallError, in_doubt: bool
) -> None:
    clock = FakeClock()
    with pytest.raises(GaveUp) as gave_up:
        await _executor(clock, max_attempts=1).call(Script(clock, [error]))
    assert gave_up.value.in_doubt is in_doubt
