"""What a person reads on the terminal at the end of a run: the CLI's presentation."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from rich.table import Table
from rich.text import Text

from ibimport import FINAL_STATUSES, BatchStatus, ImageStatus, RowStatus, RunStats

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


def next_steps(found: BatchStatus, *, limit: int = 5) -> list[str]:
    """What to do after a run that left work: the rows and images to look at, and the
    commands that resume the batch and follow its images (empty: nothing left to do)."""
    lines: list[str] = []
    plan = found.rerun
    if plan.resend:
        lines.append(f"{plural(plan.resend, 'row')} not sent")
    failed = found.counts.get(RowStatus.FAILED, 0) + found.counts.get(RowStatus.BLOCKED, 0)
    if failed:
        lines.append(f"{plural(failed, 'row')} failed or blocked, the first:")
        lines.extend(
            f"  row {r.row} {r.name} {r.semantic_version}: {r.state} {r.code}"
            for r in found.rows[:limit]
        )
    if (plan.resend or plan.retry or plan.recheck) and found.resume_command:
        lines.append("the same command resumes the batch (done rows are not sent again):")
        lines.append("  " + found.resume_command)
    if found.image_rows:
        lines.append("images not AVAILABLE, the first:")
        lines.extend(
            f"  row {r.row} {r.name} {r.semantic_version}: {r.state}"
            + (f" ({r.code})" if r.code else "")
            for r in found.image_rows[:limit]
        )
    if found.images.get(ImageStatus.TIMED_OUT):
        lines.append("follow the images still being built with:")
        lines.append("  " + found.wait_command)
    return lines
