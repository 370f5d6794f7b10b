"""Every command's output document, one typed model each, with its renderers.

The engine and the journal produce these models; the CLI only prints what their renderers
return, so each key, column and cell rule has this one home:

- ``RunReport``: ``run``'s and ``report``'s JSON report (``to_json``); what the HTML wave
  report (``report.document``, ``report.html``) reads, as its JSON document.
- ``result_cells``: one line of the results CSV (``RESULTS_COLUMNS``), written by
  ``report.ResultsWriter``.
- ``DryRunDocument``: ``run --dry-run``'s rows, as JSON or tab-separated lines, streamed.
- ``TaskPreflight``: ``preflight``'s task check, as JSON, tab-separated lines or CSV.
- ``ValidationReport``: ``validate``'s tally and every broken rule, as JSON.

Every CSV cell that came from outside goes through ``neutralise_cell``.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

from ibimport._files import atomic_private_file
from ibimport.domain.results import RowResult
from ibimport.domain.rowstate import reported_as
from ibimport.errors import ConfigError
from ibimport.manifest import ManifestRow
from ibimport.stages.taskcheck import TaskCheck, TaskState
from ibimport.stages.taskstart import SlotsSeen

__all__ = [
    "DRY_RUN_COLUMNS",
    "RESULTS_COLUMNS",
    "TASK_RESULTS_COLUMNS",
    "DryRunDocument",
    "PartialWave",
    "PlannedRow",
    "PlannedStatus",
    "RowProblem",
    "RunReport",
    "TaskPreflight",
    "TaskRow",
    "ValidationReport",
    "neutralise_cell",
    "result_cells",
    "validate_rows",
]

#: Leading characters that make Excel, LibreOffice or Sheets evaluate a cell (OWASP CSV injection).
_FORMULA_TRIGGERS: Final = ("=", "+", "-", "@", "\t", "\r")


def neutralise_cell(value: str) -> str:
    """Prefix ``'`` to a cell a spreadsheet would execute as a formula; leave others alone.

    The CSV files carry names and AWS error messages that came from outside, and people
    open them in spreadsheets (OWASP "CSV injection").
    """
    if value.startswith(_FORMULA_TRIGGERS):
        return "'" + value
    return value


# --- run, report: the JSON report and the results CSV ---------------------------------


@dataclass(frozen=True, slots=True)
class PartialWave:
    """Journals merged although they are not a whole wave (``report --partial``)."""

    journals: int
    missing: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RunReport:
    """The JSON report of a run, or of journals alone (issue 3, "Output").

    ``totals`` count the batch's rows as a whole; the call figures are the latest run's;
    ``runs`` lists every run the journal kept and ``batch`` sums them. Built by
    ``RunStats.to_report``.
    """

    totals: Mapping[str, int]
    calls: int
    retries: int
    throttled: int
    elapsed_s: float
    throughput_per_s: float
    latency_ms: Mapping[str, float]
    errors_by_code: Mapping[str, int]
    resumed: int
    interrupted: bool
    runs: tuple[Mapping[str, Any], ...]
    batch: Mapping[str, Any]
    #: What the listing of existing builds cost, if one was made.
    existing_images: Mapping[str, float] | None = None
    #: Each partition's EC2 import tasks (the wave's task stage), as ``RunStats.tasks``.
    import_tasks: tuple[Mapping[str, Any], ...] = ()
    #: Each partition's figures; shown for a batch of more than one.
    partitions: tuple[Mapping[str, Any], ...] = ()
    client_cpu_share: float | None = None
    #: Imported rows by their image's final state, once a wait learnt it.
    image_status: Mapping[str, int] = field(default_factory=dict)
    partial: PartialWave | None = None

    def to_json(self) -> dict[str, Any]:
        """The report as written to ``--report`` and printed by ``--json``, keys in order."""
        document: dict[str, Any] = {
            "totals": dict(self.totals),
            "calls": self.calls,
            "retries": self.retries,
            "throttled": self.throttled,
            "elapsed_s": self.elapsed_s,
            "throughput_per_s": self.throughput_per_s,
            "latency_ms": dict(self.latency_ms),
            "errors_by_code": dict(self.errors_by_code),
            "resumed": self.resumed,
            "interrupted": self.interrupted,
            "runs": [dict(run) for run in self.runs],
            "batch": dict(self.batch),
        }
        if self.existing_images is not None:
            document["existingImages"] = dict(self.existing_images)
        if self.import_tasks:
            document["importTasks"] = [dict(tasks) for tasks in self.import_tasks]
        if len(self.partitions) > 1:
            document["partitions"] = [dict(p) for p in self.partitions]
        if self.client_cpu_share is not None:
            document["clientCpuShare"] = self.client_cpu_share
        if self.image_status:
            document["imageStatus"] = dict(self.image_status)
        if self.partial is not None:
            document["partial"] = {
                "journals": self.partial.journals,
                "missing": list(self.partial.missing),
            }
        return document


RESULTS_COLUMNS: Final = (
    "row",
    "name",
    "semanticVersion",
    "status",
    "imageArn",
    "clientToken",
    "attempts",
    "errorCode",
    "errorMessage",
    "requestId",
    "imageStatus",
    "imageStatusReason",
    "account",
    "region",
)


def result_cells(result: RowResult) -> list[str]:
    """One results-CSV line for ``result`` (``RESULTS_COLUMNS``), every text cell neutralised."""
    return [
        str(result.row),
        neutralise_cell(result.name),
        neutralise_cell(result.semantic_version),
        reported_as(result.status).value,
        neutralise_cell(result.image_arn),
        neutralise_cell(result.client_token),
        str(result.attempts),
        neutralise_cell(result.error_code),
        neutralise_cell(result.error_message),
        neutralise_cell(result.request_id),
        result.image_status,
        neutralise_cell(result.image_status_reason),
        result.account or _account_of_arn(result.image_arn),
        result.region,
    ]


def _account_of_arn(arn: str) -> str:
    """The account of an image ARN (``arn:aws:imagebuilder:REGION:ACCOUNT:image/...``)."""
    parts = arn.split(":", 5)
    return parts[4] if len(parts) == 6 and parts[4].isdigit() else ""


# --- run --dry-run ------------------------------------------------------------------


class PlannedStatus(StrEnum):
    """What a run would do with one row."""

    NEW = "new"  # would be sent
    EXISTS = "exists"  # a build of the image exists: would be recorded, not sent
    INVALID = "invalid"  # broke a rule: never sent


@dataclass(frozen=True, slots=True)
class PlannedRow:
    """One manifest row as a run would treat it."""

    row: int
    name: str
    semantic_version: str
    client_token: str
    status: PlannedStatus
    image_arn: str = ""
    errors: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "row": self.row,
            "name": self.name,
            "semanticVersion": self.semantic_version,
            "clientToken": self.client_token,
            "action": self.status.value,
            **({"imageArn": self.image_arn} if self.image_arn else {}),
            **({"errors": list(self.errors)} if self.errors else {}),
        }


DRY_RUN_COLUMNS: Final = ("row", "name", "semanticVersion", "clientToken", "action")


@dataclass(frozen=True, slots=True)
class DryRunDocument:
    """``run --dry-run``'s document: its rows, streamed once, then their totals.

    ``rows`` is read once, as it is rendered (a million rows are never held);
    ``totals`` is complete once it has been (``BatchPlan.totals``, counted as rows are
    handed out), so each renderer writes the totals last.
    """

    looked_up: bool
    rows: Iterable[PlannedRow]
    totals: Mapping[PlannedStatus, int]

    def json_chunks(self) -> Iterator[str]:
        """The one JSON document (``--json``), in pieces a row each, as ``json.dumps``
        would indent it whole."""
        yield '{\n  "dry_run": true,\n'
        yield f'  "looked_up_existing": {json.dumps(self.looked_up)},\n  "rows": ['
        first = True
        for row in self.rows:
            text = json.dumps(row.to_json(), indent=2, ensure_ascii=False)
            yield ("\n    " if first else ",\n    ") + text.replace("\n", "\n    ")
            first = False
        totals = {"rows": sum(self.totals.values())}
        totals.update({status.value: self.totals.get(status, 0) for status in PlannedStatus})
        yield ("\n  ],\n" if not first else "],\n") + '  "totals": '
        yield json.dumps(totals, indent=2).replace("\n", "\n  ") + "\n}\n"

    def tsv_lines(self) -> Iterator[str]:
        """A header, then a tab-separated line per row (names never hold a tab)."""
        yield "\t".join(DRY_RUN_COLUMNS)
        for r in self.rows:
            yield f"{r.row}\t{r.name}\t{r.semantic_version}\t{r.client_token or '-'}\t{r.status}"


# --- preflight ----------------------------------------------------------------------


TASK_RESULTS_COLUMNS: Final = (
    "row",
    "name",
    "semanticVersion",
    "vmImportTaskId",
    "taskStatus",
    "taskProgress",
    "taskMessage",
    "diskBytes",
)


@dataclass(frozen=True, slots=True)
class TaskRow:
    """One manifest row and its import task's classification."""

    row: int
    name: str
    semantic_version: str
    task: TaskCheck
    #: A row with disks: their size in bytes (None: not every disk could be read).
    disk_bytes: int | None = None


