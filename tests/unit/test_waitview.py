"""What a person is shown of a wait (issue 23 item 6), on a fake clock: the images or
tasks by state, the next poll counting down between rounds, the time left, and off a
terminal a heartbeat line a round at most every 30 s."""

from __future__ import annotations

import io

from rich.console import Console

from ibimport import Waiting, WaitRound
from ibimport.cli.progress import ProgressListener
from ibimport.cli.waitview import WaitView
from ibimport.domain.results import RowResult, RowStatus
from ibimport.testing import FakeClock


def _round(
    states: dict[str, int],
    *,
    outstanding: int,
    next_poll_s: float | None,
    time_left_s: float | None,
    partition: str = "",
    kind: Waiting = Waiting.IMAGES,
) -> WaitRound:
    return WaitRound(
        waiting_for=kind,
        states=states,
        outstanding=outstanding,
        next_poll_s=next_poll_s,
        time_left_s=time_left_s,
        partition=partition,
    )


def test_the_next_poll_and_the_time_left_count_down_between_rounds() -> None:
    clock = FakeClock(start=50.0)
    view = WaitView(clock.now)
    view.add(
        _round({"CREATING": 8, "AVAILABLE": 2}, outstanding=8, next_poll_s=30.0, time_left_s=3600.0)
    )
    clock.advance(12.4)
    shown = view.summary(Waiting.IMAGES)
    assert shown.line() == (
        "waiting for images: 2 AVAILABLE, 8 CREATING; 8 outstanding, next poll in 18s, 0:59:48 left"
    )
    clock.advance(20.0)  # past the poll: the round is under way
    assert "polling now, 0:59:28 left" in view.summary(Waiting.IMAGES).line()


def test_partitions_read_as_one_wait_over_only_when_every_one_is() -> None:
    clock = FakeClock()
    view = WaitView(clock.now)
    view.add(
        _round(
            {"AVAILABLE": 3},
            outstanding=0,
            next_poll_s=None,
            time_left_s=90.0,
            partition="a/eu-west-1",
        )
    )
    view.add(
        _round(
            {"PENDING": 2, "FAILED": 1},
            outstanding=2,
            next_poll_s=7.0,
            time_left_s=100.0,
            partition="a/us-east-1",
        )
    )
    view.add(
        _round(
            {"CREATING": 4},
            outstanding=4,
            next_poll_s=3.0,
            time_left_s=80.0,
            partition="a/ap-south-1",
        )
    )
    shown = view.summary(Waiting.IMAGES)
    assert shown.states == [("AVAILABLE", 3), ("PENDING", 2), ("CREATING", 4), ("FAILED", 1)]
    assert shown.outstanding == 6
    assert shown.next_poll_s == 3.0  # the soonest
    assert shown.time_left_s == 100.0  # the last to give up
    assert not shown.over
    view.add(
        _round(
            {"AVAILABLE": 2, "TIMED_OUT": 1},
            outstanding=0,
            next_poll_s=None,
            time_left_s=0.0,
            partition="a/us-east-1",
        )
    )
    view.add(
        _round(
            {"AVAILABLE": 4},
            outstanding=0,
            next_poll_s=None,
            time_left_s=50.0,
            partition="a/ap-south-1",
        )
    )
    over = view.summary(Waiting.IMAGES)
    assert over.over
    assert over.line() == "waiting for images: 9 AVAILABLE, 1 TIMED_OUT; out of time"


def test_the_terminal_shows_the_states_and_a_countdown_in_80_columns() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=80, color_system=None)
    clock = FakeClock()
    view = WaitView(clock.now)
    view.add(
        _round(
            {"ready": 40, "pending": 3},
            outstanding=3,
            next_poll_s=9.0,
            time_left_s=600.0,
            kind=Waiting.TASKS,
        )
    )
    clock.advance(2.0)
    for text in view.summary(Waiting.TASKS).rows():
        console.print(text)
    assert out.getvalue().splitlines() == [
        "import tasks: 40 ready, 3 pending",
        "  3 outstanding, next poll in 7s, 0:09:58 left",
    ]


def _plain(clock: FakeClock) -> tuple[ProgressListener, io.StringIO]:
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=120, color_system=None)
    return ProgressListener(console, mode="auto", clock=clock.now, imports=False), out


