"""What every command shares: the app, the consoles, exit codes, errors and option types."""

from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from ibimport import (
    BatchRefused,
    ConfigError,
    IbimportError,
    InvalidManifest,
    JournalError,
    ManifestError,
    ManifestFormat,
    __version__,
    parse_tag_option,
)
from ibimport.cli._help import HelpGroup
from ibimport.cli.progress import ProgressMode

#: One meaning each (README, "Exit codes"): every row done; some rows failed, blocked or
#: timed out; a usage error or an invalid manifest; the batch could not start or stopped on
#: a fatal error (credentials, profile, region, endpoint, access denied); interrupted.
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_FATAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


EXIT_CODES_HELP = (
    "Exit codes: 0 every row done; 1 some rows failed, blocked or timed out; 2 usage error or "
    "invalid manifest; 3 could not start, or stopped on a fatal error; 130 interrupted."
)


app = typer.Typer(
    name="ibimport",
    cls=HelpGroup,  # panels, and no type names in --help (cli/_help.py)
    help="Import fleets of VM images into EC2 Image Builder: fast, resumable, exactly once.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"max_content_width": 100},
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


def _fail(message: str, code: int = EXIT_USAGE, *, as_json: bool = False) -> typer.Exit:
    # Messages carry file names, cells and service text: never rich markup.
    err.print(f"[red]error:[/red] {escape(message)}", highlight=False)
    if as_json:  # a script still gets its one document
        _print_json({"error": message, "exit_code": code})
    return typer.Exit(code)


def _exit_code(error: IbimportError) -> int:
    """A mistake in what was given is a usage error (2); anything else stops the batch (3).

    A journal that cannot be used is the former: its message says which --journal to pass.
    """
    if isinstance(error, ConfigError | ManifestError | BatchRefused | JournalError):
        return EXIT_USAGE
    return EXIT_FATAL


def _print_json(document: Any) -> None:
    """The one JSON document a ``--json`` command writes on stdout."""
    typer.echo(json.dumps(document, indent=2, ensure_ascii=False))


def _tags(values: list[str] | None, *, as_json: bool = False) -> dict[str, str]:
    tags: dict[str, str] = {}
    for text in values or []:
        try:
            key, value = parse_tag_option(text)
        except ValueError as error:
            raise _fail(str(error), as_json=as_json) from None  # it names the --tag
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
    Path,
    typer.Argument(
        metavar="MANIFEST",
        help="CSV, JSON or JSON Lines manifest; - reads stdin (with --format).",
    ),
]


FormatOpt = Annotated[
    ManifestFormat | None,
    typer.Option("--format", help="Manifest format; by default from the file extension."),
]


TagOpt = Annotated[
    list[str] | None,
    typer.Option("--tag", metavar="KEY=VALUE", help="A tag added to every row (repeatable)."),
]


RegionOpt = Annotated[
    str | None, typer.Option(envvar="AWS_REGION", metavar="NAME", help="AWS region.")
]
ProfileOpt = Annotated[str | None, typer.Option(metavar="NAME", help="AWS profile.")]
EndpointOpt = Annotated[
    str | None,
    typer.Option(metavar="URL", help="Endpoint URL (Image Builder's; EC2 and STS use it too)."),
]
#: --rate on the commands that only read (preflight, wait): one rate, calls/s.
ReadRateOpt = Annotated[
    float | None,
    typer.Option(min=0.01, metavar="CALLS/S", help="Calls per second; else adaptive."),
]
TaskSlotsOpt = Annotated[
    list[str] | None,
    typer.Option(
        metavar="N|REGION=N",
        help="EC2 import tasks active at once per account and Region (repeatable per "
        "Region); default: Service Quotas' value where readable, else 20.",
    ),
]
ImportOptionOpt = Annotated[
    list[str] | None,
    typer.Option(
        metavar="KEY=VALUE",
        help="An ImportImage option for every row with disks that gives none "
        "(licenseType, usageOperation, bootMode, architecture, encrypted, kmsKeyId, "
        "roleName, importDescription).",
    ),
]
ProgressOpt = Annotated[
    ProgressMode,
    typer.Option(help="auto: a bar on a terminal, lines otherwise; plain: lines; off."),
]
JsonOpt = Annotated[
    bool,
    typer.Option(
        "--json", help="One JSON document on stdout; everything for people goes to stderr."
    ),
]


def _output_path(text: str) -> Path:
    """An output option's path. One that ends in ``/`` names a folder: refused, whether or
    not it exists (``Path`` drops the slash, and a file named after the folder would be
    written instead)."""
    if text != "-" and text.endswith(("/", os.sep)):
        raise _fail(f"{text} names a folder (it ends with /); give a file path")
    return Path(text)


#: The outputs of a command that rewrites a run's (wait, cancel): its own, unless named.
RunReportOpt = Annotated[
    Path | None,
    typer.Option(
        metavar="FILE", parser=_output_path, help="JSON report path (default: the run's)."
    ),
]
RunResultsOpt = Annotated[
    Path | None,
    typer.Option(
        metavar="FILE", parser=_output_path, help="Per-row results CSV (default: the run's)."
    ),
]


def _is_stdout(path: Path) -> bool:
    """Whether ``path`` is this process's standard output (``/dev/stdout``, a link to it)."""
    try:
        named, ours = path.stat(), os.fstat(sys.stdout.fileno())
    except (OSError, ValueError, io.UnsupportedOperation):
        return False
    return (named.st_dev, named.st_ino) == (ours.st_dev, ours.st_ino)


def _refuse_stdout_under_json(as_json: bool, outputs: dict[str, Path | None]) -> None:
    """Under ``--json`` stdout carries one JSON document: no output may be written there."""
    if not as_json:
        return
    for option, path in outputs.items():
        if path is not None and str(path) != "-" and _is_stdout(path):
            raise _fail(
                f"{option} {path} is standard output, which --json keeps for its one JSON "
                "document; give a file path",
                as_json=True,
            )


JournalArg = Annotated[
    Path, typer.Argument(metavar="JOURNAL", help="A journal written by ibimport run.")
]


def _count(n: int, noun: str) -> str:
    """``1 row``, ``2 rows``: English, for people (JSON documents carry plain numbers)."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:  # Ctrl-C before the run installed its handler: nothing sent
        err.print("interrupted")
        raise SystemExit(EXIT_INTERRUPTED) from None


def _secure_umask() -> None:
    """Files this process creates (the journal's WAL too) are private: they name accounts."""
    os.umask(0o077)
