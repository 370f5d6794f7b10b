"""``ibimport status`` and ``ibimport report``: what a journal alone can tell."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from ibimport import (
    BatchStatus,
    IbimportError,
    ImageStatus,
    RowNote,
    RowStatus,
    RunReport,
    batch_status,
    check_paths,
    merge_outputs,
    write_failed_manifest,
    write_html_report,
)
from ibimport.cli._common import (
    EXIT_FAILED,
    JournalArg,
    JsonOpt,
    _count,
    _exit_code,
    _fail,
    _output_path,
    _print_json,
    _refuse_stdout_under_json,
    _secure_umask,
    app,
    err,
    out,
)
from ibimport.cli.rendering import summary_table

HtmlOpt = Annotated[
    Path | None,
    typer.Option(
        "--html",
        metavar="FILE",
        help="Also write the wave report: one self-contained HTML file.",
    ),
]
FailedManifestOpt = Annotated[
    Path | None,
    typer.Option(
        "--failed-manifest",
        metavar="FILE",
        help="Also write the rows that did not end done, in the manifest's own format.",
    ),
]


def wave_outputs_paths(html: Path | None, failed_manifest: Path | None) -> dict[str, Path]:
    """The wave report's outputs by option, to check with the others before anything runs."""
    named = {"--html": html, "--failed-manifest": failed_manifest}
    return {option: path for option, path in named.items() if path is not None}


def write_wave_outputs(
    console: Console,
    journals: Sequence[Path],
    report: RunReport,
    *,
    html: Path | None,
    failed_manifest: Path | None,
    quotas: Mapping[str, float] | None = None,
) -> None:
    """Write ``--html`` and ``--failed-manifest`` from the journals, and say where they went."""
    if html is not None:
        write_html_report(html, journals, report=report.to_json(), quotas=quotas)
        console.print(f"wave report  {html}", highlight=False, markup=False)
    if failed_manifest is not None:
        written = write_failed_manifest(failed_manifest, journals)
        console.print(
            f"failed manifest  {written.path} ({_count(written.rows, 'row')} not done)",
            highlight=False,
            markup=False,
        )


@app.command()
def status(journal: JournalArg, as_json: JsonOpt = False) -> None:
    """Counts per state, blocked rows and images, and the command that resumes the batch."""
    try:
        found = batch_status(journal)
    except IbimportError as error:
        raise _fail(str(error), as_json=as_json) from None
    plan = found.rerun
    if as_json:
        _print_json(
            {
                "journal": str(journal),
                "manifest": found.manifest_path,
                "updated_at": found.updated_at.isoformat(timespec="seconds")
                if found.updated_at is not None
                else None,
                "rows": {state.value: n for state, n in found.reported.items()},
                "journal_states": {state.value: n for state, n in found.counts.items() if n},
                "errors_by_code": dict(found.errors_by_code),
                "blocked_by_code": dict(found.blocked_by_code),
                "images": {status.value: n for status, n in found.images.items()},
                "images_to_follow": found.images_to_follow,
                "rows_to_look_at": [_note(n) for n in found.rows],
                "images_to_look_at": [_note(n) for n in found.image_rows],
                "rerun": {
                    "skip": plan.skip,
                    "resend": plan.resend,
                    "retry": plan.retry,
                    "recheck": plan.recheck,
                },
                "resume_command": found.resume_command,
                "wait_command": found.wait_command,
            }
        )
        return
    _print_status(found, journal)


def _note(note: RowNote) -> dict[str, object]:
    return {
        "row": note.row,
        "name": note.name,
        "semanticVersion": note.semantic_version,
        "state": note.state,
        "code": note.code,
        "message": note.message,
    }


