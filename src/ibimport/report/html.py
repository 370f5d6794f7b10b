"""The wave report: one self-contained HTML file a migration team looks at (issue 20).

Server-rendered tables and hand-written SVG, so it reads with JavaScript off and opens
without a network: no URL of any kind, a Content-Security-Policy that forbids every
request, and the JSON report once as a data island (``<script type="application/json"
id="report">``) for scripts. A few lines of JavaScript only sort and filter tables.

The renderer reads an ``HtmlInput``: the JSON report document, the batch's runs, and each
row's ``RowTrace`` (its outcome and its stages' times), streamed once with bounded memory
(failures are grouped and capped; only per-partition arrays of times grow with the rows).
``journal_input`` builds it from what journals hold today; it is the one place to change
when the journal records each stage's times.
"""

from __future__ import annotations

import base64
import bisect
import hashlib
import heapq
import json
import math
import re
from array import array
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from functools import cache, lru_cache
from pathlib import Path
from typing import Any, Final

import jinja2

from ibimport._files import atomic_private_file, check_paths
from ibimport.domain.results import RowStatus
from ibimport.domain.rowstate import ImageStatus, ended_done, reported_as
from ibimport.domain.stages import StageName
from ibimport.errors import ConfigError
from ibimport.journal import JournalEntry, SqliteJournal
from ibimport.report import FINAL_STATUSES

