"""The emulator package's public surface is exactly what ``__all__`` says."""

from __future__ import annotations

import inspect

import ibimport.emulator
from ibimport.emulator.cli import emulator_command


def test_public_names() -> None:
    assert sorted(ibimport.emulator.__all__) == [
        "EmulatorConfig",
        "EmulatorProcess",
        "EmulatorServer",
    ]


def test_the_command_offers_every_knob() -> None:
    knobs = set(inspect.signature(emulator_command).parameters)
    assert {
        "host", "port", "region", "account_id", "rate", "burst", "latency_ms", "jitter_ms",
        "fault_rate", "seed", "token_ttl", "available_after_s", "state",
    } <= knobs  # fmt: skip