def _print_status(found: BatchStatus, journal: Path) -> None:
    say = partial(out.print, highlight=False, markup=False)
    say(f"journal   {journal}")
    say(f"manifest  {found.manifest_path}")
    if found.updated_at is not None:
        say(f"updated   {found.updated_at.isoformat(timespec='seconds')}")
    for state in RowStatus:
        if found.reported.get(state):
            extra = ""
            if state is RowStatus.SKIPPED:
                never = found.counts.get(RowStatus.PENDING, 0)
                cut = found.counts.get(RowStatus.IN_FLIGHT, 0)
                extra = f"  not finished: {never} never sent, {cut} sent without an answer"
            if state is RowStatus.BLOCKED:
                extra = "  " + ", ".join(f"{code} {n}" for code, n in found.blocked_by_code.items())
            say(f"{state.value:<10}{found.reported[state]:>8}{extra}")
    if found.images:
        shown = ", ".join(f"{n} {status.value}" for status, n in sorted(found.images.items()))
        say(f"images    {shown}")
    if found.errors_by_code:
        say("failures by error code:")
        for code, n in sorted(found.errors_by_code.items(), key=lambda kv: -kv[1]):
            say(f"  {code:<40}{n:>8}")
    for title, notes in (("rows to look at", found.rows), ("images to look at", found.image_rows)):
        if notes:
            say(f"{title}:")
            for note in notes:
                detail = f"{note.code}: {note.message}" if note.message else note.code
                say(
                    f"  row {note.row}  {note.name} {note.semantic_version}  {note.state}  {detail}"
                )
    say("a re-run would:")
    for line in _rerun_lines(found):
        say("  " + line)
    if found.resume_command is not None:
        say(f"resume    {found.resume_command}")
    if found.images_to_follow and not found.recorded.local:  # --local's emulator is gone
        say(f"follow    {found.wait_command}")


def _rerun_lines(found: BatchStatus) -> list[str]:
    """What running the batch's command again would do with each kind of row and image."""
    plan = found.rerun
    lines = [f"skip {_count(plan.skip, 'done row')}"]
    if plan.resend:
        lines.append(
            f"send {_count(plan.resend, 'unfinished row')} with their recorded clientTokens"
        )
    if plan.retry:
        lines.append(f"retry {_count(plan.retry, 'failed row')} (unless --no-retry-failed)")
    if plan.recheck:
        lines.append(
            f"check the import task of {_count(plan.recheck, 'blocked row')} again "
            "(with --preflight) and send those now ready"
        )
    bad = {s: n for s, n in found.images.items() if s.is_final and s is not ImageStatus.AVAILABLE}
    for image_status, n in sorted(bad.items()):
        lines.append(
            f"leave {_count(n, 'image')} {image_status.value} as they are (their rows are done)"
        )
    timed_out = found.images.get(ImageStatus.TIMED_OUT, 0)
    if timed_out:
        lines.append(
            f"not follow {_count(timed_out, 'image')} TIMED_OUT: ibimport wait does (below)"
        )
    return lines


@app.command("report")
def report_command(
    journals: Annotated[
        list[Path],
        typer.Argument(
            metavar="JOURNAL...",
            help="A journal written by ibimport run; several: the shards of one manifest, "
            "merged in manifest order.",
        ),
    ],
    report: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE",
            parser=_output_path,
            help="JSON report path (default: the run's); - writes it to stdout.",
        ),
    ] = None,
    results: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE",
            parser=_output_path,
            help="Per-row results CSV path (default: the run's).",
        ),
    ] = None,
    partial: Annotated[
        bool,
        typer.Option(
            "--partial",
            help="Merge shards that are not a whole wave; the report says what is missing "
            "(exit 1).",
        ),
    ] = False,
    html: HtmlOpt = None,
    failed_manifest: FailedManifestOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Rewrite the report and results files from the journal alone, where its run wrote them."""
    _secure_umask()
    report_to_stdout = report is not None and str(report) == "-"
    as_json = as_json or report_to_stdout
    _refuse_stdout_under_json(as_json, {"--report": report, "--results": results})
    people = err if as_json else out
    try:
        check_paths(
            inputs={f"journal {i + 1}": path for i, path in enumerate(journals)},
            outputs=wave_outputs_paths(html, failed_manifest),
        )
        rebuilt = merge_outputs(
            journals,
            report_path=None if report_to_stdout else report,
            results_path=results,
            report_file=not report_to_stdout,
            partial=partial,
        )
    except IbimportError as error:
        raise _fail(str(error), _exit_code(error), as_json=as_json) from None
    people.print(
        summary_table(
            rebuilt.stats,
            report_path=None if report_to_stdout else rebuilt.report_path,
            results_path=rebuilt.results_path,
            title="ibimport report",
        )
    )
    try:
        write_wave_outputs(
            people, journals, rebuilt.report, html=html, failed_manifest=failed_manifest
        )
    except IbimportError as error:
        raise _fail(str(error), _exit_code(error), as_json=as_json) from None
    if as_json:
        _print_json(rebuilt.report.to_json())
    if rebuilt.gaps:
        err.print(
            "partial: not a whole wave: " + "; ".join(rebuilt.gaps), highlight=False, markup=False
        )
        raise typer.Exit(EXIT_FAILED)