def test_off_a_terminal_a_heartbeat_line_comes_with_a_round_at_most_every_30s() -> None:
    clock = FakeClock()
    listener, out = _plain(clock)
    with listener:
        for second in range(0, 70, 5):  # a round every 5 s
            clock.advance(5.0 if second else 0.0)
            listener.on_wait_round(
                _round(
                    {"CREATING": 10}, outstanding=10, next_poll_s=5.0, time_left_s=600.0 - second
                )
            )
        clock.advance(5.0)
        listener.on_wait_round(
            _round({"AVAILABLE": 10}, outstanding=0, next_poll_s=None, time_left_s=530.0)
        )
    assert out.getvalue().splitlines() == [
        "waiting for images: 10 CREATING; 10 outstanding, next poll in 5s, 0:10:00 left",
        "waiting for images: 10 CREATING; 10 outstanding, next poll in 5s, 0:09:30 left",
        "waiting for images: 10 CREATING; 10 outstanding, next poll in 5s, 0:09:00 left",
        "waiting for images: 10 AVAILABLE; done",
    ]


def test_rounds_rarer_than_30s_each_get_their_line() -> None:
    clock = FakeClock()
    listener, out = _plain(clock)
    with listener:
        for n in range(3):
            clock.advance(60.0 if n else 0.0)
            listener.on_wait_round(
                _round({"PENDING": 1}, outstanding=1, next_poll_s=60.0, time_left_s=3600.0 - 60 * n)
            )
    assert len(out.getvalue().splitlines()) == 3


def test_once_the_import_is_over_its_bar_says_the_wait_has_begun() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=80, color_system=None)
    clock = FakeClock()
    progress = ProgressListener(
        console, mode="auto", clock=clock.now, refresh_per_second=1, wait_follows=True
    )
    progress.on_start(total_rows=2)
    for row in (1, 2):
        progress.on_row_done(
            RowResult(row=row, name="n", semantic_version="1.0.0", status=RowStatus.SUCCEEDED)
        )
    clock.advance(85.0)
    progress.on_finish(elapsed_s=85.0, interrupted=False)
    progress.on_wait_round(
        _round({"CREATING": 2}, outstanding=2, next_poll_s=5.0, time_left_s=3600.0)
    )
    progress.stop()
    final = [line.rstrip() for line in out.getvalue().split("\x1b[?25h")[0].splitlines()[-3:]]
    assert "2/2 rows" in final[0]
    assert "imported in 0:01:25, waiting for the images" in final[0]
    assert "ETA" not in final[0]
    assert final[1:] == ["images: 2 CREATING", "  2 outstanding, next poll in 5s, 1:00:00 left"]


def test_plain_lines_say_the_import_is_over_and_stop_then() -> None:
    clock = FakeClock()
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=120, color_system=None)
    progress = ProgressListener(
        console, mode="plain", clock=clock.now, interval_s=1.0, wait_follows=True
    )
    progress.on_start(total_rows=1)
    progress.on_row_done(
        RowResult(row=1, name="n", semantic_version="1.0.0", status=RowStatus.SUCCEEDED)
    )
    progress.on_finish(elapsed_s=3.0, interrupted=False)
    clock.advance(10.0)
    progress.tick()  # no import line once the import is over
    progress.stop()
    assert out.getvalue().splitlines() == [
        "1/1 rows imported in 0:00:03, 0 failed; waiting for the images"
    ]


def test_a_waves_tasks_show_each_partitions_slots_slowest_task_and_eta() -> None:
    clock = FakeClock(start=0.0)
    view = WaitView(clock.now)
    for partition, in_use, eta in (("111/us-east-1", 18, 4800.0), ("111/eu-west-1", 20, None)):
        view.add(
            WaitRound(
                waiting_for=Waiting.WAVE,
                states={"active": in_use, "completed": 100, "deleted": 2},
                outstanding=in_use,
                next_poll_s=30.0,
                partition=partition,
                quota=20,
                in_use=in_use,
                slowest="vm-0042 1.0.0 at 57%",
                slowest_age_s=2460.0,
                eta_s=eta,
            )
        )
    clock.advance(60.0)  # a minute after the rounds: the slowest's age and the ETA move on
    lines = view.summary(Waiting.WAVE).line().splitlines()
    assert lines == [
        "waiting for the wave's import tasks: 200 completed, 38 active, 4 deleted; "
        "38 outstanding, polling now",
        "  111/us-east-1: 18/20 slots, slowest vm-0042 1.0.0 at 57% for 0:42:00, ETA 1:19:00",
        "  111/eu-west-1: 20/20 slots, slowest vm-0042 1.0.0 at 57% for 0:42:00",
    ]
