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

import time
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from ibimport._files import check_paths, remove_leftovers
from ibimport.aws.client import PartitionClient
from ibimport.domain.results import RowResult, RowStatus
from ibimport.domain.rowstate import ImageStatus
from ibimport.domain.tokens import client_token
from ibimport.engine.control import BatchControl
from ibimport.engine.events import RunListener
from ibimport.engine.fleet import (
    FanOut,
    Partition,
    PartitionWork,
    Unavailable,
    open_partitions,
    run_fleet,
)
from ibimport.engine.followup import (
    follow_partitions,
    record_partitions,
    settled_rows,
    task_gate_stage,
)
from ibimport.engine.partitions import Place, RowPlan, told_rate
from ibimport.engine.pipeline import Pipeline, RunOutcome, import_pipeline
from ibimport.engine.recorded import RecordedRun, changed_options
from ibimport.engine.selection import (
    ADOPTED,
    Selection,
    batch_fingerprint,
    partition_rows,
    planned_rows,
    read_rows,
    select_rows,
    unreached,
)
from ibimport.engine.settings import BatchConfig
from ibimport.engine.wave import task_start_stage
from ibimport.errors import (
    ConfigError,
    IbimportError,
    ManifestChanged,
)
from ibimport.flow.limiter import Clock, MonotonicClock, build_limiter
from ibimport.journal import Journal, NullJournal, SqliteJournal
from ibimport.report import ResultsWriter, RunStats, write_report
from ibimport.report.documents import RunReport
from ibimport.report.outputs import default_output_paths, journal_results
from ibimport.stages.base import RowStage
from ibimport.stages.existing import ExistingStage, Reconciler, partition_key
from ibimport.stages.imagewait import WaitFigures
from ibimport.stages.taskfollow import MemoryLedger
from ibimport.stages.taskstart import TaskStartStage


@dataclass(slots=True)
class BatchResult:
    """How the batch ended, with its figures and where the outputs went."""

    outcome: RunOutcome
    stats: RunStats
    #: The report, as written to ``report_path`` (unless ``report_file`` is off).
    report: RunReport
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


def _open_journal(
    config: BatchConfig, *, fingerprint: str, fault_hook: Callable[[int], None] | None
) -> SqliteJournal | None:
    """Open (or create) the journal named for this manifest and these settings."""
    if config.journal_path is None:
        return None
    return SqliteJournal.open(
        config.journal_path,
        manifest_path=str(config.manifest.resolve()),  # `ibimport report` may run elsewhere
        manifest_fingerprint=fingerprint,
        settings=_journal_settings(config),
        fault_hook=fault_hook,
    )


def _journal_settings(config: BatchConfig) -> dict[str, str]:
    """What a journal's header keeps of its run: its options (``recorded``), and where the
    outputs went.

    ``rebuild_outputs`` writes a journal's report and results where its run wrote them,
    not beside the manifest, where another run's outputs may be.
    """
    report, results = _output_paths(config)
    return RecordedRun.of(config, report=report, results=results).settings()


def _changed_options(config: BatchConfig, journal: SqliteJournal) -> tuple[tuple[str, ...], str]:
    """The options that differ from the journal's, and the command that resumes with its own."""
    header = journal.header
    recorded = RecordedRun.from_header(header.manifest_path, header.settings)
    report, results = _output_paths(config)
    now = RecordedRun.of(config, report=report, results=results)
    resume = recorded.resume_command(journal.path) if recorded.known else ""
    return tuple(changed_options(recorded, now)), resume


def _check_paths(config: BatchConfig) -> None:
    """Refuse aliased outputs, folders and missing or read-only folders before any read."""
    report, results = _output_paths(config)
    outputs: dict[str, Path] = {}
    if config.report_file:
        outputs["--report"] = report
    outputs["--results"] = results
    stores = {"--journal": config.journal_path} if config.journal_path is not None else {}
    check_paths(inputs={"the manifest": config.manifest}, outputs=outputs, stores=stores)


