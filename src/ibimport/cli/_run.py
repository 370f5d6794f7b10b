"""``ibimport run``: the batch from the command line, its signals, progress and dry run."""

from __future__ import annotations

import gc
import os
import shutil
import signal
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Annotated

import anyio
import typer
from rich.console import Console
from rich.markup import escape

from ibimport import (
    BatchConfig,
    BatchControl,
    BatchPlan,
    BatchRefused,
    ClientSettings,
    ConfigError,
    IbimportError,
    InvalidManifest,
    ManifestChanged,
    ManifestFormat,
    PlannedStatus,
    RowResult,
    RunSettings,
    RunStats,
    Shard,
    SourceKind,
    TaskFollowSettings,
    TaskWave,
    batch_status,
    check_paths,
    default_output_paths,
    detect_format,
    open_batch,
    parse_import_options,
    parse_rates,
    parse_task_slots,
    plan_batch,
    recorded_run,
    source_kind,
    spooled_stdin,
)
from ibimport.cli._common import (
    EXIT_CODES_HELP,
    EXIT_FAILED,
    EXIT_FATAL,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    EndpointOpt,
    FormatOpt,
    ImportOptionOpt,
    JsonOpt,
    ManifestArg,
    ProfileOpt,
    ProgressOpt,
    RegionOpt,
    TagOpt,
    TaskSlotsOpt,
    _count,
    _exit_code,
    _fail,
    _output_path,
    _print_invalid,
    _print_json,
    _refuse_stdout_under_json,
    _secure_umask,
    _tags,
    app,
    err,
    out,
)
from ibimport.cli._help import duration_option, panels, parse_duration
from ibimport.cli._journals import (
    FailedManifestOpt,
    HtmlOpt,
    wave_outputs_paths,
    write_wave_outputs,
)
from ibimport.cli._wait import (
    PollIntervalOpt,
    WaitTimeoutOpt,
    check_aws_options,
    image_summary,
    task_wait_settings,
    wait_settings,
)
from ibimport.cli.progress import ProgressListener, ProgressMode
from ibimport.cli.rendering import next_steps, summary_table
from ibimport.emulator import EmulatorConfig, EmulatorServer
from ibimport.emulator.cli import local_emulator_options

_GC_THRESHOLD = 20_000  # allocations between young collections (Python's default: 700)


panels(
    "run",
    {
        "Manifest": (
            "manifest",
            "fmt",
            "tag",
            "skip_invalid",
            "shard",
            "shard_count",
            "token_salt",
            "dry_run",
            "max_stdin_mib",
        ),
        "AWS": ("region", "profile", "endpoint_url", "read_timeout"),
        "Pacing": ("concurrency", "rate", "max_attempts"),
        "Journal and outputs": (
            "journal",
            "no_journal",
            "report",
            "results",
            "as_json",
            "progress",
            "no_progress",
            "force",
            "no_retry_failed",
            "retry_failed_images",
            "no_reconcile",
            "token_ttl",
        ),
        "Disk images (EC2 import tasks)": (
            "task_slots",
            "after_task",
            "stall_timeout",
            "import_option",
        ),
        "Preflight and wait": (
            "preflight",
            "wait_for_tasks",
            "task_timeout",
            "wait",
            "wait_timeout",
            "poll_interval",
        ),
        "Emulator (--local)": ("local",),
    },
    emulator="Emulator (--local)",
)


