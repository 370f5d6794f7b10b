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

import pytest
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
        found = re.fullmatch(
            r"ibimport emulator listening on (http://127\.0\.0\.1:(\d+)) with --state \S+\n",
            line,
        )
        assert found is not None, line
        assert int(found.group(2)) > 0
        assert child.stdout.readline() == f"export AWS_ENDPOINT_URL={found.group(1)}\n"
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


def _emulator(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """``ibimport emulator ARGS`` as a user runs it; stopped after its start line."""
    child = subprocess.Popen(
        [sys.executable, "-m", "ibimport", "emulator", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        first = child.stdout.readline()
        if first:
            first += child.stdout.readline()
            child.send_signal(signal.SIGTERM)
        _, err = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    return subprocess.CompletedProcess(child.args, child.returncode, first, err)


def test_the_start_line_echoes_the_knobs_and_the_endpoint_to_paste() -> None:
    """Issue 22 item 14."""
    done = _emulator("--port", "0", "--rate", "60", "--task-mix", "completed=1", "--deny", "AK=*")
    first, second = done.stdout.splitlines()
    url = re.search(r"http://127\.0\.0\.1:\d+", first)
    assert url is not None, first
    assert first.endswith("with --rate 60.0 --task-mix completed=1 --deny AK=*"), first
    assert "secret" not in first
    assert second == f"export AWS_ENDPOINT_URL={url.group(0)}"
    assert done.returncode == 0


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--port", "70000"], "port must be 0-65535"),
        (["--state", "{tmp}/missing/state.json"], "the folder {tmp}/missing does not exist"),
        (["--state", "{tmp}/afile/state.json"], "the folder {tmp}/afile does not exist"),
        (["--state", "{tmp}"], "is a folder"),
        (["--state", "/proc/ibimport-state.json"], "cannot write in /proc"),
    ],
)
def test_a_bad_port_or_state_path_is_refused_at_start_in_one_line(
    tmp_path: Path, args: list[str], expected: str
) -> None:
    """Issue 22 item 14: no traceback, no folder created, nothing served."""
    (tmp_path / "afile").write_text("not a folder")
    shown = [a.format(tmp=tmp_path) for a in args]
    done = _emulator("--port", "0", *shown) if args[0] != "--port" else _emulator(*shown)
    assert done.returncode == 2
    assert done.stdout == ""
    assert expected.format(tmp=tmp_path) in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "missing").exists()
    if args[0] == "--state":
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_a_reimport_over_a_failed_build_is_counted_apart_from_duplicates(
    make_client: Callable[..., Any],
) -> None:
    """Issue 22 item 14: the documented recovery (a new build beside a FAILED one) is not a
    duplicate; a second build beside a standing one is."""
    with EmulatorProcess(EmulatorConfig(task_mix="completed=0.5,missing=0.5", seed=3)) as process:
        client = make_client(process.url)
        status = {}
        for n in range(1, 21):
            arn = client.import_vm_image(**import_params(n))["imageArn"]
            status[n] = client.get_image(imageBuildVersionArn=arn)["image"]["state"]["status"]
        failed = next(n for n, s in status.items() if s == "FAILED")
        standing = next(n for n, s in status.items() if s == "AVAILABLE")
        client.import_vm_image(**import_params(failed, clientToken="retry-failed"))
        client.import_vm_image(**import_params(standing, clientToken="second-build"))
        stats = process.stats()
    assert stats["reimportsOverFailed"] == 1
    assert stats["duplicateBuilds"] == 1
    assert stats["regions"]["us-east-1"]["reimportsOverFailed"] == 1