def _output_paths(config: BatchConfig) -> tuple[Path, Path]:
    _, default_report, default_results = default_output_paths(config.manifest, shard=config.shard)
    return config.report_path or default_report, config.results_path or default_results


async def _execute(
    config: BatchConfig,
    *,
    journal: SqliteJournal | None,
    total_rows: int | None,
    listeners: Sequence[RunListener] = (),
    control: BatchControl | None = None,
    clock: Clock | None = None,
    manifest_changed: bool = False,
    prints_plan: Selection | None = None,
) -> BatchResult:
    """Run the batch and write the report and results once, at the end, even when stopped.

    With ``wait`` the results are the journal's rows joined with what the wait learnt of
    each image, written after it: no row is streamed to the results during the run (the
    journal holds each one durably already), so nothing is written twice.
    """
    prints = prints_plan.prints if prints_plan is not None else None
    report_path, results_path = _output_paths(config)
    clock = clock or MonotonicClock()
    waited: tuple[Counter[ImageStatus], WaitFigures, bool] | None = None
    stats = RunStats()
    stats.started_at = clock.wall()
    earlier_runs = journal.runs() if journal is not None else []
    store: Journal = journal if journal is not None else NullJournal()
    plan = prints_plan.plan if prints_plan is not None else None
    work: list[PartitionWork] = []
    async with AsyncExitStack() as stack:
        places = plan.places if plan is not None and plan.places else [Place(None, None)]
        try:
            partitions = await open_partitions(places, base=config.client, stack=stack)
        except BaseException:
            # A batch that cannot start touches no output: a journal it created goes too.
            if journal is not None:
                journal.discard()
            raise
        # Made before any call, so an unwritable folder fails before any import is sent.
        with ResultsWriter(results_path) as results:
            # --wait: the results come from the journal after the wait (see above).
            deferred = config.wait is not None and journal is not None
            streamed: list[RunListener] = [] if deferred else [results]
            if journal is not None and len(partitions) > 1:
                record_partitions(journal, partitions)  # for `ibimport wait JOURNAL`
            try:
                if journal is not None and not journal.pending_recorded:
                    await _journal_every_row(journal, config, plan)
                fan_out = FanOut([stats, *streamed, *listeners])
                settled = (
                    settled_rows(journal, retry_failed=config.run.retry_failed)
                    if config.preflight and journal is not None
                    else frozenset()
                )
                for partition in partitions:
                    rows_in = (
                        total_rows if plan is None else plan.count_in(frozenset(partition.places))
                    )
                    pipeline = _import_pipeline(
                        config,
                        partition,
                        rows_in=rows_in,
                        plan=plan,
                        journal=store,
                        clock=clock,
                        listeners=[partition.stats, fan_out],
                        list_first=_lists_first(config, partition, journal, manifest_changed),
                        settled=settled,
                    )
                    if control is not None:
                        control.attach(pipeline)
                    work.append(
                        PartitionWork(
                            partition,
                            pipeline,
                            partition_rows(config, partition, plan, prints),
                            None
                            if journal is None
                            else unreached(journal, config, partition, plan),
                            total_rows=rows_in,
                        )
                    )
                cpu_started = time.process_time()
                async with store.running():
                    outcome = await run_fleet(
                        work,
                        clock=clock,
                        listeners=[stats, *streamed, *listeners],
                        total_rows=total_rows,
                    )
                stats.fatal = str(outcome.fatal) if outcome.fatal is not None else None
                stats.partitions = [_partition_figures(p) for p in partitions]
                # Near 1: the client's CPU, not the quotas, limited the run (not measured
                # when the service runs in this process: ``--local``'s emulator).
                if outcome.elapsed_s > 0 and not config.in_process_service:
                    cpu_s = time.process_time() - cpu_started
                    stats.client_cpu_share = cpu_s / outcome.elapsed_s
                if journal is not None:  # kept across processes: a re-run's report shows it
                    journal.record_run(started_at=stats.started_at, figures=stats.run_figures())
                stopped = outcome.interrupted or outcome.fatal is not None
                if config.wait is not None and journal is not None and not stopped:
                    waited = await follow_partitions(
                        config,
                        partitions,
                        journal,
                        settings=config.wait,
                        clock=clock,
                        control=control,
                        listeners=listeners,
                    )
            finally:
                await store.aclose()
                stats.tasks = [
                    {"account": w.partition.account, "region": w.partition.region, **figures}
                    for w in work
                    for s in w.pipeline.stages
                    if isinstance(s, TaskStartStage)
                    and ((figures := s.figures())["started"] or figures["adopted"])
                ]
                stats.existing = _existing_figures(
                    [
                        s.reconciler
                        for w in work
                        for s in w.pipeline.stages
                        if isinstance(s, ExistingStage)
                    ]
                )
                if deferred:
                    assert config.journal_path is not None
                    stats.image_totals = _results_from_journal(config.journal_path, results)
    report = stats.to_report(earlier_runs=earlier_runs)
    if config.report_file:
        write_report(report_path, report.to_json())
    result = BatchResult(
        outcome=outcome,
        stats=stats,
        report=report,
        report_path=report_path,
        results_path=results_path,
        journal_path=config.journal_path,
    )
    if waited is not None:
        result.images, result.wait, result.wait_interrupted = waited
    return result


