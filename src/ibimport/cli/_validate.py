"""``ibimport validate``: every bad row by row and field; nothing is sent."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from ibimport import (
    IbimportError,
    ManifestRow,
    read_manifest,
    validate_rows,
)
from ibimport.cli._common import (
    EXIT_OK,
    EXIT_USAGE,
    FormatOpt,
    JsonOpt,
    ManifestArg,
    TagOpt,
    _count,
    _fail,
    _print_json,
    _tags,
    app,
    err,
    out,
)


@app.command(epilog="Exit codes: 0 every row is valid; 2 some are not, or a usage error.")
def validate(
    manifest: ManifestArg, fmt: FormatOpt = None, tag: TagOpt = None, as_json: JsonOpt = False
) -> None:
    """Check every row against the service's rules; send nothing. Exit 2 if any row is bad."""
    extra_tags = _tags(tag, as_json=as_json)
    people = err if as_json else out

    def show(manifest_row: ManifestRow) -> None:
        for line in manifest_row.describe():
            people.print(line, highlight=False, markup=False)

    try:
        source: Path | str = "-" if str(manifest) == "-" else manifest
        if source == "-" and fmt is None:
            raise _fail("reading stdin needs --format csv|json|jsonl", as_json=as_json)
        rows = read_manifest(source, fmt=fmt, extra_tags=extra_tags, stdin=sys.stdin.buffer)
        checked = validate_rows(rows, on_invalid=show, keep_errors=as_json)
    except IbimportError as error:
        raise _fail(str(error), as_json=as_json) from None
    except OSError as error:
        raise _fail(f"cannot read {manifest}: {error.strerror}", as_json=as_json) from None
    people.print(f"{_count(checked.rows, 'row')}, {checked.invalid} invalid", highlight=False)
    if as_json:
        _print_json(checked.to_json())
    raise typer.Exit(EXIT_USAGE if checked.invalid else EXIT_OK)
