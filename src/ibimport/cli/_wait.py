"""``ibimport wait``: follow a run's imported images to AVAILABLE, FAILED or the deadline."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import anyio
import typer

from ibimport import (
    BatchConfig,
    ClientSettings,
    IbimportError,
    ImageStatus,
    RecordedRun,
    TaskWait,
    WaitResult,
    WaitSettings,
    check_endpoint_url,
    check_region,
    recorded_run,
    wait_for_images,
)
from ibimport.cli._common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EndpointOpt,
    JournalArg,
    JsonOpt,
    ProfileOpt,
    ProgressOpt,
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
from ibimport.cli._help import duration_option, parse_duration, positive_duration_option
from ibimport.cli.progress import ProgressListener, ProgressMode

WAIT_EXIT_HELP = (
    "Exit codes: 0 every imported image AVAILABLE; 1 any FAILED, CANCELLED, DELETED or timed "
    "out; 2 usage error; 3 could not start or stopped on a fatal error; 130 interrupted "
    "(run wait again: it resumes)."
)

WaitTimeoutOpt = Annotated[
    str,
    typer.Option(
        metavar="DURATION",
        callback=duration_option,
        help="Give up on images still building after this long.",
    ),
]
PollIntervalOpt = Annotated[
    str,
    typer.Option(
        metavar="DURATION",
        callback=positive_duration_option,
        help="First polling interval (grows 1.5x a round, to 60s).",
    ),
]


#: Polling intervals grow 1.5x a round up to this (or the first interval, if longer).
MAX_POLL_INTERVAL_S = 60.0


def wait_settings(timeout: str, interval: str) -> WaitSettings:
    """The polling rule from the command line (shared by ``run --wait``)."""
    timeout_s, interval_s = parse_duration(timeout), parse_duration(interval)
    return WaitSettings(
        interval_s=interval_s,
        max_interval_s=max(MAX_POLL_INTERVAL_S, interval_s),
        timeout_s=timeout_s,
    )


def task_wait_settings(timeout: str, interval: str) -> TaskWait:
    """``run --wait-for-tasks``: the same polling rule, for pending import tasks."""
    timeout_s, interval_s = parse_duration(timeout), parse_duration(interval)
    return TaskWait(
        timeout_s=timeout_s,
        interval_s=interval_s,
        max_interval_s=max(MAX_POLL_INTERVAL_S, interval_s),
    )


def check_aws_options(*, region: str | None, endpoint_url: str | None) -> None:
    """A mistyped --region or an --endpoint-url without a scheme: refused before anything."""
    if region is not None:
        check_region(region)
    if endpoint_url is not None:
        check_endpoint_url(endpoint_url)


def recorded_config(
    journal: Path,
    *,
    region: str | None,
    profile: str | None,
    endpoint_url: str | None,
    rate: float | None,
    as_json: bool,
    nothing: str,
) -> BatchConfig:
    """A command on a journal (``wait``, ``cancel``): what the command line does not say,
    the journal does (where its run sent its calls)."""
    try:
        check_aws_options(region=region, endpoint_url=endpoint_url)
        recorded = recorded_run(journal) if Path(journal).is_file() else RecordedRun(known=False)
    except IbimportError as error:
        raise _fail(str(error), _exit_code(error), as_json=as_json) from None
    if recorded.local and endpoint_url is None:
        raise _fail(
            f"{journal} was written by run --local, whose in-process emulator ended with that "
            f"run: there is nothing {nothing} (pass --endpoint-url of an emulator that holds "
            "its images)",
            as_json=as_json,
        )
    return BatchConfig(
        manifest=Path(journal),
        rate=rate,
        client=ClientSettings(
            region=region or recorded.region,
            profile=profile or recorded.profile,
            endpoint_url=endpoint_url or recorded.endpoint_url,
        ),
    )


def image_summary(images: dict[ImageStatus, int]) -> str:
    """``images: 3 AVAILABLE, 1 FAILED``: what a wait learnt, for people."""
    parts = [f"{n} {status.value}" for status, n in sorted(images.items()) if n]
    return "images: " + (", ".join(parts) if parts else "none imported")


@app.command(epilog=WAIT_EXIT_HELP)
def wait(
    journal: JournalArg,
    wait_timeout: WaitTimeoutOpt = "1h",
    poll_interval: PollIntervalOpt = "5s",
    as_json: JsonOpt = False,
    region: RegionOpt = None,
    profile: ProfileOpt = None,
    endpoint_url: EndpointOpt = None,
    rate: ReadRateOpt = None,
    report: RunReportOpt = None,
    results: RunResultsOpt = None,
    progress: ProgressOpt = ProgressMode.AUTO,
) -> None:
    """Follow every image a run imported until AVAILABLE, FAILED, CANCELLED or --wait-timeout.

    The Region, profile and endpoint are the run's, from the journal, unless given here.
    Status reads are batched (ListImageBuildVersions, 100 builds a call, while many are
    outstanding; GetImage for the last few). The run's report and results are rewritten
    with imageStatus and imageStatusReason. Interrupted, a second wait resumes. On a
    terminal the images are shown by state with the next poll and the time left; in a
    log, a line a round, at most every 30s.
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
        nothing="to follow",
    )
    settings = wait_settings(wait_timeout, poll_interval)
    display = ProgressListener(err, mode=progress, imports=False)
    try:
        with display:
            result: WaitResult = anyio.run(
                lambda: wait_for_images(
                    Path(journal),
                    config=config,
                    settings=settings,
                    report_path=report,
                    results_path=results,
                    listeners=[display],
                )
            )
    except KeyboardInterrupt:
        err.print("interrupted: run ibimport wait again to resume")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except IbimportError as error:
        raise _fail(str(error), _exit_code(error), as_json=as_json) from None
    if as_json:
        _print_json(result.outputs.report.to_json())
    people = err if as_json else out
    people.print(image_summary(dict(result.images)), highlight=False)
    people.print(
        f"{len(result.figures.rounds)} polling rounds, {result.figures.calls} status calls; "
        f"results {result.outputs.results_path}",
        highlight=False,
    )
    raise typer.Exit(EXIT_OK if result.all_available else EXIT_FAILED)