def _results_from_journal(journal_path: Path, results: ResultsWriter) -> Counter[str]:
    """The journal's rows, with their images' states, into ``results``; the images by state."""
    store = SqliteJournal.open_readonly(journal_path)
    try:
        return journal_results([store], results).image_totals
    finally:
        store.close()


def _lists_first(
    config: BatchConfig,
    partition: Partition,
    journal: SqliteJournal | None,
    manifest_changed: bool,
) -> bool:
    """Whether a partition lists its builds before its first import.

    What a partition holds is unknown to a journal that never committed a complete listing
    of it (a fresh batch, or one stopped before its listing landed), and to one whose rows
    changed under ``--force`` (a renamed row has no history).
    """
    if not config.reconcile:
        return False
    if journal is None or manifest_changed:
        return True
    return not journal.reconciled(partition_key(partition.account, partition.region))


def _import_pipeline(
    config: BatchConfig,
    partition: Partition,
    *,
    rows_in: int | None,
    plan: RowPlan | None,
    journal: Journal,
    clock: Clock,
    listeners: Sequence[RunListener],
    list_first: bool,
    settled: frozenset[tuple[str, str]],
) -> Pipeline:
    """``run``'s composition for one partition: the task gate (``--preflight``: before
    any task is started), the task start (rows with disks), the existing images, the
    import."""
    client: PartitionClient = partition.client or Unavailable()
    health = config.run.health()
    before: list[RowStage] = []
    if config.preflight and partition.client is not None and partition.failure is None:
        before.append(
            task_gate_stage(
                config, partition, plan, settled, clock=clock, health=health, listeners=listeners
            )
        )
    before.append(
        task_start_stage(
            client,
            config.tasks,
            region=partition.region,
            ledger=journal if isinstance(journal, SqliteJournal) else MemoryLedger(),
            clock=clock,
            settings=config.run,
            health=health,
            listeners=listeners,
            partition=partition.label,
            total_rows=rows_in,
        )
    )
    return import_pipeline(
        client,
        build_limiter(
            concurrency=config.run.concurrency,
            rate=told_rate(
                partition.region, rates=config.rates, rate=config.rate, shard=config.shard
            ),
            clock=clock,
        ),
        journal=journal,
        clock=clock,
        listeners=listeners,
        settings=config.run,
        origin=(partition.account, partition.region),
        before=before,
        list_first=list_first,
        belongs=plan.rows_in(frozenset(partition.places))
        if plan is not None and plan.places
        else None,
        health=health,
    )


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
    rows = planned_rows(config, plan) if plan is not None else read_rows(config)
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


