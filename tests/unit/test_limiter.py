"""Limiter behaviour, in virtual time only (no wall-clock assertions)."""

from __future__ import annotations

import itertools

import anyio
import pytest

from ibimport.flow.limiter import AdaptiveLimiter, FixedRateLimiter, _Pacer, build_limiter
from ibimport.testing import FakeClock


def _pace(limiter: FixedRateLimiter | AdaptiveLimiter) -> float | None:
    """The pace the limiter holds now, in calls/s (None: unpaced).

    Read from its pacing policy: nothing outside the limiter needs it, so it is no
    property of the limiter's.
    """
    return limiter._pacer.rate


def _in_flight_limit(limiter: FixedRateLimiter | AdaptiveLimiter) -> int:
    """The bound on calls in flight the limiter holds now, read from its slots policy."""
    return limiter._slots.limit


# --- pacing ------------------------------------------------------------------------------


async def _run_calls(
    limiter: FixedRateLimiter | AdaptiveLimiter,
    clock: FakeClock,
    *,
    workers: int,
    calls: int,
    latency: float,
) -> tuple[list[float], int]:
    """Drive the limiter as the runner does; return start times and the peak in flight."""
    starts: list[float] = []
    in_flight = peak = 0
    remaining = calls

    async def worker() -> None:
        nonlocal in_flight, peak, remaining
        while remaining > 0:
            remaining -= 1
            await limiter.acquire()
            starts.append(clock.now())
            in_flight += 1
            peak = max(peak, in_flight)
            await clock.sleep(latency)
            in_flight -= 1
            limiter.release(throttled=False)

    async with anyio.create_task_group() as tg:
        for _ in range(workers):
            tg.start_soon(worker)
    return starts, peak


async def test_fixed_rate_spaces_starts_evenly_with_no_initial_burst() -> None:
    clock = FakeClock()
    limiter = FixedRateLimiter(8, 20.0, clock=clock)
    starts, _ = await _run_calls(limiter, clock, workers=8, calls=60, latency=0.01)
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert starts[0] == 0.0
    assert gaps == pytest.approx([0.05] * 59)


async def test_fixed_rate_after_idle_starts_at_once_but_never_bursts() -> None:
    clock = FakeClock()
    limiter = FixedRateLimiter(4, 10.0, clock=clock)
    await limiter.acquire()
    limiter.release(throttled=False)
    await clock.sleep(5.0)  # idle: no credit is banked
    starts = []
    for _ in range(3):
        await limiter.acquire()
        starts.append(clock.now())
        limiter.release(throttled=False)
    assert starts == pytest.approx([5.0, 5.1, 5.2])


async def test_in_flight_never_exceeds_concurrency() -> None:
    clock = FakeClock()
    limiter = FixedRateLimiter(3, 1000.0, clock=clock)
    starts, peak = await _run_calls(limiter, clock, workers=10, calls=50, latency=0.5)
    assert peak == 3
    assert len(starts) == 50
    assert _in_flight_limit(limiter) == 3


async def test_cancelled_acquire_gives_its_place_back() -> None:
    clock = FakeClock()
    limiter = FixedRateLimiter(1, 1.0, clock=clock)
    await limiter.acquire()  # holds the only slot
    with anyio.move_on_after(0.01):  # wall-clock timeout only unblocks the waiter
        await limiter.acquire()
    limiter.release(throttled=False)
    await limiter.acquire()  # would hang if the cancelled waiter had leaked the slot
    assert clock.now() == pytest.approx(1.0)  # and the pace still holds


async def test_waiters_pick_up_a_slower_pace_at_once() -> None:
    clock = FakeClock()
    limiter = FixedRateLimiter(4, 1.0, clock=clock)
    await limiter.acquire()  # starts at 0; the next may start at 1.0
    started: list[float] = []

    async def waiter() -> None:
        await limiter.acquire()
        started.append(clock.now())

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter)
        await clock.sleep(0.5)
        limiter.release(throttled=True)  # throttled: pace drops to 0.95/s
    assert _pace(limiter) == pytest.approx(0.95)
    assert started == pytest.approx([1 / 0.95])


