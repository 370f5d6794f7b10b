"""What the wave report shows, renderer aside: its input (the report document, the runs,
each row's trace of stages), built from journals (``journal_input``), and the one pass
that digests it: the stage funnel, failures grouped by class with a hint, durations per
stage, each partition's times. ``report.html`` draws it.
"""

from __future__ import annotations

import heapq
import math
import re
from array import array
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Any, Final

from ibimport.domain.results import RowStatus
from ibimport.domain.rowstate import ImageStatus, ended_done, reported_as
from ibimport.domain.stages import StageName
from ibimport.journal import JournalEntry, SqliteJournal


@dataclass(frozen=True, slots=True)
class StageSpan:
    """One stage of one row: when it started and ended (epoch s), its attempts, its outcome."""

    stage: StageName
    started_at: float
    ended_at: float
    attempts: int = 1
    outcome: str = ""


@dataclass(frozen=True, slots=True)
class RowTrace:
    """One row as the wave report sees it: its outcome, why, and its stages' times."""

    row: int
    name: str
    semantic_version: str
    status: RowStatus  # as the report words it (``reported_as``)
    partition: str = ""  # "account/region" (or the Region alone); empty: never placed
    error_code: str = ""
    error_message: str = ""
    image_status: str = ""  # rowstate.ImageStatus, once a wait learnt it
    image_reason: str = ""
    #: When the row last changed (epoch s): where a failure is marked on the timeline.
    ended_at: float | None = None
    spans: tuple[StageSpan, ...] = ()


@dataclass(frozen=True, slots=True)
class RunBand:
    """One run of the batch (one process), drawn as a band behind the timeline."""

    started_at: float
    ended_at: float
    interrupted: bool = False
    fatal: str | None = None


@dataclass(frozen=True, slots=True)
class HtmlInput:
    """Everything the wave report shows; ``rows`` is read once, in any order."""

    report: Mapping[str, Any]  # the JSON report document, embedded as it is
    rows: Iterable[RowTrace]
    runs: Sequence[RunBand] = ()
    title: str = "ibimport wave"
    sources: Sequence[str] = ()  # the journals it was read from, shown in the header
    #: The import stage's quota in calls/s where known (``--rate``, or the emulator's under
    #: ``--local``), by partition ("account/region"), by Region, or "*" for every partition.
    quotas: Mapping[str, float] = field(default_factory=dict)
    #: Per partition, its EC2 import task slots, where known (issue 19).
    slots: Mapping[str, int] = field(default_factory=dict)


# --------------------------------------------------------------------- from journals


def journal_input(
    stores: Sequence[SqliteJournal],
    *,
    report: Mapping[str, Any],
    title: str = "",
    quotas: Mapping[str, float] | None = None,
) -> HtmlInput:
    """What today's journals hold, as the report's input (rows streamed in row order).

    The import stage runs from a row's first send to its outcome (a span that started in
    an earlier run is counted from the run that finished it); a row with disks has its
    EC2 import task from start to end (the journal's ``tasks``), drawn against the slots.
    """
    runs = run_bands(report)
    starts = sorted(band.started_at for band in runs)
    followups = {key: value for store in stores for key, value in store.followups().items()}
    # The wave's EC2 import tasks (schema 6): each row's task from its start to its end,
    # drawn against its partition's slots (the quota the run found: ``importTasks``).
    tasks = {key: value for store in stores for key, value in store.task_records().items()}
    slots = {
        f"{t['account']}/{t['region']}" if t.get("account") else str(t.get("region", "")): int(
            t["quota"]
        )
        for t in report.get("importTasks", ())
        if t.get("quota")
    }

    def trace(entry: JournalEntry) -> RowTrace:
        spans: tuple[StageSpan, ...] = ()
        status = reported_as(entry.state)
        task = tasks.get((entry.name, entry.semantic_version))
        if task is not None and task.started_at is not None:
            ended = task.ended_at if task.ended_at is not None else entry.updated_at
            spans = (StageSpan(StageName.TASK_START, task.started_at, ended, 1, task.status),)
        if entry.first_sent_at is not None and status is not RowStatus.BLOCKED:
            ended = entry.updated_at
            begun = max(entry.first_sent_at, _last_before(starts, ended))
            attempts = max(entry.attempts, 1)
            spans = (*spans, StageSpan(StageName.IMPORT, begun, ended, attempts, status.value))
        learnt = followups.get((entry.name, entry.semantic_version))
        return RowTrace(
            row=entry.row,
            name=entry.name,
            semantic_version=entry.semantic_version,
            status=status,
            partition=f"{entry.account}/{entry.region}" if entry.account else entry.region,
            error_code=entry.error_code,
            error_message=entry.error_message,
            image_status=learnt.image_status if learnt else "",
            image_reason=learnt.image_reason if learnt else "",
            ended_at=entry.updated_at,
            spans=spans,
        )

    rows = (trace(e) for e in heapq.merge(*(s.entries() for s in stores), key=lambda e: e.row))
    manifest = Path(stores[0].header.manifest_path).name if stores else ""
    return HtmlInput(
        report=report,
        rows=rows,
        runs=runs,
        title=title or f"ibimport wave: {manifest}",
        sources=[str(store.path) for store in stores],
        quotas=quotas or {},
        slots=slots,
    )


