"""The one retried-call executor: every call of a partition goes through it.

An import, a page of the listing of existing builds, a batch of task checks, an image's
state: each is acquired from its meter (``flow.limiter``), made, classified once
(``flow.retry.classify``), released (a throttle slows the meter), and retried with
full-jitter backoff while the rules allow. Retrying is safe: an import's every attempt
carries the same clientToken, and the other calls only read.

Two rules are about the partition, not the call, so they live in ``PartitionHealth``,
shared by every executor of a partition: an endpoint that never answered (``unreachable``:
``unreachable_after`` such failures in a row before any answer) and a service that stopped
answering (``outage``: ``retry.OutageDetector``). Either stops the partition with one
message. They win over a call's own attempt budget: a call whose last attempts got no
answer at all ends *in doubt* (it may have landed), never as a failure of its row.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from ibimport.errors import CallError, FatalBatchError
from ibimport.flow.clock import Clock
from ibimport.flow.limiter import Limiter
from ibimport.flow.retry import (
    NO_ANSWER_CODES,
    Backoff,
    Disposition,
    FatalDetector,
    OutageDetector,
    classify,
    fatal_message,
)

__all__ = [
    "Attempt",
    "Attempts",
    "CallExecutor",
    "GaveUp",
    "PartitionHealth",
    "RetryPolicy",
    "first_error",
]

T = TypeVar("T")


@dataclass(frozen=True, kw_only=True, slots=True)
class RetryPolicy:
    """How many attempts a call gets and how long it waits between them.

    Throttled attempts have a budget of their own: the meter slows down, so a throttle is
    a pacing signal, not evidence that the call is broken.
    """

    backoff: Backoff = field(default_factory=Backoff)
    max_throttled_attempts: int = 50


@dataclass(slots=True)
class Attempts:
    """A call's attempts so far (an import's row keeps them across a stop and a resume)."""

    made: int = 0
    throttled: int = 0


@dataclass(frozen=True, slots=True)
class Attempt:
    """One attempt that left the client: what listeners are told of every call."""

    number: int
    latency_s: float
    disposition: Disposition | None  # None: answered
    error_code: str = ""


class GaveUp(Exception):
    """A call ended without an answer to use.

    ``fatal``: the partition must stop (credentials, an unreachable endpoint, an outage).
    ``in_doubt``: no answer came to the last attempt, so it may have landed.
    """

    def __init__(
        self,
        error: CallError,
        disposition: Disposition,
        *,
        fatal: FatalBatchError | None = None,
        stopped: bool = False,
    ) -> None:
        super().__init__(str(error))
        self.error = error
        self.disposition = disposition
        self.fatal = fatal
        self.stopped = stopped

    @property
    def in_doubt(self) -> bool:
        return self.error.code in NO_ANSWER_CODES


class PartitionHealth:
    """Whether a partition's endpoint answers; one per partition, shared by its calls."""

    def __init__(
        self,
        *,
        unreachable_after: int = 8,
        outage_after: int = 32,
        outage_quiet_s: float = 10.0,
        service: str = "Image Builder",
    ) -> None:
        self._unreachable = FatalDetector(unreachable_after)
        self._outage = OutageDetector(outage_after, quiet_s=outage_quiet_s)
        self._service = service

    def answered(self) -> None:
        """A call got an answer (any answer, even an error)."""
        self._unreachable.success()
        self._outage.answered()

    def verdict(
        self, error: CallError, disposition: Disposition, *, now: float
    ) -> FatalBatchError | None:
        """The partition's stop, if this failure means every call would fail."""
        if disposition is Disposition.FATAL:
            return FatalBatchError(fatal_message(error))
        if self._unreachable.failure(error):
            return FatalBatchError(f"cannot reach the {self._service} endpoint: {error.message}")
        if self._outage.failure(error, now=now):
            return FatalBatchError(self._outage.message(error))
        return None


class CallExecutor:
    """Makes one kind of call of a partition under its meter, and counts what it cost."""

    def __init__(
        self,
        limiter: Limiter,
        *,
        clock: Clock,
        policy: RetryPolicy = RetryPolicy(),
        health: PartitionHealth | None = None,
        rng: random.Random | None = None,
        on_attempt: Callable[[Attempt], None] | None = None,
    ) -> None:
        self.limiter = limiter
        self._clock = clock
        self._policy = policy
        self._health = health or PartitionHealth()
        self._rng = rng or random.Random()
        self._on_attempt = on_attempt
        #: Attempts that left the client, retries included, and the throttled ones.
        self.calls = 0
        self.throttled = 0

    async def call(
        self,
        make: Callable[[], Awaitable[T]],
        *,
        attempts: Attempts | None = None,
        stopping: Callable[[], bool] | None = None,
        on_attempt: Callable[[Attempt], None] | None = None,
    ) -> T:
        """``make()``'s answer; raises ``GaveUp`` when the rules say stop trying.

        ``attempts`` is updated as the call goes (a row's count survives a ``GaveUp``);
        ``stopping()`` true after a failed attempt gives up instead of retrying.
        """
        attempts = attempts if attempts is not None else Attempts()
        policy = self._policy
        tell = on_attempt or self._on_attempt
        while True:
            attempts.made += 1
            await self.limiter.acquire()
            started = self._clock.now()
            error: CallError | None = None
            try:
                answer = await make()
            except CallError as failure:
                error = failure
            finally:
                disposition = classify(error) if error is not None else None
                self.limiter.release(throttled=disposition is Disposition.THROTTLED)
                self.calls += 1
            latency = self._clock.now() - started
            if error is None:
                self._health.answered()
                if tell is not None:
                    tell(Attempt(attempts.made, latency, None))
                return answer
            assert disposition is not None
            if tell is not None:
                tell(Attempt(attempts.made, latency, disposition, error.code))
            fatal = self._health.verdict(error, disposition, now=self._clock.now())
            if fatal is not None:
                raise GaveUp(error, disposition, fatal=fatal)
            if disposition in (Disposition.PERMANENT, Disposition.BACKPRESSURE):
                raise GaveUp(error, disposition)  # back-pressure: the caller's meter waits
            if disposition is Disposition.THROTTLED:
                attempts.throttled += 1
                self.throttled += 1
                if attempts.throttled >= policy.max_throttled_attempts:
                    raise GaveUp(error, disposition)
            elif not policy.backoff.should_retry(attempts.made - attempts.throttled):
                raise GaveUp(error, disposition)
            if stopping is not None and stopping():
                raise GaveUp(error, disposition, stopped=True)
            await self._clock.sleep(policy.backoff.delay(attempts.made, self._rng))

    async def read(self, make: Callable[[], Awaitable[T]]) -> T:
        """A read-only call (a listing page, a task check, an image's state): when the
        rules say stop, its last ``CallError`` is raised as it is, for the caller to
        classify (``retry.classify``) into what it means there."""
        try:
            return await self.call(make)
        except GaveUp as gave_up:
            raise gave_up.error from None


def first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first failure of a task group of look-ups: the one a caller is told of."""
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error
