"""One runner per partition, run side by side: the engine of a batch that spans accounts
and Regions (see ``ibimport.engine.partitions`` for why partitions exist).

``open_partitions`` opens the sessions one after another (concurrent credential
resolution is a known aiobotocore race, aio-libs/aiobotocore#1455), each profile once,
and gives the places that reach the same account and Region one client; a place whose
credentials or Region cannot work becomes a partition that fails alone. ``run_fleet``
runs a Runner per partition, each with its own limiter at its own quota, and tells the
shared listeners (statistics, results, progress) one start and one finish for the batch.
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
    ImageBuilderClient,
    ImportResult,
    account_of,
    open_client,
    open_session,
)
from ibimport.aws.regions import check_region
from ibimport.domain.results import RowResult
from ibimport.emulator.config import EmulatorConfig
from ibimport.engine.events import BaseListener, CallEvent, RunListener
from ibimport.engine.partitions import Place
from ibimport.engine.runner import RowGate, Runner, RunOutcome, RunSettings
from ibimport.errors import CallError, FatalBatchError, IbimportError
from ibimport.flow.clock import Clock
from ibimport.flow.limiter import build_limiter
from ibimport.journal import Journal
from ibimport.manifest import ManifestRow
from ibimport.report import RunStats

__all__ = ["Partition", "base_settings", "default_client", "open_partitions", "run_fleet"]


@dataclass(slots=True)
class Partition:
    """One account and Region: the manifest places that reach it, its client, its figures."""

    account: str
    region: str
    places: set[int]  # indexes into the batch's RowPlan.places
    client: ImageBuilderClient | None
    failure: FatalBatchError | None = None
    stats: RunStats = field(default_factory=RunStats)
    profile: str | None = None

    @property
    def label(self) -> str:
        return f"{self.account or self.profile or 'default'}/{self.region or '?'}"


@asynccontextmanager
async def default_client(
    settings: ClientSettings, *, local: EmulatorConfig | None
) -> AsyncIterator[ImageBuilderClient]:
    """The default partition's client (a dry run's and ``ibimport wait``'s reads)."""
    async with AsyncExitStack() as stack:
        base = await base_settings(settings, local=local, stack=stack)
        yield await stack.enter_async_context(open_client(base))


async def base_settings(
    settings: ClientSettings, *, local: EmulatorConfig | None, stack: AsyncExitStack
) -> ClientSettings:
    """The client settings, pointed at an in-process emulator (started on ``stack``) with
    ``--local``."""
    if local is None:
        return settings
    from ibimport.emulator import EmulatorServer

    local = replace(local, region=settings.region or local.region)
    server = EmulatorServer(local)
    stack.enter_context(server)
    settings = ClientSettings(
        region=local.region,
        endpoint_url=server.url,
        max_pool_connections=settings.max_pool_connections,
        connect_timeout_s=settings.connect_timeout_s,
        read_timeout_s=settings.read_timeout_s,
        access_key_id=local.access_key_id,
        secret_access_key=local.secret_access_key,
    )
    return settings


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


async def run_fleet(
    partitions: Sequence[Partition],
    *,
    rows_for: Callable[[Partition], Iterable[ManifestRow]],
    unreached_for: Callable[[Partition], Callable[[int], Iterable[RowResult]] | None],
    journal: Journal,
    clock: Clock,
    listeners: Sequence[RunListener],
    settings: RunSettings,
    rate_for: Callable[[str], float | None],
    list_existing: Callable[[Partition], bool],
    belongs_for: Callable[[Partition], Callable[[int], bool] | None],
    total_rows: int | None,
    attach: Callable[[Runner], None] | None = None,
    gate_for: Callable[[Partition], RowGate | None] | None = None,
) -> tuple[RunOutcome, list[Runner]]:
    """Run every partition's rows, side by side; one outcome for the batch."""
    shared = _Shared(listeners)
    for listener in listeners:
        listener.on_start(total_rows=total_rows)
    started = clock.now()
    runners = [
        Runner(
            partition.client or _Unavailable(),
            build_limiter(
                concurrency=settings.concurrency, rate=rate_for(partition.region), clock=clock
            ),
            journal=journal,
            clock=clock,
            listeners=[partition.stats, shared],
            settings=settings,
            origin=(partition.account, partition.region),
            gate=gate_for(partition) if gate_for is not None else None,
        )
        for partition in partitions
    ]
    outcomes: dict[int, RunOutcome] = {}

    async def run_one(i: int) -> None:
        partition = partitions[i]
        outcomes[i] = await runners[i].run(
            rows_for(partition),
            total_rows=None,
            unreached=unreached_for(partition),
            list_existing=partition.failure is None and list_existing(partition),
            belongs=belongs_for(partition),
            stopped_by=partition.failure,
        )

    for runner in runners:
        if attach is not None:
            attach(runner)
    async with anyio.create_task_group() as group:
        for i in range(len(partitions)):
            group.start_soon(run_one, i)
    outcome = _combined([outcomes[i] for i in range(len(partitions))], partitions)
    outcome.elapsed_s = clock.now() - started
    for listener in listeners:
        listener.on_finish(elapsed_s=outcome.elapsed_s, interrupted=outcome.interrupted)
    return outcome, runners


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


class _Shared(BaseListener):
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


class _Unavailable:
    """The client of a partition that could not open: never called (its runner starts
    stopped), but a Runner needs one."""

    async def import_vm_image(
        self, params: Mapping[str, Any], *, client_token: str
    ) -> ImportResult:
        raise IbimportError("a partition that failed to open was asked to import")

    async def list_builds(self, *, next_token: str | None) -> BuildPage:
        raise IbimportError("a partition that failed to open was asked to list")
