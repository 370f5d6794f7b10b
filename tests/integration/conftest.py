"""Integration fixtures: ``start_emulator``, in-process emulators with the knobs a test needs;
``children``, ibimport child processes that are all killed when the test ends.

The helpers the tests share (manifests, the CLI, the emulator's view) are in
``integration_support``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from ibimport.emulator import EmulatorConfig, EmulatorServer

if TYPE_CHECKING:
    from resume_support import Children

pytest.register_assert_rewrite("integration_support")


@pytest.fixture
def start_emulator(aws_credentials: None) -> Iterator[Callable[..., EmulatorServer]]:
    """Start in-process emulators with the given EmulatorConfig knobs; all stop afterwards.

    Every import task exists and is done (``--task-mix completed=1``) unless the test
    says otherwise: ``task_mix=None`` is the emulator's own default, AWS's behaviour.
    """
    servers: list[EmulatorServer] = []

    def start(**knobs: Any) -> EmulatorServer:
        if "import_tasks" not in knobs:
            knobs = {"task_mix": "completed=1", **knobs}
        server = EmulatorServer(EmulatorConfig(**knobs)).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def children(tmp_path: Path) -> Iterator[Children]:
    """``ibimport`` child processes run in ``tmp_path``; any still running are killed."""
    # Imported here: resume_support imports integration_support, which must be imported
    # after register_assert_rewrite above.
    from resume_support import Children

    with Children(tmp_path) as running:
        yield running
