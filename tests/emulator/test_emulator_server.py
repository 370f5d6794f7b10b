"""The server's own endpoints and lifecycle: stats and reset over HTTP, the state file."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from emulator_support import FakeClock, import_params, raw_request

from ibimport.emulator import EmulatorConfig, EmulatorServer

ARN = "arn:aws:imagebuilder:us-east-1:123456789012:image/web-server-1/1.0.0"


def test_stats_and_reset_over_http(client: Any, server: EmulatorServer) -> None:
    client.import_vm_image(**import_params())
    client.import_vm_image(**import_params())
    status, _, stats = raw_request(server.url, "GET", "/_emulator/stats")
    assert status == 200
    assert stats["requests"] == {"ImportVmImage": 2}
    assert (stats["images"], stats["idempotentReplays"]) == (1, 1)
    assert (stats["throttled"], stats["faults"], stats["duplicateBuilds"]) == (0, 0, 0)
    assert raw_request(server.url, "POST", "/_emulator/reset", body=b"")[0] == 200
    assert server.stats()["images"] == 0
    assert server.stats()["requests"] == {}
    # The token is forgotten too: the same request creates the image afresh.
    client.import_vm_image(**import_params())
    assert server.stats()["idempotentReplays"] == 0


def test_the_state_file_survives_a_restart(
    make_client: Callable[..., Any],
    start_emulator: Callable[..., EmulatorServer],
    clock: FakeClock,
    tmp_path: Path,
) -> None:
    state = tmp_path / "rehearsal.json"
    server = start_emulator(state_file=state)
    client = make_client(server.url)
    arn = client.import_vm_image(**import_params())["imageArn"]
    server.stop()
    assert json.loads(state.read_text())["counters"]["images"] == 1

    restarted = start_emulator(state_file=state)
    client = make_client(restarted.url)
    assert client.get_image(imageBuildVersionArn=arn)["image"]["arn"] == arn
    assert client.import_vm_image(**import_params())["imageArn"] == arn  # token remembered
    second = client.import_vm_image(**import_params(clientToken="new"))["imageArn"]
    assert second == f"{ARN}/2"
    assert restarted.stats()["images"] == 2


def test_the_state_file_is_saved_while_running(
    make_client: Callable[..., Any],
    start_emulator: Callable[..., EmulatorServer],
    tmp_path: Path,
) -> None:
    state = tmp_path / "rehearsal.json"
    server = start_emulator(state_file=state, state_save_interval_s=0.02)
    make_client(server.url).import_vm_image(**import_params())
    deadline = time.monotonic() + 5
    while not state.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert json.loads(state.read_text())["counters"]["images"] == 1
    assert not list(tmp_path.glob(".rehearsal.json.*"))  # no temporary file left behind


def test_a_corrupt_state_file_stops_the_start(tmp_path: Path) -> None:
    state = tmp_path / "broken.json"
    state.write_text("{not json")
    with pytest.raises(Exception, match="cannot load emulator state"):
        EmulatorServer(EmulatorConfig(state_file=state)).start()


def test_an_oversized_body_is_an_aws_json_error(client: Any, server: EmulatorServer) -> None:
    # aiohttp alone would answer 413 in text/plain, which botocore cannot parse.
    with pytest.raises(ClientError) as caught:
        client.import_vm_image(**import_params(description="d" * (2 * 1024 * 1024)))
    error = caught.value.response
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 413
    assert error["ResponseMetadata"]["HTTPHeaders"]["content-type"] == "application/json"
    assert error["ResponseMetadata"]["HTTPHeaders"]["x-amzn-errortype"] == (
        "RequestEntityTooLargeException"
    )
    assert error["Error"]["Code"] == "RequestEntityTooLargeException"
    assert error["Error"]["Message"] == "The request body is larger than 1048576 bytes."
    assert server.stats()["images"] == 0
    assert client.import_vm_image(**import_params())["imageArn"]  # the server carries on
