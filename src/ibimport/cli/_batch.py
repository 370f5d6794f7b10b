"""Running a batch for a person: the progress bar, the signals (Ctrl-C, SIGTERM), the
summary and what to do next, the wave report, the exit code."""

from __future__ import annotations

import gc
import os
import shutil
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import anyio
from rich.console import Console
from rich.markup import escape

from ibimport import (
    BatchConfig,
    BatchControl,
    BatchRefused,
    IbimportError,
    InvalidManifest,
    ManifestChanged,
    RowResult,
    RunStats,
    batch_status,
    open_batch,
    recorded_run,
)
from ibimport.cli._common import (
    EXIT_FAILED,
    EXIT_FATAL,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    _exit_code,
    _fail,
    _print_invalid,
    _print_json,
    err,
    out,
)
from ibimport.cli._journals import (
    write_wave_outputs,
)
from ibimport.cli._wait import (
    image_summary,
)
from ibimport.cli.progress import ProgressListener
from ibimport.cli.rendering import next_steps, summary_table
from ibimport.emulator import EmulatorConfig

#: Temporary copies of stdin or a FIFO: a second signal's immediate exit removes them too.
_SPOOLED: list[Path] = []
_GC_THRESHOLD = 20_000  # allocations between young collections (Python's default: 700)


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
        # After a wait the outputs were written from the journal already: one more pass.
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
