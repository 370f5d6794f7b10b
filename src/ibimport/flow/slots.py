"""Slots held for a task's whole life: the meter of EC2 import tasks (``Metering.SLOTS``).

An account and Region may have only so many import tasks active at once (Service Quotas
``vmimportexport``; 20 is the commonly cited figure), and a task holds its slot from
ImportImage until EC2 says it ended: minutes to hours, not a call's milliseconds. The
meter has aiometer's three hooks: ``acquire`` (may a task start? waits for room),
``started`` / ``not_started`` (the start call's answer), ``finished`` (EC2 said it ended).

Its size is the quota less the tasks already active in the account (other tools, other
shards: the service's own count is the only coordinator). The quota error (``retry``'s
``QUOTA_CODES``) is back-pressure: the slot is given back, the limit shrinks to the tasks
this meter holds, and the start waits for room; each task that ends grows the limit back
by one, up to the quota, so the meter probes for slots others released. With nothing of
its own running, a refused start waits ``retry_after_s`` before asking again. A stop
closes the meter: every start still waiting is answered at once that it may not start
(a slot frees only when a task ends, which may be hours away).
"""

from __future__ import annotations

import math
from collections import deque

import anyio

from ibimport.flow.clock import Clock

__all__ = ["DEFAULT_TASK_SLOTS", "TaskSlots"]

#: Import tasks per account and Region when neither Service Quotas nor ``--task-slots``
#: say otherwise (the commonly cited quota).
DEFAULT_TASK_SLOTS = 20


class TaskSlots:
    """One partition's import task slots (see the module's docstring)."""

    def __init__(self, ceiling: int, *, clock: Clock, retry_after_s: float = 30.0) -> None:
        if ceiling < 1:
            raise ValueError(f"task slots must be >= 1, got {ceiling}")
        self.ceiling = ceiling
        self.limit = ceiling
        self._clock = clock
        self._retry_after_s = retry_after_s
        #: Slots taken: tasks started and starts under way.
        self.held = 0
        #: Tasks started and not yet ended (what keeps a slot busy).
        self.active = 0
        self.max_active = 0
        self.refusals = 0
        self._waiters: deque[_Waiter] = deque()
        self._sleepers: set[anyio.CancelScope] = set()
        self._closed = False
        self._quiet_until = -math.inf
        self._busy_s = 0.0
        self._changed_at = clock.now()

    def size(self, quota: int, *, active_elsewhere: int) -> None:
        """The quota, less the tasks already active in the account that are not ours."""
        self.ceiling = max(1, quota)
        self.limit = max(1, self.ceiling - max(0, active_elsewhere))
        self._admit()

    @property
    def busy_slot_s(self) -> float:
        """Slot-seconds of started tasks so far (for the busy share of a wave)."""
        return self._busy_s + self.active * (self._clock.now() - self._changed_at)

    async def acquire(self) -> bool:
        """Wait until one more task may start (the slot is then taken): True; False once
        the meter is closed (a stop), no slot taken."""
        while not self._closed:
            wait = self._quiet_until - self._clock.now()
            if wait > 0:
                with anyio.CancelScope() as scope:
                    self._sleepers.add(scope)
                    try:
                        await self._clock.sleep(wait)
                    finally:
                        self._sleepers.discard(scope)
                continue
            if self.held < self.limit and not self._waiters:
                self.held += 1
                return True
            waiter = _Waiter()
            self._waiters.append(waiter)
            try:
                await waiter.event.wait()
            except BaseException:
                if waiter.handed:  # a slot was handed to us as we were cancelled
                    self.not_started()
                else:
                    self._waiters.remove(waiter)
                raise
            return waiter.handed
        return False

    def close(self) -> None:
        """A stop: no task starts any more; every start waiting is answered (False)."""
        self._closed = True
        while self._waiters:
            self._waiters.popleft().event.set()
        for scope in self._sleepers:
            scope.cancel()

    def started(self) -> None:
        """The task the taken slot was for started: the slot is busy until ``finished``."""
        self._tick()
        self.active += 1
        self.max_active = max(self.max_active, self.active)

    def not_started(self) -> None:
        """The start failed for its own reason (not the quota): the slot is free again."""
        self.held -= 1
        self._admit()

    def refused(self) -> None:
        """The service said the quota is full: give the slot back, shrink to what we hold."""
        self.refusals += 1
        self.held -= 1
        self.limit = max(1, self.held)
        if self.held == 0:
            self._quiet_until = self._clock.now() + self._retry_after_s
        self._admit()

    def finished(self) -> None:
        """A started task ended: its slot is free, and the limit grows back by one."""
        self._tick()
        self.active -= 1
        self.held -= 1
        self.limit = min(self.ceiling, self.limit + 1)
        self._admit()

    def adopted(self) -> None:
        """A task of ours started earlier (a resume) holds a slot until it ends; it was
        counted among the account's active tasks when the slots were sized."""
        self.held += 1
        self.limit = min(self.ceiling, self.limit + 1)
        self.started()

    def _tick(self) -> None:
        now = self._clock.now()
        self._busy_s += self.active * (now - self._changed_at)
        self._changed_at = now

    def _admit(self) -> None:
        while self._waiters and self.held < self.limit:
            self.held += 1  # the slot passes straight to the waiter: nobody can barge in
            waiter = self._waiters.popleft()
            waiter.handed = True
            waiter.event.set()


class _Waiter:
    """A start waiting for a slot; ``handed``: the slot was passed to it (else: closed)."""

    __slots__ = ("event", "handed")

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.handed = False
