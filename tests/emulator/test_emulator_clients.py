"""The emulator from the outside: aioboto3 and the AWS CLI."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import aioboto3
import pytest
from botocore.exceptions import ClientError
from emulator_support import NO_RETRIES, import_params

from ibimport.emulator import EmulatorServer

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