@pytest.mark.parametrize(("new_rate", "expected_start"), [(10.0, 0.2), (0.5, 2.0), (None, 0.2)])
async def test_waiters_pick_up_a_new_rate_at_once(
    new_rate: float | None, expected_start: float
) -> None:
    clock = FakeClock()
    pacer = _Pacer(clock, 1.0)
    await pacer.wait()  # starts at 0; the next was due at 1.0
    started: list[float] = []

    async def waiter() -> None:
        await pacer.wait()
        started.append(clock.now())

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter)
        await clock.sleep(0.2)
        pacer.set_rate(new_rate)
    assert started == pytest.approx([expected_start])


async def test_fixed_rate_backs_off_once_per_window_and_recovers_to_the_ceiling() -> None:
    clock = FakeClock()
    limiter = FixedRateLimiter(4, 10.0, clock=clock)
    for _ in range(5):  # a volley of throttles is one reaction
        await limiter.acquire()
        limiter.release(throttled=True)
    assert _pace(limiter) == pytest.approx(9.5)
    for _ in range(60):
        await limiter.acquire()
        await clock.sleep(0.05)
        limiter.release(throttled=False)
    assert _pace(limiter) == pytest.approx(10.0)  # back at, and never above, the ceiling


# --- adaptive ----------------------------------------------------------------------------


async def test_adaptive_starts_modestly_unpaced_and_ramps_in_flight() -> None:
    clock = FakeClock()
    limiter = AdaptiveLimiter(16, clock=clock)
    assert _in_flight_limit(limiter) == 4
    assert _pace(limiter) is None
    _, peak = await _run_calls(limiter, clock, workers=32, calls=400, latency=0.1)
    assert _in_flight_limit(limiter) == 16  # grew while slots were the bottleneck; capped
    assert peak == 16


async def test_adaptive_does_not_ramp_when_slots_are_not_the_bottleneck() -> None:
    clock = FakeClock()
    limiter = AdaptiveLimiter(16, clock=clock)
    await _run_calls(limiter, clock, workers=2, calls=200, latency=0.1)
    assert _in_flight_limit(limiter) == 4


async def _accepted(limiter: AdaptiveLimiter, clock: FakeClock, calls: int) -> None:
    """40 accepted calls/s, one at a time."""
    for _ in range(calls):
        await limiter.acquire()
        await clock.sleep(0.025)
        limiter.release(throttled=False)


async def _throttled(limiter: AdaptiveLimiter, clock: FakeClock) -> None:
    """One call, answered throttled as fast as an accepted one."""
    await limiter.acquire()
    await clock.sleep(0.025)
    limiter.release(throttled=True)


async def _accepted_then_throttled(limiter: AdaptiveLimiter, clock: FakeClock) -> None:
    """40 accepted calls/s for two seconds, then a measuring throttle.

    The first throttle of a discovery only starts spreading the starts; the one measuring
    the quota comes from a call that left at least a mean latency later.
    """
    await _accepted(limiter, clock, 80)
    await _throttled(limiter, clock)
    await _accepted(limiter, clock, 2)
    await _throttled(limiter, clock)


async def test_adaptive_discovery_is_unpaced_until_a_throttle_which_spreads_but_measures_not() -> (
    None
):
    clock = FakeClock()
    limiter = AdaptiveLimiter(16, clock=clock)
    await _accepted(limiter, clock, 80)
    assert _pace(limiter) is None  # nothing slowed before the service said anything
    await _throttled(limiter, clock)
    # Spread by Little's law (1.5 x 4 in flight / 25 ms), not the quota's 40/s: a throttle
    # of unspread calls may be the service's burst talking, not its rate.
    assert _pace(limiter) == pytest.approx(1.5 * 4 / 0.025, rel=0.1)
    await _throttled(limiter, clock)  # a call that left before the spreading: still no measurement
    assert _pace(limiter) == pytest.approx(1.5 * 4 / 0.025, rel=0.1)
    await _accepted(limiter, clock, 2)
    await _throttled(limiter, clock)
    # Now measured: just under what the service accepted over the last half second (two of
    # that half second's calls were the throttled ones).
    assert _pace(limiter) == pytest.approx(0.95 * 40 * 18 / 20, rel=0.05)


async def test_adaptive_paces_just_under_the_accepted_rate_when_throttled() -> None:
    clock = FakeClock()
    limiter = AdaptiveLimiter(16, clock=clock)
    await _accepted_then_throttled(limiter, clock)
    assert _pace(limiter) == pytest.approx(0.95 * 40, rel=0.05)


