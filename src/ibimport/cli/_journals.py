"""``ibimport status`` and ``ibimport report``: what a journal alone can tell."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ibimport import (
    IbimportError,
    RowStatus,
    batch_status,
    merge_outputs,
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
    as_json: JsonOpt = False,
) -> None:
    """Rewrite the report and results files from the journal alone, where its run wrote them."""
    _secure_umask()
    report_to_stdout = report is not None and str(report) == "-"
    as_json = as_json or report_to_stdout
    _refuse_stdout_under_json(as_json, {"--report": report, "--results": results})
    try:
        rebuilt = merge_outputs(
            journals,
            report_path=None if report_to_stdout else report,
            results_path=results,
            report_file=not report_to_stdout,
            partial=partial,
        )
    except IbimportError as error:
        raise _fail(str(error), _exit_code(error), as_json=as_json) from None
    (err if as_json else out).print(
        summary_table(
            rebuilt.stats,
            report_path=None if report_to_stdout else rebuilt.report_path,
            results_path=rebuilt.results_path,
        )
    )
    if as_json:
        _print_json(rebuilt.report)
    if rebuilt.gaps:
        err.print(
            "partial: not a whole wave: " + "; ".join(rebuilt.gaps), highlight=False, markup=False
        )
        raise typer.Exit(EXIT_FAILED)
