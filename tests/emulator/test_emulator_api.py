"""The emulator package's public surface is exactly what ``__all__`` says."""

from __future__ import annotations

import ibimport.emulator


def test_public_names() -> None:
    assert sorted(ibimport.emulator.__all__) == [
        "EmulatorConfig",
        "EmulatorProcess",
        "EmulatorServer",
    ]
