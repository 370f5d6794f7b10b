"""The row state machine and resume rules, and the journal's SQL held to them."""

from __future__ import annotations

import itertools
from pathlib import Path

import anyio
import pytest

from ibimport.domain.results import RowResult
from ibimport.domain.rowstate import (
    RerunPlan,
    RowStatus,
    needs_lookup,
    replaces,
    reported_as,
    settled,
)
from ibimport.journal import SqliteJournal

JOURNAL_STATES = [s for s in RowStatus if s is not RowStatus.SKIPPED]


def test_done_means_succeeded_or_exists() -> None:
    assert {s for s in RowStatus if s.is_done} == {RowStatus.SUCCEEDED, RowStatus.EXISTS}


@pytest.mark.parametrize("retry_failed", [True, False])
def test_settled_rows_are_the_done_ones_and_failed_ones_unless_retried(retry_failed: bool) -> None:
    expected = {RowStatus.SUCCEEDED, RowStatus.EXISTS} | (
        set() if retry_failed else {RowStatus.FAILED}
    )
    assert {s for s in RowStatus if settled(s, retry_failed=retry_failed)} == expected


def test_a_lookup_is_needed_only_for_a_sent_row_whose_token_may_be_forgotten() -> None:
    base = {"recorded_token": "t", "token": "t", "now": 1_000.0, "token_ttl_s": 100.0}
    assert not needs_lookup(first_sent_at=None, **base)  # type: ignore[arg-type]
    assert not needs_lookup(first_sent_at=950.0, **base)  # type: ignore[arg-type]
    assert needs_lookup(first_sent_at=850.0, **base)  # type: ignore[arg-type]
    changed = {**base, "token": "other"}
    assert needs_lookup(first_sent_at=999.0, **changed)  # type: ignore[arg-type]


def test_unfinished_rows_are_reported_as_skipped_and_others_as_they_are() -> None:
    assert reported_as(RowStatus.PENDING) is RowStatus.SKIPPED
    assert reported_as(RowStatus.IN_FLIGHT) is RowStatus.SKIPPED
    for state in (RowStatus.SUCCEEDED, RowStatus.EXISTS, RowStatus.FAILED, RowStatus.INVALID):
        assert reported_as(state) is state


def test_the_rerun_plan_counts_what_a_rerun_would_do() -> None:
    counts = {
        RowStatus.SUCCEEDED: 3,
        RowStatus.EXISTS: 2,
        RowStatus.PENDING: 4,
        RowStatus.IN_FLIGHT: 1,
        RowStatus.FAILED: 6,
        RowStatus.INVALID: 9,
    }
    assert RerunPlan.from_counts(counts) == RerunPlan(skip=5, resend=5, retry=6)


async def _journal_with(path: Path, state: RowStatus) -> SqliteJournal:
    journal = SqliteJournal.open(
        path, manifest_path="m.csv", manifest_fingerprint="fp", settings={}
    )
    if state is RowStatus.PENDING:
        journal.record_pending([(1, "web", "1.0.0", "tok")])
    elif state is RowStatus.IN_FLIGHT:
        await journal.mark_in_flight(
            row=1, name="web", semantic_version="1.0.0", client_token="tok", attempt=1
        )
    else:
        journal.record(RowResult(1, "web", "1.0.0", state, client_token="tok"))
    await journal.flush()
    return journal


@pytest.mark.parametrize(
    ("old", "new", "same_token"),
    list(itertools.product(JOURNAL_STATES, list(RowStatus), [True, False])),
)
def test_the_journal_sql_replaces_a_state_exactly_when_rowstate_says(
    tmp_path: Path, old: RowStatus, new: RowStatus, same_token: bool
) -> None:
    token = "tok" if same_token else "other"

    async def main() -> tuple[RowStatus, str]:
        journal = await _journal_with(tmp_path / "j.journal", old)
        journal.record(RowResult(1, "web", "1.0.0", new, client_token=token))
        await journal.flush()
        entry = journal.get("web", "1.0.0")
        await journal.aclose()
        assert entry is not None
        return entry.state, entry.client_token

    expected = (new, token) if replaces(new, old=old, same_token=same_token) else (old, "tok")
    assert anyio.run(main) == expected