@dataclass(frozen=True, slots=True)
class PartitionSlots:
    """A partition's import task slots as preflight saw them (rows with disks only)."""

    account: str
    region: str
    seen: SlotsSeen


@dataclass(frozen=True, slots=True)
class TaskPreflight:
    """``preflight``'s document: every valid row's task, and what looking them up cost."""

    rows: tuple[TaskRow, ...] = ()
    slots: tuple[PartitionSlots, ...] = ()
    calls: int = 0
    throttled: int = 0
    elapsed_s: float = 0.0

    @property
    def counts(self) -> Counter[TaskState]:
        return Counter(row.task.state for row in self.rows)

    @property
    def all_ready(self) -> bool:
        return all(row.task.state.sendable for row in self.rows)

    def to_json(self) -> dict[str, Any]:
        """``preflight --json``'s document."""
        counts = self.counts
        return {
            "totals": {"rows": len(self.rows), **{s.value: counts[s] for s in TaskState}},
            "calls": self.calls,
            "throttled": self.throttled,
            "slots": [
                {
                    "account": p.account,
                    "region": p.region,
                    "quota": p.seen.quota,
                    "quotaSource": p.seen.source,
                    "active": p.seen.active,
                    "free": p.seen.free,
                }
                for p in self.slots
            ],
            "rows": [
                {
                    "row": r.row,
                    "name": r.name,
                    "semanticVersion": r.semantic_version,
                    "vmImportTaskId": r.task.task_id,
                    "taskStatus": r.task.state.value,
                    "taskProgress": r.task.progress,
                    "taskMessage": r.task.message,
                    "diskBytes": r.disk_bytes,
                }
                for r in self.rows
            ],
        }

    def tsv_lines(self) -> Iterator[str]:
        """A header, then a tab-separated line per row (``-`` for no progress or message)."""
        yield "\t".join(TASK_RESULTS_COLUMNS)
        for r in self.rows:
            size = "-" if r.disk_bytes is None else str(r.disk_bytes)
            yield (
                f"{r.row}\t{r.name}\t{r.semantic_version}\t{r.task.task_id or '-'}\t"
                f"{r.task.state.value}\t{r.task.progress or '-'}\t{r.task.message or '-'}\t"
                f"{size}"
            )

    def csv_rows(self) -> Iterator[list[str]]:
        """The CSV's header and a line per row, every text cell neutralised."""
        yield list(TASK_RESULTS_COLUMNS)
        for r in self.rows:
            yield [
                str(r.row),
                neutralise_cell(r.name),
                neutralise_cell(r.semantic_version),
                neutralise_cell(r.task.task_id),
                r.task.state.value,
                neutralise_cell(r.task.progress),
                neutralise_cell(r.task.message),
                "" if r.disk_bytes is None else str(r.disk_bytes),
            ]

    def write_csv(self, path: Path) -> None:
        """``preflight --results``: the CSV, whole or not at all, mode 0600."""
        try:
            with atomic_private_file(path) as handle:
                csv.writer(handle).writerows(self.csv_rows())
        except OSError as error:
            raise ConfigError(f"cannot write {error.filename}: {error.strerror}") from None