async def test_adaptive_a_volley_of_throttles_is_one_reaction() -> None:
    clock = FakeClock()
    limiter = AdaptiveLimiter(16, clock=clock)
    await _accepted_then_throttled(limiter, clock)
    rate = _pace(limiter)
    assert rate is not None
    for _ in range(int(0.2 * rate)):  # what was sent in the next moment comes back throttled
        await limiter.acquire()
        limiter.release(throttled=True)
    assert _pace(limiter) == rate


async def test_adaptive_backs_off_when_nothing_gets_through_for_a_while() -> None:
    clock = FakeClock()
    limiter = AdaptiveLimiter(16, clock=clock)
    await _accepted_then_throttled(limiter, clock)
    rate = _pace(limiter)
    assert rate is not None
    while clock.now() < 3.0:
        await limiter.acquire()
        limiter.release(throttled=True)
    assert _pace(limiter) is not None
    assert rate / 8 < _pace(limiter) < rate / 2  # halved per debounce window, not per throttle


async def test_adaptive_probes_up_only_while_the_pace_binds() -> None:
    clock = FakeClock()
    bound_by_latency = AdaptiveLimiter(16, clock=clock)
    await _accepted_then_throttled(bound_by_latency, clock)
    rate = _pace(bound_by_latency)
    assert rate is not None
    await _run_calls(bound_by_latency, clock, workers=1, calls=100, latency=0.1)  # 10/s
    assert _pace(bound_by_latency) == rate

    clock = FakeClock()
    bound_by_pace = AdaptiveLimiter(16, clock=clock)
    await _accepted_then_throttled(bound_by_pace, clock)
    start = clock.now()
    await _run_calls(bound_by_pace, clock, workers=16, calls=400, latency=0.1)
    seconds = clock.now() - start
    grown = _pace(bound_by_pace)
    assert grown is not None
    assert rate * 1.01 < grown < rate * 1.05**seconds  # slowly: a few % per clean second


def test_build_limiter_picks_by_whether_the_rate_is_known() -> None:
    clock = FakeClock()
    fixed = build_limiter(concurrency=8, rate=40.0, clock=clock)
    assert isinstance(fixed, FixedRateLimiter)
    assert (_pace(fixed), _in_flight_limit(fixed)) == (40.0, 8)
    adaptive = build_limiter(concurrency=2, rate=None, clock=clock)
    assert isinstance(adaptive, AdaptiveLimiter)
    assert (_pace(adaptive), _in_flight_limit(adaptive)) == (None, 2)


@pytest.mark.parametrize(("concurrency", "rate"), [(0, 1.0), (1, 0.0), (1, -5.0)])
def test_fixed_rate_rejects_nonsense(concurrency: int, rate: float) -> None:
    with pytest.raises(ValueError, match="must be"):
        FixedRateLimiter(concurrency, rate, clock=FakeClock())


async def test_adaptive_discovery_opens_all_slots_within_a_few_round_trips() -> None:
    """No quota in sight: 4 -> 256 calls in flight in a few seconds, not a few hundred rounds."""
    clock = FakeClock()
    limiter = AdaptiveLimiter(256, clock=clock)
    reached_at: float | None = None

    async def worker() -> None:
        nonlocal reached_at
        while clock.now() < 5.0:
            await limiter.acquire()
            await clock.sleep(0.1)
            limiter.release(throttled=False)
            if reached_at is None and _in_flight_limit(limiter) == 256:
                reached_at = clock.now()

    async with anyio.create_task_group() as tg:
        for _ in range(256):
            tg.start_soon(worker)
    assert reached_at is not None
    assert reached_at < 3.0, reached_at


@pytest.mark.parametrize("rate", [None, 1000.0])
async def test_acquire_in_a_cancelled_scope_takes_nothing_even_with_room(
    rate: float | None,
) -> None:
    # The uncontended path does not yield to the event loop, but a batch that was stopped
    # (its scope cancelled) must not start one more call.
    clock = FakeClock()
    limiter = build_limiter(concurrency=2, rate=rate, clock=clock)
    with anyio.CancelScope() as scope:
        scope.cancel()
        await limiter.acquire()
        pytest.fail("acquire returned in a cancelled scope")
    with anyio.fail_after(5):  # both slots are still free (none leaked): no wait
        await limiter.acquire()
        await limiter.acquire()
    limiter.release(throttled=False)
    limiter.release(throttled=False)
