"""What a batch learns of its manifest before the first call, and how the run reads it again.

Preflight reads the whole manifest once: every row validated (an invalid manifest is
refused before anything is sent), each row's token digest kept (``rowprints``: the run's
second read is held to it), each row's place planned (``partitions.RowPlan``: which
partition, and whether it is this shard's), new journals filled with every row
``pending``, resumed ones compared row by row. The run then reads each partition's rows
(``partition_rows``); after a stop, the rows it never reached come from the journal
(``unreached``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ibimport.domain import rowstate
from ibimport.domain.results import RowResult, RowStatus
from ibimport.domain.tokens import client_token
from ibimport.engine.fleet import Partition
from ibimport.engine.partitions import Place, RowPlan, place_of
from ibimport.engine.rowprints import RowPrints
from ibimport.journal import ManifestDiff, SqliteJournal
from ibimport.manifest import (
    ImageRequest,
    ManifestRow,
    manifest_fingerprint,
    read_manifest,
)

if TYPE_CHECKING:
    from ibimport.engine.batch import BatchConfig
    from ibimport.engine.fleet import Partition

#: How many invalid rows preflight keeps to show; the count is always exact.
MAX_SHOWN_INVALID = 1000


@dataclass(slots=True)
class Preflight:
    """What reading the whole manifest once, before any call, found."""

    total_rows: int = 0
    invalid_count: int = 0
    invalid_rows: list[ManifestRow] = field(default_factory=list)
    diff: ManifestDiff | None = None
    #: Each row as read, so the run's second read is held to it (``rowprints``).
    prints: RowPrints = field(default_factory=RowPrints)
    #: Each row's place (this shard's rows only), for one read per partition.
    plan: RowPlan = field(default_factory=RowPlan)


def read_rows(
    config: BatchConfig,
    *,
    only: Callable[[int], bool] | None = None,
    duplicates: dict[int, int] | None = None,
) -> Iterator[ManifestRow]:
    return read_manifest(
        config.manifest,
        fmt=config.fmt,
        extra_tags=config.extra_tags,
        only=only,
        duplicates=duplicates,
    )


def _owned_place(config: BatchConfig, manifest_row: ManifestRow) -> Place | None:
    """The place of a row this process imports (None: another shard's row).

    Invalid rows have no place of their own: they are reported with the first partition.
    """
    task, shard = manifest_row.task, config.shard
    if task is None:
        return _NO_PLACE if shard is None or shard.owns_invalid(manifest_row.row) else None
    place = place_of(task)
    return place if shard is None or shard.owns(place, task) else None


#: Where invalid rows are reported: the first partition's runner records them.
_NO_PLACE = Place(None, None)


def preflight(config: BatchConfig, *, journal: SqliteJournal | None) -> Preflight:
    """Validate every row, and compare with the journal, before a single call is sent."""
    found = Preflight()
    salt = config.run.token_salt

    def valid_tasks() -> Iterator[tuple[int, ImageRequest]]:
        for manifest_row in read_rows(config, duplicates=found.plan.duplicates):
            place = _owned_place(config, manifest_row)
            found.plan.add(manifest_row.row, place)
            if place is None:
                continue  # another shard's row
            found.total_rows += 1
            task = manifest_row.task
            found.prints.add(manifest_row.row, client_token(task, salt=salt) if task else None)
            if task is not None:
                yield manifest_row.row, task
                continue
            found.invalid_count += 1
            if len(found.invalid_rows) < MAX_SHOWN_INVALID:
                found.invalid_rows.append(manifest_row)

    if journal is not None and journal.is_new:
        # The same pass journals every valid row pending (what _journal_every_row does for
        # a resumed journal), in one transaction; a run refused after preflight discards
        # the new journal, rows and all.
        journal.record_pending(
            (row, task.name, task.semanticVersion, client_token(task, salt=salt))
            for row, task in valid_tasks()
        )
    else:
        for _ in valid_tasks():
            pass
    if journal is None or journal.is_new or journal.last_update() is None:
        # A journal without rows was never sent under (killed while starting).
        return found
    if journal.header.manifest_fingerprint == batch_fingerprint(config):
        # Written for these very bytes, tags and salt: it holds these very rows and tokens,
        # so there is nothing to compare and no pending row to add.
        journal.pending_recorded = True
    else:
        found.diff = journal.diff(
            (r.row, r.task.name, r.task.semanticVersion, client_token(r.task, salt=salt))
            for r in planned_rows(config, found.plan)
            if r.task is not None
        )
    return found


def planned_rows(config: BatchConfig, plan: RowPlan) -> Iterator[ManifestRow]:
    """Every row of this shard, as preflight planned them."""
    every = frozenset(range(len(plan.places)))
    return read_rows(config, only=plan.rows_in(every), duplicates=plan.duplicates)


def batch_fingerprint(config: BatchConfig) -> str:
    """What decides every row's token: the manifest's bytes, ``--tag``s and ``--token-salt``.

    A journal written under the same fingerprint needs no row-by-row comparison on resume.
    """
    decided_by = json.dumps(
        {
            "manifest": manifest_fingerprint(config.manifest),
            "format": config.fmt.value if config.fmt else None,
            "tags": dict(sorted(config.extra_tags.items())),
            "salt": config.run.token_salt,
            **({"shard": config.shard.label} if config.shard is not None else {}),
        },
        sort_keys=True,
    )
    return hashlib.sha256(decided_by.encode()).hexdigest()


def partition_rows(
    config: BatchConfig, partition: Partition, plan: RowPlan | None, prints: RowPrints | None
) -> Iterator[ManifestRow]:
    """The run's read of one partition's rows, held to what preflight read of them."""
    if plan is None:
        rows = read_rows(config)
        last = None
    else:
        indexes = frozenset(partition.places)
        rows = read_rows(config, only=plan.rows_in(indexes), duplicates=plan.duplicates)
        last = plan.last_row_in(indexes)
    if prints is None:
        return rows
    return prints.checked(rows, salt=config.run.token_salt, last_row=last)


def unreached(
    journal: SqliteJournal, config: BatchConfig, partition: Partition, plan: RowPlan | None
) -> Callable[[int], Iterator[RowResult]]:
    """After a stop, the partition's rows past the last one taken, from the journal (it
    holds them all).

    Rows an earlier run settled are carried over; the rest are ``skipped``. (Invalid rows
    past the stop are not in the journal, so a results file after a stop omits them.)
    """

    belongs = plan.rows_in(frozenset(partition.places)) if plan is not None else None

    def rows_after(last_row: int) -> Iterator[RowResult]:
        for entry in journal.entries(after_row=last_row):
            if entry.row <= last_row or (belongs is not None and not belongs(entry.row)):
                continue  # entries() starts at last_row itself; other partitions' rows
            if rowstate.settled(entry.state, retry_failed=config.run.retry_failed):
                yield entry.to_result(resumed=True)
                continue
            result = entry.to_result()
            result.status = RowStatus.SKIPPED
            result.error_code = result.error_message = ""
            yield result

    return rows_after
