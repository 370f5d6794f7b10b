"""What a batch would send, row by row, without sending it (``ibimport run --dry-run``).

Reads and validates the manifest as a run would, derives every row's clientToken, and
asks the service read-only (the same complete listing of builds the run's reconcile step
makes, ``ibimport.stages.existing``) which images already exist. No ImportVmImage is sent and
no journal is opened, so nothing is left behind.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from ibimport.domain.tokens import client_token
from ibimport.engine.batch import BatchConfig
from ibimport.engine.fleet import default_client
from ibimport.errors import CallError, FatalBatchError
from ibimport.flow.clock import SystemClock
from ibimport.flow.executor import CallExecutor
from ibimport.flow.limiter import build_limiter
from ibimport.manifest import read_manifest
from ibimport.stages.existing import ExistingImages, Reconciler

__all__ = ["BatchPlan", "PlannedRow", "PlannedStatus", "plan_batch"]


class PlannedStatus(StrEnum):
    """What a run would do with one row."""

    NEW = "new"  # would be sent
    EXISTS = "exists"  # a build of the image exists: would be recorded, not sent
    INVALID = "invalid"  # broke a rule: never sent


@dataclass(frozen=True, slots=True)
class PlannedRow:
    """One manifest row as a run would treat it."""

    row: int
    name: str
    semantic_version: str
    client_token: str
    status: PlannedStatus
    image_arn: str = ""
    errors: tuple[str, ...] = ()


@dataclass(slots=True)
class BatchPlan:
    """Every row of the manifest, and whether existing images were looked up at all."""

    rows: list[PlannedRow] = field(default_factory=list)
    #: False when the config turned reconcile off: every valid row is then ``new``.
    looked_up: bool = False

    def count(self, status: PlannedStatus) -> int:
        return sum(1 for row in self.rows if row.status is status)


async def plan_batch(config: BatchConfig) -> BatchPlan:
    """Read, validate and tokenise every row; list what exists; send nothing.

    A listing that cannot complete raises ``FatalBatchError``: absence is never
    concluded from a failed lookup, so a plan never says ``new`` on a guess.
    """
    plan = BatchPlan()
    salt = config.run.token_salt
    for manifest_row in read_manifest(
        config.manifest, fmt=config.fmt, extra_tags=config.extra_tags
    ):
        task = manifest_row.task
        if task is None:
            plan.rows.append(
                PlannedRow(
                    row=manifest_row.row,
                    name=manifest_row.name,
                    semantic_version=manifest_row.semantic_version,
                    client_token="",
                    status=PlannedStatus.INVALID,
                    errors=tuple(manifest_row.describe()),
                )
            )
            continue
        plan.rows.append(
            PlannedRow(
                row=manifest_row.row,
                name=task.name,
                semantic_version=task.semanticVersion,
                client_token=client_token(task, salt=salt),
                status=PlannedStatus.NEW,
            )
        )
    if not config.reconcile or not any(r.status is PlannedStatus.NEW for r in plan.rows):
        return plan
    existing = await _list_existing(config)
    plan.looked_up = True
    for index, planned in enumerate(plan.rows):
        if planned.status is not PlannedStatus.NEW:
            continue
        arn = existing.arn_for(planned.name, planned.semantic_version)
        if arn is not None:
            plan.rows[index] = PlannedRow(
                row=planned.row,
                name=planned.name,
                semantic_version=planned.semantic_version,
                client_token=planned.client_token,
                status=PlannedStatus.EXISTS,
                image_arn=arn,
            )
    return plan


async def _list_existing(config: BatchConfig) -> ExistingImages:
    clock = SystemClock()
    async with default_client(config.client) as client:
        calls = CallExecutor(
            build_limiter(concurrency=1, rate=config.rate, clock=clock),
            clock=clock,
            policy=config.run.retry_policy(),
            health=config.run.health(),
        )
        reconciler = Reconciler(client, calls, clock=clock)
        try:
            return await reconciler.existing()
        except CallError as error:
            raise FatalBatchError(
                f"could not list the images that already exist ({error.code}: "
                f"{error.message}); nothing was sent"
            ) from None
