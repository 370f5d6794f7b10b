"""``ibimport validate``: every bad row by row and field; nothing is sent."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer

from ibimport import (
    IbimportError,
    read_manifest,
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
    total = invalid = 0
    problems: list[dict[str, Any]] = []
    try:
        source: Path | str = "-" if str(manifest) == "-" else manifest
        if source == "-" and fmt is None:
            raise _fail("reading stdin needs --format csv|json|jsonl", as_json=as_json)
        for manifest_row in read_manifest(
            source, fmt=fmt, extra_tags=extra_tags, stdin=sys.stdin.buffer
        ):
            total += 1
            if manifest_row.task is None:
                invalid += 1
                for line in manifest_row.describe():
                    people.print(line, highlight=False, markup=False)
                if as_json:
                    problems.extend(
                        {
                            "row": manifest_row.row,
                            "field": e.field,
                            "rule": e.rule,
                            "value": e.value,
                        }
                        for e in manifest_row.errors
                    )
    except IbimportError as error:
        raise _fail(str(error), as_json=as_json) from None
    except OSError as error:
        raise _fail(f"cannot read {manifest}: {error.strerror}", as_json=as_json) from None
    people.print(f"{_count(total, 'row')}, {invalid} invalid", highlight=False)
    if as_json:
        _print_json({"rows": total, "invalid": invalid, "errors": problems})
    raise typer.Exit(EXIT_USAGE if invalid else EXIT_OK)
