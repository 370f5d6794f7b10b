"""The AWS SDK for JavaScript v3 against the emulator (issue 21): typed access-denied
errors, short pages through the SDK's paginators, polling to a final state.

Skipped when node or the SDK packages are missing (``npm ci`` in ``tests/emulator/js``
installs them; ``make test`` does when npm is there).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from ibimport.emulator import EmulatorConfig, EmulatorServer

JS = Path(__file__).parent / "js"
DENIED_KEY = "AKIDDENIEDJS"

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None
    or not (JS / "node_modules" / "@aws-sdk" / "client-imagebuilder").is_dir(),
    reason="node or the AWS SDK for JavaScript v3 is not installed (npm ci in tests/emulator/js)",
)


def test_the_javascript_sdk_sees_the_new_behaviours() -> None:
    config = EmulatorConfig(
        deny=(f"{DENIED_KEY}=ImportVmImage,ec2:DescribeImportImageTasks,AssumeRole",),
        short_pages=0.7,
        task_mix="completed=0.5,missing=0.5",
        available_after_s=0.2,
        seed=21,
    )
    with EmulatorServer(config) as server:
        env = {
            "PATH": os.environ["PATH"],
            "HOME": os.environ.get("HOME", "/tmp"),
            "IBIMPORT_EMULATOR_URL": server.url,
            "DENIED_KEY": DENIED_KEY,
            "AWS_EC2_METADATA_DISABLED": "true",
        }
        done = subprocess.run(
            ["node", "contract.mjs"],
            cwd=JS,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        stats = server.stats()
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["failures"] == []
    assert stats["shortPages"] > 0
    assert stats["errors"]["AccessDeniedException"] == 1
    assert stats["errors"]["UnauthorizedOperation"] == 1
    assert stats["errors"]["AccessDenied"] == 1
