"""Fixtures every test folder may use: a running emulator and dummy AWS credentials."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ibimport.emulator import EmulatorConfig, EmulatorServer


@pytest.fixture
def aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dummy credentials and region, so that no test can reach a real account."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "AKIDIBIMPORTTEST",
        "AWS_SECRET_ACCESS_KEY": "ibimport-test-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


@pytest.fixture
def emulator(aws_credentials: None) -> Iterator[EmulatorServer]:
    """A fresh in-process emulator whose import tasks all exist and are done (the
    rehearsal convenience, ``--task-mix completed=1``); its endpoint is ``emulator.url``."""
    with EmulatorServer(EmulatorConfig(task_mix="completed=1")) as server:
        yield server