__all__ = [
    "HtmlInput",
    "RowTrace",
    "RunBand",
    "StageSpan",
    "journal_input",
    "render_html",
    "write_html_report",
]


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

    Only the import stage has times today: from a row's first send to its outcome (a
    span that started in an earlier run is counted from the run that finished it). The
    task stage's and the image stage's times come with the journal's stage records.
    """
    runs = run_bands(report)
    starts = sorted(band.started_at for band in runs)
    followups = {key: value for store in stores for key, value in store.followups().items()}

    def trace(entry: JournalEntry) -> RowTrace:
        spans: tuple[StageSpan, ...] = ()
        status = reported_as(entry.state)
        if entry.first_sent_at is not None and status is not RowStatus.BLOCKED:
            ended = entry.updated_at
            begun = max(entry.first_sent_at, _last_before(starts, ended))
            attempts = max(entry.attempts, 1)
            spans = (StageSpan(StageName.IMPORT, begun, ended, attempts, status.value),)
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


def write_html_report(
    path: Path,
    journals: Sequence[Path],
    *,
    report: Mapping[str, Any],
    title: str = "",
    quotas: Mapping[str, float] | None = None,
) -> Path:
    """Render the wave report of ``journals`` to ``path`` (0600, written beside then renamed).

    ``ConfigError`` if ``path`` is a journal, a folder, or cannot be written.
    """
    inputs = {f"journal {i + 1}": journal for i, journal in enumerate(journals)}
    check_paths(inputs=inputs, outputs={"--html": path})
    with ExitStack() as stack:
        stores = []
        for journal in journals:
            store = SqliteJournal.open_readonly(journal)
            stack.callback(store.close)
            stores.append(store)
        page = render_html(journal_input(stores, report=report, title=title, quotas=quotas))
    try:
        with atomic_private_file(path) as handle:
            handle.write(page)
    except OSError as error:
        raise ConfigError(f"--html: cannot write {path}: {error.strerror}") from None
    return path


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


# --------------------------------------------------------------------- the timeline's SVG

_WIDTH: Final = 960
_LEFT: Final = 64
_RIGHT: Final = 16
_PLOT: Final = _WIDTH - _LEFT - _RIGHT
_CHART_HEIGHT: Final = 84
#: Steps (seconds) a bin or a tick may take: readable from a 2-minute rehearsal to a long wave.
_STEPS: Final = (
    0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800,
    3600, 7200, 10800, 21600, 43200, 86400, 172800, 604800,
)  # fmt: skip
_MOST_BINS: Final = 120
_MOST_TICKS: Final = 8


def _step(span: float, most: int) -> float:
    for step in _STEPS:
        if span / step <= most:
            return float(step)
    return _STEPS[-1] * math.ceil(span / (_STEPS[-1] * most))


def _clock(seconds: float) -> str:
    """An offset from the wave's start, as a tick label: +45s, +12:30, +6h, +1d 06:00."""
    if seconds < 60 and seconds != int(seconds):
        return f"+{seconds:.1f}s"
    whole = round(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"+{days}d {hours:02d}:{minutes:02d}"
    if hours:
        return f"+{hours}h" if not (minutes or secs) else f"+{hours}:{minutes:02d}:{secs:02d}"
    if minutes:
        return f"+{minutes}:{secs:02d}"
    return f"+{secs}s"


def duration(seconds: float) -> str:
    """A duration as people read it: 850 ms, 4.2 s, 3 min 20 s, 2 h 05 min, 1 d 3 h."""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    if whole < 3600:
        minutes, secs = divmod(whole, 60)
        return f"{minutes} min {secs:02d} s" if secs else f"{minutes} min"
    if whole < 86400:
        hours, minutes = divmod(whole // 60, 60)
        return f"{hours} h {minutes:02d} min" if minutes else f"{hours} h"
    days, hours = divmod(whole // 3600, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def _nice_ceiling(value: float) -> float:
    """A round number at or above ``value``, a little above it (1 for nothing)."""
    if value <= 0:
        return 1.0
    power = 10.0 ** math.floor(math.log10(value))
    steps = (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10)
    return next(m * power for m in steps if m * power >= value * 0.999)


def _number(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 or value == int(value) else f"{value:.1f}"


@dataclass(frozen=True, slots=True)
class Axis:
    """The shared time axis: from the wave's first instant, in bins, with ticks."""

    start: float
    span: float
    bin_s: float
    bins: int
    ticks: tuple[tuple[float, str], ...]

    def x(self, instant: float) -> float:
        return round(_LEFT + (instant - self.start) / self.span * _PLOT, 1)

    def bin_of(self, instant: float) -> int:
        return min(max(int((instant - self.start) / self.bin_s), 0), self.bins - 1)

    @property
    def bin_width(self) -> float:
        return _PLOT / self.bins


def time_axis(first: float, last: float) -> Axis:
    """Bins and ticks chosen from the span: seconds for a rehearsal, hours for a long wave."""
    span = max(last - first, 1.0)
    bin_s = _step(span, _MOST_BINS)
    bins = max(math.ceil(span / bin_s), 1)
    span = bins * bin_s
    tick = _step(span, _MOST_TICKS)
    ticks, at = [], 0.0
    while at <= span + 1e-9:
        ticks.append((round(_LEFT + at / span * _PLOT, 1), _clock(at)))
        at += tick
    return Axis(first, span, bin_s, bins, tuple(ticks))


@dataclass(frozen=True, slots=True)
class Chart:
    """One chart of a partition's timeline, as the template draws it."""

    title: str
    unit: str
    y_max: str
    #: (x, y, width, height, tooltip) in the chart's own coordinates.
    bars: tuple[tuple[float, float, float, float, str], ...]
    over: tuple[tuple[float, float, float, float, str], ...] = ()  # stacked on top
    line_y: float | None = None  # the slot or quota line
    line_label: str = ""


@dataclass(frozen=True, slots=True)
class Lane:
    """One partition's timeline: its charts, its failures, the runs behind them."""

    partition: str
    charts: tuple[Chart, ...]
    failures: tuple[tuple[float, float, str], ...]  # (x, opacity, tooltip)
    height: int


def _bars(
    values: Sequence[float], axis: Axis, scale: float, unit: str, base: Sequence[float] = ()
) -> tuple[tuple[float, float, float, float, str], ...]:
    width = axis.bin_width
    bars = []
    for index, value in enumerate(values):
        if value <= 0:
            continue
        below = base[index] if base else 0.0
        height = value / scale * _CHART_HEIGHT
        top = _CHART_HEIGHT - (below / scale * _CHART_HEIGHT) - height
        at = _clock(index * axis.bin_s)
        bars.append(
            (
                round(_LEFT + index * width, 2),
                round(top, 2),
                round(max(width - 0.5, 0.6), 2),
                round(max(height, 0.8), 2),
                f"{at}: {_number(value)} {unit}",
            )
        )
    return tuple(bars)


def _lane(partition: str, lane: _Lane, axis: Axis, data: HtmlInput) -> Lane:
    charts = []
    if lane.task_starts:
        busy = [0.0] * axis.bins  # slot-seconds per bin, then the mean tasks active
        for begun, ended in zip(lane.task_starts, lane.task_ends, strict=True):
            first, last = axis.bin_of(begun), axis.bin_of(ended)
            for index in range(first, last + 1):
                lo = max(begun, axis.start + index * axis.bin_s)
                hi = min(ended, axis.start + (index + 1) * axis.bin_s)
                busy[index] += max(hi - lo, 0.0)
        active = [b / axis.bin_s for b in busy]
        slots = data.slots.get(partition)
        top = _nice_ceiling(max([*active, float(slots or 0)]) * 1.1)
        charts.append(
            Chart(
                title="EC2 import tasks active",
                unit="tasks",
                y_max=_number(top),
                bars=_bars(active, axis, top, "tasks active"),
                line_y=_CHART_HEIGHT - slots / top * _CHART_HEIGHT if slots else None,
                line_label=f"{slots} slots" if slots else "",
            )
        )
    if lane.calls:
        firsts, retried = [0.0] * axis.bins, [0.0] * axis.bins
        for instant in lane.calls:
            firsts[axis.bin_of(instant)] += 1.0 / axis.bin_s
        for instant in lane.retries:
            retried[axis.bin_of(instant)] += 1.0 / axis.bin_s
        region = partition.rpartition("/")[2]
        quota = data.quotas.get(partition) or data.quotas.get(region) or data.quotas.get("*")
        peak = max(f + r for f, r in zip(firsts, retried, strict=True))
        top = _nice_ceiling(max(peak, quota or 0.0) * 1.1)
        charts.append(
            Chart(
                title="ImportVmImage calls per second",
                unit="calls/s",
                y_max=_number(top),
                bars=_bars(firsts, axis, top, "calls/s"),
                over=_bars(retried, axis, top, "retries/s", base=firsts),
                line_y=_CHART_HEIGHT - quota / top * _CHART_HEIGHT if quota else None,
                line_label=f"quota {_number(quota)}/s" if quota else "",
            )
        )
    marks: Counter[int] = Counter(axis.bin_of(instant) for instant in lane.failures)
    most = max(marks.values(), default=1)
    failures = tuple(
        (
            round(_LEFT + (index + 0.5) * axis.bin_width, 1),
            round(0.35 + 0.65 * n / most, 2),
            f"{_clock(index * axis.bin_s)}: {n} failed",
        )
        for index, n in sorted(marks.items())
    )
    height = len(charts) * (_CHART_HEIGHT + 30) + 58
    return Lane(partition or "(not placed)", tuple(charts), failures, height)


# --------------------------------------------------------------------- rendering


@dataclass(frozen=True, slots=True)
class FunnelStep:
    label: str
    count: int
    width: float  # percent of the rows
    lost: tuple[tuple[str, int], ...]  # lost after this step, and why


def _percentile(sorted_values: Sequence[float], p: float) -> float:
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


@cache
def _environment() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("ibimport.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["duration"] = duration
    environment.filters["number"] = lambda value: f"{value:,}"
    return environment


#: The page's only script: sorting and filtering tables. Its hash goes in the page's CSP.
_SCRIPT: Final = """
document.querySelectorAll("table.sortable th").forEach(function (th, column) {
  th.tabIndex = 0;
  th.title = "sort";
  th.addEventListener("click", function () {
    var table = th.closest("table"), body = table.tBodies[0];
    var index = Array.prototype.indexOf.call(th.parentNode.children, th);
    var down = th.dataset.order !== "asc";
    th.parentNode.querySelectorAll("th").forEach(function (h) { delete h.dataset.order; });
    th.dataset.order = down ? "asc" : "desc";
    var key = function (tr) {
      var cell = tr.children[index], text = cell ? (cell.dataset.sort || cell.textContent) : "";
      var n = parseFloat(text.replace(/,/g, ""));
      return isNaN(n) ? text.toLowerCase() : n;
    };
    Array.prototype.slice.call(body.rows).sort(function (a, b) {
      var x = key(a), y = key(b);
      return (x < y ? -1 : x > y ? 1 : 0) * (down ? 1 : -1);
    }).forEach(function (tr) { body.appendChild(tr); });
  });
});
document.querySelectorAll("input[data-filter]").forEach(function (input) {
  input.hidden = false;
  var items = document.querySelectorAll(input.dataset.filter);
  input.addEventListener("input", function () {
    var words = input.value.toLowerCase().split(/\\s+/).filter(Boolean);
    items.forEach(function (item) {
      var text = item.textContent.toLowerCase();
      item.hidden = !words.every(function (w) { return text.indexOf(w) >= 0; });
    });
  });
});
""".strip()


def _island(report: Mapping[str, Any]) -> str:
    """The report as JSON that cannot end its script element (``<``, ``>``, ``&`` escaped)."""
    text = json.dumps(report, ensure_ascii=False, indent=1)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render_html(data: HtmlInput, *, generated_at: datetime | None = None) -> str:
    """The wave report as one HTML document (reads ``data.rows`` once)."""
    digest = _Digest()
    for row in data.rows:
        digest.add(row)
    report = data.report
    totals = report.get("totals", {})
    instants = [t for band in data.runs for t in (band.started_at, band.ended_at)]
    for lane in digest.lanes.values():
        for times in (lane.calls, lane.retries, lane.failures, lane.task_starts, lane.task_ends):
            if times:
                instants.extend((min(times), max(times)))
    axis = time_axis(min(instants), max(instants)) if instants else None
    runs_drawn = _runs_reaching(data.runs, digest)
    lanes = (
        [_lane(p, lane, axis, data) for p, lane in sorted(digest.lanes.items()) if p]
        if axis is not None
        else []
    )
    bands = (
        [
            (
                axis.x(band.started_at),
                max(axis.x(band.ended_at) - axis.x(band.started_at), 1.0),
                index,
                band,
            )
            for index, band in enumerate(runs_drawn, start=1)
        ]
        if axis is not None
        else []
    )
    rows = digest.rows or 1
    funnel = [
        FunnelStep(
            label,
            digest.reached[i],
            round(100.0 * digest.reached[i] / rows, 2),
            tuple(digest.lost[i].most_common()),
        )
        for i, label in enumerate(FUNNEL)
    ]
    stages = []
    for stage in StageName:
        values = digest.durations.get(stage)
        if not values:
            continue
        ordered = sorted(values)
        slowest = sorted(digest.slowest[stage], reverse=True)
        stages.append(
            {
                "stage": _STAGE_LABELS.get(stage, stage.value),
                "count": len(ordered),
                "p50": _percentile(ordered, 50),
                "p90": _percentile(ordered, 90),
                "max": ordered[-1],
                "slowest": [(took, row) for took, _, row in slowest],
            }
        )
    classes = sorted(digest.classes.values(), key=lambda c: (-c.count, c.kind, c.label))
    shown, hidden = classes[:CLASSES_SHOWN], classes[CLASSES_SHOWN:]
    hidden_rows = sum(c.count for c in hidden) + sum(digest.other_classes.values())
    partitions = []
    for name, lane in sorted(digest.lanes.items()):
        rows_in = sum(n for key, n in lane.statuses.items() if not key.startswith("image:"))
        partitions.append(
            {"name": name or "(not placed)", "rows": rows_in, "counts": lane.statuses}
        )
    summed: Counter[str] = Counter()
    for lane in digest.lanes.values():
        summed.update(lane.statuses)
    images = sorted({key[6:] for key in summed if key.startswith("image:")})
    runs = list(report.get("runs", []))
    started = data.runs[0].started_at if data.runs else digest.first
    context = {
        "title": data.title,
        "sources": data.sources,
        "generated": (generated_at or datetime.now().astimezone()).isoformat(timespec="seconds"),
        "started": datetime.fromtimestamp(started).astimezone().isoformat(timespec="seconds")
        if math.isfinite(started)
        else "",
        "report": report,
        "totals": totals,
        "statuses": [status.value for status in FINAL_STATUSES],
        "done": sum(int(totals.get(s, 0)) for s in ("succeeded", "exists")),
        "available": int(report.get("imageStatus", {}).get("AVAILABLE", 0)),
        "failures": digest.failures,
        "funnel": funnel,
        "exists": digest.exists,
        "axis": axis,
        "lanes": lanes,
        "has_tasks": any(lane.task_starts for lane in digest.lanes.values()),
        "has_calls": any(lane.calls for lane in digest.lanes.values()),
        "bands": bands,
        "chart_height": _CHART_HEIGHT,
        "width": _WIDTH,
        "left": _LEFT,
        "plot": _PLOT,
        "stages": stages,
        "classes": shown,
        "hidden_classes": len(hidden) + len(digest.other_classes),
        "hidden_rows": hidden_rows,
        "rows_per_class": ROWS_PER_CLASS,
        "partitions": partitions,
        "images": images,
        "summed": summed,
        "runs": runs,
        "batch": report.get("batch", {}),
        "island": _island(report),
        "script": _SCRIPT,
        "csp": _policy(),
    }
    return _environment().get_template("wave.html.j2").render(context)


def _runs_reaching(runs: Sequence[RunBand], digest: _Digest) -> list[RunBand]:
    """Each run drawn to its last event: a stopped run drains its calls after its figures end."""
    instants = sorted(
        t
        for lane in digest.lanes.values()
        for times in (lane.calls, lane.retries, lane.failures, lane.task_ends)
        for t in times
    )
    drawn = []
    for index, band in enumerate(runs):
        following = runs[index + 1].started_at if index + 1 < len(runs) else math.inf
        last = bisect.bisect_left(instants, following) - 1
        reach = instants[last] if last >= 0 and instants[last] >= band.started_at else 0.0
        drawn.append(replace(band, ended_at=max(band.ended_at, reach)))
    return drawn


def _policy() -> str:
    """No request may leave the page: nothing loads; only the inline style and our script."""
    digest = base64.b64encode(hashlib.sha256(_SCRIPT.encode()).digest()).decode()
    return f"default-src 'none'; style-src 'unsafe-inline'; script-src 'sha256-{digest}'"
