"""One batch end to end: preflight the manifest, open the journal, run, write the outputs.

This is the library entry point the CLI calls (and benchmarks and tests can call it
too). It wires the parts together; the decisions live in the parts: rules in
``manifest``, tokens in ``tokens``, pacing in ``limiter``, resume in ``journal``,
orchestration in ``runner``, figures in ``report``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ibimport.client import ClientSettings, ImageBuilderClient, open_client
from ibimport.events import RunListener
from ibimport.journal import Journal, ManifestDiff, NullJournal, SqliteJournal
from ibimport.limiter import Clock, MonotonicClock, build_limiter
from ibimport.manifest import (
    ImportTask,
    ManifestFormat,
    ManifestRow,
    manifest_fingerprint,
    read_manifest,
)
from ibimport.report import ResultsWriter, RunStats, write_report
from ibimport.results import RowResult, RowStatus
from ibimport.runner import Runner, RunOutcome, RunSettings
from ibimport.tokens import client_token

#: How many invalid rows preflight keeps to show; the count is always exact.
MAX_SHOWN_INVALID = 1000


@dataclass(frozen=True, kw_only=True)
class LocalEmulator:
    """``--local``: an in-process emulator with throwaway credentials."""

    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    rate: float | None = None
    burst: int | None = None
    fault_rate: float = 0.0
    seed: int | None = None


@dataclass(frozen=True, kw_only=True)
class BatchConfig:
    """Everything one ``ibimport run`` needs, already parsed."""

    manifest: Path
    fmt: ManifestFormat | None = None
    extra_tags: Mapping[str, str] = field(default_factory=dict)
    run: RunSettings = field(default_factory=RunSettings)
    rate: float | None = None
    client: ClientSettings = field(default_factory=ClientSettings)
    local: LocalEmulator | None = None
    journal_path: Path | None = None
    report_path: Path | None = None
    results_path: Path | None = None
    skip_invalid: bool = False
    force: bool = False


@dataclass(slots=True)
class Preflight:
    """What reading the whole manifest once, before any call, found."""

    total_rows: int = 0
    invalid_count: int = 0
    invalid_rows: list[ManifestRow] = field(default_factory=list)
    diff: ManifestDiff | None = None


@dataclass(slots=True)
class BatchResult:
    """How the batch ended, with its figures and where the outputs went."""

    outcome: RunOutcome
    stats: RunStats
    report_path: Path
    results_path: Path
    journal_path: Path | None


def default_output_paths(manifest: Path) -> tuple[Path, Path, Path]:
    """Journal, report and results beside the manifest, named after it."""
    stem = manifest.with_suffix("") if manifest.suffix else manifest
    return (
        stem.with_name(stem.name + ".journal"),
        stem.with_name(stem.name + ".report.json"),
        stem.with_name(stem.name + ".results.csv"),
    )


@contextmanager
def spooled_stdin(fmt: ManifestFormat) -> Iterator[Path]:
    """Copy stdin to a private temp file: a batch reads its manifest twice."""
    suffix = "." + fmt.value
    with tempfile.TemporaryDirectory(prefix="ibimport-") as tmp:
        path = Path(tmp) / ("stdin" + suffix)
        with open(path, "wb") as out:
            shutil.copyfileobj(sys.stdin.buffer, out)
        yield path


def _rows(config: BatchConfig) -> Iterator[ManifestRow]:
    return read_manifest(config.manifest, fmt=config.fmt, extra_tags=config.extra_tags)


def preflight(config: BatchConfig, *, journal: SqliteJournal | None) -> Preflight:
    """Validate every row, and compare with the journal, before a single call is sent."""
    found = Preflight()
    salt = config.run.token_salt

    def valid_tasks() -> Iterator[tuple[int, ImportTask]]:
        for manifest_row in _rows(config):
            found.total_rows += 1
            if manifest_row.task is not None:
                yield manifest_row.row, manifest_row.task
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
            for r in _rows(config)
            if r.task is not None
        )
    return found


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
        },
        sort_keys=True,
    )
    return hashlib.sha256(decided_by.encode()).hexdigest()


def open_journal(config: BatchConfig, journal_path: Path | None) -> SqliteJournal | None:
    """Open (or create) the journal named for this manifest and these settings."""
    if journal_path is None:
        return None
    return SqliteJournal.open(
        journal_path,
        manifest_path=str(config.manifest.resolve()),  # `ibimport report` may run elsewhere
        manifest_fingerprint=batch_fingerprint(config),
        settings=journal_settings(config),
    )


def journal_settings(config: BatchConfig) -> dict[str, str]:
    """The settings a journal's header keeps: the ones that decide tokens."""
    return {"token_salt": config.run.token_salt}


