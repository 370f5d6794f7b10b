"""Outputs are never lost or clobbered (issue 22, items 4, 9 and 12), through the real CLI.

- a run that cannot start (unknown profile, no credentials: exit 3) touches no output;
- a file that replaces a complete one is written beside it and renamed into place, so a
  kill during ``report`` leaves the complete results whole;
- shards that are not a whole wave are refused, or with ``--partial`` reported as partial.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest
from integration_support import (
    import_requests,
    invoke,
    make_tasks,
    read_report,
    read_results,
    run_args,
    write_csv,
)

from ibimport.domain.results import RowResult, RowStatus
from ibimport.emulator import EmulatorServer
from ibimport.journal import SqliteJournal

# ------------------------------------------------------------ item 4: cannot start


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if not p.name.endswith("-shm")}


@pytest.mark.parametrize("failure", ["unknown profile", "no credentials"])
def test_a_run_that_cannot_start_leaves_a_finished_batch_s_outputs_alone(
    tmp_path: Path, emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch, failure: str
) -> None:
    manifest = write_csv(tmp_path / "wave.csv", make_tasks(40))
    finished = invoke(*run_args(manifest, emulator.url))
    assert finished.exit_code == 0, finished.output
    assert len(read_results(tmp_path / "wave.results.csv")) == 40
    # One row left to send (as a stop would leave it), so the re-run must reach AWS: a
    # batch with nothing left carries every row over without opening a session.
    with sqlite3.connect(tmp_path / "wave.journal") as conn:
        conn.execute("UPDATE rows SET state = 'pending' WHERE row = 40")
    before = _snapshot(tmp_path)

    extra: list[str] = []
    if failure == "unknown profile":
        extra = ["--profile", "nope"]
    else:
        monkeypatch.delenv("AWS_ACCESS_KEY_ID")
        monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    again = invoke(*run_args(manifest, emulator.url, *extra))

    assert again.exit_code == 3, again.output
    assert _snapshot(tmp_path) == before  # results, report and journal byte for byte
    assert import_requests(emulator.url) == 40


def test_a_fresh_run_that_cannot_start_leaves_no_journal_and_no_results(
    tmp_path: Path, emulator: EmulatorServer
) -> None:
    manifest = write_csv(tmp_path / "wave.csv", make_tasks(5))
    result = invoke(*run_args(manifest, emulator.url, "--profile", "nope"))
    assert result.exit_code == 3, result.output
    assert "AWS profile not found: nope" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wave.csv"]
    # ... so the next attempt starts clean, as a first run.
    assert invoke(*run_args(manifest, emulator.url)).exit_code == 0
    assert len(read_results(tmp_path / "wave.results.csv")) == 5


# ------------------------------------------------------------ item 9: killed mid-write


def _big_journal(path: Path, rows: int) -> None:
    """A finished batch's journal of ``rows`` rows, written by the journal itself."""
    journal = SqliteJournal.open(
        path,
        manifest_path=str(path.with_name("wave.csv")),
        manifest_fingerprint="fp",
        settings={"shard": None},
    )
    journal.record_pending((i, f"vm-{i:06d}", "1.0.0", f"token-{i}") for i in range(1, rows + 1))
    for i in range(1, rows + 1):
        journal.record(
            RowResult(
                row=i,
                name=f"vm-{i:06d}",
                semantic_version="1.0.0",
                status=RowStatus.SUCCEEDED,
                client_token=f"token-{i}",
                image_arn=f"arn:aws:imagebuilder:us-east-1:123456789012:image/vm-{i:06d}/1.0.0/1",
                attempts=1,
            )
        )
    anyio.run(journal.aclose)