def run_bands(report: Mapping[str, Any]) -> list[RunBand]:
    """The report's runs as bands: each from its start for its elapsed time."""
    bands = []
    for run in report.get("runs", []):
        started = run.get("started_at")
        if not isinstance(started, str):
            continue
        try:
            begun = datetime.fromisoformat(started).timestamp()
        except ValueError:
            continue
        elapsed = float(run.get("elapsed_s") or 0.0)
        bands.append(
            RunBand(begun, begun + elapsed, bool(run.get("interrupted")), run.get("fatal"))
        )
    return bands


def _last_before(starts: Sequence[float], instant: float) -> float:
    """The latest run start at or before ``instant`` (-inf if none)."""
    found = -math.inf
    for start in starts:  # kept to the second, rounded down: never after the real start
        if start <= instant:
            found = start
    return found


# --------------------------------------------------------------------- the page's parts

#: A failure class shows at most this many rows; the count is always exact.
ROWS_PER_CLASS: Final = 5
#: Classes shown; the rest are summed in one line. Distinct classes kept while reading.
CLASSES_SHOWN: Final = 40
_CLASSES_KEPT: Final = 2000
#: The slowest rows listed per stage.
SLOWEST: Final = 5

#: The funnel's steps, in order; a row stops at the first it does not reach.
FUNNEL: Final = ("rows", "task started", "task completed", "image imported", "AVAILABLE")


class FailureKind(StrEnum):
    """What kind of thing failed: where the fix lies."""

    MANIFEST = "manifest"
    TASK = "EC2 import task"
    PERMISSION = "IAM"
    QUOTA = "quota"
    IMPORT = "Image Builder"
    IMAGE = "image"
    UNFINISHED = "not finished"


#: What to do about a failure, by error code or by a phrase of EC2's or the image's message.
#: The task phrases are VM Import's documented ClientError/FirstBootFailure messages.
_HINTS: Final = {
    "invalid": "Fix the row (ibimport validate names the field and the rule), then re-run.",
    "TaskNotFound": "No such import task in this account and Region: check the "
    "vmImportTaskId and the row's region and profile.",
    "TaskFailed": "EC2 deleted the import task: read its message, export the VM again "
    "and give the new task's ID.",
    "TaskPending": "The import task had not completed: re-run with --preflight "
    "(--wait-for-tasks sends each row as its task completes).",
    "IdempotentParameterMismatchException": "The row's clientToken was used for another "
    "request: clear or change the row's clientToken.",
    "AccessDeniedException": "The caller may not import: see docs/iam-policy.json.",
    "UnauthorizedOperation": "The caller may not call EC2 here: see docs/iam-policy.json.",
    "ServiceQuotaExceededException": "An Image Builder quota is full: ask for more in "
    "Service Quotas, or delete images no longer needed.",
    "ResourceLimitExceeded": "EC2's import task slots were full: the wave retries later.",
    "CallRateLimitExceededException": "Throttled on every attempt: give a lower --rate "
    "or more --max-attempts, and re-run.",
    "ServiceException": "The service failed on every attempt: re-run (same clientToken).",
    "ServiceUnavailableException": "The service failed on every attempt: re-run "
    "(same clientToken).",
    "not finished": "Run the same command again: the row is sent with its recorded token.",
    "unsupported kernel": "The VM's kernel is not supported by VM Import: upgrade it.",
    "disk validation": "The import role cannot read the disk object, or it is not a "
    "supported disk image: check the role's S3 access and the format.",
    "no valid partitions": "The disk has no partition VM Import can read: check the export.",
    "first boot": "The VM did not boot in EC2: check its drivers (ENA, NVMe) and fstab.",
    "image failed": "The image did not become AVAILABLE: read the reason, fix the row "
    "and run with --force.",
}
_PHRASE_HINTS: Final = tuple((key, hint) for key, hint in _HINTS.items() if " " in key)
_PERMISSION_CODES: Final = frozenset(
    {"AccessDeniedException", "AccessDenied", "UnauthorizedOperation", "InvalidClientTokenId"}
)
_QUOTA_CODES: Final = frozenset(
    {"ServiceQuotaExceededException", "ResourceLimitExceeded", "ResourceCountLimitExceeded"}
)
#: IDs, ARNs, quoted values and any word with a digit in it (numbers, hex IDs, tokens)
#: vary between the rows of one class; the phrase does not.
_VARYING: Final = re.compile(
    r"arn:[\w:/.+=@-]+|\b(?:import-ami|ami|import-snap|snap|vol|i)-[0-9a-f]{8,}\b"
    r"|s3://\S+|'[^']*'|\"[^\"]*\"|[\w-]*\d[\w.-]*"
)
_PHRASE_LENGTH: Final = 140


