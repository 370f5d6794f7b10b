"""What a batch would send, row by row, without sending it (``ibimport run --dry-run``).

The same selection pass as a run (``selection``): every row validated, placed in its
partition and shard, its clientToken derived; then each partition is asked read-only
(the complete listing of builds the run's reconcile step makes, ``stages.existing``)
which images already exist, with that partition's own client. No ImportVmImage is sent
and no journal is opened, so nothing is left behind. The rows are handed out as a stream
(a second read held to the first), so a million-row dry run holds no million rows.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field

from ibimport.engine.fleet import Partition, open_partitions
from ibimport.engine.partitions import Place
from ibimport.engine.selection import Selection, planned_rows, select_rows
from ibimport.engine.settings import BatchConfig
from ibimport.errors import CallError, FatalBatchError
from ibimport.flow.clock import SystemClock
from ibimport.flow.executor import CallExecutor
from ibimport.flow.limiter import build_limiter
from ibimport.flow.retry import Disposition, classify, fatal_message
from ibimport.report.documents import DryRunDocument, PlannedRow, PlannedStatus
from ibimport.stages.existing import ExistingImages, Reconciler

__all__ = ["BatchPlan", "plan_batch"]


@dataclass(slots=True)
class BatchPlan:
    """The dry run of a batch: its rows, streamed by ``rows()``, and their counts.

    ``totals`` is complete once ``rows()`` has been read to its end (the rows are not
    kept); ``selection`` already has the row count and the invalid rows.
    """

    config: BatchConfig
    selection: Selection
    #: False when the config turned reconcile off (or nothing was valid): every valid row
    #: is then ``new``.
    looked_up: bool = False
    #: The listing of each place's partition, by the place's index in the selection's plan.
    existing: Mapping[int, ExistingImages] = field(default_factory=dict)
    totals: Counter[PlannedStatus] = field(default_factory=Counter)

    def count(self, status: PlannedStatus) -> int:
        return self.totals[status]

    def document(self) -> DryRunDocument:
        """The dry run's output document, its rows streamed from ``rows()`` (read once)."""
        return DryRunDocument(looked_up=self.looked_up, rows=self.rows(), totals=self.totals)

    def rows(self) -> Iterator[PlannedRow]:
        """Every row of this shard in manifest order, as a run would treat it."""
        plan = self.selection.plan
        for manifest_row in planned_rows(self.config, plan, self.selection.prints):
            task = manifest_row.task
            if task is None:
                planned = PlannedRow(
                    row=manifest_row.row,
                    name=manifest_row.name,
                    semantic_version=manifest_row.semantic_version,
                    client_token="",
                    status=PlannedStatus.INVALID,
                    errors=tuple(manifest_row.describe()),
                )
            else:
                index = plan.place_index_of(manifest_row.row)
                listing = self.existing.get(index) if index is not None else None
                arn = listing.arn_for(task.name, task.semanticVersion) if listing else None
                planned = PlannedRow(
                    row=manifest_row.row,
                    name=task.name,
                    semantic_version=task.semanticVersion,
                    client_token=manifest_row.client_token,
                    status=PlannedStatus.NEW if arn is None else PlannedStatus.EXISTS,
                    image_arn=arn or "",
                )
            self.totals[planned.status] += 1
            yield planned


async def plan_batch(config: BatchConfig) -> BatchPlan:
    """Select the rows (validated, placed, tokenised) and list what exists; send nothing.

    A listing that cannot complete raises ``FatalBatchError``: absence is never
    concluded from a failed lookup, so a plan never says ``new`` on a guess.
    """
    selection = select_rows(config)
    plan = BatchPlan(config, selection)
    valid = selection.total_rows - selection.invalid_count
    if not config.reconcile or not valid:
        return plan
    plan.existing = await _list_existing(config, selection)
    plan.looked_up = True
    return plan


async def _list_existing(config: BatchConfig, selection: Selection) -> dict[int, ExistingImages]:
    """Each partition's listing, for every place that reaches it."""
    places = selection.plan.places or [Place(None, None)]
    found: dict[int, ExistingImages] = {}
    async with AsyncExitStack() as stack:
        partitions = await open_partitions(places, base=config.client, stack=stack)
        for partition in partitions:
            listing = await _listing(config, partition)
            for index in partition.places:
                found[index] = listing
    return found


async def _listing(config: BatchConfig, partition: Partition) -> ExistingImages:
    if partition.failure is not None or partition.client is None:
        raise FatalBatchError(f"{partition.failure}; nothing was sent")
    clock = SystemClock()
    calls = CallExecutor(
        build_limiter(concurrency=1, rate=config.rate, clock=clock),
        clock=clock,
        policy=config.run.retry_policy(),
        health=config.run.health(),
    )
    reconciler = Reconciler(partition.client, calls, clock=clock)
    try:
        return await reconciler.existing()
    except CallError as error:
        if classify(error) is Disposition.FATAL:
            raise FatalBatchError(fatal_message(error)) from None
        raise FatalBatchError(
            f"could not list the images that already exist ({error.code}: "
            f"{error.message}); nothing was sent"
        ) from None