def test_a_kill_during_report_leaves_the_complete_results_whole(tmp_path: Path) -> None:
    journal = tmp_path / "wave.journal"
    _big_journal(journal, 60_000)
    results = tmp_path / "wave.results.csv"
    first = invoke("report", journal, "--results", results)
    assert first.exit_code == 0, first.output
    complete = results.read_bytes()
    assert len(read_results(results)) == 60_000

    child = subprocess.Popen(
        [sys.executable, "-m", "ibimport", "report", str(journal), "--results", str(results)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # Killed as soon as the new results are being written (beside the complete ones).
        while child.poll() is None and not list(tmp_path.glob(".wave.results.csv.*.tmp")):
            time.sleep(0.001)
        killed = child.poll() is None
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait()
    assert killed, "the report finished before it could be killed"
    assert results.read_bytes() == complete
    # What the kill left beside it is no one's: the next report removes it.
    again = invoke("report", journal, "--results", results)
    assert again.exit_code == 0, again.output
    assert results.read_bytes() == complete
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


# ------------------------------------------------------------ item 12: whole waves


@pytest.fixture
def three_shards(tmp_path: Path, emulator: EmulatorServer) -> tuple[Path, list[Path]]:
    manifest = write_csv(tmp_path / "wave.csv", make_tasks(60))
    for k in range(3):
        done = invoke(*run_args(manifest, emulator.url, "--shard", f"{k}/3"))
        assert done.exit_code == 0, done.output
    return manifest, [tmp_path / f"wave.shard-{k}-of-3.journal" for k in range(3)]


def test_every_shard_merges_into_the_whole_wave(three_shards: tuple[Path, list[Path]]) -> None:
    manifest, journals = three_shards
    merged = invoke("report", *journals)
    assert merged.exit_code == 0, merged.output
    report = read_report(manifest.with_name("wave.report.json"))
    assert report["totals"]["rows"] == 60
    assert "partial" not in report


def test_a_missing_shard_is_refused_and_with_partial_reported_as_partial(
    three_shards: tuple[Path, list[Path]],
) -> None:
    manifest, journals = three_shards
    refused = invoke("report", journals[0], journals[2])
    assert refused.exit_code == 2, refused.output
    assert "not a whole wave: missing shard 1/3" in refused.output
    assert "--partial" in refused.output
    assert not manifest.with_name("wave.report.json").exists()
    assert not manifest.with_name("wave.results.csv").exists()

    partial = invoke("report", journals[0], journals[2], "--partial")
    assert partial.exit_code == 1, partial.output
    assert "missing shard 1/3" in partial.output
    report = read_report(manifest.with_name("wave.report.json"))
    assert report["partial"] == {"journals": 2, "missing": ["missing shard 1/3"]}
    assert report["totals"]["rows"] < 60


def test_shards_of_another_count_or_an_unsharded_journal_are_refused(
    three_shards: tuple[Path, list[Path]], emulator: EmulatorServer
) -> None:
    manifest, journals = three_shards
    other = invoke(*run_args(manifest, emulator.url, "--shard", "0/2"))
    assert other.exit_code == 0, other.output
    mixed = invoke("report", *journals, manifest.with_name("wave.shard-0-of-2.journal"))
    assert mixed.exit_code == 2, mixed.output
    assert "shards of different waves (2 shards, 3 shards)" in mixed.output
    assert "missing shard 1/2" in mixed.output

    whole = invoke(*run_args(manifest, emulator.url))
    assert whole.exit_code == 0, whole.output
    beside = invoke("report", manifest.with_name("wave.journal"), *journals)
    assert beside.exit_code == 2, beside.output
    assert "a run of every row (no --shard), merged with other journals" in beside.output

    same = invoke("report", journals[0], journals[0], journals[1], journals[2])
    assert same.exit_code == 2, same.output
    assert "is the same" in same.output  # one file named twice: refused as a path
    copy = journals[0].with_name("copy-of-shard-0.journal")
    shutil.copyfile(journals[0], copy)
    twice = invoke("report", journals[0], copy, journals[1], journals[2])
    assert twice.exit_code == 2, twice.output
    assert "shard 0/3 given 2 times" in twice.output
