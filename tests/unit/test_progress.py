"""The progress display in its three modes, driven by a fake clock (no sleeps)."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from ibimport.cli.progress import ProgressListener, slowest_eta
from ibimport.domain.results import RowResult, RowStatus
from ibimport.engine.events import CallEvent, CallOutcome
from ibimport.testing import FakeClock


def _console(*, terminal: bool) -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=terminal, width=120, color_system=None), out


def _call(row: int, outcome: CallOutcome = CallOutcome.OK, *, attempt: int = 1) -> CallEvent:
    return CallEvent(row=row, attempt=attempt, latency_s=0.1, outcome=outcome)


def _done(row: int, status: RowStatus = RowStatus.SUCCEEDED, *, resumed: bool = False) -> RowResult:
    return RowResult(row=row, name="n", semantic_version="1.0.0", status=status, resumed=resumed)


def test_auto_mode_picks_plain_off_a_terminal_and_bar_on_one() -> None:
    assert ProgressListener(_console(terminal=False)[0]).display == "plain"
    assert ProgressListener(_console(terminal=True)[0]).display == "bar"
    assert ProgressListener(_console(terminal=True)[0], mode="plain").display == "plain"


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="progress mode"):
        ProgressListener(_console(terminal=False)[0], mode="fancy")


def test_plain_mode_prints_a_line_only_once_the_interval_has_passed() -> None:
    console, out = _console(terminal=False)
    clock = FakeClock(start=100.0)
    progress = ProgressListener(console, mode="plain", clock=clock.now, interval_s=5.0)
    progress.on_start(total_rows=10)
    progress.on_row_done(_done(9, resumed=True))  # done earlier: counts toward done, not rate
    for row in (1, 2, 3):
        progress.on_call(_call(row, CallOutcome.THROTTLED))
        progress.on_call(_call(row, attempt=2))
    progress.on_row_done(_done(1))
    progress.on_row_done(_done(2, RowStatus.FAILED))
    clock.advance(4.9)
    progress.on_row_done(_done(3))
    assert out.getvalue() == ""

    clock.advance(0.1)  # 5 s after start: 6 calls, 3 rows this run, 6 rows left
    progress.on_call(_call(4))
    assert out.getvalue().splitlines() == [
        "4/10 rows, 1.4 calls/s, 3 retries, 3 throttled, 1 failed, ETA 0:00:10",
    ]

    clock.advance(1.0)  # not yet another interval
    progress.on_call(_call(5))
    assert len(out.getvalue().splitlines()) == 1
    clock.advance(4.0)
    progress.on_row_done(_done(4))
    assert len(out.getvalue().splitlines()) == 2
    progress.stop()


def test_plain_line_without_total_or_rate_has_no_eta() -> None:
    console, out = _console(terminal=False)
    clock = FakeClock(start=100.0)
    progress = ProgressListener(console, mode="plain", clock=clock.now, interval_s=1.0)
    progress.on_start(total_rows=None)
    clock.advance(2.0)
    progress.on_call(_call(1))
    assert (
        out.getvalue().strip()
        == "0 rows, 0.5 calls/s, 0 retries, 0 throttled, 0 failed, ETA --:--:--"
    )


def test_plain_mode_stops_printing_after_stop() -> None:
    console, out = _console(terminal=False)
    clock = FakeClock(start=100.0)
    progress = ProgressListener(console, mode="plain", clock=clock.now, interval_s=1.0)
    with progress:
        progress.on_start(total_rows=3)
    clock.advance(10)
    progress.on_call(_call(1))
    progress.tick()
    assert out.getvalue() == ""


@pytest.mark.parametrize("terminal", [False, True])
def test_off_mode_prints_nothing(terminal: bool) -> None:
    console, out = _console(terminal=terminal)
    clock = FakeClock(start=100.0)
    progress = ProgressListener(console, mode="off", clock=clock.now, interval_s=1.0)
    progress.on_start(total_rows=2)
    for step in range(5):
        clock.advance(2)
        progress.on_call(_call(step, CallOutcome.THROTTLED))
        progress.tick()
    progress.on_row_done(_done(1, RowStatus.FAILED))
    progress.on_finish(elapsed_s=10.0, interrupted=False)
    assert out.getvalue() == ""
    assert progress.failed == 1  # still counting, just not showing


def test_bar_mode_leaves_its_final_state_on_screen() -> None:
    console, out = _console(terminal=True)
    clock = FakeClock(start=100.0)
    progress = ProgressListener(console, mode="auto", clock=clock.now, refresh_per_second=1)
    progress.on_start(total_rows=4)
    for row in (1, 2, 3):
        progress.on_call(_call(row, CallOutcome.THROTTLED))
        progress.on_call(_call(row))
        progress.on_row_done(_done(row, RowStatus.FAILED if row == 2 else RowStatus.SUCCEEDED))
    clock.advance(2.0)
    progress.on_finish(elapsed_s=2.0, interrupted=False)
    final = out.getvalue().rsplit("\r", 1)[-1]  # the frame left on screen
    assert "3/4 rows" in final
    assert "3 throttled" in final
    assert "1 failed" in final
    # The import is over: the bar claims no rate and no ETA, only how long it took.
    assert "imported in 0:00:02" in final
    assert "ETA" not in final
    assert "calls/s" not in final


def test_a_stopped_run_leaves_the_bar_where_it_stopped() -> None:
    # An interrupted run reports its unreached rows as skipped: they are not progress.
    console, out = _console(terminal=True)
    clock = FakeClock(start=100.0)
    progress = ProgressListener(console, mode="auto", clock=clock.now, refresh_per_second=1)
    progress.on_start(total_rows=10)
    progress.on_call(_call(1, CallOutcome.RETRYABLE))
    progress.on_call(_call(1, attempt=2))
    progress.on_row_done(_done(1))
    for row in range(2, 11):
        progress.on_row_done(_done(row, RowStatus.SKIPPED))
    clock.advance(1.0)
    progress.on_finish(elapsed_s=1.0, interrupted=True)
    text = out.getvalue()
    assert "1/10 rows" in text
    assert "10/10" not in text
    assert "1 retries" in text
    assert "9 skipped" in text
    assert "stopped" in text
    assert "ETA 0:00:00" not in text


def test_plain_line_counts_retries_and_unfinished_rows() -> None:
    console, _ = _console(terminal=False)
    clock = FakeClock(start=0.0)
    progress = ProgressListener(console, mode="plain", clock=clock.now, interval_s=1.0)
    progress.on_start(total_rows=3)
    for attempt in (1, 2, 3):
        progress.on_call(_call(1, CallOutcome.THROTTLED, attempt=attempt))
    progress.on_row_done(_done(1, RowStatus.FAILED))
    progress.on_row_done(_done(2, RowStatus.SKIPPED))
    progress.on_finish(elapsed_s=1.0, interrupted=False)  # a fatal stop: rows cut off
    assert progress.status_line(1.0) == (
        "1/3 rows, 3.0 calls/s, 2 retries, 3 throttled, 1 failed, 1 skipped, stopped"
    )


def test_the_slowest_partition_decides_the_eta() -> None:
    assert slowest_eta([(800, 100.0), (80, 10.0), (0, 0.0)]) == 8.0
    assert slowest_eta([(100, 100.0), (800, 10.0)]) == 80.0
    assert slowest_eta([(0, 0.0), (0, 5.0)]) == 0.0
    assert slowest_eta([(10, 100.0), (5, 0.0)]) is None  # a partition not going yet


def _in(row: int, region: str, *, resumed: bool = False) -> RowResult:
    return RowResult(
        row=row,
        name="n",
        semantic_version="1.0.0",
        status=RowStatus.SUCCEEDED,
        resumed=resumed,
        account="123456789012",
        region=region,
    )


def test_three_regions_one_at_10_per_s_the_eta_follows_it() -> None:
    """Issue 23 item 7: 850 rows in each of three Regions, two at 100 rows/s and one at 10:
    the batch's rate (210/s) promised the end in 7 s; the slow Region needs 80 s more."""
    console, _ = _console(terminal=False)
    clock = FakeClock(start=0.0)
    progress = ProgressListener(console, mode="plain", clock=clock.now, interval_s=1000.0)
    regions = {"eu-west-1": 100, "us-east-1": 100, "ap-south-1": 10}
    progress.on_start(total_rows=850 * 3)
    progress.on_partitions({("123456789012", region): 850 for region in regions})
    row = 0
    for _ in range(5):
        clock.advance(1.0)
        for region, per_s in regions.items():
            for _ in range(per_s):
                row += 1
                progress.on_row_done(_in(row, region))
    # 500 + 500 + 50 done in 5 s; ap-south-1 has 800 left at 10/s.
    assert progress.status_line().endswith("ETA 0:01:20")