def _phrase(message: str) -> str:
    """The part of a message that names the failure, not the row."""
    text = _VARYING.sub("…", " ".join(message.split()))
    return text if len(text) <= _PHRASE_LENGTH else text[: _PHRASE_LENGTH - 1] + "…"


@lru_cache(maxsize=4096)
def _hint(code: str, label: str = "") -> str:
    """A known phrase of the class's label first (it says more than its code), then the code."""
    text = label.lower()
    for phrase, hint in _PHRASE_HINTS:
        if phrase in text:
            return hint
    return _HINTS.get(code, "")


def failure_class(row: RowTrace) -> tuple[FailureKind, str, str] | None:
    """A row that did not end done: its kind, its class's label, and a hint (or "").

    None for a done row (imported, its image AVAILABLE or not followed).
    """
    if ended_done(row.status, row.image_status):
        return None
    status, code = row.status, row.error_code
    if status is RowStatus.INVALID:
        return FailureKind.MANIFEST, "invalid: " + _phrase(row.error_message), _HINTS["invalid"]
    if status is RowStatus.SKIPPED:
        label = _phrase(row.error_message) or "stopped before it finished"
        return FailureKind.UNFINISHED, label, _HINTS["not finished"]
    if status is RowStatus.BLOCKED:
        label = f"{code}: {_phrase(row.error_message)}" if row.error_message else code
        return FailureKind.TASK, label, _hint(code, label)
    if status is RowStatus.FAILED:
        kind = (
            FailureKind.PERMISSION
            if code in _PERMISSION_CODES
            else FailureKind.QUOTA
            if code in _QUOTA_CODES
            else FailureKind.IMPORT
        )
        label = f"{code}: {_phrase(row.error_message)}" if code else _phrase(row.error_message)
        return kind, label, _hint(code, label)
    reason = _phrase(row.image_reason)
    label = f"image {row.image_status}" + (f": {reason}" if reason else "")
    return FailureKind.IMAGE, label, _hint("image failed", label)


#: How the durations table names each stage.
_STAGE_LABELS: Final = {
    StageName.TASK_START: "EC2 task start (ImportImage)",
    StageName.TASK_CHECK: "EC2 task, started to completed",
    StageName.EXISTING: "existing images looked up",
    StageName.IMPORT: "import (ImportVmImage, first send to answer)",
    StageName.IMAGE_WAIT: "image, imported to final state",
}
#: The EC2 import task's stages: from its start to its completion, a slot is held.
_TASK_STAGES: Final = frozenset({StageName.TASK_START, StageName.TASK_CHECK})
#: A stage's outcomes that lose the row there.
_LOST: Final = frozenset({"failed", "cancelled", "deleted", "timed_out", "stalled"})


def funnel_step(row: RowTrace) -> tuple[int, str]:
    """How far along ``FUNNEL`` a row got, and why it stopped there ("" if it did not)."""
    status = row.status
    task = next((span for span in row.spans if span.stage in _TASK_STAGES), None)
    if status is RowStatus.INVALID:
        return 0, "invalid"
    if status is RowStatus.BLOCKED:
        if row.error_code == "TaskNotFound":
            return 0, "task not found"
        if row.error_code == "TaskPending":
            return 1, "task not completed"
        return 1, "task failed"
    if task is not None and task.stage is StageName.TASK_START and task.outcome in _LOST:
        return 0, f"task not started ({task.outcome.replace('_', ' ')})"
    ended = [span for span in row.spans if span.stage is StageName.TASK_CHECK]
    if ended and ended[-1].outcome in _LOST:
        return 1, f"task {ended[-1].outcome.replace('_', ' ')}"
    if status is RowStatus.FAILED:
        return 2, "import failed"
    if status is RowStatus.SKIPPED:
        return 2, "not finished"
    if row.image_status == ImageStatus.AVAILABLE:
        return 4, ""
    if row.image_status:
        return 3, f"image {row.image_status}"
    return 3, "not followed (no --wait)"


