"""The selection pass and the rules around it, without a service: tokens derived once a
pass, the manifest hashed once a run, option rules in the library, paths that cannot hang."""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ibimport import (
    BatchConfig,
    ConfigError,
    RunSettings,
    Shard,
    SqliteJournal,
    WaitSettings,
    client_token,
    open_batch,
)
from ibimport._files import check_paths, open_through
from ibimport.engine import rowprints, selection
from ibimport.engine.partitions import Place, RowPlan
from ibimport.errors import OutputError
from ibimport.stages.taskgate import TaskWait


def _manifest(path: Path, n: int) -> Path:
    lines = ["name,semanticVersion,platform,vmImportTaskId"]
    lines += [f"vm-{i:03d},1.0.{i},Linux,import-ami-{i:017d}" for i in range(n)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _counting(monkeypatch: pytest.MonkeyPatch, module: Any, name: str) -> list[int]:
    calls: list[int] = []
    real: Callable[..., Any] = getattr(module, name)

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)
    return calls


def test_each_pass_derives_each_rows_token_once_and_hands_it_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = BatchConfig(manifest=_manifest(tmp_path / "m.csv", 10))
    first = _counting(monkeypatch, selection, "client_token")
    second = _counting(monkeypatch, rowprints, "client_token")

    found = selection.select_rows(config)
    assert (len(first), found.total_rows) == (10, 10)

    rows = list(selection.planned_rows(config, found.plan, found.prints))
    assert len(second) == 10
    assert all(r.task is not None for r in rows)
    assert [r.client_token for r in rows] == [client_token(r.task) for r in rows if r.task]


def test_a_run_hashes_its_manifest_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = _manifest(tmp_path / "m.csv", 5)
    config = BatchConfig(manifest=manifest, journal_path=tmp_path / "m.journal")
    hashed = _counting(monkeypatch, selection, "manifest_fingerprint")
    for expected in (1, 2):  # a fresh journal, then a resume of it
        with open_batch(config):
            pass
        assert len(hashed) == expected


@pytest.mark.parametrize(
    ("states", "retry_failed", "settled"),
    [
        ("succeeded", True, True),
        ("pending", True, False),
        ("failed", True, False),
        ("failed", False, True),
    ],
)
def test_a_journal_whose_rows_are_all_settled_leaves_nothing_to_send(
    tmp_path: Path, states: str, retry_failed: bool, settled: bool
) -> None:
    manifest = _manifest(tmp_path / "m.csv", 3)
    journal = tmp_path / "m.journal"
    config = BatchConfig(
        manifest=manifest, journal_path=journal, run=RunSettings(retry_failed=retry_failed)
    )
    with open_batch(config):  # a fresh journal: every row pending
        pass
    with sqlite3.connect(journal) as conn:
        conn.execute("UPDATE rows SET state = 'succeeded'")
        conn.execute("UPDATE rows SET state = ? WHERE row = 2", (states,))
    fingerprint = selection.batch_fingerprint(config)
    store = SqliteJournal.open(
        journal, manifest_path=str(manifest), manifest_fingerprint=fingerprint, settings={}
    )
    try:
        found = selection.select_rows(config, journal=store, fingerprint=fingerprint)
    finally:
        store.close()
    assert found.settled is settled


@pytest.mark.parametrize(
    ("knobs", "says"),
    [
        ({"wait": WaitSettings(), "journal_path": None}, "--wait needs the journal"),
        ({"task_wait": TaskWait(timeout_s=1.0), "preflight": False}, "needs --preflight"),
        ({"rate": 0.0}, "the rate must be above 0"),
    ],
)
def test_the_option_rules_hold_for_a_library_caller(
    tmp_path: Path, knobs: dict[str, Any], says: str
) -> None:
    with pytest.raises(ConfigError, match=says):
        BatchConfig(manifest=tmp_path / "m.csv", **knobs)


@pytest.mark.parametrize("value", ["²", "٣", "1.5", "-1", ""])
def test_a_shard_index_must_be_ascii_digits(value: str) -> None:
    with pytest.raises(ConfigError, match="is not a shard index"):
        Shard.from_environment(4, {"JOB_COMPLETION_INDEX": value})
    assert Shard.from_environment(4, {"JOB_COMPLETION_INDEX": " 3 "}) == Shard(3, 4)


def test_a_rows_place_is_found_by_its_number() -> None:
    plan = RowPlan()
    here, there = Place(None, "us-east-1"), Place(None, "eu-west-1")
    plan.add(1, here)
    plan.add(2, None)
    plan.add(4, there)
    assert [plan.place_index_of(row) for row in range(6)] == [None, 0, None, None, 1, None]


def test_a_fifo_journal_is_refused_for_what_it_is(tmp_path: Path) -> None:
    fifo = tmp_path / "j.fifo"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="is a FIFO; a journal is a file"):
        check_paths(inputs={}, outputs={}, stores={"--journal": fifo})


def test_a_fifo_nobody_reads_is_given_up_on_not_waited_for(tmp_path: Path) -> None:
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    started = time.monotonic()
    with pytest.raises(OutputError, match="a FIFO nobody reads"):
        open_through(fifo, reader_wait_s=0.2)
    assert time.monotonic() - started < 30  # bounded (the wait is 0.2 s), never forever


def test_a_fifo_with_a_reader_gets_every_byte(tmp_path: Path) -> None:
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        with open_through(fifo) as through:
            through.write(b"row,name\n1,vm\n")
        assert os.read(reader, 100) == b"row,name\n1,vm\n"
    finally:
        os.close(reader)


def test_a_journal_adopted_under_force_never_takes_the_settled_shortcut(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path / "m.csv", 4)
    journal = tmp_path / "m.journal"
    config = BatchConfig(manifest=manifest, journal_path=journal, force=True)
    with open_batch(config):
        pass
    with sqlite3.connect(journal) as conn:
        conn.execute("UPDATE rows SET state = 'succeeded'")
    _manifest(manifest, 3)  # a row removed: the journal keeps it
    with open_batch(config) as batch:
        assert batch.changes  # adopted under --force
    fingerprint = selection.batch_fingerprint(config)
    store = SqliteJournal.open(
        journal, manifest_path=str(manifest), manifest_fingerprint=fingerprint, settings={}
    )
    try:
        found = selection.select_rows(config, journal=store, fingerprint=fingerprint)
    finally:
        store.close()
    assert not found.settled  # its rows are not the manifest's: the run reads them
