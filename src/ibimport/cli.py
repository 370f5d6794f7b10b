"""The ``ibimport`` command line: parse, build a config, call the library, map to an exit code."""

from __future__ import annotations

import gc
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Annotated

import anyio
import typer
from rich.console import Console
from rich.markup import escape

from ibimport import (
    BatchConfig,
    BatchControl,
    BatchRefused,
    ClientSettings,
    EmulatorConfig,
    IbimportError,
    InvalidManifest,
    ManifestFormat,
    RowStatus,
    RunSettings,
    __version__,
    batch_status,
    default_output_paths,
    open_batch,
    parse_tag_option,
    read_manifest,
    rebuild_outputs,
    spooled_stdin,
)
from ibimport.emulator.cli import emulator_command, local_emulator_options
from ibimport.progress import ProgressListener
from ibimport.rendering import summary_table

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
_GC_THRESHOLD = 20_000  # allocations between young collections (Python's default: 700)

app = typer.Typer(
    name="ibimport",
    help="Import fleets of VM images into EC2 Image Builder: fast, resumable, exactly once.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _console(*, stderr: bool) -> Console:
    console = Console(stderr=stderr, soft_wrap=True)
    if not console.is_terminal:
        console.width = 240  # piped or logged: never wrap lines or elide paths at 80 columns
    return console


out = _console(stderr=False)
err = _console(stderr=True)


def _version(value: bool) -> None:
    if value:
        out.print(f"ibimport {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    """ibimport: batch ImportVmImage with a rate limit, a journal and a report."""


def _fail(message: str, code: int = EXIT_USAGE) -> typer.Exit:
    # Messages carry file names, cells and service text: never rich markup.
    err.print(f"[red]error:[/red] {escape(message)}", highlight=False)
    return typer.Exit(code)


def _tags(values: list[str] | None) -> dict[str, str]:
    tags: dict[str, str] = {}
    for text in values or []:
        try:
            key, value = parse_tag_option(text)
        except ValueError as error:
            raise _fail(f"--tag {text!r}: {error}") from None
        tags[key] = value
    return tags


def _print_invalid(refusal: InvalidManifest) -> None:
    for line in refusal.lines:
        err.print(line, highlight=False, markup=False)
    hidden = refusal.invalid_rows - refusal.shown_rows
    if hidden:
        err.print(f"... and {hidden} more invalid rows", highlight=False)
    err.print(str(refusal), highlight=False, markup=False)


ManifestArg = Annotated[
    Path, typer.Argument(help="CSV, JSON or JSON Lines manifest; - reads stdin (with --format).")
]
FormatOpt = Annotated[
    ManifestFormat | None,
    typer.Option("--format", help="Manifest format; by default from the file extension."),
]
TagOpt = Annotated[
    list[str] | None,
    typer.Option("--tag", help="KEY=VALUE tag added to every row (repeatable)."),
]


@app.command()
def validate(manifest: ManifestArg, fmt: FormatOpt = None, tag: TagOpt = None) -> None:
    """Check every row against the service's rules; send nothing. Exit 2 if any row is bad."""
    extra_tags = _tags(tag)
    total = invalid = 0
    try:
        source: Path | str = "-" if str(manifest) == "-" else manifest
        if source == "-" and fmt is None:
            raise _fail("reading stdin needs --format csv|json|jsonl")
        for manifest_row in read_manifest(
            source, fmt=fmt, extra_tags=extra_tags, stdin=sys.stdin.buffer
        ):
            total += 1
            if manifest_row.task is None:
                invalid += 1
                for line in manifest_row.describe():
                    out.print(line, highlight=False, markup=False)
    except IbimportError as error:
        raise _fail(str(error)) from None
    except OSError as error:
        raise _fail(f"cannot read {manifest}: {error.strerror}") from None
    out.print(f"{total} rows, {invalid} invalid", highlight=False)
    raise typer.Exit(EXIT_USAGE if invalid else EXIT_OK)


@app.command()
@local_emulator_options
def run(
    manifest: ManifestArg,
    fmt: FormatOpt = None,
    tag: TagOpt = None,
    concurrency: Annotated[
        int, typer.Option(min=1, max=4096, help="Calls in flight at most.")
    ] = 16,
    rate: Annotated[
        float | None,
        typer.Option(min=0.01, help="Calls per second, when the quota is known; else adaptive."),
    ] = None,
    max_attempts: Annotated[int, typer.Option(min=1, max=100, help="Attempts per row.")] = 8,
    token_salt: Annotated[
        str, typer.Option(help="Start a new generation of clientTokens (re-imports everything).")
    ] = "",
    token_ttl: Annotated[
        float,
        typer.Option(help="Seconds a clientToken is trusted; older rows are looked up first."),
    ] = 8 * 3600.0,
    skip_invalid: Annotated[
        bool, typer.Option(help="Import the valid rows and record the others as invalid.")
    ] = False,
    retry_failed: Annotated[
        bool, typer.Option(help="On resume, retry rows that failed in an earlier run.")
    ] = True,
    force: Annotated[
        bool, typer.Option(help="Proceed although the manifest changed since the journal.")
    ] = False,
    journal: Annotated[
        Path | None, typer.Option(help="Journal file (default beside the manifest).")
    ] = None,
    no_journal: Annotated[bool, typer.Option(help="Run without a journal (no resume).")] = False,
    report: Annotated[Path | None, typer.Option(help="JSON report path.")] = None,
    results: Annotated[Path | None, typer.Option(help="Per-row results CSV path.")] = None,
    region: Annotated[str | None, typer.Option(envvar="AWS_REGION", help="AWS region.")] = None,
    profile: Annotated[str | None, typer.Option(help="AWS profile.")] = None,
    endpoint_url: Annotated[str | None, typer.Option(help="Image Builder endpoint URL.")] = None,
    read_timeout: Annotated[
        float,
        typer.Option(min=0.01, help="Seconds to wait for an answer before retrying the call."),
    ] = 60.0,
    local: Annotated[
        bool, typer.Option(help="Run against an in-process emulator with throwaway credentials.")
    ] = False,
    emulator: EmulatorConfig | None = None,  # --emulator-* (local_emulator_options)
    progress: Annotated[
        str, typer.Option(help="auto (bar on a TTY, lines otherwise), plain, or off.")
    ] = "auto",
    no_progress: Annotated[bool, typer.Option(help="Same as --progress off.")] = False,
) -> None:
    """Import every row of MANIFEST, concurrently and exactly once, then report."""
    _secure_umask()
    extra_tags = _tags(tag)
    mode = "off" if no_progress else progress
    if mode not in ("auto", "plain", "off"):
        raise _fail("--progress must be auto, plain or off")
    with ExitStack() as stack:
        if str(manifest) == "-":
            if fmt is None:
                raise _fail("reading stdin needs --format csv|json|jsonl")
            path = stack.enter_context(spooled_stdin(fmt))
            outputs_beside = Path("ibimport-stdin")
        elif manifest.is_file():
            path = outputs_beside = manifest
        else:
            raise _fail(f"manifest not found: {manifest}")
        default_journal, default_report, default_results = default_output_paths(outputs_beside)
        config = BatchConfig(
            manifest=path,
            fmt=fmt,
            extra_tags=extra_tags,
            run=RunSettings(
                concurrency=concurrency,
                max_attempts=max_attempts,
                token_salt=token_salt,
                token_ttl_s=token_ttl,
                retry_failed=retry_failed,
            ),
            rate=rate,
            client=ClientSettings(
                region=region,
                profile=profile,
                endpoint_url=endpoint_url,
                max_pool_connections=concurrency,
                read_timeout_s=read_timeout,
            ),
            local=emulator,
            journal_path=None if no_journal else (journal or default_journal),
            report_path=report or default_report,
            results_path=results or default_results,
            skip_invalid=skip_invalid,
            force=force,
        )
        code = _run_batch(config, progress_mode=mode)
    raise typer.Exit(code)


def _run_batch(config: BatchConfig, *, progress_mode: str = "auto") -> int:
    with _fewer_gc_passes():
        return _preflight_and_run(config, progress_mode=progress_mode)


def _preflight_and_run(config: BatchConfig, *, progress_mode: str) -> int:
    try:
        batch = open_batch(config)
    except InvalidManifest as refusal:
        _print_invalid(refusal)
        err.print("nothing was sent; fix the rows or pass --skip-invalid", highlight=False)
        return EXIT_USAGE
    except BatchRefused as refusal:  # the manifest changed since the journal
        err.print(f"{refusal}:", highlight=False, markup=False)
        for line in refusal.lines:
            err.print("  " + line, highlight=False, markup=False)
        err.print("nothing was sent; pass --force to proceed, or use another --journal")
        return EXIT_USAGE
    except IbimportError as error:
        raise _fail(str(error)) from None
    if batch.changes:
        err.print(f"the manifest changed since the journal {config.journal_path} was written:")
        for line in batch.changes:
            err.print("  " + line, highlight=False, markup=False)
    progress = ProgressListener(err, mode=progress_mode)
    control = BatchControl()

    async def _main() -> int:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_watch_signals, control)
            tg.start_soon(_tick, progress)
            with progress:
                result = await batch.run(listeners=[progress], control=control)
            tg.cancel_scope.cancel()
        out.print(
            summary_table(
                result.stats, report_path=result.report_path, results_path=result.results_path
            )
        )
        if result.outcome.fatal is not None:
            err.print(f"[red]stopped:[/red] {escape(str(result.outcome.fatal))}", highlight=False)
        if result.outcome.interrupted:
            return EXIT_INTERRUPTED
        return EXIT_OK if result.all_done else EXIT_FAILED

    try:
        return anyio.run(_main)
    except IbimportError as error:
        raise _fail(str(error), EXIT_FAILED) from None
    except BaseExceptionGroup as group:
        # The task group wraps a fatal error raised in it (no credentials, say) in a group.
        ours, rest = group.split(IbimportError)
        if ours is None or rest is not None:
            raise
        raise _fail(str(_first_leaf(ours)), EXIT_FAILED) from None


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
                err.print("second interrupt: exiting now; the journal is consistent")
                os._exit(EXIT_INTERRUPTED)  # SQLite's WAL keeps the journal consistent
            err.print(
                "interrupt: finishing calls in flight, then writing the report (again to quit now)"
            )
            control.request_stop()


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:  # Ctrl-C before the run installed its handler: nothing sent
        err.print("interrupted")
        raise SystemExit(EXIT_INTERRUPTED) from None


@app.command()
def status(
    journal: Annotated[Path, typer.Argument(help="A journal written by ibimport run.")],
) -> None:
    """Counts per state, failures by code, last update, and what a re-run would do."""
    try:
        found = batch_status(journal)
    except IbimportError as error:
        raise _fail(str(error)) from None
    out.print(f"journal   {journal}", highlight=False)
    out.print(f"manifest  {found.manifest_path}", highlight=False)
    if found.updated_at is not None:
        out.print(f"updated   {found.updated_at.isoformat(timespec='seconds')}")
    for state in RowStatus:
        if found.counts.get(state):
            out.print(f"{state.value:<10}{found.counts[state]:>8}", highlight=False)
    if found.errors_by_code:
        out.print("failures by error code:")
        for code, n in sorted(found.errors_by_code.items(), key=lambda kv: -kv[1]):
            out.print(f"  {code:<40}{n:>8}", highlight=False)
    plan = found.rerun
    out.print(
        f"a re-run would skip {plan.skip} done rows, re-send {plan.resend} unfinished rows with "
        f"their recorded tokens, and retry {plan.retry} failed rows (unless --no-retry-failed)",
        highlight=False,
    )


@app.command("report")
def report_command(
    journal: Annotated[Path, typer.Argument(help="A journal written by ibimport run.")],
    report: Annotated[Path | None, typer.Option(help="JSON report path.")] = None,
    results: Annotated[Path | None, typer.Option(help="Per-row results CSV path.")] = None,
) -> None:
    """Rewrite the report and results files from the journal alone."""
    _secure_umask()
    try:
        rebuilt = rebuild_outputs(journal, report_path=report, results_path=results)
    except IbimportError as error:
        raise _fail(str(error)) from None
    out.print(
        summary_table(
            rebuilt.stats, report_path=rebuilt.report_path, results_path=rebuilt.results_path
        )
    )


def _secure_umask() -> None:
    """Files this process creates (the journal's WAL too) are private: they name accounts."""
    os.umask(0o077)


app.command("emulator")(emulator_command)