async def _carry_over(
    config: BatchConfig,
    journal: SqliteJournal,
    *,
    total_rows: int,
    listeners: Sequence[RunListener],
    clock: Clock,
) -> BatchResult:
    """A resume with nothing to send (``Selection.settled``): every row carried over from
    the journal, in row order, into the results and the report; no partition is opened.

    The journal holds these very rows (same fingerprint), so the manifest is not read a
    second time, and no row is asked of the journal one by one.
    """
    report_path, results_path = _output_paths(config)
    stats = RunStats()
    stats.started_at = clock.wall()
    started = clock.now()
    earlier_runs = journal.runs()
    try:
        with ResultsWriter(results_path) as results:
            told = [stats, results, *listeners]
            for listener in told:
                listener.on_start(total_rows=total_rows)
            for entry in journal.entries():
                result = entry.to_result(resumed=True)
                for listener in told:
                    listener.on_row_done(result)
            elapsed = clock.now() - started
            for listener in told:
                listener.on_finish(elapsed_s=elapsed, interrupted=False)
        journal.record_run(started_at=stats.started_at, figures=stats.run_figures())
    finally:
        await journal.aclose()
    report = stats.to_report(earlier_runs=earlier_runs)
    if config.report_file:
        write_report(report_path, report.to_json())
    return BatchResult(
        outcome=RunOutcome(elapsed_s=elapsed),
        stats=stats,
        report=report,
        report_path=report_path,
        results_path=results_path,
        journal_path=config.journal_path,
    )


class Batch:
    """A batch that passed preflight: its journal open, ready to be run once.

    ``changes`` explains how the manifest differs from the journal's when ``--force``
    let the batch go on anyway (empty otherwise), so a caller can show it before running.
    """

    def __init__(
        self, config: BatchConfig, *, journal: SqliteJournal | None, found: Selection
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
        if self._found.settled and self._journal is not None and self.config.wait is None:
            return await _carry_over(
                self.config,
                self._journal,
                total_rows=self.total_rows,
                listeners=listeners,
                clock=clock or MonotonicClock(),
            )
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
    """Check every path, open the journal, make the selection pass; refuse before any call.

    Raises ``ConfigError`` (a path that cannot be used), ``InvalidManifest`` (some rows
    broke a rule and ``skip_invalid`` is off) or ``ManifestChanged`` (the journal was
    written for other rows and ``force`` is off). A journal this call created is discarded
    when the batch is refused; an existing one is left as it was. With ``force``, the
    journal adopts the new manifest from now on. The manifest is hashed once.
    ``fault_hook`` reaches the journal's commits, for crash tests (``exit_after_commits``).
    """
    _check_paths(config)
    fingerprint = batch_fingerprint(config) if config.journal_path is not None else ""
    try:
        journal = _open_journal(config, fingerprint=fingerprint, fault_hook=fault_hook)
    except OSError as error:
        raise ConfigError(f"cannot create {error.filename}: {error.strerror}") from None
    # The journal's lock is held now: what a killed run of this batch left is no one's.
    for path in (config.journal_path, *_output_paths(config)):
        if path is not None:
            remove_leftovers(path)
    try:
        found = select_rows(config, journal=journal, fingerprint=fingerprint)
    except IbimportError:
        if journal is not None:
            journal.discard()
        raise
    if found.invalid_count and not config.skip_invalid:
        if journal is not None:
            journal.discard()
        raise found.refusal()
    if found.diff is not None and not found.diff.is_empty:
        assert journal is not None  # a diff is only ever made against a journal
        if not config.force:
            options, resume = _changed_options(config, journal)
            journal.close()
            raise ManifestChanged(
                journal=str(config.journal_path),
                lines=tuple(found.diff.describe()),
                options=options,
                resume=resume,
            )
        journal.update_header(
            manifest_fingerprint=fingerprint, settings={**_journal_settings(config), ADOPTED: True}
        )
        # The changed rows are new requests now: sent under their new tokens (issue 22 5).
        journal.adopt_tokens(
            (r.row, r.task.name, r.task.semanticVersion, r.client_token)
            for r in planned_rows(config, found.plan, found.prints)
            if r.task is not None and r.client_token is not None
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
