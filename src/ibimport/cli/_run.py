"""``ibimport run``: its options, and the batch configuration they make (the batch itself
runs in ``_batch``, the dry run in ``_dryrun``)."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from ibimport import (
    BatchConfig,
    ClientSettings,
    ConfigError,
    IbimportError,
    ManifestFormat,
    RunSettings,
    Shard,
    SourceKind,
    TaskFollowSettings,
    TaskWave,
    check_paths,
    default_output_paths,
    detect_format,
    parse_import_options,
    parse_rates,
    parse_task_slots,
    source_kind,
    spooled_stdin,
)
from ibimport.cli._batch import _SPOOLED, _quotas, _run_batch
from ibimport.cli._common import (
    EXIT_CODES_HELP,
    EXIT_INTERRUPTED,
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
    _fail,
    _output_path,
    _refuse_stdout_under_json,
    _secure_umask,
    _tags,
    app,
    err,
)
from ibimport.cli._dryrun import _dry_run
from ibimport.cli._help import duration_option, panels, parse_duration
from ibimport.cli._journals import (
    FailedManifestOpt,
    HtmlOpt,
    wave_outputs_paths,
)
from ibimport.cli._wait import (
    PollIntervalOpt,
    WaitTimeoutOpt,
    check_aws_options,
    task_wait_settings,
    wait_settings,
)
from ibimport.cli.progress import ProgressMode
from ibimport.emulator import EmulatorConfig, EmulatorServer
from ibimport.emulator.cli import local_emulator_options

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
