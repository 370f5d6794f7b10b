"""One batch's whole lifecycle: open the journal, preflight, refuse or run, write the outputs.

This is the library entry point the CLI calls (benchmarks and tests call it too), so a
library caller gets the same refusals as a person: ``open_batch`` raises
``InvalidManifest`` or ``ManifestChanged`` before anything is sent, and ``Batch.run`` is
the only way to send. ``rebuild_outputs`` and ``batch_status`` read a journal alone. It
wires the parts together; the decisions live in the parts: rules in ``manifest``, tokens
in ``tokens``, pacing in ``limiter``, states and resume in ``rowstate``, orchestration in
``runner``, figures in ``report``.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Self, cast

import anyio

from ibimport import rowstate
from ibimport._files import check_paths, remove_leftovers
from ibimport.calls import RetriedCalls
from ibimport.client import (
    ClientSettings,
    ImageBuilderClient,
    ImageStatusClient,
    ImportTaskClient,
    open_client,
)
from ibimport.emulator.config import EmulatorConfig
from ibimport.errors import (
    CallError,
    ConfigError,
    FatalBatchError,
    IbimportError,
    InvalidManifest,
    ManifestChanged,
)
from ibimport.events import RunListener
from ibimport.fleet import Partition, open_partitions, run_fleet
from ibimport.importtasks import TaskChecker
from ibimport.journal import Journal, ManifestDiff, NullJournal, SqliteJournal
from ibimport.limiter import Clock, MonotonicClock, build_limiter
from ibimport.manifest import (
    ImportTask,
    ManifestFormat,
    ManifestRow,
    manifest_fingerprint,
    read_manifest,
)
from ibimport.outputs import default_output_paths, rebuild_outputs
from ibimport.partitions import Place, RateSpec, RowPlan, Shard, place_of
from ibimport.reconcile import Reconciler
from ibimport.report import ResultsWriter, RunStats, write_report
from ibimport.results import RowResult, RowStatus
from ibimport.retry import Backoff, Disposition, classify, fatal_message
from ibimport.rowprints import RowPrints
from ibimport.rowstate import ImageStatus
from ibimport.runner import Runner, RunOutcome, RunSettings
from ibimport.taskgate import TaskGate, TaskWait
from ibimport.tokens import client_token
from ibimport.waiter import WaitFigures, WaitSettings, follow_journal

#: How many invalid rows preflight keeps to show; the count is always exact.
MAX_SHOWN_INVALID = 1000


@dataclass(frozen=True, kw_only=True)
class BatchConfig:
    """Everything one ``ibimport run`` needs, already parsed."""

    manifest: Path
    fmt: ManifestFormat | None = None
    extra_tags: Mapping[str, str] = field(default_factory=dict)
    run: RunSettings = field(default_factory=RunSettings)
    #: A told rate for every partition (``rates`` may tell one per Region instead).
    rate: float | None = None
    rates: RateSpec | None = None
    #: This process's share of the manifest (``--shard K/N``); None: every row.
    shard: Shard | None = None
    client: ClientSettings = field(default_factory=ClientSettings)
    #: ``--local``: an in-process emulator (its region defaults to the client's).
    local: EmulatorConfig | None = None
    journal_path: Path | None = None
    report_path: Path | None = None
    results_path: Path | None = None
    skip_invalid: bool = False
    force: bool = False
    #: False: the JSON report is only returned (``BatchResult.report``), not written to a
    #: file (``--report -`` prints it on stdout).
    report_file: bool = True
    #: List what already exists before a batch with a new journal sends anything
    #: (``ibimport.reconcile``); off only for an account known to have no images.
    reconcile: bool = True
    #: ``run --wait``: after the import, follow every imported image to its final state
    #: (``ibimport.waiter``; needs a journal, which records the states).
    wait: WaitSettings | None = None
    #: ``run --preflight``: every row's EC2 import task is checked first (in batches) and
    #: only ready rows are sent; the others are recorded ``blocked`` (``ibimport.taskgate``).
    preflight: bool = False
    #: ``--wait-for-tasks``: with ``preflight``, rows whose task is still converting wait
    #: for it (until ``TaskWait.timeout_s``) and are sent as it completes.
    task_wait: TaskWait | None = None


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


@dataclass(slots=True)
class BatchResult:
    """How the batch ended, with its figures and where the outputs went."""

    outcome: RunOutcome
    stats: RunStats
    #: The JSON report's content, as written to ``report_path`` (unless ``report_file`` is off).
    report: dict[str, Any]
    report_path: Path
    results_path: Path
    journal_path: Path | None
    #: With ``wait``: imported rows by their image's final state, and what the wait cost.
    images: Counter[ImageStatus] = field(default_factory=Counter)
    wait: WaitFigures | None = None
    wait_interrupted: bool = False

    @property
    def all_available(self) -> bool:
        """Every row done and every imported image AVAILABLE (what ``run --wait`` exits 0 on)."""
        others = sum(n for status, n in self.images.items() if status is not ImageStatus.AVAILABLE)
        return self.all_done and not self.wait_interrupted and not others

    @property
    def all_done(self) -> bool:
        """Every row imported or already there, and the batch not stopped."""
        if self.outcome.interrupted or self.outcome.fatal is not None:
            return False
        return all(status.is_done for status, n in self.stats.totals.items() if n)


def _rows(
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


def _preflight(config: BatchConfig, *, journal: SqliteJournal | None) -> Preflight:
    """Validate every row, and compare with the journal, before a single call is sent."""
    found = Preflight()
    salt = config.run.token_salt

    def valid_tasks() -> Iterator[tuple[int, ImportTask]]:
        for manifest_row in _rows(config, duplicates=found.plan.duplicates):
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
            for r in _planned_rows(config, found.plan)
            if r.task is not None
        )
    return found


def _planned_rows(config: BatchConfig, plan: RowPlan) -> Iterator[ManifestRow]:
    """Every row of this shard, as preflight planned them."""
    every = frozenset(range(len(plan.places)))
    return _rows(config, only=plan.rows_in(every), duplicates=plan.duplicates)


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


def _open_journal(
    config: BatchConfig, *, fault_hook: Callable[[int], None] | None
) -> SqliteJournal | None:
    """Open (or create) the journal named for this manifest and these settings."""
    if config.journal_path is None:
        return None
    return SqliteJournal.open(
        config.journal_path,
        manifest_path=str(config.manifest.resolve()),  # `ibimport report` may run elsewhere
        manifest_fingerprint=batch_fingerprint(config),
        settings=_journal_settings(config),
        fault_hook=fault_hook,
    )


def _journal_settings(config: BatchConfig) -> dict[str, str]:
    """What a journal's header keeps of its run: the salt, and where the outputs went.

    ``rebuild_outputs`` writes a journal's report and results where its run wrote them,
    not beside the manifest, where another run's outputs may be.
    """
    report, results = _output_paths(config)
    return {
        "token_salt": config.run.token_salt,
        "report": str(report.resolve()),
        "results": str(results.resolve()),
    }


def _check_paths(config: BatchConfig) -> None:
    """Refuse aliased outputs, folders and missing or read-only folders before any read."""
    report, results = _output_paths(config)
    outputs: dict[str, Path] = {}
    if config.journal_path is not None:
        outputs["--journal"] = config.journal_path
    if config.report_file:
        outputs["--report"] = report
    outputs["--results"] = results
    check_paths(inputs={"the manifest": config.manifest}, outputs=outputs)


def _output_paths(config: BatchConfig) -> tuple[Path, Path]:
    _, default_report, default_results = default_output_paths(config.manifest, shard=config.shard)
    return config.report_path or default_report, config.results_path or default_results


class BatchControl:
    """Lets a signal handler stop a running batch gracefully."""

    def __init__(self) -> None:
        self._runners: list[Runner] = []
        self._stop_requested = False
        self._wait_scope: anyio.CancelScope | None = None

    @property
    def stop_requested(self) -> bool:
        return self._stop_requested

    def request_stop(self) -> None:
        self._stop_requested = True
        for runner in self._runners:  # one per partition
            runner.request_stop()
        if self._wait_scope is not None:  # a wait only reads: it stops at once
            self._wait_scope.cancel()

    def _attach(self, runner: Runner) -> None:
        self._runners.append(runner)
        if self._stop_requested:
            runner.request_stop()


@asynccontextmanager
async def _client_for(config: BatchConfig) -> AsyncIterator[ImageBuilderClient]:
    """The default partition's client (a dry run's lookups)."""
    async with AsyncExitStack() as stack:
        yield await stack.enter_async_context(open_client(await _base_settings(config, stack)))


async def _base_settings(config: BatchConfig, stack: AsyncExitStack) -> ClientSettings:
    """The client settings, pointed at an in-process emulator (started on ``stack``) with
    ``--local``."""
    settings = config.client
    if config.local is None:
        return settings
    from ibimport.emulator import EmulatorServer

    local = replace(config.local, region=settings.region or config.local.region)
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


async def _execute(
    config: BatchConfig,
    *,
    journal: SqliteJournal | None,
    total_rows: int | None,
    listeners: Sequence[RunListener] = (),
    control: BatchControl | None = None,
    clock: Clock | None = None,
    manifest_changed: bool = False,
    prints_plan: Preflight | None = None,
) -> BatchResult:
    """Run the batch and write the report and results, even when interrupted."""
    prints = prints_plan.prints if prints_plan is not None else None
    report_path, results_path = _output_paths(config)
    clock = clock or MonotonicClock()
    waited: tuple[Counter[ImageStatus], WaitFigures, bool] | None = None
    stats = RunStats()
    stats.started_at = clock.wall()
    earlier_runs = journal.runs() if journal is not None else []
    store: Journal = journal if journal is not None else NullJournal()
    plan = prints_plan.plan if prints_plan is not None else None
    with ResultsWriter(results_path) as results:
        async with AsyncExitStack() as stack:
            places = plan.places if plan is not None and plan.places else [Place(None, None)]
            partitions = await open_partitions(
                places, base=await _base_settings(config, stack), stack=stack
            )
            runners: list[Runner] = []
            try:
                if journal is not None and not journal.pending_recorded:
                    await _journal_every_row(journal, config, plan)
                # What the account holds is unknown to a journal that never sent, and to
                # one whose rows changed under --force (a renamed row has no history).
                unknown = journal is None or manifest_changed or not journal.ever_sent()
                gates = (
                    await _task_gates(config, partitions, plan, journal, clock=clock)
                    if config.preflight
                    else {}
                )
                cpu_started = time.process_time()
                async with store.running(), anyio.create_task_group() as polling:
                    for gate in gates.values():
                        polling.start_soon(gate.poll)
                    outcome, runners = await run_fleet(
                        partitions,
                        rows_for=lambda p: _partition_rows(config, p, plan, prints),
                        unreached_for=lambda p: (
                            None if journal is None else _unreached(journal, config, p, plan)
                        ),
                        journal=store,
                        clock=clock,
                        listeners=[stats, results, *listeners],
                        settings=config.run,
                        rate_for=lambda region: _rate(config, region),
                        list_existing=config.reconcile and unknown,
                        total_rows=total_rows,
                        attach=control._attach if control is not None else None,
                        gate_for=lambda p: gates.get(id(p)),
                    )
                    polling.cancel_scope.cancel()
                stats.fatal = str(outcome.fatal) if outcome.fatal is not None else None
                stats.partitions = [_partition_figures(p) for p in partitions]
                if outcome.elapsed_s > 0:  # near 1: the client's CPU, not the quotas, limited
                    cpu_s = time.process_time() - cpu_started
                    stats.client_cpu_share = cpu_s / outcome.elapsed_s
                if journal is not None:  # kept across processes: a re-run's report shows it
                    journal.record_run(started_at=stats.started_at, figures=stats.run_figures())
                stopped = outcome.interrupted or outcome.fatal is not None
                if config.wait is not None and journal is not None and not stopped:
                    waited = await _wait(config, partitions, journal, clock=clock, control=control)
            finally:
                await store.aclose()
                stats.existing = _existing_figures([r.reconciler for r in runners])
    report = stats.to_report(earlier_runs=earlier_runs)
    if config.report_file:
        write_report(report_path, report)
    result = BatchResult(
        outcome=outcome,
        stats=stats,
        report=report,
        report_path=report_path,
        results_path=results_path,
        journal_path=config.journal_path,
    )
    if waited is not None and config.journal_path is not None:
        # The results and report again, from the journal, now with each image's state.
        rebuilt = rebuild_outputs(
            config.journal_path,
            report_path=report_path,
            results_path=results_path,
            report_file=config.report_file,
        )
        result.report = rebuilt.report
        stats.image_totals = rebuilt.stats.image_totals
        result.images, result.wait, result.wait_interrupted = waited
    return result


async def _task_gates(
    config: BatchConfig,
    partitions: Sequence[Partition],
    plan: RowPlan | None,
    journal: SqliteJournal | None,
    *,
    clock: Clock,
) -> dict[int, TaskGate]:
    """``run --preflight``: each partition's tasks looked up (in batches) before it sends.

    Import tasks are regional, so each partition asks its own EC2 about its own rows (not
    those an earlier run settled). A partition whose lookup cannot complete sends nothing:
    it stops with that error, as a failed listing of existing images does.
    """
    settled: set[tuple[str, str]] = set()
    if journal is not None and journal.has_history:
        retry_failed = config.run.retry_failed
        settled = {
            (e.name, e.semantic_version)
            for e in journal.entries()
            if rowstate.settled(e.state, retry_failed=retry_failed)
        }
    gates: dict[int, TaskGate] = {}
    for partition in partitions:
        if partition.client is None or partition.failure is not None:
            continue
        task_ids = [
            r.task.vmImportTaskId
            for r in _partition_rows(config, partition, plan, None)
            if r.task is not None and (r.task.name, r.task.semanticVersion) not in settled
        ]
        # open_client's client speaks EC2 too; runner fakes need not.
        checker = TaskChecker(
            cast(ImportTaskClient, partition.client), _read_calls(config, partition, clock)
        )
        gate = TaskGate(checker, clock=clock, wait=config.task_wait)
        try:
            await gate.check(task_ids)
        except CallError as error:
            partition.failure = FatalBatchError(
                fatal_message(error)
                if classify(error) is Disposition.FATAL
                else f"could not check the import tasks ({error.code}: {error.message}), "
                "so nothing was sent: re-run"
            )
            continue
        gates[id(partition)] = gate
    return gates


def _read_calls(config: BatchConfig, partition: Partition, clock: Clock) -> RetriedCalls:
    """A partition's read-only calls (task checks, image states): their own limiter."""
    return RetriedCalls(
        build_limiter(
            concurrency=config.run.concurrency, rate=_rate(config, partition.region), clock=clock
        ),
        clock=clock,
        backoff=Backoff(base_s=config.run.backoff_base_s, cap_s=config.run.backoff_cap_s),
    )


