"""How many Image Builder calls may be in flight, and how fast they may start.

Two small policies, composed: ``_Slots`` bounds calls in flight (a FIFO semaphore whose
size can grow while calls wait) and ``_Pacer`` spaces call starts evenly. A call starts
only when both allow it, so nothing queues up front and back-pressure is natural.
``FixedRateLimiter`` holds a known quota; ``AdaptiveLimiter`` finds an unknown one from the
service's throttling. Time comes from a ``Clock`` (``ibimport.flow.clock``): tests and simulations
run in virtual time on ``ibimport.testing.FakeClock``, never on the wall clock.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from typing import Protocol

import anyio
import anyio.lowlevel

from ibimport.flow.clock import Clock, SystemClock

__all__ = [
    "AdaptiveLimiter",
    "Clock",
    "FixedRateLimiter",
    "Limiter",
    "MonotonicClock",
    "build_limiter",
]

#: The old name of ``ibimport.flow.clock.SystemClock``, kept for existing imports.
MonotonicClock = SystemClock

_PROVISIONAL_BOOST = 25  # probe steps while an early estimate is unconfirmed (2% -> 50%)
_SLACK_S = 0.001  # a call may start this early: one timer per millisecond, not per call
_CATCH_UP = 2.0  # intervals a late-woken pacer may make up: at most 3 starts back to back


class Limiter(Protocol):
    """What the runner needs: wait for room, report how each call ended."""

    async def acquire(self) -> None:
        """Wait until one more call may start: room in flight and the pace allows."""

    def release(self, *, throttled: bool) -> None:
        """One acquired call ended; ``throttled`` if the service said slow down."""


class _Slots:
    """Calls in flight: a FIFO semaphore whose size can change while calls wait."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self._waiters: deque[anyio.Event] = deque()

    async def take(self) -> bool:
        """Take a slot; True if the caller had to wait for one."""
        if self.held < self.limit and not self._waiters:
            self.held += 1
            return False
        event = anyio.Event()
        self._waiters.append(event)
        try:
            await event.wait()
        except BaseException:
            if event.is_set():  # a slot was handed to us as we were cancelled: pass it on
                self.give()
            else:
                self._waiters.remove(event)
            raise
        return True

    def give(self) -> None:
        self.held -= 1
        self._admit()

    def resize(self, limit: int) -> None:
        self.limit = limit
        self._admit()

    def _admit(self) -> None:
        while self._waiters and self.held < self.limit:
            self.held += 1  # the slot passes straight to the waiter, so nobody can barge in
            self._waiters.popleft().set()


class _Pacer:
    """Even spacing of call starts, re-timed at once when the rate changes."""

    def __init__(self, clock: Clock, rate: float | None) -> None:
        self._clock = clock
        self._rate = rate
        self._last = -math.inf  # when the previous call was allowed to start
        self._gate = anyio.Lock()  # FIFO: only the head of the queue sleeps on the clock
        self._nap: anyio.CancelScope | None = None

    @property
    def rate(self) -> float | None:
        return self._rate

    def set_rate(self, rate: float | None) -> None:
        self._rate = rate
        if self._nap is not None:
            self._nap.cancel()  # the head wakes and recomputes its start with the new rate

    def _due(self) -> float:
        return -math.inf if self._rate is None else self._last + 1.0 / self._rate

    async def wait(self) -> bool:
        """Wait for this call's turn; True if the pace delayed it."""
        # GCRA (virtual scheduling): a call may start at max(now, previous start + 1/rate),
        # give or take _SLACK_S. No bursts beyond that: a client burst as large as the
        # quota trips a service bucket whose burst is smaller.
        if not self._gate.locked():
            # Nobody queued (anyio hands a released lock straight to its next waiter): a
            # call that is due starts without the gate's two checkpoints, each a trip
            # through the event loop (two thirds of the limiter's cost per call). Still
            # cancellable: a batch stopped meanwhile must not send one more call.
            await anyio.lowlevel.checkpoint_if_cancelled()
            now = self._clock.now()
            if self._due() - now <= _SLACK_S:
                self._start(now, slept=False)
                return False
        async with self._gate:
            slept = False
            while (delay := self._due() - self._clock.now()) > _SLACK_S:
                slept = True
                with anyio.CancelScope() as nap:
                    self._nap = nap
                    await self._clock.sleep(delay)
                self._nap = None
            self._start(self._clock.now(), slept=slept)
        return slept

    def _start(self, now: float, *, slept: bool) -> None:
        """Move the schedule on by the call starting ``now``."""
        if self._rate is None:
            self._last = now
            return
        due = self._due()
        if slept or due >= now:
            # On the grid. A call let through up to _SLACK_S early takes its due slot,
            # so the average pace is exact while one timer serves every call due within
            # the slack (at 5,000 calls/s a sleep per call cost ~70 us of CPU). A sleeper
            # woken late (real timers are, more so on a loaded machine) catches up at
            # most _CATCH_UP intervals, so stalls do not add up to a lower rate while a
            # catch-up stays a tiny burst.
            self._last = max(due, now - _CATCH_UP / self._rate)
        else:
            self._last = now  # found the gate open: not pace-bound, start afresh


