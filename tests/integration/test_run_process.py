"""``ibimport run`` as a process: the console script end to end, and the fatal stops.

A fault that would fail every call (no credentials, an endpoint nobody listens on) must
end the run quickly with one clear message and exit 1: no traceback, and not a failure
for every row.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from integration_support import (
    REGION,
    make_tasks,
    read_report,
    read_results,
    stats,
    write_csv,
)

from ibimport.emulator import EmulatorServer

StartEmulator = Callable[..., EmulatorServer]
IBIMPORT = str(Path(sys.executable).parent / "ibimport")


def _env(home: Path, *, credentials: bool = True) -> dict[str, str]:
    """The parent's environment without any AWS_* setting; dummy credentials if asked."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env |= {
        "HOME": str(home),  # no ~/.aws of the machine's user
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    if credentials:
        env |= {"AWS_ACCESS_KEY_ID": "AKIDIBIMPORTTEST", "AWS_SECRET_ACCESS_KEY": "secret"}
    return env


def _run(
    manifest: Path, url: str, env: dict[str, str], *extra: str
) -> subprocess.CompletedProcess[str]:
    command = [IBIMPORT, "run", str(manifest), "--endpoint-url", url, "--region", REGION]
    return subprocess.run(
        [*command, "--progress", "plain", *extra],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_console_script_imports_a_manifest(
    start_emulator: StartEmulator, tmp_path: Path
) -> None:
    server = start_emulator(latency_ms=2)
    manifest = write_csv(tmp_path / "wave.csv", make_tasks(40, seed=6))

    done = _run(manifest, server.url, _env(tmp_path))

    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert "succeeded" in done.stdout
    assert stats(server.url)["images"] == 40
    assert read_report(tmp_path / "wave.report.json")["totals"]["succeeded"] == 40


def test_an_unreachable_endpoint_stops_the_batch_with_one_message(tmp_path: Path) -> None:
    manifest = write_csv(tmp_path / "wave.csv", make_tasks(300, seed=7))

    started = time.monotonic()
    done = _run(manifest, f"http://127.0.0.1:{_closed_port()}", _env(tmp_path))
    elapsed = time.monotonic() - started

    assert done.returncode == 3, done.stderr  # a fatal stop
    assert "Traceback" not in done.stderr + done.stdout
    assert "cannot reach the Image Builder endpoint" in done.stderr
    assert elapsed < 30
    report = read_report(tmp_path / "wave.report.json")
    assert report["calls"] <= 40  # a handful of attempts, not one per row
    assert report["totals"]["failed"] <= 16
    assert report["totals"]["skipped"] >= 250
    assert report["totals"]["rows"] == 300
    results = read_results(tmp_path / "wave.results.csv")
    assert len(results) == 300


def test_no_credentials_stop_the_batch_before_any_call(
    start_emulator: StartEmulator, tmp_path: Path
) -> None:
    server = start_emulator()
    manifest = write_csv(tmp_path / "wave.csv", make_tasks(50, seed=8))

    started = time.monotonic()
    done = _run(manifest, server.url, _env(tmp_path, credentials=False))
    elapsed = time.monotonic() - started

    assert done.returncode == 3, done.stderr  # could not start
    assert "Traceback" not in done.stderr + done.stdout
    assert "no AWS credentials found" in done.stderr
    assert len(done.stderr.strip().splitlines()) <= 3, done.stderr
    assert elapsed < 20
    assert stats(server.url)["requests"] == {}
