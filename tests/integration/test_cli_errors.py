"""Every configuration mistake a user can make: one line, the right exit code, nothing sent.

Table-driven over the real CLI (typer's runner, in-process) against a real emulator: no
traceback, no ImportVmImage, the manifest untouched, and no journal left behind.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from pathlib import Path

import pytest
from integration_support import REGION, import_requests, invoke, make_tasks, write_csv

from ibimport.emulator import EmulatorServer

Case = Callable[[Path, str], list[str | Path]]


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def _run(manifest: Path, url: str, *extra: str | Path) -> list[str | Path]:
    return ["run", manifest, "--endpoint-url", url, "--region", REGION, "--progress", "off", *extra]


def _folder(tmp: Path) -> Path:
    (tmp / "a-folder").mkdir(exist_ok=True)
    return tmp / "a-folder"


def _link_to_manifest(tmp: Path) -> Path:
    link = tmp / "link.json"
    link.symlink_to(tmp / "wave.csv")
    return link


def _with_region(manifest: Path, region: str) -> Path:
    """The manifest again, with a region column naming ``region`` on every row."""
    lines = manifest.read_text(encoding="utf-8").splitlines()
    rows = [lines[0] + ",region"] + [line + "," + region for line in lines[1:]]
    changed = manifest.with_name("regions.csv")
    changed.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return changed


#: (case id, the command line, exit code, what the one line must say)
CASES: list[tuple[str, Case, int, str]] = [
    (
        "unknown profile",
        lambda m, url: _run(m, url, "--profile", "nope"),
        3,
        "AWS profile not found: nope",
    ),
    (
        "malformed region",
        lambda m, url: ["run", m, "--endpoint-url", url, "--region", "Not A Region"],
        2,
        "--region 'Not A Region' is not an AWS Region",
    ),
    (
        "mistyped region",
        lambda m, url: _run(m, url, "--region", "eu-wset-1"),
        2,
        "--region 'eu-wset-1' is not an AWS Region botocore",
    ),
    (
        "mistyped region in the manifest",
        lambda m, url: _run(_with_region(m, "eu-wset-1"), url),
        2,
        "the manifest's region 'eu-wset-1' is not an AWS Region botocore",
    ),
    (
        "no region at all",
        lambda m, url: ["run", m, "--endpoint-url", url, "--progress", "off"],
        2,
        "no AWS Region: pass --region",
    ),
    (
        "endpoint without a scheme",
        lambda m, url: _run(m, url.removeprefix("http://")),
        2,
        "is not an http:// or https:// URL with a host: expected a URL such as http://127.0.0.1:",
    ),
    (
        "unreachable endpoint",
        lambda m, url: _run(m, f"http://127.0.0.1:{_closed_port()}"),
        3,
        "Could not connect to the endpoint URL",
    ),
    (
        "report is a folder",
        lambda m, url: _run(m, url, "--report", _folder(m.parent)),
        2,
        "is a folder; give a file path",
    ),
    (
        "results folder missing",
        lambda m, url: _run(m, url, "--results", m.parent / "missing" / "r.csv"),
        2,
        "does not exist; create it first",
    ),
    (
        "report is the manifest",
        lambda m, url: _run(m, url, "--report", m),
        2,
        "--report",
    ),
    (
        "results is the manifest, through a link",
        lambda m, url: _run(m, url, "--results", _link_to_manifest(m.parent)),
        2,
        "is the same file as the manifest",
    ),
    (
        "journal is the results",
        lambda m, url: _run(m, url, "--journal", m.parent / "x.csv", "--results", "x.csv"),
        2,
        "is the same file as --journal",
    ),
    (
        "report is the journal",
        lambda m, url: _run(m, url, "--report", m.parent / "wave.journal"),
        2,
        "--report",
    ),
    (
        "reserved tag key",
        lambda m, url: _run(m, url, "--tag", "aws:x=1"),
        2,
        "must not start with aws:",
    ),
]


@pytest.mark.parametrize(
    ("make_args", "code", "says"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_a_configuration_mistake_is_one_line_and_sends_nothing(
    tmp_path: Path,
    emulator: EmulatorServer,
    monkeypatch: pytest.MonkeyPatch,
    make_args: Case,
    code: int,
    says: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION"):  # "no region at all" means it
        monkeypatch.delenv(name, raising=False)
    manifest = write_csv(tmp_path / "wave.csv", make_tasks(5))
    before = manifest.read_bytes()
    result = invoke(*make_args(manifest, emulator.url))

    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.output
    assert says in errors[0], errors[0]
    assert errors[0].count(says) == 1, "each message printed once"
    assert import_requests(emulator.url) == 0
    assert manifest.read_bytes() == before


def test_the_same_file_twice_is_refused_before_the_journal_exists(
    tmp_path: Path, emulator: EmulatorServer
) -> None:
    manifest = write_csv(tmp_path / "wave.csv", make_tasks(5))
    result = invoke(*_run(manifest, emulator.url, "--report", tmp_path / "same", "--results",
                          tmp_path / "same"))  # fmt: skip
    assert result.exit_code == 2
    assert "--results" in result.output
    assert "same file as --report" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wave.csv"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_output_folder_is_refused(tmp_path: Path, emulator: EmulatorServer) -> None:
    manifest = write_csv(tmp_path / "wave.csv", make_tasks(5))
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    result = invoke(*_run(manifest, emulator.url, "--report", locked / "r.json"))
    assert result.exit_code == 2
    assert "is not writable" in result.output
    assert import_requests(emulator.url) == 0


def test_no_credentials_exit_3(
    tmp_path: Path, emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    manifest = write_csv(tmp_path / "wave.csv", make_tasks(3))
    result = invoke(*_run(manifest, emulator.url))
    assert result.exit_code == 3, result.output
    assert "no AWS credentials found" in result.output
    assert "Traceback" not in result.output


def test_the_emulator_on_a_busy_port_says_so(emulator: EmulatorServer) -> None:
    port = emulator.url.rsplit(":", 1)[1]
    result = invoke("emulator", "--port", port)
    assert result.exit_code == 2
    assert f"cannot listen on 127.0.0.1:{port}" in result.output
    assert "pick another --port" in result.output
    assert "Traceback" not in result.output


def test_a_run_stopped_by_a_fatal_error_exits_3_and_keeps_rows_resumable(
    tmp_path: Path, start_emulator: Callable[..., EmulatorServer]
) -> None:
    # The service refuses the credentials (403): every call would fail the same way.
    server = start_emulator(verify_signatures=True, secret_access_key="another-secret")
    manifest = write_csv(tmp_path / "wave.csv", make_tasks(4))
    result = invoke(*_run(manifest, server.url))
    assert result.exit_code == 3, result.output
    assert "stopped:" in result.output or "error:" in result.output
