"""The wave report's renderer, from a typed input alone (no journal, no browser).

The browser tests (tests/integration/test_html_report.py; this file has another name
because pytest needs unique test module basenames) open real pages in Chromium;
these check what the page says and how it scales: funnel, failure classes, time axis,
the JSON island, and that nothing in it can load anything.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Iterator
from html.parser import HTMLParser
from typing import Any

import pytest

from ibimport.domain.results import RowStatus
from ibimport.domain.stages import StageName
from ibimport.report.html import render_html, time_axis
from ibimport.report.wave import (
    CLASSES_SHOWN,
    ROWS_PER_CLASS,
    HtmlInput,
    RowTrace,
    RunBand,
    StageSpan,
    failure_class,
    funnel_step,
)

T0 = 1_800_000_000.0


class _Page(HTMLParser):
    """What a test reads from a page: text by element id, every URL-bearing attribute."""

    def __init__(self, page: str) -> None:
        super().__init__(convert_charrefs=True)
        self.attributes: list[tuple[str, str, str]] = []
        self.scripts: list[tuple[dict[str, str | None], str]] = []
        self.styles: list[str] = []
        self._script: dict[str, str | None] | None = None
        self._style = False
        self.text: list[str] = []
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            self.attributes.append((tag, name, value or ""))
        if tag == "script":
            self._script = dict(attrs)
        self._style = tag == "style"

    def handle_endtag(self, tag: str) -> None:
        self._script = None
        self._style = False

    def handle_data(self, data: str) -> None:
        if self._script is not None:
            self.scripts.append((self._script, data))
        elif self._style:
            self.styles.append(data)
        else:
            self.text.append(data)

    def island(self) -> Any:
        (text,) = [data for attrs, data in self.scripts if attrs.get("id") == "report"]
        return json.loads(text)


def _report(rows: int, **totals: int) -> dict[str, Any]:
    counts = {s: totals.get(s, 0) for s in ("succeeded", "exists", "failed", "blocked")}
    counts |= {s: totals.get(s, 0) for s in ("invalid", "skipped")}
    return {
        "totals": {"rows": rows, **counts},
        "runs": [],
        "batch": {"runs": 0, "calls": 0, "retries": 0, "throttled": 0, "elapsed_s": 0.0},
    }


def _row(row: int, status: RowStatus, **fields: Any) -> RowTrace:
    return RowTrace(
        row=row,
        name=f"vm-{row:05d}",
        semantic_version="1.0.0",
        status=status,
        partition=fields.pop("partition", "123456789012/us-east-1"),
        **fields,
    )


def _imported(
    row: int, *, at: float, took: float = 2.0, attempts: int = 1, **fields: Any
) -> RowTrace:
    span = StageSpan(StageName.IMPORT, at, at + took, attempts, "succeeded")
    return _row(row, RowStatus.SUCCEEDED, ended_at=at + took, spans=(span,), **fields)


def test_the_funnel_counts_each_row_once_and_says_where_it_was_lost() -> None:
    rows = [
        _row(1, RowStatus.INVALID, error_message="name: is required"),
        _row(2, RowStatus.BLOCKED, error_code="TaskNotFound", error_message="no such task"),
        _row(3, RowStatus.BLOCKED, error_code="TaskFailed", error_message="ClientError: x"),
        _row(4, RowStatus.FAILED, error_code="AccessDeniedException", error_message="denied"),
        _row(5, RowStatus.SKIPPED),
        _imported(6, at=T0, image_status="AVAILABLE"),
        _imported(7, at=T0, image_status="FAILED", image_reason="boot failed"),
        _row(8, RowStatus.EXISTS, image_status="AVAILABLE"),
        _imported(9, at=T0),
    ]
    assert [funnel_step(r)[0] for r in rows] == [0, 0, 1, 2, 2, 4, 3, 4, 3]
    page = _Page(render_html(HtmlInput(report=_report(9), rows=rows)))
    text = " ".join(page.text)

    steps = re.findall(r'data-step="([^"]+)">([\d,]+)<', render_html(HtmlInput(_report(9), rows)))
    assert steps == [
        ("rows", "9"),
        ("task started", "7"),
        ("task completed", "6"),
        ("image imported", "4"),
        ("AVAILABLE", "2"),
    ]
    assert "1 invalid, 1 task not found" in text
    assert "1 import failed, 1 not finished" in text
    assert "1 image FAILED, 1 not followed (no --wait)" in text
    assert "1 already existed" in text


def test_failure_classes_group_rows_by_phrase_not_by_their_ids() -> None:
    a = _row(1, RowStatus.BLOCKED, error_code="TaskFailed",
             error_message="import task import-ami-0123456789abcdef0 failed: ClientError: "
             "Unsupported kernel version 5.19.0")  # fmt: skip
    b = _row(2, RowStatus.BLOCKED, error_code="TaskFailed",
             error_message="import task import-ami-0fedcba9876543210 failed: ClientError: "
             "Unsupported kernel version 6.1.2")  # fmt: skip
    denied = _row(3, RowStatus.FAILED, error_code="AccessDeniedException", error_message="no")
    quota = _row(4, RowStatus.FAILED, error_code="ServiceQuotaExceededException")

    assert failure_class(a) == failure_class(b)
    hex_a, hex_b = (
        _row(i, RowStatus.FAILED, error_code="ServiceException", error_message=f"request {rid}")
        for i, rid in ((7, "4a6f91c2-77e0"), (8, "0b7e12aa-1f00"))
    )
    assert failure_class(hex_a) == failure_class(hex_b)
    kind, label, hint = failure_class(a)  # type: ignore[misc]
    assert kind == "EC2 import task"
    assert "import-ami" not in label
    assert "Unsupported kernel" in label
    assert "kernel" in hint
    assert failure_class(denied)[0] == "IAM"  # type: ignore[index]
    assert failure_class(quota)[0] == "quota"  # type: ignore[index]
    assert failure_class(_imported(5, at=T0, image_status="AVAILABLE")) is None
    assert failure_class(_imported(6, at=T0)) is None  # not followed: done as far as known


def _many_failures(n: int) -> Iterator[RowTrace]:
    for i in range(1, n + 1):
        if i % 10 == 0:  # a tenth with a message of its own: many classes
            yield _row(i, RowStatus.FAILED, error_code=f"Code{i % 997}", error_message="x")
        else:
            message = f"internal error, request {i}"
            yield _row(i, RowStatus.FAILED, error_code="ServiceException", error_message=message)


def test_a_hundred_thousand_failures_stay_a_small_page_with_exact_counts() -> None:
    n = 100_000
    report = _report(n, failed=n)
    report["runs"] = [{"started_at": "2027-01-15T08:00:00+00:00", "elapsed_s": 1000.0}]
    page = render_html(
        HtmlInput(
            report=report,
            rows=_many_failures(n),
            runs=[RunBand(T0, T0 + 1000.0)],
        )
    )

    assert len(page.encode()) < 400_000
    counts = [int(c.replace(",", "")) for c in re.findall(r'class="count">([\d,]+)<', page)]
    assert len(counts) == CLASSES_SHOWN
    assert counts[0] == n - n // 10  # one class for every ServiceException, IDs aside
    shown_rows = re.findall(r"<tr><td class=\"n\">\d+</td><td>vm-", page)
    assert len(shown_rows) <= CLASSES_SHOWN * ROWS_PER_CLASS
    more = re.search(r"and ([\d,]+) more classes \(([\d,]+) rows\)", page)
    assert more is not None
    hidden_rows = int(more.group(2).replace(",", ""))
    assert sum(counts) + hidden_rows == n
    assert f'data-total="failed">{n:,}<' in page


@pytest.mark.parametrize(
    ("span_s", "bin_s", "last_tick"),
    [
        (120.0, 1.0, "+2:00"),  # a two-minute rehearsal: seconds
        (2 * 86400.0, 1800.0, "+2d 00:00"),  # a two-day wave: half hours, day ticks
        (3 * 3600.0 + 17, 120.0, "+3h"),
    ],
)
def test_the_time_axis_is_chosen_from_the_span(span_s: float, bin_s: float, last_tick: str) -> None:
    axis = time_axis(T0, T0 + span_s)

    assert axis.bin_s == bin_s
    assert axis.bins <= 120
    assert axis.bins * axis.bin_s >= span_s
    assert 3 <= len(axis.ticks) <= 9
    assert axis.ticks[0][1] == "+0s"
    assert axis.ticks[-1][1] == last_tick
    xs = [x for x, _ in axis.ticks]
    assert xs == sorted(xs)


def test_the_island_is_the_report_and_cannot_end_its_script() -> None:
    report = _report(1, failed=1)
    report["errors_by_code"] = {"</script><script>alert(1)</script>": 1, "a&b": 2}
    row = _row(1, RowStatus.FAILED, error_code="<img src=x onerror=alert(1)>", error_message="<b>")

    text = render_html(HtmlInput(report=report, rows=[row], title="<i>wave</i>"))
    page = _Page(text)

    assert page.island() == report
    assert "<script><" not in text
    assert "<img src=x" not in text
    assert "<i>wave" not in text
    assert "&lt;img src=x onerror=alert(1)&gt;" in text


def test_nothing_in_the_page_names_a_url_and_the_policy_allows_only_its_own_script() -> None:
    rows = [_imported(i, at=T0 + i, attempts=1 + i % 3) for i in range(1, 200)]
    page_text = render_html(
        HtmlInput(report=_report(199, succeeded=199), rows=rows, runs=[RunBand(T0, T0 + 210)])
    )
    page = _Page(page_text)

    assert not re.search(r"https?:", page_text, re.IGNORECASE)
    urls = [v for _, name, v in page.attributes if name in {"src", "href", "xlink:href"}]
    assert urls == []
    assert not any("url(" in style for style in page.styles)
    (policy,) = [v for _, name, v in page.attributes if name == "content" and "default-src" in v]
    assert "default-src 'none'" in policy
    (code,) = [data for attrs, data in page.scripts if "type" not in attrs]
    digest = base64.b64encode(hashlib.sha256(code.encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in policy


def test_the_timeline_draws_calls_retries_runs_and_failures_per_partition() -> None:
    rows = [
        *(_imported(i, at=T0 + i * 0.5, attempts=2 if i % 4 == 0 else 1) for i in range(1, 100)),
        _row(
            100,
            RowStatus.FAILED,
            error_code="X",
            ended_at=T0 + 30,
            partition="123456789012/eu-west-1",
        ),
    ]
    page = render_html(
        HtmlInput(
            report=_report(100, succeeded=99, failed=1),
            rows=rows,
            runs=[RunBand(T0, T0 + 20, interrupted=True), RunBand(T0 + 25, T0 + 60)],
            quotas={"123456789012/us-east-1": 10.0},
        )
    )

    assert page.count('aria-label="timeline of') == 2
    assert page.count('class="retry"') > 0
    assert "quota 10/s" in page
    assert page.count(">stopped</text>") == 2  # one per partition's timeline
    assert page.count('class="fail"') == 1
    assert "tasks active" not in page.split('<h2 id="timeline">')[1].split("</svg>")[0]


def test_an_import_task_stage_is_drawn_against_its_slots() -> None:
    rows = [
        _row(
            i,
            RowStatus.SUCCEEDED,
            spans=(
                StageSpan(StageName.TASK_START, T0 + i, T0 + i + 1),
                StageSpan(StageName.TASK_CHECK, T0 + i + 1, T0 + i + 600, outcome="completed"),
            ),
        )
        for i in range(40)
    ]
    page = render_html(
        HtmlInput(
            report=_report(40, succeeded=40),
            rows=rows,
            slots={"123456789012/us-east-1": 20},
        )
    )

    assert "EC2 import tasks active" in page
    assert "20 slots" in page
    assert page.count('class="task"') > 10
    assert "task_check" in page or "EC2 task" in page


def test_durations_per_stage_give_percentiles_and_the_slowest_rows() -> None:
    rows = [_imported(i, at=T0, took=float(i)) for i in range(1, 101)]

    page = _Page(render_html(HtmlInput(report=_report(100, succeeded=100), rows=rows)))
    text = " ".join(page.text)

    assert "50.0 s" in text
    assert "1 min 30 s" in text
    assert "1 min 40 s" in text
    assert "row 100 vm-00100 1.0.0 (1 min 40 s)" in text
    assert "row 96 " in text
    assert "row 95 " not in text