@app.command(epilog=EXIT_CODES_HELP)
@local_emulator_options
def run(
    manifest: ManifestArg,
    fmt: FormatOpt = None,
    tag: TagOpt = None,
    concurrency: Annotated[
        int, typer.Option(min=1, max=4096, metavar="N", help="Calls in flight at most.")
    ] = 16,
    rate: Annotated[
        list[str] | None,
        typer.Option(
            metavar="[REGION=]R",
            help="Known quota R calls/s, for all or a Region (repeatable); else adaptive.",
        ),
    ] = None,
    shard: Annotated[
        str | None,
        typer.Option(
            metavar="K/N",
            help="Import only shard K of N (0-based), with its own journal.",
        ),
    ] = None,
    shard_count: Annotated[
        int | None,
        typer.Option(
            min=1,
            metavar="N",
            help="--shard K/N, K from JOB_COMPLETION_INDEX/AWS_BATCH_JOB_ARRAY_INDEX.",
        ),
    ] = None,
    max_attempts: Annotated[
        int, typer.Option(min=1, max=100, metavar="N", help="Attempts per row.")
    ] = 8,
    token_salt: Annotated[
        str,
        typer.Option(
            metavar="TEXT", help="Start a new generation of clientTokens (re-imports everything)."
        ),
    ] = "",
    token_ttl: Annotated[
        str,
        typer.Option(
            metavar="DURATION",
            callback=duration_option,
            help="How long a clientToken is trusted; older rows are looked up first.",
        ),
    ] = "8h",
    skip_invalid: Annotated[
        bool,
        typer.Option(
            "--skip-invalid", help="Import the valid rows and record the others as invalid."
        ),
    ] = False,
    no_retry_failed: Annotated[
        bool,
        typer.Option(
            "--no-retry-failed",
            help="On resume, leave rows that failed in an earlier run failed (else retried).",
        ),
    ] = False,
    retry_failed_images: Annotated[
        bool,
        typer.Option(
            "--retry-failed-images",
            help="Import again the rows whose image a wait found FAILED, CANCELLED or "
            "DELETED: a new build beside the failed one.",
        ),
    ] = False,
    force: Annotated[
        bool,
        typer.Option("--force", help="Proceed although the manifest changed since the journal."),
    ] = False,
    no_reconcile: Annotated[
        bool,
        typer.Option(
            "--no-reconcile",
            help="Do not list the images that already exist before a fresh run (only for an "
            "account known to have none: an image imported earlier would get a second build).",
        ),
    ] = False,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Print what would be sent, row by row (new or exists); send nothing, "
            "write no journal.",
        ),
    ] = False,
    journal: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE", parser=_output_path, help="Journal file (default beside the manifest)."
        ),
    ] = None,
    no_journal: Annotated[
        bool, typer.Option("--no-journal", help="Run without a journal (no resume).")
    ] = False,
    report: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE", parser=_output_path, help="JSON report path; - writes it to stdout."
        ),
    ] = None,
    results: Annotated[
        Path | None,
        typer.Option(metavar="FILE", parser=_output_path, help="Per-row results CSV path."),
    ] = None,
    html: HtmlOpt = None,
    failed_manifest: FailedManifestOpt = None,
    as_json: JsonOpt = False,
    region: RegionOpt = None,
    profile: ProfileOpt = None,
    endpoint_url: EndpointOpt = None,
    read_timeout: Annotated[
        str,
        typer.Option(
            metavar="DURATION",
            callback=duration_option,
            help="How long to wait for an answer before retrying the call.",
        ),
    ] = "60s",
    local: Annotated[
        bool,
        typer.Option(
            "--local", help="Run against an in-process emulator with throwaway credentials."
        ),
    ] = False,
    emulator: EmulatorConfig | None = None,  # --emulator-* (local_emulator_options)
    progress: ProgressOpt = ProgressMode.AUTO,
    no_progress: Annotated[
        bool, typer.Option("--no-progress", help="Same as --progress off.")
    ] = False,
    wait: Annotated[
        bool,
        typer.Option(
            "--wait",
            help="Then follow every image until AVAILABLE, FAILED or --wait-timeout.",
        ),
    ] = False,
    wait_timeout: WaitTimeoutOpt = "1h",
    poll_interval: PollIntervalOpt = "5s",
    preflight: Annotated[
        bool,
        typer.Option(
            "--preflight",
            help="Check each row's import task first; send only ready rows.",
        ),
    ] = False,
    wait_for_tasks: Annotated[
        bool,
        typer.Option(
            "--wait-for-tasks",
            help="With --preflight: send pending rows as their task completes.",
        ),
    ] = False,
    task_timeout: Annotated[
        str | None,
        typer.Option(
            metavar="DURATION",
            callback=duration_option,
            help="How long --wait-for-tasks waits (default 1h); and the longest an import "
            "task ibimport started may run before its row fails (default: no limit).",
        ),
    ] = None,
    task_slots: TaskSlotsOpt = None,
    after_task: Annotated[
        bool,
        typer.Option(
            "--after-task",
            help="Rows with disks: ImportVmImage once their import task completed (default: "
            "as soon as it started).",
        ),
    ] = False,
    stall_timeout: Annotated[
        str | None,
        typer.Option(
            metavar="DURATION",
            callback=duration_option,
            help="Fail a row whose import task's progress has not moved for this long.",
        ),
    ] = None,
    import_option: ImportOptionOpt = None,
    max_stdin_mib: Annotated[
        int | None,
        typer.Option(
            min=1,
            metavar="MIB",
            help="Most MiB a manifest read from stdin or a FIFO may have (it is copied to a "
            "temporary file, removed on exit, because a run reads its manifest twice); "
            "by default 1024.",
        ),
    ] = None,
) -> None:
    """Import every row of MANIFEST, concurrently and exactly once, then report."""
    _secure_umask()
    report_to_stdout = report is not None and str(report) == "-"
    as_json = as_json or report_to_stdout
    extra_tags = _tags(tag, as_json=as_json)
    _refuse_stdout_under_json(as_json, {"--report": report, "--results": results})
    mode = ProgressMode.OFF if no_progress else progress
    with ExitStack() as stack:
        stack.enter_context(_sigterm_interrupts())
        try:
            cap = None if max_stdin_mib is None else max_stdin_mib << 20
            path, outputs_beside = _manifest_file(stack, manifest, fmt, max_bytes=cap)
        except IbimportError as error:
            raise _fail(str(error), as_json=as_json) from None
        try:
            check_aws_options(region=region, endpoint_url=endpoint_url)
            rates = parse_rates(rate or [])
            shards = _shard(shard, shard_count)
            wave = TaskWave(
                slots=parse_task_slots(task_slots or []),
                after_task=after_task,
                follow=TaskFollowSettings(
                    poll_min_s=parse_duration(poll_interval),
                    poll_max_s=max(60.0, parse_duration(poll_interval)),
                    stall_timeout_s=parse_duration(stall_timeout) if stall_timeout else None,
                    task_timeout_s=parse_duration(task_timeout) if task_timeout else None,
                ),
            )
            import_defaults = parse_import_options(import_option or [])
        except IbimportError as error:
            raise _fail(str(error), as_json=as_json) from None
        except ValueError as error:
            raise _fail(str(error), as_json=as_json) from None
        default_journal, default_report, default_results = default_output_paths(
            outputs_beside, shard=shards
        )
        client = ClientSettings(
            region=region,
            profile=profile,
            endpoint_url=endpoint_url,
            max_pool_connections=concurrency,
            read_timeout_s=max(parse_duration(read_timeout), 0.01),
        )
        try:
            config = BatchConfig(
                manifest=path,
                fmt=fmt,
                extra_tags=extra_tags,
                run=RunSettings(
                    concurrency=concurrency,
                    max_attempts=max_attempts,
                    token_salt=token_salt,
                    token_ttl_s=parse_duration(token_ttl),
                    retry_failed=not no_retry_failed,
                    retry_failed_images=retry_failed_images,
                ),
                rates=rates,
                shard=shards,
                client=client,
                in_process_service=emulator is not None,
                journal_path=None if no_journal else (journal or default_journal),
                report_path=default_report if report_to_stdout else (report or default_report),
                report_file=not report_to_stdout,
                results_path=results or default_results,
                skip_invalid=skip_invalid,
                force=force,
                reconcile=not no_reconcile,
                wait=wait_settings(wait_timeout, poll_interval) if wait else None,
                preflight=preflight,
                task_wait=task_wait_settings(task_timeout or "1h", poll_interval)
                if wait_for_tasks
                else None,
                tasks=wave,
                import_defaults=import_defaults,
            )
        except IbimportError as error:  # the option rules (engine/settings)
            raise _fail(str(error), as_json=as_json) from None
        wave_outputs = wave_outputs_paths(html, failed_manifest)
        if wave_outputs and no_journal:
            needs = "need" if len(wave_outputs) > 1 else "needs"
            raise _fail(f"{' and '.join(wave_outputs)} {needs} the journal", as_json=as_json)
        if wave_outputs and config.journal_path is not None and not dry_run:
            try:  # before anything is sent: neither may overwrite an input or another output
                others = {"--report": config.report_path, "--results": config.results_path}
                check_paths(
                    inputs={
                        "the manifest": path,
                        "--journal": config.journal_path,
                        **{k: v for k, v in others.items() if v is not None},
                    },
                    outputs=wave_outputs,
                )
            except IbimportError as error:
                raise _fail(str(error), as_json=as_json) from None
        if emulator is not None:  # started once the options are known to be usable
            config = replace(config, client=_local_service(stack, emulator, client))
        if dry_run:
            code = _dry_run(config, as_json=as_json)
        else:
            code = _run_batch(
                config,
                progress_mode=mode,
                as_json=as_json,
                html=html,
                failed_manifest=failed_manifest,
                quotas=_quotas(config, emulator),
            )
    raise typer.Exit(code)