async def _wait(
    config: BatchConfig,
    partitions: Sequence[Partition],
    journal: SqliteJournal,
    *,
    clock: Clock,
    control: BatchControl | None,
) -> tuple[Counter[ImageStatus], WaitFigures, bool]:
    """``run --wait``: follow each partition's imported images with that partition's client.

    The journal's rows carry the account and Region they were imported into (schema 4);
    with one partition every row is its own.
    """
    assert config.wait is not None
    settings = config.wait
    figures = WaitFigures()
    images: Counter[ImageStatus] = Counter()
    several = len(partitions) > 1

    async def follow(partition: Partition) -> None:
        assert partition.client is not None
        place = (partition.account, partition.region)
        found, cost = await follow_journal(
            # open_client's client is an ImageStatusClient too; runner fakes need not be.
            cast(ImageStatusClient, partition.client),
            journal,
            calls=_read_calls(config, partition, clock),
            clock=clock,
            settings=settings,
            only=(lambda e: (e.account, e.region) == place) if several else None,
        )
        images.update(found)
        figures.rounds += cost.rounds
        figures.list_calls += cost.list_calls
        figures.get_calls += cost.get_calls
        figures.elapsed_s = max(figures.elapsed_s, cost.elapsed_s)
        figures.timed_out = figures.timed_out or cost.timed_out

    with anyio.CancelScope() as scope:
        if control is not None:
            control._wait_scope = scope
            if control.stop_requested:
                scope.cancel()
        async with anyio.create_task_group() as group:
            for partition in partitions:
                if partition.client is not None:
                    group.start_soon(follow, partition)
    return images, figures, scope.cancelled_caught


