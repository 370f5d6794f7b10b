"""One pipeline per partition, run side by side: the engine of a batch that spans accounts
and Regions (see ``ibimport.engine.partitions`` for why partitions exist).

``open_partitions`` opens the sessions one after another (concurrent credential
resolution is a known aiobotocore race, aio-libs/aiobotocore#1455), each profile once,
and gives the places that reach the same account and Region one client; a place whose
credentials or Region cannot work becomes a partition that fails alone. ``run_fleet``
runs the pipeline the batch composed for each partition, each with its own meters at its
own quota, and tells the shared listeners (statistics, results, progress) one start and
one finish for the batch.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import anyio

from ibimport.aws.client import (
    BuildPage,
    ClientSettings,
    ImageState,
    ImportResult,
    ImportTaskInfo,
    ImportTaskPage,
    PartitionClient,
    QuotaInfo,
    RoleInfo,
    account_of,
    open_client,
    open_session,
)
from ibimport.aws.regions import check_region
from ibimport.domain.results import RowResult
from ibimport.engine.events import BaseListener, CallEvent, RunListener
from ibimport.engine.partitions import Place
from ibimport.engine.pipeline import Pipeline, RunOutcome
from ibimport.errors import CallError, FatalBatchError, IbimportError
from ibimport.flow.clock import Clock
from ibimport.manifest import ManifestRow
from ibimport.report import RunStats
from ibimport.stages.polling import WaitRound

__all__ = [
    "FanOut",
    "Partition",
    "PartitionWork",
    "Unavailable",
    "default_client",
    "open_partitions",
    "run_fleet",
]


@dataclass(slots=True)
class Partition:
    """One account and Region: the manifest places that reach it, its client, its figures."""

    account: str
    region: str
    places: set[int]  # indexes into the batch's RowPlan.places
    client: PartitionClient | None
    failure: FatalBatchError | None = None
    stats: RunStats = field(default_factory=RunStats)
    profile: str | None = None

    @property
    def label(self) -> str:
        return f"{self.account or self.profile or 'default'}/{self.region or '?'}"


@asynccontextmanager
async def default_client(settings: ClientSettings) -> AsyncIterator[PartitionClient]:
    """The default partition's client (a dry run's and ``ibimport wait``'s reads)."""
    async with open_client(settings) as client:
        yield client


async def open_partitions(
    places: Sequence[Place], *, base: ClientSettings, stack: AsyncExitStack
) -> list[Partition]:
    """A partition for every account and Region the places reach.

    One place (a manifest without region or profile columns) keeps today's behaviour: its
    failure to open raises, and no STS call is made. With more, each profile's account is
    asked once (STS GetCallerIdentity), so two profiles of one account share a partition.
    """
    for asked in places:
        if asked.region is not None:  # a manifest's region column: a usage mistake if unknown
            check_region(asked.region, given_as="the manifest's region")
    default = Place(base.profile, base.region)
    if len(places) <= 1:
        place = places[0].resolved(default) if places else default
        settings = replace(base, profile=place.profile, region=place.region)
        session = await open_session(settings)
        client = await stack.enter_async_context(open_client(settings, session=session))
        region = settings.region or str(session.region_name)
        return [Partition("", region, {0}, client, profile=place.profile)]
    sessions: dict[str | None, tuple[Any, str] | FatalBatchError] = {}
    partitions: dict[tuple[str, str], Partition] = {}
    failed: list[Partition] = []
    for index, asked in enumerate(places):
        place = asked.resolved(default)
        settings = replace(base, profile=place.profile, region=place.region)
        opened = sessions.get(place.profile)
        if opened is None:
            opened = sessions[place.profile] = await _session(settings)
        if isinstance(opened, FatalBatchError):
            failed.append(_failed(place, {index}, opened))
            continue
        session, account = opened
        region = place.region or str(session.region_name)
        partition = partitions.get((account, region))
        if partition is not None:
            partition.places.add(index)
            continue
        try:
            client = await stack.enter_async_context(
                open_client(replace(settings, region=region), session=session)
            )
        except FatalBatchError as error:
            failed.append(_failed(place, {index}, error))
            continue
        partitions[account, region] = Partition(
            account, region, {index}, client, profile=place.profile
        )
    return [*partitions.values(), *failed]


async def _session(settings: ClientSettings) -> tuple[Any, str] | FatalBatchError:
    try:
        session = await open_session(settings)
        return session, await account_of(session, settings)
    except FatalBatchError as error:
        return error
    except CallError as error:
        return FatalBatchError(f"cannot tell the account of the credentials: {error}")


def _failed(place: Place, places: set[int], error: FatalBatchError) -> Partition:
    partition = Partition("", place.region or "", places, None, error, profile=place.profile)
    partition.failure = FatalBatchError(f"{place.label}: {error}")
    return partition


@dataclass(slots=True)
class PartitionWork:
    """One partition's pipeline and the rows it reads, as the batch composed them."""

    partition: Partition
    pipeline: Pipeline
    rows: Iterable[ManifestRow]
    #: After a stop, the partition's rows the pipeline never reached (``Pipeline.run``).
    unreached: Callable[[int], Iterable[RowResult]] | None = None
    #: How many rows it holds, as the selection counted them (None: not counted).
    total_rows: int | None = None


