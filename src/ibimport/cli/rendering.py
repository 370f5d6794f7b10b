"""What a person reads on the terminal at the end of a run: the CLI's presentation."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from rich.table import Table
from rich.text import Text

from ibimport import FINAL_STATUSES, BatchStatus, ImageStatus, RowResult, RowStatus, RunStats

__all__ = ["next_steps", "plural", "summary_table"]


def plural(n: int, singular: str, plural_form: str | None = None) -> str:
    """``1 retry``, ``2 retries``: counts in English for people."""
    return f"{n} {singular if n == 1 else plural_form or singular + 's'}"


def _duration(seconds: float) -> str:
    whole = int(seconds)
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


#: A run whose process used this share of a core or more was limited by the client's CPU.
CPU_BOUND_SHARE = 0.85
#: ... over at least this long (a short run's start-up alone keeps a core busy).
CPU_BOUND_MIN_S = 5.0


def summary_table(
    stats: RunStats,
    *,
    report_path: Path | None,
    results_path: Path | None,
    title: str = "ibimport run",
) -> Table:
    """The end-of-run summary for the terminal: outcomes, calls, speed, errors, where files went."""
    title = f"{title}: interrupted" if stats.interrupted else title
    table = Table(title=title, show_header=False, title_justify="left", box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_column()

    styles = {RowStatus.SUCCEEDED: "green", RowStatus.EXISTS: "green", RowStatus.FAILED: "red"}
    table.add_row("rows", str(stats.rows), "")
    for status in FINAL_STATUSES:
        count = stats.totals[status]
        style = styles.get(status, "yellow") if count else "dim"
        table.add_row(f"  {status.value}", Text(str(count), style=style), "")
    if stats.resumed:
        table.add_row("  resumed", str(stats.resumed), "done by an earlier run, not sent")
    table.add_row(
        "calls",
        str(stats.calls),
        f"{plural(stats.retries, 'retry', 'retries')}, {stats.throttled} throttled",
    )
    if stats.started_at is not None:
        started = datetime.fromtimestamp(stats.started_at).astimezone()
        table.add_row("started", "", started.isoformat(sep=" ", timespec="seconds"))
    # A run that imported nothing (every image already there) claims no speed of import.
    speed = (
        f"{stats.throughput_per_s:.1f} rows/s imported this run"
        if stats.imported and stats.calls
        else "nothing imported this run"
    )
    table.add_row("elapsed", _duration(stats.elapsed_s), speed)
    if stats.latency.count:
        pct = stats.latency_percentiles()
        table.add_row(
            "latency",
            f"{pct['p50']:.0f} ms",
            f"p50; p95 {pct['p95']:.0f} ms, p99 {pct['p99']:.0f} ms, max {pct['max']:.0f} ms",
        )
    # Calls, not rows: labelled apart from the rows' "failed" above.
    shown = 5
    for i, (code, count) in enumerate(stats.errors_by_code.most_common(shown)):
        table.add_row("call errors" if i == 0 else "", str(count), Text(code))
    if len(stats.errors_by_code) > shown:
        others = len(stats.errors_by_code) - shown
        table.add_row("", "", f"... and {plural(others, 'other code')}")
    if len(stats.partitions) > 1:
        for i, part in enumerate(stats.partitions):
            where = f"{part['account'] or 'default'}/{part['region']}"
            failed = part.get("failed", 0) + part.get("skipped", 0)
            detail = (
                f"{where}: {part['calls_per_s']:.1f} calls/s, "
                f"{plural(part['throttled'], 'throttle')}, {failed} not done"
            )
            table.add_row("partitions" if i == 0 else "", str(part["rows"]), Text(detail))
    share = stats.client_cpu_share
    if share is not None and share >= CPU_BOUND_SHARE and stats.elapsed_s >= CPU_BOUND_MIN_S:
        table.add_row(
            "client CPU",
            f"{share:.0%}",
            "of one core: the client's CPU, not the service's quotas, limited this run",
        )
    if report_path is not None:
        table.add_row("report", "", Text(str(report_path)))
    if results_path is not None:
        table.add_row("results", "", Text(str(results_path)))
    return table


def next_steps(
    stats: RunStats,
    *,
    rows: Sequence[RowResult],
    resume: str | None,
    images: BatchStatus | None = None,
    limit: int = 5,
) -> list[str]:
    """What to do after a run that left work (empty: nothing left to do).

    ``rows``: the first failed or blocked rows, as the run saw them; ``resume``: the
    command that resumes the batch; ``images``: after a wait, the journal's view of the
    images (the rows whose image is not AVAILABLE, and the command that follows them).
    Nothing here reads the whole journal: a stopped million-row run ends in seconds.
    """
    lines: list[str] = []
    not_sent = stats.totals[RowStatus.SKIPPED]
    troubled = stats.totals[RowStatus.FAILED] + stats.totals[RowStatus.BLOCKED]
    if not_sent:
        lines.append(f"{plural(not_sent, 'row')} not sent")
    if troubled:
        lines.append(f"{plural(troubled, 'row')} failed or blocked, the first:")
        lines.extend(
            f"  row {r.row} {r.name} {r.semantic_version}: {r.status.value} {r.error_code}"
            for r in rows[:limit]
        )
    if (not_sent or troubled) and resume:
        lines.append("the same command resumes the batch (done rows are not sent again):")
        lines.append("  " + resume)
    if images is not None and images.image_rows:
        lines.append("images not AVAILABLE, the first:")
        lines.extend(
            f"  row {r.row} {r.name} {r.semantic_version}: {r.state}"
            + (f" ({r.code})" if r.code else "")
            for r in images.image_rows[:limit]
        )
    if (
        images is not None
        and images.images.get(ImageStatus.TIMED_OUT)
        and not images.recorded.local
    ):
        lines.append("follow the images still being built with:")
        lines.append("  " + images.wait_command)
    return lines
