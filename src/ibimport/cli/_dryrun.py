"""``run --dry-run``: what a run would do, from the library's plan, for a person or a
script (the JSON document streams a row at a time)."""

from __future__ import annotations

import sys

import anyio
import typer

from ibimport import (
    BatchConfig,
    BatchPlan,
    IbimportError,
    PlannedStatus,
    plan_batch,
)
from ibimport.cli._batch import _first_leaf
from ibimport.cli._common import (
    EXIT_OK,
    EXIT_USAGE,
    _count,
    _exit_code,
    _fail,
    err,
)


def _dry_run(config: BatchConfig, *, as_json: bool) -> int:
    """``run --dry-run``: every row with its token and what a run would do; nothing sent.

    Streamed: each row is printed as it is read (JSON too: the totals come last).
    """
    try:
        plan: BatchPlan = anyio.run(plan_batch, config)
        document = plan.document()
        if as_json:  # one JSON document, written a row at a time (a million rows stream)
            for chunk in document.json_chunks():
                sys.stdout.write(chunk)
            sys.stdout.flush()
        else:  # tab-separated for scripts too (rich would expand the tabs)
            for line in document.tsv_lines():
                typer.echo(line)
    except IbimportError as error:
        raise _fail(str(error), _exit_code(error), as_json=as_json) from None
    except BaseExceptionGroup as group:
        ours, rest = group.split(IbimportError)
        if ours is None or rest is not None:
            raise
        leaf = _first_leaf(ours)
        assert isinstance(leaf, IbimportError)
        raise _fail(str(leaf), _exit_code(leaf), as_json=as_json) from None
    selection = plan.selection
    for manifest_row in selection.invalid_rows:
        for line in manifest_row.describe():
            err.print(line, highlight=False, markup=False)
    hidden = selection.invalid_count - len(selection.invalid_rows)
    if hidden:
        err.print(f"... and {hidden} more invalid rows", highlight=False)
    invalid = plan.count(PlannedStatus.INVALID)
    new, exists = plan.count(PlannedStatus.NEW), plan.count(PlannedStatus.EXISTS)
    looked = "" if plan.looked_up else " (existing images not looked up)"
    rows = sum(plan.totals.values())
    err.print(
        f"dry run: {_count(rows, 'row')}: {new} new, {exists} exist{looked}, "
        f"{invalid} invalid; nothing was sent and no journal was written",
        highlight=False,
    )
    if invalid and not config.skip_invalid:
        err.print("a run would refuse the manifest; fix the rows or pass --skip-invalid")
        return EXIT_USAGE
    return EXIT_OK
