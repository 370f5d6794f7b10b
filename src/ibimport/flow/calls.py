"""One look-up call under a limiter and the retry rules the imports follow.

The task check (``importtasks``) and the image waiter (``waiter``) make read-only calls
beside the imports: each is paced by a limiter (a throttle slows it), retried with
full-jitter backoff on a transient fault, and given up on a permanent or fatal answer,
which the caller classifies again (``retry.classify``) to decide what it means. A
read is safe to repeat, so every retry is.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from ibimport.errors import CallError
from ibimport.flow.clock import Clock
from ibimport.flow.limiter import Limiter
from ibimport.flow.retry import UNREACHABLE_CODES, Backoff, Disposition, classify

__all__ = ["RetriedCalls", "first_error"]

T = TypeVar("T")

#: Attempts at a call that cannot even connect, before anything answered, before giving up.
_UNREACHABLE_ATTEMPTS = 3


class RetriedCalls:
    """Makes calls under one limiter and counts them (``calls``, ``throttled``)."""

    def __init__(
        self,
        limiter: Limiter,
        *,
        clock: Clock,
        backoff: Backoff,
        max_throttled_attempts: int = 50,
        rng: random.Random | None = None,
    ) -> None:
        self._limiter = limiter
        self._clock = clock
        self._backoff = backoff
        self._max_throttled = max_throttled_attempts
        self._rng = rng or random.Random()
        self._answered = False
        self.calls = 0
        self.throttled = 0

    async def call(self, make: Callable[[], Awaitable[T]]) -> T:
        """``make()``'s answer, retried as an import is; raises the last ``CallError``."""
        attempts = throttled = 0
        while True:
            attempts += 1
            await self._limiter.acquire()
            error: CallError | None = None
            try:
                answer = await make()
            except CallError as failure:
                error = failure
            finally:
                disposition = classify(error) if error is not None else None
                self._limiter.release(throttled=disposition is Disposition.THROTTLED)
                self.calls += 1
            if error is None:
                self._answered = True
                return answer
            if disposition is Disposition.THROTTLED:
                self.throttled += 1
                throttled += 1
                if throttled >= self._max_throttled:
                    raise error
            elif error.code in UNREACHABLE_CODES and not self._answered:
                # Nothing has ever answered: the endpoint is wrong or down, not flaky.
                if attempts >= _UNREACHABLE_ATTEMPTS:
                    raise error
                await self._clock.sleep(self._backoff.delay(attempts, self._rng))
                continue
            elif disposition is not Disposition.RETRY or not self._backoff.should_retry(
                attempts - throttled
            ):
                raise error
            if disposition is Disposition.RETRY:
                await self._clock.sleep(self._backoff.delay(attempts - throttled, self._rng))


def first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first failure of a task group of look-ups: the one a caller is told of."""
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error
