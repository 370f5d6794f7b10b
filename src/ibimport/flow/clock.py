"""Time, injected: the one ``Clock`` that pacing, backoff, group commits and stamps read.

Two kinds of time, one object: ``now`` is monotonic (intervals, pacing, deadlines: never
jumps with the system clock), ``wall`` is seconds since the epoch (what the journal stamps,
since it is compared across runs and processes, as the token TTL is). Passing one clock
everywhere lets a test move both at once: ``ibimport.testing.FakeClock`` runs in virtual
time, never on the wall clock.
"""

from __future__ import annotations

import time
from typing import Protocol

import anyio

__all__ = ["Clock", "SystemClock"]


class Clock(Protocol):
    """Monotonic time, sleeping and the wall clock, injected so that time is testable."""

    def now(self) -> float:
        """Monotonic seconds, for intervals only."""

    async def sleep(self, seconds: float) -> None:
        """Return once ``seconds`` of ``now`` have passed (at once if ``seconds <= 0``)."""

    def wall(self) -> float:
        """Seconds since the epoch, for stamps compared across runs."""


class SystemClock:
    """The real clock: ``time.monotonic``, ``anyio.sleep`` and ``time.time``."""

    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)

    def wall(self) -> float:
        return time.time()
