"""The emulator in a child process: ``python -m ibimport.emulator`` and ``EmulatorProcess``."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from emulator_support import import_params

from ibimport.emulator import EmulatorConfig, EmulatorProcess


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
    with EmulatorProcess(EmulatorConfig(rate=1000, seed=1, task_mix="completed=1")) as process:
        client = make_client(process.url)
        client.import_vm_image(**import_params())
        client.import_vm_image(**import_params(clientToken="again"))
        stats = process.stats()
        assert (stats["images"], stats["duplicateBuilds"]) == (2, 1)
        process.reset()
        assert process.stats()["images"] == 0