class BatchControl:
    """Lets a signal handler stop a running batch gracefully."""

    def __init__(self) -> None:
        self._runner: Runner | None = None
        self._stop_requested = False

    @property
    def stop_requested(self) -> bool:
        return self._stop_requested

    def request_stop(self) -> None:
        self._stop_requested = True
        if self._runner is not None:
            self._runner.request_stop()

    def _attach(self, runner: Runner) -> None:
        self._runner = runner
        if self._stop_requested:
            runner.request_stop()


@asynccontextmanager
async def _client_for(config: BatchConfig) -> AsyncIterator[ImageBuilderClient]:
    async with AsyncExitStack() as stack:
        settings = config.client
        if config.local is not None:
            from ibimport.emulator import EmulatorConfig, EmulatorServer
            from ibimport.emulator.defaults import LOCAL_ACCESS_KEY_ID, LOCAL_SECRET_ACCESS_KEY

            local = config.local
            server = EmulatorServer(
                EmulatorConfig(
                    latency_ms=local.latency_ms,
                    jitter_ms=local.jitter_ms,
                    rate=local.rate,
                    burst=local.burst,
                    fault_rate=local.fault_rate,
                    seed=local.seed,
                    region=settings.region or "us-east-1",
                )
            )
            stack.enter_context(server)
            settings = ClientSettings(
                region=settings.region or "us-east-1",
                endpoint_url=server.url,
                max_pool_connections=settings.max_pool_connections,
                connect_timeout_s=settings.connect_timeout_s,
                read_timeout_s=settings.read_timeout_s,
                access_key_id=LOCAL_ACCESS_KEY_ID,
                secret_access_key=LOCAL_SECRET_ACCESS_KEY,
            )
        yield await stack.enter_async_context(open_client(settings))


async def execute(
    config: BatchConfig,
    *,
    journal: SqliteJournal | None,
    total_rows: int | None,
    listeners: Sequence[RunListener] = (),
    control: BatchControl | None = None,
    clock: Clock | None = None,
) -> BatchResult:
    """Run the batch and write the report and results, even when interrupted."""
    _, default_report, default_results = default_output_paths(config.manifest)
    report_path = config.report_path or default_report
    results_path = config.results_path or default_results
    clock = clock or MonotonicClock()
    stats = RunStats()
    store: Journal = journal if journal is not None else NullJournal()
    with ResultsWriter(results_path) as results:
        async with _client_for(config) as client:
            runner = Runner(
                client,
                build_limiter(concurrency=config.run.concurrency, rate=config.rate, clock=clock),
                journal=store,
                clock=clock,
                listeners=[stats, results, *listeners],
                settings=config.run,
            )
            if control is not None:
                control._attach(runner)
            try:
                if journal is not None and not journal.pending_recorded:
                    await _journal_every_row(journal, config)
                async with store.running():
                    outcome = await runner.run(_rows(config), total_rows=total_rows)
            finally:
                await store.aclose()
    write_report(report_path, stats.to_report())
    return BatchResult(
        outcome=outcome,
        stats=stats,
        report_path=report_path,
        results_path=results_path,
        journal_path=config.journal_path,
    )


async def _journal_every_row(journal: Journal, config: BatchConfig) -> None:
    """Record every valid row ``pending`` (rows the journal knows keep their state).

    For a journal that preflight did not fill (a resumed one, whose run may now be
    refused or forced): a new journal got its rows in preflight's own pass.

    So the journal holds the whole manifest before the first call: after a kill, the rows
    the run never reached are not mistaken for rows added to the manifest, and
    ``status`` / ``report`` account for every row.
    """
    for count, manifest_row in enumerate(_rows(config), start=1):
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


def exit_code(result: BatchResult) -> int:
    """0 all rows imported or already there, 1 some not, 130 interrupted."""
    if result.outcome.interrupted:
        return 130
    totals = result.stats.totals
    unfinished = sum(count for status, count in totals.items() if not status.is_done)
    return 1 if unfinished or result.outcome.fatal is not None else 0


def secure_umask() -> None:
    """Files we create (journal and its WAL too) are private: they name accounts and images."""
    os.umask(0o077)
