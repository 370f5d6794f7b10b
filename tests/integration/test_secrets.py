"""No secret ever leaves the process: a sentinel secret key and session token, hunted everywhere.

``ibimport run`` gets ``AWS_SECRET_ACCESS_KEY`` and ``AWS_SESSION_TOKEN`` set to sentinels
and is driven through success, permanent errors, a fatal 403 (the emulator verifying
signatures), and an unreachable endpoint. Neither sentinel may appear in stdout,
stderr, the log records, the journal (with its -wal and -shm), the report or the results,
nor in ``status`` and ``report`` output afterwards.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import boto3
import pytest
from integration_support import invoke, make_tasks, run_args, write_jsonl

from ibimport.emulator import EmulatorServer

StartEmulator = Callable[..., EmulatorServer]
SECRET = "SENTINELsecretKEY0123456789abcdefghijklmn"
TOKEN = "SENTINELsessionTOKEN0123456789abcdefghijklmnopqrstuvwxyz"
KEY = "AKIDIBIMPORTTEST"


@pytest.fixture
def sentinel_credentials(aws_credentials: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_SESSION_TOKEN", TOKEN)


def _forms(secret: str) -> list[bytes]:
    """The ways a secret could be written: plain, UTF-16 (SQLite may), and its signing key."""
    return [secret.encode(), secret.encode("utf-16-le"), ("AWS4" + secret).encode()]


def assert_no_sentinel(*texts: str, directory: Path) -> None:
    for secret in (SECRET, TOKEN):
        for text in texts:
            assert secret not in text
        for path in directory.rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                for form in _forms(secret):
                    assert form not in data, path


def _manifest(tmp_path: Path, rows: int = 6) -> Path:
    return write_jsonl(tmp_path / "wave.jsonl", make_tasks(rows, seed=5))


def _after(tmp_path: Path) -> str:
    """What ``status`` and ``report`` print about the journal afterwards."""
    shown = []
    for command in ("status", "report"):
        result = invoke(command, tmp_path / "wave.journal")
        shown.append(result.output)
    return "\n".join(shown)


def test_a_successful_run_with_permanent_errors_leaks_nothing(
    sentinel_credentials: None,
    start_emulator: StartEmulator,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    server = start_emulator()
    tasks = make_tasks(6, seed=5)
    tasks[2]["clientToken"] = "taken-token"  # used before with other parameters: a 400
    boto3.client("imagebuilder", endpoint_url=server.url, region_name="us-east-1").import_vm_image(
        **{**tasks[3], "name": "other", "clientToken": "taken-token"}
    )
    manifest = write_jsonl(tmp_path / "wave.jsonl", tasks)

    result = invoke(*run_args(manifest, server.url))

    assert result.exit_code == 1, result.output
    assert "IdempotentParameterMismatchException" in (tmp_path / "wave.results.csv").read_text()
    assert_no_sentinel(result.output, caplog.text, _after(tmp_path), directory=tmp_path)


@pytest.mark.parametrize("with_token", [True, False])
def test_a_fatal_403_leaks_nothing_and_names_the_credentials(
    sentinel_credentials: None,
    start_emulator: StartEmulator,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    with_token: bool,
) -> None:
    caplog.set_level(logging.INFO)
    if not with_token:
        monkeypatch.delenv("AWS_SESSION_TOKEN")
    # The emulator knows KEY with another secret: the sentinel signs wrongly.
    server = start_emulator(
        verify_signatures=True, access_key_id=KEY, secret_access_key="the-real-secret"
    )

    result = invoke(*run_args(_manifest(tmp_path), server.url))

    assert result.exit_code == 3, result.output  # a fatal stop
    code = "UnrecognizedClientException" if with_token else "InvalidSignatureException"
    output = " ".join(result.output.split())  # undo the terminal's wrapping
    # The first call (the listing of existing images) is refused: the batch never started.
    assert output.count("error:") == 1, result.output
    stopped = output.split("error:")[1]
    assert stopped.strip().startswith(f"the AWS credentials were refused: {code}"), stopped
    assert server.stats()["images"] == 0
    assert_no_sentinel(result.output, caplog.text, _after(tmp_path), directory=tmp_path)


def _refused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port  # closed again: nothing listens there


_MAIN = "import sys; from ibimport.cli import main; sys.argv[0] = 'ibimport'; main()"


def test_an_unreachable_endpoint_leaks_nothing_even_in_a_real_process(
    sentinel_credentials: None, tmp_path: Path
) -> None:
    manifest = _manifest(tmp_path)
    url = f"http://127.0.0.1:{_refused_port()}"
    env = {**os.environ, "COLUMNS": "200"}
    process = subprocess.run(
        [sys.executable, "-c", _MAIN, *map(str, run_args(manifest, url))],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert process.returncode == 3, process.stderr  # a fatal stop
    assert "cannot reach" in process.stderr
    assert "Traceback" not in process.stdout + process.stderr
    assert_no_sentinel(process.stdout, process.stderr, _after(tmp_path), directory=tmp_path)


def test_the_report_carries_no_credentials_or_environment(
    sentinel_credentials: None, start_emulator: StartEmulator, tmp_path: Path
) -> None:
    server = start_emulator()
    result = invoke(*run_args(_manifest(tmp_path), server.url))
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "wave.report.json").read_text())
    flat = json.dumps(report)
    for word in ("AKID", "secret", "token", "AWS_"):
        assert word.lower() not in flat.lower(), word
    assert_no_sentinel(result.output, directory=tmp_path)
