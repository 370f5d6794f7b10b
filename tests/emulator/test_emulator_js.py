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


def _task(n: int) -> str:
    return f"import-ami-{n:017d}"


def test_the_javascript_sdk_sees_the_new_behaviours(tmp_path: Path) -> None:
    # The script's image 1 waits on a task that stays active (it is cancelled), 2-20 on
    # completed tasks (AVAILABLE), 21-40 on tasks nobody declared (FAILED).
    tasks = [{"ImportTaskId": _task(1), "Status": "active", "CompletesAfterS": 10**6}]
    tasks += [{"ImportTaskId": _task(n), "Status": "completed"} for n in range(2, 21)]
    (tmp_path / "tasks.json").write_text(json.dumps(tasks))
    config = EmulatorConfig(
        deny=(f"{DENIED_KEY}=ImportVmImage,ec2:DescribeImportImageTasks,AssumeRole",),
        short_pages=0.7,
        import_tasks=tmp_path / "tasks.json",
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
    assert result["statuses"] == {"CANCELLED": 1, "AVAILABLE": 19, "FAILED": 20}
    assert stats["shortPages"] > 0
    assert stats["errors"]["AccessDeniedException"] == 1
    assert stats["errors"]["UnauthorizedOperation"] == 1
    assert stats["errors"]["AccessDenied"] == 1
