"""The emulator from the outside: aioboto3, the AWS CLI, the child process, the state file."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aioboto3
import pytest
from botocore.exceptions import ClientError
from emulator_support import NO_RETRIES, FakeClock, import_params

from ibimport.emulator import EmulatorConfig, EmulatorProcess, EmulatorServer

ARN = "arn:aws:imagebuilder:us-east-1:123456789012:image/web-server-1/1.0.0"


async def test_aioboto3_imports_replays_and_reads_errors(emulator: EmulatorServer) -> None:
    session = aioboto3.Session()
    async with session.client(
        "imagebuilder", endpoint_url=emulator.url, config=NO_RETRIES
    ) as client:
        first = await client.import_vm_image(**import_params())
        again = await client.import_vm_image(**import_params())
        assert first["imageArn"] == again["imageArn"] == f"{ARN}/1"
        with pytest.raises(ClientError) as caught:
            await client.import_vm_image(**import_params(semanticVersion="1.0.x"))
        assert caught.value.response["Error"]["Code"] == "InvalidParameterValueException"
        image = (await client.get_image(imageBuildVersionArn=first["imageArn"]))["image"]
        assert image["state"]["status"] == "AVAILABLE"
        builds = await client.list_image_build_versions(imageVersionArn=ARN)
        assert [s["arn"] for s in builds["imageSummaryList"]] == [first["imageArn"]]
    assert emulator.stats()["idempotentReplays"] == 1


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


def test_python_m_prints_its_port_and_stops_on_sigterm(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    child = subprocess.Popen(
        [sys.executable, "-m", "ibimport.emulator", "--port", "0", "--state", str(state)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        found = re.fullmatch(r"ibimport emulator listening on (http://127\.0\.0\.1:(\d+))\n", line)
        assert found is not None, line
        assert int(found.group(2)) > 0
        child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=15) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if child.stdout is not None:
            child.stdout.close()
    assert json.loads(state.read_text())["format"] == 1


def test_emulator_process_serves_and_reports_stats(
    make_client: Callable[..., Any],
) -> None:
    with EmulatorProcess(EmulatorConfig(rate=1000, seed=1)) as process:
        client = make_client(process.url)
        client.import_vm_image(**import_params())
        client.import_vm_image(**import_params(clientToken="again"))
        stats = process.stats()
        assert (stats["images"], stats["duplicateBuilds"]) == (2, 1)
        process.reset()
        assert process.stats()["images"] == 0


AWS_CLI = os.environ.get("IBIMPORT_AWS_CLI")


@pytest.mark.skipif(not AWS_CLI, reason="IBIMPORT_AWS_CLI (path to aws) is not set")
def test_the_aws_cli_imports_through_the_emulator(emulator: EmulatorServer, tmp_path: Path) -> None:
    assert AWS_CLI is not None
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "AWS_ACCESS_KEY_ID": "AKIDIBIMPORTTEST",
        "AWS_SECRET_ACCESS_KEY": "ibimport-test-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        "AWS_PAGER": "",
    }

    def aws(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [AWS_CLI, "imagebuilder", *args, "--endpoint-url", emulator.url, "--output", "json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    imported = aws(
        "import-vm-image",
        "--name", "web-server-1",
        "--semantic-version", "1.0.0",
        "--platform", "Linux",
        "--vm-import-task-id", "import-ami-00000001",
        "--client-token", "cli-token-1",
        "--tags", "wave=1",
    )  # fmt: skip
    assert imported.returncode == 0, imported.stderr
    assert json.loads(imported.stdout)["imageArn"] == f"{ARN}/1"
    refused = aws(
        "import-vm-image",
        "--name", "web-server-1",
        "--semantic-version", "1.0",
        "--platform", "Linux",
        "--vm-import-task-id", "import-ami-00000001",
    )  # fmt: skip
    assert refused.returncode != 0
    assert "InvalidParameterValueException" in refused.stderr
    assert "at 'semanticVersion'" in refused.stderr
    stats = emulator.stats()
    assert stats["images"] == 1
    assert stats["requests"]["ImportVmImage"] == 2
