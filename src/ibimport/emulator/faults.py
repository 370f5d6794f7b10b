"""How the emulator misbehaves on purpose: quota, latency, 5xx, drops, truncation, slowness.

``Faults`` holds one emulator's misbehaviour knobs, their counters and one seeded RNG.
Every decision is drawn from that RNG in a fixed order per call (jitter, fault, drop
before, truncation, slowness), so a ``--seed`` repeats a run call for call. The server
asks before the call takes effect (``before_call``, ``drops_before``) and after it
(``deliver``); a drop after the call took effect is what makes clients retry safely.
Quotas are token buckets per (account, region, operation), as AWS applies them: Image
Builder's at ``rate_for(region)`` (429), EC2's at ``ec2_rate`` (503 RequestLimitExceeded).
"""

from __future__ import annotations

import asyncio
import random

from aiohttp import web

from ibimport.emulator.config import EmulatorConfig
from ibimport.emulator.core import Clock, Scope
from ibimport.emulator.exceptions import (
    CallRateLimitExceededException,
    RequestLimitExceeded,
    ServiceException,
    ServiceUnavailableException,
)

#: The service whose quota ``ec2_rate`` is (the others' is ``rate``/``rate_per_region``).
EC2 = "ec2"

__all__ = ["Faults", "TokenBucket", "abort"]


class TokenBucket:
    """Classic token bucket: ``burst`` tokens, refilled at ``rate`` per second."""

    __slots__ = ("burst", "clock", "last", "rate", "tokens")

    def __init__(self, rate: float, burst: int, *, clock: Clock) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.clock = clock
        self.tokens = float(burst)
        self.last = clock()

    def take(self) -> bool:
        """Spend a token if one is there."""
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class Faults:
    """One emulator's quota and injected faults, with what they did so far."""

    def __init__(self, config: EmulatorConfig, *, clock: Clock) -> None:
        self.config = config
        self.clock = clock
        self.buckets: dict[tuple[str, str, str], TokenBucket] = {}
        self.throttled_by_region: dict[str, int] = {}
        self._unmetered: set[tuple[str, str, str]] = set()
        self.reset()

    def reset(self) -> None:
        """Refill the buckets, zero the counters and reseed, as a fresh emulator."""
        self.buckets.clear()
        self.throttled_by_region.clear()
        self.rng = random.Random(self.config.seed)
        self.throttled = self.faults = self.dropped = 0
        self.dropped_before = self.truncated = self.slowed = 0

    async def before_call(
        self, operation: str, *, scope: Scope, service: str = "imagebuilder"
    ) -> bool:
        """Delay, meter and maybe fail a call before it takes effect.

        Raises the throttling or 5xx error to answer; returns whether the call's answer
        is to be lost after it took effect.
        """
        config = self.config
        if config.latency_ms or config.jitter_ms:
            await asyncio.sleep((config.latency_ms + self.rng.random() * config.jitter_ms) / 1000.0)
        key = (scope.account, scope.region, operation)
        bucket = self.buckets.get(key)
        if bucket is None and key not in self._unmetered:
            bucket = self._bucket(key, service=service)
        if bucket is not None and not bucket.take():
            self.throttled += 1
            by_region = self.throttled_by_region
            by_region[scope.region] = by_region.get(scope.region, 0) + 1
            if service == EC2:
                raise RequestLimitExceeded()
            raise CallRateLimitExceededException(f"Rate exceeded for operation {operation}.")
        if not config.fault_rate:
            return False
        draw = self.rng.random()
        if draw >= config.fault_rate:
            return False
        self.faults += 1
        share = draw / config.fault_rate
        if share < config.drop_share:
            return True
        if share < config.drop_share + (1.0 - config.drop_share) / 2:
            raise ServiceException()
        raise ServiceUnavailableException()

    def drops_before(self) -> bool:
        """Whether the connection resets before the call takes effect (nothing happens)."""
        share = self.config.drop_before_share
        if share and self.rng.random() < share:
            self.dropped_before += 1
            return True
        return False

    async def deliver(
        self, request: web.BaseRequest, response: web.Response, *, drop: bool
    ) -> web.StreamResponse:
        """Send the answer of a call that took effect: lost, cut off, late, or as is."""
        config = self.config
        if drop:
            # The call took effect but its answer is lost: the client must retry safely.
            self.dropped += 1
            abort(request)
            return response
        if config.truncate_share and self.rng.random() < config.truncate_share:
            self.truncated += 1
            return await _send_truncated(request, response)
        if config.slow_share and self.rng.random() < config.slow_share:
            # The call took effect; its answer arrives after the client may have given up.
            self.slowed += 1
            await asyncio.sleep(config.slow_ms / 1000.0)
        return response

    def _bucket(self, key: tuple[str, str, str], *, service: str) -> TokenBucket | None:
        """A new bucket for (account, region, operation), or None if it is not metered."""
        config = self.config
        rate = config.ec2_rate if service == EC2 else config.rate_for(key[1])
        if rate is None:
            self._unmetered.add(key)
            return None
        bucket = self.buckets[key] = TokenBucket(rate, config.burst_for(rate), clock=self.clock)
        return bucket


def abort(request: web.BaseRequest) -> None:
    """Close the connection without an answer."""
    if request.transport is not None:
        request.transport.abort()


async def _send_truncated(request: web.BaseRequest, response: web.Response) -> web.StreamResponse:
    """Send the status, the headers and half of the body announced by Content-Length; close."""
    body = response.body
    assert isinstance(body, bytes)
    stream = web.StreamResponse(status=response.status, headers=response.headers)
    stream.content_length = len(body)
    await stream.prepare(request)
    await stream.write(body[: len(body) // 2])
    abort(request)
    return stream
