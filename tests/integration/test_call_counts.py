"""Every attempt that left the client is a call in the report (issue 22, item 3).

With dropped connections, aiohttp used to re-send ImportVmImage (a PUT, so "idempotent")
once on its own when a reused connection closed before the answer: the report said 313
calls where the service received 372, and the limiter and the retry budget never saw those
attempts. The report's calls, retries and errors by code must add up to what the service
received.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from integration_support import invoke, make_tasks, read_report, run_args, stats, write_csv

from ibimport.emulator import EmulatorServer


def test_the_report_counts_every_request_the_service_received(
    start_emulator: Callable[..., EmulatorServer], tmp_path: Path
) -> None:
    # Every fault drops the connection after the call took effect: a lost answer.
    server = start_emulator(fault_rate=0.2, drop_share=1.0, seed=3)
    manifest = write_csv(tmp_path / "wave.csv", make_tasks(150))

    result = invoke(*run_args(manifest, server.url, "--concurrency", "8"))

    assert result.exit_code == 0, result.output
    report = read_report(tmp_path / "wave.report.json")
    received = stats(server.url)["requests"]["ImportVmImage"]
    assert received > 150  # the faults did happen
    assert report["calls"] == received
    assert report["retries"] == received - 150
    assert sum(report["errors_by_code"].values()) == received - 150
    assert stats(server.url)["duplicateBuilds"] == 0
