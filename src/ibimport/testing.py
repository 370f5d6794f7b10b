"""Test doubles for code built on ibimport: a virtual-time ``FakeClock``.

Public and small, like httpx's ``MockTransport``: the project's own tests use it, and so
can anyone testing code that drives a ``Runner``, a limiter or a journal. Nothing in the
package imports this module.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from dataclasses import dataclass, field

import anyio
import anyio.lowlevel

__all__ = ["FakeClock"]

#: ``FakeClock.wall()`` at virtual time 0 unless told otherwise (2023-11-14T22:13:20Z).
DEFAULT_WALL_START = 1_700_000_000.0


@dataclass(eq=False, slots=True)
class _Sleeper:
    wake_at: float
    event: anyio.Event = field(default_factory=anyio.Event)
    woken: bool = False  # its time has come
    gone: bool = False  # cancelled before its time: skip it


class FakeClock:
    """Virtual time for tests and simulations: ``sleep`` returns at once in wall time.

    Any number of tasks may sleep concurrently. Sleepers wait on events kept in a heap
    ordered by wake time. One of the sleeping tasks is the *driver*: it waits until every
    other task is blocked, then advances time to the earliest wake time and wakes those
    sleepers; when its own time comes (or it is cancelled) it hands the role to the
    earliest remaining sleeper. Time therefore moves only when nothing else can run, so
    each sleeper sees exactly the time it asked for and event ordering is deterministic.

    "Blocked" is read from asyncio's ready queue (cheap), or on other event loops from
    ``anyio.wait_all_tasks_blocked`` (correct but slow on asyncio loops without one).
    A task waiting on a thread or a socket counts as blocked, so virtual time jumps ahead
    meanwhile: use this clock for code whose waits are clock sleeps and in-process
    synchronisation.

    ``wall()`` is ``wall_start`` plus the virtual time elapsed since ``start``; ``advance``
    moves time by hand, for code that only reads the clock.
    """

    def __init__(self, start: float = 0.0, *, wall_start: float = DEFAULT_WALL_START) -> None:
        self._now = start
        self._wall_offset = wall_start - start
        self._heap: list[tuple[float, int, _Sleeper]] = []
        self._seq = itertools.count()
        self._driver: _Sleeper | None = None

    def now(self) -> float:
        return self._now

    def wall(self) -> float:
        return self._now + self._wall_offset

    def advance(self, seconds: float) -> None:
        """Move time on by ``seconds`` now, waking every sleeper whose time has come."""
        if seconds < 0:
            raise ValueError(f"time only moves forward, not by {seconds!r}")
        self._now += seconds
        self._wake_due()

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await anyio.lowlevel.checkpoint()
            return
        me = _Sleeper(self._now + seconds)
        heapq.heappush(self._heap, (me.wake_at, next(self._seq), me))
        try:
            if self._driver is None:
                self._driver = me
            else:
                await me.event.wait()  # set when woken, or when promoted to driver
            while not me.woken:
                await self._settle()
                if not me.woken:  # ``advance`` may have woken it meanwhile
                    self._advance()
        finally:
            if not me.woken:
                me.gone = True
            if self._driver is me:
                self._driver = None
                self._hand_off()

    async def _settle(self) -> None:
        """Return once every other task is blocked."""
        try:
            ready = getattr(asyncio.get_running_loop(), "_ready", None)
        except RuntimeError:  # not asyncio
            ready = None
        if ready is None:
            await anyio.wait_all_tasks_blocked()
            return
        await anyio.lowlevel.checkpoint()
        while ready:  # something other than us ran and made more work: let it finish
            await anyio.lowlevel.checkpoint()

    def _advance(self) -> None:
        heap = self._heap
        while heap and heap[0][2].gone:
            heapq.heappop(heap)
        if not heap:
            return
        self._now = max(self._now, heap[0][0])
        self._wake_due()

    def _wake_due(self) -> None:
        heap = self._heap
        while heap and heap[0][0] <= self._now:
            sleeper = heapq.heappop(heap)[2]
            if not sleeper.gone:
                sleeper.woken = True
                sleeper.event.set()

    def _hand_off(self) -> None:
        heap = self._heap
        while heap:
            sleeper = heap[0][2]
            if sleeper.gone or sleeper.woken:
                heapq.heappop(heap)
                continue
            self._driver = sleeper
            sleeper.event.set()
            return