async def run_fleet(
    work: Sequence[PartitionWork],
    *,
    clock: Clock,
    listeners: Sequence[RunListener],
    total_rows: int | None,
) -> RunOutcome:
    """Run every partition's pipeline side by side; one outcome for the batch.

    ``listeners`` are the batch's own: told one start (with each partition's rows, when
    counted) and one finish here, and every call and row through ``fan_out`` (which the
    pipelines were given).
    """
    for listener in listeners:
        listener.on_start(total_rows=total_rows)
    if work and all(w.total_rows is not None for w in work):
        shares: dict[tuple[str, str], int] = {}
        for w in work:
            place = (w.partition.account, w.partition.region)
            shares[place] = shares.get(place, 0) + (w.total_rows or 0)
        for listener in listeners:
            listener.on_partitions(shares)
    started = clock.now()
    outcomes: dict[int, RunOutcome] = {}

    async def run_one(i: int) -> None:
        one = work[i]
        outcomes[i] = await one.pipeline.run(
            one.rows, total_rows=None, unreached=one.unreached, stopped_by=one.partition.failure
        )

    async with anyio.create_task_group() as group:
        for i in range(len(work)):
            group.start_soon(run_one, i)
    outcome = _combined([outcomes[i] for i in range(len(work))], [w.partition for w in work])
    outcome.elapsed_s = clock.now() - started
    for listener in listeners:
        listener.on_finish(elapsed_s=outcome.elapsed_s, interrupted=outcome.interrupted)
    return outcome


def _combined(outcomes: Sequence[RunOutcome], partitions: Sequence[Partition]) -> RunOutcome:
    fatal = [(p, o.fatal) for p, o in zip(partitions, outcomes, strict=True) if o.fatal]
    interrupted = any(o.interrupted for o in outcomes)
    if not fatal:
        return RunOutcome(interrupted=interrupted)
    if len(partitions) == 1:
        return RunOutcome(interrupted=interrupted, fatal=fatal[0][1])
    stopped = "; ".join(
        str(error) if str(error).startswith(p.label) else f"{p.label}: {error}"
        for p, error in fatal
    )
    others = len(partitions) - len(fatal)
    return RunOutcome(
        interrupted=interrupted,
        fatal=FatalBatchError(
            f"{len(fatal)} of {len(partitions)} partitions stopped ({stopped}); "
            f"the other {others} ran to the end"
        ),
    )


class FanOut(BaseListener):
    """The batch's own listeners, told each call and row of every partition (their start
    and finish come once, from ``run_fleet``)."""

    def __init__(self, listeners: Sequence[RunListener]) -> None:
        self._listeners = tuple(listeners)

    def on_call(self, event: CallEvent) -> None:
        for listener in self._listeners:
            listener.on_call(event)

    def on_row_done(self, result: RowResult) -> None:
        for listener in self._listeners:
            listener.on_row_done(result)

    def on_wait_round(self, figures: WaitRound) -> None:
        for listener in self._listeners:
            listener.on_wait_round(figures)


class Unavailable:
    """The client of a partition that could not open: never called (its pipeline starts
    stopped), but its stages need one."""

    async def import_vm_image(
        self, params: Mapping[str, Any], *, client_token: str
    ) -> ImportResult:
        raise IbimportError("a partition that failed to open was asked to import")

    async def list_builds(self, *, next_token: str | None) -> BuildPage:
        raise IbimportError("a partition that failed to open was asked to list")

    async def get_image(self, arn: str) -> ImageState:
        raise IbimportError("a partition that failed to open was asked for an image")

    async def describe_import_tasks(
        self,
        task_ids: Sequence[str],
        *,
        next_token: str | None,
        filters: Mapping[str, Sequence[str]] | None = None,
    ) -> ImportTaskPage:
        raise IbimportError("a partition that failed to open was asked for its tasks")

    async def import_image(
        self, params: Mapping[str, Any], *, client_token: str, tags: Mapping[str, str]
    ) -> ImportTaskInfo:
        raise IbimportError("a partition that failed to open was asked to start a task")

    async def cancel_import_task(self, task_id: str) -> str:
        raise IbimportError("a partition that failed to open was asked to cancel a task")

    async def head_object(self, bucket: str, key: str) -> int:
        raise IbimportError("a partition that failed to open was asked for a disk object")

    async def bucket_region(self, bucket: str) -> str:
        raise IbimportError("a partition that failed to open was asked for a bucket")

    async def get_role(self, name: str) -> RoleInfo:
        raise IbimportError("a partition that failed to open was asked for a role")

    async def get_service_quota(self, service_code: str, quota_code: str) -> float:
        raise IbimportError("a partition that failed to open was asked for a quota")

    async def list_service_quotas(self, service_code: str) -> list[QuotaInfo]:
        raise IbimportError("a partition that failed to open was asked for its quotas")
