"""Throttling, injected faults and latency: what ``faults`` does to calls."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import aioboto3
import aiohttp
import pytest
from botocore.exceptions import ClientError, ConnectionClosedError
from emulator_support import AUTHORIZATION, NO_RETRIES, FakeClock, import_params

from ibimport.emulator import EmulatorConfig, EmulatorServer


def _outcomes(client: Any, count: int, *, offset: int = 0) -> Counter[str]:
    seen: Counter[str] = Counter()
    for n in range(offset, offset + count):
        try:
            client.import_vm_image(**import_params(n))
            seen["ok"] += 1
        except ClientError as error:
            seen[error.response["Error"]["Code"]] += 1
    return seen


def test_rate_and_burst_throttle_with_call_rate_limit_exceeded(
    make_client: Callable[..., Any],
    start_emulator: Callable[..., EmulatorServer],
    clock: FakeClock,
) -> None:
    server = start_emulator(rate=5, burst=5)
    client = make_client(server.url)
    assert _outcomes(client, 30) == {"ok": 5, "CallRateLimitExceededException": 25}
    clock.advance(0.4)  # two tokens come back
    assert _outcomes(client, 5, offset=30) == {"ok": 2, "CallRateLimitExceededException": 3}
    stats = server.stats()
    assert (stats["throttled"], stats["images"]) == (28, 7)
    assert stats["requests"]["ImportVmImage"] == 35


def test_each_operation_has_its_own_bucket(
    make_client: Callable[..., Any], start_emulator: Callable[..., EmulatorServer]
) -> None:
    client = make_client(start_emulator(rate=1, burst=1).url)
    arn = client.import_vm_image(**import_params())["imageArn"]
    assert client.get_image(imageBuildVersionArn=arn)["image"]["arn"] == arn
    with pytest.raises(ClientError) as caught:
        client.get_image(imageBuildVersionArn=arn)
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 429


async def test_a_quick_burst_of_30_against_rate_5_mostly_fails(aws_credentials: None) -> None:
    """The issue's acceptance check, on the real clock and a real aioboto3 client."""
    with EmulatorServer(EmulatorConfig(rate=5, burst=5)) as server:
        session = aioboto3.Session()
        async with session.client(
            "imagebuilder", endpoint_url=server.url, config=NO_RETRIES
        ) as client:

            async def call(n: int) -> str:
                try:
                    await client.import_vm_image(**import_params(n))
                except ClientError as error:
                    return str(error.response["Error"]["Code"])
                return "ok"

            started = time.monotonic()
            seen = Counter(await asyncio.gather(*(call(n) for n in range(30))))
            took = time.monotonic() - started
        stats = server.stats()
    # Refill during the burst adds rate * duration tokens to the initial five.
    assert 5 <= seen["ok"] <= 5 + int(5 * took) + 1
    assert seen["ok"] + seen["CallRateLimitExceededException"] == 30
    assert stats["throttled"] == seen["CallRateLimitExceededException"]
    assert stats["images"] == seen["ok"]


async def _raw_calls(url: str, count: int) -> list[str]:
    """Send ``count`` ImportVmImage calls one by one; name each outcome."""
    outcomes = []
    headers = {"Authorization": AUTHORIZATION, "Content-Type": "application/json"}
    async with aiohttp.ClientSession(headers=headers) as session:
        # aiohttp silently re-sends an idempotent PUT whose connection was dropped, which
        # would hide drops from this count; its own test client switches that off so.
        session._retry_connection = False
        for n in range(count):
            body = json.dumps(import_params(n)).encode()
            try:
                async with session.put(f"{url}/ImportVmImage", data=body) as response:
                    await response.read()
                    outcomes.append(str(response.status))
            except aiohttp.ClientConnectionError:
                outcomes.append("dropped")
    return outcomes


async def test_fault_rate_gives_that_share_of_500_503_and_drops(
    start_emulator: Callable[..., EmulatorServer],
) -> None:
    server = start_emulator(fault_rate=0.3, seed=7)
    seen = Counter(await _raw_calls(server.url, 400))
    faults = seen["500"] + seen["503"] + seen["dropped"]
    assert 75 <= faults <= 165  # 120 expected; binomial sd is about 9
    assert min(seen["500"], seen["503"], seen["dropped"]) > 0
    assert seen["dropped"] < seen["500"] + seen["503"]
    stats = server.stats()
    assert stats["requests"]["ImportVmImage"] == 400
    assert stats["faults"] == faults
    assert stats["dropped"] == seen["dropped"]
    # A dropped call took effect; a 500/503 did not.
    assert stats["images"] == seen["200"] + seen["dropped"]


async def test_faults_are_repeatable_with_a_seed(
    start_emulator: Callable[..., EmulatorServer],
) -> None:
    first = await _raw_calls(start_emulator(fault_rate=0.5, seed=3).url, 40)
    second = await _raw_calls(start_emulator(fault_rate=0.5, seed=3).url, 40)
    assert first == second
    assert len(set(first)) > 1


def test_a_dropped_answer_leaves_the_import_done(
    make_client: Callable[..., Any], start_emulator: Callable[..., EmulatorServer]
) -> None:
    dropping = start_emulator(fault_rate=1.0, drop_share=1.0)
    with pytest.raises(ConnectionClosedError):
        make_client(dropping.url).import_vm_image(**import_params())
    assert dropping.stats()["images"] == 1


def test_latency_delays_every_answer(
    make_client: Callable[..., Any], start_emulator: Callable[..., EmulatorServer]
) -> None:
    client = make_client(start_emulator(latency_ms=60, jitter_ms=20).url)
    for n in range(4):
        started = time.monotonic()
        client.import_vm_image(**import_params(n))
        assert time.monotonic() - started >= 0.06