def _local_service(
    stack: ExitStack, emulator: EmulatorConfig, client: ClientSettings
) -> ClientSettings:
    """``--local``: an in-process emulator for this command, and the client pointed at it
    with its throwaway credentials (its Region defaults to the client's)."""
    emulator = replace(emulator, region=client.region or emulator.region)
    server = stack.enter_context(EmulatorServer(emulator))
    return replace(
        client,
        region=emulator.region,
        profile=None,
        endpoint_url=server.url,
        access_key_id=emulator.access_key_id,
        secret_access_key=emulator.secret_access_key,
    )


def _shard(shard: str | None, shard_count: int | None) -> Shard | None:
    if shard is not None and shard_count is not None:
        raise ConfigError("give --shard K/N or --shard-count N, not both")
    if shard is not None:
        return Shard.parse(shard)
    if shard_count is not None:
        return Shard.from_environment(shard_count)
    return None


#: Temporary copies of stdin or a FIFO: a second signal's immediate exit removes them too.
_SPOOLED: list[Path] = []


def _manifest_file(
    stack: ExitStack, manifest: Path, fmt: ManifestFormat | None, *, max_bytes: int | None
) -> tuple[Path, Path]:
    """The file a run reads (twice), and the name its outputs go beside.

    stdin and a FIFO can be read only once, so they are copied to a temporary file that
    ``stack`` removes; a device or a folder is refused for what it is.
    """
    if str(manifest) == "-":
        if fmt is None:
            raise ConfigError("reading stdin needs --format csv|json|jsonl")
        source, label, beside = None, "stdin", Path("ibimport-stdin")
    elif source_kind(manifest) is SourceKind.FIFO:
        fmt = fmt or detect_format(manifest)
        fifo = stack.enter_context(open(manifest, "rb"))  # noqa: SIM115 - the stack closes it
        source, label, beside = fifo, str(manifest), manifest
    else:
        return manifest, manifest
    path = stack.enter_context(spooled_stdin(fmt, source=source, label=label, max_bytes=max_bytes))
    _SPOOLED.append(path.parent)
    stack.callback(_SPOOLED.remove, path.parent)
    return path, beside


@contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """Until the run's own handler takes over, SIGTERM acts as Ctrl-C does.

    So a SIGTERM while stdin is copied or the manifest checked (minutes for a big one)
    removes the temporary copy and exits 130, as a SIGTERM during the run does, instead
    of killing the process (143) and leaving the copy behind.
    """

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    except KeyboardInterrupt:
        err.print("interrupted")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    finally:
        signal.signal(signal.SIGTERM, previous)


def _dry_run(config: BatchConfig, *, as_json: bool) -> int:
    """``run --dry-run``: every row with its token and what a run would do; nothing sent.

    Streamed: each row is printed as it is read (JSON too: the totals come last).
    """
    try:
        plan: BatchPlan = anyio.run(plan_batch, config)
        document = plan.document()
        if as_json:  # one JSON document, written a row at a time (a million rows stream)
            for chunk in document.json_chunks():
                sys.stdout.write(chunk)
            sys.stdout.flush()
        else:  # tab-separated for scripts too (rich would expand the tabs)
            for line in document.tsv_lines():
                typer.echo(line)
    except IbimportError as error:
        raise _fail(str(error), _exit_code(error), as_json=as_json) from None
    except BaseExceptionGroup as group:
        ours, rest = group.split(IbimportError)
        if ours is None or rest is not None:
            raise
        leaf = _first_leaf(ours)
        assert isinstance(leaf, IbimportError)
        raise _fail(str(leaf), _exit_code(leaf), as_json=as_json) from None
    selection = plan.selection
    for manifest_row in selection.invalid_rows:
        for line in manifest_row.describe():
            err.print(line, highlight=False, markup=False)
    hidden = selection.invalid_count - len(selection.invalid_rows)
    if hidden:
        err.print(f"... and {hidden} more invalid rows", highlight=False)
    invalid = plan.count(PlannedStatus.INVALID)
    new, exists = plan.count(PlannedStatus.NEW), plan.count(PlannedStatus.EXISTS)
    looked = "" if plan.looked_up else " (existing images not looked up)"
    rows = sum(plan.totals.values())
    err.print(
        f"dry run: {_count(rows, 'row')}: {new} new, {exists} exist{looked}, "
        f"{invalid} invalid; nothing was sent and no journal was written",
        highlight=False,
    )
    if invalid and not config.skip_invalid:
        err.print("a run would refuse the manifest; fix the rows or pass --skip-invalid")
        return EXIT_USAGE
    return EXIT_OK