def test_a_resume_s_carried_over_rows_are_done_but_not_progress() -> None:
    """Rows the journal already had are reported at once when a resume starts: done (fewer
    left) but not speed, else their partition looks finished in a second."""
    console, _ = _console(terminal=False)
    clock = FakeClock(start=0.0)
    progress = ProgressListener(console, mode="plain", clock=clock.now, interval_s=1000.0)
    progress.on_start(total_rows=2000)
    progress.on_partitions(
        {("123456789012", "eu-west-1"): 1000, ("123456789012", "us-east-1"): 1000}
    )
    row = 0
    for _ in range(900):
        row += 1
        progress.on_row_done(_in(row, "eu-west-1", resumed=True))
    for _ in range(10):
        clock.advance(1.0)
        row += 1
        progress.on_row_done(_in(row, "eu-west-1"))  # 1 row/s
        for _ in range(20):
            row += 1
            progress.on_row_done(_in(row, "us-east-1"))  # 20 rows/s
    # eu-west-1: 90 left at 1 row/s (counting its 900 carried-over rows as speed: 91/s, 1 s);
    # us-east-1: 800 left at 20/s, 40 s.
    assert progress.status_line().startswith("1110/2000 rows")
    assert progress.status_line().endswith("ETA 0:01:30")


def test_one_partition_uses_the_batch_s_own_figures() -> None:
    console, _ = _console(terminal=False)
    clock = FakeClock(start=0.0)
    progress = ProgressListener(console, mode="plain", clock=clock.now, interval_s=1000.0)
    progress.on_start(total_rows=30)
    progress.on_partitions({("", "eu-west-1"): 30})
    for row in range(1, 11):
        progress.on_row_done(_in(row, "somewhere"))  # the key does not matter with one
    clock.advance(5.0)
    assert progress.status_line().endswith("ETA 0:00:10")  # 20 left at 2 rows/s


def test_a_row_with_disks_two_requests_first_attempts_are_no_retries() -> None:
    # ImportImage then ImportVmImage for the same row: each request numbers its attempts.
    console, _ = _console(terminal=False)
    progress = ProgressListener(console, mode="plain", clock=FakeClock().now, interval_s=1.0)
    progress.on_start(total_rows=1)
    progress.on_call(_call(1))
    progress.on_call(_call(1, CallOutcome.RETRYABLE))
    progress.on_call(_call(1, attempt=2))
    assert progress.retries == 1
