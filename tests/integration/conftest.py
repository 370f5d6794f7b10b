"""Integration fixtures: ``start_emulator``, in-process emulators with the knobs a test needs.

The helpers the tests share (manifests, the CLI, the emulator's view) are in
``integration_support``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ibimport.emulator import EmulatorConfig, EmulatorServer

pytest.register_assert_rewrite("integration_support")


@pytest.fixture
def start_emulator(aws_credentials: None) -> Iterator[Callable[..., EmulatorServer]]:
    """Start in-process emulators with the given EmulatorConfig knobs; all stop afterwards."""
    servers: list[EmulatorServer] = []

    def start(**knobs: Any) -> EmulatorServer:
        server = EmulatorServer(EmulatorConfig(**knobs)).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
