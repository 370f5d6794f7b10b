"""The limiters against a simulated service quota, in virtual time.

A fake service holds a token bucket (the shape of Image Builder's call-rate quota);
workers drive the limiter exactly as the runner does: acquire, the request travels, the
service accepts or throttles, the answer travels back, release, and a throttled call is
retried after a full-jitter backoff. Minutes of virtual time run in about a second.

The issue's bar (quota 40/s, burst 10): told the rate, at least 97% of the quota with at
most 1% of calls throttled; adaptive, at least 90% with at most 3%.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import anyio
import pytest

from ibimport.flow.limiter import build_limiter
from ibimport.flow.retry import Backoff
from ibimport.testing import FakeClock

Latency = Callable[[random.Random], float]


class TokenBucket:
    """The service's quota: ``rate`` tokens/s, holding at most ``burst``; a call takes one."""

    def __init__(self, rate: float, burst: float, *, clock: FakeClock) -> None:
        self._rate, self._burst, self._clock = rate, burst, clock
        self._tokens, self._last = burst, clock.now()

    def take(self) -> bool:
        now = self._clock.now()
        self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
        self._last = now
        if self._tokens >= 1.0 - 1e-9:
            self._tokens -= 1.0
            return True
        return False


@dataclass(frozen=True)
class Outcome:
    share: float  # accepted calls / the most the quota allowed (rate * duration + burst)
    throttled: float  # throttled calls / all calls
    failed_rows: int  # rows that ran out of attempts


async def simulate(
    *,
    quota: float,
    burst: float,
    latency: Latency,
    concurrency: int,
    rate: float | None,
    duration_s: float,
    seed: int = 1,
    idle_s: float = 0.0,
) -> Outcome:
    """Run ``concurrency`` workers against the bucket for ``duration_s`` of virtual time.

    ``idle_s``: time between building the limiter and the first call (the runner reads
    the manifest and opens the journal in between).
    """
    clock = FakeClock()
    limiter = build_limiter(concurrency=concurrency, rate=rate, clock=clock)
    await clock.sleep(idle_s)
    duration_s += idle_s
    service = TokenBucket(quota, burst, clock=clock)
    backoff = Backoff()
    rng = random.Random(seed)
    accepted = throttled = failed = 0

    async def worker() -> None:
        nonlocal accepted, throttled, failed
        while clock.now() < duration_s:
            attempt = 0
            while True:  # one row
                attempt += 1
                await limiter.acquire()
                took = latency(rng)
                await clock.sleep(took / 2)  # the request travels
                ok = service.take()
                if clock.now() < duration_s:
                    if ok:
                        accepted += 1
                    else:
                        throttled += 1
                await clock.sleep(took / 2)  # the answer travels back
                limiter.release(throttled=not ok)
                if ok:
                    break
                if not backoff.should_retry(attempt):
                    failed += 1
                    break
                await clock.sleep(backoff.delay(attempt, rng))

    async with anyio.create_task_group() as tg:
        for _ in range(concurrency):
            tg.start_soon(worker)
    return Outcome(
        share=accepted / (quota * (duration_s - idle_s) + burst),
        throttled=throttled / max(1, accepted + throttled),
        failed_rows=failed,
    )


def fixed(seconds: float) -> Latency:
    return lambda rng: seconds


def jittered(low: float, high: float) -> Latency:
    return lambda rng: rng.uniform(low, high)


@dataclass(frozen=True)
class Scenario:
    quota: float
    latency: Latency
    concurrency: int
    duration_s: float


SCENARIOS = {
    "40/s-20ms": Scenario(40, fixed(0.02), 16, 120),
    "40/s-100ms": Scenario(40, fixed(0.1), 16, 120),
    "40/s-50..150ms": Scenario(40, jittered(0.05, 0.15), 16, 120),
    "40/s-150..450ms": Scenario(40, jittered(0.15, 0.45), 32, 120),
    "300/s-20ms": Scenario(300, fixed(0.02), 64, 60),
    "300/s-100ms": Scenario(300, fixed(0.1), 64, 60),
    "300/s-50..150ms": Scenario(300, jittered(0.05, 0.15), 64, 60),
    "5/s-20ms": Scenario(5, fixed(0.02), 16, 120),
    "5/s-100ms": Scenario(5, fixed(0.1), 16, 120),
}


async def run(name: str, *, told: bool, seed: int = 1) -> Outcome:
    s = SCENARIOS[name]
    return await simulate(
        quota=s.quota,
        burst=10,
        latency=s.latency,
        concurrency=s.concurrency,
        rate=s.quota if told else None,
        duration_s=s.duration_s,
        seed=seed,
    )


@pytest.mark.parametrize("name", list(SCENARIOS))
async def test_told_the_quota_sustains_97_percent_with_at_most_1_percent_throttled(
    name: str,
) -> None:
    outcome = await run(name, told=True)
    assert outcome.share >= 0.97, outcome
    assert outcome.throttled <= 0.01, outcome
    assert outcome.failed_rows == 0


@pytest.mark.parametrize(
    ("name", "seed"),
    [(n, 1) for n in SCENARIOS if n.startswith(("40/s", "300/s"))]
    + [("40/s-50..150ms", seed) for seed in (2, 3, 4)],
)
async def test_adaptive_finds_the_quota_90_percent_with_at_most_3_percent_throttled(
    name: str, seed: int
) -> None:
    outcome = await run(name, told=False, seed=seed)
    assert outcome.share >= 0.90, outcome
    assert outcome.throttled <= 0.03, outcome
    assert outcome.failed_rows == 0


@pytest.mark.parametrize("name", [n for n in SCENARIOS if n.startswith("5/s")])
async def test_adaptive_at_a_small_quota_with_a_relatively_large_burst(name: str) -> None:
    """Burst 10 is two seconds of a 5/s quota, so the first estimate overshoots the most
    and the start-up throttles weigh more in a short run: a looser bar than the issue's."""
    outcome = await run(name, told=False)
    assert outcome.share >= 0.85, outcome
    assert outcome.throttled <= 0.05, outcome
    assert outcome.failed_rows == 0


async def test_told_a_rate_above_the_real_quota_backs_off_and_keeps_most_of_it() -> None:
    """A wrong --rate (50 against a 40/s quota) still converges instead of throttling on."""
    outcome = await simulate(
        quota=40, burst=10, latency=fixed(0.05), concurrency=16, rate=50, duration_s=120
    )
    assert outcome.share >= 0.85, outcome
    assert outcome.failed_rows == 0


async def test_adaptive_early_throttle_after_an_idle_start_is_not_an_underestimate() -> None:
    """A small burst throttles within the first tenth of a second. The quota must not be
    measured across the idle time before the first call, and an estimate made from so
    few calls is confirmed by fast probing rather than held."""
    outcome = await simulate(
        quota=100,
        burst=5,
        latency=fixed(0.01),
        concurrency=16,
        rate=None,
        duration_s=20,
        idle_s=2.0,
    )
    assert outcome.share >= 0.85, outcome
    assert outcome.throttled <= 0.03, outcome