def _unreached(
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


def _existing_figures(reconcilers: Sequence[Reconciler]) -> dict[str, float] | None:
    """What the listings of existing builds cost, summed over the partitions."""
    listings = [r.listing for r in reconcilers if r.listing is not None]
    if not listings:
        return None
    return {
        "calls": sum(listing.calls for listing in listings),
        "builds": sum(listing.builds for listing in listings),
        "images": sum(len(listing.by_identity) for listing in listings),
        "elapsed_s": round(max(listing.elapsed_s for listing in listings), 3),
    }


def _partition_rows(
    config: BatchConfig, partition: Partition, plan: RowPlan | None, prints: RowPrints | None
) -> Iterator[ManifestRow]:
    """The run's read of one partition's rows, held to what preflight read of them."""
    if plan is None:
        rows = _rows(config)
        last = None
    else:
        indexes = frozenset(partition.places)
        rows = _rows(config, only=plan.rows_in(indexes), duplicates=plan.duplicates)
        last = plan.last_row_in(indexes)
    if prints is None:
        return rows
    return prints.checked(rows, salt=config.run.token_salt, last_row=last)


def _rate(config: BatchConfig, region: str) -> float | None:
    """A partition's told rate: --rate for all or for its Region, shared among shards."""
    rates = config.rates or RateSpec(config.rate)
    return rates.for_region(region, shards=config.shard.count if config.shard else 1)


def _partition_figures(partition: Partition) -> dict[str, Any]:
    figures = partition.stats.partition_figures()
    return {"account": partition.account, "region": partition.region, **figures}


async def _journal_every_row(journal: Journal, config: BatchConfig, plan: RowPlan | None) -> None:
    """Record every valid row ``pending`` (rows the journal knows keep their state).

    For a journal that preflight did not fill (a resumed one, whose run may now be
    refused or forced): a new journal got its rows in preflight's own pass.

    So the journal holds the whole manifest before the first call: after a kill, the rows
    the run never reached are not mistaken for rows added to the manifest, and
    ``status`` / ``report`` account for every row.
    """
    rows = _planned_rows(config, plan) if plan is not None else _rows(config)
    for count, manifest_row in enumerate(rows, start=1):
        task = manifest_row.task
        if task is None:
            continue
        journal.record(
            RowResult(
                row=manifest_row.row,
                name=task.name,
                semantic_version=task.semanticVersion,
                status=RowStatus.PENDING,
                client_token=client_token(task, salt=config.run.token_salt),
            )
        )
        if count % 10_000 == 0:
            await journal.flush()  # bounded memory for big manifests
    await journal.flush()


class Batch:
    """A batch that passed preflight: its journal open, ready to be run once.

    ``changes`` explains how the manifest differs from the journal's when ``--force``
    let the batch go on anyway (empty otherwise), so a caller can show it before running.
    """

    def __init__(
        self, config: BatchConfig, *, journal: SqliteJournal | None, found: Preflight
    ) -> None:
        self.config = config
        self.total_rows = found.total_rows
        self.invalid_rows = found.invalid_count
        self.changes: tuple[str, ...] = tuple(found.diff.describe()) if found.diff else ()
        self._found = found
        self._journal = journal
        self._ran = False

    @property
    def journal(self) -> SqliteJournal | None:
        """The batch's journal (None with ``journal_path=None``), already holding every row."""
        return self._journal

    async def run(
        self,
        *,
        listeners: Sequence[RunListener] = (),
        control: BatchControl | None = None,
        clock: Clock | None = None,
    ) -> BatchResult:
        """Send every row that needs it; write the report and results, even when stopped."""
        if self._ran:
            raise ConfigError("a batch runs once; open it again to resume")
        self._ran = True
        return await _execute(
            self.config,
            journal=self._journal,
            total_rows=self.total_rows,
            listeners=listeners,
            control=control,
            clock=clock,
            manifest_changed=bool(self.changes),
            prints_plan=self._found,
        )

    def close(self) -> None:
        """Release the journal of a batch that will not be run."""
        if self._journal is not None and not self._ran:
            self._journal.close()
            self._ran = True

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def open_batch(config: BatchConfig, *, fault_hook: Callable[[int], None] | None = None) -> Batch:
    """Open the journal and read the whole manifest once; refuse before any call is sent.

    Raises ``InvalidManifest`` (some rows broke a rule and ``skip_invalid`` is off) or
    ``ManifestChanged`` (the journal was written for other rows and ``force`` is off). A
    journal this call created is discarded when the batch is refused; an existing one is
    left as it was. With ``force``, the journal adopts the new manifest from now on.
    ``fault_hook`` reaches the journal's commits, for crash tests (``exit_after_commits``).
    """
    _check_paths(config)
    try:
        journal = _open_journal(config, fault_hook=fault_hook)
    except OSError as error:
        raise ConfigError(f"cannot create {error.filename}: {error.strerror}") from None
    # The journal's lock is held now: what a killed run of this batch left is no one's.
    for path in (config.journal_path, *_output_paths(config)):
        if path is not None:
            remove_leftovers(path)
    try:
        found = _preflight(config, journal=journal)
    except IbimportError:
        if journal is not None:
            journal.discard()
        raise
    if found.invalid_count and not config.skip_invalid:
        if journal is not None:
            journal.discard()
        raise InvalidManifest(
            lines=tuple(line for row in found.invalid_rows for line in row.describe()),
            shown_rows=len(found.invalid_rows),
            invalid_rows=found.invalid_count,
            total_rows=found.total_rows,
        )
    if found.diff is not None and not found.diff.is_empty:
        assert journal is not None  # a diff is only ever made against a journal
        if not config.force:
            journal.close()
            raise ManifestChanged(
                journal=str(config.journal_path), lines=tuple(found.diff.describe())
            )
        journal.update_header(
            manifest_fingerprint=batch_fingerprint(config), settings=_journal_settings(config)
        )
    else:
        found.diff = None
    return Batch(config, journal=journal, found=found)


async def run_batch(
    config: BatchConfig,
    *,
    listeners: Sequence[RunListener] = (),
    control: BatchControl | None = None,
    clock: Clock | None = None,
) -> BatchResult:
    """``open_batch`` then ``Batch.run``: the whole batch in one call."""
    with open_batch(config) as batch:
        return await batch.run(listeners=listeners, control=control, clock=clock)
