"""``ibimport preflight``: every row's EC2 import task looked up in batches, before a run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import anyio
import typer

from ibimport import (
    BatchConfig,
    ClientSettings,
    IbimportError,
    InvalidManifest,
    TaskPreflight,
    TaskState,
    TaskWave,
    parse_import_options,
    parse_task_slots,
    preflight_tasks,
)
from ibimport.cli._common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    EndpointOpt,
    FormatOpt,
    ImportOptionOpt,
    JsonOpt,
    ManifestArg,
    ProfileOpt,
    ReadRateOpt,
    RegionOpt,
    TaskSlotsOpt,
    _count,
    _exit_code,
    _fail,
    _output_path,
    _print_invalid,
    _print_json,
    _refuse_stdout_under_json,
    _secure_umask,
    app,
    err,
    out,
)

PREFLIGHT_EXIT_HELP = (
    "Exit codes: 0 every row's task is ready (completed), and every row with disks ready "
    "or unchecked; 1 some are pending, failed or unknown; 2 usage error or invalid manifest; "
    "3 the lookup could not start or complete."
)


@app.command(epilog=PREFLIGHT_EXIT_HELP)
def preflight(
    manifest: ManifestArg,
    fmt: FormatOpt = None,
    results: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE",
            parser=_output_path,
            help="Write one line per row: taskStatus, taskProgress, taskMessage, diskBytes (CSV).",
        ),
    ] = None,
    as_json: JsonOpt = False,
    region: RegionOpt = None,
    profile: ProfileOpt = None,
    endpoint_url: EndpointOpt = None,
    rate: ReadRateOpt = None,
    task_slots: TaskSlotsOpt = None,
    import_option: ImportOptionOpt = None,
) -> None:
    """Check every row's import task with EC2, or its disks: ready, pending, failed, unknown.

    A row's vmImportTaskId is looked up (100 per call); a row with disks has its disk
    objects checked (S3: they exist, in the import Region), its import role (IAM: it
    exists, trusting vmie.amazonaws.com; unchecked where denied), and each partition's free
    task slots are counted. Read-only.
    """
    _secure_umask()
    _refuse_stdout_under_json(as_json, {"--results": results})
    try:
        config = BatchConfig(
            manifest=manifest,
            fmt=fmt,
            rate=rate,
            client=ClientSettings(region=region, profile=profile, endpoint_url=endpoint_url),
            journal_path=None,
            tasks=TaskWave(slots=parse_task_slots(task_slots or [])),
            import_defaults=parse_import_options(import_option or []),
        )
        found: TaskPreflight = anyio.run(lambda: preflight_tasks(config, results_path=results))
    except InvalidManifest as refusal:
        _print_invalid(refusal)
        if as_json:
            _print_json({"error": str(refusal), "exit_code": EXIT_USAGE})
        raise typer.Exit(EXIT_USAGE) from None
    except IbimportError as error:
        raise _fail(str(error), _exit_code(error), as_json=as_json) from None
    except ValueError as error:  # an --import-option that breaks a rule
        raise _fail(str(error), as_json=as_json) from None
    if as_json:
        _print_json(found.to_json())
    else:  # tab-separated for scripts too (rich would expand the tabs)
        for line in found.tsv_lines():
            typer.echo(line)
    counts = found.counts
    people = err if as_json else out
    summary = ", ".join(f"{counts[s]} {s.value}" for s in TaskState)
    people.print(
        f"preflight: {_count(len(found.rows), 'row')}: {summary}; "
        f"{_count(found.calls, 'lookup call')}",
        highlight=False,
    )
    for p in found.slots:
        people.print(
            f"import task slots in {p.account + '/' if p.account else ''}{p.region}: "
            f"{p.seen.free} free of {p.seen.quota} ({p.seen.source}; "
            f"{p.seen.active} active in the account)",
            highlight=False,
        )
    raise typer.Exit(EXIT_OK if found.all_ready else EXIT_FAILED)