@dataclass(slots=True)
class _FailureClass:
    kind: FailureKind
    label: str
    hint: str
    count: int = 0
    rows: list[RowTrace] = field(default_factory=list)


@dataclass(slots=True)
class _Lane:
    """One partition's times, kept compactly until the time axis is known."""

    calls: array[float] = field(default_factory=lambda: array("d"))
    retries: array[float] = field(default_factory=lambda: array("d"))
    failures: array[float] = field(default_factory=lambda: array("d"))
    task_starts: array[float] = field(default_factory=lambda: array("d"))
    task_ends: array[float] = field(default_factory=lambda: array("d"))
    statuses: Counter[str] = field(default_factory=Counter)


@dataclass(slots=True)
class _Digest:
    """What one pass over the rows keeps: counts, groups, times; bounded but for the times."""

    rows: int = 0
    reached: list[int] = field(default_factory=lambda: [0] * len(FUNNEL))
    lost: list[Counter[str]] = field(default_factory=lambda: [Counter() for _ in FUNNEL])
    exists: int = 0
    classes: dict[tuple[FailureKind, str], _FailureClass] = field(default_factory=dict)
    other_classes: Counter[FailureKind] = field(default_factory=Counter)
    failures: int = 0
    durations: dict[StageName, array[float]] = field(default_factory=dict)
    slowest: dict[StageName, list[tuple[float, int, RowTrace]]] = field(default_factory=dict)
    lanes: dict[str, _Lane] = field(default_factory=dict)
    first: float = math.inf
    last: float = -math.inf

    def add(self, row: RowTrace) -> None:
        self.rows += 1
        step, why = funnel_step(row)
        for index in range(step + 1):
            self.reached[index] += 1
        if why:
            self.lost[step][why] += 1
        if row.status is RowStatus.EXISTS:
            self.exists += 1
        lane = self.lanes.get(row.partition)
        if lane is None:
            lane = self.lanes[row.partition] = _Lane()
        lane.statuses[row.status.value] += 1
        if row.image_status:
            lane.statuses["image:" + row.image_status] += 1
        found = failure_class(row)
        if found is not None:
            self.failures += 1
            self._group(row, *found)
            if row.ended_at is not None and row.status is not RowStatus.SKIPPED:
                lane.failures.append(row.ended_at)
        for span in row.spans:
            self._span(row, span, lane)
        task = [span for span in row.spans if span.stage in _TASK_STAGES]
        if task:  # one slot, from the task's start to its end, whatever stages it took
            lane.task_starts.append(min(span.started_at for span in task))
            lane.task_ends.append(max(span.ended_at for span in task))

    def _group(self, row: RowTrace, kind: FailureKind, label: str, hint: str) -> None:
        key = (kind, label)
        group = self.classes.get(key)
        if group is None:
            if len(self.classes) >= _CLASSES_KEPT:
                self.other_classes[kind] += 1
                return
            group = self.classes[key] = _FailureClass(kind, label, hint)
        group.count += 1
        if len(group.rows) < ROWS_PER_CLASS:
            group.rows.append(row)

    def _span(self, row: RowTrace, span: StageSpan, lane: _Lane) -> None:
        begun, ended = span.started_at, max(span.ended_at, span.started_at)
        self.first, self.last = min(self.first, begun), max(self.last, ended)
        took = ended - begun
        self.durations.setdefault(span.stage, array("d")).append(took)
        slowest = self.slowest.setdefault(span.stage, [])
        item = (took, -row.row, row)
        if len(slowest) < SLOWEST:
            heapq.heappush(slowest, item)
        elif item[:2] > slowest[0][:2]:
            heapq.heapreplace(slowest, item)
        if span.stage is StageName.IMPORT:
            # The last attempt is answered at the outcome; earlier ones (the retries) are
            # spread evenly before it, from the first send.
            n = max(span.attempts, 1)
            lane.calls.append(ended)
            for i in range(n - 1):
                lane.retries.append(begun + i * took / (n - 1))