# --- validate -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RowProblem:
    """One rule a manifest row broke: where, which rule, and the value shortened."""

    row: int
    field: str
    rule: str
    value: str


@dataclass(frozen=True, slots=True)
class ValidationReport:
    """``validate``'s document: how many rows, how many invalid, every broken rule."""

    rows: int
    invalid: int
    errors: tuple[RowProblem, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "invalid": self.invalid,
            "errors": [
                {"row": e.row, "field": e.field, "rule": e.rule, "value": e.value}
                for e in self.errors
            ],
        }


def validate_rows(
    rows: Iterable[ManifestRow],
    *,
    on_invalid: Callable[[ManifestRow], None] | None = None,
    keep_errors: bool = True,
) -> ValidationReport:
    """Tally a manifest's rows as they are read; ``on_invalid`` sees each bad row at once.

    ``keep_errors=False`` keeps only the counts (a million bad rows need not be held when
    nobody asked for the document's ``errors``).
    """
    total = invalid = 0
    problems: list[RowProblem] = []
    for manifest_row in rows:
        total += 1
        if manifest_row.task is not None:
            continue
        invalid += 1
        if on_invalid is not None:
            on_invalid(manifest_row)
        if keep_errors:
            problems.extend(
                RowProblem(manifest_row.row, e.field, e.rule, e.value) for e in manifest_row.errors
            )
    return ValidationReport(rows=total, invalid=invalid, errors=tuple(problems))
