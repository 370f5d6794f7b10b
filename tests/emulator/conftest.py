"""Contract-test helpers: real boto3/aioboto3 clients against an in-process emulator."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from emulator_support import NO_RETRIES, RAW, FakeClock

from ibimport.emulator import EmulatorConfig, EmulatorServer


@pytest.fixture(scope="session")
def boto_session() -> boto3.session.Session:
    """One session for all tests: its loader caches the service model."""
    return boto3.session.Session(
        aws_access_key_id="AKIDIBIMPORTTEST",
        aws_secret_access_key="ibimport-test-secret",
        region_name="us-east-1",
    )


ClientFactory = Callable[..., Any]


@pytest.fixture
def make_client(boto_session: boto3.session.Session) -> ClientFactory:
    """Build a boto3 Image Builder client for an emulator URL (no retries by default)."""

    def make(url: str, *, config: Config = NO_RETRIES, access_key: str | None = None) -> Any:
        kwargs: dict[str, Any] = {}
        if access_key is not None:
            kwargs = {"aws_access_key_id": access_key, "aws_secret_access_key": "secret"}
        return boto_session.client("imagebuilder", endpoint_url=url, config=config, **kwargs)

    return make


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def start_emulator(clock: FakeClock) -> Iterator[Callable[..., EmulatorServer]]:
    """Start emulators with given knobs on the fake clock; all are stopped afterwards.

    Every import task exists and is done (``--task-mix completed=1``) unless the test
    says otherwise: ``task_mix=None`` is the emulator's own default, AWS's behaviour.
    """
    servers: list[EmulatorServer] = []

    def start(**knobs: Any) -> EmulatorServer:
        if "import_tasks" not in knobs:
            knobs = {"task_mix": "completed=1", **knobs}
        server = EmulatorServer(EmulatorConfig(**knobs), clock=clock).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def server(start_emulator: Callable[..., EmulatorServer]) -> EmulatorServer:
    """An emulator with default knobs on the fake clock."""
    return start_emulator()


@pytest.fixture
def client(make_client: ClientFactory, server: EmulatorServer) -> Any:
    """A boto3 client of ``server`` that sends whatever it is given (no client-side checks)."""
    return make_client(server.url, config=RAW)
