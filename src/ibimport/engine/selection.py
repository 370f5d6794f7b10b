"""The one selection pass: which rows, in which partition and shard, before the first call.

Every command that reads a manifest (``run``, ``run --dry-run``, ``preflight``) goes
through it, so none picks its rows for itself. It reads the whole manifest once: every
row validated (an invalid manifest is refused before anything is sent), each row's place
planned (``partitions.RowPlan``: which partition, and whether it is this shard's), each
row's clientToken derived once and its digest kept (``rowprints``: the second read is
held to it). In that same pass a new journal gets every row ``pending`` and a resumed one
whose batch fingerprint differs is compared row by row (``Selection.diff``).

The command then reads each partition's rows again (``partition_rows``: a million-row
manifest streams instead of being held), each row carrying the token the check derived;
after a stop, the rows it never reached come from the journal (``unreached``).
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
from ibimport.engine.partitions import Place, RowPlan, place_of
from ibimport.engine.rowprints import RowPrints
from ibimport.errors import InvalidManifest
from ibimport.journal import ManifestDiff, SqliteJournal
from ibimport.manifest import ManifestRow, manifest_fingerprint, read_manifest

if TYPE_CHECKING:
    from ibimport.engine.fleet import Partition
    from ibimport.engine.settings import BatchConfig

__all__ = [
    "ADOPTED",
    "MAX_SHOWN_INVALID",
    "Selection",
    "batch_fingerprint",
    "partition_rows",
    "planned_rows",
    "read_rows",
    "select_rows",
    "unreached",
]

#: How many invalid rows the selection keeps to show; the count is always exact.
MAX_SHOWN_INVALID = 1000
#: The journal header's mark of a journal that adopted another manifest (``--force``).
ADOPTED = "adopted_under_force"


@dataclass(slots=True)
class Selection:
    """What reading the whole manifest once, before any call, decided."""

    total_rows: int = 0
    invalid_count: int = 0
    invalid_rows: list[ManifestRow] = field(default_factory=list)
    diff: ManifestDiff | None = None
    #: Each row as read, so the second read is held to it (``rowprints``).
    prints: RowPrints = field(default_factory=RowPrints)
    #: Each row's place (this shard's rows only), for one read per partition.
    plan: RowPlan = field(default_factory=RowPlan)
    #: The batch fingerprint (``batch_fingerprint``), hashed once a run; "" without a journal.
    fingerprint: str = ""
    #: The journal was written for these very rows and every one of them is settled (and
    #: none is invalid): the batch has nothing to send, and its results are the journal's.
    settled: bool = False

    def refusal(self) -> InvalidManifest:
        """What refusing this manifest for its invalid rows says (``InvalidManifest``)."""
        return InvalidManifest(
            lines=tuple(line for row in self.invalid_rows for line in row.describe()),
            shown_rows=len(self.invalid_rows),
            invalid_rows=self.invalid_count,
            total_rows=self.total_rows,
        )


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
        import_defaults=config.import_defaults,
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


def select_rows(
    config: BatchConfig, *, journal: SqliteJournal | None = None, fingerprint: str = ""
) -> Selection:
    """Validate, place and tokenise every row, and meet the journal, before a call is sent.

    ``fingerprint``: the batch fingerprint the journal was opened with (hashed once, by
    the caller). A new journal is filled with every valid row ``pending``; a resumed one
    written for another fingerprint is compared row by row (``Selection.diff``); both in
    this same pass, each row's token derived once.
    """
    found = Selection(fingerprint=fingerprint)
    salt = config.run.token_salt

    def valid_rows() -> Iterator[tuple[int, str, str, str]]:
        plan, prints = found.plan, found.prints
        for manifest_row in read_rows(config, duplicates=plan.duplicates):
            place = _owned_place(config, manifest_row)
            plan.add(manifest_row.row, place)
            if place is None:
                continue  # another shard's row
            found.total_rows += 1
            task = manifest_row.task
            if task is None:
                prints.add(manifest_row.row, None)
                found.invalid_count += 1
                if len(found.invalid_rows) < MAX_SHOWN_INVALID:
                    found.invalid_rows.append(manifest_row)
                continue
            token = client_token(task, salt=salt)
            prints.add(manifest_row.row, token)
            yield manifest_row.row, task.name, task.semanticVersion, token

    if journal is None:
        _drain(valid_rows())
    elif journal.is_new:
        # In one transaction; a run refused after the selection discards the new journal,
        # rows and all.
        journal.record_pending(valid_rows())
    elif journal.last_update() is None:
        _drain(valid_rows())  # a journal without rows was never sent under (killed starting)
    elif journal.header.manifest_fingerprint == fingerprint:
        # Written for these very bytes, tags and salt: it holds these very rows and tokens,
        # so there is nothing to compare and no pending row to add.
        _drain(valid_rows())
        journal.pending_recorded = True
        retry_failed = config.run.retry_failed
        counts = journal.counts()
        found.settled = (
            not found.invalid_count
            # rows as the manifest has them: never adopted under --force (which keeps the
            # rows the manifest lost, and known rows' numbers and tokens), none missing
            and not journal.header.settings.get(ADOPTED)
            and sum(counts.values()) == found.total_rows
            and all(
                rowstate.settled(state, retry_failed=retry_failed)
                for state, n in counts.items()
                if n
            )
        )
    else:
        found.diff = journal.diff(valid_rows())
    return found


def _drain(rows: Iterator[object]) -> None:
    for _ in rows:
        pass


def planned_rows(
    config: BatchConfig, plan: RowPlan, prints: RowPrints | None = None
) -> Iterator[ManifestRow]:
    """Every row of this shard, as the selection planned them (held to its read, and each
    valid row carrying its token, when given its ``prints``)."""
    every = frozenset(range(len(plan.places)))
    rows = read_rows(config, only=plan.rows_in(every), duplicates=plan.duplicates)
    return rows if prints is None else prints.checked(rows, salt=config.run.token_salt)


def batch_fingerprint(config: BatchConfig) -> str:
    """What decides every row's token: the manifest's bytes, ``--tag``s and ``--token-salt``.

    A journal written under the same fingerprint needs no row-by-row comparison on resume.
    Hashes the whole manifest: computed once a run (``open_batch``), then carried.
    """
    decided_by = json.dumps(
        {
            "manifest": manifest_fingerprint(config.manifest),
            "format": config.fmt.value if config.fmt else None,
            "tags": dict(sorted(config.extra_tags.items())),
            **(
                {"importDefaults": dict(sorted(config.import_defaults.items()))}
                if config.import_defaults
                else {}
            ),
            "salt": config.run.token_salt,
            **({"shard": config.shard.label} if config.shard is not None else {}),
        },
        sort_keys=True,
    )
    return hashlib.sha256(decided_by.encode()).hexdigest()


def partition_rows(
    config: BatchConfig, partition: Partition, plan: RowPlan | None, prints: RowPrints | None
) -> Iterator[ManifestRow]:
    """The second read of one partition's rows, held to what the selection read of them."""
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