class _PacedLimiter:
    """Slots first, then pace: starts stay evenly spaced however many calls wait."""

    def __init__(self, *, clock: Clock, in_flight: int, rate: float | None) -> None:
        self._clock = clock
        self._slots = _Slots(in_flight)
        self._pacer = _Pacer(clock, rate)

    async def acquire(self) -> None:
        slot_waited = await self._slots.take()
        try:
            paced = await self._pacer.wait()
        except BaseException:
            self._slots.give()
            raise
        self._started(self._clock.now(), slot_waited=slot_waited, paced=paced)

    def release(self, *, throttled: bool) -> None:
        self._slots.give()
        self._ended(self._clock.now(), throttled=throttled)

    def _started(self, now: float, *, slot_waited: bool, paced: bool) -> None:
        """Hook: a call started (``paced``: the pace delayed it)."""

    def _ended(self, now: float, *, throttled: bool) -> None:
        """Hook: a call ended."""


def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")


class FixedRateLimiter(_PacedLimiter):
    """A known quota: pace at ``rate``; if throttled anyway, ease off briefly.

    The configured rate is a ceiling. A throttle lowers the pace by ``backoff_factor``
    (once per ``window_s``, so a volley of throttles counts once); each clean ``window_s``
    then recovers ``recovery`` of the ceiling.
    """

    def __init__(
        self,
        concurrency: int,
        rate: float,
        *,
        clock: Clock,
        backoff_factor: float = 0.95,
        recovery: float = 0.05,
        window_s: float = 1.0,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        _positive("rate", rate)
        super().__init__(clock=clock, in_flight=concurrency, rate=rate)
        self._ceiling = rate
        self._floor = rate / 100
        self._factor = backoff_factor
        self._recovery = recovery
        self._window = window_s
        self._reacted_at = -math.inf
        self._clean_since = clock.now()

    def _ended(self, now: float, *, throttled: bool) -> None:
        rate = self._pacer.rate
        assert rate is not None
        if throttled:
            self._clean_since = now
            if now - self._reacted_at >= self._window:
                self._reacted_at = now
                self._pacer.set_rate(max(self._floor, rate * self._factor))
        elif rate < self._ceiling and now - self._clean_since >= self._window:
            self._clean_since = now
            self._pacer.set_rate(min(self._ceiling, rate + self._recovery * self._ceiling))


class AdaptiveLimiter(_PacedLimiter):
    """An unknown quota, found from the service's throttling and then held.

    Discovery (until the quota is measured): start with ``initial_in_flight`` calls and
    grow the limit by half each time a full round of calls (as many successes as the limit)
    succeeded while waiting for a slot was what held calls back; once the quota is measured
    it grows by one per such round. Starts are not paced at first: like botocore's adaptive
    mode, nothing is slowed before the service has said anything. The first throttle may
    come from the service's burst rather than its rate (calls leaving in clumps), so it
    measures nothing: from then on discovery spreads starts out (``discovery_headroom``
    times in-flight limit / mean latency, by Little's law) and the next throttle, from a
    call started after the spreading began (one mean latency later), measures the quota.
    Unspread starts matter to the client too: answers keep the shape their calls left in,
    and one answer per event-loop turn costs a loopback client about a quarter more CPU
    than clumps do (benchmarks/README.md, Throughput findings).

    On a measuring throttle: the rate at which the service *accepted* calls over the last
    moments is a direct measurement of the quota, so the pace is set to ``margin`` of it
    instead of being halved. Reactions are debounced (one per ``reaction_samples`` calls at
    the current pace, between ``min_span_s`` and ``window_s``) so a volley of throttles
    counts once.

    Then probe: every clean interval (a second, or ``probe_calls`` calls if that is longer)
    in which pacing was what limited the run (most starts waited on the pace, not on a
    slot) raises the pace by ``probe_step``; after ``probe_step``-sized steps have run clean
    for a while the step doubles (up to 4x), to recover from an estimate that came out low.
    The in-flight limit keeps growing by the discovery rule whenever it is what binds.
    """

    def __init__(
        self,
        concurrency: int,
        *,
        clock: Clock,
        initial_in_flight: int = 4,
        margin: float = 0.95,
        probe_step: float = 0.02,
        probe_calls: int = 20,
        window_s: float = 2.0,
        first_window_s: float = 0.5,
        min_span_s: float = 0.25,
        reaction_samples: int = 8,
        discovery_headroom: float = 1.5,
        min_rate: float = 0.1,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        super().__init__(clock=clock, in_flight=min(initial_in_flight, concurrency), rate=None)
        self._max_in_flight = concurrency
        self._margin = margin
        self._probe_step = probe_step
        self._probe_calls = probe_calls
        self._window = window_s
        self._first_window = first_window_s
        self._min_span = min_span_s
        self._reaction_samples = reaction_samples
        self._headroom = discovery_headroom
        self._min_rate = min_rate
        now = clock.now()
        self._began: float | None = None  # first call's start: the service saw nothing before
        self._accepted: deque[float] = deque()  # end times of accepted calls, last window_s
        self._reacted_at: float | None = None  # None: still discovering
        self._provisional = False  # the last estimate came from too few calls
        self._probed_at = -math.inf  # when a probe last raised the pace
        self._starts: deque[float] = deque()  # start times of calls in flight, FIFO
        self._latency: float | None = None  # mean call latency (EWMA)
        # the current ramp round (in-flight growth)
        self._round_ok = 0
        self._round_starts = 0
        self._round_slot_bound = 0
        # the current probe interval (pace growth)
        self._probe_since = now
        self._probe_starts = 0
        self._probe_paced = 0
        self._clean_probes = 0
        self._spread_since: float | None = None  # when discovery began to spread starts

    def _started(self, now: float, *, slot_waited: bool, paced: bool) -> None:
        if self._began is None:
            self._began = now
        self._starts.append(now)
        self._round_starts += 1
        # In discovery the pace only spreads starts; afterwards a call held by the pace
        # says the slots are not what binds.
        if slot_waited and (self._reacted_at is None or not paced):
            self._round_slot_bound += 1
        self._probe_starts += 1
        if paced:
            self._probe_paced += 1

    def _ended(self, now: float, *, throttled: bool) -> None:
        if self._starts:
            # Pairing ends with starts first-in-first-out misattributes single calls but
            # keeps the sum of latencies, which is all a mean needs.
            sample = now - self._starts.popleft()
            self._latency = sample if self._latency is None else 0.9 * self._latency + 0.1 * sample
        if throttled:
            self._round_ok = self._round_starts = self._round_slot_bound = 0
            self._probe_since, self._probe_starts, self._probe_paced = now, 0, 0
            self._clean_probes = 0
            if self._reacted_at is None:
                if self._spread_since is None:
                    # Unspread calls may have tripped the service's burst, not its rate:
                    # spread the starts from now on and let a later throttle measure.
                    self._spread_since = now
                    self._spread()
                    return
                if now - self._spread_since < (self._latency or 0.0):
                    return  # a call that left before the spreading: it measures nothing
            self._react(now)
            return
        self._accepted.append(now)
        while self._accepted and self._accepted[0] < now - self._window:
            self._accepted.popleft()
        self._round_ok += 1
        self._maybe_ramp()
        if self._reacted_at is None:
            self._spread()
        else:
            self._maybe_probe(now)

    def _maybe_ramp(self) -> None:
        limit = self._slots.limit
        if self._round_ok < limit:
            return
        if limit < self._max_in_flight and 2 * self._round_slot_bound >= self._round_starts > 0:
            # Before the first throttle, grow by half a round per round (reaching 256 in
            # flight from 4 takes about ten round trips, not 250); after it, by one.
            grown = limit + max(1, limit // 2) if self._reacted_at is None else limit + 1
            self._slots.resize(min(self._max_in_flight, grown))
        self._round_ok = self._round_starts = self._round_slot_bound = 0

    def _spread(self) -> None:
        if self._spread_since is None or not self._latency:
            return
        target = self._headroom * self._slots.limit / self._latency
        rate = self._pacer.rate
        if rate is None or abs(target - rate) > 0.02 * rate:
            self._pacer.set_rate(target)

    def _maybe_probe(self, now: float) -> None:
        rate = self._pacer.rate
        assert rate is not None
        if now - self._probe_since < max(1.0, self._probe_calls / rate):
            return
        if 2 * self._probe_paced >= self._probe_starts > 0:
            self._clean_probes += 1
            boost = (
                _PROVISIONAL_BOOST if self._provisional else 2 ** min(2, self._clean_probes // 5)
            )
            self._pacer.set_rate(rate * (1.0 + self._probe_step * boost))
            self._probed_at = now
        self._probe_since, self._probe_starts, self._probe_paced = now, 0, 0

    def _react(self, now: float) -> None:
        rate = self._pacer.rate
        if self._reacted_at is not None and rate is not None:
            debounce = min(self._window, max(self._min_span, self._reaction_samples / rate))
            if now - self._reacted_at < debounce:
                return
        # Since the last reaction the service has been at its limit, so what it accepted
        # is its refill rate. The first window also holds the service's initial burst: an
        # overestimate, corrected at the next reaction.
        began = now if self._began is None else self._began
        if self._reacted_at is None:
            since = max(now - self._first_window, began)
            # A throttle this early divides few calls by at least min_span: the estimate
            # may be low. Probe fast until the next throttle measures a saturated service.
            self._provisional = now - since < self._min_span
        else:
            # Only calls made at the current pace measure the quota: before the last probe
            # the pace was lower, so counting those calls would underestimate it.
            since = max(self._reacted_at, self._probed_at, now - self._window)
            self._provisional = False
        since = min(since, now - self._min_span)
        span = now - since
        accepted = len(self._accepted) - bisect.bisect_right(self._accepted, since)
        if accepted:
            new_rate = self._margin * accepted / span
        elif rate is not None:  # nothing got through: back off instead
            new_rate = 0.5 * rate
        else:  # nothing to go on yet; the throttled calls back off on their own
            return
        self._reacted_at = now
        self._pacer.set_rate(max(self._min_rate, new_rate))


def build_limiter(*, concurrency: int, rate: float | None, clock: Clock) -> Limiter:
    """The runner's limiter: fixed when the quota is known (``rate``), adaptive otherwise."""
    if rate is not None:
        return FixedRateLimiter(concurrency, rate, clock=clock)
    return AdaptiveLimiter(concurrency, clock=clock)