def _print_changed(refusal: ManifestChanged) -> None:
    """Why a resume was refused: options given otherwise than the journal's, or rows."""
    say = partial(err.print, highlight=False, markup=False)
    say(f"{refusal}:")
    if refusal.options:
        for line in refusal.options:
            say("  " + line)
        say("every row's clientToken depends on these options, so each row would be a new image")
        if refusal.resume:
            say("nothing was sent; to resume the batch as it was written:")
            say("  " + refusal.resume)
        else:
            say("nothing was sent; give the journal's options again")
        say("(--force would import the rest of the batch under the new options)")
        return
    for line in refusal.lines:
        say("  " + line)
    say("nothing was sent; pass --force to proceed, or use another --journal")


def _run_batch(
    config: BatchConfig,
    *,
    progress_mode: str = "auto",
    as_json: bool = False,
    html: Path | None = None,
    failed_manifest: Path | None = None,
    quotas: dict[str, float] | None = None,
) -> int:
    with _fewer_gc_passes():
        return _preflight_and_run(
            config,
            progress_mode=progress_mode,
            as_json=as_json,
            html=html,
            failed_manifest=failed_manifest,
            quotas=quotas or {},
        )


def _preflight_and_run(
    config: BatchConfig,
    *,
    progress_mode: str,
    as_json: bool,
    html: Path | None,
    failed_manifest: Path | None,
    quotas: dict[str, float],
) -> int:
    people = err if as_json else out
    try:
        batch = open_batch(config)
    except InvalidManifest as refusal:
        _print_invalid(refusal)
        err.print("nothing was sent; fix the rows or pass --skip-invalid", highlight=False)
        if as_json:  # a script gets the rows' errors too, not only their count
            _print_json(
                {"error": str(refusal), "exit_code": EXIT_USAGE, "rows": list(refusal.lines)}
            )
        return EXIT_USAGE
    except ManifestChanged as refusal:
        _print_changed(refusal)
        if as_json:
            _print_json(
                {
                    "error": str(refusal),
                    "exit_code": EXIT_USAGE,
                    "options": list(refusal.options),
                    "resume_command": refusal.resume or None,
                }
            )
        return EXIT_USAGE
    except BatchRefused as refusal:  # the manifest changed since the journal
        err.print(f"{refusal}:", highlight=False, markup=False)
        for line in refusal.lines:
            err.print("  " + line, highlight=False, markup=False)
        err.print("nothing was sent; pass --force to proceed, or use another --journal")
        if as_json:
            _print_json({"error": str(refusal), "exit_code": EXIT_USAGE})
        return EXIT_USAGE
    except IbimportError as error:
        raise _fail(str(error), _exit_code(error), as_json=as_json) from None
    if batch.changes:
        err.print(f"the manifest changed since the journal {config.journal_path} was written:")
        for line in batch.changes:
            err.print("  " + line, highlight=False, markup=False)
    progress = ProgressListener(err, mode=progress_mode, wait_follows=config.wait is not None)
    control = BatchControl()

    async def _main() -> int:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_watch_signals, control)
            tg.start_soon(_tick, progress)
            with progress:
                result = await batch.run(listeners=[progress], control=control)
            tg.cancel_scope.cancel()
        people.print(
            summary_table(
                result.stats,
                report_path=result.report_path if config.report_file else None,
                results_path=result.results_path,
            )
        )
        if config.journal_path is not None:  # on every exit: stopped runs' too
            write_wave_outputs(
                people,
                [config.journal_path],
                result.report,
                html=html,
                failed_manifest=failed_manifest,
                quotas=quotas,
            )
        if as_json:
            _print_json(result.report.to_json())
        if config.wait is not None and not result.outcome.interrupted:
            people.print(image_summary(dict(result.images)), highlight=False)
            if result.wait_interrupted:
                err.print("interrupted while waiting: run ibimport wait JOURNAL to resume")
                return EXIT_INTERRUPTED
        finished = result.all_available if config.wait is not None else result.all_done
        if not finished and config.journal_path is not None:
            _print_next_steps(
                config.journal_path,
                people,
                stats=result.stats,
                rows=progress.troubled_rows,
                waited=config.wait is not None and not result.outcome.interrupted,
            )
        if result.outcome.fatal is not None:
            # Before any import was sent (the listing of existing images failed) the batch
            # could not start: an error; after, it stopped.
            label = "error" if result.stats.calls == 0 else "stopped"
            err.print(f"[red]{label}:[/red] {escape(str(result.outcome.fatal))}", highlight=False)
            return EXIT_FATAL
        if result.outcome.interrupted:
            return EXIT_INTERRUPTED
        return EXIT_OK if finished else EXIT_FAILED

    try:
        return anyio.run(_main)
    except IbimportError as error:
        raise _fail(str(error), _exit_code(error), as_json=as_json) from None
    except BaseExceptionGroup as group:
        # The task group wraps a fatal error raised in it (no credentials, say) in a group.
        ours, rest = group.split(IbimportError)
        if ours is None or rest is not None:
            raise
        leaf = _first_leaf(ours)
        assert isinstance(leaf, IbimportError)
        raise _fail(str(leaf), _exit_code(leaf), as_json=as_json) from None


