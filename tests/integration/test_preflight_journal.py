"""A new journal gets every valid row ``pending`` in preflight's own pass, before any call."""

from __future__ import annotations

from pathlib import Path

import anyio
from integration_support import expected_tokens, import_requests, make_tasks, write_csv

from ibimport import BatchConfig, ClientSettings, RowStatus, RunSettings, SqliteJournal, open_batch
from ibimport.emulator import EmulatorServer


def _config(manifest: Path, url: str, *, skip_invalid: bool = False) -> BatchConfig:
    return BatchConfig(
        skip_invalid=skip_invalid,
        manifest=manifest,
        run=RunSettings(concurrency=4),
        client=ClientSettings(region="us-east-1", endpoint_url=url),
        journal_path=manifest.with_suffix(".journal"),
        report_path=manifest.with_suffix(".report.json"),
        results_path=manifest.with_suffix(".results.csv"),
    )


def test_preflight_journals_every_valid_row_pending_with_its_token(
    tmp_path: Path, emulator: EmulatorServer
) -> None:
    manifest = write_csv(tmp_path / "wave.csv", make_tasks(30))
    with manifest.open("a", encoding="utf-8") as handle:
        handle.write("broken,1.0,,Linux,,import-ami-1,,,,\n")  # invalid: not journalled
    config = _config(manifest, emulator.url, skip_invalid=True)
    batch = open_batch(config)
    journal = batch.journal
    assert journal is not None
    assert (batch.total_rows, batch.invalid_rows) == (31, 1)
    assert import_requests(emulator.url) == 0
    entries = list(journal.entries())
    assert {e.state for e in entries} == {RowStatus.PENDING}
    assert {(e.name, e.semantic_version): e.client_token for e in entries} == expected_tokens(
        manifest
    )
    assert journal.commits == 1
    journal.close()


def test_a_run_after_preflight_does_not_journal_the_rows_again(
    tmp_path: Path, emulator: EmulatorServer
) -> None:
    manifest = write_csv(tmp_path / "wave.csv", make_tasks(20))
    config = _config(manifest, emulator.url)
    batch = open_batch(config)
    journal = batch.journal
    assert journal is not None
    pending_ops = journal.ops_committed

    async def main() -> None:
        await batch.run()

    anyio.run(main)
    # The run wrote each row's in_flight mark and outcome (and its import stage's start and
    # end), and no second pending pass.
    assert journal.ops_committed == pending_ops + 4 * 20
    reopened = SqliteJournal.open_readonly(manifest.with_suffix(".journal"))
    try:
        assert reopened.counts()[RowStatus.SUCCEEDED] == 20
    finally:
        reopened.close()


def test_a_resumed_run_of_the_same_manifest_does_not_journal_the_rows_again(
    tmp_path: Path, emulator: EmulatorServer
) -> None:
    manifest = write_csv(tmp_path / "wave.csv", make_tasks(20))
    config = _config(manifest, emulator.url)

    async def run_once() -> int:
        batch = open_batch(config)
        journal = batch.journal
        assert journal is not None
        assert batch.changes == ()
        before = journal.ops_committed
        await batch.run()
        return journal.ops_committed - before

    assert anyio.run(run_once) == 4 * 20  # mark, outcome, the import stage's start and end
    # Same bytes, tags and salt: every row is carried over, nothing is written at all.
    assert anyio.run(run_once) == 0
    assert import_requests(emulator.url) == 20
