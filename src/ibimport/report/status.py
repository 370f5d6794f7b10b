"""Where a batch stands, from its journal alone (``ibimport status``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from ibimport.domain.results import RowStatus
from ibimport.domain.rowstate import RerunPlan, reported_counts
from ibimport.journal import SqliteJournal

#: How many invalid rows preflight keeps to show; the count is always exact.


@dataclass(frozen=True, slots=True)
class BatchStatus:
    """Where a batch stands, from its journal alone (``ibimport status``)."""

    manifest_path: str
    updated_at: datetime | None  # local time, with its timezone
    counts: Mapping[RowStatus, int]  # the journal's own states
    errors_by_code: Mapping[str, int]
    rerun: RerunPlan
    #: ``counts`` in the words of the results and the report (unfinished rows ``skipped``).
    reported: Mapping[RowStatus, int] = field(default_factory=dict)


def batch_status(journal_path: Path) -> BatchStatus:
    """Counts per state, failures by code, and what a re-run would do."""
    store = SqliteJournal.open_readonly(journal_path)
    try:
        counts = store.counts()
        last = store.last_update()
        return BatchStatus(
            manifest_path=store.header.manifest_path,
            updated_at=datetime.fromtimestamp(last).astimezone() if last is not None else None,
            counts=counts,
            errors_by_code=store.errors_by_code(),
            rerun=RerunPlan.from_counts(counts),
            reported=reported_counts(counts),
        )
    finally:
        store.close()