def _quotas(config: BatchConfig, emulator: EmulatorConfig | None) -> dict[str, float]:
    """The quotas the wave report draws: the told ``--rate``s, else ``--local``'s emulator's."""
    if config.rates is not None and (config.rates.default or config.rates.per_region):
        told = {"*": config.rates.default} if config.rates.default else {}
        return {**told, **(config.rates.per_region or {})}
    if emulator is not None:
        return {**({"*": emulator.rate} if emulator.rate else {}), **emulator.region_rates}
    return {}


def _print_next_steps(
    journal: Path, console: Console, *, stats: RunStats, rows: list[RowResult], waited: bool
) -> None:
    """After a run that left work: what to look at and the commands that go on."""
    try:
        recorded = recorded_run(journal)
        # After a wait the outputs were rebuilt from the journal already: one more pass.
        images = batch_status(journal) if waited else None
    except IbimportError:  # the summary is said; the journal's own troubles are status's
        return
    resume = recorded.resume_command(journal) if recorded.known else None
    for line in next_steps(stats, rows=rows, resume=resume, images=images):
        console.print(line, highlight=False, markup=False)


@contextmanager
def _fewer_gc_passes() -> Iterator[None]:
    """Fewer cyclic collections, and none over the start-up's objects, in preflight and run.

    Every row and call allocates hundreds of short-lived containers that reference
    counting frees alone; at Python's default threshold (700) the collector still ran every
    few calls and, with hundreds of calls in flight, walked their live state each time
    (about 8% of the CPU at 256 in flight). Start-up objects (botocore's models, pydantic's
    validators) never die: frozen, full collections skip them. Undone on the way out, for
    callers (tests) that run batches in a longer-lived process.
    """
    thresholds = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(max(thresholds[0], _GC_THRESHOLD), *thresholds[1:])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


def _first_leaf(error: BaseException) -> BaseException:
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


async def _tick(progress: ProgressListener) -> None:
    """Plain progress lines keep coming even while no row finishes (a throttling storm)."""
    while True:
        await anyio.sleep(1.0)
        progress.tick()


async def _watch_signals(control: BatchControl) -> None:
    """First SIGINT/SIGTERM drains the batch; a second one leaves at once."""
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            if control.stop_requested:
                err.show_cursor(True)  # the bar hid it, and _exit skips the bar's own exit
                err.print("second interrupt: exiting now; the journal is consistent")
                for spooled in _SPOOLED:
                    shutil.rmtree(spooled, ignore_errors=True)
                os._exit(EXIT_INTERRUPTED)  # SQLite's WAL keeps the journal consistent
            err.print(
                "interrupt: finishing calls in flight, then writing the report (again to quit now)"
            )
            control.request_stop()
