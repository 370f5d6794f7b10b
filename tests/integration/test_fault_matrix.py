"""The fault matrix: every fault the network can produce, and no row lost or doubled.

Each cell runs ``ibimport run`` against an emulator that misbehaves one way, then lets
the service judge: exactly one build per row (``duplicateBuilds == 0``, ``images ==
rows``), every row ``succeeded`` with the ARN of build 1 of its own image version. The
last cell restarts the emulator, a child process with ``--state``, mid-run. (The faults
hit every operation, so the service's listing is not used to judge: it would be slow.)
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from integration_support import (
    invoke,
    make_tasks,
    read_report,
    read_results,
    run_args,
    stats,
    write_jsonl,
)

from ibimport.emulator import EmulatorConfig, EmulatorProcess, EmulatorServer

StartEmulator = Callable[..., EmulatorServer]
ROWS = 60


def assert_each_row_once(url: str, tmp_path: Path, rows: int) -> dict[str, Any]:
    """Exactly one build per row, and the results name it; returns the emulator's counters."""
    counters = stats(url)
    assert counters["duplicateBuilds"] == 0, counters
    assert counters["images"] == rows, counters
    results = read_results(tmp_path / "wave.results.csv")
    assert [int(r["row"]) for r in results] == list(range(1, rows + 1))
    assert {r["status"] for r in results} == {"succeeded"}, [
        r for r in results if r["status"] != "succeeded"
    ][:3]
    for r in results:  # build 1 of this very name and version: no twin was ever made
        assert r["imageArn"].endswith(f"/{r['name']}/{r['semanticVersion']}/1"), r
    assert len({r["imageArn"] for r in results}) == rows
    report = read_report(tmp_path / "wave.report.json")
    assert report["totals"]["succeeded"] == rows
    return counters


def _run(tmp_path: Path, url: str, *extra: str, rows: int = ROWS) -> str:
    manifest = write_jsonl(tmp_path / "wave.jsonl", make_tasks(rows, seed=rows))
    started = time.monotonic()
    result = invoke(*run_args(manifest, url, "--concurrency", "8", *extra))
    assert result.exit_code == 0, result.output
    assert time.monotonic() - started < 20
    assert "Traceback" not in result.output
    return result.output


CELLS: dict[str, tuple[dict[str, Any], tuple[str, ...], str]] = {
    # knobs, extra CLI arguments, the emulator counter that proves the fault happened
    "connection reset before the call took effect": (
        {"drop_before_share": 0.3},
        (),
        "droppedBefore",
    ),
    "connection reset after the call took effect": (
        {"fault_rate": 0.3, "drop_share": 1.0},
        (),
        "dropped",
    ),
    "truncated answer (headers and half the body)": ({"truncate_share": 0.3}, (), "truncated"),
    "answer slower than the read timeout": (
        {"slow_share": 0.25, "slow_ms": 1500.0},
        ("--read-timeout", "0.4"),
        "slowed",
    ),
    "bursts of 500 and 503": ({"fault_rate": 0.35, "drop_share": 0.0}, (), "faults"),
    "throttling storm": (
        {"rate": 40.0, "burst": 2},
        ("--concurrency", "32", "--rate", "100"),
        "throttled",
    ),
}


@pytest.mark.parametrize("cell", list(CELLS))
def test_no_row_is_lost_or_doubled(
    start_emulator: StartEmulator, tmp_path: Path, cell: str
) -> None:
    knobs, extra, counter = CELLS[cell]
    server = start_emulator(seed=11, **knobs)
    _run(tmp_path, server.url, *extra)
    counters = assert_each_row_once(server.url, tmp_path, ROWS)
    assert counters[counter] > 0, counters  # the fault really happened
    if counter in ("dropped", "truncated", "slowed"):
        # Calls that took effect without a usable answer were retried and replayed.
        assert counters["idempotentReplays"] >= counters[counter] - 1, counters


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def test_the_emulator_restarted_mid_run_loses_and_doubles_nothing(
    aws_credentials: None, tmp_path: Path
) -> None:
    config = EmulatorConfig(
        port=_free_port(),
        state_file=tmp_path / "emulator-state.json",
        task_mix="completed=1",
    )
    process = EmulatorProcess(config).start()
    restarted = threading.Event()

    def restart_mid_run() -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and stats(process.url)["images"] < 20:
            time.sleep(0.02)
        process.stop()  # SIGTERM: the emulator saves its state and exits
        time.sleep(0.3)
        process.start()
        restarted.set()

    restarter = threading.Thread(target=restart_mid_run)
    try:
        restarter.start()
        # --rate keeps the run long enough to be cut in the middle; --max-attempts lets each
        # row ride out an outage as long as a Python start-up.
        output = _run(
            tmp_path,
            process.url,
            "--rate",
            "40",
            "--max-attempts",
            "30",
            rows=80,
        )
        restarter.join(timeout=30)
        assert restarted.is_set()
        assert "cannot reach" not in output  # the unreachable stop is only for a bad endpoint
        counters = assert_each_row_once(process.url, tmp_path, 80)
        report = read_report(tmp_path / "wave.report.json")
        assert report["retries"] > 0  # the outage was seen, and ridden out
        assert counters["images"] == 80
    finally:
        restarter.join(timeout=30)
        process.stop()
