"""``ibimport cancel``: cancel a wave's active EC2 import tasks; a later run resumes the rest."""

from __future__ import annotations

from pathlib import Path

import anyio
import typer

from ibimport import (
    CancelOutcome,
    CancelResult,
    IbimportError,
    cancel_tasks,
    recorded_run,
)
from ibimport.cli._common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EndpointOpt,
    JournalArg,
    JsonOpt,
    ProfileOpt,
    ReadRateOpt,
    RegionOpt,
    RunReportOpt,
    RunResultsOpt,
    _exit_code,
    _fail,
    _print_json,
    _refuse_stdout_under_json,
    _secure_umask,
    app,
    err,
    out,
)
from ibimport.cli._wait import recorded_config

CANCEL_EXIT_HELP = (
    "Exit codes: 0 no task of the wave is left running; 1 some could not be cancelled; "
    "2 usage error, or the journal is in use by a run; 3 could not start (credentials, "
    "access); 130 interrupted (cancel again)."
)


@app.command(epilog=CANCEL_EXIT_HELP)
def cancel(
    journal: JournalArg,
    as_json: JsonOpt = False,
    region: RegionOpt = None,
    profile: ProfileOpt = None,
    endpoint_url: EndpointOpt = None,
    rate: ReadRateOpt = None,
    report: RunReportOpt = None,
    results: RunResultsOpt = None,
) -> None:
    """Cancel the EC2 import tasks a run started that are still active (CancelImportTask).

    Each task with the client of its own account and Region (the run's, from the journal,
    unless given here). Their rows are recorded cancelled; running the same run command
    again starts a new task for each of them and resumes the rest. Stop the run first.
    """
    _secure_umask()
    _refuse_stdout_under_json(as_json, {"--report": report, "--results": results})
    config = recorded_config(
        journal,
        region=region,
        profile=profile,
        endpoint_url=endpoint_url,
        rate=rate,
        as_json=as_json,
        nothing="to cancel",
    )
    try:
        result: CancelResult = anyio.run(
            lambda: cancel_tasks(
                Path(journal), config=config, report_path=report, results_path=results
            )
        )
    except KeyboardInterrupt:
        err.print("interrupted: run ibimport cancel again to cancel the rest")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except IbimportError as error:
        raise _fail(str(error), _exit_code(error), as_json=as_json) from None
    if as_json:
        _print_json(
            {
                "tasks": [
                    {
                        "name": t.name,
                        "semanticVersion": t.semantic_version,
                        "importTaskId": t.task_id,
                        "outcome": t.outcome.value,
                        "detail": t.detail,
                    }
                    for t in result.tasks
                ],
                "rowsCancelled": result.rows_cancelled,
                "calls": result.calls,
            }
        )
    people = err if as_json else out
    counts = result.counts
    if not result.tasks:
        people.print("no import task of this wave is active: nothing to cancel", highlight=False)
    else:
        people.print(
            f"{counts[CancelOutcome.CANCELLED]} import tasks cancelled, "
            f"{counts[CancelOutcome.ENDED]} had ended already, "
            f"{counts[CancelOutcome.FAILED]} could not be cancelled; "
            f"{result.rows_cancelled} rows recorded cancelled ({result.calls} calls)",
            highlight=False,
        )
    for task in result.tasks:
        if task.outcome is CancelOutcome.FAILED:
            people.print(
                f"  {task.name} {task.semantic_version} {task.task_id}: {task.detail}",
                highlight=False,
                markup=False,
            )
    recorded = recorded_run(journal)
    if result.rows_cancelled and recorded.known:
        people.print(f"resume    {recorded.resume_command(Path(journal))}", highlight=False)
    raise typer.Exit(EXIT_OK if result.all_stopped else EXIT_FAILED)
