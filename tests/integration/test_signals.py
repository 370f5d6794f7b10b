"""Ctrl-C and SIGTERM: drain, write everything, exit 130; a second Ctrl-C leaves at once.

``ibimport run`` runs as a child process against an emulator in another process; the
tests signal it midway, check what it left behind (exit code, summary, report, results,
journal), then run the same command again and check the batch is finished exactly once.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from integration_support import read_report, read_results
from resume_support import (
    Children,
    Emulator,
    journal_counts,
    journal_integrity,
    run_args,
    signal_and_time,
    wait_for,
    wait_for_done,
    write_manifest,
)

from ibimport.emulator import EmulatorConfig

ROWS = 300
CONCURRENCY = 8
RATE = "150"
#: The runner gives calls in flight 5 s to finish; the rest is start-up slack.
EXIT_WITHIN_S = 10.0


@pytest.fixture(scope="module")
def steady_emulator() -> Iterator[Emulator]:
    """10 ms latency, no faults: every figure after a graceful stop is exact."""
    with Emulator(EmulatorConfig(latency_ms=10.0, task_mix="completed=1")) as emulator:
        yield emulator


@pytest.fixture
def emulator(steady_emulator: Emulator) -> Emulator:
    steady_emulator.reset()
    return steady_emulator


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_first_signal_drains_writes_everything_and_exits_130(
    signum: int, emulator: Emulator, children: Children, tmp_path: Path
) -> None:
    manifest = write_manifest(tmp_path / "m.csv", ROWS)
    journal = tmp_path / "m.journal"
    args = run_args(manifest, emulator.url, "--concurrency", str(CONCURRENCY), "--rate", RATE)

    child = children.start(*args)
    wait_for_done(journal, child, at_least=ROWS * 4 // 10)
    stopped, seconds = signal_and_time(child, signum)

    assert stopped.returncode == 130, stopped.stderr
    assert seconds < EXIT_WITHIN_S
    stopped.assert_clean()
    assert "interrupt: finishing calls in flight" in stopped.stderr
    assert "interrupted" in stopped.stdout  # the summary table's title

    # Everything the run did is in the journal, the report and the results, and agrees.
    assert journal_integrity(journal) == "ok"
    counts = journal_counts(journal)
    done = counts.get("succeeded", 0)
    assert 0 < done < ROWS
    assert counts.get("in_flight", 0) == 0, counts  # calls in flight were drained
    assert done + counts.get("pending", 0) == ROWS, counts
    report = read_report(tmp_path / "m.report.json")
    assert report["interrupted"] is True
    assert report["totals"]["rows"] == ROWS
    assert report["totals"]["succeeded"] == done
    assert report["totals"]["skipped"] == ROWS - done
    results = read_results(tmp_path / "m.results.csv")
    assert len(results) == ROWS
    assert sum(r["status"] == "succeeded" for r in results) == done
    assert {r["status"] for r in results} == {"succeeded", "skipped"}
    stats = emulator.stats()
    assert stats["images"] == done  # nothing was imported that the journal does not know
    assert emulator.imports() == done

    sent_before = emulator.imports()
    rerun = children.run(*args)
    assert rerun.returncode == 0, rerun.stderr
    rerun.assert_clean()
    assert emulator.imports() - sent_before == ROWS - done  # done rows not sent again
    results = read_results(tmp_path / "m.results.csv")
    assert [r["status"] for r in results] == ["succeeded"] * ROWS
    assert read_report(tmp_path / "m.report.json")["resumed"] == done
    stats = emulator.stats()
    assert stats["images"] == ROWS
    assert stats["duplicateBuilds"] == 0
    builds = emulator.builds_per_row([r["name"] for r in results])
    assert set(builds.values()) == {1}
    assert journal_counts(journal) == {"succeeded": ROWS}


@pytest.fixture
def slow_emulator() -> Iterator[Emulator]:
    """Calls take 1 s: a drain is still going on when the second Ctrl-C arrives."""
    with Emulator(EmulatorConfig(latency_ms=1000.0, task_mix="completed=1")) as emulator:
        yield emulator


def test_second_sigint_exits_at_once_leaving_a_consistent_journal(
    slow_emulator: Emulator, children: Children, tmp_path: Path
) -> None:
    rows = CONCURRENCY  # all in flight at once
    manifest = write_manifest(tmp_path / "m.csv", rows)
    journal = tmp_path / "m.journal"
    args = run_args(manifest, slow_emulator.url, "--concurrency", str(CONCURRENCY))

    child = children.start(*args)
    wait_for(lambda: slow_emulator.imports() >= 1, timeout=30, what="a call in flight")
    child.signal(signal.SIGINT)
    wait_for(
        lambda: "interrupt: finishing" in child.stderr_text(), timeout=5, what="the first notice"
    )
    assert child.running()  # draining: the calls in flight take 1 s
    second, seconds = signal_and_time(child, signal.SIGINT, timeout=10)

    assert second.returncode == 130, second.stderr
    assert seconds < 1.0
    second.assert_clean()
    assert "second interrupt: exiting now" in second.stderr
    assert journal_integrity(journal) == "ok"
    counts = journal_counts(journal)
    assert counts.get("in_flight", 0) >= 1, counts  # sent, outcome unknown
    assert sum(counts.values()) == rows, counts
    status = children.run("status", str(journal))
    assert status.returncode == 0, status.stderr
    status.assert_clean()

    # The calls cut off may still land; the re-run sends them again with the same tokens.
    time.sleep(1.1)
    rerun = children.run(*args)
    assert rerun.returncode == 0, rerun.stderr
    rerun.assert_clean()
    results = read_results(tmp_path / "m.results.csv")
    assert [r["status"] for r in results] == ["succeeded"] * rows
    stats = slow_emulator.stats()
    assert stats["images"] == rows
    assert stats["duplicateBuilds"] == 0
    assert journal_counts(journal) == {"succeeded": rows}
