"""``ibimport status`` and ``ibimport report``: what a journal alone can tell."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from ibimport import (
    IbimportError,
    RowStatus,
    batch_status,
    check_paths,
    merge_outputs,
    write_failed_manifest,
    write_html_report,
)
from ibimport.cli._common import (
    JournalArg,
    JsonOpt,
    _count,
    _exit_code,
    _fail,
    _print_json,
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
    report: Mapping[str, Any],
    *,
    html: Path | None,
    failed_manifest: Path | None,
    quotas: Mapping[str, float] | None = None,
) -> None:
    """Write ``--html`` and ``--failed-manifest`` from the journals, and say where they went."""
    if html is not None:
        write_html_report(html, journals, report=report, quotas=quotas)
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
    """Counts per state, failures by code, last update, and what a re-run would do."""
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
                "rerun": {"skip": plan.skip, "resend": plan.resend, "retry": plan.retry},
            }
        )
        return
    out.print(f"journal   {journal}", highlight=False)
    out.print(f"manifest  {found.manifest_path}", highlight=False)
    if found.updated_at is not None:
        out.print(f"updated   {found.updated_at.isoformat(timespec='seconds')}")
    for state in RowStatus:
        if found.reported.get(state):
            note = ""
            if state is RowStatus.SKIPPED:
                never = found.counts.get(RowStatus.PENDING, 0)
                cut = found.counts.get(RowStatus.IN_FLIGHT, 0)
                note = f"  not finished: {never} never sent, {cut} sent without an answer"
            out.print(f"{state.value:<10}{found.reported[state]:>8}{note}", highlight=False)
    if found.errors_by_code:
        out.print("failures by error code:")
        for code, n in sorted(found.errors_by_code.items(), key=lambda kv: -kv[1]):
            out.print(f"  {code:<40}{n:>8}", highlight=False)
    out.print(
        f"a re-run would skip {_count(plan.skip, 'done row')}, re-send "
        f"{_count(plan.resend, 'unfinished row')} with their recorded tokens, and retry "
        f"{_count(plan.retry, 'failed row')} (unless --no-retry-failed)",
        highlight=False,
    )


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
            help="JSON report path (default: the run's); - writes it to stdout.",
        ),
    ] = None,
    results: Annotated[
        Path | None,
        typer.Option(metavar="FILE", help="Per-row results CSV path (default: the run's)."),
    ] = None,
    html: HtmlOpt = None,
    failed_manifest: FailedManifestOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Rewrite the report and results files from the journal alone, where its run wrote them."""
    _secure_umask()
    report_to_stdout = report is not None and str(report) == "-"
    as_json = as_json or report_to_stdout
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
        )
    except IbimportError as error:
        raise _fail(str(error), _exit_code(error), as_json=as_json) from None
    people.print(
        summary_table(
            rebuilt.stats,
            report_path=None if report_to_stdout else rebuilt.report_path,
            results_path=rebuilt.results_path,
        )
    )
    try:
        write_wave_outputs(
            people, journals, rebuilt.report, html=html, failed_manifest=failed_manifest
        )
    except IbimportError as error:
        raise _fail(str(error), _exit_code(error), as_json=as_json) from None
    if as_json:
        _print_json(rebuilt.report)
