"""The wave report: one self-contained HTML file a migration team looks at (issue 20).

Server-rendered tables and hand-written SVG, so it reads with JavaScript off and opens
without a network: no URL of any kind, a Content-Security-Policy that forbids every
request, and the JSON report once as a data island (``<script type="application/json"
id="report">``) for scripts. A few lines of JavaScript only sort and filter tables.

It draws what ``report.wave`` digests from an ``HtmlInput`` (the JSON report document, the
batch's runs, each row's stages and times, streamed once with bounded memory): the time
axis and bins chosen from the span, the SVG charts, the Jinja2 template, the file.
"""

from __future__ import annotations

import base64
import bisect
import hashlib
import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, replace
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any, Final

import jinja2

from ibimport._files import atomic_private_file, check_paths
from ibimport.domain.stages import StageName
from ibimport.errors import ConfigError
from ibimport.journal import SqliteJournal
from ibimport.report import FINAL_STATUSES
from ibimport.report.wave import (
    _STAGE_LABELS,
    CLASSES_SHOWN,
    FUNNEL,
    ROWS_PER_CLASS,
    HtmlInput,
    RunBand,
    _Digest,
    _Lane,
    journal_input,
)

__all__ = ["render_html", "write_html_report"]


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
